package nft

import (
	"cmp"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
)

// TestCompiledVerdictsMatchReference drives random policy states through
// the driver (and so through the compiler: port classes, constant-verdict
// classes, Pass continuations, tier ends, profiles, in-place updates) and
// checks the verdict and the logs of random packets, traced through the
// fake's table (tracer_test.go), against the reference evaluator of the
// rules in order (refeval_test.go).
//
// Each iteration is a subtest named by its seed, so a failure reproduces
// with -run 'TestCompiledVerdictsMatchReference/seed=N$' (or
// -property.seed=N). A failure prints the packet, both verdicts, and the
// state shrunk to what still fails on a freshly rendered table.

var (
	propertySeed  = flag.Uint64("property.seed", 0, "run TestCompiledVerdictsMatchReference with this seed only")
	propertyIters = flag.Int("property.n", 0, "iterations of TestCompiledVerdictsMatchReference (default 200, 40 with -short)")
)

func TestCompiledVerdictsMatchReference(t *testing.T) {
	iters, steps, npk := 200, 5, 50
	if testing.Short() {
		iters, steps = 40, 3
	}
	if *propertyIters > 0 {
		iters = *propertyIters
	}
	first := uint64(1)
	if *propertySeed != 0 {
		first, iters = *propertySeed, 1
	}
	cov := &propCoverage{counts: map[string]int{}}
	for i := range iters {
		seed := first + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runVerdictProperty(t, seed, steps, npk, cov)
		})
	}
	t.Logf("coverage: %s", cov)
	if t.Failed() || iters < 100 {
		return
	}
	// The generator must reach every way a verdict comes about, or the
	// comparison proves less than it seems to.
	for _, k := range []string{"allow", "deny", "tier default", "profile allow", "profile deny", "missing profile",
		"nothing allowed", "base chain", "accept", "drop", "logged", "logged twice", "passed", "v6", "icmp", "output",
		"workload to workload", "flow logs", "flow marks", "flow marks full", "step policy", "step members", "step profile", "step endpoint", "step tier", "restart", "other class map", "merged nets", "merged ports", "kept partition"} {
		if cov.counts[k] == 0 {
			t.Errorf("no packet or step of kind %q in %d iterations: the generator lost a feature", k, iters)
		}
	}
}

// propCoverage counts how verdicts came about and which steps ran.
type propCoverage struct{ counts map[string]int }

func (c *propCoverage) add(k string) { c.counts[k]++ }

func (c *propCoverage) String() string {
	var out []string
	for _, k := range slices.Sorted(mapKeys(c.counts)) {
		out = append(out, fmt.Sprintf("%s=%d", k, c.counts[k]))
	}
	return strings.Join(out, " ")
}

// propMarkMask is the flow mark field of the seeds that number egress
// decisions: 4 bits, 15 numbers.
const propMarkMask = 0x0f000000

