package calc

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// Config is what the graph needs to know about its host.
type Config struct {
	// NodeName is this host's Node name: the endpoints whose spec.node is
	// NodeName are the ones this host enforces policy for.
	NodeName string
}

// Update is one resource created, changed (Resource set) or deleted
// (Resource nil). Kinds the graph does not use are ignored.
type Update struct {
	Kind      string
	Namespace string
	Name      string
	Resource  v3.Resource
}

// Index slots of item.matches.
const (
	setSlot    = 0
	policySlot = 1
)

type itemKind uint8

const (
	kindWorkload itemKind = iota
	kindHost
	kindNetSet
	kindGlobalNetSet
)

type itemKey struct {
	kind     itemKind
	ns, name string
}

// namedPort is a port of an endpoint that rules can name.
type namedPort struct {
	name  string
	proto uint8
	port  uint16
}

// item is anything labelled that selectors match: a workload or host
// endpoint (anywhere in the cluster) or a network set.
type item struct {
	key     itemKey
	own     map[string]string // own labels, plus the implicit ones
	parents []string          // profiles it inherits labels from
	labels  map[string]string // effective: own, then parents in order
	addrs   []netip.Prefix
	ports   []namedPort
	local   bool // an endpoint of this host
	iface   string
	matches [2]selSet
}

func (it *item) endpointID() EndpointID {
	if it.key.kind == kindHost {
		return EndpointID{Kind: v3.KindHostEndpoint, Name: it.key.name}
	}
	return EndpointID{Kind: v3.KindWorkloadEndpoint, Namespace: it.key.ns, Name: it.key.name}
}

type profileState struct {
	name      string
	exists    bool
	labels    map[string]string
	model     *Profile
	refs      map[string]setRef
	items     itemSet // everything listing it, for label inheritance
	localRefs int     // local endpoints listing it (once per listing)
	active    bool
}

type tierState struct {
	name     string
	exists   bool
	order    *float64
	action   Action
	policies map[*policyState]struct{}
}

type policyState struct {
	id             PolicyID
	sortName       string
	tier           string
	order          *float64
	ingress        bool
	egress         bool
	applyOnForward bool
	preDNAT        bool
	doNotTrack     bool
	entry          *selEntry
	model          *Policy
	refs           map[string]setRef
	active         bool
}

type ipsetState struct {
	set     *IPSet
	entry   *selEntry
	refs    int
	members map[Member]int
	// fresh sets (created since the last Flush) are sent whole; the others
	// as the net member changes in pending (+1 added, -1 removed).
	fresh   bool
	pending map[Member]int8
}

// Graph is the calculation graph. It is not safe for concurrent use: one
// goroutine feeds it and flushes it.
type Graph struct {
	cfg    Config
	inSync bool

	items    map[itemKey]*item
	profiles map[string]*profileState
	tiers    map[string]*tierState
	policies map[PolicyID]*policyState
	ipsets   map[string]*ipsetState

	setIdx *index // every labelled thing, against IP set selectors
	polIdx *index // local endpoints, against policy selectors

	dirtySets      map[string]struct{}
	dirtyPolicies  map[PolicyID]struct{}
	dirtyProfiles  map[string]struct{}
	dirtyEndpoints map[EndpointID]*item

	sentSets      map[string]struct{}
	sentPolicies  map[PolicyID]*Policy
	sentProfiles  map[string]*Profile
	sentEndpoints map[EndpointID]*Endpoint
}

// New returns an empty graph.
func New(cfg Config) *Graph {
	g := &Graph{
		cfg:            cfg,
		items:          map[itemKey]*item{},
		profiles:       map[string]*profileState{},
		tiers:          map[string]*tierState{},
		policies:       map[PolicyID]*policyState{},
		ipsets:         map[string]*ipsetState{},
		dirtySets:      map[string]struct{}{},
		dirtyPolicies:  map[PolicyID]struct{}{},
		dirtyProfiles:  map[string]struct{}{},
		dirtyEndpoints: map[EndpointID]*item{},
		sentSets:       map[string]struct{}{},
		sentPolicies:   map[PolicyID]*Policy{},
		sentProfiles:   map[string]*Profile{},
		sentEndpoints:  map[EndpointID]*Endpoint{},
	}
	g.setIdx = newIndex(setSlot, g.onSetMatch)
	g.polIdx = newIndex(policySlot, g.onPolicyMatch)
	return g
}

