package node

import (
	"log/slog"
	"net/netip"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/syncer"
	"github.com/tortie/tortie/pkg/trace"
)

// stagedView is this node's policy as it would be with every staged
// policy in force (trace.WithStaged's reading of them), kept by a second
// calculation graph, so that a flow record can say what the staged
// policies would have done with it. The kernel never sees it.
type stagedView struct {
	graph    *calc.Graph
	state    *calc.State
	enforced map[policyKey]v3.Resource
	staged   map[policyKey]v3.Resource
	// ids are the policies that come from a staged Set; active counts
	// the staged policies that change something.
	ids    map[calc.PolicyID]bool
	active map[policyKey]bool
	byAddr map[netip.Addr]calc.EndpointID
	log    *slog.Logger
}

type policyKey struct{ kind, ns, name string }

func newStagedView(node string, log *slog.Logger) *stagedView {
	return &stagedView{graph: calc.New(calc.Config{NodeName: node}), state: calc.NewState(), log: log,
		enforced: map[policyKey]v3.Resource{}, staged: map[policyKey]v3.Resource{},
		ids: map[calc.PolicyID]bool{}, active: map[policyKey]bool{}, byAddr: map[netip.Addr]calc.EndpointID{}}
}

// stagedKinds are what the view needs beyond the flows' own kinds.
var stagedKinds = []string{v3.KindProfile, v3.KindTier, v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy,
	v3.KindStagedNetworkPolicy, v3.KindStagedGlobalNetworkPolicy, v3.KindStagedKubernetesNetworkPolicy}

// update folds one datastore change in: a policy, enforced or staged, is
// replaced by what the pair of them makes.
func (v *stagedView) update(u syncer.Update) {
	var k policyKey
	switch u.Kind {
	case v3.KindNetworkPolicy, v3.KindStagedNetworkPolicy:
		k = policyKey{v3.KindNetworkPolicy, u.Namespace, u.Name}
	case v3.KindGlobalNetworkPolicy, v3.KindStagedGlobalNetworkPolicy:
		k = policyKey{v3.KindGlobalNetworkPolicy, "", u.Name}
	case v3.KindStagedKubernetesNetworkPolicy:
		k = policyKey{v3.KindNetworkPolicy, u.Namespace, k8s.PolicyNamePrefix + u.Name}
	default:
		v.graph.OnUpdate(calc.Update{Kind: u.Kind, Namespace: u.Namespace, Name: u.Name, Resource: u.Resource})
		return
	}
	m := v.enforced
	if u.Kind == v3.KindStagedNetworkPolicy || u.Kind == v3.KindStagedGlobalNetworkPolicy || u.Kind == v3.KindStagedKubernetesNetworkPolicy {
		m = v.staged
	}
	if u.Resource == nil {
		delete(m, k)
	} else {
		m[k] = u.Resource
	}
	var pair []v3.Resource
	for _, r := range []v3.Resource{v.enforced[k], v.staged[k]} {
		if r != nil {
			pair = append(pair, r)
		}
	}
	out, ids, n, problems := trace.WithStaged(pair)
	for _, e := range problems {
		v.log.Warn("flow logs: a staged policy is left out of what staged policies would do", "err", e)
	}
	id := calc.PolicyID{Kind: k.kind, Namespace: k.ns, Name: k.name}
	delete(v.ids, id)
	for sid := range ids {
		v.ids[sid] = true
	}
	v.active[k] = n > 0
	if n == 0 {
		delete(v.active, k)
	}
	var effective v3.Resource
	if len(out) > 0 {
		effective = out[0]
	}
	v.graph.OnUpdate(calc.Update{Kind: k.kind, Namespace: k.ns, Name: k.name, Resource: effective})
}

// apply brings the state up to date with the graph (the caller holds the
// write lock).
func (v *stagedView) apply() {
	c := v.graph.Flush()
	for _, id := range c.EndpointRemoves {
		if ep := v.state.Endpoints[id]; ep != nil {
			for _, a := range ep.Addresses {
				delete(v.byAddr, a.Addr())
			}
		}
	}
	v.state.Apply(c)
	for _, ep := range c.EndpointUpdates {
		for _, a := range ep.Addresses {
			v.byAddr[a.Addr()] = ep.ID
		}
	}
}

// verdict is what the staged policies would make of a record's packet on
// the side that decided it; nil when no staged policy changes anything or
// that side is not a local endpoint (the caller holds the read lock).
func (v *stagedView) verdict(rec *flowlog.Record, p flowlog.Packet) *flowlog.StagedVerdict {
	if len(v.active) == 0 {
		return nil
	}
	a := p.Dst
	if rec.Direction == calc.Egress {
		a = p.Src
	}
	ep := v.state.Endpoints[v.byAddr[a]]
	if ep == nil {
		return nil
	}
	tp := trace.Packet{Src: p.Src, Dst: p.Dst, Protocol: p.Protocol, SrcPort: p.SrcPort, DstPort: p.DstPort, ICMPType: p.ICMPType, ICMPCode: p.ICMPCode}
	side := trace.Evaluate(v.state, ep, rec.Direction, tp, trace.Options{Staged: v.ids})
	return &flowlog.StagedVerdict{Action: side.Verdict, Decision: side.Decision}
}
