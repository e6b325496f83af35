package nft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// This file (rules) with nlvalues.go, nlselectors.go and nlsets.go (set
// elements) encodes the driver's rule texts and set elements into netlink
// expressions and elements, exactly as nft 1.0.6 does for the same text
// (checked against the kernel's dump of what nft sent, see
// nlencode_kernel_test.go). It understands the driver's grammar only; anything
// else is errNotEncodable and goes through nft.
//
// What nft does beyond a literal translation, and this file copies:
//   - implicit dependencies: `ip saddr` gets `meta nfproto ipv4`, `icmp type`
//     `meta nfproto ipv4` and `meta l4proto icmp`, unless already matched;
//   - byte-aligned prefixes load only the prefix bytes (`ip saddr 10.0.0.0/16`
//     is a 2-byte compare), other prefixes mask the whole address;
//   - a single-element anonymous set is a plain value or range; interval
//     anonymous sets are sorted and merged, with an end element at zero;
//   - payload compares with a constant (== or !=, same op) whose fields are
//     adjacent in the same header are merged into one load of at most
//     4 bytes, across the whole rule (`icmp type 8 icmp code 0` is one 2-byte
//     compare; so is `th sport != 53 th dport != 80`, which nft turns into
//     "not both": nft's behaviour, kept here);
//   - concatenations use 32-bit registers, each field padded to 4 bytes;
//     a lookup into the (interval) port class map converts the protocol to
//     network byte order.

var errNotEncodable = errors.New("not encodable over netlink")

// nlRule is one rule as netlink expressions, exactly what nft generates for the same text.
type nlRule struct {
	exprs []expr.Any
	anon  []nlAnonSet // anonymous sets the rule looks up: added to the batch before the rule
}

// nlAnonSet is an anonymous constant set of a rule. The batch writer calls
// conn.AddSet(set, elems) (which assigns set.ID and set.Name) and then sets
// lookup.SetID, lookup.SetName from the set before adding the rule.
type nlAnonSet struct {
	set    *nftables.Set
	elems  []nftables.SetElement
	lookup *expr.Lookup
}

// ruleUserData is a rule's comment as nft stores it in the rule's user data
// (so `nft list` and knftables' ListRules read it back identically). "" →
// nil. The comment must be at most maxComment bytes, as comment() makes it.
func ruleUserData(comment string) []byte {
	if comment == "" {
		return nil
	}
	return userdata.AppendString(nil, userdata.TypeComment, comment)
}

// stmt is one statement of a rule; pm is set for a payload compare with a
// constant, which nft may merge with others.
type stmt struct {
	exprs   []expr.Any
	pm      *payloadMatch
	dropped bool
}

type payloadMatch struct {
	base     expr.PayloadBase
	off, len uint32
	op       expr.CmpOp
	data     []byte
}

type ruleParser struct {
	text  string
	toks  []string
	pos   int
	tbl   *nftables.Table
	stmts []*stmt
	anon  []nlAnonSet
	nf    byte // meta nfproto matched (0: unknown)
	l4    int  // meta l4proto matched (-1: unknown)
	// matches end at the first action; nothing follows a verdict or a vmap.
	acting, final bool
}

// encodeRule encodes one rule's text (as the driver writes it, without the comment) for table tbl.
// Any text it does not understand exactly is an error (errNotEncodable wrapped with the text):
// the caller then falls back to nft. Never guess.
func encodeRule(tbl *nftables.Table, text string) (*nlRule, error) {
	toks, ok := lex(text)
	if !ok || len(toks) == 0 {
		return nil, fmt.Errorf("%w: %q", errNotEncodable, text)
	}
	p := &ruleParser{text: text, toks: toks, tbl: tbl, l4: -1}
	for p.pos < len(p.toks) {
		if p.final {
			return nil, p.fail("statement after a verdict")
		}
		if err := p.statement(); err != nil {
			return nil, err
		}
	}
	if err := p.mergePayloads(); err != nil {
		return nil, err
	}
	r := &nlRule{anon: p.anon}
	for _, s := range p.stmts {
		if s.dropped {
			continue
		}
		if m := s.pm; m != nil {
			s.exprs = []expr.Any{
				&expr.Payload{DestRegister: 1, Base: m.base, Offset: m.off, Len: m.len},
				&expr.Cmp{Op: m.op, Register: 1, Data: m.data},
			}
		}
		r.exprs = append(r.exprs, s.exprs...)
	}
	return r, nil
}

