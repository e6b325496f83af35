package calc

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/selector"
)

const node = "h1"

func feed(t *testing.T, us ...Update) (*Graph, *State) {
	t.Helper()
	g := New(Config{NodeName: node})
	for _, u := range us {
		g.OnUpdate(u)
	}
	g.OnInSync()
	return g, g.State()
}

func lbl(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func np(ns, name string, spec v3.NetworkPolicySpec) *v3.NetworkPolicy {
	return &v3.NetworkPolicy{ObjectMeta: meta(ns, name, nil), Spec: spec}
}

func gnp(name string, spec v3.GlobalNetworkPolicySpec) *v3.GlobalNetworkPolicy {
	return &v3.GlobalNetworkPolicy{ObjectMeta: meta("", name, nil), Spec: spec}
}

func tier(name string, order *float64, action v3.Action) *v3.Tier {
	return &v3.Tier{ObjectMeta: meta("", name, nil), Spec: v3.TierSpec{Order: order, DefaultAction: &action}}
}

func profile(name string, labels map[string]string, ingress ...v3.Rule) *v3.Profile {
	return &v3.Profile{ObjectMeta: meta("", name, nil), Spec: v3.ProfileSpec{LabelsToApply: labels, Ingress: ingress}}
}

func nsProfile(ns string, labels map[string]string) *v3.Profile {
	l := map[string]string{NamespaceLabelPrefix + "projectcalico.org/name": ns}
	for k, v := range labels {
		l[NamespaceLabelPrefix+k] = v
	}
	return profile(NamespaceProfilePrefix+ns, l)
}

func allowFrom(sel string) v3.Rule {
	return v3.Rule{Action: v3.Allow, Source: v3.EntityRule{Selector: sel}}
}

func wepID(ns, name string) EndpointID { return EndpointID{v3.KindWorkloadEndpoint, ns, name} }

func npID(ns, name string) PolicyID { return PolicyID{v3.KindNetworkPolicy, ns, name} }

func gnpID(name string) PolicyID { return PolicyID{v3.KindGlobalNetworkPolicy, "", name} }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// members returns the sorted members of the set a rule's source uses.
func srcMembers(t *testing.T, s *State, id PolicyID, rule int) []string {
	t.Helper()
	p := s.Policies[id]
	if p == nil {
		t.Fatalf("policy %v not in state", id)
	}
	return setMembers(t, s, p.Ingress[rule].Src.IPSet)
}

func setMembers(t *testing.T, s *State, setID string) []string {
	t.Helper()
	m, ok := s.Members[setID]
	if !ok {
		t.Fatalf("set %q not in state", setID)
	}
	var out []string
	for _, x := range sortedMembers(m) {
		if x.Port != 0 {
			out = append(out, fmt.Sprintf("%s,%d:%d", x.Prefix, x.Protocol, x.Port))
		} else {
			out = append(out, x.Prefix.String())
		}
	}
	return out
}

// tiersOf renders an endpoint's list as "tier:pol,pol/action" strings.
func tiersOf(ts []TierPolicies) []string {
	var out []string
	for _, t := range ts {
		s := t.Name + ":"
		for i, p := range t.Policies {
			if i > 0 {
				s += ","
			}
			s += p.String()
		}
		out = append(out, s+"/"+string(t.DefaultAction))
	}
	return out
}

func TestOrdering(t *testing.T) {
	all := v3.NetworkPolicySpec{Selector: "all()", Ingress: []v3.Rule{{Action: v3.Allow}}}
	withTier := func(tierName string, order *float64) v3.NetworkPolicySpec {
		s := all
		s.Tier, s.Order = tierName, order
		return s
	}
	_, s := feed(t,
		upd(wep("ns", "w", node, nil, []string{"10.0.0.1/32"})),
		upd(tier("zeta", f64(10), v3.Deny)),
		upd(tier("alpha", f64(10), v3.Pass)),
		upd(tier("first", f64(1), v3.Deny)),
		upd(tier("unordered", nil, v3.Pass)),
		upd(np("ns", "p-nil", withTier("alpha", nil))),
		upd(np("ns", "p-2", withTier("alpha", f64(2)))),
		upd(np("ns", "p-1b", withTier("alpha", f64(1)))),
		upd(np("ns", "p-1a", withTier("alpha", f64(1)))),
		upd(np("ns", "z", withTier("zeta", f64(5)))),
		upd(np("ns", "f", withTier("first", nil))),
		upd(np("ns", "u", withTier("unordered", f64(1)))),
		upd(np("ns", "d", withTier("", f64(1)))),
		upd(gnp("g", v3.GlobalNetworkPolicySpec{Tier: "alpha", Order: f64(1), Selector: "all()"})),
	)
	got := tiersOf(s.Endpoints[wepID("ns", "w")].Ingress)
	want := []string{
		"first:ns/f/Deny",
		"alpha:g,ns/p-1a,ns/p-1b,ns/p-2,ns/p-nil/Pass",
		"zeta:ns/z/Deny",
		"default:ns/d/Deny", // order 1,000,000 when the tier resource is absent
		"unordered:ns/u/Pass",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ingress tiers:\n got %q\nwant %q", got, want)
	}
}

func TestTypesDefaulting(t *testing.T) {
	rule := []v3.Rule{{Action: v3.Allow}}
	cases := []struct {
		name            string
		spec            v3.NetworkPolicySpec
		inTiers, egTier bool
		inRules, egRule int
	}{
		{"no rules", v3.NetworkPolicySpec{}, true, false, 0, 0},
		{"ingress only", v3.NetworkPolicySpec{Ingress: rule}, true, false, 1, 0},
		{"egress only", v3.NetworkPolicySpec{Egress: rule}, false, true, 0, 1},
		{"both", v3.NetworkPolicySpec{Ingress: rule, Egress: rule}, true, true, 1, 1},
		{"explicit ingress drops egress rules", v3.NetworkPolicySpec{Types: []v3.PolicyType{v3.PolicyTypeIngress}, Egress: rule}, true, false, 0, 0},
		{"explicit egress with no rules", v3.NetworkPolicySpec{Types: []v3.PolicyType{v3.PolicyTypeEgress}}, false, true, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, s := feed(t, upd(wep("ns", "w", node, nil, nil)), upd(np("ns", "p", c.spec)))
			ep := s.Endpoints[wepID("ns", "w")]
			if (len(ep.Ingress) > 0) != c.inTiers || (len(ep.Egress) > 0) != c.egTier {
				t.Errorf("ingress tiers %v, egress tiers %v", tiersOf(ep.Ingress), tiersOf(ep.Egress))
			}
			p := s.Policies[npID("ns", "p")]
			if len(p.Ingress) != c.inRules || len(p.Egress) != c.egRule {
				t.Errorf("rules: %d ingress, %d egress", len(p.Ingress), len(p.Egress))
			}
		})
	}
}

