package flowui

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
)

// Board is the policy board: tiers in order, their policies in order,
// each rule with how many connections it decided (in the records the
// ring holds).
type Board struct {
	Tiers []BoardTier `json:"tiers"`
	// Profiles are the profiles that decided connections.
	Profiles []BoardPolicy `json:"profiles"`
}

// BoardTier is one tier.
type BoardTier struct {
	Name          string        `json:"name"`
	Order         *float64      `json:"order,omitempty"`
	DefaultAction string        `json:"defaultAction"`
	Policies      []BoardPolicy `json:"policies"`
	// EndHits are the connections the tier's default action decided.
	EndHits int `json:"endHits"`
}

// BoardPolicy is one policy (or profile).
type BoardPolicy struct {
	Name   string      `json:"name"`
	Kind   string      `json:"kind"`
	Order  *float64    `json:"order,omitempty"`
	Staged bool        `json:"staged,omitempty"`
	Rules  []BoardRule `json:"rules"`
}

// BoardRule is one rule and its hits.
type BoardRule struct {
	Direction string `json:"direction"`
	Index     int    `json:"index"`
	Action    string `json:"action"`
	Summary   string `json:"summary"`
	Hits      int    `json:"hits"`
}

type hitKey struct {
	kind, tier, policy, profile, dir string
	rule                             int
}

// hits counts the connections each decision made in rs.
func hits(rs []flowlog.Record) map[hitKey]int {
	out := map[hitKey]int{}
	for i := range rs {
		d := rs[i].Decision
		out[hitKey{d.Kind, d.Tier, d.Policy, d.Profile, string(rs[i].Direction), d.Rule}] += rs[i].Connections
	}
	return out
}

