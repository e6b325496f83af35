package nft

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
)

// bigScenario is bench/policy's state: 100 policies of 100 ingress rules
// selecting one workload, each rule allowing TCP to its own port from a
// selector or a /24, then one policy deciding port 80.
func bigScenario() (*scenario, []*calc.Policy) {
	s := newScenario()
	for k := range 100 {
		id := fmt.Sprintf("s:svc-%d", k)
		s.set(id, calc.AddressSet, member(fmt.Sprintf("10.66.%d.%d/32", k/250, 2+k%250)))
	}
	s.set("s:client", calc.AddressSet, member("10.65.0.2/32"))
	var pols []*calc.Policy
	for i := range 100 {
		var rules []calc.Rule
		for j := range 100 {
			port := uint16(20000 + 100*i + j)
			rules = append(rules, rule(fmt.Sprintf("bench svc-%03d I%d", i, j), calc.Allow, func(r *calc.Rule) {
				r.Protocol = calc.ProtoTCP
				r.Dst.Ports = ports(port, port)
				switch {
				case j == 99: // as bench/policy's: the client to port 30000+i
					r.Src.IPSet, r.Dst.Ports = "s:client", ports(uint16(30000+i), uint16(30000+i))
				case j%2 == 0:
					r.Src.IPSet = fmt.Sprintf("s:svc-%d", (i+j)%100)
				default:
					r.Src.Nets = []netip.Prefix{pfx(fmt.Sprintf("172.%d.%d.0/24", 16+i%16, j))}
				}
			}))
		}
		p := gpol(fmt.Sprintf("svc-%03d", i), "default", rules, nil)
		s.pol(p)
		pols = append(pols, p)
	}
	allow := gpol("allow-client", "default", []calc.Rule{allowClient(calc.Allow)}, nil)
	s.pol(allow)
	pols = append(pols, allow)
	ep := wl("server", "caliserver", "10.65.0.3/32")
	ep.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, pols...)}
	ep.Profiles = []calc.ProfileRef{{Name: "open"}}
	s.prof(&calc.Profile{Name: "open", Ingress: []calc.Rule{rule("profile open I0", calc.Allow, nil)}, Egress: []calc.Rule{rule("profile open E0", calc.Allow, nil)}})
	s.ep(ep)
	return s, pols
}

func allowClient(a calc.Action) calc.Rule {
	return rule("bench allow-client I0", a, func(r *calc.Rule) {
		r.Protocol = calc.ProtoTCP
		r.Dst.Ports = ports(80, 80)
		r.Src.IPSet = "s:client"
	})
}

// withRule is p with rule i replaced.
func withRule(p *calc.Policy, i int, f func(*calc.Rule)) *calc.Policy {
	q := *p
	q.Ingress = append([]calc.Rule(nil), p.Ingress...)
	f(&q.Ingress[i])
	return &q
}

// txOps are the operations of a recorded transaction, less the table.
func txOps(tx string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(tx), "\n") {
		if l != "" && !strings.HasPrefix(l, "add table ") {
			out = append(out, l)
		}
	}
	return out
}

