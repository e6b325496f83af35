package nft

import (
	"slices"

	"github.com/tortie/tortie/pkg/calc"
)

// dispatch is one element of a dispatch map: interface → program.
type dispatch struct {
	mapName, iface, prog string
}

// endpointIndex knows, of each endpoint, what it uses and how packets reach
// its programs: the policies and profiles it uses (so that a change to one
// re-renders the endpoints that use it), its dispatch map elements, and the
// host endpoints with interface "*".
type endpointIndex struct {
	// indexed is each endpoint as policyUsers and profileUsers know it.
	indexed      map[calc.EndpointID]*calc.Endpoint
	policyUsers  map[calc.PolicyID]map[calc.EndpointID]struct{}
	profileUsers map[string]map[calc.EndpointID]struct{}
	// dispatch is each endpoint's dispatch map elements.
	dispatch map[calc.EndpointID][]dispatch
	// wildcards are the programs of host endpoints with interface "*", per
	// dispatch map.
	wildcards map[string]map[calc.EndpointID]string
}

func newEndpointIndex() endpointIndex {
	return endpointIndex{
		indexed:      map[calc.EndpointID]*calc.Endpoint{},
		policyUsers:  map[calc.PolicyID]map[calc.EndpointID]struct{}{},
		profileUsers: map[string]map[calc.EndpointID]struct{}{},
		dispatch:     map[calc.EndpointID][]dispatch{},
		wildcards:    map[string]map[calc.EndpointID]string{},
	}
}

// index records which policies and profiles ep uses.
func (x *endpointIndex) index(ep *calc.Endpoint) {
	x.indexed[ep.ID] = ep
	for _, ts := range endpointLists(ep) {
		for _, t := range ts {
			for _, p := range t.Policies {
				addUser(x.policyUsers, p, ep.ID)
			}
		}
	}
	for _, p := range ep.Profiles {
		addUser(x.profileUsers, p.Name, ep.ID)
	}
}

// unindex forgets what endpoint id uses.
func (x *endpointIndex) unindex(id calc.EndpointID) {
	ep := x.indexed[id]
	if ep == nil {
		return
	}
	delete(x.indexed, id)
	for _, ts := range endpointLists(ep) {
		for _, t := range ts {
			for _, p := range t.Policies {
				dropUser(x.policyUsers, p, id)
			}
		}
	}
	for _, p := range ep.Profiles {
		dropUser(x.profileUsers, p.Name, id)
	}
}

func addUser[K comparable](users map[K]map[calc.EndpointID]struct{}, k K, id calc.EndpointID) {
	if users[k] == nil {
		users[k] = map[calc.EndpointID]struct{}{}
	}
	users[k][id] = struct{}{}
}

func dropUser[K comparable](users map[K]map[calc.EndpointID]struct{}, k K, id calc.EndpointID) {
	delete(users[k], id)
	if len(users[k]) == 0 {
		delete(users, k)
	}
}

// endpointLists are all the tier lists of an endpoint.
func endpointLists(ep *calc.Endpoint) [][]calc.TierPolicies {
	out := [][]calc.TierPolicies{ep.Ingress, ep.Egress}
	if h := ep.Host; h != nil {
		out = append(out, h.ForwardIngress, h.ForwardEgress, h.PreDNATIngress, h.UntrackedIngress, h.UntrackedEgress)
	}
	return out
}

func (x *endpointIndex) setDispatch(id calc.EndpointID, els []dispatch) {
	if len(els) > 0 {
		x.dispatch[id] = els
	} else {
		delete(x.dispatch, id)
	}
}

func (x *endpointIndex) setWildcard(mapName string, id calc.EndpointID, prog string) {
	if x.wildcards[mapName] == nil {
		x.wildcards[mapName] = map[calc.EndpointID]string{}
	}
	x.wildcards[mapName][id] = prog
}

func (x *endpointIndex) dropWildcard(mapName string, id calc.EndpointID) {
	delete(x.wildcards[mapName], id)
}

