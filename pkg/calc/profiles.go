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
	g.swapRefs(refUse{wasActive, oldRefs}, refUse{p.active, p.refs})
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
	g.swapRefs(refUse{p.active, p.refs}, refUse{active, p.refs})
	p.active = active
	g.dirtyProfiles[p.name] = struct{}{}
}

// refUse is the IP sets a policy or profile refers to and whether it is
// active (in use on this host), which is when it holds them. The zero
// refUse holds nothing.
type refUse struct {
	active bool
	refs   map[string]setRef
}

// swapRefs moves the IP set references of a policy or profile from its old
// use to its new one, acquiring before releasing so that a set used by both
// is never dropped in between.
func (g *Graph) swapRefs(from, to refUse) {
	if to.active {
		for _, r := range to.refs {
			g.acquireSet(r)
		}
	}
	if from.active {
		for _, r := range from.refs {
			g.releaseSet(r.id)
		}
	}
}