func TestRuleSelectorScoping(t *testing.T) {
	endpoints := []Update{
		upd(nsProfile("ns1", lbl("team", "x"))),
		upd(nsProfile("ns2", lbl("team", "y"))),
		upd(wep("ns1", "local", node, lbl("app", "web"), []string{"10.0.0.1/32"}, "kns.ns1")),
		upd(wep("ns1", "db1", "h2", lbl("app", "db"), []string{"10.0.1.1/32"}, "kns.ns1")),
		upd(wep("ns2", "db2", "h2", lbl("app", "db"), []string{"10.0.2.1/32"}, "kns.ns2")),
		upd(wep("ns3", "db3", "h2", lbl("app", "db"), []string{"10.0.3.1/32"})),
		upd(hep("host2", "h2", lbl("app", "db"), []string{"192.168.0.2"})),
		upd(&v3.GlobalNetworkSet{ObjectMeta: meta("", "gns", lbl("app", "db")), Spec: v3.GlobalNetworkSetSpec{Nets: []string{"172.16.0.0/12"}}}),
		upd(&v3.NetworkSet{ObjectMeta: meta("ns2", "ns", lbl("app", "db")), Spec: v3.NetworkSetSpec{Nets: []string{"10.9.0.0/16"}}}),
	}
	cases := []struct {
		name     string
		global   bool
		src      v3.EntityRule
		selector string
		members  []string
	}{
		{"namespaced: own namespace only", false, v3.EntityRule{Selector: "app == 'db'"},
			`((projectcalico.org/namespace == "ns1") && (app == "db"))`, []string{"10.0.1.1/32"}},
		{"namespaceSelector by namespace label", false, v3.EntityRule{Selector: "app == 'db'", NamespaceSelector: "team == 'y'"},
			`((pcns.team == "y") && (app == "db"))`, []string{"10.0.2.1/32", "10.9.0.0/16"}},
		{"namespaceSelector all() is every namespace", false, v3.EntityRule{Selector: "app == 'db'", NamespaceSelector: "all()"},
			`(has(projectcalico.org/namespace) && (app == "db"))`, []string{"10.0.1.1/32", "10.0.2.1/32", "10.0.3.1/32", "10.9.0.0/16"}},
		{"namespaceSelector global() is the non-namespaced", false, v3.EntityRule{Selector: "app == 'db'", NamespaceSelector: "global()"},
			`(!has(projectcalico.org/namespace) && (app == "db"))`, []string{"172.16.0.0/12", "192.168.0.2/32"}},
		{"namespaceSelector alone", false, v3.EntityRule{NamespaceSelector: "projectcalico.org/name == 'ns2'"},
			`pcns.projectcalico.org/name == "ns2"`, []string{"10.0.2.1/32", "10.9.0.0/16"}},
		{"global policy: everything", true, v3.EntityRule{Selector: "app == 'db'"},
			`app == "db"`, []string{"10.0.1.1/32", "10.0.2.1/32", "10.0.3.1/32", "10.9.0.0/16", "172.16.0.0/12", "192.168.0.2/32"}},
		{"notSelector alone scopes the positive side to the namespace", false, v3.EntityRule{NotSelector: "app == 'web'"},
			`projectcalico.org/namespace == "ns1"`, []string{"10.0.0.1/32", "10.0.1.1/32"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rule := v3.Rule{Action: v3.Allow, Source: c.src}
			var pu Update
			var id PolicyID
			if c.global {
				pu, id = upd(gnp("p", v3.GlobalNetworkPolicySpec{Selector: "app == 'web'", Ingress: []v3.Rule{rule}})), gnpID("p")
			} else {
				pu, id = upd(np("ns1", "p", v3.NetworkPolicySpec{Ingress: []v3.Rule{rule}})), npID("ns1", "p")
			}
			_, s := feed(t, append(slices.Clone(endpoints), pu)...)
			set := s.IPSets[s.Policies[id].Ingress[0].Src.IPSet]
			if set.Selector != selector.MustParse(c.selector).String() {
				t.Errorf("selector %s, want %s", set.Selector, c.selector)
			}
			if got := srcMembers(t, s, id, 0); !slices.Equal(got, c.members) {
				t.Errorf("members %v, want %v", got, c.members)
			}
		})
	}
}