func runVerdictProperty(t *testing.T, seed uint64, steps, npk int, cov *propCoverage) {
	g := propGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	w := g.world()
	f := newFake()
	// One seed in three logs flows: the identifiers each packet meets must
	// name the decisions the trace comes to. Half of those number the
	// workload egress decisions in the mark (a 4-bit field: small enough
	// that some seeds fill it and log the rest on their own).
	cfg := Config{}
	newMarks := func() *flowlog.Marks {
		m, err := flowlog.NewMarks(propMarkMask)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if seed%3 == 0 {
		cfg.FlowLogGroup = 30
		cov.add("flow logs")
		if seed%2 == 0 {
			cfg.FlowMarks = newMarks()
			cov.add("flow marks")
		}
	}
	d := New(f, cfg)
	apply := func(c *calc.Changes) {
		t.Helper()
		if err := d.Apply(t.Context(), c); err != nil {
			t.Fatalf("seed %d: Apply: %v", seed, err)
		}
	}
	var history []string
	check := func(when string) {
		t.Helper()
		tr := newTracer(t, f)
		tr.marks = cfg.FlowMarks
		if cfg.FlowMarks != nil && cfg.FlowMarks.Len() == propMarkMask>>24 {
			cov.add("flow marks full")
		}
		for m := range f.Table.Maps {
			if strings.HasSuffix(m, classMapAltSuffix) {
				cov.add("other class map")
			}
		}
		for _, e := range d.progs.progs {
			if m := e.prog.memo; m != nil && slices.ContainsFunc(m.classes, func(c portClass) bool { return c.partial != nil }) {
				cov.add("kept partition")
			}
		}
		for _, ch := range f.Table.Chains {
			for _, r := range ch.Rules {
				if r.Comment == nil || !strings.HasSuffix(*r.Comment, " more") {
					continue
				}
				if strings.Contains(r.Rule, " . th dport {") {
					cov.add("merged nets")
				} else {
					cov.add("merged ports")
				}
			}
		}
		var bad []string
		var ix *flowlog.Index
		if cfg.FlowLogGroup != 0 {
			ix = flowIndex(w.st)
		}
		for _, pp := range g.packets(w, npk) {
			got, want := propTrace(tr, pp), refPath(w.st, pp.path, &pp.p)
			cov.note(pp, want)
			tAllow, tWhy, tRes := tracePath(w.st, pp.path, &pp.p)
			if tAllow != want.allow {
				bad = append(bad, fmt.Sprintf("%s\n    trace:     %v (%s)\n    reference: %s", pp, tAllow, tWhy, want))
			}
			if ix != nil {
				if problem := checkFlowLogs(ix, got.flows, tRes); problem != "" {
					bad = append(bad, fmt.Sprintf("%s\n    %s", pp, problem))
				}
			}
			if got.verdict == want.verdict() && slices.Equal(got.logs, want.logs) {
				continue
			}
			bad = append(bad, fmt.Sprintf("%s\n    table:     %s, logs %q\n    reference: %s", pp, got.verdict, got.logs, want))
			if len(bad) == 1 {
				bad = append(bad, propShrinkReport(t, w.st, pp))
			}
		}
		if len(bad) > 0 {
			t.Fatalf("seed %d, %s (changes so far: %s): the table's (or the trace's) verdict differs from the rules in order:\n  %s",
				seed, when, cmp.Or(strings.Join(history, "; "), "none"), strings.Join(bad, "\n  "))
		}
	}
	apply(changesOf(w.st))
	check("first render")
	for step := range steps {
		what, c := g.mutate(w)
		cov.add("step " + strings.Fields(what)[0])
		history = append(history, what)
		apply(c)
		check(fmt.Sprintf("after step %d (%s)", step, what))
		if g.chance(0.3) {
			// A sync with nothing new deletes what the previous ones let go.
			apply(&calc.Changes{InSync: true})
			check(fmt.Sprintf("after the sync following step %d", step))
		}
	}
	if g.chance(0.25) {
		// A restarted driver on the same table repairs it in place.
		cov.add("restart")
		history = append(history, "restart")
		if cfg.FlowMarks != nil && g.chance(0.5) {
			// A restarted agent numbers the rules afresh.
			cfg.FlowMarks = newMarks()
			history = append(history, "new flow marks")
		}
		d = New(f, cfg)
		apply(changesOf(w.st))
		check("after a restart")
	}
}

func (c *propCoverage) note(pp propPacket, r refResult) {
	c.add(r.why)
	c.add(r.verdict())
	if len(r.logs) > 0 {
		c.add("logged")
	}
	for i := 1; i < len(r.logs); i++ {
		if r.logs[i] == r.logs[i-1] {
			c.add("logged twice")
		}
	}
	if r.passed > 0 {
		c.add("passed")
	}
	if !pp.p.src.Is4() {
		c.add("v6")
	}
	if pp.p.proto == calc.ProtoICMP || pp.p.proto == calc.ProtoICMPv6 {
		c.add("icmp")
	}
	if pp.path == "output" {
		c.add("output")
	}
	if strings.HasPrefix(pp.p.iif, "cali") && strings.HasPrefix(pp.p.oif, "cali") {
		c.add("workload to workload")
	}
}

// ---- packets ----

// propPacket is a packet and the hook it is traced from: "forward" (a
// routed packet) or "output" (sent by the host).
type propPacket struct {
	path string
	p    packet
}

func (pp propPacket) String() string {
	p := pp.p
	s := fmt.Sprintf("%s packet %s %s", pp.path, propProto(p.proto), p.src)
	switch {
	case refHasPorts(p.proto):
		s = fmt.Sprintf("%s:%d → %s:%d", s, p.sport, p.dst, p.dport)
	case p.proto == calc.ProtoICMP || p.proto == calc.ProtoICMPv6:
		s = fmt.Sprintf("%s → %s type %d code %d", s, p.dst, p.icmpType, p.icmpCode)
	default:
		s = fmt.Sprintf("%s → %s", s, p.dst)
	}
	return fmt.Sprintf("%s (iif %q oif %q)", s, p.iif, p.oif)
}

func propTrace(tr *tracer, pp propPacket) traceResult {
	p := pp.p
	if pp.path == "output" {
		return tr.hook(ChainOutput, &p)
	}
	return tr.forward(&p)
}

// ---- the generator ----

// propGen makes states from small alphabets so that rules keep colliding:
// the same few ports (class boundaries overlap everywhere), nets, sets and
// ICMP types recur.
type propGen struct{ r *rand.Rand }

var (
	propPorts = []uint16{0, 1, 22, 53, 79, 80, 81, 443, 1000, 1024, 2000, 5000, 8080, 8081, 65534, 65535}
	propNets4 = []string{"10.0.0.0/24", "10.0.0.0/28", "10.0.0.16/28", "10.0.0.2/32", "10.0.0.3/32", "10.0.0.5/32",
		"10.0.0.0/16", "10.1.2.0/24", "192.168.0.0/16", "172.16.0.0/12", "0.0.0.0/0"}
	propNets6 = []string{"fd00::/64", "fd00::2/128", "fd00::3/128", "fd00::5/128", "fd00::/16", "2001:db8::/32",
		"2001:db8:1::/48", "::/0"}
	propAddrSets  = []string{"s:a", "s:b", "s:c"}
	propICMPTypes = map[uint8][]uint8{calc.ProtoICMP: {0, 3, 8, 11}, calc.ProtoICMPv6: {1, 128, 129, 135}}
	propProfiles  = []string{"p1", "p2", "p3"}
)

func (g propGen) chance(p float64) bool   { return g.r.Float64() < p }
func propPick[T any](g propGen, xs []T) T { return xs[g.r.IntN(len(xs))] }

// propWorld is a generated state and what its mutations need: the tiers
// with their default actions and policies, and a counter that keeps log
// prefixes unique.
type propWorld struct {
	st    *calc.State
	tiers []propTier
	n     int
	// hot are the addresses and ports at the edges of what the last
	// change touched (members, rules): packets probe them more.
	hotAddrs []netip.Addr
	hotPorts []uint16
}

// heat adds the edges of rules and members to the world's hot values.
func (w *propWorld) heat(rules []calc.Rule, members []calc.Member) {
	var rs []calc.PortRange
	var ps []netip.Prefix
	for _, r := range rules {
		for _, e := range []calc.EntityMatch{r.Src, r.Dst} {
			rs = slices.Concat(rs, e.Ports, e.NotPorts)
			ps = slices.Concat(ps, e.Nets, e.NotNets)
		}
	}
	for _, m := range members {
		ps = append(ps, m.Prefix)
		if m.Port != 0 {
			rs = append(rs, calc.PortRange{First: m.Port, Last: m.Port})
		}
	}
	for _, r := range rs {
		w.hotPorts = append(w.hotPorts, propRangeEdges(r)...)
	}
	for _, p := range ps {
		w.hotAddrs = append(w.hotAddrs, propPrefixEdges(p)...)
	}
}

type propTier struct {
	name     string
	def      calc.Action
	policies []calc.PolicyID
}

func (w *propWorld) prefix(owner, dir string) string {
	w.n++
	return fmt.Sprintf("%s %s%d", owner, dir, w.n)
}

func (g propGen) world() *propWorld {
	st := calc.NewState()
	st.InSync = true
	w := &propWorld{st: st}
	for _, id := range propAddrSets {
		st.IPSets[id] = &calc.IPSet{ID: id, Kind: calc.AddressSet, Selector: "app == '" + id + "'"}
		st.Members[id] = map[calc.Member]struct{}{}
		for range g.r.IntN(5) {
			st.Members[id][g.addrMember()] = struct{}{}
		}
	}
	for _, proto := range []uint8{calc.ProtoTCP, calc.ProtoUDP} {
		id := propNamedSet(proto)
		st.IPSets[id] = &calc.IPSet{ID: id, Kind: calc.NamedPortSet, Selector: "has(app)", Protocol: proto, PortName: "p"}
		st.Members[id] = map[calc.Member]struct{}{}
		for range g.r.IntN(5) {
			st.Members[id][g.namedMember(proto)] = struct{}{}
		}
	}
	for ti := range 1 + g.r.IntN(3) {
		t := propTier{name: fmt.Sprintf("t%d", ti), def: calc.Deny}
		if g.chance(0.3) {
			t.def = calc.Pass
		}
		for pi := range 1 + g.r.IntN(5) {
			p := &calc.Policy{ID: calc.PolicyID{Kind: v3.KindGlobalNetworkPolicy, Name: fmt.Sprintf("%s-p%d", t.name, pi)}, Tier: t.name}
			p.Ingress = g.rules(w, p.ID.Name, "I", false)
			p.Egress = g.rules(w, p.ID.Name, "E", false)
			st.Policies[p.ID] = p
			t.policies = append(t.policies, p.ID)
		}
		w.tiers = append(w.tiers, t)
	}
	if g.chance(0.15) {
		// A policy of many port rules: rewriting it moves more class map
		// elements than the driver deletes in place (maxClassMapDeletions),
		// so it switches to the program's other class map.
		t := &w.tiers[g.r.IntN(len(w.tiers))]
		p := &calc.Policy{ID: calc.PolicyID{Kind: v3.KindGlobalNetworkPolicy, Name: t.name + "-wide"}, Tier: t.name}
		p.Ingress, p.Egress = g.wideRules(w, p.ID.Name, "I"), g.wideRules(w, p.ID.Name, "E")
		st.Policies[p.ID] = p
		t.policies = slices.Insert(t.policies, g.r.IntN(len(t.policies)+1), p.ID)
	}
	for _, name := range propProfiles[:2] {
		if g.chance(0.7) {
			st.Profiles[name] = g.profile(w, name)
		}
	}
	a := wl("a", "calia", "10.0.0.2/32")
	if g.chance(0.5) {
		a.Addresses = append(a.Addresses, pfx("fd00::2/128"))
	}
	g.endpointPolicy(w, a)
	st.Endpoints[a.ID] = a
	if g.chance(0.5) {
		b := wl("b", "calib", "10.0.0.3/32", "fd00::3/128")
		if g.chance(0.3) {
			// The same policy as a: one shared program.
			b.Ingress, b.Egress, b.Profiles = propCloneTiers(a.Ingress), propCloneTiers(a.Egress), slices.Clone(a.Profiles)
		} else {
			g.endpointPolicy(w, b)
		}
		st.Endpoints[b.ID] = b
	}
	return w
}

func propNamedSet(proto uint8) string { return "n:" + propProto(proto) }

func propProto(p uint8) string {
	switch p {
	case calc.ProtoTCP:
		return "tcp"
	case calc.ProtoUDP:
		return "udp"
	case calc.ProtoICMP:
		return "icmp"
	case calc.ProtoICMPv6:
		return "icmpv6"
	case calc.ProtoSCTP:
		return "sctp"
	}
	return fmt.Sprint(p)
}

func (g propGen) addrMember() calc.Member {
	switch g.r.IntN(4) {
	case 0:
		return calc.Member{Prefix: pfx(propPick(g, propNets4))}
	case 1:
		return calc.Member{Prefix: pfx(propPick(g, propNets6))}
	case 2:
		return calc.Member{Prefix: pfx(fmt.Sprintf("fd00::%x/128", 1+g.r.IntN(8)))}
	}
	return calc.Member{Prefix: pfx(fmt.Sprintf("10.0.0.%d/32", 1+g.r.IntN(20)))}
}

func (g propGen) namedMember(proto uint8) calc.Member {
	a := fmt.Sprintf("10.0.0.%d/32", 1+g.r.IntN(6))
	if g.chance(0.25) {
		a = fmt.Sprintf("fd00::%x/128", 1+g.r.IntN(6))
	}
	return calc.Member{Prefix: pfx(a), Protocol: proto, Port: propPick(g, propPorts)}
}

func (g propGen) rules(w *propWorld, owner, dir string, profile bool) []calc.Rule {
	n := 1 + g.r.IntN(8)
	if g.chance(0.1) {
		n = 0 // the policy applies, but has no rules: its tier's end decides
	}
	if profile {
		n = g.r.IntN(5)
	}
	out := make([]calc.Rule, n)
	for i := range out {
		out[i] = g.rule(w.prefix(owner, dir), profile)
	}
	if g.chance(0.3) {
		at := g.r.IntN(len(out) + 1)
		out = slices.Insert(out, at, g.mergeableRun(w, owner, dir, profile)...)
	}
	return out
}

// mergeableRun is 2 to 9 rules of one action and protocol that a program
// merges (merge.go): nets of one side with ports (nested nets, overlapping
// ports), or one selector's set on different ports, mixed with a few that
// merge with none.
func (g propGen) mergeableRun(w *propWorld, owner, dir string, profile bool) []calc.Rule {
	actions := []calc.Action{calc.Allow, calc.Deny, calc.Pass}
	if profile {
		actions = actions[:2]
	}
	a, proto := propPick(g, actions), propPick(g, []uint8{calc.ProtoTCP, calc.ProtoUDP})
	set := propPick(g, propAddrSets)
	out := make([]calc.Rule, 2+g.r.IntN(8))
	for i := range out {
		r := calc.Rule{Action: a, Protocol: proto, LogPrefix: w.prefix(owner, dir)}
		r.ID = r.LogPrefix
		r.Dst.Ports = g.portRanges()
		switch x := g.r.IntN(10); {
		case x < 4:
			r.Src.Nets = g.nets()
		case x < 6:
			r.Dst.Nets = g.nets()
		case x < 9:
			r.Src.IPSet = set
		default:
			r.Src.Nets, r.Src.NotIPSet = g.nets(), set
		}
		out[i] = r
	}
	return out
}

// wideRules are 30 to 80 rules of single ports spread over the port
// space.
func (g propGen) wideRules(w *propWorld, owner, dir string) []calc.Rule {
	out := make([]calc.Rule, 30+g.r.IntN(51))
	for i := range out {
		r := calc.Rule{Action: propPick(g, []calc.Action{calc.Allow, calc.Allow, calc.Deny, calc.Log}),
			Protocol: propPick(g, []uint8{calc.ProtoTCP, calc.ProtoUDP})}
		r.LogPrefix = w.prefix(owner, dir)
		r.ID = r.LogPrefix
		port := uint16(1 + g.r.IntN(65535))
		r.Dst.Ports = []calc.PortRange{{First: port, Last: port + uint16(g.r.IntN(2))*uint16(min(10, 65535-int(port)))}}
		if g.chance(0.2) {
			r.Src.Nets = g.nets()
		}
		out[i] = r
	}
	return out
}

func (g propGen) profile(w *propWorld, name string) *calc.Profile {
	return &calc.Profile{Name: name, Ingress: g.rules(w, "profile "+name, "I", true), Egress: g.rules(w, "profile "+name, "E", true)}
}

// rule is a random rule of the features the driver compiles, combined as
// Calico's validation allows: ports only with TCP, UDP or SCTP, named
// ports with the protocol of their set, ICMP types only with ICMP or
// ICMPv6. Profiles get no Pass (calc documents Pass for tiers only).
// Validation is looser here in one way: a rule's nets may mix IPv4 and
// IPv6, and disagree with its ipVersion (v3 rejects both), since the
// driver compiles such rules family by family (rules.go) and the model
// says what they mean.
func (g propGen) rule(prefix string, profile bool) calc.Rule {
	r := calc.Rule{ID: prefix, LogPrefix: prefix}
	switch x := g.r.IntN(100); {
	case x < 35:
		r.Action = calc.Allow
	case x < 60:
		r.Action = calc.Deny
	case x < 80 && !profile:
		r.Action = calc.Pass
	case x < 80:
		r.Action = calc.Allow
	default:
		r.Action = calc.Log
	}
	switch x := g.r.IntN(20); {
	case x < 5:
	case x < 11:
		r.Protocol = calc.ProtoTCP
	case x < 15:
		r.Protocol = calc.ProtoUDP
	case x < 17:
		r.Protocol = calc.ProtoICMP
	case x < 18:
		r.Protocol = calc.ProtoICMPv6
	case x < 19:
		r.Protocol = calc.ProtoSCTP
	default:
		r.Protocol = 47
	}
	if refHasPorts(r.Protocol) {
		if g.chance(0.65) {
			r.Dst.Ports = g.portRanges()
		}
		if g.chance(0.15) {
			r.Dst.NotPorts = g.portRanges()
		}
		if g.chance(0.12) {
			r.Src.Ports = g.portRanges()
		}
		if g.chance(0.05) {
			r.Src.NotPorts = g.portRanges()
		}
		if r.Protocol != calc.ProtoSCTP {
			if g.chance(0.15) {
				r.Dst.NamedPortSets = []string{propNamedSet(r.Protocol)}
				if len(r.Dst.Ports) == 0 && g.chance(0.5) {
					// Two alternatives a packet can match both of.
					r.Dst.Ports = g.portRanges()
				}
			}
			if g.chance(0.05) {
				r.Dst.NotNamedPortSets = []string{propNamedSet(r.Protocol)}
			}
			if g.chance(0.04) {
				r.Src.NamedPortSets = []string{propNamedSet(r.Protocol)}
			}
		}
	}
	if r.Protocol == calc.ProtoICMP || r.Protocol == calc.ProtoICMPv6 {
		if g.chance(0.4) {
			r.ICMP = g.icmp(r.Protocol)
		}
		if g.chance(0.25) {
			r.NotICMP = g.icmp(r.Protocol)
		}
	}
	if g.chance(0.08) {
		r.NotProtocol = propPick(g, []uint8{calc.ProtoTCP, calc.ProtoUDP, calc.ProtoICMP, 47})
	}
	if g.chance(0.1) {
		r.IPVersion = propPick(g, []uint8{4, 6})
	}
	g.entity(&r.Src, 0.3, 0.1, 0.25, 0.1)
	g.entity(&r.Dst, 0.1, 0.05, 0.1, 0.05)
	return r
}

func (g propGen) entity(e *calc.EntityMatch, nets, notNets, set, notSet float64) {
	if g.chance(nets) {
		e.Nets = g.nets()
	}
	if g.chance(notNets) {
		e.NotNets = g.nets()
	}
	if g.chance(set) {
		e.IPSet = propPick(g, propAddrSets)
	}
	if g.chance(notSet) {
		e.NotIPSet = propPick(g, propAddrSets)
	}
}

func (g propGen) nets() []netip.Prefix {
	var out []netip.Prefix
	for range 1 + g.r.IntN(3) {
		if g.chance(0.75) {
			out = append(out, pfx(propPick(g, propNets4)))
		} else {
			out = append(out, pfx(propPick(g, propNets6)))
		}
	}
	return out
}

func (g propGen) portRanges() []calc.PortRange {
	var out []calc.PortRange
	for range 1 + g.r.IntN(3) {
		a := propPick(g, propPorts)
		if g.chance(0.1) {
			a = uint16(g.r.IntN(65536))
		}
		if g.chance(0.5) {
			out = append(out, calc.PortRange{First: a, Last: a})
			continue
		}
		b := propPick(g, propPorts)
		out = append(out, calc.PortRange{First: min(a, b), Last: max(a, b)})
	}
	return out
}

func (g propGen) icmp(proto uint8) *calc.ICMPMatch {
	m := &calc.ICMPMatch{Type: propPick(g, propICMPTypes[proto])}
	if g.chance(0.4) {
		m.Code, m.HasCode = uint8(g.r.IntN(2)), true
	}
	return m
}

// endpointPolicy gives ep random tier lists (each tier of the world with
// some of its policies, in their order or not) and profiles.
func (g propGen) endpointPolicy(w *propWorld, ep *calc.Endpoint) {
	ep.Ingress, ep.Egress = g.tierLists(w), g.tierLists(w)
	ep.Profiles = nil
	for _, i := range g.r.Perm(len(propProfiles))[:g.r.IntN(3)] {
		name := propProfiles[i]
		_, ok := w.st.Profiles[name]
		ep.Profiles = append(ep.Profiles, calc.ProfileRef{Name: name, Missing: !ok})
	}
}

func (g propGen) tierLists(w *propWorld) []calc.TierPolicies {
	if g.chance(0.05) {
		return nil
	}
	var out []calc.TierPolicies
	for _, t := range w.tiers {
		if !g.chance(0.8) {
			continue
		}
		tp := calc.TierPolicies{Name: t.name, DefaultAction: t.def}
		for _, id := range t.policies {
			if g.chance(0.75) {
				tp.Policies = append(tp.Policies, id)
			}
		}
		if len(tp.Policies) == 0 {
			tp.Policies = []calc.PolicyID{propPick(g, t.policies)}
		}
		if g.chance(0.15) {
			g.r.Shuffle(len(tp.Policies), func(i, j int) { tp.Policies[i], tp.Policies[j] = tp.Policies[j], tp.Policies[i] })
		}
		out = append(out, tp)
	}
	return out
}

func propCloneTiers(ts []calc.TierPolicies) []calc.TierPolicies {
	out := slices.Clone(ts)
	for i := range out {
		out[i].Policies = slices.Clone(out[i].Policies)
	}
	return out
}

func propCloneEndpoint(ep *calc.Endpoint) *calc.Endpoint {
	e := *ep
	e.Ingress, e.Egress, e.Profiles = propCloneTiers(ep.Ingress), propCloneTiers(ep.Egress), slices.Clone(ep.Profiles)
	return &e
}

func propEndpoints(st *calc.State) []*calc.Endpoint {
	var out []*calc.Endpoint
	for _, e := range st.Endpoints {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *calc.Endpoint) int { return calc.CompareEndpointIDs(a.ID, b.ID) })
	return out
}

