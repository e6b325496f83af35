package calc

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/selector"
)

// Labels through which selectors see namespaces and service accounts, as in
// Calico: every namespaced thing carries its namespace's name; it inherits
// its namespace's labels, prefixed, from the namespace profile "kns.<ns>";
// a workload inherits its service account's labels, prefixed, from
// "ksa.<ns>.<sa>".
const (
	LabelNamespace         = v3.LabelNamespace
	LabelServiceAccount    = "projectcalico.org/serviceaccount"
	NamespaceLabelPrefix   = "pcns."
	ServiceAccountPrefix   = "pcsa."
	NamespaceProfilePrefix = "kns."
)

// never is a selector that matches nothing: what a selector we cannot
// parse (which validation keeps out of the datastore) turns into.
var never = selector.MustParse("!all()")

// setRef is an IP set a rule uses: the graph computes the members of the
// sets that active policies and profiles reference.
type setRef struct {
	id    string
	kind  IPSetKind
	sel   selector.Selector
	proto uint8
	port  string
}

func (r setRef) model() *IPSet {
	return &IPSet{ID: r.id, Kind: r.kind, Selector: r.sel.String(), Protocol: r.proto, PortName: r.port}
}

func addressSetRef(sel selector.Selector) setRef {
	return setRef{id: sel.UniqueID(), kind: AddressSet, sel: sel}
}

func namedPortSetRef(sel selector.Selector, proto uint8, name string) setRef {
	return setRef{id: namedPortSetID(sel.String(), proto, name), kind: NamedPortSet, sel: sel, proto: proto, port: name}
}

// namedPortSetID hashes like selector.UniqueID, over the selector, protocol
// and port name, so the same named port of the same selector is one set.
func namedPortSetID(canonical string, proto uint8, name string) string {
	sum := sha256.Sum224([]byte("n:" + canonical + "|" + strconv.Itoa(int(proto)) + "|" + name))
	return "n:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// ruleOwner is the policy or profile whose rules are being resolved.
type ruleOwner struct {
	tier string // "" for a profile
	name string // PolicyID.String() or the profile name
	ns   string // namespace that scopes rule selectors; "" for global
}

func (o ruleOwner) logName() string {
	if o.tier == "" {
		return "profile " + o.name
	}
	return o.tier + " " + o.name
}

// resolver turns v3 rules into model rules, collecting the IP sets they use.
type resolver struct {
	refs map[string]setRef
}

func newResolver() *resolver { return &resolver{refs: map[string]setRef{}} }

func (rv *resolver) use(r setRef) string {
	rv.refs[r.id] = r
	return r.id
}

func (rv *resolver) rules(o ruleOwner, dir Direction, in []v3.Rule) []Rule {
	if len(in) == 0 {
		return nil
	}
	out := make([]Rule, len(in))
	for i := range in {
		out[i] = rv.rule(o, dir, i, &in[i])
	}
	return out
}

func (rv *resolver) rule(o ruleOwner, dir Direction, idx int, r *v3.Rule) Rule {
	d := "I"
	if dir == Egress {
		d = "E"
	}
	out := Rule{
		ID:        ruleID(o, d, idx, r),
		LogPrefix: o.logName() + " " + d + strconv.Itoa(idx),
		Action:    Action(r.Action),
	}
	if r.IPVersion != nil {
		out.IPVersion = uint8(*r.IPVersion)
	}
	out.Protocol = protoNum(r.Protocol)
	out.NotProtocol = protoNum(r.NotProtocol)
	out.ICMP = icmpMatch(r.ICMP)
	out.NotICMP = icmpMatch(r.NotICMP)
	out.Src = rv.entity(&r.Source, o.ns, out.Protocol)
	out.Dst = rv.entity(&r.Destination, o.ns, out.Protocol)
	if r.Metadata != nil && len(r.Metadata.Annotations) > 0 {
		out.Annotations = make(map[string]string, len(r.Metadata.Annotations))
		for k, v := range r.Metadata.Annotations {
			out.Annotations[k] = v
		}
	}
	return out
}

// ruleID hashes where the rule is and what it says.
func ruleID(o ruleOwner, dir string, idx int, r *v3.Rule) string {
	js, _ := json.Marshal(r)
	h := sha256.New224()
	h.Write([]byte(o.tier + "|" + o.name + "|" + dir + strconv.Itoa(idx) + "|"))
	h.Write(js)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))[:16]
}

