package startup

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/ipam"
)

func fakeDetector() Detector {
	return Detector{Interfaces: func() ([]Interface, error) { return hostIfs, nil }}
}

func getNode(t *testing.T, c *client.Client, name string) *v3.Node {
	t.Helper()
	k, _ := v3.KindByKind(v3.KindNode)
	r, err := c.Get(context.Background(), k, "", name)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*v3.Node)
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	c := client.New(etcdtest.NewClient(t, srv))
	dir := t.TempDir()
	nameFile := filepath.Join(dir, "sub", "nodename")

	cfg := Config{
		NodeName: "node-a", IPv6: AddrAutodetect, ASNumber: "65001",
		Labels: map[string]string{"rack": "r1"}, NodenameFile: nameFile,
		DefaultIPv4Pool: "10.48.0.0/16", DefaultIPv6Pool: "fd00:48::/48",
		Detector: fakeDetector(),
	}
	res, err := Run(ctx, c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.IPv4.String() != "10.0.0.5/24" || res.IPv6.String() != "2001:db8::5/64" || res.IPv4Iface != "eth0" {
		t.Errorf("result: %+v", res)
	}
	n := getNode(t, c, "node-a")
	if b := n.Spec.BGP; b == nil || b.IPv4Address != "10.0.0.5/24" || b.IPv6Address != "2001:db8::5/64" || b.ASNumber == nil || *b.ASNumber != 65001 {
		t.Errorf("node bgp: %+v", n.Spec.BGP)
	}
	if n.Labels["rack"] != "r1" {
		t.Errorf("labels: %v", n.Labels)
	}
	if b, err := os.ReadFile(nameFile); err != nil || string(b) != "node-a" {
		t.Errorf("nodename file: %q %v", b, err)
	}
	pools, err := listPools(ctx, c)
	if err != nil || len(pools) != 2 {
		t.Fatalf("pools: %v %v", pools, err)
	}

	// Someone else sets what startup does not own; a second start keeps it,
	// and creates no second pool.
	n.Spec.BGP.RouteReflectorClusterID = "224.0.0.1"
	n.Labels["team"] = "net"
	n.Spec.OrchRefs = []v3.OrchRef{{NodeName: "node-a", Orchestrator: "k8s"}}
	if _, err := c.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	cfg.DefaultIPv4Pool = "10.49.0.0/16"
	cfg.ASNumber = ""
	if _, err := Run(ctx, c, cfg); err != nil {
		t.Fatal(err)
	}
	n = getNode(t, c, "node-a")
	if n.Spec.BGP.RouteReflectorClusterID != "224.0.0.1" || n.Labels["team"] != "net" || len(n.Spec.OrchRefs) != 1 || n.Spec.BGP.ASNumber == nil {
		t.Errorf("startup dropped others' fields: %+v %+v %+v", n.Labels, n.Spec.BGP, n.Spec.OrchRefs)
	}
	if pools, _ := listPools(ctx, c); len(pools) != 2 {
		t.Errorf("a second default pool was created: %d pools", len(pools))
	}
	if res.VXLANTunnelAddr.IsValid() || n.Spec.IPv4VXLANTunnelAddr != "" {
		t.Errorf("tunnel address without a VXLAN pool: %v %q", res.VXLANTunnelAddr, n.Spec.IPv4VXLANTunnelAddr)
	}
}