func propPolicies(st *calc.State) []*calc.Policy {
	var out []*calc.Policy
	for _, p := range st.Policies {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *calc.Policy) int { return calc.ComparePolicyIDs(a.ID, b.ID) })
	return out
}

// mutate makes one random change to the world, as the calc graph would
// send it (new values, never a changed one: the driver keeps what it is
// given), applies it to w.st and returns it with a description.
func (g propGen) mutate(w *propWorld) (string, *calc.Changes) {
	st := w.st
	c := &calc.Changes{InSync: true}
	w.hotAddrs, w.hotPorts = nil, nil
	var what string
	switch x := g.r.IntN(100); {
	case x < 55:
		n := 1
		if g.chance(0.2) {
			n = 2
		}
		pols := propPolicies(st)
		var descs []string
		for _, i := range g.r.Perm(len(pols))[:min(n, len(pols))] {
			p, desc := g.changePolicy(w, pols[i])
			c.PolicyUpdates = append(c.PolicyUpdates, p)
			descs = append(descs, desc)
		}
		slices.SortFunc(c.PolicyUpdates, func(a, b *calc.Policy) int { return calc.ComparePolicyIDs(a.ID, b.ID) })
		what = "policy " + strings.Join(descs, ", ")
	case x < 70:
		id := propPick(g, append(slices.Clone(propAddrSets), propNamedSet(calc.ProtoTCP), propNamedSet(calc.ProtoUDP)))
		md := calc.MemberDelta{SetID: id}
		for _, m := range slices.SortedFunc(propKeys(st.Members[id]), calc.CompareMembers) {
			if g.chance(0.5) {
				md.Removed = append(md.Removed, m)
			}
		}
		for range g.r.IntN(3) {
			m := g.addrMember()
			if st.IPSets[id].Kind == calc.NamedPortSet {
				m = g.namedMember(st.IPSets[id].Protocol)
			}
			if _, ok := st.Members[id][m]; !ok && !slices.Contains(md.Added, m) {
				md.Added = append(md.Added, m)
			}
		}
		slices.SortFunc(md.Added, calc.CompareMembers)
		c.MemberDeltas = []calc.MemberDelta{md}
		w.heat(nil, slices.Concat(md.Added, md.Removed))
		what = fmt.Sprintf("members of %s: +%v -%v", id, md.Added, md.Removed)
	case x < 78 && len(st.Profiles) > 0:
		name := propPick(g, slices.Sorted(mapKeys(st.Profiles)))
		c.ProfileUpdates = []*calc.Profile{g.profile(w, name)}
		what = "profile " + name + " rewritten"
	case x < 90:
		ep := propCloneEndpoint(propPick(g, propEndpoints(st)))
		if g.chance(0.3) {
			// A new policy in a tier, which the endpoint's new lists may
			// use.
			ti := g.r.IntN(len(w.tiers))
			t := &w.tiers[ti]
			p := &calc.Policy{ID: calc.PolicyID{Kind: v3.KindGlobalNetworkPolicy, Name: fmt.Sprintf("%s-p%d", t.name, len(t.policies))}, Tier: t.name}
			p.Ingress = g.rules(w, p.ID.Name, "I", false)
			p.Egress = g.rules(w, p.ID.Name, "E", false)
			t.policies = append(t.policies, p.ID)
			c.PolicyUpdates = []*calc.Policy{p}
		}
		g.endpointPolicy(w, ep)
		c.EndpointUpdates = []*calc.Endpoint{ep}
		what = "endpoint " + ep.InterfaceName + " has new tiers and profiles"
	default:
		ti := g.r.IntN(len(w.tiers))
		t := &w.tiers[ti]
		t.def = map[calc.Action]calc.Action{calc.Deny: calc.Pass, calc.Pass: calc.Deny}[t.def]
		for _, e := range propEndpoints(st) {
			ep := propCloneEndpoint(e)
			changed := false
			for _, ts := range [][]calc.TierPolicies{ep.Ingress, ep.Egress} {
				for i := range ts {
					if ts[i].Name == t.name {
						ts[i].DefaultAction, changed = t.def, true
					}
				}
			}
			if changed {
				c.EndpointUpdates = append(c.EndpointUpdates, ep)
			}
		}
		what = fmt.Sprintf("tier default %s now %s", t.name, t.def)
	}
	st.Apply(c)
	return what, c
}