func TestServiceAccounts(t *testing.T) {
	sa := func(name, ip string, sa string) Update {
		w := wep("ns", name, "h2", nil, []string{ip}, "ksa.ns."+sa)
		w.Spec.ServiceAccountName = sa
		return upd(w)
	}
	_, s := feed(t,
		upd(wep("ns", "local", node, nil, nil)),
		upd(profile("ksa.ns.api", lbl("pcsa.role", "frontend"))),
		upd(profile("ksa.ns.batch", lbl("pcsa.role", "batch"))),
		sa("a", "10.0.0.1/32", "api"),
		sa("b", "10.0.0.2/32", "batch"),
		upd(wep("ns", "c", "h2", nil, []string{"10.0.0.3/32"})),
		upd(np("ns", "p", v3.NetworkPolicySpec{Ingress: []v3.Rule{
			{Action: v3.Allow, Source: v3.EntityRule{ServiceAccounts: &v3.ServiceAccountMatch{Names: []string{"api", "batch"}}}},
			{Action: v3.Allow, Source: v3.EntityRule{ServiceAccounts: &v3.ServiceAccountMatch{Selector: "role == 'batch'"}}},
			{Action: v3.Allow, Source: v3.EntityRule{ServiceAccounts: &v3.ServiceAccountMatch{Selector: "all()", Names: []string{"api"}}}},
		}})),
	)
	for i, want := range [][]string{{"10.0.0.1/32", "10.0.0.2/32"}, {"10.0.0.2/32"}, {"10.0.0.1/32"}} {
		if got := srcMembers(t, s, npID("ns", "p"), i); !slices.Equal(got, want) {
			t.Errorf("rule %d: members %v, want %v", i, got, want)
		}
	}
}

