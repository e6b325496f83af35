package nft

import (
	"testing"

	"github.com/tortie/tortie/pkg/calc"
)

// withoutPolicy is ep with one policy taken out of its tiers (a tier left
// empty goes, as the calc graph leaves it out).
func withoutPolicy(ep *calc.Endpoint, id calc.PolicyID) *calc.Endpoint {
	cp := *ep
	strip := func(ts []calc.TierPolicies) []calc.TierPolicies {
		var out []calc.TierPolicies
		for _, t := range ts {
			var ps []calc.PolicyID
			for _, p := range t.Policies {
				if p != id {
					ps = append(ps, p)
				}
			}
			if len(ps) > 0 {
				t.Policies = ps
				out = append(out, t)
			}
		}
		return out
	}
	cp.Ingress, cp.Egress = strip(ep.Ingress), strip(ep.Egress)
	return &cp
}

// TestPolicyDeletedAndRecreated: a policy deleted and created again under
// the same name with other rules ends as a full render of the new state,
// whether the re-creation comes in the next Apply or after the deferred
// deletions ran. The fake does not check references between objects; the
// kernel's side of this (a deleted chain still referenced by a program
// that came back under the same name) is e2e's TestPolicyRecreatedSameName.
func TestPolicyDeletedAndRecreated(t *testing.T) {
	for _, settle := range []int{0, 1, 2} {
		s := featureScenario()
		var web *calc.Policy
		for _, p := range s.state.Policies {
			if p.ID.Name == "web" {
				web = p
			}
		}
		if web == nil {
			t.Fatal("no policy web in the scenario")
		}
		f := newFake()
		d := New(f, Config{Pools: s.pools})
		apply := func(c *calc.Changes) {
			t.Helper()
			c.InSync = true
			if err := d.Apply(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
		apply(changesOf(s.state))
		// Delete web: the endpoints that had it lose it.
		del := &calc.Changes{PolicyRemoves: []calc.PolicyID{web.ID}}
		var users []*calc.Endpoint
		for _, ep := range s.state.Endpoints {
			if stripped := withoutPolicy(ep, web.ID); len(stripped.Ingress) != len(ep.Ingress) || len(stripped.Egress) != len(ep.Egress) || hasPolicy(ep, web.ID) {
				users = append(users, ep)
				del.EndpointUpdates = append(del.EndpointUpdates, stripped)
			}
		}
		if len(users) == 0 {
			t.Fatal("no endpoint uses web")
		}
		apply(del)
		for range settle {
			apply(&calc.Changes{})
		}
		// Create it again, same name, other rules.
		v2 := gpol("web", web.Tier, []calc.Rule{rule("default web I0 v2", calc.Deny, nil)}, nil)
		s.state.Policies[web.ID] = v2
		apply(&calc.Changes{PolicyUpdates: []*calc.Policy{v2}, EndpointUpdates: users})
		apply(&calc.Changes{})
		full, _ := render(t, s)
		if got, want := sortedDump(f), sortedDump(full); got != want {
			t.Errorf("settle %d: after delete and re-create the ruleset differs from a full render:\n--- incremental\n%s\n--- full\n%s", settle, got, want)
		}
	}
}

func hasPolicy(ep *calc.Endpoint, id calc.PolicyID) bool {
	for _, ts := range [][]calc.TierPolicies{ep.Ingress, ep.Egress} {
		for _, t := range ts {
			for _, p := range t.Policies {
				if p == id {
					return true
				}
			}
		}
	}
	return false
}
