package calc

import (
	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

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
		g.swapRefs(refUse{wasActive, oldRefs}, refUse{next.active, next.refs})
	} else {
		delete(g.policies, id)
		g.swapRefs(refUse{wasActive, oldRefs}, refUse{})
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
func (g *Graph) onPolicyMatch(e *selEntry, it *item, _ matchChange) {
	g.dirtyEndpoint(it)
	for p := range e.policies {
		active := len(e.matches) > 0
		if active != p.active {
			g.swapRefs(refUse{p.active, p.refs}, refUse{active, p.refs})
			p.active = active
			g.dirtyPolicies[p.id] = struct{}{}
		}
	}
}
