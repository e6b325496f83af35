package calc

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/selector"
)

// ---- resource constructors ----

func meta(ns, name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}
}

func wep(ns, name, node string, labels map[string]string, ips []string, profiles ...string) *v3.WorkloadEndpoint {
	return &v3.WorkloadEndpoint{ObjectMeta: meta(ns, name, labels), Spec: v3.WorkloadEndpointSpec{
		Node: node, IPNetworks: ips, Profiles: profiles, InterfaceName: "cali" + name,
	}}
}

func hep(name, node string, labels map[string]string, ips []string, profiles ...string) *v3.HostEndpoint {
	return &v3.HostEndpoint{ObjectMeta: meta("", name, labels), Spec: v3.HostEndpointSpec{
		Node: node, ExpectedIPs: ips, Profiles: profiles, InterfaceName: "eth0",
	}}
}

func f64(f float64) *float64 { return &f }

func tcp() *numorstring.Protocol { return numorstring.ProtocolFromStringP("TCP") }

func port(s string) numorstring.Port {
	p, err := numorstring.PortFromString(s)
	if err != nil {
		panic(err)
	}
	return p
}

func kindOf(r v3.Resource) string {
	switch r.(type) {
	case *v3.WorkloadEndpoint:
		return v3.KindWorkloadEndpoint
	case *v3.HostEndpoint:
		return v3.KindHostEndpoint
	case *v3.NetworkSet:
		return v3.KindNetworkSet
	case *v3.GlobalNetworkSet:
		return v3.KindGlobalNetworkSet
	case *v3.Profile:
		return v3.KindProfile
	case *v3.Tier:
		return v3.KindTier
	case *v3.NetworkPolicy:
		return v3.KindNetworkPolicy
	case *v3.GlobalNetworkPolicy:
		return v3.KindGlobalNetworkPolicy
	case *v3.StagedNetworkPolicy:
		return v3.KindStagedNetworkPolicy
	case *v3.StagedGlobalNetworkPolicy:
		return v3.KindStagedGlobalNetworkPolicy
	}
	panic(fmt.Sprintf("unknown resource %T", r))
}

func upd(r v3.Resource) Update {
	return Update{Kind: kindOf(r), Namespace: r.GetNamespace(), Name: r.GetName(), Resource: r}
}

func del(kind, ns, name string) Update { return Update{Kind: kind, Namespace: ns, Name: name} }

// ---- the reference: everything from scratch, directly ----

type resKey struct{ kind, ns, name string }

