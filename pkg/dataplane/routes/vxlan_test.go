package routes

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// vxlanHost is one "host" of the VXLAN tests: a namespace with an underlay
// interface ul0, a workload address on lo, and tortie's VXLAN device.
type vxlanHost struct {
	*testNS
	underlay   netip.Addr
	tunnel     netip.Addr
	block      netip.Prefix
	workload   netip.Addr
	mac        net.HardwareAddr
	routes     *Reconciler
	neighbours *VXLAN
}

func (h *vxlanHost) config() VXLANConfig {
	mtu := 1500 - VXLANOverhead
	if h.underlay.Is6() {
		mtu = 1500 - VXLANOverheadV6
	}
	return VXLANConfig{
		Name: VXLANDeviceName, VNI: VXLANVNI, Port: VXLANPort, MTU: mtu,
		ParentAddr: h.underlay, MAC: h.mac, TunnelAddr: h.tunnel,
	}
}

func (h *vxlanHost) vtep() VTEP {
	return VTEP{NodeName: h.name, TunnelAddr: h.tunnel, MAC: h.mac, ParentAddr: h.underlay}
}

// twoHosts joins two namespaces by a veth pair (the underlay 192.168.50.0/24)
// and gives each a block, a workload address in it and a VXLAN device.
func twoHosts(t *testing.T) (a, b *vxlanHost) {
	return twoHostsWith(t,
		&vxlanHost{underlay: mustAddr("192.168.50.1"), tunnel: mustAddr("10.244.1.0"),
			block: mustPrefix("10.244.1.0/26"), workload: mustAddr("10.244.1.5"), mac: net.HardwareAddr{0x66, 0, 0, 0, 0, 0xa}},
		&vxlanHost{underlay: mustAddr("192.168.50.2"), tunnel: mustAddr("10.244.2.0"),
			block: mustPrefix("10.244.2.0/26"), workload: mustAddr("10.244.2.5"), mac: net.HardwareAddr{0x66, 0, 0, 0, 0, 0xb}})
}

func twoHostsWith(t *testing.T, a, b *vxlanHost) (*vxlanHost, *vxlanHost) {
	a.testNS, b.testNS = newTestNS(t), newTestNS(t)
	peerNS := netlink.NsFd(int(b.ns.Fd()))
	if err := a.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ul0"}, PeerName: "ul0", PeerNamespace: peerNS}); err != nil {
		t.Fatalf("veth between hosts: %v", err)
	}
	for _, h := range []*vxlanHost{a, b} {
		h.linkUp(t, "ul0")
		h.addr(t, "ul0", netip.PrefixFrom(h.underlay, h.underlay.BitLen()-8).String())
		h.addr(t, "lo", netip.PrefixFrom(h.workload, h.workload.BitLen()).String())
		h.routes = NewReconciler(h.h, Options{Logger: testLogger(t)})
		h.neighbours = NewVXLAN(h.h, VXLANDeviceName, testLogger(t))
		cfg := h.config()
		cfg.Logger = testLogger(t)
		if err := EnsureVXLAN(h.h, cfg); err != nil {
			t.Fatalf("EnsureVXLAN in %s: %v", h.name, err)
		}
	}
	return a, b
}

// program gives h the routes and VTEPs of a node whose peers are others.
func (h *vxlanHost) program(t *testing.T, others ...*vxlanHost) {
	t.Helper()
	routes := []Route{BlackholeRoute(h.block)}
	var vteps []VTEP
	for _, o := range others {
		routes = append(routes, TunnelRoute(o.block, VXLANDeviceName, o.tunnel))
		vteps = append(vteps, o.vtep())
	}
	h.routes.Set(routes)
	if _, err := h.routes.Apply(); err != nil {
		t.Fatalf("routes in %s: %v", h.name, err)
	}
	h.neighbours.SetVTEPs(vteps)
	if err := h.neighbours.Apply(); err != nil {
		t.Fatalf("VTEPs in %s: %v", h.name, err)
	}
}

// tcpEcho listens on addr:0 inside h and echoes one message per connection.
func (h *vxlanHost) tcpEcho(t *testing.T, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var l net.Listener
	err := h.ns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", h.name, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

// dial connects from h (source address from) to dst and checks the echo.
func (h *vxlanHost) dial(from netip.Addr, dst netip.AddrPort) error {
	return h.dialTimeout(from, dst, 3*time.Second)
}

func (h *vxlanHost) dialTimeout(from netip.Addr, dst netip.AddrPort, timeout time.Duration) error {
	return h.ns.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
		c, err := d.Dial("tcp", dst.String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		msg := fmt.Sprintf("hello from %s", from)
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	})
}