func TestPolicySelectorScoping(t *testing.T) {
	_, s := feed(t,
		upd(nsProfile("ns1", lbl("env", "prod"))),
		upd(wep("ns1", "a", node, lbl("app", "web"), nil, "kns.ns1")),
		upd(wep("ns2", "b", node, lbl("app", "web"), nil)),
		upd(hep("host", node, lbl("app", "web"), nil)),
		upd(np("ns1", "np", v3.NetworkPolicySpec{Selector: "app == 'web'"})),
		upd(gnp("gnp", v3.GlobalNetworkPolicySpec{Selector: "app == 'web'"})),
		upd(gnp("gnp-ns", v3.GlobalNetworkPolicySpec{Selector: "app == 'web'", NamespaceSelector: "env == 'prod'"})),
		upd(gnp("gnp-allns", v3.GlobalNetworkPolicySpec{Selector: "app == 'web'", NamespaceSelector: "all()"})),
	)
	want := map[EndpointID][]string{
		wepID("ns1", "a"):                         {"default:gnp,gnp-allns,gnp-ns,ns1/np/Deny"},
		wepID("ns2", "b"):                         {"default:gnp,gnp-allns/Deny"},
		{Kind: v3.KindHostEndpoint, Name: "host"}: {"default:gnp/Deny"},
	}
	for id, w := range want {
		if got := tiersOf(s.Endpoints[id].Ingress); !slices.Equal(got, w) {
			t.Errorf("%v: %q, want %q", id, got, w)
		}
	}
}

func TestProfileLabelInheritance(t *testing.T) {
	g, s := feed(t,
		upd(wep("ns", "local", node, nil, nil)),
		upd(profile("p1", lbl("role", "db", "tier", "back"))),
		upd(profile("p2", lbl("role", "cache", "zone", "a"))),
		upd(wep("ns", "own-wins", "h2", lbl("role", "web"), []string{"10.0.0.1/32"}, "p1")),
		upd(wep("ns", "first-profile-wins", "h2", nil, []string{"10.0.0.2/32"}, "p1", "p2")),
		upd(wep("ns", "second", "h2", nil, []string{"10.0.0.3/32"}, "p2")),
		upd(np("ns", "p", v3.NetworkPolicySpec{Ingress: []v3.Rule{allowFrom("role == 'db'"), allowFrom("zone == 'a'")}})),
	)
	id := npID("ns", "p")
	if got, want := srcMembers(t, s, id, 0), []string{"10.0.0.2/32"}; !slices.Equal(got, want) {
		t.Errorf("role == db: %v, want %v", got, want)
	}
	if got, want := srcMembers(t, s, id, 1), []string{"10.0.0.2/32", "10.0.0.3/32"}; !slices.Equal(got, want) {
		t.Errorf("zone == a: %v, want %v", got, want)
	}
	// Changing the profile's labels moves endpoints in and out, as deltas.
	g.Flush()
	g.OnUpdate(upd(profile("p1", lbl("tier", "back"))))
	g.OnUpdate(upd(profile("p2", lbl("role", "db"))))
	c := g.Flush()
	set := s.Policies[id].Ingress[0].Src.IPSet
	var d *MemberDelta
	for i := range c.MemberDeltas {
		if c.MemberDeltas[i].SetID == set {
			d = &c.MemberDeltas[i]
		}
	}
	if d == nil || !slices.Equal(d.Added, []Member{{Prefix: pfx("10.0.0.3/32")}}) || len(d.Removed) != 0 {
		t.Errorf("delta for role == db: %+v", d)
	}
	if got, want := setMembers(t, g.State(), set), []string{"10.0.0.2/32", "10.0.0.3/32"}; !slices.Equal(got, want) {
		t.Errorf("after relabel: %v, want %v", got, want)
	}
}

