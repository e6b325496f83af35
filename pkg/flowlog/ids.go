// Package flowlog is the pure part of tortie's flow logs: the identifiers
// the nftables programs attach to every deciding rule (so a logged packet
// names the tier, policy and rule that decided it), the index that maps
// them back, the parsing of a logged packet's headers, the aggregation of
// packets into flow records per interval, and the filters consumers apply.
// It does no I/O: the NFLOG socket is pkg/dataplane/nflog, the serving is
// pkg/node.
package flowlog

import (
	"hash/fnv"
	"strconv"
	"sync"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/trace"
)

// IDPrefix starts every flow log prefix, which keeps them apart from the
// prefixes of Log rules on the same NFLOG group.
const IDPrefix = "tf:"

// ids are 64-bit FNV-1a hashes of what decided, in hex: short enough for
// any NFLOG prefix, whatever the length of the names.
func id(s string) string {
	h := fnv.New64a()
	h.Write([]byte(s))
	return IDPrefix + strconv.FormatUint(h.Sum64(), 16)
}

// RuleID identifies an Allow or Deny rule of a policy or profile (its
// calc.Rule.LogPrefix names tier, policy or profile, direction and index).
func RuleID(logPrefix string, action calc.Action) string {
	return id("rule|" + logPrefix + "|" + string(action))
}

// TierEndID identifies the default Deny at the end of a tier.
func TierEndID(dir calc.Direction, tier string) string {
	return id("tier-end|" + string(dir) + "|" + tier)
}

// MissingProfileID identifies the Deny of a profile that does not exist.
func MissingProfileID(dir calc.Direction, profile string) string {
	return id("missing-profile|" + string(dir) + "|" + profile)
}

// NothingAllowedID identifies the Deny after every tier and profile.
func NothingAllowedID(dir calc.Direction) string {
	return id("nothing-allowed|" + string(dir))
}

// Ref is what an identifier stands for.
type Ref struct {
	Direction calc.Direction
	// Action is Allow or Deny.
	Action   calc.Action
	Decision trace.Decision
}

// Index maps identifiers back to what they stand for. It is fed the
// policies, profiles and endpoints the driver programs (a policy's
// identifiers are replaced when it changes) and read by the flow
// collector: safe for one writer and many readers.
type Index struct {
	mu       sync.RWMutex
	refs     map[string]Ref
	byPolicy map[calc.PolicyID][]string
	byProf   map[string][]string
}

// NewIndex returns an index that knows the Deny after everything.
func NewIndex() *Index {
	ix := &Index{refs: map[string]Ref{}, byPolicy: map[calc.PolicyID][]string{}, byProf: map[string][]string{}}
	for _, dir := range []calc.Direction{calc.Ingress, calc.Egress} {
		ix.refs[NothingAllowedID(dir)] = Ref{Direction: dir, Action: calc.Deny, Decision: trace.Decision{Kind: "nothing allowed"}}
	}
	return ix
}

// Lookup returns what id stands for.
func (ix *Index) Lookup(id string) (Ref, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	r, ok := ix.refs[id]
	return r, ok
}

// Len is how many identifiers the index knows.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.refs)
}

// SetPolicy puts (or replaces) a policy's rules.
func (ix *Index) SetPolicy(p *calc.Policy) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.drop(ix.byPolicy[p.ID])
	ix.byPolicy[p.ID] = ix.setRules(p.Ingress, p.Egress, trace.Decision{Kind: "rule", Tier: p.Tier, Policy: p.ID.String()})
}

// RemovePolicy forgets a policy's rules.
func (ix *Index) RemovePolicy(id calc.PolicyID) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.drop(ix.byPolicy[id])
	delete(ix.byPolicy, id)
}

// SetProfile puts (or replaces) a profile's rules.
func (ix *Index) SetProfile(p *calc.Profile) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.drop(ix.byProf[p.Name])
	ix.byProf[p.Name] = ix.setRules(p.Ingress, p.Egress, trace.Decision{Kind: "profile rule", Profile: p.Name})
}

// RemoveProfile forgets a profile's rules.
func (ix *Index) RemoveProfile(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.drop(ix.byProf[name])
	delete(ix.byProf, name)
}

// setRules puts the Allow and Deny rules of both directions, each as
// owner with its index, and returns their identifiers.
func (ix *Index) setRules(ingress, egress []calc.Rule, owner trace.Decision) []string {
	var ids []string
	for _, dir := range []calc.Direction{calc.Ingress, calc.Egress} {
		rules := ingress
		if dir == calc.Egress {
			rules = egress
		}
		for i := range rules {
			r := &rules[i]
			if r.Action != calc.Allow && r.Action != calc.Deny {
				continue
			}
			k := RuleID(r.LogPrefix, r.Action)
			d := owner
			d.Rule = i
			ix.refs[k] = Ref{Direction: dir, Action: r.Action, Decision: d}
			ids = append(ids, k)
		}
	}
	return ids
}

// SetEndpoint learns the tier ends and missing profiles an endpoint's
// programs can end in. They are a few per tier and profile name and are
// kept.
func (ix *Index) SetEndpoint(ep *calc.Endpoint) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, dir := range []calc.Direction{calc.Ingress, calc.Egress} {
		for _, list := range [][]calc.TierPolicies{ep.Ingress, ep.Egress} {
			for _, t := range list {
				ix.refs[TierEndID(dir, t.Name)] = Ref{Direction: dir, Action: calc.Deny, Decision: trace.Decision{Kind: "tier default", Tier: t.Name}}
			}
		}
		if h := ep.Host; h != nil {
			for _, list := range [][]calc.TierPolicies{h.ForwardIngress, h.ForwardEgress} {
				for _, t := range list {
					ix.refs[TierEndID(dir, t.Name)] = Ref{Direction: dir, Action: calc.Deny, Decision: trace.Decision{Kind: "tier default", Tier: t.Name}}
				}
			}
		}
		for _, p := range ep.Profiles {
			ix.refs[MissingProfileID(dir, p.Name)] = Ref{Direction: dir, Action: calc.Deny, Decision: trace.Decision{Kind: "missing profile", Profile: p.Name}}
		}
	}
}

func (ix *Index) drop(ids []string) {
	for _, k := range ids {
		delete(ix.refs, k)
	}
}
