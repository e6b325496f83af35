package nft

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
)

// nsNFT runs knftables (which execs nft) on an OS thread inside a network
// namespace: a forked process inherits the namespace of its thread.
type nsNFT struct {
	netns ns.NetNS
	inner knftables.Interface
}

func newNSNFT(tb testing.TB, n ns.NetNS) *nsNFT {
	x := &nsNFT{netns: n}
	if err := n.Do(func(ns.NetNS) error {
		var err error
		x.inner, err = knftables.New(knftables.InetFamily, "tortie")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return x
}

func (x *nsNFT) do(f func() error) error {
	return x.netns.Do(func(ns.NetNS) error { return f() })
}
func (x *nsNFT) NewTransaction() *knftables.Transaction { return x.inner.NewTransaction() }
func (x *nsNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	return x.do(func() error { return x.inner.Run(ctx, tx) })
}
func (x *nsNFT) Check(ctx context.Context, tx *knftables.Transaction) error {
	return x.do(func() error { return x.inner.Check(ctx, tx) })
}
func (x *nsNFT) ListAll(ctx context.Context) (m map[string][]string, err error) {
	err = x.do(func() error { m, err = x.inner.ListAll(ctx); return err })
	return
}
func (x *nsNFT) List(ctx context.Context, t string) (s []string, err error) {
	err = x.do(func() error { s, err = x.inner.List(ctx, t); return err })
	return
}
func (x *nsNFT) ListRules(ctx context.Context, c string) (r []*knftables.Rule, err error) {
	err = x.do(func() error { r, err = x.inner.ListRules(ctx, c); return err })
	return
}
func (x *nsNFT) ListElements(ctx context.Context, t, n string) (e []*knftables.Element, err error) {
	err = x.do(func() error { e, err = x.inner.ListElements(ctx, t, n); return err })
	return
}
func (x *nsNFT) ListCounters(ctx context.Context) (c []*knftables.Counter, err error) {
	err = x.do(func() error { c, err = x.inner.ListCounters(ctx); return err })
	return
}

// topology is a host namespace with workloads plumbed as Calico does.
type topology struct {
	host     ns.NetNS
	hostName string
	wls      map[string]ns.NetNS
}

func newTopology(t testing.TB, wls map[string]string) *topology {
	host, hn := testenv.NewNS(t)
	tp := &topology{host: host, hostName: hn, wls: map[string]ns.NetNS{}}
	testenv.Sh(t, "ip", "-n", hn, "link", "set", "lo", "up")
	testenv.Sh(t, "ip", "netns", "exec", hn, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	testenv.PlumbHost(t, hn)
	for iface, addr := range wls {
		tp.wls[iface] = testenv.PlumbWorkload(t, hn, iface, addr)
	}
	return tp
}

// listen starts TCP and UDP echo-less servers in a workload.
func listen(t testing.TB, n ns.NetNS, proto, addr string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		if proto == "tcp" {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			t.Cleanup(func() { _ = l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					_ = c.Close()
				}
			}()
			return nil
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = pc.Close() })
		go func() {
			buf := make([]byte, 64)
			for {
				nr, a, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:nr], a)
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// probe reports whether a TCP connect or a UDP round trip from n works.
func probe(t testing.TB, n ns.NetNS, proto, addr string) bool {
	to, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return probeFrom(n, proto, netip.AddrPort{}, to)
}

func kernelState() *calc.State {
	s := newScenario()
	allow := gpol("allow-8080", "default", []calc.Rule{
		rule("default allow-8080 I0", calc.Deny, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(9000, 9000) }),
		rule("default allow-8080 I1", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(8080, 8080) }),
		rule("default allow-8080 I2", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoUDP; r.Dst.Ports = ports(5353, 5353) }),
	}, nil)
	s.pol(allow)
	s.prof(&calc.Profile{Name: "open", Egress: []calc.Rule{rule("profile open E0", calc.Allow, nil)}})
	a := wl("a", "calia", "10.65.0.1/32")
	a.Profiles = []calc.ProfileRef{{Name: "open"}}
	b := wl("b", "calib", "10.65.0.2/32")
	b.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, allow)}
	b.Profiles = []calc.ProfileRef{{Name: "open"}}
	s.ep(a)
	s.ep(b)
	return s.state
}

