package calc

import (
	"cmp"
	"net/netip"
	"slices"
)

// This file is the contract between the calculation graph and the dataplane
// drivers. Everything a driver needs to render the policy of this host is
// here, already resolved: no selector is left to evaluate, no v3 type to
// read, no name to look up. The graph owns every value it hands out and never
// changes one after handing it out, so a driver may keep them.

// Action is what a rule (or a tier's end) does with a packet.
type Action string

const (
	// Allow accepts the packet: no later rule, policy or tier is consulted.
	Allow Action = "Allow"
	// Deny drops the packet.
	Deny Action = "Deny"
	// Pass skips the rest of the current tier and continues with the next
	// tier (or, after the last tier, with the profiles).
	Pass Action = "Pass"
	// Log logs the packet (see Rule.LogPrefix) and continues with the next
	// rule.
	Log Action = "Log"
)

// Direction is the side of an endpoint a rule list filters.
type Direction string

const (
	// Ingress is traffic towards the endpoint.
	Ingress Direction = "Ingress"
	// Egress is traffic from the endpoint.
	Egress Direction = "Egress"
)

// IP protocol numbers the model uses.
const (
	ProtoICMP    uint8 = 1
	ProtoTCP     uint8 = 6
	ProtoUDP     uint8 = 17
	ProtoICMPv6  uint8 = 58
	ProtoSCTP    uint8 = 132
	ProtoUDPLite uint8 = 136
)

// HasPorts reports whether packets of protocol p carry source and
// destination ports: the only protocols a port condition can match.
func HasPorts(p uint8) bool {
	switch p {
	case ProtoTCP, ProtoUDP, ProtoSCTP, ProtoUDPLite:
		return true
	}
	return false
}

// ---- IP sets ----

// IPSetKind says what an IP set's members are.
type IPSetKind uint8

const (
	// AddressSet members are prefixes (Member.Port is zero): the addresses
	// of every endpoint and network set its selector matches.
	AddressSet IPSetKind = iota + 1
	// NamedPortSet members are (address, protocol, port): for every
	// workload or host endpoint its selector matches that defines a port
	// with the set's name and protocol, each address of the endpoint
	// combined with that port number.
	NamedPortSet
)

// IPSet is a set that rules match against: rules name sets by ID. The
// members are not here; they come as Members in State and as deltas in
// Changes, because they are the only part of the model that is large.
type IPSet struct {
	// ID is stable across processes and restarts: for an address set it is
	// the selector's UniqueID ("s:..."), for a named-port set "n:" plus a
	// hash of selector, protocol and port name. Use it to name kernel sets.
	ID   string
	Kind IPSetKind
	// Selector is the canonical effective selector (with namespace scoping
	// folded in); for comments and debugging only.
	Selector string
	// Protocol and PortName are set for a NamedPortSet.
	Protocol uint8
	PortName string
}

// Member is one element of an IP set. Prefixes of both IP families share a
// set; a driver whose kernel sets are single-family splits by
// Prefix.Addr().Is4().
type Member struct {
	// Prefix is an endpoint address (a /32 or /128) or a network set's
	// CIDR (masked).
	Prefix netip.Prefix
	// Protocol and Port are zero in an AddressSet.
	Protocol uint8
	Port     uint16
}

// ---- policies and profiles ----

// PolicyID names a policy. Kind is v3.KindNetworkPolicy (with Namespace) or
// v3.KindGlobalNetworkPolicy; staged kinds never appear.
type PolicyID struct {
	Kind      string
	Namespace string
	Name      string
}

// String is "ns/name" for a namespaced policy and "name" for a global one;
// it is also the key policies are ordered by when their orders tie.
func (id PolicyID) String() string {
	if id.Namespace != "" {
		return id.Namespace + "/" + id.Name
	}
	return id.Name
}

// Policy is one policy's resolved rules. Which endpoints it applies to, and
// in which position, is in each Endpoint.
type Policy struct {
	ID   PolicyID
	Tier string
	// Ingress and Egress are the rule lists of the directions in the
	// policy's (defaulted) types; a direction not in its types is empty
	// even if the resource lists rules for it.
	Ingress []Rule
	Egress  []Rule
	// Host endpoint options of a GlobalNetworkPolicy. A policy with PreDNAT
	// or DoNotTrack is listed only in HostEndpoint.PreDNAT / Untracked.
	ApplyOnForward bool
	PreDNAT        bool
	DoNotTrack     bool
}

// Profile is a profile's resolved rules, evaluated after every tier.
type Profile struct {
	Name    string
	Ingress []Rule
	Egress  []Rule
}

