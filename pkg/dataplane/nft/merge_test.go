package nft

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tortie/tortie/pkg/calc"
)

func TestSubtractRanges(t *testing.T) {
	for _, c := range []struct {
		name    string
		a, b    []calc.PortRange
		want    []calc.PortRange
		wantNil bool
	}{
		{name: "disjoint", a: ports(10, 20), b: ports(30, 40), want: ports(10, 20)},
		{name: "inside", a: ports(10, 20), b: ports(12, 14), want: ports(10, 11, 15, 20)},
		{name: "covering", a: ports(10, 20), b: ports(0, 65535), wantNil: true},
		{name: "left edge", a: ports(10, 20), b: ports(5, 10), want: ports(11, 20)},
		{name: "right edge", a: ports(10, 20), b: ports(20, 25), want: ports(10, 19)},
		{name: "several", a: ports(0, 100, 200, 300), b: ports(50, 60, 90, 210, 300, 300), want: ports(0, 49, 61, 89, 211, 299)},
		{name: "top of the port space", a: ports(65530, 65535), b: ports(65535, 65535), want: ports(65530, 65534)},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := subtractRanges(c.a, c.b)
			if c.wantNil && got != nil || !c.wantNil && !slices.Equal(got, c.want) {
				t.Errorf("subtractRanges(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
			}
		})
	}
}

func TestPairSet(t *testing.T) {
	for _, c := range []struct {
		name  string
		byNet map[string][]calc.PortRange
		want  string
	}{
		{name: "one pair", byNet: map[string][]calc.PortRange{"10.0.0.0/24": ports(80, 80)}, want: "{ 10.0.0.0/24 . 80 }"},
		{name: "a net's ports merged", byNet: map[string][]calc.PortRange{"10.0.0.0/24": ports(80, 90, 85, 100, 101, 101)},
			want: "{ 10.0.0.0/24 . 80-101 }"},
		// The inner net keeps the ports its outer net lacks; an address is
		// written bare.
		{name: "nested", byNet: map[string][]calc.PortRange{"10.0.0.0/16": ports(80, 90), "10.0.2.0/24": ports(85, 100), "10.0.2.7/32": ports(80, 100)},
			want: "{ 10.0.0.0/16 . 80-90, 10.0.2.0/24 . 91-100 }"},
		{name: "nested, nothing left", byNet: map[string][]calc.PortRange{"10.0.0.0/8": ports(1, 65535), "10.1.0.0/16": ports(22, 22)},
			want: "{ 10.0.0.0/8 . 1-65535 }"},
		{name: "v6", byNet: map[string][]calc.PortRange{"fd00::/64": ports(53, 53), "fd00::5/128": ports(53, 54)},
			want: "{ fd00::/64 . 53, fd00::5 . 54 }"},
		{name: "empty", byNet: map[string][]calc.PortRange{}, want: ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			byNet := map[netip.Prefix][]calc.PortRange{}
			for n, rs := range c.byNet {
				byNet[pfx(n)] = rs
			}
			if got := pairSet(byNet); got != c.want {
				t.Errorf("pairSet = %q, want %q", got, c.want)
			}
		})
	}
}

// TestMergeRuns: which rules a program merges, where the merged rule goes,
// and that a merged rule is built again only when its members change.
func TestMergeRuns(t *testing.T) {
	cache := newProgramCache()
	netRule := func(p string, a calc.Action, port uint16, n string) calc.Rule {
		return rule(p, a, func(r *calc.Rule) {
			r.Protocol, r.Dst.Ports, r.Src.Nets = calc.ProtoTCP, ports(port, port), []netip.Prefix{pfx(n)}
		})
	}
	setRule := func(p string, a calc.Action, port uint16, set string) calc.Rule {
		return rule(p, a, func(r *calc.Rule) { r.Protocol, r.Dst.Ports, r.Src.IPSet = calc.ProtoTCP, ports(port, port), set })
	}
	tier := cache.compileRules([]calc.Rule{
		netRule("n0", calc.Allow, 80, "10.0.0.0/24"),
		setRule("s1", calc.Allow, 81, "s:a"),
		netRule("n2", calc.Allow, 82, "10.0.1.0/24"),
		setRule("s3", calc.Allow, 83, "s:a"),
		setRule("s4", calc.Allow, 84, "s:b"),                                 // a group of one: itself
		rule("any5", calc.Allow, func(r *calc.Rule) { r.Src.IPSet = "s:a" }), // no ports: merges with none
		netRule("n6", calc.Allow, 86, "10.0.2.0/24"),
		netRule("n7", calc.Deny, 87, "10.0.3.0/24"), // another action: another run
		netRule("n8", calc.Deny, 88, "10.0.4.0/24"),
		rule("log9", calc.Log, nil),
		netRule("n10", calc.Deny, 90, "10.0.5.0/24"), // after the Log: a run of one
	})
	profile := cache.compileRules([]calc.Rule{netRule("p0", calc.Allow, 80, "10.9.0.0/24")}) // another block
	flat := func(tier []compiledRule) []ruleRef {
		var out []ruleRef
		for i := range tier {
			out = append(out, ruleRef{0, &tier[i]})
		}
		return append(out, ruleRef{1, &profile[0]})
	}
	comments := func(refs []ruleRef) string {
		var out []string
		for _, r := range refs {
			out = append(out, r.rule.rule.LogPrefix)
		}
		return strings.Join(out, ", ")
	}
	got, merged := mergeRuns(flat(tier), nil)
	want := "n0 and 2 more, s1 and 1 more, s4, any5, n7 and 1 more, log9, n10, p0"
	if c := comments(got); c != want {
		t.Fatalf("merged:\n %s\nwant\n %s", c, want)
	}
	if len(merged) != 3 {
		t.Errorf("%d merged rules, want 3", len(merged))
	}
	if in := got[0].rule.inClass; len(in) != 1 || in[0] != "meta nfproto ipv4 ip saddr . th dport { 10.0.0.0/24 . 80, 10.0.1.0/24 . 82, 10.0.2.0/24 . 86 }" {
		t.Errorf("the nets group's lines are %q", in)
	}
	if a := got[1].rule.adm; !slices.Equal(a.ranges, ports(81, 81, 83, 83)) {
		t.Errorf("the selector group admits %v, want ports 81 and 83", a.ranges)
	}

	// The same rules again: the same merged rules, not built again.
	again, _ := mergeRuns(flat(tier), merged)
	for i := range again {
		if again[i].rule != got[i].rule {
			t.Errorf("rule %d (%s) built again", i, again[i].rule.rule.LogPrefix)
		}
	}
	// One member changed (a new compilation, a new id): its group is new,
	// the others are the same.
	changed := slices.Clone(tier)
	changed[3] = cache.compileRules([]calc.Rule{setRule("s3", calc.Allow, 8443, "s:a")})[0]
	next, _ := mergeRuns(flat(changed), merged)
	if next[1].rule == got[1].rule || next[1].rule.id == got[1].rule.id {
		t.Errorf("the changed group kept its merged rule")
	}
	if next[0].rule != got[0].rule || next[4].rule != got[4].rule {
		t.Errorf("an unchanged group was built again")
	}
}

