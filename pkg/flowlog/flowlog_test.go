package flowlog

import (
	"encoding/binary"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/trace"
)

func ipv4(proto uint8, src, dst string, l4 []byte) []byte {
	b := make([]byte, 20)
	b[0] = 0x45
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, l4...)
}

func ports(s, d uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, s), d)
}

func TestParsePacket(t *testing.T) {
	v6 := make([]byte, 40)
	v6[0] = 0x60
	v6[6] = 0 // hop-by-hop first
	s, d := netip.MustParseAddr("fd00::1").As16(), netip.MustParseAddr("fd00::2").As16()
	copy(v6[8:], s[:])
	copy(v6[24:], d[:])
	v6 = append(v6, 17, 0, 0, 0, 0, 0, 0, 0) // hop-by-hop: next UDP, 8 bytes
	v6 = append(v6, ports(5353, 53)...)
	frag := ipv4(6, "10.0.0.1", "10.0.0.2", ports(1, 2))
	frag[6], frag[7] = 0x00, 0x10 // offset 16: a later fragment
	for _, c := range []struct {
		name string
		b    []byte
		want Packet
		err  string
	}{
		{"tcp", ipv4(6, "10.0.0.1", "10.0.0.2", ports(40000, 80)), Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: 6, SrcPort: 40000, DstPort: 80}, ""},
		{"icmp", ipv4(1, "10.0.0.1", "10.0.0.2", []byte{8, 0, 0, 0}), Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: 1, ICMPType: 8}, ""},
		{"v6 with an extension header", v6, Packet{Src: netip.MustParseAddr("fd00::1"), Dst: netip.MustParseAddr("fd00::2"), Protocol: 17, SrcPort: 5353, DstPort: 53}, ""},
		{"later fragment", frag, Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: 6}, ""},
		{"short", []byte{0x45, 0}, Packet{}, "IPv4 header cut short"},
		{"not ip", []byte{0x20, 0, 0}, Packet{}, "not an IP packet"},
		{"empty", nil, Packet{}, "empty packet"},
	} {
		got, err := ParsePacket(c.b)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.name, got, err, c.want)
		}
	}
}

func TestIndex(t *testing.T) {
	ix := NewIndex()
	pol := &calc.Policy{ID: calc.PolicyID{Kind: "NetworkPolicy", Namespace: "shop", Name: "web"}, Tier: "default",
		Ingress: []calc.Rule{{LogPrefix: "default shop/web I0", Action: calc.Log}, {LogPrefix: "default shop/web I1", Action: calc.Allow}},
		Egress:  []calc.Rule{{LogPrefix: "default shop/web E0", Action: calc.Deny}}}
	ix.SetPolicy(pol)
	ix.SetProfile(&calc.Profile{Name: "kns.shop", Ingress: []calc.Rule{{LogPrefix: "profile kns.shop I0", Action: calc.Allow}}})
	ix.SetEndpoint(&calc.Endpoint{Ingress: []calc.TierPolicies{{Name: "default"}}, Profiles: []calc.ProfileRef{{Name: "gone", Missing: true}}})
	for _, c := range []struct {
		id   string
		want Ref
	}{
		{RuleID("default shop/web I1", calc.Allow), Ref{calc.Ingress, calc.Allow, trace.Decision{Kind: "rule", Tier: "default", Policy: "shop/web", Rule: 1}}},
		{RuleID("default shop/web E0", calc.Deny), Ref{calc.Egress, calc.Deny, trace.Decision{Kind: "rule", Tier: "default", Policy: "shop/web", Rule: 0}}},
		{RuleID("profile kns.shop I0", calc.Allow), Ref{calc.Ingress, calc.Allow, trace.Decision{Kind: "profile rule", Profile: "kns.shop"}}},
		{TierEndID(calc.Egress, "default"), Ref{calc.Egress, calc.Deny, trace.Decision{Kind: "tier default", Tier: "default"}}},
		{MissingProfileID(calc.Ingress, "gone"), Ref{calc.Ingress, calc.Deny, trace.Decision{Kind: "missing profile", Profile: "gone"}}},
		{NothingAllowedID(calc.Ingress), Ref{calc.Ingress, calc.Deny, trace.Decision{Kind: "nothing allowed"}}},
	} {
		if got, ok := ix.Lookup(c.id); !ok || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.id, got, ok, c.want)
		}
	}
	if _, ok := ix.Lookup(RuleID("default shop/web I0", calc.Log)); ok {
		t.Error("a Log rule decides nothing, yet it has an identifier")
	}
	// A new version replaces the old rules; removal forgets them.
	pol2 := *pol
	pol2.Ingress = []calc.Rule{{LogPrefix: "default shop/web I0", Action: calc.Deny}}
	ix.SetPolicy(&pol2)
	if _, ok := ix.Lookup(RuleID("default shop/web I1", calc.Allow)); ok {
		t.Error("a rule of the old version is still known")
	}
	ix.RemovePolicy(pol.ID)
	if _, ok := ix.Lookup(RuleID("default shop/web I0", calc.Deny)); ok {
		t.Error("a removed policy's rule is still known")
	}
	if !strings.HasPrefix(RuleID("x", calc.Allow), IDPrefix) || len(RuleID(strings.Repeat("x", 500), calc.Allow)) > 32 {
		t.Error("identifiers must carry the prefix and stay short")
	}
}