func TestKernel(t *testing.T) {
	testenv.RequireRoot(t)
	tp := newTopology(t, map[string]string{"calia": "10.65.0.1", "calib": "10.65.0.2"})
	nft := newNSNFT(t, tp.host)
	d := New(nft, Config{})
	st := kernelState()
	if err := d.Apply(t.Context(), changesOf(st)); err != nil {
		t.Fatal(err)
	}
	a, b := tp.wls["calia"], tp.wls["calib"]
	for _, p := range []string{"8080", "8081", "9000"} {
		listen(t, b, "tcp", "10.65.0.2:"+p)
	}
	listen(t, b, "udp", "10.65.0.2:5353")
	listen(t, b, "udp", "10.65.0.2:5354")
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			proto, addr string
			want        bool
		}{{"tcp", "10.65.0.2:8080", true}, {"tcp", "10.65.0.2:8081", false}, {"tcp", "10.65.0.2:9000", false},
			{"udp", "10.65.0.2:5353", true}, {"udp", "10.65.0.2:5354", false}} {
			if got := probe(t, a, c.proto, c.addr); got != c.want {
				t.Errorf("%s: %s %s: connected %v, want %v", when, c.proto, c.addr, got, c.want)
			}
		}
	}
	check("programmed")

	list := func() string {
		return testenv.Sh(t, "ip", "netns", "exec", tp.hostName, "nft", "list", "table", "inet", "tortie")
	}
	before := list()

	// Drift by hand: delete the workload ingress dispatch rule.
	rules, err := nft.ListRules(t.Context(), ChainForward)
	if err != nil {
		t.Fatal(err)
	}
	var handle int
	for _, r := range rules {
		if r.Comment != nil && *r.Comment == "workload ingress policy" {
			handle = *r.Handle
		}
	}
	testenv.Sh(t, "ip", "netns", "exec", tp.hostName, "nft", "delete", "rule", "inet", "tortie", ChainForward, "handle", fmt.Sprint(handle))
	if !probe(t, a, "tcp", "10.65.0.2:8081") {
		t.Fatal("drift did not open the path (test is broken)")
	}
	if err := d.Resync(t.Context()); err != nil {
		t.Fatal(err)
	}
	check("after resync")
	if after := list(); stripHandles(after) != stripHandles(before) {
		t.Errorf("ruleset after resync differs:\n%s\nbefore:\n%s", after, before)
	}

	// A new driver (an agent restart) changes nothing and flushes nothing.
	rec := &recorder{Interface: nft}
	d2 := New(rec, Config{})
	if err := d2.Apply(t.Context(), changesOf(st)); err != nil {
		t.Fatal(err)
	}
	for _, tx := range rec.txs {
		if strings.Contains(tx, "flush") || strings.Contains(tx, "delete") {
			t.Errorf("restart wrote:\n%s", tx)
		}
	}
	if after := list(); stripHandles(after) != stripHandles(before) {
		t.Errorf("ruleset after restart differs:\n%s", after)
	}
	check("after restart")
}

// stripHandles is where handle numbers would be removed; `nft list` without -a prints none.
func stripHandles(s string) string { return s }

// TestGoldenLoadsInKernel feeds every golden ruleset to the real nft in a
// fresh namespace: the text the fake accepted must be valid nftables.
func TestGoldenLoadsInKernel(t *testing.T) {
	testenv.RequireRoot(t)
	files, _ := filepath.Glob("testdata/*.golden")
	for _, f := range files {
		_, n := testenv.NewNS(t)
		testenv.Sh(t, "ip", "netns", "exec", n, "nft", "-f", f)
	}
}