// TestOneRuleChangeIsSmall: among 100 × 100 rules, changing one rule of
// one policy writes a handful of operations (a new class chain, the class
// map elements that lead to it, the entry chain with its digest), and the
// next sync deletes the chain it replaced; a restart then gives a full render.
func TestOneRuleChangeIsSmall(t *testing.T) {
	s, pols := bigScenario()
	f := newFake()
	rec := &recorder{Interface: f}
	d := New(rec, Config{})
	if err := d.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	apply := func(ps ...*calc.Policy) []string {
		t.Helper()
		n := len(rec.txs)
		if err := d.Apply(t.Context(), &calc.Changes{InSync: true, PolicyUpdates: ps}); err != nil {
			t.Fatal(err)
		}
		if len(rec.txs) == n {
			return nil
		}
		return txOps(rec.last())
	}
	check := func(what string, ops []string, min, max int) {
		t.Helper()
		t.Logf("%s: %d operations\n%s", what, len(ops), strings.Join(ops, "\n"))
		if len(ops) < min || len(ops) > max {
			t.Errorf("%s: %d operations, want %d..%d:\n%s", what, len(ops), min, max, strings.Join(ops, "\n"))
		}
		for _, op := range ops {
			if strings.HasPrefix(op, "flush map") || strings.HasPrefix(op, "flush set") ||
				(strings.HasPrefix(op, "delete map") || strings.HasPrefix(op, "add map")) {
				t.Errorf("%s rewrote a map: %s", what, op)
			}
		}
	}

	// The source of one rule: its class's chain is rewritten in place.
	p := withRule(pols[37], 5, func(r *calc.Rule) { r.Src.Nets = []netip.Prefix{pfx("192.0.2.0/24")} })
	pols[37] = p
	s.pol(p)
	check("new source", apply(p), 1, 4)
	check("nothing to delete", apply(), 0, 0)

	// The port of one rule: the class map elements around it change.
	p = withRule(pols[50], 7, func(r *calc.Rule) { r.Dst.Ports = ports(40000, 40000) })
	pols[50] = p
	s.pol(p)
	// The class map elements around it change; the chain of the class that
	// went is deleted a sync later.
	check("new port", apply(p), 1, 14)
	check("deleting the chain of the class that went", apply(), 0, 2)

	// The action of the rule that decides port 80, as bench/policy does:
	// the class's chain is rewritten, the class map is untouched (replacing
	// one of its 10,000 elements costs the kernel 10–20 ms).
	for _, a := range []calc.Action{calc.Deny, calc.Allow, calc.Deny} {
		p = gpol("allow-client", "default", []calc.Rule{allowClient(a)}, nil)
		s.pol(p)
		ops := apply(p)
		check("port 80 "+string(a), ops, 1, 8)
		for _, op := range ops {
			if strings.Contains(op, " element ") {
				t.Errorf("port 80 %s changed the class map: %s", a, op)
			}
		}
	}
	apply()

	if testing.Short() {
		return // the fake takes seconds to load 10,000 map elements
	}
	// The toggles kept the partition (sticky.go): a restarted driver,
	// which partitions afresh, brings the table to a full render.
	restarted := New(f, Config{})
	if err := restarted.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	full, _ := render(t, s)
	if got, want := sortedDump(f), sortedDump(full); got != want {
		t.Errorf("after the changes and a restart the table differs from a full render")
	}
}

// BenchmarkPolicyChange is one changed policy among 100 × 100 rules:
// compile, diff and the transaction on the fake, as the agent's Apply.
func BenchmarkPolicyChange(b *testing.B) {
	s, _ := bigScenario()
	d := New(newFake(), Config{})
	if err := d.Apply(b.Context(), changesOf(s.state)); err != nil {
		b.Fatal(err)
	}
	actions := []calc.Action{calc.Deny, calc.Allow}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := gpol("allow-client", "default", []calc.Rule{allowClient(actions[i%2])}, nil)
		if err := d.Apply(b.Context(), &calc.Changes{InSync: true, PolicyUpdates: []*calc.Policy{p}}); err != nil {
			b.Fatal(err)
		}
	}
}

// discardNFT is the fake with transactions thrown away once the table is
// loaded: what is left is the driver's own work.
type discardNFT struct {
	*knftables.Fake
	discard bool
}

func (d *discardNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if d.discard {
		return nil
	}
	return d.Fake.Run(ctx, tx)
}

