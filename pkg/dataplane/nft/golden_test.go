package nft

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/knftables"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// ---- building desired states ----

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func wl(name, iface string, addrs ...string) *calc.Endpoint {
	ep := &calc.Endpoint{ID: calc.EndpointID{Kind: v3.KindWorkloadEndpoint, Namespace: "ns", Name: name}, InterfaceName: iface}
	for _, a := range addrs {
		ep.Addresses = append(ep.Addresses, pfx(a))
	}
	return ep
}

func gpol(name, tier string, ingress, egress []calc.Rule) *calc.Policy {
	return &calc.Policy{ID: calc.PolicyID{Kind: v3.KindGlobalNetworkPolicy, Name: name}, Tier: tier, Ingress: ingress, Egress: egress}
}

func tierOf(name string, def calc.Action, pols ...*calc.Policy) calc.TierPolicies {
	t := calc.TierPolicies{Name: name, DefaultAction: def}
	for _, p := range pols {
		t.Policies = append(t.Policies, p.ID)
	}
	return t
}

func rule(prefix string, a calc.Action, f func(*calc.Rule)) calc.Rule {
	r := calc.Rule{ID: prefix, LogPrefix: prefix, Action: a}
	if f != nil {
		f(&r)
	}
	return r
}

func ports(rs ...uint16) []calc.PortRange {
	var out []calc.PortRange
	for i := 0; i+1 < len(rs); i += 2 {
		out = append(out, calc.PortRange{First: rs[i], Last: rs[i+1]})
	}
	return out
}

type scenario struct {
	state *calc.State
	pools []Pool
}

// goldenSelector is shaped like the calc graph's canonical selectors:
// strings in double quotes, and long enough to need cutting in a comment.
func goldenSelector(id string) string {
	return `app == "` + id + `" && projectcalico.org/namespace == "ns1" && tier in {"api", "db", "web"} && !has(quarantine)`
}

func newScenario() *scenario { s := calc.NewState(); s.InSync = true; return &scenario{state: s} }

func (s *scenario) set(id string, kind calc.IPSetKind, members ...calc.Member) {
	set := &calc.IPSet{ID: id, Kind: kind, Selector: goldenSelector(id)}
	if kind == calc.NamedPortSet {
		set.Protocol, set.PortName = calc.ProtoTCP, "http"
	}
	s.state.IPSets[id] = set
	m := map[calc.Member]struct{}{}
	for _, x := range members {
		m[x] = struct{}{}
	}
	s.state.Members[id] = m
}

func (s *scenario) pol(p *calc.Policy)   { s.state.Policies[p.ID] = p }
func (s *scenario) prof(p *calc.Profile) { s.state.Profiles[p.Name] = p }
func (s *scenario) ep(e *calc.Endpoint)  { s.state.Endpoints[e.ID] = e }
func member(p string) calc.Member        { return calc.Member{Prefix: pfx(p)} }
func npMember(p string, port uint16) calc.Member {
	return calc.Member{Prefix: pfx(p), Protocol: calc.ProtoTCP, Port: port}
}

// changesOf is the first Flush of a graph whose state is st: everything
// as updates.
func changesOf(st *calc.State) *calc.Changes {
	c := &calc.Changes{InSync: st.InSync}
	for _, id := range slices.Sorted(mapKeys(st.IPSets)) {
		var ms []calc.Member
		for m := range st.Members[id] {
			ms = append(ms, m)
		}
		slices.SortFunc(ms, calc.CompareMembers)
		c.IPSetUpdates = append(c.IPSetUpdates, calc.IPSetUpdate{Set: st.IPSets[id], Members: ms})
	}
	for _, p := range st.Policies {
		c.PolicyUpdates = append(c.PolicyUpdates, p)
	}
	slices.SortFunc(c.PolicyUpdates, func(a, b *calc.Policy) int { return calc.ComparePolicyIDs(a.ID, b.ID) })
	for _, n := range slices.Sorted(mapKeys(st.Profiles)) {
		c.ProfileUpdates = append(c.ProfileUpdates, st.Profiles[n])
	}
	for _, e := range st.Endpoints {
		c.EndpointUpdates = append(c.EndpointUpdates, e)
	}
	slices.SortFunc(c.EndpointUpdates, func(a, b *calc.Endpoint) int { return calc.CompareEndpointIDs(a.ID, b.ID) })
	return c
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func newFake() *knftables.Fake { return knftables.NewFake(knftables.InetFamily, "tortie") }

func render(t *testing.T, s *scenario) (*knftables.Fake, *Driver) {
	t.Helper()
	return renderWith(t, s, Config{})
}

// renderWith renders s with cfg (and s's pools).
func renderWith(t *testing.T, s *scenario, cfg Config) (*knftables.Fake, *Driver) {
	t.Helper()
	f := newFake()
	cfg.Pools = s.pools
	d := New(f, cfg)
	if err := d.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return f, d
}

// sortedDump is the fake's dump with the elements of each set sorted (the
// fake keeps insertion order, which is not part of the meaning); rules keep
// their order.
func sortedDump(f *knftables.Fake) string {
	lines := strings.Split(strings.TrimSpace(f.Dump()), "\n")
	var out, elems []string
	flush := func() {
		slices.Sort(elems)
		out = append(out, elems...)
		elems = nil
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "add element ") {
			elems = append(elems, l)
			continue
		}
		flush()
		out = append(out, l)
	}
	flush()
	return strings.Join(out, "\n") + "\n"
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s differs from the golden file (-want +got):\n%s", path, d)
	}
}