// lex splits a rule into words, quoted strings (with their quotes) and the
// punctuation { } , .
func lex(s string) ([]string, bool) {
	var out []string
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ':
			i++
		case c == '{' || c == '}' || c == ',':
			out = append(out, s[i:i+1])
			i++
		case c == '"':
			j := strings.IndexByte(s[i+1:], '"')
			if j < 0 {
				return nil, false
			}
			out = append(out, s[i:i+j+2])
			i += j + 2
		case c < 0x21 || c > 0x7e:
			return nil, false
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" {},\"", rune(s[j])) {
				if s[j] < 0x21 || s[j] > 0x7e {
					return nil, false
				}
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out, true
}

func (p *ruleParser) fail(why string) error {
	return fmt.Errorf("%w: %q: %s", errNotEncodable, p.text, why)
}

func (p *ruleParser) peek(n int) string {
	if p.pos+n < len(p.toks) {
		return p.toks[p.pos+n]
	}
	return ""
}

func (p *ruleParser) next() string {
	t := p.peek(0)
	if t != "" {
		p.pos++
	}
	return t
}

// accept consumes words if the text continues with them.
func (p *ruleParser) accept(words ...string) bool {
	for i, w := range words {
		if p.peek(i) != w {
			return false
		}
	}
	p.pos += len(words)
	return true
}

func (p *ruleParser) add(s *stmt) { p.stmts = append(p.stmts, s) }

func (p *ruleParser) action(es ...expr.Any) {
	p.acting = true
	p.add(&stmt{exprs: es})
}

var verdictKinds = map[string]expr.VerdictKind{
	"accept": expr.VerdictAccept, "drop": expr.VerdictDrop, "return": expr.VerdictReturn,
	"goto": expr.VerdictGoto, "jump": expr.VerdictJump,
}

// objName checks a chain or set name: the driver's names all have a "-",
// which keeps them apart from nft's keywords.
func objName(s string) bool {
	if len(s) == 0 || len(s) > 255 || !strings.Contains(s, "-") {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'):
		default:
			return false
		}
	}
	return true
}

func hexMark(s string) (uint32, bool) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok || h == "" || len(h) > 8 || strings.TrimLeft(h, "0123456789abcdef") != "" || h[0] == '0' {
		return 0, false
	}
	n, err := strconv.ParseUint(h, 16, 32)
	return uint32(n), err == nil && n != 0
}

func hostU32(n uint32) []byte { return binary.NativeEndian.AppendUint32(nil, n) }