// BenchmarkPolicyChangeDriver is BenchmarkPolicyChange without the fake's
// cost of applying the transaction: the driver's own work for one change
// among 100 × 100 rules (compile, diff, render the transaction).
func BenchmarkPolicyChangeDriver(b *testing.B) {
	s, _ := bigScenario()
	f := &discardNFT{Fake: newFake()}
	d := New(f, Config{})
	if err := d.Apply(b.Context(), changesOf(s.state)); err != nil {
		b.Fatal(err)
	}
	f.discard = true
	actions := []calc.Action{calc.Deny, calc.Allow}
	for i := 0; b.Loop(); i++ {
		p := gpol("allow-client", "default", []calc.Rule{allowClient(actions[i%2])}, nil)
		if err := d.Apply(b.Context(), &calc.Changes{InSync: true, PolicyUpdates: []*calc.Policy{p}}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKernelInPlaceChange: in the kernel, a changed policy updates its
// program in place (class map elements replaced, intervals split), the
// next sync deletes the replaced chain, and a driver restarted after the
// policy changed while it was down repairs the class map it cannot list
// element by element (the entry chain's digest says it differs).
func TestKernelInPlaceChange(t *testing.T) {
	testenv.RequireRoot(t)
	tp := newTopology(t, map[string]string{"calia": "10.65.0.1", "calib": "10.65.0.2"})
	nft := newNSNFT(t, tp.host)
	rec := &recorder{Interface: nft}
	d := New(rec, Config{})
	st := kernelState()
	if err := d.Apply(t.Context(), changesOf(st)); err != nil {
		t.Fatal(err)
	}
	a, b := tp.wls["calia"], tp.wls["calib"]
	for _, p := range []string{"8080", "8081", "8082", "9000"} {
		listen(t, b, "tcp", "10.65.0.2:"+p)
	}
	check := func(when string, open ...string) {
		t.Helper()
		for _, p := range []string{"8080", "8081", "8082", "9000"} {
			want := strings.Contains(strings.Join(open, ","), p)
			if got := probe(t, a, "tcp", "10.65.0.2:"+p); got != want {
				t.Errorf("%s: tcp %s: connected %v, want %v", when, p, got, want)
			}
		}
	}
	check("programmed", "8080")
	pid := calc.PolicyID{Kind: v3.KindGlobalNetworkPolicy, Name: "allow-8080"}
	old := st.Policies[pid]
	if old == nil {
		t.Fatalf("no policy %v", pid)
	}
	change := func(d *Driver, p *calc.Policy) {
		t.Helper()
		st.Policies[p.ID] = p
		if err := d.Apply(t.Context(), &calc.Changes{InSync: true, PolicyUpdates: []*calc.Policy{p}}); err != nil {
			t.Fatal(err)
		}
	}
	// 8080 → 8081-8082 (an interval element splits and merges), then a
	// source condition (a class chain replaces a verdict element).
	change(d, withRule(old, 1, func(r *calc.Rule) { r.Dst.Ports = ports(8081, 8082) }))
	check("ports changed", "8081", "8082")
	change(d, withRule(st.Policies[pid], 1, func(r *calc.Rule) { r.Src.Nets = []netip.Prefix{pfx("10.65.0.0/24")} }))
	check("source added", "8081", "8082")
	change(d, withRule(st.Policies[pid], 1, func(r *calc.Rule) { r.Src.Nets = []netip.Prefix{pfx("10.66.0.0/24")} }))
	check("source changed", "")
	if err := d.Apply(t.Context(), &calc.Changes{InSync: true}); err != nil { // deletes replaced chains
		t.Fatal(err)
	}
	for _, tx := range rec.txs[1:] {
		if strings.Contains(tx, "flush map") || strings.Contains(tx, "add map") || strings.Contains(tx, "delete map") {
			t.Errorf("a policy change rewrote a map:\n%s", tx)
		}
	}
	list := func() string {
		return testenv.Sh(t, "ip", "netns", "exec", tp.hostName, "nft", "list", "table", "inet", "tortie")
	}

	// Changed while no driver runs: 8082 only, as many class map elements
	// as before (0-8081, 8082, 8083-65535 for tcp). A new driver repairs
	// it in place.
	p := withRule(st.Policies[pid], 1, func(r *calc.Rule) { r.Dst.Ports = ports(8082, 8082); r.Src.Nets = nil })
	st.Policies[pid] = p
	d2 := New(nft, Config{})
	if err := d2.Apply(t.Context(), changesOf(st)); err != nil {
		t.Fatal(err)
	}
	check("restarted after a change", "8082")
	if err := d2.Apply(t.Context(), &calc.Changes{InSync: true}); err != nil {
		t.Fatal(err)
	}
	// A second restart changes nothing.
	before := list()
	rec3 := &recorder{Interface: nft}
	d3 := New(rec3, Config{})
	if err := d3.Apply(t.Context(), changesOf(st)); err != nil {
		t.Fatal(err)
	}
	for _, tx := range rec3.txs {
		if strings.Contains(tx, "flush") || strings.Contains(tx, "delete") {
			t.Errorf("restart wrote:\n%s", tx)
		}
	}
	if after := list(); after != before {
		t.Errorf("ruleset after restart differs:\n%s\nbefore:\n%s", after, before)
	}
	check("restarted again", "8082")
}

// BenchmarkKernelPolicyChange is BenchmarkPolicyChange against the real
// kernel in a network namespace (root only), written through nft and over
// netlink.
func BenchmarkKernelPolicyChange(b *testing.B) {
	testenv.RequireRoot(b)
	for _, path := range []string{"nft", "netlink"} {
		b.Run(path, func(b *testing.B) {
			n, _ := testenv.NewNS(b)
			d := New(newNSNFT(b, n), Config{})
			var count *nlCount
			if path == "netlink" {
				var nl *Netlink
				nl, count = newNSNetlink(b, n)
				d.SetNetlink(nl)
			}
			s, _ := bigScenario()
			if err := d.Apply(b.Context(), changesOf(s.state)); err != nil {
				b.Fatal(err)
			}
			actions := []calc.Action{calc.Deny, calc.Allow}
			for i := 0; b.Loop(); i++ {
				p := gpol("allow-client", "default", []calc.Rule{allowClient(actions[i%2])}, nil)
				if err := d.Apply(b.Context(), &calc.Changes{InSync: true, PolicyUpdates: []*calc.Policy{p}}); err != nil {
					b.Fatal(err)
				}
			}
			if count != nil {
				if count.fallbacks > 0 {
					b.Errorf("%d changes went through nft: %v", count.fallbacks, count.last)
				}
				b.ReportMetric(float64(count.took.Microseconds())/float64(max(count.runs, 1))/1000, "ms/netlink-txn")
			}
		})
	}
}

// TestCompiledByDifferenceKeepsNoHistory: a program compiled by difference
// from the one before (a rule's action changed, its ports did not) is
// installed as such, and then forgets where it came from: otherwise every
// version of the program stays alive, each through the next (a leak that
// grew the agent's memory with every change).
func TestCompiledByDifferenceKeepsNoHistory(t *testing.T) {
	st := kernelState()
	d := New(newFake(), Config{})
	if err := d.Apply(t.Context(), changesOf(st)); err != nil {
		t.Fatal(err)
	}
	pid := calc.PolicyID{Kind: v3.KindGlobalNetworkPolicy, Name: "allow-8080"}
	for i, a := range []calc.Action{calc.Deny, calc.Allow, calc.Deny} {
		p := withRule(st.Policies[pid], 1, func(r *calc.Rule) { r.Action = a })
		st.Policies[pid] = p
		if err := d.Apply(t.Context(), &calc.Changes{InSync: true, PolicyUpdates: []*calc.Policy{p}}); err != nil {
			t.Fatal(err)
		}
		byDifference := false
		for name, e := range d.progs.progs {
			if e.prog.from != nil || e.prog.touched != nil {
				t.Errorf("change %d: program %s still refers to the version it was compiled from", i, name)
			}
			byDifference = byDifference || e.prog.memo != nil && e.prog.memo.byFlat != nil
		}
		if !byDifference {
			t.Errorf("change %d: no program was compiled by difference", i)
		}
	}
}

// BenchmarkCreateDriver is the driver's own work (no kernel, no fake) for
// bench/policy's create step: the 100 policies × 100 rules written to a
// table that has the endpoint already.
func BenchmarkCreateDriver(b *testing.B) {
	s, pols := bigScenario()
	for b.Loop() {
		b.StopTimer()
		nft := &discardNFT{Fake: newFake(), discard: true}
		d := New(nft, Config{})
		first := changesOf(s.state)
		first.PolicyUpdates = nil
		if err := d.Apply(b.Context(), first); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := d.Apply(b.Context(), &calc.Changes{InSync: true, PolicyUpdates: pols}); err != nil {
			b.Fatal(err)
		}
	}
}