func (h *vxlanHost) txPackets(t *testing.T) uint64 {
	t.Helper()
	l, err := h.h.LinkByName(VXLANDeviceName)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.TxPackets
}

func TestVXLANConnectsTwoHosts(t *testing.T) {
	a, b := twoHosts(t)

	srv := b.tcpEcho(t, b.workload)
	// Before the tunnel is programmed there is no way to B's block.
	if err := a.dialTimeout(a.workload, srv, 300*time.Millisecond); err == nil {
		t.Fatal("connected before any route was programmed")
	}

	a.program(t, b)
	b.program(t, a)
	txBefore := a.txPackets(t)
	if err := a.dial(a.workload, srv); err != nil {
		t.Fatalf("workload %s → %s through the tunnel: %v", a.workload, srv, err)
	}
	if a.txPackets(t) == txBefore {
		t.Error("the connection did not go through vxlan.calico")
	}
	// And back the other way, from the tunnel address itself.
	srvA := a.tcpEcho(t, a.workload)
	if err := b.dial(b.tunnel, srvA); err != nil {
		t.Fatalf("%s → %s through the tunnel: %v", b.tunnel, srvA, err)
	}

	// The entries as the kernel reports them to ip and bridge.
	neigh := a.ip(t, "neigh", "show", "dev", VXLANDeviceName)
	if !strings.Contains(neigh, "10.244.2.0 lladdr 66:00:00:00:00:0b PERMANENT") {
		t.Errorf("neighbours of A:\n%s", neigh)
	}
	fdb := a.run(t, "bridge", "-n", a.name, "fdb", "show", "dev", VXLANDeviceName)
	if !strings.Contains(fdb, "66:00:00:00:00:0b dst 192.168.50.2 self permanent") {
		t.Errorf("FDB of A:\n%s", fdb)
	}
	link := a.ip(t, "-d", "link", "show", VXLANDeviceName)
	for _, want := range []string{"mtu 1450", "link/ether 66:00:00:00:00:0a", "vxlan id 4096 local 192.168.50.1 dev ul0", "dstport 4789", "nolearning"} {
		if !strings.Contains(link, want) {
			t.Errorf("vxlan device lacks %q:\n%s", want, link)
		}
	}
	if addr := a.ip(t, "-4", "addr", "show", "dev", VXLANDeviceName); !strings.Contains(addr, "inet 10.244.1.0/32") {
		t.Errorf("tunnel address:\n%s", addr)
	}

	// Withdrawing B's VTEP cuts the path again.
	a.neighbours.SetVTEPs(nil)
	if err := a.neighbours.Apply(); err != nil {
		t.Fatal(err)
	}
	if st := a.neighbours.Stats(); st.Deleted != 2 {
		t.Errorf("withdrawing the VTEP: %+v, want 2 deleted", st)
	}
	if err := a.dialTimeout(a.workload, srv, 300*time.Millisecond); err == nil {
		t.Error("still connected after the VTEP was withdrawn")
	}
}

// The same over an IPv6 underlay with IPv6 workloads: FDB destinations,
// neighbour entries and onlink routes are all IPv6.
func TestVXLANConnectsTwoHostsIPv6(t *testing.T) {
	a, b := twoHostsWith(t,
		&vxlanHost{underlay: mustAddr("fd50::1"), tunnel: mustAddr("fd00:1::1"),
			block: mustPrefix("fd00:1::/122"), workload: mustAddr("fd00:1::5"), mac: net.HardwareAddr{0x66, 0, 0, 0, 0, 0xa}},
		&vxlanHost{underlay: mustAddr("fd50::2"), tunnel: mustAddr("fd00:2::1"),
			block: mustPrefix("fd00:2::/122"), workload: mustAddr("fd00:2::5"), mac: net.HardwareAddr{0x66, 0, 0, 0, 0, 0xb}})
	a.program(t, b)
	b.program(t, a)
	srv := b.tcpEcho(t, b.workload)
	start := time.Now()
	if err := a.dial(a.workload, srv); err != nil {
		t.Fatalf("workload %s → %s through the tunnel: %v", a.workload, srv, err)
	}
	t.Logf("dial took %v", time.Since(start))
	if fdb := a.run(t, "bridge", "-n", a.name, "fdb", "show", "dev", VXLANDeviceName); !strings.Contains(fdb, "66:00:00:00:00:0b dst fd50::2 self permanent") {
		t.Errorf("FDB of A:\n%s", fdb)
	}
	if link := a.ip(t, "-d", "link", "show", VXLANDeviceName); !strings.Contains(link, "vxlan id 4096 local fd50::1 dev ul0") || !strings.Contains(link, "mtu 1430") {
		t.Errorf("vxlan device:\n%s", link)
	}
}

