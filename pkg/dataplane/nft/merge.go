package nft

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
)

// Merged runs. The kernel's cost of a change grows with the number of
// chains in the table, not with the number of map elements: adding one rule
// makes it validate every chain a base chain can reach, once per chain
// (measured: a class map of 10,000 elements going to 10,000 chains costs a
// one-rule change 10–13 ms in the kernel and the table 574 ms to create;
// the same map going to 100 chains 0.8 ms and 127 ms). A program gets a
// chain per port class, and a class per distinct set of rules on a port:
// 10,000 rules on 10,000 ports made 10,000 chains.
//
// So, before partitioning, a program merges rules that the partition would
// otherwise keep apart. Within a run of consecutive rules of one block with
// the same action (Allow, Deny or Pass; a Log has an effect besides its
// verdict), the order of the rules does not matter: the first that matches
// decides, and they all decide alike. Rules of a run are merged when:
//
//   - they differ in their destination ports only (the same selector or
//     nets, say, on several ports): one rule with the union of the ports,
//     whose classes are then one class;
//   - their only conditions are the protocol, destination ports and the
//     nets of one side: one rule that looks the (address . port) pair up
//     in an anonymous concatenated interval set of every rule's nets ×
//     ports, per address family.
//
// The merged rule takes the place of the run's first rule of its group,
// its comment names the first rule and how many more it stands for, and
// its id is derived from the ids of the rules merged (so a program
// compiled again from the same rules finds its classes in the memo). With
// flow logs on, rules are not merged: each deciding rule logs its own name.

// mergedIDBit marks the id of a merged rule (compiledRule.id): derived
// from its members' ids, never equal to a rule's own (a counter).
const mergedIDBit = 1 << 63

// mergeRuns is flat with each run's mergeable rules merged, and the
// merged rules by id; those of last whose members are the same are
// reused.
func mergeRuns(flat []ruleRef, last map[uint64]*compiledRule) ([]ruleRef, map[uint64]*compiledRule) {
	out := flat[:0:0]
	merged := map[uint64]*compiledRule{}
	for i := 0; i < len(flat); {
		j := i + 1
		if mergeableAction(flat[i].rule.rule.Action) {
			for j < len(flat) && flat[j].block == flat[i].block && flat[j].rule.rule.Action == flat[i].rule.rule.Action {
				j++
			}
		}
		if j-i < 2 {
			out = append(out, flat[i:j]...)
		} else {
			out = mergeRun(out, flat[i:j], last, merged)
		}
		i = j
	}
	return out, merged
}

func mergeableAction(a calc.Action) bool {
	return a == calc.Allow || a == calc.Deny || a == calc.Pass
}

