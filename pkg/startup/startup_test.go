package startup

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
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

func TestRunVXLANAndIPIP(t *testing.T) {
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

	// An IP-in-IP pool: said loudly, not fatal.
	k, _ := v3.KindByKind(v3.KindIPPool)
	p := k.NewObject().(*v3.IPPool)
	p.Name = "ipip"
	p.Spec.CIDR = "10.61.0.0/16"
	p.Spec.IPIPMode = v3.EncapAlways
	if _, err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	res3, err := Run(ctx, c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res3.Warnings) != 1 || !strings.Contains(res3.Warnings[0], "no IP-in-IP support") {
		t.Errorf("warnings: %q", res3.Warnings)
	}
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