// reference computes the desired state from the full set of resources by
// evaluating every selector against everything, with none of the graph's
// indexes or reference counts. Rule translation (resolver) and the
// selector composition helpers are shared: their semantics have their own
// tests; what this checks is the incremental machinery.
func reference(node string, inSync bool, res map[resKey]v3.Resource) *State {
	s := NewState()
	s.InSync = inSync
	profiles := map[string]*v3.Profile{}
	tiers := map[string]*v3.Tier{}
	for k, r := range res {
		switch k.kind {
		case v3.KindProfile:
			profiles[k.name] = r.(*v3.Profile)
		case v3.KindTier:
			tiers[k.name] = r.(*v3.Tier)
		}
	}
	type thing struct {
		id      EndpointID
		kind    string
		labels  map[string]string
		addrs   []netip.Prefix
		ports   []namedPort
		local   bool
		iface   string
		parents []string
	}
	withParents := func(own map[string]string, parents []string) map[string]string {
		l := maps.Clone(own)
		if l == nil {
			l = map[string]string{}
		}
		for _, p := range parents {
			if pr := profiles[p]; pr != nil {
				for k, v := range pr.Spec.LabelsToApply {
					if _, ok := l[k]; !ok {
						l[k] = v
					}
				}
			}
		}
		return l
	}
	addrs := func(ss []string) []netip.Prefix {
		set := map[netip.Prefix]bool{}
		for _, x := range ss {
			if p, ok := parsePrefix(x); ok {
				set[p] = true
			}
		}
		var out []netip.Prefix
		for p := range set {
			out = append(out, p)
		}
		slices.SortFunc(out, comparePrefix)
		return out
	}
	var things []*thing
	for k, r := range res {
		switch x := r.(type) {
		case *v3.WorkloadEndpoint:
			own := maps.Clone(x.Labels)
			if own == nil {
				own = map[string]string{}
			}
			if _, ok := own[LabelServiceAccount]; !ok && x.Spec.ServiceAccountName != "" {
				own[LabelServiceAccount] = x.Spec.ServiceAccountName
			}
			own[LabelNamespace] = k.ns
			t := &thing{id: EndpointID{v3.KindWorkloadEndpoint, k.ns, k.name}, kind: k.kind,
				labels: withParents(own, x.Spec.Profiles), addrs: addrs(x.Spec.IPNetworks),
				local: x.Spec.Node == node, iface: x.Spec.InterfaceName, parents: x.Spec.Profiles}
			for _, p := range x.Spec.Ports {
				if p.Name != "" {
					t.ports = append(t.ports, namedPort{p.Name, protoNum(&p.Protocol), p.Port})
				}
			}
			things = append(things, t)
		case *v3.HostEndpoint:
			t := &thing{id: EndpointID{v3.KindHostEndpoint, "", k.name}, kind: k.kind,
				labels: withParents(x.Labels, x.Spec.Profiles), addrs: addrs(x.Spec.ExpectedIPs),
				local: x.Spec.Node == node, iface: x.Spec.InterfaceName, parents: x.Spec.Profiles}
			for _, p := range x.Spec.Ports {
				t.ports = append(t.ports, namedPort{p.Name, protoNum(&p.Protocol), p.Port})
			}
			things = append(things, t)
		case *v3.NetworkSet:
			own := maps.Clone(x.Labels)
			if own == nil {
				own = map[string]string{}
			}
			own[LabelNamespace] = k.ns
			things = append(things, &thing{kind: k.kind, labels: withParents(own, []string{"kns." + k.ns}), addrs: addrs(x.Spec.Nets)})
		case *v3.GlobalNetworkSet:
			things = append(things, &thing{kind: k.kind, labels: withParents(x.Labels, nil), addrs: addrs(x.Spec.Nets)})
		}
	}

	type pol struct {
		model                 *Policy
		tier                  string
		order                 *float64
		in, eg, aof, pre, dnt bool
		sel                   selector.Selector
		refs                  map[string]setRef
		sortName              string
	}
	var pols []*pol
	for k, r := range res {
		var (
			tier, sel, nsSel, saSel string
			order                   *float64
			types                   []v3.PolicyType
			ing, eg                 []v3.Rule
			aof, pre, dnt           bool
			id                      PolicyID
		)
		switch x := r.(type) {
		case *v3.NetworkPolicy:
			sp := x.Spec
			tier, sel, saSel, order, types, ing, eg = sp.Tier, sp.Selector, sp.ServiceAccountSelector, sp.Order, sp.Types, sp.Ingress, sp.Egress
			id = PolicyID{v3.KindNetworkPolicy, k.ns, k.name}
		case *v3.GlobalNetworkPolicy:
			sp := x.Spec
			tier, sel, saSel, order, types, ing, eg = sp.Tier, sp.Selector, sp.ServiceAccountSelector, sp.Order, sp.Types, sp.Ingress, sp.Egress
			nsSel, aof, pre, dnt = sp.NamespaceSelector, sp.ApplyOnForward, sp.PreDNAT, sp.DoNotTrack
			id = PolicyID{v3.KindGlobalNetworkPolicy, "", k.name}
		default:
			continue
		}
		if tier == "" {
			tier = "default"
		}
		p := &pol{tier: tier, order: order, aof: aof, pre: pre, dnt: dnt, sortName: id.String()}
		p.in, p.eg = policyTypes(types, ing, eg)
		o := ruleOwner{tier: tier, name: id.String(), ns: id.Namespace}
		rv := newResolver()
		p.model = &Policy{ID: id, Tier: tier, ApplyOnForward: aof, PreDNAT: pre, DoNotTrack: dnt}
		if p.in {
			p.model.Ingress = rv.rules(o, Ingress, ing)
		}
		if p.eg {
			p.model.Egress = rv.rules(o, Egress, eg)
		}
		p.refs = rv.refs
		p.sel = parseOrNever(policySelector(sel, id.Namespace, nsSel, saSel))
		pols = append(pols, p)
	}
	tierOrder := func(name string) (*float64, Action) {
		if t := tiers[name]; t != nil {
			a := Deny
			if t.Spec.DefaultAction != nil && *t.Spec.DefaultAction == v3.Pass {
				a = Pass
			}
			return t.Spec.Order, a
		}
		if name == "default" {
			return f64(1_000_000), Deny
		}
		return nil, Deny
	}
	orderLess := func(a, b *float64) (less, eq bool) {
		switch {
		case a == nil && b == nil:
			return false, true
		case a == nil:
			return false, false
		case b == nil:
			return true, false
		}
		return *a < *b, *a == *b
	}
	refs := map[string]setRef{}
	for _, t := range things {
		if !t.local {
			continue
		}
		var mine []*pol
		for _, p := range pols {
			if p.sel.Evaluate(t.labels) {
				mine = append(mine, p)
				s.Policies[p.model.ID] = p.model
				maps.Copy(refs, p.refs)
			}
		}
		sort.Slice(mine, func(i, j int) bool {
			a, b := mine[i], mine[j]
			if a.tier != b.tier {
				oa, _ := tierOrder(a.tier)
				ob, _ := tierOrder(b.tier)
				if l, e := orderLess(oa, ob); !e {
					return l
				}
				return a.tier < b.tier
			}
			if l, e := orderLess(a.order, b.order); !e {
				return l
			}
			if a.sortName != b.sortName {
				return a.sortName < b.sortName
			}
			return ComparePolicyIDs(a.model.ID, b.model.ID) < 0
		})
		host := t.kind == v3.KindHostEndpoint
		ep := &Endpoint{ID: t.id, InterfaceName: t.iface, Addresses: slices.Clone(t.addrs)}
		var hp HostPolicies
		add := func(ts *[]TierPolicies, p *pol, ok bool) {
			if !ok {
				return
			}
			if n := len(*ts); n == 0 || (*ts)[n-1].Name != p.tier {
				_, a := tierOrder(p.tier)
				*ts = append(*ts, TierPolicies{Name: p.tier, DefaultAction: a})
			}
			last := &(*ts)[len(*ts)-1]
			last.Policies = append(last.Policies, p.model.ID)
		}
		for _, p := range mine {
			switch {
			case p.dnt:
				if host {
					add(&hp.UntrackedIngress, p, p.in)
					add(&hp.UntrackedEgress, p, p.eg)
				}
			case p.pre:
				if host {
					add(&hp.PreDNATIngress, p, p.in)
				}
			default:
				add(&ep.Ingress, p, p.in)
				add(&ep.Egress, p, p.eg)
				if host && p.aof {
					add(&hp.ForwardIngress, p, p.in)
					add(&hp.ForwardEgress, p, p.eg)
				}
			}
		}
		if host {
			ep.Host = &hp
		}
		for _, name := range t.parents {
			pr := profiles[name]
			ep.Profiles = append(ep.Profiles, ProfileRef{Name: name, Missing: pr == nil})
			if pr != nil {
				if _, done := s.Profiles[name]; !done {
					rv := newResolver()
					o := ruleOwner{name: name}
					s.Profiles[name] = &Profile{Name: name, Ingress: rv.rules(o, Ingress, pr.Spec.Ingress), Egress: rv.rules(o, Egress, pr.Spec.Egress)}
					maps.Copy(refs, rv.refs)
				}
			}
		}
		s.Endpoints[ep.ID] = ep
	}
	for id, r := range refs {
		s.IPSets[id] = r.model()
		m := map[Member]struct{}{}
		for _, t := range things {
			if !r.sel.Evaluate(t.labels) {
				continue
			}
			for _, a := range t.addrs {
				if r.kind == AddressSet {
					m[Member{Prefix: a}] = struct{}{}
					continue
				}
				for _, p := range t.ports {
					if p.name == r.port && p.proto == r.proto {
						m[Member{Prefix: a, Protocol: p.proto, Port: p.port}] = struct{}{}
					}
				}
			}
		}
		s.Members[id] = m
	}
	return s
}