// changePolicy returns a new version of p with one change to one
// direction's rules.
func (g propGen) changePolicy(w *propWorld, old *calc.Policy) (*calc.Policy, string) {
	p := *old
	p.Ingress, p.Egress = slices.Clone(old.Ingress), slices.Clone(old.Egress)
	rules, dir := &p.Ingress, "I"
	if g.chance(0.4) {
		rules, dir = &p.Egress, "E"
	}
	rs := *rules
	var desc string
	i := 0
	if len(rs) > 0 {
		i = g.r.IntN(len(rs))
	}
	switch x := g.r.IntN(7); {
	case strings.HasSuffix(p.ID.Name, "-wide") && x < 3:
		rs = g.wideRules(w, p.ID.Name, dir)
		desc = "rules " + dir + " rewritten"
	case len(rs) == 0 || x == 0:
		j := g.r.IntN(len(rs) + 1)
		rs = slices.Insert(rs, j, g.rule(w.prefix(p.ID.Name, dir), false))
		desc = fmt.Sprintf("rule inserted at %s%d", dir, j)
	case x == 1:
		rs = slices.Delete(rs, i, i+1)
		desc = fmt.Sprintf("rule %s%d deleted", dir, i)
	case x == 2:
		rs[i] = g.rule(w.prefix(p.ID.Name, dir), false)
		desc = fmt.Sprintf("rule %s%d replaced", dir, i)
	case x == 3:
		rs[i].Action = propPick(g, []calc.Action{calc.Allow, calc.Deny, calc.Pass, calc.Log})
		desc = fmt.Sprintf("rule %s%d action %s", dir, i, rs[i].Action)
	case x == 4 && refHasPorts(rs[i].Protocol):
		r := &rs[i]
		if len(r.Dst.Ports) > 0 && g.chance(0.5) {
			// Move one edge of one range by one: a class boundary moves.
			ports := slices.Clone(r.Dst.Ports)
			k := g.r.IntN(len(ports))
			if ports[k].Last < 65535 && g.chance(0.5) {
				ports[k].Last++
			} else if ports[k].First > 0 {
				ports[k].First--
			}
			r.Dst.Ports = ports
		} else {
			r.Dst.Ports = g.portRanges()
		}
		desc = fmt.Sprintf("rule %s%d ports %v", dir, i, r.Dst.Ports)
	case x == 5 && len(rs) > 1:
		j := g.r.IntN(len(rs))
		rs[i], rs[j] = rs[j], rs[i]
		desc = fmt.Sprintf("rules %s%d and %s%d swapped", dir, i, dir, j)
	default:
		rs = g.rules(w, p.ID.Name, dir, false)
		desc = "rules " + dir + " rewritten"
	}
	*rules = rs
	if dir == "I" {
		w.heat(slices.Concat(old.Ingress, p.Ingress), nil)
	} else {
		w.heat(slices.Concat(old.Egress, p.Egress), nil)
	}
	return &p, p.ID.Name + " " + desc
}

