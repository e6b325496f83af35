package startup

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/ipam"
	"github.com/tortie/tortie/pkg/syncer"
)

// The Tunnels component follows a pool's vxlanMode while the agent runs:
// Never → Always gives the node a VXLAN address and MAC from the pool,
// Always → Never releases it (IPAM handle and Node fields), a pool that
// stops selecting the node does the same; an Apply with nothing to change
// writes nothing.
func TestTunnelsFollowPools(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	c := client.New(be)
	res, err := Run(ctx, c, Config{NodeName: "node-t", NodenameFile: "-", DefaultIPv4Pool: "10.61.0.0/16",
		DefaultPoolVXLANMode: v3.EncapNever, Detector: fakeDetector()})
	if err != nil {
		t.Fatal(err)
	}
	if res.VXLANTunnelAddr.IsValid() {
		t.Fatalf("VXLAN address %v from a pool that does not ask for it", res.VXLANTunnelAddr)
	}
	tu := NewTunnels(c, res, nil)
	pk, _ := v3.KindByKind(v3.KindIPPool)
	feed := func() {
		t.Helper()
		pools, _, err := c.List(ctx, pk, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pools {
			tu.OnUpdate(syncer.Update{Kind: v3.KindIPPool, Name: p.GetName(), Resource: p})
		}
		n := getNode(t, c, "node-t")
		tu.OnUpdate(syncer.Update{Kind: v3.KindNode, Name: n.Name, Resource: n})
	}
	setPool := func(mode v3.EncapsulationMode, selector string) {
		t.Helper()
		r, err := c.Get(ctx, pk, "", DefaultIPv4PoolName)
		if err != nil {
			t.Fatal(err)
		}
		p := r.(*v3.IPPool)
		p.Spec.VXLANMode, p.Spec.NodeSelector = mode, selector
		if _, err := c.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	handle := func() []netip.Addr {
		t.Helper()
		as, err := ipam.New(be, ipam.Options{}).IPsByHandle(ctx, "vxlan-tunnel-addr-node-t")
		if err != nil && !errors.Is(err, ipam.ErrHandleNotFound) {
			t.Fatal(err)
		}
		return as
	}
	rev := func() int64 {
		t.Helper()
		_, r, err := c.List(ctx, pk, "")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	feed()
	if err := tu.Apply(ctx, true); err != nil {
		t.Fatal(err)
	}
	r0 := rev()
	if err := tu.Apply(ctx, true); err != nil || rev() != r0 {
		t.Errorf("an Apply with nothing to change wrote (revision %d → %d, %v)", r0, rev(), err)
	}

	steps := []struct {
		name     string
		mode     v3.EncapsulationMode
		selector string
		want     bool
	}{
		{"Never to Always", v3.EncapAlways, "all()", true},
		{"CrossSubnet keeps it", v3.EncapCrossSubnet, "all()", true},
		{"a selector that misses the node", v3.EncapAlways, "zone == 'mars'", false},
		{"selecting it again", v3.EncapAlways, "all()", true},
		{"back to Never", v3.EncapNever, "all()", false},
	}
	var prev string
	for _, s := range steps {
		setPool(s.mode, s.selector)
		feed()
		if err := tu.Apply(ctx, false); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		n := getNode(t, c, "node-t")
		held := handle()
		if !s.want {
			if n.Spec.IPv4VXLANTunnelAddr != "" || n.Spec.VXLANTunnelMACAddr != "" || len(held) != 0 {
				t.Errorf("%s: node %q %q, handle %v; want none", s.name, n.Spec.IPv4VXLANTunnelAddr, n.Spec.VXLANTunnelMACAddr, held)
			}
			prev = ""
			continue
		}
		a, err := netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr)
		if err != nil || !netip.MustParsePrefix("10.61.0.0/16").Contains(a) || n.Spec.VXLANTunnelMACAddr == "" {
			t.Errorf("%s: node %q %q; want an address of 10.61.0.0/16 and a MAC", s.name, n.Spec.IPv4VXLANTunnelAddr, n.Spec.VXLANTunnelMACAddr)
		}
		if len(held) != 1 || held[0] != a {
			t.Errorf("%s: handle holds %v, node says %v", s.name, held, a)
		}
		if prev != "" && prev != n.Spec.IPv4VXLANTunnelAddr {
			t.Errorf("%s: address moved %s → %s", s.name, prev, n.Spec.IPv4VXLANTunnelAddr)
		}
		prev = n.Spec.IPv4VXLANTunnelAddr
	}
}
