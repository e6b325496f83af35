package calc

import (
	"maps"
	"reflect"
	"slices"
	"strings"
)

// renderEndpoint computes the desired state of a local endpoint.
func (g *Graph) renderEndpoint(it *item) *Endpoint {
	ep := &Endpoint{
		ID:            it.endpointID(),
		InterfaceName: it.iface,
		Addresses:     slices.Clone(it.addrs),
	}
	var pols []*policyState
	for _, e := range it.matches[policySlot] {
		for p := range e.policies {
			pols = append(pols, p)
		}
	}
	slices.SortFunc(pols, g.comparePolicies)
	host := it.key.kind == kindHost
	var hp HostPolicies
	for _, p := range pols {
		t := g.tier(p.tier)
		switch {
		case p.doNotTrack:
			if host {
				hp.UntrackedIngress = appendPolicy(hp.UntrackedIngress, t, p, p.ingress)
				hp.UntrackedEgress = appendPolicy(hp.UntrackedEgress, t, p, p.egress)
			}
		case p.preDNAT:
			if host {
				hp.PreDNATIngress = appendPolicy(hp.PreDNATIngress, t, p, p.ingress)
			}
		default:
			ep.Ingress = appendPolicy(ep.Ingress, t, p, p.ingress)
			ep.Egress = appendPolicy(ep.Egress, t, p, p.egress)
			if host && p.applyOnForward {
				hp.ForwardIngress = appendPolicy(hp.ForwardIngress, t, p, p.ingress)
				hp.ForwardEgress = appendPolicy(hp.ForwardEgress, t, p, p.egress)
			}
		}
	}
	if host {
		ep.Host = &hp
	}
	for _, name := range it.parents {
		p := g.profiles[name]
		ep.Profiles = append(ep.Profiles, ProfileRef{Name: name, Missing: p == nil || !p.exists})
	}
	return ep
}

func appendPolicy(ts []TierPolicies, t *tierState, p *policyState, applies bool) []TierPolicies {
	if !applies {
		return ts
	}
	if n := len(ts); n == 0 || ts[n-1].Name != t.name {
		ts = append(ts, TierPolicies{Name: t.name, DefaultAction: t.action})
	}
	last := &ts[len(ts)-1]
	last.Policies = append(last.Policies, p.id)
	return ts
}

// comparePolicies is evaluation order: tiers by order (unset last) then
// name, then policies by order (unset last) then name.
func (g *Graph) comparePolicies(a, b *policyState) int {
	if a.tier != b.tier {
		ta, tb := g.tier(a.tier), g.tier(b.tier)
		if c := CompareOrder(ta.order, tb.order); c != 0 {
			return c
		}
		return strings.Compare(a.tier, b.tier)
	}
	if c := CompareOrder(a.order, b.order); c != 0 {
		return c
	}
	if c := strings.Compare(a.sortName, b.sortName); c != 0 {
		return c
	}
	return ComparePolicyIDs(a.id, b.id)
}

// CompareOrder orders Calico's optional orders: lower first, unset last.
func CompareOrder(a, b *float64) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	case *a < *b:
		return -1
	case *a > *b:
		return 1
	}
	return 0
}

// State returns the complete desired state. It costs as much as the state
// is big; drivers use it for a full resync, tests to check the deltas.
func (g *Graph) State() *State {
	s := NewState()
	s.InSync = g.inSync
	for id, st := range g.ipsets {
		s.IPSets[id] = st.set
		m := make(map[Member]struct{}, len(st.members))
		for x := range st.members {
			m[x] = struct{}{}
		}
		s.Members[id] = m
	}
	for id, p := range g.policies {
		if p.active {
			s.Policies[id] = p.model
		}
	}
	for name, p := range g.profiles {
		if p.active {
			s.Profiles[name] = p.model
		}
	}
	for it := range g.polIdx.items {
		ep := g.renderEndpoint(it)
		s.Endpoints[ep.ID] = ep
	}
	return s
}