// mergeRun appends run's rules to out, those of a group merged (taken
// from last when there, put in merged).
func mergeRun(out, run []ruleRef, last, merged map[uint64]*compiledRule) []ruleRef {
	type group struct {
		at      int // index in out
		members []*compiledRule
		nets    netsShape
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, ref := range run {
		key := ref.rule.mergeKey
		if key == "" {
			out = append(out, ref)
			continue
		}
		g := byKey[key]
		if g == nil {
			g = &group{at: len(out), nets: ref.rule.nets}
			byKey[key] = g
			groups = append(groups, g)
			out = append(out, ref)
		}
		g.members = append(g.members, ref.rule)
	}
	for _, g := range groups {
		if len(g.members) < 2 {
			continue // out[g.at] is the rule itself
		}
		id := mergedID(g.members)
		m := last[id]
		if m == nil {
			var c compiledRule
			if g.nets.side != "" {
				c = mergeNets(g.members, g.nets)
			} else {
				c = mergePorts(g.members)
			}
			c.id, m = id, &c
		}
		merged[id] = m
		out[g.at] = ruleRef{block: out[g.at].block, rule: m}
	}
	return out
}

// netsShape is a rule whose only conditions are a protocol, destination
// ports and the nets of one side (side "saddr" or "daddr").
type netsShape struct {
	side  string
	proto uint8
}

// setMergeKey sets the group of c in a run (compileRule calls it once per
// rule): rules with the same key merge, "" merges with none.
func (c *compiledRule) setMergeKey() {
	if c.adm.all || c.adm.ranges == nil {
		return
	}
	if ns, ok := netsOnly(c.rule); ok {
		c.mergeKey, c.nets = fmt.Sprintf("nets %s %d", ns.side, ns.proto), ns
		return
	}
	c.mergeKey = fmt.Sprintf("ports %d\n%s", c.adm.proto, strings.Join(c.inClass, "\n"))
}

// netsOnly reports whether r's only conditions are its protocol, numeric
// destination ports and the nets of one side. (TestNetsOnlyKnowsEveryField
// fails when calc.Rule gains a field this does not look at.)
func netsOnly(r *calc.Rule) (netsShape, bool) {
	ns := netsShape{proto: r.Protocol}
	switch {
	case len(r.Src.Nets) > 0 && len(r.Dst.Nets) == 0:
		ns.side = "saddr"
	case len(r.Dst.Nets) > 0 && len(r.Src.Nets) == 0:
		ns.side = "daddr"
	default:
		return netsShape{}, false
	}
	if len(r.Dst.Ports) == 0 || !calc.HasPorts(r.Protocol) ||
		r.IPVersion != 0 || r.NotProtocol != 0 || r.ICMP != nil || r.NotICMP != nil ||
		len(r.Src.Ports) > 0 || !onlyNetsAndPorts(&r.Src) || !onlyNetsAndPorts(&r.Dst) {
		return netsShape{}, false
	}
	return ns, true
}

// onlyNetsAndPorts reports whether e has no condition but Nets and Ports.
func onlyNetsAndPorts(e *calc.EntityMatch) bool {
	return len(e.NotNets) == 0 && e.IPSet == "" && e.NotIPSet == "" && len(e.NotPorts) == 0 &&
		len(e.NamedPortSets) == 0 && len(e.NotNamedPortSets) == 0
}

// mergedID is the id of the rule merged from members, derived from
// theirs.
func mergedID(members []*compiledRule) uint64 {
	h := fnv.New64a()
	var b [binary.MaxVarintLen64]byte
	for _, m := range members {
		h.Write(b[:binary.PutUvarint(b[:], m.id)])
	}
	return h.Sum64() | mergedIDBit
}

// mergedRule is what stands for members: their action and a comment
// naming the first and how many more.
func mergedRule(members []*compiledRule) *calc.Rule {
	first := members[0].rule
	return &calc.Rule{Action: first.Action, Protocol: first.Protocol,
		LogPrefix: fmt.Sprintf("%s and %d more", first.LogPrefix, len(members)-1)}
}

// mergePorts merges rules that differ in their destination ports only.
func mergePorts(members []*compiledRule) compiledRule {
	var ports []calc.PortRange
	uncond := true
	for _, m := range members {
		ports = append(ports, m.adm.ranges...)
		uncond = uncond && m.uncond
	}
	first := members[0]
	c := compiledRule{rule: mergedRule(members), uncond: uncond, inClass: first.inClass,
		adm: admission{proto: first.adm.proto, ranges: mergeRanges(ports)}}
	// The full lines (for a class that does not guarantee the ports) are
	// the first member's with the union of the ports: render them from the
	// first rule with those ports.
	whole := *first.rule
	whole.Dst.Ports = c.adm.ranges
	full, _ := compileRule(&whole, ipSetName)
	c.full = full.full
	return c
}

// mergeNets merges rules of one nets shape: per address family one line
// looking the (address . destination port) pair up in the union of the
// rules' nets × ports.
func mergeNets(members []*compiledRule, ns netsShape) compiledRule {
	var ports []calc.PortRange
	elems := map[int]map[netip.Prefix][]calc.PortRange{4: {}, 6: {}}
	for _, m := range members {
		nets := m.rule.Src.Nets
		if ns.side == "daddr" {
			nets = m.rule.Dst.Nets
		}
		rs := mergeRanges(m.rule.Dst.Ports)
		ports = append(ports, rs...)
		for _, f := range []int{4, 6} {
			for _, p := range familyNets(nets, f) {
				elems[f][p] = append(elems[f][p], rs...)
			}
		}
	}
	c := compiledRule{rule: mergedRule(members), adm: admission{proto: ns.proto, ranges: mergeRanges(ports)}}
	for _, f := range []int{4, 6} {
		set := pairSet(elems[f])
		if set == "" {
			continue
		}
		fam, kw := familyWords(f)
		lookup := fmt.Sprintf("%s %s . th dport %s", kw, ns.side, set)
		c.inClass = append(c.inClass, fam+" "+lookup)
		c.full = append(c.full, fam+" meta l4proto "+protoName(ns.proto)+" "+lookup)
	}
	return c
}

// pairSet writes the (net . port range) pairs of byNet as an anonymous
// set whose elements do not overlap (the kernel refuses some overlapping
// elements of a concatenated interval set): a net's ports are merged, and
// a net inside another keeps only the ports the other does not have (a
// packet of both is matched by the outer one). "" when nothing is left.
func pairSet(byNet map[netip.Prefix][]calc.PortRange) string {
	nets := make([]netip.Prefix, 0, len(byNet))
	for p, rs := range byNet {
		byNet[p] = mergeRanges(rs)
		nets = append(nets, p)
	}
	slices.SortFunc(nets, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
	})
	var elems []string
	for _, p := range nets {
		rs := byNet[p]
		for bits := range p.Bits() {
			if outer, ok := byNet[netip.PrefixFrom(p.Addr(), bits).Masked()]; ok {
				rs = subtractRanges(rs, outer)
			}
		}
		for _, r := range rs {
			elems = append(elems, prefixString(p)+" . "+portString(r))
		}
	}
	if len(elems) == 0 {
		return ""
	}
	return "{ " + strings.Join(elems, ", ") + " }"
}

// subtractRanges is the ports of a (sorted, disjoint) not in b (the same).
func subtractRanges(a, b []calc.PortRange) []calc.PortRange {
	var out []calc.PortRange
	for _, r := range a {
		lo := int(r.First)
		for _, s := range b {
			if int(s.Last) < lo || s.First > r.Last {
				continue
			}
			if int(s.First) > lo {
				out = append(out, calc.PortRange{First: uint16(lo), Last: s.First - 1})
			}
			lo = int(s.Last) + 1
		}
		if lo <= int(r.Last) {
			out = append(out, calc.PortRange{First: uint16(lo), Last: r.Last})
		}
	}
	return out
}
