package routing

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/dataplane/routes"
)

// crossSubnetLab starts h1 and h2 on one subnet and h3 on another behind
// the router, one workload each, with a VXLAN CrossSubnet pool and a BGP
// mesh; each host is given to setup (if any) before its agent starts. It
// returns once every session is Established and every route programmed.
func crossSubnetLab(t *testing.T, setup func(*host)) (*lab, []*host) {
	l := newLab(t, 2)
	l.createPool("lab", labPool, func(p *v3.IPPoolSpec) { p.VXLANMode = v3.EncapCrossSubnet })
	hs := []*host{l.addHost(1, 0), l.addHost(2, 0), l.addHost(3, 1)}
	for _, h := range hs {
		if setup != nil {
			setup(h)
		}
		l.addWorkload(h)
	}
	for _, h := range hs {
		l.start(h)
	}
	eventually(t, 40*time.Second, "all sessions Established", func() (bool, string) { return establishedAll(hs, meshWant(hs)) })
	eventually(t, 20*time.Second, "all routes programmed", func() (bool, string) { return l.routedAll(hs) })
	return l, hs
}

// TestLabVXLANCrossSubnet: h1 and h2 share a subnet, h3 is in another one
// behind a router that knows only the two underlay subnets. With a
// CrossSubnet pool, h1 reaches h3's workloads through vxlan.calico and
// h2's natively; every pair of workloads connects.
func TestLabVXLANCrossSubnet(t *testing.T) {
	l, hs := crossSubnetLab(t, nil)

	h1 := hs[0]
	vx, err := h1.nl.LinkByName(routes.VXLANDeviceName)
	if err != nil {
		t.Fatalf("h1 has no %s: %v", routes.VXLANDeviceName, err)
	}
	if mtu := vx.Attrs().MTU; mtu != 1500-routes.VXLANOverhead {
		t.Errorf("%s MTU %d, want %d", routes.VXLANDeviceName, mtu, 1500-routes.VXLANOverhead)
	}
	krs := h1.kernelRoutes()
	for _, b := range l.blocksOf("h3") {
		if r := krs[b]; r.LinkIndex != vx.Attrs().Index || r.Flags&int(netlink.FLAG_ONLINK) == 0 {
			t.Errorf("h1's route to h3's block %s is not through the tunnel: %v", b, r)
		}
	}
	for _, b := range l.blocksOf("h2") {
		r := krs[b]
		gw, _ := netip.AddrFromSlice(r.Gw)
		if r.LinkIndex == vx.Attrs().Index || gw.Unmap() != hs[1].addr {
			t.Errorf("h1's route to h2's block %s is not native via h2: %v", b, r)
		}
	}
	st := h1.agent.status()
	if !st.VXLAN || st.VXLANTunnelAddr == "" {
		t.Errorf("h1 status: %+v", st)
	}
	// The router has no idea where workloads are.
	if out := run(t, "ip", "-n", l.rt, "route"); len(out) == 0 || strings.Contains(out, "10.250.") {
		t.Errorf("router's table:\n%s", out)
	}
	allPairs(t, hs)
}