var ctStates = map[string]uint32{"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}

func (p *ruleParser) statement() error {
	t := p.peek(0)
	if k, ok := verdictKinds[t]; ok {
		p.pos++
		v := &expr.Verdict{Kind: k}
		if k == expr.VerdictGoto || k == expr.VerdictJump {
			if v.Chain = p.next(); !objName(v.Chain) {
				return p.fail("chain name")
			}
		}
		p.action(v)
		p.final = true
		return nil
	}
	switch {
	case p.accept("log", "prefix"):
		prefix, ok := unquote(p.next())
		if !ok || len(prefix) > 127 || strings.ContainsAny(prefix, `"\$`) || !p.accept("group") {
			return p.fail("log")
		}
		for _, c := range []byte(prefix) {
			if c < 0x20 || c > 0x7e {
				return p.fail("log prefix")
			}
		}
		g, ok := number(p.next(), 65535)
		if !ok {
			return p.fail("log group")
		}
		l := &expr.Log{Key: 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_GROUP, Data: []byte(prefix), Group: uint16(g)}
		if p.accept("snaplen") {
			n, ok := number(p.next(), 65535)
			if !ok {
				return p.fail("log snaplen")
			}
			l.Key |= 1 << unix.NFTA_LOG_SNAPLEN
			l.Snaplen = uint32(n)
		}
		p.action(l)
		return nil
	case p.accept("meta", "mark", "set", "meta", "mark"):
		// "& keep", "| set" or both, in that order: mark = mark & keep ^ set
		// (nft's own reading, with set within keep's zeros).
		var keep, set uint32
		and, ok := p.accept("&"), true
		if and {
			keep, ok = hexMark(p.next())
		}
		or := ok && p.accept("|")
		if or {
			set, ok = hexMark(p.next())
		}
		switch {
		case !ok || !and && !or || and && set&keep != 0:
			return p.fail("mark")
		case !and:
			keep = ^set
		}
		p.action(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: hostU32(keep), Xor: hostU32(set)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
		return nil
	case p.accept("notrack"):
		p.action(&expr.Notrack{})
		return nil
	case p.accept("masquerade"):
		p.action(&expr.Masq{})
		return nil
	}
	if p.acting {
		return p.fail("match after an action")
	}
	switch {
	case p.accept("ct", "state"):
		var mask uint32
		for {
			s, ok := ctStates[p.next()]
			if !ok || mask&s != 0 {
				return p.fail("ct state")
			}
			mask |= s
			if !p.accept(",") {
				break
			}
		}
		p.add(&stmt{exprs: []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: hostU32(mask), Xor: hostU32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: hostU32(0)},
		}})
		return nil
	case p.accept("meta", "mark", "&"):
		m, ok := hexMark(p.next())
		if !ok || !p.accept("!=", "0") {
			return p.fail("meta mark")
		}
		p.add(&stmt{exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: hostU32(m), Xor: hostU32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: hostU32(0)},
		}})
		return nil
	}
	return p.match()
}

// match is `selector [. selector ...] [!=] operand`, or `... vmap @map`.
func (p *ruleParser) match() error {
	var sels []selector
	var names []string
	for {
		name := p.next()
		if _, ok := selectors[name]; !ok {
			name += " " + p.next()
		}
		s, ok := selectors[name]
		if !ok {
			return p.fail("unknown statement")
		}
		sels = append(sels, s)
		names = append(names, name)
		if !p.accept(".") {
			break
		}
	}
	key := strings.Join(names, " . ")
	if err := p.depend(sels); err != nil {
		return err
	}
	op := expr.CmpOpEq
	vmap := p.accept("vmap")
	if !vmap && p.accept("!=") {
		op = expr.CmpOpNeq
	}
	switch t := p.peek(0); {
	case strings.HasPrefix(t, "@"):
		p.pos++
		if vmap {
			key += " vmap"
		}
		shape, ok := namedLookups[key]
		if !ok || !objName(t[1:]) {
			return p.fail("lookup")
		}
		es := p.loads(sels, shape.key)
		es = append(es, &expr.Lookup{SourceRegister: 1, SetName: t[1:], Invert: op == expr.CmpOpNeq,
			IsDestRegSet: shape.vmap, DestRegister: 0})
		p.add(&stmt{exprs: es})
		p.final = shape.vmap
		return nil
	case vmap:
		return p.fail("vmap")
	case t == "{":
		p.pos++
		return p.anonSet(sels, op)
	case len(sels) > 1:
		return p.fail("concatenation")
	}
	v, ok := parseValue(sels[0].kind, p.next())
	if !ok {
		return p.fail("value")
	}
	if sels[0].kind == vNFProto && op == expr.CmpOpEq {
		if p.nf != 0 && p.nf != v.lo[0] {
			return p.fail("conflicting meta nfproto")
		}
		p.nf = v.lo[0]
	}
	if sels[0].kind == vProto && op == expr.CmpOpEq {
		if p.l4 >= 0 && p.l4 != int(v.lo[0]) {
			return p.fail("conflicting meta l4proto")
		}
		p.l4 = int(v.lo[0])
	}
	p.add(p.compare(sels[0], op, v))
	return nil
}

