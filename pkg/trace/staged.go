package trace

import (
	"fmt"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
)

// WithStaged returns resources as they would be with every staged policy
// in force, as Calico reads a staged policy: stagedAction Set (or none)
// puts the staged policy in the place of the enforced one of the same
// kind, namespace and name (adding it when there is none), Delete removes
// that enforced policy, Learn and Ignore change nothing. A
// StagedKubernetesNetworkPolicy stands for the Kubernetes NetworkPolicy of
// its name, that is the NetworkPolicy "knp.default.<name>" it converts to.
// The staged resources themselves are left out (the graph ignores them
// anyway). staged are the policies that come from a staged Set, n counts
// the staged policies that changed something, and problems are the staged
// policies left out because they cannot be read (a Kubernetes policy the
// API server would refuse), each naming the policy.
func WithStaged(rs []v3.Resource) (out []v3.Resource, staged map[calc.PolicyID]bool, n int, problems []error) {
	type key struct{ kind, ns, name string }
	replace := map[key]v3.Resource{}
	var order []key
	for _, r := range rs {
		var k key
		var enforced v3.Resource
		var action v3.StagedAction
		switch s := r.(type) {
		case *v3.StagedNetworkPolicy:
			k = key{v3.KindNetworkPolicy, s.Namespace, s.Name}
			action = s.Spec.StagedAction
			np := newOf(v3.KindNetworkPolicy).(*v3.NetworkPolicy)
			np.ObjectMeta = *s.ObjectMeta.DeepCopy()
			np.Spec = v3.NetworkPolicySpec{
				Tier: s.Spec.Tier, Order: s.Spec.Order, Ingress: s.Spec.Ingress, Egress: s.Spec.Egress,
				Selector: s.Spec.Selector, Types: s.Spec.Types,
				ServiceAccountSelector: s.Spec.ServiceAccountSelector, PerformanceHints: s.Spec.PerformanceHints,
			}
			enforced = np
		case *v3.StagedGlobalNetworkPolicy:
			k = key{v3.KindGlobalNetworkPolicy, "", s.Name}
			action = s.Spec.StagedAction
			gnp := newOf(v3.KindGlobalNetworkPolicy).(*v3.GlobalNetworkPolicy)
			gnp.ObjectMeta = *s.ObjectMeta.DeepCopy()
			gnp.Spec = v3.GlobalNetworkPolicySpec{
				Tier: s.Spec.Tier, Order: s.Spec.Order, Ingress: s.Spec.Ingress, Egress: s.Spec.Egress,
				Selector: s.Spec.Selector, Types: s.Spec.Types, DoNotTrack: s.Spec.DoNotTrack,
				PreDNAT: s.Spec.PreDNAT, ApplyOnForward: s.Spec.ApplyOnForward,
				ServiceAccountSelector: s.Spec.ServiceAccountSelector, NamespaceSelector: s.Spec.NamespaceSelector,
				PerformanceHints: s.Spec.PerformanceHints,
			}
			enforced = gnp
		case *v3.StagedKubernetesNetworkPolicy:
			np, err := k8s.StagedNetworkPolicyToV3(s)
			action = s.Spec.StagedAction
			if err != nil && action != v3.StagedActionDelete {
				problems = append(problems, fmt.Errorf("StagedKubernetesNetworkPolicy %s/%s left out: %w", s.Namespace, s.Name, err))
				continue
			}
			k = key{v3.KindNetworkPolicy, s.Namespace, k8s.PolicyNamePrefix + s.Name}
			if np != nil {
				enforced = np
			}
		default:
			continue
		}
		switch action {
		case "", v3.StagedActionSet:
		case v3.StagedActionDelete:
			enforced = nil
		default:
			continue
		}
		if _, ok := replace[k]; !ok {
			order = append(order, k)
		}
		replace[k] = enforced
	}
	staged = map[calc.PolicyID]bool{}
	for _, r := range rs {
		switch r.(type) {
		case *v3.StagedNetworkPolicy, *v3.StagedGlobalNetworkPolicy, *v3.StagedKubernetesNetworkPolicy:
			continue
		}
		k := key{kindOf(r), r.GetNamespace(), r.GetName()}
		if with, ok := replace[k]; ok {
			if with != nil {
				out = append(out, with)
			}
			continue
		}
		out = append(out, r)
	}
	seen := map[key]bool{}
	for _, r := range out {
		seen[key{kindOf(r), r.GetNamespace(), r.GetName()}] = true
	}
	for _, k := range order {
		if with := replace[k]; with != nil {
			if !seen[k] {
				out = append(out, with)
			}
			staged[calc.PolicyID{Kind: k.kind, Namespace: k.ns, Name: k.name}] = true
		}
	}
	return out, staged, len(order), problems
}

func newOf(kind string) v3.Resource {
	k, _ := v3.KindByKind(kind)
	return k.NewObject()
}

func kindOf(r v3.Resource) string {
	if k := v3.KindOf(r); k != nil {
		return k.Kind
	}
	return ""
}
