package nft

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/pkg/calc"
)

// recorder remembers the text of every transaction run through it.
type recorder struct {
	knftables.Interface
	txs []string
}

func (r *recorder) Run(ctx context.Context, tx *knftables.Transaction) error {
	r.txs = append(r.txs, tx.String())
	return r.Interface.Run(ctx, tx)
}

// Unwrap implements Unwrapper.
func (r *recorder) Unwrap() knftables.Interface { return r.Interface }

func (r *recorder) last() string { return r.txs[len(r.txs)-1] }

func TestIncrementalEqualsFull(t *testing.T) {
	final := featureScenario()
	full, _ := render(t, final)

	f := newFake()
	d := New(f, Config{})
	steps := changesOf(final.state)
	apply := func(c *calc.Changes) {
		t.Helper()
		c.InSync = true
		if err := d.Apply(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	apply(&calc.Changes{})
	apply(&calc.Changes{IPSetUpdates: steps.IPSetUpdates})
	apply(&calc.Changes{PolicyUpdates: steps.PolicyUpdates, ProfileUpdates: steps.ProfileUpdates})
	// An endpoint with an older version of a policy first, then the real one.
	old := gpol("web", "default", []calc.Rule{rule("default web I0", calc.Deny, nil)}, nil)
	apply(&calc.Changes{PolicyUpdates: []*calc.Policy{old}})
	apply(&calc.Changes{EndpointUpdates: steps.EndpointUpdates})
	extra := wl("gone", "caligone", "10.0.0.9/32")
	apply(&calc.Changes{EndpointUpdates: []*calc.Endpoint{extra}})
	for _, p := range steps.PolicyUpdates {
		if p.ID.Name == "web" {
			apply(&calc.Changes{PolicyUpdates: []*calc.Policy{p}})
		}
	}
	apply(&calc.Changes{EndpointRemoves: []calc.EndpointID{extra.ID}})
	apply(&calc.Changes{}) // deletes what the previous syncs left unreferenced
	if got, want := sortedDump(f), sortedDump(full); got != want {
		t.Errorf("incremental result differs from a full render:\n--- incremental\n%s\n--- full\n%s", got, want)
	}
}

func TestMembershipChangeIsElementsOnly(t *testing.T) {
	s := featureScenario()
	f := newFake()
	rec := &recorder{Interface: f}
	d := New(rec, Config{})
	if err := d.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	err := d.Apply(t.Context(), &calc.Changes{InSync: true, MemberDeltas: []calc.MemberDelta{{
		SetID:   "s:front",
		Added:   []calc.Member{member("10.0.2.7/32"), member("10.0.1.5/32")},
		Removed: []calc.Member{member("fd00::1/128")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	v4 := ipSetName("s:front", calc.AddressSet, 4)
	v6 := ipSetName("s:front", calc.AddressSet, 6)
	want := "add table inet tortie { comment \"tortie: network policy (owned by tortie-node)\" ; }\n" +
		"add element inet tortie " + v4 + " { 10.0.2.7 }\n" +
		"delete element inet tortie " + v6 + " { fd00::1 }\n"
	if got := rec.last(); got != want {
		t.Errorf("transaction:\n%s\nwant (10.0.1.5 is inside 10.0.1.0/24, already a member):\n%s", got, want)
	}
	// Removing the /24 brings back the /32s inside it.
	if err := d.Apply(t.Context(), &calc.Changes{InSync: true, MemberDeltas: []calc.MemberDelta{{SetID: "s:front", Removed: []calc.Member{member("10.0.1.0/24")}}}}); err != nil {
		t.Fatal(err)
	}
	got := rec.last()
	for _, w := range []string{"delete element inet tortie " + v4 + " { 10.0.1.0/24 }", "add element inet tortie " + v4 + " { 10.0.1.1 }", "add element inet tortie " + v4 + " { 10.0.1.5 }"} {
		if !strings.Contains(got, w) {
			t.Errorf("transaction lacks %q:\n%s", w, got)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(got), "\n")[1:] {
		if !strings.Contains(l, " element ") {
			t.Errorf("membership change wrote %q", l)
		}
	}
}

func TestResyncRepairsAndRestartChangesNothing(t *testing.T) {
	s := featureScenario()
	f, d := render(t, s)
	want := sortedDump(f)

	// Drift: delete a rule and an element by hand.
	rules, _ := f.ListRules(t.Context(), ChainForward)
	tx := f.NewTransaction()
	tx.Delete(&knftables.Rule{Chain: ChainForward, Handle: rules[0].Handle})
	tx.Delete(&knftables.Element{Set: SetWorkloadIfaces, Key: []string{"caliweb"}})
	tx.Add(&knftables.Chain{Name: "intruder"})
	if err := f.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if err := d.Resync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := d.Resync(t.Context()); err != nil { // deletes the intruder chain
		t.Fatal(err)
	}
	if got := sortedDump(f); got != want {
		t.Errorf("after resync:\n%s\nwant:\n%s", got, want)
	}

	// A new driver on the same table: no flush, no delete, same table.
	rec := &recorder{Interface: f}
	d2 := New(rec, Config{})
	if err := d2.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	for _, tx := range rec.txs {
		if strings.Contains(tx, "flush") || strings.Contains(tx, "delete") {
			t.Errorf("restart wrote %s", tx)
		}
	}
	if got := sortedDump(f); got != want {
		t.Errorf("after restart:\n%s\nwant:\n%s", got, want)
	}
}

func TestNothingBeforeInSync(t *testing.T) {
	f := newFake()
	d := New(f, Config{})
	c := changesOf(featureScenario().state)
	c.InSync = false
	if err := d.Apply(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if f.Table != nil {
		t.Errorf("programmed before in sync:\n%s", f.Dump())
	}
}

func TestTrace(t *testing.T) {
	ip := netip.MustParseAddr
	type tc struct {
		name string
		p    packet
		hook string // "" = forward path
		want string
		logs int
		scen string
	}
	web4, web6 := ip("10.0.0.2"), ip("fd00::2")
	ext := ip("172.16.0.1")
	in := func(src netip.Addr, proto uint8, dport uint16) packet {
		dst := web4
		if !src.Is4() {
			dst = web6
		}
		return packet{iif: "eth0", oif: "caliweb", src: src, dst: dst, proto: proto, sport: 40000, dport: dport, ct: "new"}
	}
	icmp := func(src netip.Addr, proto, typ, code uint8) packet {
		p := in(src, proto, 0)
		p.icmpType, p.icmpCode = typ, code
		return p
	}
	cases := []tc{
		{name: "established passes without policy", p: func() packet { p := in(ext, 6, 1); p.ct = "established"; return p }(), want: "accept"},
		{name: "invalid dropped", p: func() packet { p := in(ext, 6, 80); p.ct = "invalid"; return p }(), want: "drop"},
		{name: "selector allows port 80 after Pass", p: in(ip("10.0.1.9"), 6, 80), want: "accept"},
		{name: "port 80 from outside the selector: default deny", p: in(ext, 6, 80), want: "drop"},
		{name: "deny nets before everything", p: in(ip("10.66.3.3"), 6, 80), want: "drop"},
		{name: "deny v6 nets", p: in(ip("2001:db8:66::5"), 17, 5000), want: "drop"},
		{name: "named port", p: in(ext, 6, 8080), want: "accept"},
		{name: "named port v6", p: in(ip("fd00::9"), 6, 8080), want: "accept"},
		{name: "Pass skips the rest of the tier: port 22 not allowed by tier default", p: in(ext, 6, 22), want: "drop"},
		{name: "udp range", p: in(ext, 17, 5001), want: "accept"},
		{name: "udp notPorts", p: in(ext, 17, 5500), want: "drop"},
		{name: "sctp", p: in(ext, 132, 9000), want: "accept"},
		{name: "protocol number 47", p: in(ext, 47, 0), want: "accept"},
		{name: "ipVersion 6 udp", p: in(ip("fd00::9"), 17, 53), want: "accept"},
		{name: "ipVersion 6 rule does not match v4", p: in(ext, 17, 53), want: "drop"},
		{name: "icmp echo type+code", p: icmp(ext, 1, 8, 0), want: "accept"},
		{name: "icmp other type hits notICMP deny", p: icmp(ext, 1, 3, 1), want: "drop"},
		{name: "icmpv6 echo", p: icmp(ip("fd00::9"), 58, 128, 0), want: "accept"},
		{name: "nets/notNets/src ports", p: func() packet { p := in(ip("192.168.1.1"), 6, 8050); return p }(), want: "accept"},
		{name: "notNets excludes", p: in(ip("192.168.9.1"), 6, 8050), want: "drop"},
		{name: "notSelector keeps a member of both sets", p: in(ip("10.0.1.66"), 6, 80), want: "accept"},
		{name: "tier default Deny comes before the profile", p: in(ext, 6, 443), want: "drop"},
		{name: "log then continue", p: in(ext, 6, 23), want: "drop", logs: 1},
		{name: "dst nets", p: in(ext, 6, 7000), want: "accept"},
		{name: "missing profile fails closed", p: packet{iif: "eth0", oif: "calidb", src: ext, dst: ip("10.0.0.3"), proto: 6, dport: 80, ct: "new"}, want: "drop"},
		{name: "unknown cali interface", p: packet{iif: "eth0", oif: "calizzz", src: ext, dst: ip("10.0.0.4"), proto: 6, dport: 80, ct: "new"}, want: "drop"},
		{name: "workload egress profile allows", p: packet{iif: "caliweb", oif: "eth0", src: web4, dst: ext, proto: 6, dport: 80, ct: "new"}, want: "accept"},
		{name: "workload to host: endpoint-to-host drop", hook: ChainInput, p: packet{iif: "caliweb", src: web4, dst: ext, proto: 6, dport: 22, ct: "new"}, want: "drop"},
		{name: "host to workload: ingress policy", hook: ChainOutput, p: packet{oif: "caliweb", src: ip("10.0.1.9"), dst: web4, proto: 6, dport: 80, ct: "new"}, want: "accept"},
		{name: "host to workload: denied", hook: ChainOutput, p: packet{oif: "caliweb", src: ext, dst: web4, proto: 6, dport: 444, ct: "new"}, want: "drop"},
		// host endpoints
		{scen: "host", name: "hep allows 80", hook: ChainInput, p: packet{iif: "eth0", src: ext, dst: ip("192.0.2.10"), proto: 6, dport: 80, ct: "new"}, want: "accept"},
		{scen: "host", name: "hep default deny", hook: ChainInput, p: packet{iif: "eth0", src: ext, dst: ip("192.0.2.10"), proto: 6, dport: 81, ct: "new"}, want: "drop"},
		{scen: "host", name: "failsafe ssh", hook: ChainInput, p: packet{iif: "eth0", src: ext, dst: ip("192.0.2.10"), proto: 6, dport: 22, ct: "new"}, want: "accept"},
		{scen: "host", name: "wildcard hep on eth1", hook: ChainInput, p: packet{iif: "eth1", src: ext, dst: ip("192.0.2.11"), proto: 6, dport: 81, ct: "new"}, want: "drop"},
		{scen: "host", name: "wildcard hep allows 80", hook: ChainInput, p: packet{iif: "eth1", src: ext, dst: ip("192.0.2.11"), proto: 6, dport: 80, ct: "new"}, want: "accept"},
		{scen: "host", name: "loopback not a host endpoint", hook: ChainInput, p: packet{iif: "lo", src: ext, dst: ip("127.0.0.1"), proto: 6, dport: 81, ct: "new"}, want: "accept"},
		{scen: "host", name: "hep egress", hook: ChainOutput, p: packet{oif: "eth0", src: ip("192.0.2.10"), dst: ext, proto: 6, dport: 81, ct: "new"}, want: "accept"},
		{scen: "host", name: "applyOnForward allows 8080", p: packet{iif: "eth0", oif: "eth1", src: ext, dst: ip("10.9.0.1"), proto: 6, dport: 8080, ct: "new"}, want: "accept"},
		{scen: "host", name: "applyOnForward denies 8081", p: packet{iif: "eth0", oif: "eth1", src: ext, dst: ip("10.9.0.1"), proto: 6, dport: 8081, ct: "new"}, want: "drop"},
		{scen: "host", name: "preDNAT deny", p: packet{iif: "eth0", oif: "eth1", src: ip("203.0.113.5"), dst: ip("10.9.0.1"), proto: 6, dport: 8080, ct: "new"}, want: "drop"},
		{scen: "host", name: "untracked allow skips conntrack and filter", p: packet{iif: "eth0", oif: "eth1", src: ext, dst: ip("10.9.0.1"), proto: 17, dport: 4789, ct: "untracked"}, want: "accept"},
	}
	fs := map[string]*knftables.Fake{}
	fs[""], _ = render(t, featureScenario())
	fs["host"], _ = render(t, hostScenario())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newTracer(t, fs[c.scen])
			p := c.p
			var res traceResult
			if c.hook == "" {
				res = tr.forward(&p)
			} else {
				res = tr.hook(c.hook, &p)
			}
			if res.verdict != c.want || len(res.logs) != c.logs {
				t.Errorf("verdict %s, logs %q; want %s, %d logs", res.verdict, res.logs, c.want, c.logs)
			}
		})
	}
	// natOutgoing
	tr := newTracer(t, fs["host"])
	for _, c := range []struct {
		src, dst string
		masq     bool
	}{{"10.0.0.5", "8.8.8.8", true}, {"10.0.0.5", "10.1.0.5", false}, {"10.1.0.5", "8.8.8.8", false}, {"fd00::5", "2001:db8::1", true}} {
		var res traceResult
		p := packet{src: ip(c.src), dst: ip(c.dst), proto: 6, dport: 80}
		tr.run(ChainNATPostrouting, &p, &res, 0)
		if res.masq != c.masq {
			t.Errorf("nat %s → %s: masquerade %v, want %v", c.src, c.dst, res.masq, c.masq)
		}
	}
}

// TestNATOutgoingAddress: natOutgoing traffic is masqueraded, or rewritten
// to Config.NATOutgoingAddress when set (FelixConfiguration
// natOutgoingAddress); IPv6 stays masqueraded.
func TestNATOutgoingAddress(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want string
	}{
		{"", "ip saddr @nat-pools-v4 ip daddr != @pools-v4 masquerade"},
		{"192.0.2.9", "ip saddr @nat-pools-v4 ip daddr != @pools-v4 snat ip to 192.0.2.9"},
	} {
		cfg := Config{}
		if tc.addr != "" {
			cfg.NATOutgoingAddress = netip.MustParseAddr(tc.addr)
		}
		f := newFake()
		d := New(f, cfg)
		if err := d.Apply(t.Context(), &calc.Changes{InSync: true}); err != nil {
			t.Fatal(err)
		}
		dump := f.Dump()
		if !strings.Contains(dump, tc.want) || !strings.Contains(dump, "ip6 daddr != @pools-v6 masquerade") {
			t.Errorf("address %q: want %q and IPv6 masqueraded in:\n%s", tc.addr, tc.want, grepLines(dump, "postrouting"))
		}
	}
	if err := (Config{NATOutgoingAddress: netip.MustParseAddr("2001:db8::1")}).Defaults().Validate(); err == nil {
		t.Error("an IPv6 natOutgoingAddress was accepted")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