// TestNetsOnlyKnowsEveryField: netsOnly decides that a rule has no
// condition but its nets and ports by looking at every field of calc.Rule
// and calc.EntityMatch; a field it does not know would be ignored, and
// rules that differ in it merged. This fails when a field is added, until
// netsOnly (and this list) look at it.
func TestNetsOnlyKnowsEveryField(t *testing.T) {
	for typ, want := range map[reflect.Type][]string{
		reflect.TypeFor[calc.Rule](): {"ID", "LogPrefix", "Action", "IPVersion", "Protocol", "NotProtocol", "ICMP", "NotICMP",
			"Src", "Dst", "Annotations"},
		reflect.TypeFor[calc.EntityMatch](): {"Nets", "NotNets", "IPSet", "NotIPSet", "Ports", "NotPorts", "NamedPortSets", "NotNamedPortSets"},
	} {
		var got []string
		for f := range typ.Fields() {
			got = append(got, f.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%v has fields %v; netsOnly knows %v", typ, got, want)
		}
	}
	// And each condition but nets and ports keeps a rule out.
	base := func() calc.Rule {
		return rule("r", calc.Allow, func(r *calc.Rule) {
			r.Protocol, r.Dst.Ports, r.Src.Nets = calc.ProtoTCP, ports(80, 80), []netip.Prefix{pfx("10.0.0.0/8")}
		})
	}
	if _, ok := netsOnly(new(base())); !ok {
		t.Fatalf("a rule of nets and ports is not netsOnly")
	}
	for name, f := range map[string]func(*calc.Rule){
		"ipVersion":      func(r *calc.Rule) { r.IPVersion = 4 },
		"notProtocol":    func(r *calc.Rule) { r.NotProtocol = calc.ProtoUDP },
		"icmp":           func(r *calc.Rule) { r.ICMP = &calc.ICMPMatch{} },
		"notICMP":        func(r *calc.Rule) { r.NotICMP = &calc.ICMPMatch{} },
		"source ports":   func(r *calc.Rule) { r.Src.Ports = ports(1, 2) },
		"no ports":       func(r *calc.Rule) { r.Dst.Ports = nil },
		"both sides":     func(r *calc.Rule) { r.Dst.Nets = []netip.Prefix{pfx("10.1.0.0/16")} },
		"notNets":        func(r *calc.Rule) { r.Src.NotNets = []netip.Prefix{pfx("10.1.0.0/16")} },
		"selector":       func(r *calc.Rule) { r.Dst.IPSet = "s:x" },
		"notSelector":    func(r *calc.Rule) { r.Src.NotIPSet = "s:x" },
		"notPorts":       func(r *calc.Rule) { r.Dst.NotPorts = ports(81, 81) },
		"named ports":    func(r *calc.Rule) { r.Dst.NamedPortSets = []string{"n:x"} },
		"notNamed ports": func(r *calc.Rule) { r.Src.NotNamedPortSets = []string{"n:x"} },
		"no protocol":    func(r *calc.Rule) { r.Protocol = 0 },
		"icmp protocol":  func(r *calc.Rule) { r.Protocol = calc.ProtoICMP },
	} {
		r := base()
		f(&r)
		if _, ok := netsOnly(&r); ok {
			t.Errorf("a rule with %s is netsOnly", name)
		}
	}
}
