package calc

import (
	"maps"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

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