// diffStates describes how two states differ, briefly.
func diffStates(got, want *State) string {
	var b strings.Builder
	if got.InSync != want.InSync {
		fmt.Fprintf(&b, "InSync: got %v want %v\n", got.InSync, want.InSync)
	}
	diffMap(&b, "ipset", got.IPSets, want.IPSets)
	for id := range want.Members {
		if g, w := got.Members[id], want.Members[id]; !reflect.DeepEqual(g, w) {
			fmt.Fprintf(&b, "members of %s (%s): got %v want %v\n", id, want.IPSets[id].Selector, sortedMembers(g), sortedMembers(w))
		}
	}
	for id := range got.Members {
		if _, ok := want.Members[id]; !ok {
			fmt.Fprintf(&b, "extra members for %s\n", id)
		}
	}
	diffMap(&b, "policy", got.Policies, want.Policies)
	diffMap(&b, "profile", got.Profiles, want.Profiles)
	diffMap(&b, "endpoint", got.Endpoints, want.Endpoints)
	return b.String()
}

func diffMap[K comparable, V any](b *strings.Builder, what string, got, want map[K]V) {
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			fmt.Fprintf(b, "%s %v missing: want %s\n", what, k, dump(w))
		case !reflect.DeepEqual(g, w):
			fmt.Fprintf(b, "%s %v:\n  got  %s\n  want %s\n", what, k, dump(g), dump(w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(b, "%s %v unexpected: %s\n", what, k, dump(g))
		}
	}
}

func dump(v any) string {
	switch x := v.(type) {
	case *Endpoint:
		h := ""
		if x.Host != nil {
			h = fmt.Sprintf(" host=%+v", *x.Host)
		}
		return fmt.Sprintf("{%v if=%s addrs=%v in=%+v eg=%+v prof=%+v%s}", x.ID, x.InterfaceName, x.Addresses, x.Ingress, x.Egress, x.Profiles, h)
	}
	return fmt.Sprintf("%+v", v)
}