func protoNum(p *numorstring.Protocol) uint8 {
	if p == nil {
		return 0
	}
	n, err := p.NumValue()
	if err != nil {
		return 0
	}
	return n
}

func icmpMatch(f *v3.ICMPFields) *ICMPMatch {
	if f == nil || f.Type == nil {
		return nil
	}
	m := &ICMPMatch{Type: uint8(*f.Type)}
	if f.Code != nil {
		m.Code, m.HasCode = uint8(*f.Code), true
	}
	return m
}

func (rv *resolver) entity(e *v3.EntityRule, ns string, proto uint8) EntityMatch {
	var m EntityMatch
	m.Nets = parseNets(e.Nets)
	m.NotNets = parseNets(e.NotNets)
	pos := entitySelector(e, ns)
	if pos != "" {
		m.IPSet = rv.use(addressSetRef(parseOrNever(pos)))
	}
	if e.NotSelector != "" {
		m.NotIPSet = rv.use(addressSetRef(parseOrNever(e.NotSelector)))
	}
	// A named port is looked up on the endpoints the rule's selector
	// matches, or on every endpoint when it has none.
	npSel := pos
	if npSel == "" {
		npSel = "all()"
	}
	m.Ports, m.NamedPortSets = rv.ports(e.Ports, npSel, proto)
	m.NotPorts, m.NotNamedPortSets = rv.ports(e.NotPorts, npSel, proto)
	return m
}

func (rv *resolver) ports(ps []numorstring.Port, sel string, proto uint8) ([]PortRange, []string) {
	var ranges []PortRange
	var sets []string
	for _, p := range ps {
		if p.IsNamed() {
			if proto == 0 {
				continue // validation requires a protocol with ports
			}
			sets = append(sets, rv.use(namedPortSetRef(parseOrNever(sel), proto, p.PortName)))
			continue
		}
		ranges = append(ranges, PortRange{First: p.MinPort, Last: p.MaxPort})
	}
	return ranges, sets
}

func parseNets(nets []string) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range nets {
		if p, ok := parsePrefix(n); ok {
			out = append(out, p)
		}
	}
	return out
}

// parsePrefix accepts a CIDR or a bare address and masks it.
func parsePrefix(s string) (netip.Prefix, bool) {
	p, fe := v3.ParseNet("", s)
	if fe != nil {
		return netip.Prefix{}, false
	}
	return p, true
}

func parseOrNever(expr string) selector.Selector {
	s, err := selector.Parse(expr)
	if err != nil {
		return never
	}
	return s
}

// entitySelector is the one selector for the endpoints and network sets a
// rule's source or destination matches, as Calico forms it: the selector
// ANDed with the service-account match; then, if any of selector,
// notSelector or namespaceSelector is used, restricted to the namespaces
// of the namespaceSelector or, without one, to the policy's own namespace.
// "" means the rule does not match on a selector at all.
func entitySelector(e *v3.EntityRule, ns string) string {
	var nsSel string
	switch {
	case e.NamespaceSelector != "":
		nsSel = namespaceSelector(e.NamespaceSelector)
	case ns != "":
		nsSel = namespaceIs(ns)
	}
	var sa string
	if e.ServiceAccounts != nil {
		sa = serviceAccountSelector(e.ServiceAccounts.Selector, e.ServiceAccounts.Names)
	}
	sel := and(sa, strings.TrimSpace(e.Selector))
	if nsSel != "" && (sel != "" || e.NotSelector != "" || e.NamespaceSelector != "") {
		sel = and(nsSel, sel)
	}
	return sel
}

func namespaceIs(ns string) string {
	return LabelNamespace + " == " + quote(ns)
}

