package nft

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
)

// The tracer walks a synthetic packet through the fake's ruleset, reading
// the rule text the driver wrote, so tests assert what the table does,
// not what it says. It understands exactly the expressions the driver
// emits and fails the test on anything else.

type packet struct {
	iif, oif     string
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	icmpType     uint8
	icmpCode     uint8
	ct           string // "new", "established", "invalid"
	mark         uint32
}

type traceResult struct {
	verdict string // accept, drop
	logs    []string
	// flows are the flow log identifiers of the rules that logged it.
	flows   []string
	notrack bool
	masq    bool
}

type tracer struct {
	t     testing.TB
	table *knftables.FakeTable
	// marks decode flow log marks (the driver's Config.FlowMarks; nil
	// when it numbers nothing).
	marks *flowlog.Marks
}

func newTracer(t testing.TB, f *knftables.Fake) *tracer {
	return &tracer{t: t, table: f.Table}
}

// hook runs the packet through one base chain.
func (tr *tracer) hook(chain string, p *packet) traceResult {
	var res traceResult
	v := tr.run(chain, p, &res, 0)
	switch v {
	case "", "return", "accept":
		res.verdict = "accept"
	default:
		res.verdict = v
	}
	return res
}

// forward is a routed packet: raw prerouting, mangle prerouting, forward.
func (tr *tracer) forward(p *packet) traceResult {
	for _, c := range []string{ChainRawPrerouting, ChainPreDNAT} {
		if r := tr.hook(c, p); r.verdict != "accept" {
			return r
		}
	}
	return tr.hook(ChainForward, p)
}

func (tr *tracer) run(chain string, p *packet, res *traceResult, depth int) string {
	if depth > 32 {
		tr.t.Fatalf("tracer: chain depth exceeded at %s", chain)
	}
	c := tr.table.Chains[chain]
	if c == nil {
		tr.t.Fatalf("tracer: no chain %q", chain)
	}
	for _, rule := range c.Rules {
		v := tr.rule(rule.Rule, p, res)
		switch {
		case v == "":
			continue
		case strings.HasPrefix(v, "jump "):
			sub := tr.run(strings.TrimPrefix(v, "jump "), p, res, depth+1)
			if sub == "return" || sub == "" {
				continue
			}
			return sub
		case strings.HasPrefix(v, "goto "):
			return tr.run(strings.TrimPrefix(v, "goto "), p, res, depth+1)
		default:
			return v
		}
	}
	return ""
}

func tokens(s string) []string {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		switch s[0] {
		case '{':
			i := strings.Index(s, "}")
			out = append(out, s[:i+1])
			s = s[i+1:]
		case '"':
			i := strings.Index(s[1:], `"`)
			out = append(out, s[:i+2])
			s = s[i+2:]
		default:
			i := strings.IndexByte(s, ' ')
			if i < 0 {
				i = len(s)
			}
			out = append(out, s[:i])
			s = s[i:]
		}
	}
	return out
}