// OnInSync records that the first complete snapshot has been fed in; until
// then Flush hands out nothing.
func (g *Graph) OnInSync() { g.inSync = true }

// OnUpdate applies one update. Its cost is proportional to what the update
// affects, not to the size of the cluster.
func (g *Graph) OnUpdate(u Update) {
	switch u.Kind {
	case v3.KindWorkloadEndpoint, v3.KindHostEndpoint, v3.KindNetworkSet, v3.KindGlobalNetworkSet:
		g.updateItem(u)
	case v3.KindProfile:
		var p *v3.Profile
		if u.Resource != nil {
			p, _ = u.Resource.(*v3.Profile)
		}
		g.updateProfile(u.Name, p)
	case v3.KindTier:
		var t *v3.Tier
		if u.Resource != nil {
			t, _ = u.Resource.(*v3.Tier)
		}
		g.updateTier(u.Name, t)
	case v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy:
		g.updatePolicy(u)
	}
	// Staged policies are never enforced, and the other kinds are not
	// policy: nothing to do.
}

// ---- labelled items ----

func (g *Graph) updateItem(u Update) {
	var key itemKey
	switch u.Kind {
	case v3.KindWorkloadEndpoint:
		key = itemKey{kindWorkload, u.Namespace, u.Name}
	case v3.KindHostEndpoint:
		key = itemKey{kind: kindHost, name: u.Name}
	case v3.KindNetworkSet:
		key = itemKey{kindNetSet, u.Namespace, u.Name}
	case v3.KindGlobalNetworkSet:
		key = itemKey{kind: kindGlobalNetSet, name: u.Name}
	}
	next := g.buildItem(key, u.Resource)
	old := g.items[key]
	switch {
	case old == nil && next == nil:
	case old == nil:
		g.addItem(next)
	case next == nil:
		g.removeItem(old)
	default:
		g.changeItem(old, next)
	}
}

// buildItem extracts what the graph uses from a resource, or nil for a
// delete (or a resource of the wrong type).
func (g *Graph) buildItem(key itemKey, r v3.Resource) *item {
	if r == nil {
		return nil
	}
	it := &item{key: key}
	own := map[string]string{}
	switch res := r.(type) {
	case *v3.WorkloadEndpoint:
		if key.kind != kindWorkload {
			return nil
		}
		maps.Copy(own, res.Labels)
		if sa := res.Spec.ServiceAccountName; sa != "" {
			if _, ok := own[LabelServiceAccount]; !ok {
				own[LabelServiceAccount] = sa
			}
		}
		own[LabelNamespace] = key.ns
		it.parents = slices.Clone(res.Spec.Profiles)
		it.addrs = parseAddrs(res.Spec.IPNetworks)
		for _, p := range res.Spec.Ports {
			if p.Name != "" {
				it.ports = append(it.ports, namedPort{p.Name, protoNum(&p.Protocol), p.Port})
			}
		}
		it.local = res.Spec.Node == g.cfg.NodeName
		it.iface = res.Spec.InterfaceName
	case *v3.HostEndpoint:
		if key.kind != kindHost {
			return nil
		}
		maps.Copy(own, res.Labels)
		it.parents = slices.Clone(res.Spec.Profiles)
		it.addrs = parseAddrs(res.Spec.ExpectedIPs)
		for _, p := range res.Spec.Ports {
			it.ports = append(it.ports, namedPort{p.Name, protoNum(&p.Protocol), p.Port})
		}
		it.local = res.Spec.Node == g.cfg.NodeName
		it.iface = res.Spec.InterfaceName
	case *v3.NetworkSet:
		if key.kind != kindNetSet {
			return nil
		}
		maps.Copy(own, res.Labels)
		own[LabelNamespace] = key.ns
		// As in Calico, a network set inherits its namespace's labels, so
		// namespaceSelectors reach it.
		it.parents = []string{NamespaceProfilePrefix + key.ns}
		it.addrs = parseAddrs(res.Spec.Nets)
	case *v3.GlobalNetworkSet:
		if key.kind != kindGlobalNetSet {
			return nil
		}
		maps.Copy(own, res.Labels)
		it.addrs = parseAddrs(res.Spec.Nets)
	default:
		return nil
	}
	it.own = own
	return it
}

