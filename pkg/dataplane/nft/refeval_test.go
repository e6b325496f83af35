package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
)

// The reference evaluator: calc's policy model evaluated rule after rule,
// exactly as calc.Endpoint documents it, for the property test
// (property_test.go). It shares nothing with the compiler (no partition,
// no classes, no rule text): it reads calc values and a packet.

// refResult is what the reference says of a packet in one program (or on
// a whole path).
type refResult struct {
	allow bool
	// logs are the LogPrefix of each Log rule that matched, once per
	// matching alternative (see refRuleMatches).
	logs []string
	// why says what decided, for failure messages and coverage counts:
	// "allow", "deny", "tier default", "profile allow", "profile deny",
	// "missing profile", "nothing allowed" (and "base chain" for the
	// static rules of a path).
	why string
	// by is the deciding rule's LogPrefix or the tier or profile.
	by string
	// passed counts the tiers left by a Pass rule or a Pass default.
	passed int
}

func (r refResult) verdict() string {
	if r.allow {
		return "accept"
	}
	return "drop"
}

// refEndpoint evaluates one endpoint's policy for one direction: the
// tiers in order (in each, the policies in order, each policy's rules in
// order: the first Allow or Deny decides, Pass goes to the next tier, Log
// logs and goes on; a tier in which nothing decided ends with its default
// action, Deny unless it is Pass); then the profiles in order (a missing
// one drops; the first Allow or Deny decides); then drop.
func refEndpoint(st *calc.State, ep *calc.Endpoint, dir calc.Direction, p *packet) refResult {
	var res refResult
	tiers := ep.Ingress
	if dir == calc.Egress {
		tiers = ep.Egress
	}
	rulesOf := func(in, eg []calc.Rule) []calc.Rule {
		if dir == calc.Egress {
			return eg
		}
		return in
	}
	// rules evaluates rules in order: decided (an Allow or Deny matched,
	// res says which), or passed (a Pass matched).
	rules := func(rs []calc.Rule, prefix string) (decided, passed bool) {
		for i := range rs {
			r := &rs[i]
			n := refRuleMatches(st, r, p)
			if n == 0 {
				continue
			}
			switch r.Action {
			case calc.Log:
				for range n {
					res.logs = append(res.logs, r.LogPrefix)
				}
			case calc.Allow:
				res.allow, res.why, res.by = true, prefix+"allow", r.LogPrefix
				return true, false
			case calc.Deny:
				res.why, res.by = prefix+"deny", r.LogPrefix
				return true, false
			case calc.Pass:
				return false, true
			}
		}
		return false, false
	}
tiers:
	for _, t := range tiers {
		for _, pid := range t.Policies {
			pol := st.Policies[pid]
			if pol == nil {
				continue
			}
			decided, passed := rules(rulesOf(pol.Ingress, pol.Egress), "")
			if decided {
				return res
			}
			if passed {
				res.passed++
				continue tiers
			}
		}
		if t.DefaultAction == calc.Pass {
			res.passed++
			continue
		}
		res.why, res.by = "tier default", t.Name
		return res
	}
	for _, ref := range ep.Profiles {
		pr := st.Profiles[ref.Name]
		if ref.Missing || pr == nil {
			res.why, res.by = "missing profile", ref.Name
			return res
		}
		// Pass has no meaning in a profile (calc allows it in tiers only);
		// the generator writes none.
		if decided, _ := rules(rulesOf(pr.Ingress, pr.Egress), "profile "); decided {
			return res
		}
	}
	res.why = "nothing allowed"
	return res
}

// refRuleMatches reports how many ways rule r matches packet p: 0 when it
// does not. A rule matches at most once in calc's model; the count is the
// number of (source alternative, destination alternative) pairs that
// match, where the alternatives of one side are "port in Ports" and "in
// each NamedPortSet". The driver documents that it writes one line per
// pair, so a Log rule logs once per matching pair; for every other action
// only zero or not matters.
func refRuleMatches(st *calc.State, r *calc.Rule, p *packet) int {
	v4 := p.src.Is4()
	if r.IPVersion == 4 && !v4 || r.IPVersion == 6 && v4 {
		return 0
	}
	if r.Protocol != 0 && p.proto != r.Protocol {
		return 0
	}
	if r.NotProtocol != 0 && p.proto == r.NotProtocol {
		return 0
	}
	isICMP := p.proto == calc.ProtoICMP || p.proto == calc.ProtoICMPv6
	if m := r.ICMP; m != nil {
		if !isICMP || p.icmpType != m.Type || m.HasCode && p.icmpCode != m.Code {
			return 0
		}
	}
	if m := r.NotICMP; m != nil {
		if !isICMP {
			return 0
		}
		if m.HasCode && p.icmpType == m.Type && p.icmpCode == m.Code || !m.HasCode && p.icmpType == m.Type {
			return 0
		}
	}
	return refEntity(st, &r.Src, p, p.src, p.sport) * refEntity(st, &r.Dst, p, p.dst, p.dport)
}

