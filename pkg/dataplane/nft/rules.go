package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
)

// This file turns one calc.Rule into nftables match expressions. A rule is
// a conjunction; nftables rules are conjunctions too, so most of a rule is
// one line. Two things need more than one line:
//
//   - Address families. In an inet table `ip saddr` only matches IPv4, so a
//     rule that names addresses of both families (nets, or a selector's set,
//     which has a v4 and a v6 kernel set) becomes one line per family. Each
//     line only carries its own family's addresses: a v6 packet is in none
//     of a rule's v4 notNets, so that condition simply holds.
//   - Alternatives. "port in Ports, or (address, proto, port) in one of the
//     NamedPortSets" is an OR across different lookups; it becomes one line
//     per alternative. For Allow, Deny and Pass the lines are consecutive
//     and share the action, so the first that matches decides exactly as
//     the OR would. (A Log rule whose packet matches two alternatives logs
//     twice.)

// protoName is how the rule text writes an IP protocol: nft's names where
// it has them (they are also what `nft list` prints), the number otherwise.
func protoName(p uint8) string {
	switch p {
	case calc.ProtoTCP:
		return "tcp"
	case calc.ProtoUDP:
		return "udp"
	case calc.ProtoICMP:
		return "icmp"
	case calc.ProtoICMPv6:
		return "ipv6-icmp"
	case calc.ProtoSCTP:
		return "sctp"
	case calc.ProtoUDPLite:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}

// admission is the part of the (l4proto, destination port) space in which a
// rule can match: the key of the port-class dispatch (see program.go).
type admission struct {
	all    bool // any protocol
	proto  uint8
	ranges []calc.PortRange // sorted, disjoint; nil means every port
}

// equal reports whether a and b admit the same packets.
func (a admission) equal(b admission) bool {
	return a.all == b.all && a.proto == b.proto && (a.ranges == nil) == (b.ranges == nil) && slices.Equal(a.ranges, b.ranges)
}

// compiledRule is a calc.Rule ready to be placed in class chains.
type compiledRule struct {
	rule *calc.Rule
	// id identifies this compilation of the rule within a Driver (never
	// reused): class chains built from the same rules are remembered by
	// their ids (see classMemo).
	id  uint64
	adm admission
	// full are the match lines with every condition; inClass are the same
	// lines without the protocol and destination port conditions, which a
	// class chain of the rule's protocol already guarantees.
	full, inClass []string
	// uncond: within a class that admits it, the rule matches every packet
	// (its only conditions are protocol and numeric destination ports).
	uncond bool
	// mergeKey groups the rules a run merges (merge.go), "" for a rule
	// that merges with none; nets is the shape of a nets group.
	mergeKey string
	nets     netsShape
}

// compileRule compiles r; ok is false when r can never match (for example
// ipVersion 6 with only IPv4 nets).
func compileRule(r *calc.Rule, names setNamer) (compiledRule, bool) {
	c := compiledRule{rule: r}
	switch {
	case r.Protocol == 0:
		c.adm = admission{all: true}
	case calc.HasPorts(r.Protocol) && len(r.Dst.Ports) > 0 && len(r.Dst.NamedPortSets) == 0:
		c.adm = admission{proto: r.Protocol, ranges: mergeRanges(r.Dst.Ports)}
	default:
		c.adm = admission{proto: r.Protocol}
	}
	familyBound := r.IPVersion != 0 || r.ICMP != nil || r.NotICMP != nil ||
		r.Protocol == calc.ProtoICMP || r.Protocol == calc.ProtoICMPv6 ||
		entityFamilyBound(&r.Src) || entityFamilyBound(&r.Dst)
	c.uncond = !familyBound && r.NotProtocol == 0 &&
		len(r.Src.Ports) == 0 && len(r.Src.NotPorts) == 0 && len(r.Dst.NotPorts) == 0 &&
		len(r.Dst.NamedPortSets) == 0 && (len(r.Dst.Ports) == 0 || c.adm.ranges != nil)

	var families []int
	if !familyBound {
		families = []int{0}
	} else {
		for _, f := range []int{4, 6} {
			if familyPossible(r, f) {
				families = append(families, f)
			}
		}
	}
	for _, f := range families {
		c.full = append(c.full, ruleLines(r, f, classGuarantee{}, names)...)
		c.inClass = append(c.inClass, ruleLines(r, f, classGuarantee{proto: !c.adm.all, dstPorts: c.adm.ranges != nil}, names)...)
	}
	c.setMergeKey()
	return c, len(c.full) > 0
}

func entityFamilyBound(e *calc.EntityMatch) bool {
	return len(e.Nets) > 0 || len(e.NotNets) > 0 || e.IPSet != "" || e.NotIPSet != "" ||
		len(e.NamedPortSets) > 0 || len(e.NotNamedPortSets) > 0
}

// familyPossible reports whether r can match a packet of IP version f.
func familyPossible(r *calc.Rule, f int) bool {
	if r.IPVersion != 0 && int(r.IPVersion) != f {
		return false
	}
	switch r.Protocol {
	case calc.ProtoICMP:
		if f != 4 {
			return false
		}
	case calc.ProtoICMPv6:
		if f != 6 {
			return false
		}
	case 0:
		if (r.ICMP != nil || r.NotICMP != nil) && f == 6 && r.IPVersion != 6 {
			return false // an ICMP type without a protocol is ICMPv4
		}
	}
	for _, e := range []*calc.EntityMatch{&r.Src, &r.Dst} {
		if len(e.Nets) > 0 && !slices.ContainsFunc(e.Nets, func(p netip.Prefix) bool { return is6(p) == (f == 6) }) {
			return false
		}
	}
	return true
}

func is6(p netip.Prefix) bool { return !p.Addr().Is4() }

// setNamer names the kernel set of one family (4 or 6) of a calc IP set
// (ipSetName).
type setNamer func(id string, kind calc.IPSetKind, family int) string

// classGuarantee is what the class chain a rule's lines go in guarantees,
// so the lines leave it out: the protocol, the numeric destination ports.
type classGuarantee struct {
	proto, dstPorts bool
}

// portsCond says whether the numeric Ports of one side of a rule are
// written in its lines or left out, a class chain guaranteeing them.
type portsCond uint8

const (
	writePorts portsCond = iota
	portsGuaranteed
)

// ruleLines renders the match lines of r for family f (0: any family),
// without what the class chain guarantees (g).
func ruleLines(r *calc.Rule, f int, g classGuarantee, names setNamer) []string {
	var base []string
	if f != 0 {
		nf, _ := familyWords(f)
		base = append(base, nf)
	}
	if r.Protocol != 0 && !g.proto {
		base = append(base, "meta l4proto "+protoName(r.Protocol))
	}
	if r.NotProtocol != 0 {
		base = append(base, "meta l4proto != "+protoName(r.NotProtocol))
	}
	base = append(base, icmpExprs(r, f)...)
	dstPorts := writePorts
	if g.dstPorts {
		dstPorts = portsGuaranteed
	}
	srcAlts := entityExprs(&r.Src, "saddr", "sport", f, writePorts, names)
	dstAlts := entityExprs(&r.Dst, "daddr", "dport", f, dstPorts, names)
	var out []string
	for _, s := range srcAlts {
		for _, d := range dstAlts {
			parts := slices.Clone(base)
			parts = append(parts, s...)
			parts = append(parts, d...)
			out = append(out, strings.Join(parts, " "))
		}
	}
	return out
}

func icmpExprs(r *calc.Rule, f int) []string {
	kw := "icmp"
	if r.Protocol == calc.ProtoICMPv6 || (r.Protocol == 0 && f == 6) {
		kw = "icmpv6"
	}
	var out []string
	if m := r.ICMP; m != nil {
		out = append(out, fmt.Sprintf("%s type %d", kw, m.Type))
		if m.HasCode {
			out = append(out, fmt.Sprintf("%s code %d", kw, m.Code))
		}
	}
	if m := r.NotICMP; m != nil {
		if m.HasCode {
			out = append(out, fmt.Sprintf("%s type . %s code != { %d . %d }", kw, kw, m.Type, m.Code))
		} else {
			out = append(out, fmt.Sprintf("%s type != %d", kw, m.Type))
		}
	}
	return out
}

// familyWords are how a rule's lines name address family f (4 or 6): the
// match on it and the keyword of its address fields.
func familyWords(f int) (nfproto, addrKeyword string) {
	if f == 6 {
		return "meta nfproto ipv6", "ip6"
	}
	return "meta nfproto ipv4", "ip"
}

// entityExprs renders one side of a rule for family f: a list of
// alternatives, each a list of expressions to AND. ports says whether the
// numeric Ports condition is written or guaranteed by the class chain.
func entityExprs(e *calc.EntityMatch, addr, port string, f int, ports portsCond, names setNamer) [][]string {
	_, ipkw := familyWords(f)
	var common []string
	if f != 0 {
		if nets := familyNets(e.Nets, f); len(nets) > 0 {
			common = append(common, fmt.Sprintf("%s %s %s", ipkw, addr, anonSet(nets)))
		}
		if nets := familyNets(e.NotNets, f); len(nets) > 0 {
			common = append(common, fmt.Sprintf("%s %s != %s", ipkw, addr, anonSet(nets)))
		}
		if e.IPSet != "" {
			common = append(common, fmt.Sprintf("%s %s @%s", ipkw, addr, names(e.IPSet, calc.AddressSet, f)))
		}
		if e.NotIPSet != "" {
			common = append(common, fmt.Sprintf("%s %s != @%s", ipkw, addr, names(e.NotIPSet, calc.AddressSet, f)))
		}
	}
	if len(e.NotPorts) > 0 {
		common = append(common, fmt.Sprintf("th %s != %s", port, notPortSet(mergeRanges(e.NotPorts))))
	}
	for _, id := range e.NotNamedPortSets {
		common = append(common, fmt.Sprintf("%s %s . meta l4proto . th %s != @%s", ipkw, addr, port, names(id, calc.NamedPortSet, f)))
	}
	var alts [][]string
	if len(e.Ports) > 0 {
		if ports == portsGuaranteed {
			alts = append(alts, nil)
		} else {
			alts = append(alts, []string{fmt.Sprintf("th %s %s", port, portSet(mergeRanges(e.Ports)))})
		}
	}
	for _, id := range e.NamedPortSets {
		alts = append(alts, []string{fmt.Sprintf("%s %s . meta l4proto . th %s @%s", ipkw, addr, port, names(id, calc.NamedPortSet, f))})
	}
	if len(alts) == 0 {
		alts = [][]string{nil}
	}
	out := make([][]string, len(alts))
	for i, a := range alts {
		out[i] = append(slices.Clone(common), a...)
	}
	return out
}

func familyNets(ps []netip.Prefix, f int) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if is6(p) == (f == 6) {
			out = append(out, p)
		}
	}
	return coverPrefixes(out)
}