// quote picks the quote character the value cannot contain.
func quote(v string) string {
	if strings.Contains(v, `"`) {
		return "'" + v + "'"
	}
	return `"` + v + `"`
}

// and joins the non-empty selectors with &&.
func and(sels ...string) string {
	var parts []string
	for _, s := range sels {
		if strings.TrimSpace(s) != "" {
			parts = append(parts, "("+s+")")
		}
	}
	if len(parts) == 1 {
		return parts[0][1 : len(parts[0])-1]
	}
	return strings.Join(parts, " && ")
}

// namespaceSelector moves a selector over namespace labels onto the labels
// namespaced things inherit from their namespace: `team == "x"` becomes
// `pcns.team == "x"`, all() any namespaced thing, global() anything not
// namespaced.
func namespaceSelector(expr string) string {
	return prefixed(expr, NamespaceLabelPrefix, LabelNamespace, globalIsUnlabelled)
}

// serviceAccountSelector is the match of a serviceAccounts clause: the
// labels of the service account (all() meaning any service account) and its
// name among names.
func serviceAccountSelector(expr string, names []string) string {
	var sel, byName string
	if strings.TrimSpace(expr) != "" {
		sel = prefixed(expr, ServiceAccountPrefix, LabelServiceAccount, globalIsAll)
	}
	if len(names) > 0 {
		e := selector.Expr{Op: selector.OpIn, Label: LabelServiceAccount, Values: names}
		byName = e.String()
	}
	return and(sel, byName)
}

// globalMeaning is what prefixed makes of global().
type globalMeaning uint8

const (
	// globalIsUnlabelled: global() selects what lacks anyLabel (for
	// namespaces: whatever is not namespaced).
	globalIsUnlabelled globalMeaning = iota
	// globalIsAll: global() selects as all() does.
	globalIsAll
)

// prefixed rewrites expr's labels with prefix, all() to has(anyLabel) and
// global() as global says. An unparsable expression yields a selector that
// matches nothing.
func prefixed(expr, prefix, anyLabel string, global globalMeaning) string {
	s, err := selector.Parse(expr)
	if err != nil {
		return never.String()
	}
	t := selector.Tree(s)
	var walk func(e *selector.Expr)
	walk = func(e *selector.Expr) {
		switch e.Op {
		case selector.OpAll:
			*e = selector.Expr{Op: selector.OpHas, Label: anyLabel}
			return
		case selector.OpGlobal:
			if global == globalIsUnlabelled {
				*e = selector.Expr{Op: selector.OpNot, Args: []selector.Expr{{Op: selector.OpHas, Label: anyLabel}}}
			} else {
				*e = selector.Expr{Op: selector.OpHas, Label: anyLabel}
			}
			return
		}
		if e.Label != "" {
			e.Label = prefix + e.Label
		}
		for i := range e.Args {
			walk(&e.Args[i])
		}
	}
	walk(&t)
	return t.String()
}

// policyTypes applies Calico's defaulting of an empty types list.
func policyTypes(types []v3.PolicyType, ingress, egress []v3.Rule) (in, eg bool) {
	if len(types) == 0 {
		switch {
		case len(egress) == 0:
			return true, false
		case len(ingress) == 0:
			return false, true
		default:
			return true, true
		}
	}
	for _, t := range types {
		switch t {
		case v3.PolicyTypeIngress:
			in = true
		case v3.PolicyTypeEgress:
			eg = true
		}
	}
	return in, eg
}

// policySelector is the selector of the endpoints a policy applies to: its
// selector, within its namespace (for a namespaced policy) or the
// namespaces of its namespaceSelector (global policy), and restricted by its
// serviceAccountSelector.
func policySelector(sel, ns, nsSelector, saSelector string) string {
	scope := ""
	switch {
	case ns != "":
		scope = namespaceIs(ns)
	case strings.TrimSpace(nsSelector) != "":
		scope = namespaceSelector(nsSelector)
	}
	sa := ""
	if strings.TrimSpace(saSelector) != "" {
		sa = serviceAccountSelector(saSelector, nil)
	}
	return and(sel, scope, sa)
}
