package calc

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

// gen makes random resources from small alphabets, so that random updates
// keep colliding: the same labels, addresses, selectors and names recur.
type gen struct{ r *rand.Rand }

var (
	genNamespaces = []string{"ns1", "ns2", "ns3"}
	genKeys       = []string{"a", "b", "c"}
	genValues     = []string{"x", "y", "z"}
	genNodes      = []string{"h1", "h1", "h2"}
	genProfiles   = []string{"p1", "p2", "p3", "kns.ns1", "kns.ns2", "kns.ns3"}
	genTiers      = []string{"default", "t1", "t2"}
	genPortNames  = []string{"http", "dns"}
)

func (g gen) pick(xs []string) string { return xs[g.r.IntN(len(xs))] }
func (g gen) chance(p float64) bool   { return g.r.Float64() < p }

func (g gen) labels() map[string]string {
	if g.chance(0.15) {
		return nil
	}
	l := map[string]string{}
	for _, k := range genKeys {
		if g.chance(0.5) {
			l[k] = g.pick(genValues)
		}
	}
	return l
}

func (g gen) addr() string {
	if g.chance(0.1) {
		return fmt.Sprintf("fd00::%d/128", g.r.IntN(6))
	}
	return fmt.Sprintf("10.0.0.%d/32", g.r.IntN(12))
}

func (g gen) addrs(n int) []string {
	var out []string
	for range g.r.IntN(n + 1) {
		out = append(out, g.addr())
	}
	return out
}

func (g gen) nets() []string {
	var out []string
	for range g.r.IntN(3) {
		switch g.r.IntN(3) {
		case 0:
			out = append(out, g.addr())
		case 1:
			out = append(out, fmt.Sprintf("10.0.%d.0/24", g.r.IntN(3)))
		default:
			out = append(out, "10.0.0.0/28")
		}
	}
	return out
}

func (g gen) term() string {
	k, v := g.pick(genKeys), g.pick(genValues)
	switch g.r.IntN(9) {
	case 0:
		return fmt.Sprintf("%s == '%s'", k, v)
	case 1:
		return fmt.Sprintf("%s != '%s'", k, v)
	case 2:
		return fmt.Sprintf("has(%s)", k)
	case 3:
		return fmt.Sprintf("!has(%s)", k)
	case 4:
		return fmt.Sprintf("%s in {'%s', '%s'}", k, v, g.pick(genValues))
	case 5:
		return "all()"
	case 6:
		return fmt.Sprintf("pcns.%s == '%s'", k, v)
	case 7:
		return fmt.Sprintf("%s not in {'%s'}", k, v)
	default:
		return fmt.Sprintf("%s == '%s'", k, v)
	}
}

func (g gen) selector() string {
	switch g.r.IntN(6) {
	case 0:
		return ""
	case 1, 2:
		return g.term()
	case 3:
		return g.term() + " && " + g.term()
	case 4:
		return g.term() + " || " + g.term()
	default:
		return "(" + g.term() + " || " + g.term() + ") && !(" + g.term() + ")"
	}
}

func (g gen) nsSelector() string {
	switch g.r.IntN(6) {
	case 0:
		return "all()"
	case 1:
		return "global()"
	case 2, 3:
		return ""
	default:
		return g.term()
	}
}

func (g gen) ports() []numorstring.Port {
	var out []numorstring.Port
	for range g.r.IntN(3) {
		switch g.r.IntN(3) {
		case 0:
			out = append(out, numorstring.SinglePort(uint16(80+g.r.IntN(3))))
		case 1:
			out = append(out, numorstring.PortFromRange(1000, 2000))
		default:
			out = append(out, numorstring.NamedPort(g.pick(genPortNames)))
		}
	}
	return out
}

// ruleScope says whether generated rules belong to a global resource (a
// profile, a global policy) or a namespaced one.
type ruleScope uint8

const (
	namespacedRules ruleScope = iota
	globalRules
)

func (g gen) entity(scope ruleScope) v3.EntityRule {
	var e v3.EntityRule
	if g.chance(0.5) {
		e.Selector = g.selector()
	}
	if g.chance(0.2) {
		e.NotSelector = g.term()
	}
	if g.chance(0.3) {
		e.NamespaceSelector = g.nsSelector()
	}
	if g.chance(0.2) {
		e.Nets = g.nets()
	}
	if g.chance(0.1) {
		e.NotNets = []string{"10.0.0.0/30"}
	}
	if g.chance(0.1) {
		e.ServiceAccounts = &v3.ServiceAccountMatch{Names: []string{"sa1"}}
		if g.chance(0.5) {
			e.ServiceAccounts.Selector = g.term()
		}
	}
	return e
}