func TestAggregator(t *testing.T) {
	a := NewAggregator(2)
	t0 := time.Unix(1000, 0)
	ref := Ref{calc.Ingress, calc.Allow, trace.Decision{Kind: "rule", Tier: "default", Policy: "shop/web"}}
	describe := func(a netip.Addr) Endpoint { return Endpoint{Addr: a, Namespace: "shop", Name: "x"} }
	p := Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: 6, SrcPort: 40000, DstPort: 80}
	r := a.Add(p, "tf:1", ref, t0, describe, nil)
	if r == nil || r.Connections != 1 || r.Src.Port != 40000 || r.Dst.Port != 80 || r.Protocol != "TCP" {
		t.Fatalf("first packet: %+v", r)
	}
	for i := range 4 {
		p.SrcPort++
		if r := a.Add(p, "tf:1", ref, t0.Add(time.Duration(i+1)*time.Second), describe, nil); r != nil {
			t.Fatalf("a folded packet made a record at once: %+v", r)
		}
	}
	other := p
	other.DstPort = 443
	if a.Add(other, "tf:1", ref, t0, describe, nil) == nil {
		t.Fatal("a second key made no record")
	}
	third := p
	third.DstPort = 8443
	if a.Add(third, "tf:1", ref, t0, describe, nil) != nil || a.Overflow != 1 {
		t.Fatalf("over the bound: overflow %d", a.Overflow)
	}
	rs := a.Flush()
	if len(rs) != 1 || rs[0].Connections != 4 || !rs[0].Start.Equal(t0.Add(time.Second)) || !rs[0].End.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("flush: %+v", rs)
	}
	if a.Len() != 0 || len(a.Flush()) != 0 {
		t.Fatal("the interval did not end")
	}
	// Every connection is in exactly one record: 1 at once + 4 at flush.
}

func TestFilter(t *testing.T) {
	rec := &Record{Src: Endpoint{Namespace: "shop", Name: "n1-k8s-client-eth0", Workload: "client", Kind: "WorkloadEndpoint", Labels: map[string]string{"role": "client"}},
		Dst:      Endpoint{Namespace: "shop", Workload: "web", Kind: "WorkloadEndpoint", Port: 80, Labels: map[string]string{"role": "web"}},
		Protocol: "TCP", Action: calc.Deny, Decision: trace.Decision{Kind: "rule", Tier: "default", Policy: "shop/web"}}
	for _, c := range []struct {
		q     string
		match bool
		err   string
	}{
		{"namespace=shop", true, ""},
		{"namespace=other", false, ""},
		{"workload=client", true, ""},
		{"workload=n1-k8s-client-eth0", true, ""},
		{"selector=role+%3D%3D+%27web%27", true, ""},
		{"selector=role+%3D%3D+%27db%27", false, ""},
		{"policy=shop/web", true, ""},
		{"policy=default/shop/web", true, ""},
		{"policy=shop/other", false, ""},
		{"action=deny&port=80&protocol=tcp", true, ""},
		{"action=allow", false, ""},
		{"port=81", false, ""},
		{"protocol=udp", false, ""},
		{"port=x", false, `port "x": want a number 1-65535`},
		{"action=maybe", false, `action "maybe": want allow or deny`},
		{"selector=role+%3D%3D", false, `selector "role =="`},
		{"protocol=tcpx", false, `protocol "tcpx"`},
		{"colour=red", false, `unknown filter "colour"`},
	} {
		q, _ := url.ParseQuery(c.q)
		f, err := ParseFilter(q)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.q, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.q, err)
			continue
		}
		if f.Match(rec) != c.match {
			t.Errorf("%s: match %v, want %v", c.q, !c.match, c.match)
		}
		if g, err := ParseFilter(f.Values()); err != nil || g.Match(rec) != c.match {
			t.Errorf("%s: Values does not round-trip: %v", c.q, err)
		}
	}
}