// rule evaluates one rule: "" if it does not match or only had effects,
// else its verdict.
func (tr *tracer) rule(text string, p *packet, res *traceResult) string {
	tk := tokens(text)
	neg := func(i int) (bool, int) {
		if i < len(tk) && tk[i] == "!=" {
			return true, i + 1
		}
		return false, i
	}
	for i := 0; i < len(tk); {
		w := tk[i]
		switch {
		case w == "accept" || w == "drop" || w == "return":
			return w
		case w == "jump" || w == "goto":
			return w + " " + tk[i+1]
		case w == "ct":
			if !strings.Contains(tk[i+2], p.ct) {
				return ""
			}
			i += 3
		case w == "notrack":
			res.notrack = true
			i++
		case w == "masquerade":
			res.masq = true
			return ""
		case w == "log":
			prefix := strings.Trim(tk[i+2], `"`)
			if strings.HasPrefix(prefix, flowlog.IDPrefix) {
				// What the agent reads from the message: the egress
				// decision in the mark, if any, and the prefix's own.
				var ok bool
				if res.flows, ok = tr.marks.Decisions(prefix, p.mark, res.flows); !ok {
					tr.t.Errorf("tracer: flow log %q with mark %#x names no decision", prefix, p.mark)
				}
			} else {
				res.logs = append(res.logs, prefix)
			}
			i += 5
			if i < len(tk) && tk[i] == "snaplen" {
				i += 2
			}
		case w == "meta" && tk[i+1] == "mark" && tk[i+2] == "set":
			// meta mark set meta mark [& keep] [| set]
			i += 5
			if i < len(tk) && tk[i] == "&" {
				m, _ := strconv.ParseUint(tk[i+1], 0, 32)
				p.mark &= uint32(m)
				i += 2
			}
			if i < len(tk) && tk[i] == "|" {
				m, _ := strconv.ParseUint(tk[i+1], 0, 32)
				p.mark |= uint32(m)
				i += 2
			}
		case w == "meta" && tk[i+1] == "mark":
			m, _ := strconv.ParseUint(tk[i+3], 0, 32)
			if p.mark&uint32(m) == 0 {
				return ""
			}
			i += 6
		case w == "meta" && tk[i+1] == "nfproto":
			if (tk[i+2] == "ipv4") != p.src.Is4() {
				return ""
			}
			i += 3
		case w == "th" && tk[i+1] == "dport" && tk[i+2] == "." && tk[i+3] == "meta":
			// th dport . meta l4proto vmap @x: a program's port classes
			if tk[i+5] != "vmap" {
				tr.t.Fatalf("tracer: unexpected %q", strings.Join(tk[i:], " "))
			}
			v, _ := tr.lookupMap(tk[i+6][1:], []string{strconv.Itoa(int(p.dport)), protoName(p.proto)})
			return v
		case w == "meta" && tk[i+1] == "l4proto" && tk[i+2] == ".":
			// meta l4proto . th dport (vmap) @x
			key := []string{protoName(p.proto), strconv.Itoa(int(p.dport))}
			if tk[i+5] == "vmap" {
				if v, ok := tr.lookupMap(tk[i+6][1:], key); ok {
					return v
				}
				return ""
			}
			if !tr.inSet(tk[i+5][1:], key) {
				return ""
			}
			i += 6
		case w == "meta" && tk[i+1] == "l4proto":
			n, j := neg(i + 2)
			if (tk[j] == protoName(p.proto)) == n {
				return ""
			}
			i = j + 1
		case w == "iifname" || w == "oifname":
			ifc := p.iif
			if w == "oifname" {
				ifc = p.oif
			}
			if tk[i+1] == "vmap" {
				if v, ok := tr.lookupMap(tk[i+2][1:], []string{ifc}); ok {
					return v
				}
				return ""
			}
			n, j := neg(i + 1)
			var m bool
			if strings.HasPrefix(tk[j], "@") {
				m = tr.inSet(tk[j][1:], []string{ifc})
			} else {
				pat := strings.Trim(tk[j], `"`)
				if strings.HasSuffix(pat, "*") {
					m = strings.HasPrefix(ifc, strings.TrimSuffix(pat, "*"))
				} else {
					m = ifc == pat
				}
			}
			if m == n {
				return ""
			}
			i = j + 1
		case w == "ip" || w == "ip6":
			if (w == "ip") != p.src.Is4() {
				return ""
			}
			a, port := p.src, p.sport
			if tk[i+1] == "daddr" {
				a, port = p.dst, p.dport
			}
			if tk[i+2] == "." && tk[i+3] == "th" { // addr . th dport { net . ports, ... }
				if !pairIn(tk[i+5], a, int(p.dport)) {
					return ""
				}
				i += 6
				continue
			}
			if tk[i+2] == "." { // addr . meta l4proto . th port [!=] @set
				n, j := neg(i + 8)
				key := []string{a.String(), protoName(p.proto), strconv.Itoa(int(port))}
				if tr.inSet(tk[j][1:], key) == n {
					return ""
				}
				i = j + 1
				continue
			}
			n, j := neg(i + 2)
			if tr.addrIn(tk[j], a) == n {
				return ""
			}
			i = j + 1
		case w == "th":
			if !calc.HasPorts(p.proto) {
				return ""
			}
			port := p.sport
			if tk[i+1] == "dport" {
				port = p.dport
			}
			n, j := neg(i + 2)
			if numIn(tk[j], int(port)) == n {
				return ""
			}
			i = j + 1
		case w == "icmp" || w == "icmpv6":
			want := calcICMP(w)
			if p.proto != want {
				return ""
			}
			if tk[i+2] == "." { // icmp type . icmp code != { t . c }
				set := strings.Trim(tk[i+6], "{} ")
				t, c, _ := strings.Cut(set, " . ")
				if strconv.Itoa(int(p.icmpType)) == strings.TrimSpace(t) && strconv.Itoa(int(p.icmpCode)) == strings.TrimSpace(c) {
					return ""
				}
				i += 7
				continue
			}
			v := int(p.icmpType)
			if tk[i+1] == "code" {
				v = int(p.icmpCode)
			}
			n, j := neg(i + 2)
			if numIn(tk[j], v) == n {
				return ""
			}
			i = j + 1
		default:
			tr.t.Fatalf("tracer: cannot read %q in rule %q", w, text)
		}
	}
	return ""
}