// NewBoard lays out the tiers and policies of rs (a datastore snapshot;
// nil gives a board of what the records name alone) with the hits of the
// records.
func NewBoard(rs []v3.Resource, records []flowlog.Record) *Board {
	h := hits(records)
	tiers := map[string]*BoardTier{}
	tierOf := func(name string) *BoardTier {
		t := tiers[name]
		if t == nil {
			t = &BoardTier{Name: name, DefaultAction: "Deny", Policies: []BoardPolicy{}}
			tiers[name] = t
		}
		return t
	}
	seen := map[string]bool{}
	for _, r := range rs {
		switch x := r.(type) {
		case *v3.Tier:
			t := tierOf(x.Name)
			t.Order = x.Spec.Order
			if x.Spec.DefaultAction != nil {
				t.DefaultAction = string(*x.Spec.DefaultAction)
			}
		case *v3.NetworkPolicy:
			p := policyRules(x.Namespace+"/"+x.Name, v3.KindNetworkPolicy, x.Spec.Order, x.Spec.Ingress, x.Spec.Egress)
			tierOf(x.Spec.Tier).Policies = append(tierOf(x.Spec.Tier).Policies, p)
			seen[x.Spec.Tier+" "+p.Name] = true
		case *v3.GlobalNetworkPolicy:
			p := policyRules(x.Name, v3.KindGlobalNetworkPolicy, x.Spec.Order, x.Spec.Ingress, x.Spec.Egress)
			tierOf(x.Spec.Tier).Policies = append(tierOf(x.Spec.Tier).Policies, p)
			seen[x.Spec.Tier+" "+p.Name] = true
		case *v3.StagedNetworkPolicy:
			p := policyRules(x.Namespace+"/"+x.Name, v3.KindStagedNetworkPolicy, x.Spec.Order, x.Spec.Ingress, x.Spec.Egress)
			p.Staged = true
			tierOf(x.Spec.Tier).Policies = append(tierOf(x.Spec.Tier).Policies, p)
		case *v3.StagedGlobalNetworkPolicy:
			p := policyRules(x.Name, v3.KindStagedGlobalNetworkPolicy, x.Spec.Order, x.Spec.Ingress, x.Spec.Egress)
			p.Staged = true
			tierOf(x.Spec.Tier).Policies = append(tierOf(x.Spec.Tier).Policies, p)
		}
	}
	// Decisions of policies the snapshot does not have (none given, or
	// deleted since): listed with the rules the records name.
	profiles := map[string]*BoardPolicy{}
	for k := range h {
		switch k.kind {
		case "rule":
			if !seen[k.tier+" "+k.policy] {
				t := tierOf(k.tier)
				t.Policies = append(t.Policies, BoardPolicy{Name: k.policy, Kind: "(from flow records)", Rules: []BoardRule{}})
				seen[k.tier+" "+k.policy] = true
			}
		case "tier default":
			tierOf(k.tier)
		case "profile rule", "missing profile":
			if profiles[k.profile] == nil {
				profiles[k.profile] = &BoardPolicy{Name: k.profile, Kind: "Profile", Rules: []BoardRule{}}
			}
		}
	}
	b := &Board{Tiers: []BoardTier{}, Profiles: []BoardPolicy{}}
	for _, t := range tiers {
		for i := range t.Policies {
			p := &t.Policies[i]
			for j := range p.Rules {
				r := &p.Rules[j]
				if !p.Staged {
					r.Hits = h[hitKey{"rule", t.Name, p.Name, "", r.Direction, r.Index}]
				}
			}
			if p.Kind == "(from flow records)" {
				for k, n := range h {
					if k.kind == "rule" && k.tier == t.Name && k.policy == p.Name {
						p.Rules = append(p.Rules, BoardRule{Direction: k.dir, Index: k.rule, Summary: "(rule as the records name it)", Hits: n})
					}
				}
				sortRules(p.Rules)
			}
		}
		for _, dir := range []string{"Ingress", "Egress"} {
			t.EndHits += h[hitKey{"tier default", t.Name, "", "", dir, 0}]
		}
		slices.SortStableFunc(t.Policies, func(a, b BoardPolicy) int {
			return cmp.Or(calc.CompareOrder(a.Order, b.Order), strings.Compare(a.Name, b.Name), compareBool(a.Staged, b.Staged))
		})
		b.Tiers = append(b.Tiers, *t)
	}
	slices.SortFunc(b.Tiers, func(a, c BoardTier) int {
		return cmp.Or(calc.CompareOrder(a.Order, c.Order), strings.Compare(a.Name, c.Name))
	})
	for name, p := range profiles {
		for k, n := range h {
			if k.profile == name {
				summary := "(rule as the records name it)"
				if k.kind == "missing profile" {
					summary = "profile does not exist: deny"
				}
				p.Rules = append(p.Rules, BoardRule{Direction: k.dir, Index: k.rule, Summary: summary, Hits: n})
			}
		}
		sortRules(p.Rules)
		b.Profiles = append(b.Profiles, *p)
	}
	slices.SortFunc(b.Profiles, func(a, c BoardPolicy) int { return strings.Compare(a.Name, c.Name) })
	return b
}