func TestHub(t *testing.T) {
	h := NewHub(3)
	slow := h.Subscribe(1)
	for i := range 5 {
		h.Publish(Record{Connections: i, Protocol: "TCP"})
	}
	got := h.Last(0, Filter{})
	if len(got) != 3 || got[0].Connections != 2 || got[2].Connections != 4 {
		t.Fatalf("ring: %+v", got)
	}
	if got := h.Last(2, Filter{}); len(got) != 2 || got[0].Connections != 3 {
		t.Fatalf("last 2: %+v", got)
	}
	if got := h.Last(0, Filter{Protocol: "UDP"}); len(got) != 0 {
		t.Fatalf("filtered: %+v", got)
	}
	if slow.Dropped() != 4 || (<-slow.C()).Connections != 0 {
		t.Fatalf("a slow subscriber: dropped %d, want 4 (publishing never waits)", slow.Dropped())
	}
	slow.Close()
	if st := h.Stats(); st.Published != 5 || st.Held != 3 || st.Subscribers != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAggregatorTotals: a connection's packets and bytes go to its flow's
// record of the interval in which it ended, a totals-only record when the
// flow had no new connection then; every packet in exactly one record.
func TestAggregatorTotals(t *testing.T) {
	a := NewAggregator(100)
	a.Totals = true
	t0 := time.Unix(1000, 0)
	ref := Ref{calc.Ingress, calc.Allow, trace.Decision{Kind: "rule", Tier: "default", Policy: "shop/web"}}
	describe := func(a netip.Addr) Endpoint { return Endpoint{Addr: a} }
	p := Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: 6, SrcPort: 40000, DstPort: 80}
	ct := func(p Packet) ConnTuple { return ConnTuple{p.Src, p.Dst, p.Protocol, p.SrcPort, p.DstPort} }
	if a.Add(p, "tf:1", ref, t0, describe, nil) == nil {
		t.Fatal("no first record")
	}
	p2 := p
	p2.SrcPort = 40001
	a.Add(p2, "tf:1", ref, t0, describe, nil)
	if !a.Ended(ct(p), 3, 300, 2, 200) {
		t.Fatal("a seen connection was not found")
	}
	if a.Ended(ct(p), 1, 1, 1, 1) {
		t.Fatal("a connection ended twice")
	}
	rs := a.Flush()
	if len(rs) != 1 || rs[0].Connections != 1 || rs[0].PacketsOut != 3 || rs[0].BytesIn != 200 {
		t.Fatalf("first interval: %+v", rs)
	}
	// The second connection ends in the next interval, which has no new
	// connection of the flow: a totals-only record.
	if !a.Ended(ct(p2), 5, 500, 4, 400) {
		t.Fatal("the second connection was not found")
	}
	rs = a.Flush()
	if len(rs) != 1 || rs[0].Connections != 0 || rs[0].PacketsOut != 5 || rs[0].BytesOut != 500 || rs[0].Dst.Port != 80 {
		t.Fatalf("second interval: %+v", rs)
	}
	if len(a.templates) != 0 || len(a.conns) != 0 {
		t.Errorf("left behind: %d templates, %d connections", len(a.templates), len(a.conns))
	}
}

func TestMarks(t *testing.T) {
	for _, bad := range []uint32{0, 0x0f0f0000, 0x80000001} {
		if _, err := NewMarks(bad); err == nil {
			t.Errorf("NewMarks(%#x): no error", bad)
		}
	}
	m, err := NewMarks(0x00003000) // 2 bits: numbers 1 to 3
	if err != nil {
		t.Fatal(err)
	}
	var vals []uint32
	for _, id := range []string{"tf:a", "tf:b", "tf:a", "tf:c"} {
		v, ok := m.Value(id)
		if !ok {
			t.Fatalf("Value(%s): field full after %d", id, m.Len())
		}
		vals = append(vals, v)
	}
	if want := []uint32{0x1000, 0x2000, 0x1000, 0x3000}; !slices.Equal(vals, want) {
		t.Errorf("values %#x, want %#x", vals, want)
	}
	if _, ok := m.Value("tf:d"); ok {
		t.Errorf("a fourth identifier numbered in a 2-bit field")
	}
	for _, tc := range []struct {
		prefix string
		mark   uint32
		want   []string
		ok     bool
	}{
		{"tf:x", 0, []string{"tf:x"}, true},
		{"tf:x", 0x2000 | 0x4000 | 0x1, []string{"tf:b", "tf:x"}, true}, // other bits ignored
		{MarkedEgressID, 0x3000, []string{"tf:c"}, true},
		{MarkedEgressID, 0, nil, false},
	} {
		got, ok := m.Decisions(tc.prefix, tc.mark, nil)
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("Decisions(%q, %#x) = %q, %v; want %q, %v", tc.prefix, tc.mark, got, ok, tc.want, tc.ok)
		}
	}
	m2, _ := NewMarks(0x00003000)
	if _, ok := m2.Decisions("tf:x", 0x1000, nil); ok {
		t.Errorf("a number never given decoded")
	}
	var none *Marks
	if got, ok := none.Decisions("tf:x", 0x1000, nil); !ok || !slices.Equal(got, []string{"tf:x"}) {
		t.Errorf("nil Marks: %q %v", got, ok)
	}
}