// parseAddrs parses, masks, sorts and de-duplicates addresses and CIDRs.
func parseAddrs(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, ok := parsePrefix(s); ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	return CompareMembers(Member{Prefix: a}, Member{Prefix: b})
}

// effectiveLabels are the item's own labels plus those of its profiles; own
// labels win, and an earlier profile wins over a later one.
func (g *Graph) effectiveLabels(it *item) map[string]string {
	var out map[string]string
	for _, name := range it.parents {
		p := g.profiles[name]
		if p == nil || len(p.labels) == 0 {
			continue
		}
		if out == nil {
			out = maps.Clone(it.own)
		}
		for k, v := range p.labels {
			if _, ok := out[k]; !ok {
				out[k] = v
			}
		}
	}
	if out == nil {
		return it.own
	}
	return out
}

func (g *Graph) profile(name string) *profileState {
	p := g.profiles[name]
	if p == nil {
		p = &profileState{name: name, items: itemSet{}}
		g.profiles[name] = p
	}
	return p
}

// linkParents records it as a user of its profiles.
func (g *Graph) linkParents(it *item) {
	for _, name := range it.parents {
		p := g.profile(name)
		p.items[it] = struct{}{}
		if it.local {
			p.localRefs++
			g.syncProfile(p)
		}
	}
}

func (g *Graph) unlinkParents(it *item) {
	for _, name := range it.parents {
		p := g.profiles[name]
		if p == nil {
			continue
		}
		delete(p.items, it)
		if it.local {
			p.localRefs--
			g.syncProfile(p)
		}
		g.gcProfile(p)
	}
}

func (g *Graph) gcProfile(p *profileState) {
	if !p.exists && len(p.items) == 0 && p.localRefs == 0 {
		delete(g.profiles, p.name)
	}
}

func (g *Graph) addItem(it *item) {
	g.items[it.key] = it
	g.linkParents(it)
	it.labels = g.effectiveLabels(it)
	g.setIdx.add(it)
	if it.local {
		g.polIdx.add(it)
		g.dirtyEndpoint(it)
	}
}

func (g *Graph) removeItem(it *item) {
	if it.local {
		g.polIdx.remove(it)
		g.dirtyEndpoint(it)
	}
	g.setIdx.remove(it)
	g.unlinkParents(it)
	delete(g.items, it.key)
}

// changeItem brings it (the item in the graph) to the content of next.
func (g *Graph) changeItem(it, next *item) {
	oldLocal := it.local
	if !slices.Equal(it.parents, next.parents) || oldLocal != next.local {
		// Link the new parents before unlinking the old, so a profile
		// listed by both never looks unused in between.
		oldParents := it.parents
		for _, name := range next.parents {
			p := g.profile(name)
			p.items[it] = struct{}{}
			if next.local {
				p.localRefs++
				g.syncProfile(p)
			}
		}
		for _, name := range oldParents {
			p := g.profiles[name]
			if p == nil {
				continue // listed twice, and forgotten after the first
			}
			if !slices.Contains(next.parents, name) {
				delete(p.items, it)
			}
			if oldLocal {
				p.localRefs--
				g.syncProfile(p)
			}
			g.gcProfile(p)
		}
		it.parents = next.parents
	}
	if oldLocal && !next.local {
		g.polIdx.remove(it)
		g.dirtyEndpoint(it)
	}
	it.local = next.local

	if !slices.Equal(it.addrs, next.addrs) || !slices.Equal(it.ports, next.ports) {
		for e := range it.matches[setSlot] {
			for st := range e.sets {
				g.contribute(st, it, -1)
			}
		}
		it.addrs, it.ports = next.addrs, next.ports
		for e := range it.matches[setSlot] {
			for st := range e.sets {
				g.contribute(st, it, +1)
			}
		}
	}
	it.iface = next.iface
	it.own = next.own
	oldLabels := it.labels
	it.labels = g.effectiveLabels(it)
	labelsChanged := !maps.Equal(oldLabels, it.labels)
	if labelsChanged {
		g.setIdx.relabel(it, oldLabels)
	}
	switch {
	case oldLocal && next.local:
		if labelsChanged {
			g.polIdx.relabel(it, oldLabels)
		}
		g.dirtyEndpoint(it)
	case !oldLocal && next.local:
		g.polIdx.add(it)
		g.dirtyEndpoint(it)
	}
}