func (g gen) rules(scope ruleScope) []v3.Rule {
	var out []v3.Rule
	for range g.r.IntN(3) {
		r := v3.Rule{Action: []v3.Action{v3.Allow, v3.Deny, v3.Pass, v3.Log}[g.r.IntN(4)]}
		if g.chance(0.6) {
			r.Protocol = numorstring.ProtocolFromStringP([]string{"TCP", "UDP"}[g.r.IntN(2)])
			r.Destination.Ports = g.ports()
			if g.chance(0.2) {
				r.Source.NotPorts = g.ports()
			}
		} else if g.chance(0.2) {
			r.Protocol = numorstring.ProtocolFromStringP("ICMP")
			t := 8
			r.ICMP = &v3.ICMPFields{Type: &t}
		}
		src, dst := g.entity(scope), g.entity(scope)
		src.Ports, src.NotPorts = r.Source.Ports, r.Source.NotPorts
		dst.Ports, dst.NotPorts = r.Destination.Ports, r.Destination.NotPorts
		r.Source, r.Destination = src, dst
		out = append(out, r)
	}
	return out
}

func (g gen) order() *float64 {
	if g.chance(0.3) {
		return nil
	}
	return f64(float64(g.r.IntN(3)))
}

func (g gen) types() []v3.PolicyType {
	switch g.r.IntN(4) {
	case 0:
		return []v3.PolicyType{v3.PolicyTypeIngress}
	case 1:
		return []v3.PolicyType{v3.PolicyTypeEgress}
	case 2:
		return []v3.PolicyType{v3.PolicyTypeIngress, v3.PolicyTypeEgress}
	}
	return nil
}

func (g gen) endpointPorts() []v3.WorkloadEndpointPort {
	var out []v3.WorkloadEndpointPort
	for range g.r.IntN(3) {
		out = append(out, v3.WorkloadEndpointPort{
			Name:     g.pick(genPortNames),
			Protocol: numorstring.ProtocolFromString([]string{"TCP", "UDP"}[g.r.IntN(2)]),
			Port:     uint16(8000 + g.r.IntN(3)),
		})
	}
	return out
}

func (g gen) profiles() []string {
	var out []string
	for range g.r.IntN(3) {
		out = append(out, g.pick(genProfiles))
	}
	return out
}

// resource makes a random resource of a random kind, or a delete.
func (g gen) update() (resKey, v3.Resource) {
	n := g.r.IntN(5)
	ns := g.pick(genNamespaces)
	var k resKey
	var r v3.Resource
	switch g.r.IntN(13) {
	case 0, 1, 2:
		name := fmt.Sprintf("w%d", n*2+g.r.IntN(2))
		w := wep(ns, name, g.pick(genNodes), g.labels(), g.addrs(2), g.profiles()...)
		w.Spec.Ports = g.endpointPorts()
		if g.chance(0.3) {
			w.Spec.ServiceAccountName = "sa1"
		}
		k, r = resKey{v3.KindWorkloadEndpoint, ns, name}, w
	case 3:
		name := fmt.Sprintf("h%d", n)
		h := hep(name, g.pick(genNodes), g.labels(), g.addrs(2), g.profiles()...)
		for _, p := range g.endpointPorts() {
			h.Spec.Ports = append(h.Spec.Ports, v3.EndpointPort{Name: p.Name, Protocol: p.Protocol, Port: p.Port})
		}
		k, r = resKey{v3.KindHostEndpoint, "", name}, h
	case 4:
		name := fmt.Sprintf("n%d", n)
		k, r = resKey{v3.KindNetworkSet, ns, name}, &v3.NetworkSet{ObjectMeta: meta(ns, name, g.labels()), Spec: v3.NetworkSetSpec{Nets: g.nets()}}
	case 5:
		name := fmt.Sprintf("g%d", n)
		k, r = resKey{v3.KindGlobalNetworkSet, "", name}, &v3.GlobalNetworkSet{ObjectMeta: meta("", name, g.labels()), Spec: v3.GlobalNetworkSetSpec{Nets: g.nets()}}
	case 6:
		name := g.pick(genProfiles)
		p := &v3.Profile{ObjectMeta: meta("", name, nil), Spec: v3.ProfileSpec{Ingress: g.rules(globalRules), Egress: g.rules(globalRules)}}
		if l := g.labels(); len(l) > 0 {
			p.Spec.LabelsToApply = map[string]string{}
			for k, v := range l {
				if strings.HasPrefix(name, "kns.") {
					k = "pcns." + k
				}
				p.Spec.LabelsToApply[k] = v
			}
		}
		k, r = resKey{v3.KindProfile, "", name}, p
	case 7:
		name := g.pick(genTiers)
		t := &v3.Tier{ObjectMeta: meta("", name, nil), Spec: v3.TierSpec{Order: g.order()}}
		if g.chance(0.5) {
			a := v3.Pass
			t.Spec.DefaultAction = &a
		}
		k, r = resKey{v3.KindTier, "", name}, t
	case 8, 9:
		name := fmt.Sprintf("np%d", n)
		p := &v3.NetworkPolicy{ObjectMeta: meta(ns, name, nil), Spec: v3.NetworkPolicySpec{
			Tier: g.pick(genTiers), Order: g.order(), Selector: g.selector(), Types: g.types(),
			Ingress: g.rules(namespacedRules), Egress: g.rules(namespacedRules),
		}}
		if g.chance(0.1) {
			p.Spec.ServiceAccountSelector = g.term()
		}
		k, r = resKey{v3.KindNetworkPolicy, ns, name}, p
	case 10, 11:
		name := fmt.Sprintf("gnp%d", n)
		p := &v3.GlobalNetworkPolicy{ObjectMeta: meta("", name, nil), Spec: v3.GlobalNetworkPolicySpec{
			Tier: g.pick(genTiers), Order: g.order(), Selector: g.selector(), Types: g.types(),
			Ingress: g.rules(globalRules), Egress: g.rules(globalRules),
		}}
		if g.chance(0.3) {
			p.Spec.NamespaceSelector = g.term()
		}
		switch g.r.IntN(5) {
		case 0:
			p.Spec.ApplyOnForward = true
		case 1:
			p.Spec.ApplyOnForward, p.Spec.PreDNAT = true, true
		case 2:
			p.Spec.ApplyOnForward, p.Spec.DoNotTrack = true, true
		}
		k, r = resKey{v3.KindGlobalNetworkPolicy, "", name}, p
	default:
		name := fmt.Sprintf("np%d", n) // same names as real policies: must not clash
		p := &v3.StagedNetworkPolicy{ObjectMeta: meta(ns, name, nil), Spec: v3.StagedNetworkPolicySpec{
			Selector: g.selector(), Ingress: g.rules(namespacedRules),
		}}
		k, r = resKey{v3.KindStagedNetworkPolicy, ns, name}, p
	}
	if g.chance(0.25) {
		return k, nil
	}
	return k, r
}