func TestEnsureVXLANChangesInPlace(t *testing.T) {
	a, _ := twoHosts(t)
	cfg := a.config()
	cfg.Logger = testLogger(t)
	ifindex := func() int {
		l, err := a.h.LinkByName(VXLANDeviceName)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Index
	}
	ensure := func(cfg VXLANConfig, want ...string) {
		t.Helper()
		got, err := ensureVXLAN(a.h, cfg)
		if err != nil {
			t.Fatalf("EnsureVXLAN: %v", err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("EnsureVXLAN changed %q, want %q", got, want)
		}
	}
	idx := ifindex()
	stop := a.watch(t, VXLANDeviceName)
	ensure(cfg) // matches: nothing to do
	if ev := stop(); len(ev) != 0 {
		t.Errorf("EnsureVXLAN on a matching device wrote to the kernel:\n%s", strings.Join(ev, "\n"))
	}

	// A route through the device survives every in-place change.
	a.routes.Set([]Route{TunnelRoute(mustPrefix("10.244.2.0/26"), VXLANDeviceName, mustAddr("10.244.2.0"))})
	apply(t, a.routes)

	cfg.MTU = 1400
	stop = a.watch(t, VXLANDeviceName)
	ensure(cfg, "MTU set")
	if ev := stop(); len(ev) == 0 {
		t.Error("the watcher saw no event for an MTU change")
	}
	cfg.MAC = net.HardwareAddr{0x66, 0, 0, 0, 0, 0xc}
	ensure(cfg, "MAC set")
	a.ip(t, "addr", "add", "10.99.0.1/24", "dev", VXLANDeviceName)
	ensure(cfg, "address removed 10.99.0.1/24")
	cfg.TunnelAddr = mustAddr("10.244.1.1")
	ensure(cfg, "address removed 10.244.1.0/32", "address added 10.244.1.1/32")
	a.ip(t, "link", "set", VXLANDeviceName, "down") // the kernel drops the route
	ensure(cfg, "set up")
	ensure(cfg)
	if got := ifindex(); got != idx {
		t.Errorf("device re-created: ifindex %d, was %d", got, idx)
	}
	link := a.ip(t, "-d", "link", "show", VXLANDeviceName)
	for _, want := range []string{"mtu 1400", "link/ether 66:00:00:00:00:0c", "state UNKNOWN"} {
		if !strings.Contains(link, want) {
			t.Errorf("vxlan device lacks %q:\n%s", want, link)
		}
	}
	if st := apply(t, a.routes); st.Added != 1 {
		t.Errorf("route after set down/up: %+v, want it re-added", st)
	}

	// The VNI cannot change on a live device: re-created.
	cfg.VNI = 4097
	got, err := ensureVXLAN(a.h, cfg)
	if err != nil || len(got) == 0 || !strings.HasPrefix(got[0], "deleted: VNI 4096, want 4097") {
		t.Errorf("changing the VNI: %q %v", got, err)
	}
	if ifindex() == idx {
		t.Error("VNI changed in place?")
	}
	ensure(cfg)

	// Someone else's device under our name.
	a.ip(t, "link", "del", VXLANDeviceName)
	a.ip(t, "link", "add", VXLANDeviceName, "type", "bridge")
	got, err = ensureVXLAN(a.h, cfg)
	if err != nil || len(got) == 0 || got[0] != "deleted: device is of type bridge, not vxlan" {
		t.Errorf("replacing a bridge: %q %v", got, err)
	}
	ensure(cfg)

	// A parent address no interface has is an error, not a guess.
	cfg.ParentAddr = mustAddr("192.168.77.1")
	if err := EnsureVXLAN(a.h, cfg); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("EnsureVXLAN without parent: %v", err)
	}
}