// relabelInheritors recomputes the labels of everything listing p.
func (g *Graph) relabelInheritors(p *profileState) {
	for it := range p.items {
		old := it.labels
		it.labels = g.effectiveLabels(it)
		if maps.Equal(old, it.labels) {
			continue
		}
		g.setIdx.relabel(it, old)
		if it.local {
			g.polIdx.relabel(it, old)
		}
	}
}

func (g *Graph) dirtyEndpoint(it *item) {
	g.dirtyEndpoints[it.endpointID()] = it
}

// ---- profiles ----

func (g *Graph) updateProfile(name string, r *v3.Profile) {
	p := g.profile(name)
	wasExisting := p.exists
	oldLabels := p.labels
	oldRefs := p.refs
	wasActive := p.active
	if r == nil {
		p.exists, p.labels, p.model, p.refs = false, nil, nil, nil
	} else {
		rv := newResolver()
		o := ruleOwner{name: name}
		p.exists = true
		p.labels = maps.Clone(r.Spec.LabelsToApply)
		p.model = &Profile{
			Name:    name,
			Ingress: rv.rules(o, Ingress, r.Spec.Ingress),
			Egress:  rv.rules(o, Egress, r.Spec.Egress),
		}
		p.refs = rv.refs
	}
	p.active = p.exists && p.localRefs > 0
	g.swapRefs(wasActive, oldRefs, p.active, p.refs)
	g.dirtyProfiles[name] = struct{}{}
	if wasExisting != p.exists {
		// The Missing mark of the endpoints listing it changes.
		for it := range p.items {
			if it.local {
				g.dirtyEndpoint(it)
			}
		}
	}
	if !maps.Equal(oldLabels, p.labels) {
		g.relabelInheritors(p)
	}
	g.gcProfile(p)
}

// syncProfile activates or deactivates p after its local use changed.
func (g *Graph) syncProfile(p *profileState) {
	active := p.exists && p.localRefs > 0
	if active == p.active {
		return
	}
	g.swapRefs(p.active, p.refs, active, p.refs)
	p.active = active
	g.dirtyProfiles[p.name] = struct{}{}
}

// swapRefs moves the IP set references of a policy or profile from (its old
// activity, old refs) to (new activity, new refs), acquiring before
// releasing so that a set used by both is never dropped in between.
func (g *Graph) swapRefs(wasActive bool, old map[string]setRef, active bool, next map[string]setRef) {
	if active {
		for _, r := range next {
			g.acquireSet(r)
		}
	}
	if wasActive {
		for _, r := range old {
			g.releaseSet(r.id)
		}
	}
}

// ---- tiers ----

func (g *Graph) tier(name string) *tierState {
	t := g.tiers[name]
	if t == nil {
		t = &tierState{name: name, policies: map[*policyState]struct{}{}}
		t.setDefaults()
		g.tiers[name] = t
	}
	return t
}

// setDefaults gives a tier that does not exist (yet) Calico's defaults, the
// default tier its fixed order.
func (t *tierState) setDefaults() {
	t.exists, t.order, t.action = false, nil, Deny
	if t.name == v3.DefaultTierName {
		o := v3.DefaultTierOrder
		t.order = &o
	}
}