// Rule is one resolved rule: every present criterion must hold for the
// action to be taken.
type Rule struct {
	// ID is stable for the same rule content at the same place in the same
	// policy or profile; drivers can use it to name or comment kernel rules.
	ID string
	// LogPrefix names tier, policy (or profile) and rule, e.g.
	// "default ns/web I0" or "profile kns.ns E2"; it fits an NFLOG prefix.
	LogPrefix string
	Action    Action
	// IPVersion is 4, 6, or 0 for both.
	IPVersion uint8
	// Protocol and NotProtocol are IP protocol numbers, 0 when not set.
	Protocol    uint8
	NotProtocol uint8
	// ICMP and NotICMP are set when the rule names an ICMP type.
	ICMP    *ICMPMatch
	NotICMP *ICMPMatch
	Src     EntityMatch
	Dst     EntityMatch
	// Annotations are the rule's metadata annotations, if any.
	Annotations map[string]string
}

// ICMPMatch matches an ICMP (or ICMPv6, per the rule's protocol) type and,
// when HasCode, code.
type ICMPMatch struct {
	Type    uint8
	Code    uint8
	HasCode bool
}

// PortRange is an inclusive range of port numbers; a single port has
// First == Last.
type PortRange struct {
	First, Last uint16
}

// EntityMatch is the source or destination half of a rule.
//
// The address matches when it is in one of Nets (if any), in none of
// NotNets, in IPSet (if set) and not in NotIPSet (if set). The port matches
// when Ports and NamedPortSets are both empty, or the port is in one of
// Ports, or (address, protocol, port) is in one of NamedPortSets; and the
// port is in none of NotPorts and (address, protocol, port) in none of
// NotNamedPortSets.
type EntityMatch struct {
	Nets    []netip.Prefix
	NotNets []netip.Prefix
	// IPSet is the ID of the AddressSet of the rule's selector (with
	// namespace, namespaceSelector and serviceAccounts folded in), or "".
	IPSet string
	// NotIPSet is the ID of the AddressSet of the rule's notSelector, or "".
	NotIPSet         string
	Ports            []PortRange
	NotPorts         []PortRange
	NamedPortSets    []string
	NotNamedPortSets []string
}

// ---- endpoints ----

// EndpointID names a WorkloadEndpoint (Kind v3.KindWorkloadEndpoint, with
// Namespace) or a HostEndpoint (v3.KindHostEndpoint) of this host.
type EndpointID struct {
	Kind      string
	Namespace string
	Name      string
}

func (id EndpointID) String() string {
	if id.Namespace != "" {
		return id.Kind + ":" + id.Namespace + "/" + id.Name
	}
	return id.Kind + ":" + id.Name
}

// TierPolicies is one tier's part of an endpoint's policy for one direction:
// the policies in evaluation order, then DefaultAction if none of them
// decided.
type TierPolicies struct {
	Name          string
	DefaultAction Action
	Policies      []PolicyID
}

// ProfileRef is one of an endpoint's profiles. Missing means the profile
// does not exist: the driver must drop the endpoint's traffic (fail closed)
// when evaluation reaches it.
type ProfileRef struct {
	Name    string
	Missing bool
}

// Endpoint is a workload or host endpoint of this host and the policy that
// applies to it. For each direction: walk the tiers in order; in a tier, the
// policies in order, each policy's rules in order; the first Allow, Deny or
// Pass decides (Pass: go to the next tier); a tier in which nothing decided
// ends with its DefaultAction. After the tiers come the profiles, in order
// (the first Allow or Deny decides); if nothing allowed, drop.
type Endpoint struct {
	ID EndpointID
	// InterfaceName is the host-side interface ("cali..." for a workload;
	// for a host endpoint an interface, "*" for all, or "" when it is to be
	// found by Addresses).
	InterfaceName string
	// Addresses are a workload's ipNetworks or a host endpoint's
	// expectedIPs, as single-address prefixes, sorted.
	Addresses []netip.Prefix
	Ingress   []TierPolicies
	Egress    []TierPolicies
	Profiles  []ProfileRef
	// Host is set for host endpoints only.
	Host *HostPolicies
}

// HostPolicies are the extra lists of a host endpoint: policies with
// applyOnForward (also listed in Endpoint.Ingress/Egress) for forwarded
// traffic; preDNAT policies (ingress only, before DNAT); doNotTrack
// policies (before connection tracking). Profiles do not apply to these.
type HostPolicies struct {
	ForwardIngress   []TierPolicies
	ForwardEgress    []TierPolicies
	PreDNATIngress   []TierPolicies
	UntrackedIngress []TierPolicies
	UntrackedEgress  []TierPolicies
}