func sortRules(rs []BoardRule) {
	slices.SortFunc(rs, func(a, b BoardRule) int { return cmp.Or(strings.Compare(a.Direction, b.Direction), a.Index-b.Index) })
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func policyRules(name, kind string, order *float64, ingress, egress []v3.Rule) BoardPolicy {
	p := BoardPolicy{Name: name, Kind: kind, Order: order, Rules: []BoardRule{}}
	for _, d := range []struct {
		dir   string
		rules []v3.Rule
	}{{"Ingress", ingress}, {"Egress", egress}} {
		for i, r := range d.rules {
			p.Rules = append(p.Rules, BoardRule{Direction: d.dir, Index: i, Action: string(r.Action), Summary: ruleSummary(&r)})
		}
	}
	return p
}

// ruleSummary is a rule in one short line: "TCP from role == 'web' to
// ports [80]".
func ruleSummary(r *v3.Rule) string {
	var parts []string
	if r.Protocol != nil {
		parts = append(parts, r.Protocol.String())
	}
	if r.ICMP != nil && r.ICMP.Type != nil {
		parts = append(parts, fmt.Sprintf("type %d", *r.ICMP.Type))
	}
	side := func(word string, e v3.EntityRule) {
		var s []string
		if e.Selector != "" {
			s = append(s, e.Selector)
		}
		if e.NamespaceSelector != "" {
			s = append(s, "namespaces "+e.NamespaceSelector)
		}
		if e.NotSelector != "" {
			s = append(s, "not "+e.NotSelector)
		}
		if len(e.Nets) > 0 {
			s = append(s, strings.Join(e.Nets, ", "))
		}
		if len(e.NotNets) > 0 {
			s = append(s, "not "+strings.Join(e.NotNets, ", "))
		}
		if len(e.Ports) > 0 {
			ps := make([]string, len(e.Ports))
			for i, p := range e.Ports {
				ps[i] = p.String()
			}
			s = append(s, "ports "+strings.Join(ps, ", "))
		}
		if len(s) > 0 {
			parts = append(parts, word+" "+strings.Join(s, " "))
		}
	}
	side("from", r.Source)
	side("to", r.Destination)
	if len(parts) == 0 {
		return "everything"
	}
	return strings.Join(parts, " ")
}

// Graph is who talks to whom: a node per endpoint (or address), an edge
// per source and destination with the connections allowed and denied and
// the decisions that made them.
type Graph struct {
	Nodes []GraphNode `json:"nodes"`
	Edges []GraphEdge `json:"edges"`
}

// GraphNode is one end.
type GraphNode struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace,omitempty"`
	Kind      string `json:"kind,omitempty"`
}

// GraphEdge is what went from Src to Dst.
type GraphEdge struct {
	Src       string   `json:"src"`
	Dst       string   `json:"dst"`
	Allowed   int      `json:"allowed"`
	Denied    int      `json:"denied"`
	Decisions []string `json:"decisions"`
}

// NewGraph makes the graph of records. A connection between two local
// endpoints has two records (the source's egress, the destination's
// ingress); the edge counts the side that decided last: the ingress
// record when there is one for the pair, else the egress one.
func NewGraph(records []flowlog.Record) *Graph {
	g := &Graph{Nodes: []GraphNode{}, Edges: []GraphEdge{}}
	nodes := map[string]GraphNode{}
	edges := map[[2]string]*GraphEdge{}
	decisions := map[[2]string]map[string]bool{}
	hasIngress := map[[2]string]bool{}
	for i := range records {
		r := &records[i]
		if r.Direction == "Ingress" {
			hasIngress[[2]string{r.Src.String(), r.Dst.String()}] = true
		}
	}
	for i := range records {
		r := &records[i]
		s, d := r.Src.String(), r.Dst.String()
		k := [2]string{s, d}
		nodes[s] = GraphNode{ID: s, Namespace: r.Src.Namespace, Kind: r.Src.Kind}
		nodes[d] = GraphNode{ID: d, Namespace: r.Dst.Namespace, Kind: r.Dst.Kind}
		e := edges[k]
		if e == nil {
			e = &GraphEdge{Src: s, Dst: d}
			edges[k] = e
			decisions[k] = map[string]bool{}
		}
		if r.Direction == "Egress" && hasIngress[k] && r.Action == "Allow" {
			continue // the ingress record decided these
		}
		if r.Action == "Allow" {
			e.Allowed += r.Connections
		} else {
			e.Denied += r.Connections
		}
		decisions[k][fmt.Sprintf("%s %s: %s", strings.ToLower(string(r.Direction)), r.Action, r.Decision)] = true
	}
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, n)
	}
	slices.SortFunc(g.Nodes, func(a, b GraphNode) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.ID, b.ID))
	})
	for k, e := range edges {
		for d := range decisions[k] {
			e.Decisions = append(e.Decisions, d)
		}
		slices.Sort(e.Decisions)
		g.Edges = append(g.Edges, *e)
	}
	slices.SortFunc(g.Edges, func(a, b GraphEdge) int { return cmp.Or(strings.Compare(a.Src, b.Src), strings.Compare(a.Dst, b.Dst)) })
	return g
}