func (g *Graph) updateTier(name string, r *v3.Tier) {
	t := g.tier(name)
	if r == nil {
		t.setDefaults()
	} else {
		t.exists = true
		t.order = r.Spec.Order
		t.action = Deny
		if a := r.Spec.DefaultAction; a != nil && *a == v3.Pass {
			t.action = Pass
		}
	}
	for p := range t.policies {
		g.dirtyPolicyEndpoints(p.entry)
	}
	if !t.exists && len(t.policies) == 0 {
		delete(g.tiers, name)
	}
}

// ---- policies ----

func (g *Graph) updatePolicy(u Update) {
	id := PolicyID{Kind: u.Kind, Name: u.Name}
	if u.Kind == v3.KindNetworkPolicy {
		id.Namespace = u.Namespace
	}
	old := g.policies[id]
	next := g.buildPolicy(id, u.Resource)
	if old == nil && next == nil {
		return
	}
	g.dirtyPolicies[id] = struct{}{}

	var oldRefs map[string]setRef
	wasActive := false
	if old != nil {
		oldRefs, wasActive = old.refs, old.active
		g.dirtyPolicyEndpoints(old.entry)
		delete(old.entry.policies, old)
		if t := g.tiers[old.tier]; t != nil {
			delete(t.policies, old)
			if !t.exists && len(t.policies) == 0 {
				delete(g.tiers, old.tier)
			}
		}
	}
	if next != nil {
		g.policies[id] = next
		g.tier(next.tier).policies[next] = struct{}{}
		next.entry.policies[next] = struct{}{}
		next.active = len(next.entry.matches) > 0
		g.dirtyPolicyEndpoints(next.entry)
		g.swapRefs(wasActive, oldRefs, next.active, next.refs)
	} else {
		delete(g.policies, id)
		g.swapRefs(wasActive, oldRefs, false, nil)
	}
	if old != nil {
		g.polIdx.release(old.entry)
	}
}

// buildPolicy resolves a policy resource; the result holds a reference to
// its selector's entry in the policy index.
func (g *Graph) buildPolicy(id PolicyID, r v3.Resource) *policyState {
	var (
		tier, sel, nsSel, saSel string
		order                   *float64
		types                   []v3.PolicyType
		ingress, egress         []v3.Rule
		p                       = &policyState{id: id, sortName: id.String()}
	)
	switch res := r.(type) {
	case *v3.NetworkPolicy:
		if id.Kind != v3.KindNetworkPolicy {
			return nil
		}
		s := &res.Spec
		tier, order, types, ingress, egress, sel, saSel = s.Tier, s.Order, s.Types, s.Ingress, s.Egress, s.Selector, s.ServiceAccountSelector
	case *v3.GlobalNetworkPolicy:
		if id.Kind != v3.KindGlobalNetworkPolicy {
			return nil
		}
		s := &res.Spec
		tier, order, types, ingress, egress, sel, saSel = s.Tier, s.Order, s.Types, s.Ingress, s.Egress, s.Selector, s.ServiceAccountSelector
		nsSel = s.NamespaceSelector
		p.applyOnForward, p.preDNAT, p.doNotTrack = s.ApplyOnForward, s.PreDNAT, s.DoNotTrack
	default:
		return nil
	}
	if tier == "" {
		tier = v3.DefaultTierName
	}
	p.tier, p.order = tier, order
	p.ingress, p.egress = policyTypes(types, ingress, egress)
	o := ruleOwner{tier: tier, name: id.String(), ns: id.Namespace}
	rv := newResolver()
	p.model = &Policy{
		ID: id, Tier: tier,
		ApplyOnForward: p.applyOnForward, PreDNAT: p.preDNAT, DoNotTrack: p.doNotTrack,
	}
	if p.ingress {
		p.model.Ingress = rv.rules(o, Ingress, ingress)
	}
	if p.egress {
		p.model.Egress = rv.rules(o, Egress, egress)
	}
	p.refs = rv.refs
	p.entry = g.polIdx.acquire(parseOrNever(policySelector(sel, id.Namespace, nsSel, saSel)))
	if p.entry.policies == nil {
		p.entry.policies = map[*policyState]struct{}{}
	}
	return p
}