func calcICMP(kw string) uint8 {
	if kw == "icmp" {
		return 1
	}
	return 58
}

func numIn(spec string, v int) bool {
	for _, part := range strings.Split(strings.Trim(spec, "{} "), ",") {
		part = strings.TrimSpace(part)
		lo, hi, ok := strings.Cut(part, "-")
		if !ok {
			hi = lo
		}
		a, _ := strconv.Atoi(lo)
		b, _ := strconv.Atoi(hi)
		if v >= a && v <= b {
			return true
		}
	}
	return false
}

func (tr *tracer) addrIn(spec string, a netip.Addr) bool {
	if strings.HasPrefix(spec, "@") {
		s := tr.table.Sets[spec[1:]]
		if s == nil {
			tr.t.Fatalf("tracer: no set %s", spec)
		}
		for _, e := range s.Elements {
			if prefixOf(e.Key[0]).Contains(a) {
				return true
			}
		}
		return false
	}
	for _, part := range strings.Split(strings.Trim(spec, "{} "), ",") {
		if prefixOf(strings.TrimSpace(part)).Contains(a) {
			return true
		}
	}
	return false
}

// pairIn reports whether (a, port) is in an anonymous set of
// "net . ports" elements.
func pairIn(spec string, a netip.Addr, port int) bool {
	for _, part := range strings.Split(strings.Trim(spec, "{} "), ",") {
		net, ports, _ := strings.Cut(strings.TrimSpace(part), " . ")
		if prefixOf(net).Contains(a) && numIn(ports, port) {
			return true
		}
	}
	return false
}

func prefixOf(s string) netip.Prefix {
	if strings.Contains(s, "/") {
		return netip.MustParsePrefix(s)
	}
	a := netip.MustParseAddr(s)
	return netip.PrefixFrom(a, a.BitLen())
}

func (tr *tracer) inSet(name string, key []string) bool {
	s := tr.table.Sets[name]
	if s == nil {
		tr.t.Fatalf("tracer: no set %s", name)
	}
	for _, e := range s.Elements {
		if keyMatch(e.Key, key) {
			return true
		}
	}
	return false
}

func (tr *tracer) lookupMap(name string, key []string) (string, bool) {
	m := tr.table.Maps[name]
	if m == nil {
		tr.t.Fatalf("tracer: no map %s", name)
	}
	for _, e := range m.Elements {
		if keyMatch(e.Key, key) {
			return e.Value[0], true
		}
	}
	return "", false
}

// keyMatch compares element key parts, understanding port ranges.
func keyMatch(elem, key []string) bool {
	if len(elem) != len(key) {
		return false
	}
	for i := range elem {
		if elem[i] == key[i] {
			continue
		}
		v, err := strconv.Atoi(key[i])
		if err != nil || !strings.Contains(elem[i], "-") || !numIn(elem[i], v) {
			return false
		}
	}
	return true
}