// firstWildcard is the host endpoint with interface "*" of a dispatch map
// that comes first by ID, and its program; ok is false when there is none.
func (x *endpointIndex) firstWildcard(mapName string) (id calc.EndpointID, prog string, ok bool) {
	ws := x.wildcards[mapName]
	if len(ws) == 0 {
		return calc.EndpointID{}, "", false
	}
	ids := make([]calc.EndpointID, 0, len(ws))
	for id := range ws {
		ids = append(ids, id)
	}
	first := slices.MinFunc(ids, calc.CompareEndpointIDs)
	return first, ws[first], true
}

// renderEndpoint brings the endpoint's programs and dispatch map elements
// in want to what it is now (or takes them out, when it went).
func (d *Driver) renderEndpoint(id calc.EndpointID) {
	old := d.eps.dispatch[id]
	d.eps.unindex(id)
	var next []dispatch
	ep := d.endpoints[id]
	if ep != nil {
		next = d.endpointDispatch(ep)
		d.eps.index(ep)
	}
	for _, el := range next {
		d.acquire(el.prog)
	}
	for _, el := range old {
		if el.iface == "*" {
			d.eps.dropWildcard(el.mapName, id)
		} else if !slices.ContainsFunc(next, func(n dispatch) bool { return n.mapName == el.mapName && n.iface == el.iface }) {
			d.delElem(el.mapName, []string{el.iface})
			if el.mapName == MapWorkloadFrom {
				d.delElem(SetWorkloadIfaces, []string{el.iface})
			}
		}
	}
	for _, el := range next {
		if el.iface == "*" {
			d.eps.setWildcard(el.mapName, id, el.prog)
			continue
		}
		d.setElem(el.mapName, []string{el.iface}, []string{"jump " + el.prog})
		if el.mapName == MapWorkloadFrom {
			d.setElem(SetWorkloadIfaces, []string{el.iface}, nil)
		}
	}
	for _, el := range old {
		d.release(el.prog)
	}
	d.eps.setDispatch(id, next)
}

// endpointDispatch compiles the endpoint's programs and says which
// dispatch map elements lead to them.
func (d *Driver) endpointDispatch(ep *calc.Endpoint) []dispatch {
	iface := ep.InterfaceName
	if iface == "" {
		// A host endpoint found only by address is not enforced (yet).
		return nil
	}
	var out []dispatch
	// The special lists of a host endpoint have no profiles.
	add := func(m string, k progKind, ts []calc.TierPolicies, dir calc.Direction, profiles []calc.ProfileRef) {
		p := d.compile(k, ts, dir, profiles)
		out = append(out, dispatch{mapName: m, iface: iface, prog: p})
	}
	if ep.Host == nil {
		egress := kindReturn
		if d.cfg.flowMarked() {
			egress = kindReturnMarked
		}
		add(MapWorkloadFrom, egress, ep.Egress, calc.Egress, ep.Profiles)
		add(MapWorkloadTo, kindReturn, ep.Ingress, calc.Ingress, ep.Profiles)
		return out
	}
	h := ep.Host
	add(MapHostIn, kindAccept, ep.Ingress, calc.Ingress, ep.Profiles)
	add(MapHostOut, kindAccept, ep.Egress, calc.Egress, ep.Profiles)
	if len(h.ForwardIngress) > 0 {
		add(MapHostForwardIn, kindReturn, h.ForwardIngress, calc.Ingress, nil)
	}
	if len(h.ForwardEgress) > 0 {
		add(MapHostForwardOut, kindReturn, h.ForwardEgress, calc.Egress, nil)
	}
	if len(h.PreDNATIngress) > 0 {
		add(MapHostPreDNATIn, kindPreDNAT, h.PreDNATIngress, calc.Ingress, nil)
	}
	if len(h.UntrackedIngress) > 0 {
		add(MapHostUntrackedIn, kindUntracked, h.UntrackedIngress, calc.Ingress, nil)
	}
	if len(h.UntrackedEgress) > 0 {
		add(MapHostUntrackOut, kindUntracked, h.UntrackedEgress, calc.Egress, nil)
	}
	return out
}