// ---- whole state and changes ----

// State is the complete desired state: only what this host's endpoints
// need (every local endpoint; the policies selecting at least one of them;
// the profiles they list that exist; the IP sets the rules of those
// policies and profiles use).
type State struct {
	InSync    bool
	IPSets    map[string]*IPSet
	Members   map[string]map[Member]struct{}
	Policies  map[PolicyID]*Policy
	Profiles  map[string]*Profile
	Endpoints map[EndpointID]*Endpoint
}

// NewState returns an empty State.
func NewState() *State {
	return &State{
		IPSets:    map[string]*IPSet{},
		Members:   map[string]map[Member]struct{}{},
		Policies:  map[PolicyID]*Policy{},
		Profiles:  map[string]*Profile{},
		Endpoints: map[EndpointID]*Endpoint{},
	}
}

// IPSetUpdate creates a set, or replaces one the driver already has, with
// exactly Members.
type IPSetUpdate struct {
	Set     *IPSet
	Members []Member
}

// MemberDelta changes the members of a set the driver already has.
type MemberDelta struct {
	SetID   string
	Added   []Member
	Removed []Member
}

// Changes is what changed since the previous Flush. Applied in this order
// (as Calico's agent does): IPSetUpdates and MemberDeltas, then
// PolicyUpdates and ProfileUpdates, then EndpointUpdates; then the removals
// in reverse: EndpointRemoves, ProfileRemoves and PolicyRemoves,
// IPSetRemoves. That way nothing references an object that is not there
// yet or any more. Every list is sorted.
type Changes struct {
	// InSync is true once the graph has been told the first snapshot is
	// complete (and stays true). A driver programs nothing before.
	InSync bool

	IPSetUpdates []IPSetUpdate
	MemberDeltas []MemberDelta
	IPSetRemoves []string

	PolicyUpdates []*Policy
	PolicyRemoves []PolicyID

	ProfileUpdates []*Profile
	ProfileRemoves []string

	EndpointUpdates []*Endpoint
	EndpointRemoves []EndpointID
}

// Empty reports whether c changes nothing.
func (c *Changes) Empty() bool {
	return len(c.IPSetUpdates) == 0 && len(c.MemberDeltas) == 0 && len(c.IPSetRemoves) == 0 &&
		len(c.PolicyUpdates) == 0 && len(c.PolicyRemoves) == 0 &&
		len(c.ProfileUpdates) == 0 && len(c.ProfileRemoves) == 0 &&
		len(c.EndpointUpdates) == 0 && len(c.EndpointRemoves) == 0
}

// Apply brings s up to date with c, as a driver brings the kernel. It is how
// a driver can keep a mirror of what it programmed, and how the tests check
// that the deltas add up to the state.
func (s *State) Apply(c *Changes) {
	s.InSync = c.InSync
	for _, u := range c.IPSetUpdates {
		s.IPSets[u.Set.ID] = u.Set
		m := make(map[Member]struct{}, len(u.Members))
		for _, x := range u.Members {
			m[x] = struct{}{}
		}
		s.Members[u.Set.ID] = m
	}
	for _, d := range c.MemberDeltas {
		m := s.Members[d.SetID]
		for _, x := range d.Removed {
			delete(m, x)
		}
		for _, x := range d.Added {
			m[x] = struct{}{}
		}
	}
	for _, p := range c.PolicyUpdates {
		s.Policies[p.ID] = p
	}
	for _, p := range c.ProfileUpdates {
		s.Profiles[p.Name] = p
	}
	for _, e := range c.EndpointUpdates {
		s.Endpoints[e.ID] = e
	}
	for _, id := range c.EndpointRemoves {
		delete(s.Endpoints, id)
	}
	for _, n := range c.ProfileRemoves {
		delete(s.Profiles, n)
	}
	for _, id := range c.PolicyRemoves {
		delete(s.Policies, id)
	}
	for _, id := range c.IPSetRemoves {
		delete(s.IPSets, id)
		delete(s.Members, id)
	}
}

// CompareMembers orders members by prefix, then protocol, then port.
func CompareMembers(a, b Member) int {
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Protocol, b.Protocol); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

// ComparePolicyIDs orders policy IDs by kind, namespace and name.
func ComparePolicyIDs(a, b PolicyID) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// CompareEndpointIDs orders endpoint IDs by kind, namespace and name.
func CompareEndpointIDs(a, b EndpointID) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

func sortedMembers(m map[Member]struct{}) []Member {
	out := make([]Member, 0, len(m))
	for x := range m {
		out = append(out, x)
	}
	slices.SortFunc(out, CompareMembers)
	return out
}