func TestVXLANReconcilesEntries(t *testing.T) {
	a, _ := twoHosts(t)
	n1 := VTEP{NodeName: "n1", TunnelAddr: mustAddr("10.244.2.0"), MAC: net.HardwareAddr{0x66, 0, 0, 0, 1, 1}, ParentAddr: mustAddr("192.168.50.2")}
	n2 := VTEP{NodeName: "n2", TunnelAddr: mustAddr("10.244.3.0"), MAC: net.HardwareAddr{0x66, 0, 0, 0, 1, 2}, ParentAddr: mustAddr("192.168.50.3")}
	v := a.neighbours
	applyV := func(want Stats) {
		t.Helper()
		if err := v.Apply(); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if got := v.Stats(); got != want {
			t.Errorf("Apply: %+v, want %+v", got, want)
		}
	}
	entries := func() (neigh, fdb string) {
		return a.ip(t, "neigh", "show", "dev", VXLANDeviceName, "nud", "permanent"),
			a.run(t, "bridge", "-n", a.name, "fdb", "show", "dev", VXLANDeviceName)
	}

	// Before the first SetVTEPs (an agent restart), Apply touches nothing.
	a.ip(t, "neigh", "add", "10.244.8.0", "lladdr", "66:00:00:00:08:08", "dev", VXLANDeviceName, "nud", "permanent")
	applyV(Stats{})
	if neigh, _ := entries(); !strings.Contains(neigh, "10.244.8.0") {
		t.Errorf("Apply before SetVTEPs removed an entry:\n%s", neigh)
	}

	v.SetVTEPs([]VTEP{n1, n2})
	applyV(Stats{Added: 4, Deleted: 1})
	stop := a.watch(t, VXLANDeviceName)
	applyV(Stats{Unchanged: 4})
	if ev := stop(); len(ev) != 0 {
		t.Errorf("Apply with nothing to do wrote to the kernel:\n%s", strings.Join(ev, "\n"))
	}
	neigh, fdb := entries()
	wantNeigh := "10.244.2.0 lladdr 66:00:00:00:01:01 PERMANENT\n10.244.3.0 lladdr 66:00:00:00:01:02 PERMANENT\n"
	if sortLines(neigh) != wantNeigh {
		t.Errorf("neighbours:\n%s\nwant\n%s", neigh, wantNeigh)
	}
	wantFDB := "66:00:00:00:01:01 dst 192.168.50.2 self permanent\n66:00:00:00:01:02 dst 192.168.50.3 self permanent\n"
	if sortLines(fdb) != wantFDB {
		t.Errorf("FDB:\n%s\nwant\n%s", fdb, wantFDB)
	}

	// Drift: deleted, changed and stray entries made by hand.
	a.ip(t, "neigh", "del", "10.244.2.0", "dev", VXLANDeviceName)
	a.ip(t, "neigh", "replace", "10.244.3.0", "lladdr", "66:00:00:00:09:09", "dev", VXLANDeviceName, "nud", "permanent")
	a.ip(t, "neigh", "add", "10.244.9.0", "lladdr", "66:00:00:00:09:09", "dev", VXLANDeviceName, "nud", "permanent")
	a.run(t, "bridge", "-n", a.name, "fdb", "del", "66:00:00:00:01:01", "dev", VXLANDeviceName, "dst", "192.168.50.2")
	a.run(t, "bridge", "-n", a.name, "fdb", "append", "00:00:00:00:00:00", "dev", VXLANDeviceName, "dst", "192.168.50.9")
	applyV(Stats{Added: 2, Replaced: 1, Deleted: 2, Unchanged: 1})
	if neigh, fdb := entries(); sortLines(neigh) != wantNeigh || sortLines(fdb) != wantFDB {
		t.Errorf("after repair:\n%s\n%s", neigh, fdb)
	}

	// A node moves to another underlay address; another leaves.
	n1.ParentAddr = mustAddr("192.168.50.4")
	v.SetVTEPs([]VTEP{n1})
	applyV(Stats{Added: 1, Deleted: 3, Unchanged: 1})
	if neigh, fdb := entries(); sortLines(neigh) != "10.244.2.0 lladdr 66:00:00:00:01:01 PERMANENT\n" ||
		sortLines(fdb) != "66:00:00:00:01:01 dst 192.168.50.4 self permanent\n" {
		t.Errorf("after move:\n%s\n%s", neigh, fdb)
	}

	// Bad VTEPs are reported and skipped; good ones still go in.
	dupIP := VTEP{NodeName: "n3", TunnelAddr: n1.TunnelAddr, MAC: net.HardwareAddr{0x66, 0, 0, 0, 1, 3}, ParentAddr: mustAddr("192.168.50.5")}
	noMAC := VTEP{NodeName: "n4", TunnelAddr: mustAddr("10.244.4.0"), ParentAddr: mustAddr("192.168.50.6")}
	v.SetVTEPs([]VTEP{dupIP, noMAC, n1, n2})
	if err := v.Apply(); err == nil || !strings.Contains(err.Error(), `node "n3" has tunnel address 10.244.2.0 of node "n1"`) {
		t.Errorf("Apply with bad VTEPs: %v", err)
	}
	if st := v.Stats(); st.Failed != 2 || st.Added != 2 || st.Unchanged != 2 {
		t.Errorf("Apply with bad VTEPs: %+v", st)
	}

	// No device: a clear error.
	a.ip(t, "link", "del", VXLANDeviceName)
	if err := v.Apply(); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("Apply without device: %v", err)
	}
}

func sortLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}