// packets are n random packets of the paths st's endpoints have, biased
// to the edges of what the rules test: ports at and around range ends,
// addresses at and around the ends of nets and set members.
func (g propGen) packets(w *propWorld, n int) []propPacket {
	st := w.st
	ports, addrs := propInteresting(st)
	hot := map[bool][]netip.Addr{}
	for _, a := range w.hotAddrs {
		hot[a.Is4()] = append(hot[a.Is4()], a)
	}
	eps := propEndpoints(st)
	addrOf := func(ep *calc.Endpoint, v4 bool) (netip.Addr, bool) {
		for _, a := range ep.Addresses {
			if a.Addr().Is4() == v4 {
				return a.Addr(), true
			}
		}
		return netip.Addr{}, false
	}
	remote := func(v4 bool) netip.Addr {
		if len(hot[v4]) > 0 && g.chance(0.4) {
			return propPick(g, hot[v4])
		}
		if g.chance(0.8) {
			return propPick(g, addrs[v4])
		}
		if v4 {
			return netip.AddrFrom4([4]byte{10, 0, byte(g.r.IntN(3)), byte(g.r.IntN(256))})
		}
		return netip.MustParseAddr(fmt.Sprintf("fd00::%x", g.r.IntN(64)))
	}
	var out []propPacket
	for len(out) < n {
		from, to := propPick(g, eps), propPick(g, eps)
		pp := propPacket{path: "forward"}
		switch x := g.r.IntN(10); {
		case x < 4:
			from = nil // from outside to a workload
		case x < 7:
			to = nil // from a workload to outside
		case x < 8:
			from, pp.path = nil, "output" // from the host
		default:
			if len(eps) < 2 {
				continue
			}
			to = eps[0]
			if from == to {
				to = eps[1]
			}
		}
		v4 := !g.chance(0.3)
		p := &pp.p
		p.ct = "new"
		if from != nil {
			a, ok := addrOf(from, v4)
			if !ok {
				continue
			}
			p.iif, p.src = from.InterfaceName, a
		} else {
			p.src = remote(v4)
			if pp.path == "forward" {
				p.iif = "eth0"
			}
		}
		if to != nil {
			a, ok := addrOf(to, v4)
			if !ok {
				continue
			}
			p.oif, p.dst = to.InterfaceName, a
			if from == nil && g.chance(0.2) {
				// The forward chain goes by interface: let the
				// destination vary too, to test destination conditions.
				p.dst = remote(v4)
			}
		} else {
			p.oif, p.dst = "eth0", remote(v4)
		}
		switch x := g.r.IntN(20); {
		case x < 7:
			p.proto = calc.ProtoTCP
		case x < 12:
			p.proto = calc.ProtoUDP
		case x < 16:
			p.proto = calc.ProtoICMP
			if !v4 {
				p.proto = calc.ProtoICMPv6
			}
		case x < 18:
			p.proto = calc.ProtoSCTP
		default:
			p.proto = propPick(g, []uint8{47, calc.ProtoUDPLite})
		}
		m, named := g.namedPortMember(st, v4)
		if named {
			p.proto = m.Protocol
		}
		if refHasPorts(p.proto) {
			p.dport = propPick(g, ports)
			if len(w.hotPorts) > 0 && g.chance(0.4) {
				p.dport = propPick(g, w.hotPorts)
			}
			if g.chance(0.1) {
				p.dport = uint16(g.r.IntN(65536))
			}
			p.sport = uint16(32768 + g.r.IntN(28000))
			if g.chance(0.4) {
				p.sport = propPick(g, ports)
			}
		}
		if named {
			// At a named port: the destination is a member of a named-port
			// set (a packet to a workload may have any destination: the
			// forward chain goes by interface).
			p.dport = m.Port
			if to == nil || from == nil && g.chance(0.5) {
				p.dst = m.Prefix.Addr()
			}
		}
		if p.proto == calc.ProtoICMP || p.proto == calc.ProtoICMPv6 {
			p.icmpType = propPick(g, propICMPTypes[p.proto])
			if g.chance(0.2) {
				p.icmpType = uint8(g.r.IntN(256))
			}
			p.icmpCode = uint8(g.r.IntN(3))
		}
		out = append(out, pp)
	}
	return out
}