func TestRunVXLAN(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	c := client.New(etcdtest.NewClient(t, srv))
	cfg := Config{NodeName: "node-b", NodenameFile: "-", DefaultIPv4Pool: "10.60.0.0/16",
		DefaultPoolVXLANMode: v3.EncapCrossSubnet, Detector: fakeDetector()}
	res, err := Run(ctx, c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !netip.MustParsePrefix("10.60.0.0/16").Contains(res.VXLANTunnelAddr) || res.VXLANMAC == "" {
		t.Fatalf("tunnel: %v %q", res.VXLANTunnelAddr, res.VXLANMAC)
	}
	n := getNode(t, c, "node-b")
	if n.Spec.IPv4VXLANTunnelAddr != res.VXLANTunnelAddr.String() || n.Spec.VXLANTunnelMACAddr != res.VXLANMAC {
		t.Errorf("node: %+v", n.Spec)
	}
	// Stable across restarts: same address (same handle), same MAC.
	res2, err := Run(ctx, c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res2.VXLANTunnelAddr != res.VXLANTunnelAddr || res2.VXLANMAC != res.VXLANMAC {
		t.Errorf("changed on restart: %v %s → %v %s", res.VXLANTunnelAddr, res.VXLANMAC, res2.VXLANTunnelAddr, res2.VXLANMAC)
	}

	if res.IPIPTunnelAddr.IsValid() || n.Spec.BGP.IPv4IPIPTunnelAddr != "" {
		t.Errorf("IP-in-IP tunnel address without an IP-in-IP pool: %v %q", res.IPIPTunnelAddr, n.Spec.BGP.IPv4IPIPTunnelAddr)
	}
}

// An IP-in-IP pool gets the node an IP-in-IP tunnel address as Calico's
// allocateip does; it moves when its pool stops asking for it and another
// does, and is released when none does. Not a warning: whether the kernel
// can do IP-in-IP is the routing component's to say.
func TestRunIPIP(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	c := client.New(etcdtest.NewClient(t, srv))
	am := ipam.New(c.Backend(), ipam.Options{})
	k, _ := v3.KindByKind(v3.KindIPPool)
	setPool := func(name, cidr string, mode v3.EncapsulationMode) {
		t.Helper()
		r, err := c.Get(ctx, k, "", name)
		write := c.Update
		if errors.Is(err, datastore.ErrNotFound) {
			r, write = k.NewObject(), c.Create
			r.(*v3.IPPool).Name, r.(*v3.IPPool).Spec.CIDR = name, cidr
		} else if err != nil {
			t.Fatal(err)
		}
		r.(*v3.IPPool).Spec.IPIPMode = mode
		if _, err := write(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	const handle = "ipip-tunnel-addr-node-i"
	// check runs startup and says where the tunnel address is: in cidr,
	// or nowhere when cidr is "".
	check := func(cidr string) netip.Addr {
		t.Helper()
		res, err := Run(ctx, c, Config{NodeName: "node-i", NodenameFile: "-", Detector: fakeDetector()})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Warnings) != 0 {
			t.Errorf("warnings: %q", res.Warnings)
		}
		n := getNode(t, c, "node-i")
		held, err := am.IPsByHandle(ctx, handle)
		if cidr == "" {
			if res.IPIPTunnelAddr.IsValid() || n.Spec.BGP.IPv4IPIPTunnelAddr != "" || !errors.Is(err, ipam.ErrHandleNotFound) {
				t.Errorf("no IP-in-IP pool, yet: result %v, node %q, handle %v %v", res.IPIPTunnelAddr, n.Spec.BGP.IPv4IPIPTunnelAddr, held, err)
			}
			return netip.Addr{}
		}
		a := res.IPIPTunnelAddr
		if !netip.MustParsePrefix(cidr).Contains(a) || n.Spec.BGP.IPv4IPIPTunnelAddr != a.String() {
			t.Fatalf("tunnel address %v (node %q), want one in %s", a, n.Spec.BGP.IPv4IPIPTunnelAddr, cidr)
		}
		if err != nil || !slices.Equal(held, []netip.Addr{a}) {
			t.Errorf("handle %s holds %v (%v), want just %v", handle, held, err, a)
		}
		info, err := am.Lookup(ctx, a)
		if err != nil || info == nil || info.Handle != handle || info.Attrs["type"] != "ipipTunnelAddress" || info.Attrs["node"] != "node-i" {
			t.Errorf("allocation of %v: %+v %v", a, info, err)
		}
		if n.Spec.IPv4VXLANTunnelAddr != "" || res.VXLANTunnelAddr.IsValid() {
			t.Errorf("a VXLAN tunnel address for an IP-in-IP pool: %q", n.Spec.IPv4VXLANTunnelAddr)
		}
		return a
	}

	setPool("ipip-a", "10.70.0.0/16", v3.EncapAlways)
	first := check("10.70.0.0/16")
	if again := check("10.70.0.0/16"); again != first {
		t.Errorf("changed on restart: %v → %v", first, again)
	}
	// Pool a stops asking, pool b (CrossSubnet) asks: the address moves.
	setPool("ipip-a", "10.70.0.0/16", v3.EncapNever)
	setPool("ipip-b", "10.71.0.0/16", v3.EncapCrossSubnet)
	check("10.71.0.0/16")
	if info, err := am.Lookup(ctx, first); err != nil || info != nil {
		t.Errorf("the old address %v is still held: %+v %v", first, info, err)
	}
	// No pool asks any more: released.
	setPool("ipip-b", "10.71.0.0/16", v3.EncapNever)
	check("")
}

// Concurrent writers of one Node: every change lands (compare-and-swap
// with retry), none is lost.
func TestUpdateNodeConcurrent(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	c := client.New(etcdtest.NewClient(t, srv))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := updateNode(ctx, c, "node-c", func(n *v3.Node) {
				if n.Labels == nil {
					n.Labels = map[string]string{}
				}
				n.Labels[fmt.Sprintf("l%d", i)] = "x"
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := getNode(t, c, "node-c"); len(n.Labels) != 8 {
		t.Errorf("labels: %v", n.Labels)
	}
}

func TestNodeName(t *testing.T) {
	if n, _ := NodeName("flag"); n != "flag" {
		t.Error(n)
	}
	t.Setenv("NODENAME", "from-env")
	if n, _ := NodeName(""); n != "from-env" {
		t.Error(n)
	}
	t.Setenv("NODENAME", "")
	h, _ := os.Hostname()
	if n, _ := NodeName(""); n != strings.ToLower(h) {
		t.Error(n)
	}
}

// TestWireguardKey: a published key gives the node a WireGuard tunnel
// address from any pool, kept across restarts; removing the key releases it.
func TestWireguardKey(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	c := client.New(etcdtest.NewClient(t, srv))
	am := ipam.New(c.Backend(), ipam.Options{})
	k, _ := v3.KindByKind(v3.KindIPPool)
	pool := k.NewObject().(*v3.IPPool)
	pool.Name, pool.Spec.CIDR = "plain", "10.72.0.0/16"
	if _, err := c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	const handle = "wireguard-tunnel-addr-node-w"
	run := func() *Result {
		t.Helper()
		res, err := Run(ctx, c, Config{NodeName: "node-w", NodenameFile: "-", Detector: fakeDetector()})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := run()
	if n := getNode(t, c, "node-w"); n.Spec.Wireguard != nil {
		t.Fatalf("a WireGuard address without a key: %+v", n.Spec.Wireguard)
	}

	const key = "x7mQKx6aE/mJ5HNOAr5X6WjWJ7Dp9bxM0DWyVCN9LG8="
	if err := SetWireguardKey(ctx, c, res, key, nil); err != nil {
		t.Fatal(err)
	}
	n := getNode(t, c, "node-w")
	if n.Status.WireguardPublicKey != key || n.Spec.Wireguard == nil {
		t.Fatalf("node after the key: status %+v, spec.wireguard %+v", n.Status, n.Spec.Wireguard)
	}
	a, err := netip.ParseAddr(n.Spec.Wireguard.InterfaceIPv4Address)
	if err != nil || !netip.MustParsePrefix("10.72.0.0/16").Contains(a) {
		t.Fatalf("WireGuard address %q, want one in 10.72.0.0/16", n.Spec.Wireguard.InterfaceIPv4Address)
	}
	info, err := am.Lookup(ctx, a)
	if err != nil || info == nil || info.Handle != handle || info.Attrs["type"] != "wireguardTunnelAddress" || info.Attrs["node"] != "node-w" {
		t.Errorf("allocation of %v: %+v %v", a, info, err)
	}

	// A restart keeps key and address.
	res = run()
	if n := getNode(t, c, "node-w"); n.Status.WireguardPublicKey != key || n.Spec.Wireguard == nil || n.Spec.Wireguard.InterfaceIPv4Address != a.String() {
		t.Fatalf("after a restart: status %+v, spec.wireguard %+v, want %v kept", n.Status, n.Spec.Wireguard, a)
	}

	// Off: key and address go.
	if err := SetWireguardKey(ctx, c, res, "", nil); err != nil {
		t.Fatal(err)
	}
	if n := getNode(t, c, "node-w"); n.Status.WireguardPublicKey != "" || n.Spec.Wireguard != nil {
		t.Fatalf("after the key was removed: status %+v, spec.wireguard %+v", n.Status, n.Spec.Wireguard)
	}
	if held, err := am.IPsByHandle(ctx, handle); !errors.Is(err, ipam.ErrHandleNotFound) {
		t.Errorf("handle %s still holds %v (%v)", handle, held, err)
	}
}