func (g *Graph) dirtyPolicyEndpoints(e *selEntry) {
	for it := range e.matches {
		g.dirtyEndpoint(it)
	}
}

// onPolicyMatch tracks which policies select local endpoints: a policy
// becomes active with its first local endpoint and brings its IP sets in.
func (g *Graph) onPolicyMatch(e *selEntry, it *item, matched bool) {
	g.dirtyEndpoint(it)
	for p := range e.policies {
		active := len(e.matches) > 0
		if active != p.active {
			g.swapRefs(p.active, p.refs, active, p.refs)
			p.active = active
			g.dirtyPolicies[p.id] = struct{}{}
		}
	}
}

// ---- IP sets ----

func (g *Graph) acquireSet(r setRef) {
	st := g.ipsets[r.id]
	if st != nil {
		st.refs++
		return
	}
	st = &ipsetState{set: r.model(), refs: 1, members: map[Member]int{}, fresh: true}
	g.ipsets[r.id] = st
	g.dirtySets[r.id] = struct{}{}
	st.entry = g.setIdx.acquire(r.sel)
	if st.entry.sets == nil {
		st.entry.sets = map[*ipsetState]struct{}{}
	}
	st.entry.sets[st] = struct{}{}
	for it := range st.entry.matches {
		g.contribute(st, it, +1)
	}
}

func (g *Graph) releaseSet(id string) {
	st := g.ipsets[id]
	st.refs--
	if st.refs > 0 {
		return
	}
	delete(st.entry.sets, st)
	g.setIdx.release(st.entry)
	delete(g.ipsets, id)
	g.dirtySets[id] = struct{}{}
}

func (g *Graph) onSetMatch(e *selEntry, it *item, matched bool) {
	d := -1
	if matched {
		d = +1
	}
	for st := range e.sets {
		g.contribute(st, it, d)
	}
}

// contribute adds (d=+1) or removes (d=-1) the members it gives st.
// Members are counted, because two things can give the same member (an
// endpoint address inside a network set's CIDR list, say).
func (g *Graph) contribute(st *ipsetState, it *item, d int) {
	switch st.set.Kind {
	case AddressSet:
		for _, a := range it.addrs {
			g.count(st, Member{Prefix: a}, d)
		}
	case NamedPortSet:
		for _, p := range it.ports {
			if p.name != st.set.PortName || p.proto != st.set.Protocol {
				continue
			}
			for _, a := range it.addrs {
				g.count(st, Member{Prefix: a, Protocol: p.proto, Port: p.port}, d)
			}
		}
	}
}

func (g *Graph) count(st *ipsetState, m Member, d int) {
	n := st.members[m] + d
	if n > 0 {
		st.members[m] = n
	} else {
		delete(st.members, m)
	}
	if (d > 0 && n != 1) || (d < 0 && n != 0) || st.fresh {
		return
	}
	g.dirtySets[st.set.ID] = struct{}{}
	if st.pending == nil {
		st.pending = map[Member]int8{}
	}
	// An add undoes a pending remove and vice versa.
	if st.pending[m] == -int8(d) {
		delete(st.pending, m)
	} else {
		st.pending[m] = int8(d)
	}
}

// ---- output ----

// renderEndpoint computes the desired state of a local endpoint.
func (g *Graph) renderEndpoint(it *item) *Endpoint {
	ep := &Endpoint{
		ID:            it.endpointID(),
		InterfaceName: it.iface,
		Addresses:     slices.Clone(it.addrs),
	}
	var pols []*policyState
	for e := range it.matches[policySlot] {
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
		if c := compareOrder(ta.order, tb.order); c != 0 {
			return c
		}
		return strings.Compare(a.tier, b.tier)
	}
	if c := compareOrder(a.order, b.order); c != 0 {
		return c
	}
	if c := strings.Compare(a.sortName, b.sortName); c != 0 {
		return c
	}
	return ComparePolicyIDs(a.id, b.id)
}

func compareOrder(a, b *float64) int {
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