// namedPortMember is, sometimes, a random member of family v4 of a
// named-port set of st.
func (g propGen) namedPortMember(st *calc.State, v4 bool) (calc.Member, bool) {
	if !g.chance(0.15) {
		return calc.Member{}, false
	}
	var ms []calc.Member
	for _, id := range slices.Sorted(mapKeys(st.Members)) {
		for _, m := range slices.SortedFunc(propKeys(st.Members[id]), calc.CompareMembers) {
			if m.Protocol != 0 && m.Prefix.Addr().Is4() == v4 {
				ms = append(ms, m)
			}
		}
	}
	if len(ms) == 0 {
		return calc.Member{}, false
	}
	return propPick(g, ms), true
}

// propInteresting are the ports and addresses (by family, true for IPv4)
// at and around every edge st's rules and sets have.
func propInteresting(st *calc.State) ([]uint16, map[bool][]netip.Addr) {
	ports := map[uint16]bool{}
	addrs := map[netip.Addr]bool{}
	for _, p := range propPorts {
		ports[p] = true
	}
	addRange := func(r calc.PortRange) {
		for _, p := range propRangeEdges(r) {
			ports[p] = true
		}
	}
	addPrefix := func(p netip.Prefix) {
		for _, a := range propPrefixEdges(p) {
			addrs[a] = true
		}
	}
	entity := func(e *calc.EntityMatch) {
		for _, r := range slices.Concat(e.Ports, e.NotPorts) {
			addRange(r)
		}
		for _, p := range slices.Concat(e.Nets, e.NotNets) {
			addPrefix(p)
		}
	}
	rules := func(rs []calc.Rule) {
		for i := range rs {
			entity(&rs[i].Src)
			entity(&rs[i].Dst)
		}
	}
	for _, p := range st.Policies {
		rules(p.Ingress)
		rules(p.Egress)
	}
	for _, p := range st.Profiles {
		rules(p.Ingress)
		rules(p.Egress)
	}
	for _, ms := range st.Members {
		for m := range ms {
			addPrefix(m.Prefix)
			if m.Port != 0 {
				ports[m.Port] = true
			}
		}
	}
	for _, e := range st.Endpoints {
		for _, a := range e.Addresses {
			addPrefix(a)
		}
	}
	// Every address the generator draws members from, so that a member
	// just removed is still probed.
	for _, n := range slices.Concat(propNets4, propNets6) {
		addPrefix(pfx(n))
	}
	for i := 1; i <= 20; i++ {
		addrs[netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})] = true
		addrs[netip.MustParseAddr(fmt.Sprintf("fd00::%x", i))] = true
	}
	for _, a := range []string{"172.16.0.1", "192.168.7.7", "8.8.8.8", "2001:db8:1::9", "2001:db8:ffff::1", "fe80::1"} {
		addrs[netip.MustParseAddr(a)] = true
	}
	byFamily := map[bool][]netip.Addr{}
	for _, a := range slices.SortedFunc(propKeys(addrs), netip.Addr.Compare) {
		byFamily[a.Is4()] = append(byFamily[a.Is4()], a)
	}
	return slices.Sorted(propKeys(ports)), byFamily
}

func propKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// propRangeEdges are the ends of r and the ports just outside.
func propRangeEdges(r calc.PortRange) []uint16 {
	out := []uint16{r.First, r.Last}
	if r.First > 0 {
		out = append(out, r.First-1)
	}
	if r.Last < 65535 {
		out = append(out, r.Last+1)
	}
	return out
}

// propPrefixEdges are the first and last addresses of p and those just
// outside.
func propPrefixEdges(p netip.Prefix) []netip.Addr {
	p = p.Masked()
	first, last := p.Addr(), propLastAddr(p)
	var out []netip.Addr
	for _, a := range []netip.Addr{first, last, first.Prev(), last.Next()} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// propLastAddr is the last address of prefix p.
func propLastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ---- shrinking a failure ----

// propShrinkReport renders st afresh and, when the packet's verdict is
// wrong there too, shrinks the state (fewer endpoints, tiers, policies,
// profiles, rules, rule conditions, set members) while it stays wrong,
// and describes what is left: the minimal reproducer.
func propShrinkReport(t *testing.T, st *calc.State, pp propPacket) string {
	fails := func(st *calc.State) bool {
		f := newFake()
		if err := New(f, Config{}).Apply(t.Context(), changesOf(st)); err != nil {
			return false
		}
		got, want := propTrace(newTracer(t, f), pp), refPath(st, pp.path, &pp.p)
		return got.verdict != want.verdict() || !slices.Equal(got.logs, want.logs)
	}
	if !fails(st) {
		return "  (a fresh render of this state gives the right verdict: only the incremental updates went wrong)\n" + propDescribe(st)
	}
	for progress := true; progress; {
		progress = false
		for _, cand := range propCandidates(st, pp) {
			if fails(cand) {
				st, progress = cand, true
				break
			}
		}
	}
	f := newFake()
	_ = New(f, Config{}).Apply(t.Context(), changesOf(st))
	got, want := propTrace(newTracer(t, f), pp), refPath(st, pp.path, &pp.p)
	return fmt.Sprintf("  minimal state that still fails on a fresh render (table %s, logs %q; reference %s):\n%s",
		got.verdict, got.logs, want, propDescribe(st))
}

// propCandidates are the states one step smaller than st.
func propCandidates(st *calc.State, pp propPacket) []*calc.State {
	var out []*calc.State
	clone := func() *calc.State {
		c := calc.NewState()
		c.InSync = true
		for k, v := range st.IPSets {
			c.IPSets[k] = v
		}
		for k, v := range st.Members {
			c.Members[k] = v
		}
		for k, v := range st.Policies {
			c.Policies[k] = v
		}
		for k, v := range st.Profiles {
			c.Profiles[k] = v
		}
		for k, v := range st.Endpoints {
			c.Endpoints[k] = v
		}
		return c
	}
	// Endpoints the packet does not meet.
	for _, e := range propEndpoints(st) {
		if e.InterfaceName != pp.p.iif && e.InterfaceName != pp.p.oif {
			c := clone()
			delete(c.Endpoints, e.ID)
			out = append(out, c)
		}
	}
	// Tiers, policies in tiers, profiles of endpoints.
	for _, e := range propEndpoints(st) {
		for dir := range 2 {
			ts := e.Ingress
			if dir == 1 {
				ts = e.Egress
			}
			set := func(ep *calc.Endpoint, ts []calc.TierPolicies) {
				if dir == 1 {
					ep.Egress = ts
				} else {
					ep.Ingress = ts
				}
			}
			for i := range ts {
				c, ep := clone(), propCloneEndpoint(e)
				set(ep, slices.Delete(propCloneTiers(ts), i, i+1))
				c.Endpoints[e.ID] = ep
				out = append(out, c)
				for j := range ts[i].Policies {
					c, ep := clone(), propCloneEndpoint(e)
					nts := propCloneTiers(ts)
					nts[i].Policies = slices.Delete(nts[i].Policies, j, j+1)
					set(ep, nts)
					c.Endpoints[e.ID] = ep
					out = append(out, c)
				}
			}
		}
		for i := range e.Profiles {
			c, ep := clone(), propCloneEndpoint(e)
			ep.Profiles = slices.Delete(slices.Clone(e.Profiles), i, i+1)
			c.Endpoints[e.ID] = ep
			out = append(out, c)
		}
	}
	// Objects nothing uses any more.
	used := map[string]bool{}
	for _, e := range st.Endpoints {
		for _, ts := range [][]calc.TierPolicies{e.Ingress, e.Egress} {
			for _, t := range ts {
				for _, id := range t.Policies {
					used["policy "+id.String()] = true
				}
			}
		}
		for _, p := range e.Profiles {
			used["profile "+p.Name] = true
		}
	}
	for _, p := range propPolicies(st) {
		if !used["policy "+p.ID.String()] {
			c := clone()
			delete(c.Policies, p.ID)
			out = append(out, c)
		}
	}
	for _, n := range slices.Sorted(mapKeys(st.Profiles)) {
		if !used["profile "+n] {
			c := clone()
			delete(c.Profiles, n)
			out = append(out, c)
		}
	}
	// Rules, then conditions of rules.
	type owner struct {
		rules [2][]calc.Rule
		put   func(c *calc.State, rules [2][]calc.Rule)
	}
	var owners []owner
	for _, p := range propPolicies(st) {
		owners = append(owners, owner{[2][]calc.Rule{p.Ingress, p.Egress}, func(c *calc.State, rs [2][]calc.Rule) {
			q := *p
			q.Ingress, q.Egress = rs[0], rs[1]
			c.Policies[p.ID] = &q
		}})
	}
	for _, n := range slices.Sorted(mapKeys(st.Profiles)) {
		p := st.Profiles[n]
		owners = append(owners, owner{[2][]calc.Rule{p.Ingress, p.Egress}, func(c *calc.State, rs [2][]calc.Rule) {
			q := *p
			q.Ingress, q.Egress = rs[0], rs[1]
			c.Profiles[n] = &q
		}})
	}
	for _, o := range owners {
		for dir := range 2 {
			for i := range o.rules[dir] {
				rs := o.rules
				rs[dir] = slices.Delete(slices.Clone(rs[dir]), i, i+1)
				c := clone()
				o.put(c, rs)
				out = append(out, c)
			}
		}
	}
	for _, o := range owners {
		for dir := range 2 {
			for i := range o.rules[dir] {
				for _, simpler := range propSimplerRules(o.rules[dir][i]) {
					rs := o.rules
					rs[dir] = slices.Clone(rs[dir])
					rs[dir][i] = simpler
					c := clone()
					o.put(c, rs)
					out = append(out, c)
				}
			}
		}
	}
	// Set members.
	for _, id := range slices.Sorted(mapKeys(st.Members)) {
		for _, m := range slices.SortedFunc(propKeys(st.Members[id]), calc.CompareMembers) {
			c := clone()
			ms := map[calc.Member]struct{}{}
			for x := range st.Members[id] {
				if x != m {
					ms[x] = struct{}{}
				}
			}
			c.Members[id] = ms
			out = append(out, c)
		}
	}
	return out
}

// propSimplerRules are r with one condition less (or a smaller one).
func propSimplerRules(r calc.Rule) []calc.Rule {
	var out []calc.Rule
	try := func(ok bool, f func(*calc.Rule)) {
		if ok {
			s := r
			f(&s)
			out = append(out, s)
		}
	}
	try(r.IPVersion != 0, func(s *calc.Rule) { s.IPVersion = 0 })
	try(r.NotProtocol != 0, func(s *calc.Rule) { s.NotProtocol = 0 })
	try(r.ICMP != nil, func(s *calc.Rule) { s.ICMP = nil })
	try(r.NotICMP != nil, func(s *calc.Rule) { s.NotICMP = nil })
	try(r.ICMP != nil && r.ICMP.HasCode, func(s *calc.Rule) { s.ICMP = &calc.ICMPMatch{Type: r.ICMP.Type} })
	try(r.Protocol != 0 && !refHasPorts(r.Protocol) && r.ICMP == nil && r.NotICMP == nil, func(s *calc.Rule) { s.Protocol = 0 })
	for side := range 2 {
		e := r.Src
		if side == 1 {
			e = r.Dst
		}
		put := func(s *calc.Rule, e calc.EntityMatch) {
			if side == 1 {
				s.Dst = e
			} else {
				s.Src = e
			}
		}
		clear := func(ok bool, f func(*calc.EntityMatch)) {
			try(ok, func(s *calc.Rule) { x := e; f(&x); put(s, x) })
		}
		clear(len(e.Nets) > 0, func(x *calc.EntityMatch) { x.Nets = nil })
		clear(len(e.Nets) > 1, func(x *calc.EntityMatch) { x.Nets = e.Nets[1:] })
		clear(len(e.NotNets) > 0, func(x *calc.EntityMatch) { x.NotNets = nil })
		clear(len(e.NotNets) > 1, func(x *calc.EntityMatch) { x.NotNets = e.NotNets[1:] })
		clear(e.IPSet != "", func(x *calc.EntityMatch) { x.IPSet = "" })
		clear(e.NotIPSet != "", func(x *calc.EntityMatch) { x.NotIPSet = "" })
		clear(len(e.Ports) > 0, func(x *calc.EntityMatch) { x.Ports = nil })
		clear(len(e.Ports) > 1, func(x *calc.EntityMatch) { x.Ports = e.Ports[1:] })
		clear(len(e.NotPorts) > 0, func(x *calc.EntityMatch) { x.NotPorts = nil })
		clear(len(e.NamedPortSets) > 0, func(x *calc.EntityMatch) { x.NamedPortSets = nil })
		clear(len(e.NotNamedPortSets) > 0, func(x *calc.EntityMatch) { x.NotNamedPortSets = nil })
	}
	// A protocol with ports can go once no port condition is left.
	try(refHasPorts(r.Protocol) && len(r.Src.Ports)+len(r.Src.NotPorts)+len(r.Dst.Ports)+len(r.Dst.NotPorts)+
		len(r.Src.NamedPortSets)+len(r.Dst.NamedPortSets)+len(r.Src.NotNamedPortSets)+len(r.Dst.NotNamedPortSets) == 0,
		func(s *calc.Rule) { s.Protocol = 0 })
	return out
}

// propDescribe writes a state for a failure message.
func propDescribe(st *calc.State) string {
	var b strings.Builder
	for _, e := range propEndpoints(st) {
		fmt.Fprintf(&b, "    endpoint %s %v\n", e.InterfaceName, e.Addresses)
		for _, d := range []struct {
			name string
			ts   []calc.TierPolicies
		}{{"ingress", e.Ingress}, {"egress", e.Egress}} {
			for _, t := range d.ts {
				var ids []string
				for _, id := range t.Policies {
					ids = append(ids, id.Name)
				}
				fmt.Fprintf(&b, "      %s tier %s (default %s): %s\n", d.name, t.Name, t.DefaultAction, strings.Join(ids, ", "))
			}
		}
		for _, p := range e.Profiles {
			fmt.Fprintf(&b, "      profile %s (missing %v)\n", p.Name, p.Missing)
		}
	}
	rules := func(kind, name string, in, eg []calc.Rule) {
		for _, d := range []struct {
			name string
			rs   []calc.Rule
		}{{"ingress", in}, {"egress", eg}} {
			for i := range d.rs {
				fmt.Fprintf(&b, "    %s %s %s[%d]: %s\n", kind, name, d.name, i, propRuleString(&d.rs[i]))
			}
		}
	}
	for _, p := range propPolicies(st) {
		rules("policy", p.ID.Name, p.Ingress, p.Egress)
	}
	for _, n := range slices.Sorted(mapKeys(st.Profiles)) {
		rules("profile", n, st.Profiles[n].Ingress, st.Profiles[n].Egress)
	}
	for _, id := range slices.Sorted(mapKeys(st.Members)) {
		if len(st.Members[id]) > 0 {
			fmt.Fprintf(&b, "    set %s: %v\n", id, slices.SortedFunc(propKeys(st.Members[id]), calc.CompareMembers))
		}
	}
	return b.String()
}

func propRuleString(r *calc.Rule) string {
	parts := []string{string(r.Action), fmt.Sprintf("%q", r.LogPrefix)}
	add := func(ok bool, format string, args ...any) {
		if ok {
			parts = append(parts, fmt.Sprintf(format, args...))
		}
	}
	add(r.IPVersion != 0, "ipVersion %d", r.IPVersion)
	add(r.Protocol != 0, "protocol %s", propProto(r.Protocol))
	add(r.NotProtocol != 0, "notProtocol %s", propProto(r.NotProtocol))
	add(r.ICMP != nil, "icmp %+v", r.ICMP)
	add(r.NotICMP != nil, "notICMP %+v", r.NotICMP)
	for _, s := range []struct {
		name string
		e    calc.EntityMatch
	}{{"src", r.Src}, {"dst", r.Dst}} {
		e := s.e
		add(len(e.Nets) > 0, "%s nets %v", s.name, e.Nets)
		add(len(e.NotNets) > 0, "%s notNets %v", s.name, e.NotNets)
		add(e.IPSet != "", "%s set %s", s.name, e.IPSet)
		add(e.NotIPSet != "", "%s notSet %s", s.name, e.NotIPSet)
		add(len(e.Ports) > 0, "%s ports %v", s.name, e.Ports)
		add(len(e.NotPorts) > 0, "%s notPorts %v", s.name, e.NotPorts)
		add(len(e.NamedPortSets) > 0, "%s namedPorts %v", s.name, e.NamedPortSets)
		add(len(e.NotNamedPortSets) > 0, "%s notNamedPorts %v", s.name, e.NotNamedPortSets)
	}
	return strings.Join(parts, " ")
}