// Flush returns what changed since the previous Flush. Before OnInSync it
// returns empty Changes and keeps everything for the first Flush after.
func (g *Graph) Flush() *Changes {
	c := &Changes{InSync: g.inSync}
	if !g.inSync {
		return c
	}
	for _, id := range sortedKeys(g.dirtySets) {
		st := g.ipsets[id]
		_, sent := g.sentSets[id]
		switch {
		case st == nil:
			if sent {
				c.IPSetRemoves = append(c.IPSetRemoves, id)
				delete(g.sentSets, id)
			}
		case st.fresh || !sent:
			ms := make(map[Member]struct{}, len(st.members))
			for m := range st.members {
				ms[m] = struct{}{}
			}
			c.IPSetUpdates = append(c.IPSetUpdates, IPSetUpdate{Set: st.set, Members: sortedMembers(ms)})
			g.sentSets[id] = struct{}{}
		default:
			d := MemberDelta{SetID: id}
			for m, v := range st.pending {
				if v > 0 {
					d.Added = append(d.Added, m)
				} else {
					d.Removed = append(d.Removed, m)
				}
			}
			slices.SortFunc(d.Added, CompareMembers)
			slices.SortFunc(d.Removed, CompareMembers)
			if len(d.Added)+len(d.Removed) > 0 {
				c.MemberDeltas = append(c.MemberDeltas, d)
			}
		}
		if st != nil {
			st.fresh, st.pending = false, nil
		}
	}
	clear(g.dirtySets)

	pids := slices.Collect(maps.Keys(g.dirtyPolicies))
	slices.SortFunc(pids, ComparePolicyIDs)
	for _, id := range pids {
		var cur *Policy
		if p := g.policies[id]; p != nil && p.active {
			cur = p.model
		}
		prev, sent := g.sentPolicies[id]
		switch {
		case cur == nil && sent:
			c.PolicyRemoves = append(c.PolicyRemoves, id)
			delete(g.sentPolicies, id)
		case cur != nil && (!sent || !equalPolicy(prev, cur)):
			c.PolicyUpdates = append(c.PolicyUpdates, cur)
			g.sentPolicies[id] = cur
		}
	}
	clear(g.dirtyPolicies)

	for _, name := range sortedKeys(g.dirtyProfiles) {
		var cur *Profile
		if p := g.profiles[name]; p != nil && p.active {
			cur = p.model
		}
		prev, sent := g.sentProfiles[name]
		switch {
		case cur == nil && sent:
			c.ProfileRemoves = append(c.ProfileRemoves, name)
			delete(g.sentProfiles, name)
		case cur != nil && (!sent || !equalProfile(prev, cur)):
			c.ProfileUpdates = append(c.ProfileUpdates, cur)
			g.sentProfiles[name] = cur
		}
	}
	clear(g.dirtyProfiles)

	eids := slices.Collect(maps.Keys(g.dirtyEndpoints))
	slices.SortFunc(eids, CompareEndpointIDs)
	for _, id := range eids {
		it := g.dirtyEndpoints[id]
		var cur *Endpoint
		if live := g.items[it.key]; live == it && it.local {
			cur = g.renderEndpoint(it)
		}
		prev, sent := g.sentEndpoints[id]
		switch {
		case cur == nil && sent:
			c.EndpointRemoves = append(c.EndpointRemoves, id)
			delete(g.sentEndpoints, id)
		case cur != nil && (!sent || !equalEndpoint(prev, cur)):
			c.EndpointUpdates = append(c.EndpointUpdates, cur)
			g.sentEndpoints[id] = cur
		}
	}
	clear(g.dirtyEndpoints)
	return c
}

func sortedKeys[V any](m map[string]V) []string {
	out := slices.Collect(maps.Keys(m))
	slices.Sort(out)
	return out
}

func equalPolicy(a, b *Policy) bool     { return a == b || reflect.DeepEqual(a, b) }
func equalProfile(a, b *Profile) bool   { return a == b || reflect.DeepEqual(a, b) }
func equalEndpoint(a, b *Endpoint) bool { return a == b || reflect.DeepEqual(a, b) }