// depend adds the dependencies nft adds before a statement.
func (p *ruleParser) depend(sels []selector) error {
	var nf, l4 byte
	for _, s := range sels {
		if s.nf != 0 {
			if nf != 0 && nf != s.nf {
				return p.fail("mixed families")
			}
			nf = s.nf
		}
		if s.l4 != 0 {
			l4 = s.l4
		}
	}
	if l4 != 0 && p.l4 >= 0 && (p.l4 != int(l4) || p.nf == 0) {
		return p.fail("conflicting protocol") // or a protocol before its family: not seen from nft
	}
	if nf != 0 && p.nf != nf {
		if p.nf != 0 {
			return p.fail("conflicting family")
		}
		p.add(p.compare(selectors["meta nfproto"], expr.CmpOpEq, value{lo: []byte{nf}, hi: []byte{nf}, bits: -1}))
		p.nf = nf
	}
	if l4 != 0 && p.l4 < 0 {
		p.add(p.compare(selectors["meta l4proto"], expr.CmpOpEq, value{lo: []byte{l4}, hi: []byte{l4}, bits: -1}))
		p.l4 = int(l4)
	}
	return nil
}

// loads puts the selectors of a lookup in consecutive registers. The port
// class map is an interval map: nft converts host-order fields of its key
// to network order.
func (p *ruleParser) loads(sels []selector, key lookupKey) []expr.Any {
	var es []expr.Any
	var off uint32
	for _, s := range sels {
		r := reg32(off)
		es = append(es, s.load(r))
		if key == intervalKey && s.kind == vProto {
			es = append(es, &expr.Byteorder{SourceRegister: r, DestRegister: r, Op: expr.ByteorderHton, Len: 1, Size: 2})
		}
		off += pad4(s.len) / 4
	}
	return es
}

// compare is a selector compared with one value.
func (p *ruleParser) compare(s selector, op expr.CmpOp, v value) *stmt {
	full := uint32(len(v.lo))
	switch {
	case !s.payload:
		return &stmt{exprs: []expr.Any{s.load(1), &expr.Cmp{Op: op, Register: 1, Data: v.lo}}}
	case v.point():
		return &stmt{pm: &payloadMatch{base: s.base, off: s.off, len: full, op: op, data: v.lo}}
	case v.bits > 0 && v.bits%8 == 0:
		n := uint32(v.bits / 8)
		return &stmt{pm: &payloadMatch{base: s.base, off: s.off, len: n, op: op, data: v.lo[:n]}}
	case v.bits >= 0:
		mask := make([]byte, full)
		for i := 0; i < v.bits; i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		return &stmt{exprs: []expr.Any{s.load(1),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: full, Mask: mask, Xor: make([]byte, full)},
			&expr.Cmp{Op: op, Register: 1, Data: v.lo}}}
	case op == expr.CmpOpEq:
		return &stmt{exprs: []expr.Any{s.load(1),
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: v.lo},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: v.hi}}}
	default:
		return &stmt{exprs: []expr.Any{s.load(1),
			&expr.Range{Op: expr.CmpOpNeq, Register: 1, FromData: v.lo, ToData: v.hi}}}
	}
}

// anonSet is `selectors [!=] { elem, ... }` after the "{".
func (p *ruleParser) anonSet(sels []selector, op expr.CmpOp) error {
	var elems [][]value
	for {
		var e []value
		for i, s := range sels {
			if i > 0 && !p.accept(".") {
				return p.fail("set element")
			}
			v, ok := parseValue(s.kind, p.next())
			if !ok || !s.payload || len(sels) > 1 && !v.point() && s.kind != vPort && s.kind != vIPv4 && s.kind != vIPv6 {
				return p.fail("set element")
			}
			e = append(e, v)
		}
		elems = append(elems, e)
		if p.accept("}") {
			break
		}
		if !p.accept(",") {
			return p.fail("set")
		}
	}
	if len(elems) == 1 && len(sels) == 1 {
		p.add(p.compare(sels[0], op, elems[0][0])) // nft makes it a plain match
		return nil
	}
	set := &nftables.Set{Table: p.tbl, Anonymous: true, Constant: true, KeyType: sels[0].dt}
	// A concatenation with a range or prefix in any field is an interval
	// set whose elements have a key and an inclusive key end (nft's
	// "concat" flag); otherwise its keys are points.
	var keys, ends [][]byte
	seen := make(map[string]struct{}, len(elems))
	for _, e := range elems {
		var k, end []byte
		for i, v := range e {
			k = append(k, v.lo...)
			end = append(end, v.hi...)
			if len(sels) > 1 {
				k = append(k, make([]byte, pad4(sels[i].len)-sels[i].len)...)
				end = append(end, make([]byte, pad4(sels[i].len)-sels[i].len)...)
			}
			set.Interval = set.Interval || !v.point()
		}
		if _, dup := seen[string(k)]; dup {
			return p.fail("duplicate element")
		}
		seen[string(k)] = struct{}{}
		keys, ends = append(keys, k), append(ends, end)
	}
	var out []nftables.SetElement
	if len(sels) > 1 {
		dts := make([]nftables.SetDatatype, len(sels))
		for i, s := range sels {
			dts[i] = s.dt
		}
		t, err := nftables.ConcatSetType(dts...)
		if err != nil {
			return p.fail("concatenation")
		}
		set.KeyType = t
		set.Concatenation = set.Interval
	}
	if set.Concatenation {
		for i := range keys {
			out = append(out, nftables.SetElement{Key: keys[i], KeyEnd: ends[i]})
		}
	} else if set.Interval {
		spans := make([]value, len(elems))
		for i, e := range elems {
			spans[i] = e[0]
		}
		out = intervalElems(spans)
	} else {
		for _, k := range keys {
			out = append(out, nftables.SetElement{Key: k})
		}
	}
	lookup := &expr.Lookup{SourceRegister: 1, Invert: op == expr.CmpOpNeq}
	p.add(&stmt{exprs: append(p.loads(sels, plainKey), lookup)})
	p.anon = append(p.anon, nlAnonSet{set: set, elems: out, lookup: lookup})
	return nil
}