// anonSet writes prefixes as one value or an anonymous set. The prefixes
// must not overlap (the kernel refuses overlapping intervals): callers pass
// coverPrefixes' output.
func anonSet(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = prefixString(p)
	}
	if len(s) == 1 {
		return s[0]
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

// prefixString is how nft prints an interval set element: a bare address
// for a single address, CIDR otherwise.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func portString(r calc.PortRange) string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

func portSet(rs []calc.PortRange) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = portString(r)
	}
	if len(s) == 1 {
		return s[0]
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

// notPortSet is portSet for a != match. One port is written as a range of
// one ("53-53"): nft merges two single-value compares of neighbouring
// fields into one, so `th sport != 53 th dport != 80` would become
// "not (sport 53 and dport 80)"; a range compare is never merged.
func notPortSet(rs []calc.PortRange) string {
	if len(rs) == 1 && rs[0].First == rs[0].Last {
		return fmt.Sprintf("%d-%d", rs[0].First, rs[0].Last)
	}
	return portSet(rs)
}

// mergeRanges sorts port ranges and merges overlapping or adjacent ones.
func mergeRanges(in []calc.PortRange) []calc.PortRange {
	rs := slices.Clone(in)
	for i := range rs {
		if rs[i].First > rs[i].Last {
			rs[i].First, rs[i].Last = rs[i].Last, rs[i].First
		}
	}
	slices.SortFunc(rs, func(a, b calc.PortRange) int { return int(a.First) - int(b.First) })
	var out []calc.PortRange
	for _, r := range rs {
		if n := len(out); n > 0 && int(r.First) <= int(out[n-1].Last)+1 {
			if r.Last > out[n-1].Last {
				out[n-1].Last = r.Last
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// coverPrefixes returns the prefixes of ps not contained in another one,
// sorted: the same addresses, without overlaps.
func coverPrefixes(ps []netip.Prefix) []netip.Prefix {
	s := slices.Clone(ps)
	for i := range s {
		s[i] = s[i].Masked()
	}
	slices.SortFunc(s, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var out []netip.Prefix
	for _, p := range s {
		if n := len(out); n > 0 && out[n-1].Overlaps(p) {
			continue // sorted by address then length: the earlier one contains p
		}
		out = append(out, p)
	}
	return out
}
