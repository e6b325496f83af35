package calc

import (
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

	labels *labelSets // the items' label maps, shared

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
		labels:         newLabelSets(),
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