// intervalElems are the elements nft sends for an anonymous interval set:
// the ranges sorted and merged where they overlap or touch, an end element
// at zero before a first range that does not start at zero, and no end
// after a range that reaches the maximum.
func intervalElems(vs []value) []nftables.SetElement {
	vs = slices.Clone(vs)
	slices.SortFunc(vs, func(a, b value) int { return bytes.Compare(a.lo, b.lo) })
	var merged []value
	for _, v := range vs {
		if n := len(merged); n > 0 {
			end := successor(merged[n-1].hi)
			if end == nil || bytes.Compare(v.lo, end) <= 0 {
				if bytes.Compare(v.hi, merged[n-1].hi) > 0 {
					merged[n-1].hi = v.hi
				}
				continue
			}
		}
		merged = append(merged, value{lo: v.lo, hi: v.hi})
	}
	var out []nftables.SetElement
	if !bytes.Equal(merged[0].lo, make([]byte, len(merged[0].lo))) {
		out = append(out, nftables.SetElement{Key: make([]byte, len(merged[0].lo)), IntervalEnd: true})
	}
	for _, m := range merged {
		out = append(out, nftables.SetElement{Key: m.lo})
		if end := successor(m.hi); end != nil {
			out = append(out, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return out
}

// successor is b+1 as a big-endian number, nil when b is the maximum.
func successor(b []byte) []byte {
	s := slices.Clone(b)
	for i := len(s) - 1; i >= 0; i-- {
		s[i]++
		if s[i] != 0 {
			return s
		}
	}
	return nil
}

// mergePayloads does what nft's payload_try_merge does: the rule's payload
// compares with constants, stably sorted by offset, are merged pairwise
// where adjacent in the same header with the same operator, up to 4 bytes.
// The merged compare takes the place of the first by offset.
func (p *ruleParser) mergePayloads() error {
	var cs []*stmt
	for _, s := range p.stmts {
		if s.pm != nil {
			cs = append(cs, s)
		}
	}
	slices.SortStableFunc(cs, func(a, b *stmt) int { return int(a.pm.off) - int(b.pm.off) })
	for i := 1; i < len(cs); i++ {
		if cs[i].pm.off == cs[i-1].pm.off && cs[i].pm.base != cs[i-1].pm.base {
			return p.fail("payload compares at the same offset of two headers") // order not known
		}
	}
	var last *payloadMatch
	for _, s := range cs {
		m := s.pm
		if last != nil && last.base == m.base && last.off+last.len == m.off && last.op == m.op && last.len+m.len <= 4 {
			last.len += m.len
			last.data = append(slices.Clone(last.data), m.data...)
			s.dropped = true
			continue
		}
		last = m
	}
	return nil
}