func TestLabelChangesMoveEndpoints(t *testing.T) {
	g, s := feed(t,
		upd(wep("ns", "local", node, nil, nil)),
		upd(wep("ns", "r", "h2", lbl("app", "db"), []string{"10.0.0.5/32"})),
		upd(np("ns", "p", v3.NetworkPolicySpec{Ingress: []v3.Rule{allowFrom("app == 'db'"), allowFrom("app == 'web'")}})),
	)
	db, web := s.Policies[npID("ns", "p")].Ingress[0].Src.IPSet, s.Policies[npID("ns", "p")].Ingress[1].Src.IPSet
	g.Flush()
	g.OnUpdate(upd(wep("ns", "r", "h2", lbl("app", "web"), []string{"10.0.0.5/32"})))
	c := g.Flush()
	want := []MemberDelta{
		{SetID: db, Removed: []Member{{Prefix: pfx("10.0.0.5/32")}}},
		{SetID: web, Added: []Member{{Prefix: pfx("10.0.0.5/32")}}},
	}
	slices.SortFunc(want, func(a, b MemberDelta) int { return cmpString(a.SetID, b.SetID) })
	if !reflect.DeepEqual(c.MemberDeltas, want) {
		t.Errorf("deltas %+v, want %+v", c.MemberDeltas, want)
	}
	if len(c.IPSetUpdates)+len(c.PolicyUpdates)+len(c.EndpointUpdates) != 0 {
		t.Errorf("a remote relabel changed more than members: %+v", c)
	}
	// A relabel and back within one batch is no change at all.
	g.OnUpdate(upd(wep("ns", "r", "h2", lbl("app", "db"), []string{"10.0.0.5/32"})))
	g.OnUpdate(upd(wep("ns", "r", "h2", lbl("app", "web"), []string{"10.0.0.5/32"})))
	if c := g.Flush(); !c.Empty() {
		t.Errorf("round trip gave changes: %+v", c)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestNamedPorts(t *testing.T) {
	w := wep("ns", "srv", "h2", lbl("app", "srv"), []string{"10.0.0.7/32", "fd00::7/128"})
	w.Spec.Ports = []v3.WorkloadEndpointPort{
		{Name: "http", Protocol: numorstring.ProtocolFromString("TCP"), Port: 8080},
		{Name: "http", Protocol: numorstring.ProtocolFromString("UDP"), Port: 8081},
		{Name: "dns", Protocol: numorstring.ProtocolFromString("UDP"), Port: 53},
	}
	other := wep("ns", "other", "h2", lbl("app", "other"), []string{"10.0.0.8/32"})
	other.Spec.Ports = []v3.WorkloadEndpointPort{{Name: "http", Protocol: numorstring.ProtocolFromString("TCP"), Port: 9090}}
	_, s := feed(t,
		upd(wep("ns", "local", node, nil, nil)),
		upd(w), upd(other),
		upd(np("ns", "p", v3.NetworkPolicySpec{Egress: []v3.Rule{
			{Action: v3.Allow, Protocol: tcp(), Destination: v3.EntityRule{Selector: "app == 'srv'", Ports: []numorstring.Port{port("http"), port("443"), port("1000:2000")}}},
			{Action: v3.Allow, Protocol: tcp(), Destination: v3.EntityRule{Ports: []numorstring.Port{port("http")}}},
		}})),
	)
	r := s.Policies[npID("ns", "p")].Egress[0]
	if !slices.Equal(r.Dst.Ports, []PortRange{{443, 443}, {1000, 2000}}) || len(r.Dst.NamedPortSets) != 1 {
		t.Fatalf("ports %+v named %v", r.Dst.Ports, r.Dst.NamedPortSets)
	}
	set := s.IPSets[r.Dst.NamedPortSets[0]]
	if set.Kind != NamedPortSet || set.PortName != "http" || set.Protocol != ProtoTCP {
		t.Errorf("set %+v", set)
	}
	if got, want := setMembers(t, s, set.ID), []string{"10.0.0.7/32,6:8080", "fd00::7/128,6:8080"}; !slices.Equal(got, want) {
		t.Errorf("members %v, want %v", got, want)
	}
	// Without a selector a named port is looked up everywhere (within the
	// policy's namespace: no selector field means no namespace scoping).
	r2 := s.Policies[npID("ns", "p")].Egress[1]
	if got, want := setMembers(t, s, r2.Dst.NamedPortSets[0]), []string{"10.0.0.7/32,6:8080", "10.0.0.8/32,6:9090", "fd00::7/128,6:8080"}; !slices.Equal(got, want) {
		t.Errorf("unselected named port members %v, want %v", got, want)
	}
	if r2.Dst.IPSet != "" {
		t.Errorf("rule without selector has IP set %q", r2.Dst.IPSet)
	}
}

func TestMissingProfiles(t *testing.T) {
	g, s := feed(t, upd(wep("ns", "w", node, nil, nil, "kns.ns", "gone")), upd(profile("kns.ns", nil)))
	want := []ProfileRef{{Name: "kns.ns"}, {Name: "gone", Missing: true}}
	if got := s.Endpoints[wepID("ns", "w")].Profiles; !reflect.DeepEqual(got, want) {
		t.Errorf("profiles %+v, want %+v", got, want)
	}
	if _, ok := s.Profiles["gone"]; ok {
		t.Error("missing profile in state")
	}
	g.Flush()
	g.OnUpdate(upd(profile("gone", nil, v3.Rule{Action: v3.Allow})))
	c := g.Flush()
	if len(c.ProfileUpdates) != 1 || c.ProfileUpdates[0].Name != "gone" || len(c.EndpointUpdates) != 1 ||
		c.EndpointUpdates[0].Profiles[1].Missing {
		t.Errorf("creating the profile: %+v", c)
	}
	g.OnUpdate(del(v3.KindProfile, "", "gone"))
	c = g.Flush()
	if !slices.Equal(c.ProfileRemoves, []string{"gone"}) || len(c.EndpointUpdates) != 1 || !c.EndpointUpdates[0].Profiles[1].Missing {
		t.Errorf("deleting the profile: %+v", c)
	}
}

func TestStagedPoliciesIgnored(t *testing.T) {
	_, s := feed(t,
		upd(wep("ns", "w", node, nil, nil)),
		upd(&v3.StagedNetworkPolicy{ObjectMeta: meta("ns", "p", nil), Spec: v3.StagedNetworkPolicySpec{Selector: "all()", Ingress: []v3.Rule{{Action: v3.Deny}}}}),
		upd(&v3.StagedGlobalNetworkPolicy{ObjectMeta: meta("", "g", nil), Spec: v3.StagedGlobalNetworkPolicySpec{Selector: "all()"}}),
	)
	if len(s.Policies) != 0 || len(s.Endpoints[wepID("ns", "w")].Ingress) != 0 {
		t.Errorf("staged policy enforced: %+v", s.Policies)
	}
}

func TestHostEndpoints(t *testing.T) {
	_, s := feed(t,
		upd(hep("eth0", node, lbl("host", "yes"), []string{"192.168.0.1"}, "hp")),
		upd(wep("ns", "w", node, lbl("host", "yes"), nil)),
		upd(gnp("normal", v3.GlobalNetworkPolicySpec{Selector: "host == 'yes'", Ingress: []v3.Rule{{Action: v3.Allow}}, Egress: []v3.Rule{{Action: v3.Allow}}})),
		upd(gnp("forward", v3.GlobalNetworkPolicySpec{Selector: "host == 'yes'", ApplyOnForward: true, Egress: []v3.Rule{{Action: v3.Allow}}})),
		upd(gnp("prednat", v3.GlobalNetworkPolicySpec{Selector: "host == 'yes'", ApplyOnForward: true, PreDNAT: true, Ingress: []v3.Rule{{Action: v3.Deny}}})),
		upd(gnp("untracked", v3.GlobalNetworkPolicySpec{Selector: "host == 'yes'", ApplyOnForward: true, DoNotTrack: true, Ingress: []v3.Rule{{Action: v3.Allow}}, Egress: []v3.Rule{{Action: v3.Allow}}})),
	)
	h := s.Endpoints[EndpointID{Kind: v3.KindHostEndpoint, Name: "eth0"}]
	check := func(what string, got []TierPolicies, want ...string) {
		t.Helper()
		if g := tiersOf(got); !slices.Equal(g, want) {
			t.Errorf("%s: %q, want %q", what, g, want)
		}
	}
	check("ingress", h.Ingress, "default:normal/Deny")
	check("egress", h.Egress, "default:forward,normal/Deny")
	check("forward egress", h.Host.ForwardEgress, "default:forward/Deny")
	check("forward ingress", h.Host.ForwardIngress)
	check("preDNAT", h.Host.PreDNATIngress, "default:prednat/Deny")
	check("untracked ingress", h.Host.UntrackedIngress, "default:untracked/Deny")
	check("untracked egress", h.Host.UntrackedEgress, "default:untracked/Deny")
	if !slices.Equal(h.Addresses, []netip.Prefix{pfx("192.168.0.1/32")}) || h.InterfaceName != "eth0" ||
		!reflect.DeepEqual(h.Profiles, []ProfileRef{{Name: "hp", Missing: true}}) {
		t.Errorf("host endpoint %+v", h)
	}
	w := s.Endpoints[wepID("ns", "w")]
	check("workload ingress", w.Ingress, "default:normal/Deny")
	if w.Host != nil {
		t.Error("workload has host policies")
	}
}

func TestOnlyLocalNeedsReachTheDriver(t *testing.T) {
	g, s := feed(t,
		upd(wep("ns", "local", node, lbl("app", "web"), []string{"10.0.0.1/32"})),
		upd(wep("ns", "remote", "h2", lbl("app", "db"), []string{"10.0.0.2/32"})),
		upd(np("ns", "web", v3.NetworkPolicySpec{Selector: "app == 'web'", Ingress: []v3.Rule{allowFrom("app == 'db'")}})),
		upd(np("ns", "db", v3.NetworkPolicySpec{Selector: "app == 'db'", Ingress: []v3.Rule{allowFrom("role == 'x'")}})),
	)
	if len(s.Endpoints) != 1 || len(s.Policies) != 1 || len(s.IPSets) != 1 || s.Policies[npID("ns", "web")] == nil {
		t.Fatalf("state: %d endpoints, policies %v, %d sets", len(s.Endpoints), s.Policies, len(s.IPSets))
	}
	g.Flush()
	// The remote endpoint moves here: its policy and set come in.
	g.OnUpdate(upd(wep("ns", "remote", node, lbl("app", "db"), []string{"10.0.0.2/32"})))
	c := g.Flush()
	if len(c.PolicyUpdates) != 1 || c.PolicyUpdates[0].ID != npID("ns", "db") || len(c.IPSetUpdates) != 1 || len(c.EndpointUpdates) != 1 {
		t.Errorf("moving an endpoint here: %+v", c)
	}
	// Deleting it takes them away again.
	g.OnUpdate(del(v3.KindWorkloadEndpoint, "ns", "remote"))
	c = g.Flush()
	if !slices.Equal(c.PolicyRemoves, []PolicyID{npID("ns", "db")}) || len(c.IPSetRemoves) != 1 ||
		!slices.Equal(c.EndpointRemoves, []EndpointID{wepID("ns", "remote")}) {
		t.Errorf("deleting it: %+v", c)
	}
	if len(c.MemberDeltas) != 1 || len(c.MemberDeltas[0].Removed) != 1 {
		t.Errorf("its address should leave the app == db set: %+v", c.MemberDeltas)
	}
}

func TestDeletes(t *testing.T) {
	g, _ := feed(t,
		upd(wep("ns", "w", node, lbl("app", "web"), []string{"10.0.0.1/32"})),
		upd(tier("t", f64(1), v3.Pass)),
		upd(np("ns", "p", v3.NetworkPolicySpec{Tier: "t", Selector: "app == 'web'", Ingress: []v3.Rule{allowFrom("app == 'web'")}})),
	)
	g.Flush()
	g.OnUpdate(del(v3.KindNetworkPolicy, "ns", "p"))
	g.OnUpdate(del(v3.KindTier, "", "t"))
	c := g.Flush()
	if len(c.PolicyRemoves) != 1 || len(c.IPSetRemoves) != 1 || len(c.EndpointUpdates) != 1 || len(c.EndpointUpdates[0].Ingress) != 0 {
		t.Errorf("deleting the policy: %+v", c)
	}
	g.OnUpdate(del(v3.KindWorkloadEndpoint, "ns", "w"))
	c = g.Flush()
	if len(c.EndpointRemoves) != 1 {
		t.Errorf("deleting the endpoint: %+v", c)
	}
	if s := g.State(); len(s.Endpoints)+len(s.Policies)+len(s.IPSets)+len(s.Profiles) != 0 {
		t.Errorf("state not empty: %+v", s)
	}
	if len(g.items)+len(g.policies)+len(g.ipsets)+len(g.profiles)+len(g.tiers) != 0 ||
		len(g.setIdx.sels)+len(g.polIdx.sels)+len(g.setIdx.keys)+len(g.polIdx.keys) != 0 {
		t.Errorf("graph keeps state after everything was deleted")
	}
}

func TestRuleResolution(t *testing.T) {
	typ, code := 8, 0
	v4 := 4
	_, s := feed(t,
		upd(wep("ns", "w", node, nil, nil)),
		upd(tier("sec", f64(1), v3.Deny)),
		upd(np("ns", "p", v3.NetworkPolicySpec{Tier: "sec", Ingress: []v3.Rule{
			{Action: v3.Log},
			{Action: v3.Allow, IPVersion: &v4, Protocol: numorstring.ProtocolFromStringP("ICMP"), ICMP: &v3.ICMPFields{Type: &typ, Code: &code},
				NotICMP: &v3.ICMPFields{Type: &typ},
				Source:  v3.EntityRule{Nets: []string{"10.1.0.0/16"}, NotNets: []string{"10.1.2.3"}, NotSelector: "bad == 'x'"}},
			{Action: v3.Deny, NotProtocol: numorstring.ProtocolFromIntP(132)},
		}})),
	)
	rs := s.Policies[npID("ns", "p")].Ingress
	if rs[0].Action != Log || rs[0].LogPrefix != "sec ns/p I0" || rs[1].LogPrefix != "sec ns/p I1" {
		t.Errorf("rule 0: %+v", rs[0])
	}
	r := rs[1]
	if r.IPVersion != 4 || r.Protocol != ProtoICMP || !reflect.DeepEqual(r.ICMP, &ICMPMatch{Type: 8, HasCode: true}) ||
		!reflect.DeepEqual(r.NotICMP, &ICMPMatch{Type: 8}) ||
		!slices.Equal(r.Src.Nets, []netip.Prefix{pfx("10.1.0.0/16")}) || !slices.Equal(r.Src.NotNets, []netip.Prefix{pfx("10.1.2.3/32")}) {
		t.Errorf("rule 1: %+v", r)
	}
	if r.Src.NotIPSet != selector.MustParse("bad == 'x'").UniqueID() {
		t.Errorf("notSelector set %q", r.Src.NotIPSet)
	}
	if want := `projectcalico.org/namespace == "ns"`; s.IPSets[r.Src.IPSet].Selector != want {
		t.Errorf("notSelector's positive scope %q, want %q", s.IPSets[r.Src.IPSet].Selector, want)
	}
	if rs[2].NotProtocol != ProtoSCTP || rs[2].Protocol != 0 {
		t.Errorf("rule 2: %+v", rs[2])
	}
	if rs[0].ID == rs[1].ID || len(rs[0].ID) != 16 {
		t.Errorf("rule IDs %q %q", rs[0].ID, rs[1].ID)
	}
}

func TestFlushBeforeInSync(t *testing.T) {
	g := New(Config{NodeName: node})
	g.OnUpdate(upd(wep("ns", "w", node, nil, nil)))
	if c := g.Flush(); !c.Empty() || c.InSync {
		t.Errorf("flush before in sync: %+v", c)
	}
	g.OnInSync()
	if c := g.Flush(); len(c.EndpointUpdates) != 1 || !c.InSync {
		t.Errorf("first flush after in sync: %+v", c)
	}
}

// TestIncrementalCost checks the index keeps work proportional to the
// change: with many hinted selectors in use, a new endpoint is evaluated
// against the few filed under its labels, and a new selector against the
// few endpoints carrying its label.
func TestIncrementalCost(t *testing.T) {
	g := New(Config{NodeName: node})
	g.OnUpdate(upd(wep("ns", "local", node, nil, nil)))
	for i := range 200 {
		g.OnUpdate(upd(wep("ns", fmt.Sprintf("r%d", i), "h2", lbl("app", fmt.Sprint("a", i)), []string{fmt.Sprintf("10.0.%d.%d/32", i/256, i%256)})))
	}
	var rules []v3.Rule
	for i := range 200 {
		rules = append(rules, allowFrom(fmt.Sprintf("app == 'a%d'", i)))
	}
	g.OnUpdate(upd(np("ns", "p", v3.NetworkPolicySpec{Ingress: rules})))
	if n := g.setIdx.evalCount; n > 400 {
		t.Errorf("200 selectors over 200 endpoints took %d evaluations", n)
	}
	g.setIdx.evalCount = 0
	g.OnUpdate(upd(wep("ns", "new", "h2", lbl("app", "a7"), []string{"10.9.0.1/32"})))
	if n := g.setIdx.evalCount; n > 2 {
		t.Errorf("a new endpoint took %d evaluations", n)
	}
}