func TestPropertyIncrementalEqualsReference(t *testing.T) {
	seeds := []uint64{1, 2, 3, 42, 1234, uint64(time.Now().UnixNano())}
	steps := 3000
	if testing.Short() {
		steps = 600
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			runProperty(t, seed, steps)
		})
	}
}

func runProperty(t *testing.T, seed uint64, steps int) {
	g := gen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	graph := New(Config{NodeName: "h1"})
	res := map[resKey]v3.Resource{}
	mirror := NewState()
	inSync := false
	for step := 0; step < steps; step++ {
		k, r := g.update()
		u := Update{Kind: k.kind, Namespace: k.ns, Name: k.name, Resource: r}
		graph.OnUpdate(u)
		if r == nil {
			delete(res, k)
		} else {
			res[k] = r
		}
		if step == steps/10 {
			graph.OnInSync()
			inSync = true
		}
		batch := 1 + g.r.IntN(25)
		if step%batch != 0 && step != steps-1 {
			continue
		}
		got := graph.State()
		want := reference("h1", inSync, res)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d step %d (after %s %s/%s): incremental state differs from the reference:\n%s",
				seed, step, k.kind, k.ns, k.name, diffStates(got, want))
		}
		if g.chance(0.7) {
			c := graph.Flush()
			if err := checkStrictDeltas(mirror, c); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			mirror.Apply(c)
			if inSync && !reflect.DeepEqual(mirror, got) {
				t.Fatalf("seed %d step %d: state built from Flush deltas differs from State():\n%s",
					seed, step, diffStates(mirror, got))
			}
			if !inSync && !c.Empty() {
				t.Fatalf("seed %d step %d: Flush before in-sync returned changes", seed, step)
			}
			if c2 := graph.Flush(); !c2.Empty() {
				t.Fatalf("seed %d step %d: a second Flush returned changes: %+v", seed, step, c2)
			}
		}
	}
}

// checkStrictDeltas checks that member deltas are exact: a driver may use
// them as "create element" / "delete element", which fail on an element
// that is already there or already gone.
func checkStrictDeltas(prev *State, c *Changes) error {
	for _, d := range c.MemberDeltas {
		m, ok := prev.Members[d.SetID]
		if !ok {
			return fmt.Errorf("delta for set %s the driver does not have", d.SetID)
		}
		for _, x := range d.Added {
			if _, ok := m[x]; ok {
				return fmt.Errorf("set %s: added %v, which it already has", d.SetID, x)
			}
		}
		for _, x := range d.Removed {
			if _, ok := m[x]; !ok {
				return fmt.Errorf("set %s: removed %v, which it does not have", d.SetID, x)
			}
		}
	}
	for _, id := range c.IPSetRemoves {
		if _, ok := prev.IPSets[id]; !ok {
			return fmt.Errorf("removed set %s the driver does not have", id)
		}
	}
	for _, id := range c.PolicyRemoves {
		if _, ok := prev.Policies[id]; !ok {
			return fmt.Errorf("removed policy %v the driver does not have", id)
		}
	}
	for _, id := range c.EndpointRemoves {
		if _, ok := prev.Endpoints[id]; !ok {
			return fmt.Errorf("removed endpoint %v the driver does not have", id)
		}
	}
	return nil
}
