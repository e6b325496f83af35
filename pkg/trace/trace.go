// Package trace answers "what would policy do with this packet, and why?"
// for one packet that need not have been sent: it walks the policy that
// the calculation graph resolved for an endpoint (calc.State, the same
// model the nftables driver compiles) tier by tier, policy by policy and
// rule by rule, in the order documented on calc.Endpoint, and records for
// every rule it considered whether it matched and, when not, the first
// condition that failed.
//
// It is pure: no I/O, no clock. `tortie policy trace` feeds it the
// datastore through calc.Graph; tests cross-check its verdicts against the
// compiled ruleset (pkg/dataplane/nft) and against the kernel.
package trace

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
)

// Packet is the first packet of a connection, as policy sees it.
type Packet struct {
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	Protocol uint8      `json:"protocol"`
	// SrcPort and DstPort are zero for a protocol without ports.
	SrcPort uint16 `json:"srcPort,omitempty"`
	DstPort uint16 `json:"dstPort,omitempty"`
	// ICMPType and ICMPCode are meaningful for ICMP and ICMPv6 only.
	ICMPType uint8 `json:"icmpType,omitempty"`
	ICMPCode uint8 `json:"icmpCode,omitempty"`
}

// String is the packet in one line: "tcp 10.0.0.1:40000 -> 10.0.0.2:80".
func (p Packet) String() string {
	if calc.HasPorts(p.Protocol) {
		return fmt.Sprintf("%s %s -> %s", ProtocolName(p.Protocol),
			netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
	}
	s := fmt.Sprintf("%s %s -> %s", ProtocolName(p.Protocol), p.Src, p.Dst)
	if isICMP(p.Protocol) {
		s += fmt.Sprintf(" type %d code %d", p.ICMPType, p.ICMPCode)
	}
	return s
}

// Check reports what makes p impossible to trace: an address missing or
// the two of different families, or an ICMP protocol of the wrong family.
func (p Packet) Check() error {
	switch {
	case !p.Src.IsValid():
		return fmt.Errorf("the packet has no source address")
	case !p.Dst.IsValid():
		return fmt.Errorf("the packet has no destination address")
	case p.Src.Is4() != p.Dst.Is4():
		return fmt.Errorf("source %s and destination %s are of different IP versions", p.Src, p.Dst)
	case p.Protocol == calc.ProtoICMP && !p.Src.Is4():
		return fmt.Errorf("protocol ICMP is IPv4 only: use ICMPv6 for %s", p.Src)
	case p.Protocol == calc.ProtoICMPv6 && p.Src.Is4():
		return fmt.Errorf("protocol ICMPv6 is IPv6 only: use ICMP for %s", p.Src)
	}
	return nil
}

// RuleStep is one rule considered.
type RuleStep struct {
	// Index is the rule's place in its policy's (or profile's) list for
	// this direction, from 0, as in the resource.
	Index  int         `json:"index"`
	Action calc.Action `json:"action"`
	// Matched: every condition of the rule holds for the packet.
	Matched bool `json:"matched"`
	// Why is the first condition that does not hold, or what matched.
	Why string `json:"why"`
}

// PolicyStep is one policy of a tier, as far as evaluation went in it.
type PolicyStep struct {
	Policy string `json:"policy"`
	// Staged: the policy is a staged one (a what-if), not enforced.
	Staged bool `json:"staged,omitempty"`
	// Missing: the endpoint lists the policy but the state has no rules
	// for it (never the case in a state from calc.Graph).
	Missing bool       `json:"missing,omitempty"`
	Rules   []RuleStep `json:"rules"`
}

// TierStep is one tier.
type TierStep struct {
	Tier          string       `json:"tier"`
	DefaultAction calc.Action  `json:"defaultAction"`
	Policies      []PolicyStep `json:"policies"`
	// Outcome: "decided" (a rule allowed or denied), "pass" (a Pass rule
	// sent the packet on), "default Deny" or "default Pass" (no rule
	// decided).
	Outcome string `json:"outcome"`
}

// ProfileStep is one profile.
type ProfileStep struct {
	Profile string     `json:"profile"`
	Missing bool       `json:"missing,omitempty"`
	Rules   []RuleStep `json:"rules"`
}

// Decision is what decided a side.
type Decision struct {
	// Kind: "rule" (Tier, Policy and Rule say which), "tier default"
	// (Tier), "profile rule" (Profile and Rule), "missing profile"
	// (Profile), or "nothing allowed" (no tier decided and no profile
	// allowed).
	Kind    string `json:"kind"`
	Tier    string `json:"tier,omitempty"`
	Policy  string `json:"policy,omitempty"`
	Profile string `json:"profile,omitempty"`
	Rule    int    `json:"rule"`
	Staged  bool   `json:"staged,omitempty"`
}

// String is the decision in words: "tier default, policy shop/web rule 2".
func (d Decision) String() string {
	staged := ""
	if d.Staged {
		staged = "staged "
	}
	switch d.Kind {
	case "rule":
		return fmt.Sprintf("tier %s, %spolicy %s, rule %d", d.Tier, staged, d.Policy, d.Rule)
	case "tier default":
		return fmt.Sprintf("end of tier %s (no policy in it decided)", d.Tier)
	case "profile rule":
		return fmt.Sprintf("profile %s, rule %d", d.Profile, d.Rule)
	case "missing profile":
		return fmt.Sprintf("profile %s does not exist (fails closed)", d.Profile)
	}
	return "no tier decided and no profile allowed"
}

// Side is one endpoint's policy for one direction applied to the packet.
type Side struct {
	Endpoint  string         `json:"endpoint"`
	Direction calc.Direction `json:"direction"`
	Tiers     []TierStep     `json:"tiers"`
	Profiles  []ProfileStep  `json:"profiles,omitempty"`
	// Verdict is Allow or Deny.
	Verdict  calc.Action `json:"verdict"`
	Decision Decision    `json:"decision"`
}

// Options change how Evaluate reads the state.
type Options struct {
	// Staged names the policies of the state that are staged ones, for
	// the record (PolicyStep.Staged, Decision.Staged).
	Staged map[calc.PolicyID]bool
}

// Evaluate applies ep's policy for direction dir to p, as calc.Endpoint
// documents it: the tiers in order (in each, its policies in order, each
// policy's rules in order: the first Allow or Deny decides, Pass goes on
// to the next tier, Log goes on with the next rule; a tier in which no
// rule decided ends with its default action), then the profiles in order
// (a missing one denies; the first Allow or Deny decides), then Deny.
func Evaluate(st *calc.State, ep *calc.Endpoint, dir calc.Direction, p Packet, o Options) *Side {
	side := &Side{Endpoint: ep.ID.String(), Direction: dir, Tiers: []TierStep{}}
	tiers := ep.Ingress
	if dir == calc.Egress {
		tiers = ep.Egress
	}
	decide := func(v calc.Action, d Decision) *Side {
		side.Verdict, side.Decision = v, d
		return side
	}
tiers:
	for _, t := range tiers {
		ts := TierStep{Tier: t.Name, DefaultAction: t.DefaultAction, Policies: []PolicyStep{}}
		for _, id := range t.Policies {
			ps := PolicyStep{Policy: id.String(), Staged: o.Staged[id], Rules: []RuleStep{}}
			pol := st.Policies[id]
			if pol == nil {
				ps.Missing = true
				ts.Policies = append(ts.Policies, ps)
				continue
			}
			rules := pol.Ingress
			if dir == calc.Egress {
				rules = pol.Egress
			}
			act, idx := evalRules(st, rules, p, &ps.Rules)
			ts.Policies = append(ts.Policies, ps)
			switch act {
			case calc.Allow, calc.Deny:
				ts.Outcome = "decided"
				side.Tiers = append(side.Tiers, ts)
				return decide(act, Decision{Kind: "rule", Tier: t.Name, Policy: id.String(), Rule: idx, Staged: o.Staged[id]})
			case calc.Pass:
				ts.Outcome = "pass"
				side.Tiers = append(side.Tiers, ts)
				continue tiers
			}
		}
		if t.DefaultAction == calc.Pass {
			ts.Outcome = "default Pass"
			side.Tiers = append(side.Tiers, ts)
			continue
		}
		ts.Outcome = "default Deny"
		side.Tiers = append(side.Tiers, ts)
		return decide(calc.Deny, Decision{Kind: "tier default", Tier: t.Name})
	}
	for _, ref := range ep.Profiles {
		pr := st.Profiles[ref.Name]
		step := ProfileStep{Profile: ref.Name, Rules: []RuleStep{}}
		if ref.Missing || pr == nil {
			step.Missing = true
			side.Profiles = append(side.Profiles, step)
			return decide(calc.Deny, Decision{Kind: "missing profile", Profile: ref.Name})
		}
		rules := pr.Ingress
		if dir == calc.Egress {
			rules = pr.Egress
		}
		act, idx := evalRules(st, rules, p, &step.Rules)
		side.Profiles = append(side.Profiles, step)
		if act == calc.Allow || act == calc.Deny {
			return decide(act, Decision{Kind: "profile rule", Profile: ref.Name, Rule: idx})
		}
	}
	return decide(calc.Deny, Decision{Kind: "nothing allowed"})
}

// evalRules walks rules in order, recording each in steps, until one
// decides (Allow, Deny) or passes (Pass): that action and the rule's
// index; "" when none did.
func evalRules(st *calc.State, rules []calc.Rule, p Packet, steps *[]RuleStep) (calc.Action, int) {
	for i := range rules {
		r := &rules[i]
		ok, why := Matches(st, r, p)
		*steps = append(*steps, RuleStep{Index: i, Action: r.Action, Matched: ok, Why: why})
		if ok && r.Action != calc.Log {
			return r.Action, i
		}
	}
	return "", -1
}

// Matches reports whether every condition of r holds for p, with the
// first that does not (or, when all hold, what matched).
func Matches(st *calc.State, r *calc.Rule, p Packet) (bool, string) {
	v4 := p.Src.Is4()
	if r.IPVersion == 4 && !v4 || r.IPVersion == 6 && v4 {
		return false, fmt.Sprintf("ipVersion %d, the packet is IPv%d", r.IPVersion, family(v4))
	}
	if r.Protocol != 0 && p.Protocol != r.Protocol {
		return false, fmt.Sprintf("protocol %s, the packet is %s", ProtocolName(r.Protocol), ProtocolName(p.Protocol))
	}
	if r.NotProtocol != 0 && p.Protocol == r.NotProtocol {
		return false, "notProtocol " + ProtocolName(r.NotProtocol)
	}
	if m := r.ICMP; m != nil {
		switch {
		case !isICMP(p.Protocol):
			return false, "an ICMP type is required, the packet is " + ProtocolName(p.Protocol)
		case p.ICMPType != m.Type:
			return false, fmt.Sprintf("icmp type %d, the packet's is %d", m.Type, p.ICMPType)
		case m.HasCode && p.ICMPCode != m.Code:
			return false, fmt.Sprintf("icmp code %d, the packet's is %d", m.Code, p.ICMPCode)
		}
	}
	if m := r.NotICMP; m != nil {
		switch {
		case !isICMP(p.Protocol):
			return false, "notICMP needs an ICMP packet, the packet is " + ProtocolName(p.Protocol)
		case m.HasCode && p.ICMPType == m.Type && p.ICMPCode == m.Code:
			return false, fmt.Sprintf("notICMP type %d code %d", m.Type, m.Code)
		case !m.HasCode && p.ICMPType == m.Type:
			return false, fmt.Sprintf("notICMP type %d", m.Type)
		}
	}
	okS, whyS := entity(st, &r.Src, "source", p, p.Src, p.SrcPort)
	if !okS {
		return false, whyS
	}
	okD, whyD := entity(st, &r.Dst, "destination", p, p.Dst, p.DstPort)
	if !okD {
		return false, whyD
	}
	var what []string
	for _, w := range []string{whyS, whyD} {
		if w != "" {
			what = append(what, w)
		}
	}
	if r.Protocol != 0 {
		what = slices.Insert(what, 0, "protocol "+ProtocolName(r.Protocol))
	}
	if len(what) == 0 {
		return true, "matches every packet"
	}
	return true, strings.Join(what, ", ")
}

// entity checks one side of a rule: the conditions on the address, then
// on the port. ok with a description of what held ("" when the side has
// no conditions).
func entity(st *calc.State, e *calc.EntityMatch, side string, p Packet, a netip.Addr, port uint16) (bool, string) {
	var held []string
	if len(e.Nets) > 0 {
		if !slices.ContainsFunc(e.Nets, func(n netip.Prefix) bool { return n.Contains(a) }) {
			return false, fmt.Sprintf("%s %s is not in nets %s", side, a, prefixes(e.Nets))
		}
		held = append(held, fmt.Sprintf("%s in nets %s", side, prefixes(e.Nets)))
	}
	if i := slices.IndexFunc(e.NotNets, func(n netip.Prefix) bool { return n.Contains(a) }); i >= 0 {
		return false, fmt.Sprintf("%s %s is in notNets %s", side, a, e.NotNets[i])
	}
	if e.IPSet != "" {
		if !inAddressSet(st, e.IPSet, a) {
			return false, fmt.Sprintf("%s %s is not selected by %s", side, a, selectorOf(st, e.IPSet))
		}
		held = append(held, fmt.Sprintf("%s selected by %s", side, selectorOf(st, e.IPSet)))
	}
	if e.NotIPSet != "" && inAddressSet(st, e.NotIPSet, a) {
		return false, fmt.Sprintf("%s %s is selected by notSelector %s", side, a, selectorOf(st, e.NotIPSet))
	}
	ported := calc.HasPorts(p.Protocol)
	if len(e.NotPorts) > 0 {
		if !ported {
			return false, fmt.Sprintf("%s notPorts need a protocol with ports, the packet is %s", side, ProtocolName(p.Protocol))
		}
		if inRanges(e.NotPorts, port) {
			return false, fmt.Sprintf("%s port %d is in notPorts %s", side, port, ranges(e.NotPorts))
		}
	}
	for _, id := range e.NotNamedPortSets {
		if !ported {
			return false, fmt.Sprintf("%s named notPorts need a protocol with ports, the packet is %s", side, ProtocolName(p.Protocol))
		}
		if inNamedPorts(st, id, a, p.Protocol, port) {
			return false, fmt.Sprintf("%s %s is named port %s in notPorts", side, netip.AddrPortFrom(a, port), portNameOf(st, id))
		}
	}
	if len(e.Ports) == 0 && len(e.NamedPortSets) == 0 {
		return true, strings.Join(held, ", ")
	}
	var alts []string
	if len(e.Ports) > 0 {
		alts = append(alts, ranges(e.Ports))
	}
	for _, id := range e.NamedPortSets {
		alts = append(alts, "named port "+portNameOf(st, id))
	}
	if !ported {
		return false, fmt.Sprintf("%s ports %s need a protocol with ports, the packet is %s", side, strings.Join(alts, " or "), ProtocolName(p.Protocol))
	}
	if len(e.Ports) > 0 && inRanges(e.Ports, port) {
		return true, strings.Join(append(held, fmt.Sprintf("%s port %d in %s", side, port, ranges(e.Ports))), ", ")
	}
	for _, id := range e.NamedPortSets {
		if inNamedPorts(st, id, a, p.Protocol, port) {
			return true, strings.Join(append(held, fmt.Sprintf("%s %s is named port %s", side, netip.AddrPortFrom(a, port), portNameOf(st, id))), ", ")
		}
	}
	return false, fmt.Sprintf("%s port %d is not in %s", side, port, strings.Join(alts, " or "))
}

func inRanges(rs []calc.PortRange, port uint16) bool {
	return slices.ContainsFunc(rs, func(r calc.PortRange) bool { return r.First <= port && port <= r.Last })
}

func inAddressSet(st *calc.State, id string, a netip.Addr) bool {
	for m := range st.Members[id] {
		if m.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

func inNamedPorts(st *calc.State, id string, a netip.Addr, proto uint8, port uint16) bool {
	for m := range st.Members[id] {
		if m.Prefix.Contains(a) && m.Protocol == proto && m.Port == port {
			return true
		}
	}
	return false
}

func selectorOf(st *calc.State, id string) string {
	if s := st.IPSets[id]; s != nil && s.Selector != "" {
		return "selector " + s.Selector
	}
	return "IP set " + id
}

func portNameOf(st *calc.State, id string) string {
	if s := st.IPSets[id]; s != nil && s.PortName != "" {
		return fmt.Sprintf("%q (%s) of %s", s.PortName, ProtocolName(s.Protocol), s.Selector)
	}
	return id
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func ranges(rs []calc.PortRange) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = strconv.Itoa(int(r.First))
		if r.Last != r.First {
			s[i] += ":" + strconv.Itoa(int(r.Last))
		}
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func family(v4 bool) int {
	if v4 {
		return 4
	}
	return 6
}

func isICMP(p uint8) bool { return p == calc.ProtoICMP || p == calc.ProtoICMPv6 }

// ProtocolName is the protocol as Calico's resources name it ("TCP",
// "ICMPv6"), or its number.
func ProtocolName(p uint8) string {
	switch p {
	case calc.ProtoTCP:
		return "TCP"
	case calc.ProtoUDP:
		return "UDP"
	case calc.ProtoICMP:
		return "ICMP"
	case calc.ProtoICMPv6:
		return "ICMPv6"
	case calc.ProtoSCTP:
		return "SCTP"
	case calc.ProtoUDPLite:
		return "UDPLite"
	}
	return strconv.Itoa(int(p))
}

// ParseProtocol reads a protocol name (any case) or number.
func ParseProtocol(s string) (uint8, error) {
	if n, err := strconv.ParseUint(s, 10, 8); err == nil && n > 0 {
		return uint8(n), nil
	}
	for p := 1; p < 256; p++ {
		if strings.EqualFold(ProtocolName(uint8(p)), s) {
			return uint8(p), nil
		}
	}
	return 0, fmt.Errorf("protocol %q: want TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255", s)
}