// refEntity is how many alternatives of one side of a rule match (1 when
// the side has no port alternatives and its other conditions hold).
func refEntity(st *calc.State, e *calc.EntityMatch, p *packet, a netip.Addr, port uint16) int {
	if len(e.Nets) > 0 && !slices.ContainsFunc(e.Nets, func(n netip.Prefix) bool { return n.Contains(a) }) {
		return 0
	}
	if slices.ContainsFunc(e.NotNets, func(n netip.Prefix) bool { return n.Contains(a) }) {
		return 0
	}
	if e.IPSet != "" && !refInAddressSet(st, e.IPSet, a) {
		return 0
	}
	if e.NotIPSet != "" && refInAddressSet(st, e.NotIPSet, a) {
		return 0
	}
	ported := refHasPorts(p.proto)
	if len(e.NotPorts) > 0 && (!ported || refInRanges(e.NotPorts, port)) {
		return 0 // a port condition never holds for a packet without ports
	}
	for _, id := range e.NotNamedPortSets {
		if !ported || refInNamedPorts(st, id, a, p.proto, port) {
			return 0
		}
	}
	if len(e.Ports) == 0 && len(e.NamedPortSets) == 0 {
		return 1
	}
	n := 0
	if len(e.Ports) > 0 && ported && refInRanges(e.Ports, port) {
		n++
	}
	for _, id := range e.NamedPortSets {
		if ported && refInNamedPorts(st, id, a, p.proto, port) {
			n++
		}
	}
	return n
}

func refInRanges(rs []calc.PortRange, port uint16) bool {
	return slices.ContainsFunc(rs, func(r calc.PortRange) bool { return r.First <= port && port <= r.Last })
}

func refInAddressSet(st *calc.State, id string, a netip.Addr) bool {
	for m := range st.Members[id] {
		if m.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

func refInNamedPorts(st *calc.State, id string, a netip.Addr, proto uint8, port uint16) bool {
	for m := range st.Members[id] {
		if m.Prefix.Contains(a) && m.Protocol == proto && m.Port == port {
			return true
		}
	}
	return false
}

// refHasPorts: the protocols whose packets have source and destination
// ports.
func refHasPorts(proto uint8) bool {
	switch proto {
	case calc.ProtoTCP, calc.ProtoUDP, calc.ProtoSCTP, calc.ProtoUDPLite:
		return true
	}
	return false
}

// refPath evaluates a packet on its way through the table's base chains
// as far as workload policy goes (every packet is a connection's first,
// ct state new, no host endpoint): a forwarded packet from a workload
// meets the workload's egress policy, then, if allowed, the ingress policy
// of the workload it goes to; a packet the host sends to a workload
// (output hook) meets only that workload's ingress policy, but for IPv6
// neighbour and router discovery, which the output chain accepts first.
func refPath(st *calc.State, path string, p *packet) refResult {
	byIface := func(ifc string) *calc.Endpoint {
		for _, ep := range st.Endpoints {
			if ep.InterfaceName == ifc {
				return ep
			}
		}
		return nil
	}
	if path == "output" && p.proto == calc.ProtoICMPv6 && p.icmpType >= 130 && p.icmpType <= 136 && strings.HasPrefix(p.oif, "cali") {
		return refResult{allow: true, why: "base chain", by: "ICMPv6 neighbour discovery"}
	}
	res := refResult{allow: true, why: "no workload"}
	if ep := byIface(p.iif); ep != nil && path == "forward" {
		res = refEndpoint(st, ep, calc.Egress, p)
		if !res.allow {
			return res
		}
	}
	if ep := byIface(p.oif); ep != nil {
		in := refEndpoint(st, ep, calc.Ingress, p)
		in.logs = append(res.logs, in.logs...)
		in.passed += res.passed
		res = in
	}
	return res
}

// String describes a result for failure messages.
func (r refResult) String() string {
	return fmt.Sprintf("%s (%s %s), logs %q", r.verdict(), r.why, r.by, r.logs)
}
