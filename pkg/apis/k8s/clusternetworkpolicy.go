package k8s

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

// ClusterNetworkPolicy (sigs.k8s.io/network-policy-api v0.3.0) limits, from
// the CRD's schema.
const (
	cnpMaxPriority  = 1000
	cnpMaxRules     = 25 // rules per direction
	cnpMaxItems     = 25 // peers, protocols, networks per rule
	cnpMaxRuleName  = 100
	cnpMaxCIDRChars = 43
)

// CNPRuleNameAnnotation is the annotation on each converted rule holding the
// name of the ClusterNetworkPolicy rule it came from, as Calico writes it
// (libcalico-go's K8sCNPRuleNameLabel).
const CNPRuleNameAnnotation = "name"

// ClusterNetworkPolicyTier is the Calico tier a ClusterNetworkPolicy of the
// given tier is converted into: Admin → kube-admin (order 1000, before the
// default tier), Baseline → kube-baseline (order 10,000,000, after it); both
// end with Pass (v3.BuiltinTiers). Anything else is "".
func ClusterNetworkPolicyTier(t cnpv1alpha2.Tier) string {
	switch t {
	case cnpv1alpha2.AdminTier:
		return v3.KubeAdminTierName
	case cnpv1alpha2.BaselineTier:
		return v3.KubeBaselineTierName
	}
	return ""
}

// ClusterNetworkPolicyName is the name of the GlobalNetworkPolicy a
// ClusterNetworkPolicy of that tier and name becomes:
// "kcnp.<calico tier>.<name>".
func ClusterNetworkPolicyName(t cnpv1alpha2.Tier, name string) string {
	return v3.KubeClusterNetworkPolicyPrefix + ClusterNetworkPolicyTier(t) + "." + name
}

// ClusterNetworkPolicyToV3 converts a ClusterNetworkPolicy
// (policy.networking.k8s.io, the schema v1alpha2 and v1beta1 share) into the
// GlobalNetworkPolicy Calico enforces for it. The input is first validated as
// the Kubernetes API server validates it against the standard-channel CRD
// (deploy/crds/policy.networking.k8s.io_clusternetworkpolicies.yaml): an
// object the API server would refuse is an error naming the field. It is not
// modified.
//
// As libcalico-go's converter does, the result is named as the
// ClusterNetworkPolicy, lives in tier kube-admin (Admin) or kube-baseline
// (Baseline) at order = priority, selects the subject's pods (always with
// Calico's `projectcalico.org/orchestrator == 'k8s'` term, so never a host
// endpoint), and has one rule per protocol and peer of each rule, in order:
// Accept is Allow, Deny is Deny, Pass is Pass; a named rule carries its name
// in the rule annotation "name". Its types are the directions that have
// rules (none: v3 defaulting makes it Ingress, which in a tier ending with
// Pass changes nothing). It has passed v3.SetDefaults and v3.Validate. Only
// the name of the metadata carries over.
//
// The name: Calico (v3.34) keeps the converted policy under the
// ClusterNetworkPolicy's own name, told apart from a GlobalNetworkPolicy of
// that name by a kind of its own (KubernetesClusterNetworkPolicy) that
// exists only in its Kubernetes datastore, and shows it as
// "kcnp.kube-admin.<name>" / "kcnp.kube-baseline.<name>" (its older
// converters' stored name). In etcd there is no such kind, so tortie stores
// it under that shown name: a ClusterNetworkPolicy can never overwrite a
// user's GlobalNetworkPolicy, and the controllers know by the name alone
// which policies are theirs. A name that the prefix makes longer than 253
// characters is refused.
//
// One departure in shape, not in verdicts: a networks peer mixing IPv4 and
// IPv6 CIDRs gives two rules, IPv4 then IPv6 (splitNetsByFamily).
func ClusterNetworkPolicyToV3(in *cnpv1alpha2.ClusterNetworkPolicy) (*v3.GlobalNetworkPolicy, error) {
	return clusterNetworkPolicyToV3(in, nil)
}

// clusterNetworkPolicyToV3 is ClusterNetworkPolicyToV3 with the errors a
// document's decoding found beyond what the Go object shows
// (checkCNPRequired). A missing spec is reported alone, as the API server
// reports it.
func clusterNetworkPolicyToV3(in *cnpv1alpha2.ClusterNetworkPolicy, docErrs field.ErrorList) (*v3.GlobalNetworkPolicy, error) {
	if in == nil {
		return nil, errors.New("nil ClusterNetworkPolicy")
	}
	for _, e := range docErrs {
		if e.Field == "spec" {
			return nil, fieldErrors(field.ErrorList{e})
		}
	}
	cnp := in.DeepCopy()
	// A cluster-scoped object has no namespace: the API server drops one
	// given in a manifest.
	cnp.Namespace = ""
	if errs := append(validateClusterNetworkPolicy(cnp), docErrs...); len(errs) > 0 {
		return nil, fieldErrors(errs)
	}

	var ingress, egress []v3.Rule
	for _, dir := range cnpDirections(&cnp.Spec) {
		for _, r := range dir.rules {
			var peers []v3.EntityRule
			for _, p := range r.peers {
				peers = append(peers, splitNetsByFamily(cnpPeerToCalico(&p))...)
			}
			rules := cnpRules(r.name, r.action, r.protocols, peers, dir.ingress)
			if dir.ingress {
				ingress = append(ingress, rules...)
			} else {
				egress = append(egress, rules...)
			}
		}
	}

	// Calico enables a direction only when it has rules: the tiers end
	// with Pass, so a direction without rules changes nothing.
	var types []v3.PolicyType
	if len(ingress) > 0 {
		types = append(types, v3.PolicyTypeIngress)
	}
	if len(egress) > 0 {
		types = append(types, v3.PolicyTypeEgress)
	}

	var nsSel, podSel string
	if s := cnp.Spec.Subject.Namespaces; s != nil {
		nsSel = selectorToCalico(s, namespaceSelector)
		podSel = selectorToCalico(nil, podSelector)
	} else {
		nsSel = selectorToCalico(&cnp.Spec.Subject.Pods.NamespaceSelector, namespaceSelector)
		podSel = selectorToCalico(&cnp.Spec.Subject.Pods.PodSelector, podSelector)
	}

	order := float64(cnp.Spec.Priority)
	out := &v3.GlobalNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v3.APIVersion, Kind: v3.KindGlobalNetworkPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: ClusterNetworkPolicyName(cnp.Spec.Tier, cnp.Name)},
		Spec: v3.GlobalNetworkPolicySpec{
			Tier:              ClusterNetworkPolicyTier(cnp.Spec.Tier),
			Order:             &order,
			Selector:          podSel,
			NamespaceSelector: nsSel,
			Ingress:           ingress,
			Egress:            egress,
			Types:             types,
		},
	}
	v3.SetDefaults(out)
	if err := v3.Validate(out); err != nil {
		return nil, fmt.Errorf("ClusterNetworkPolicy %s converts to an invalid %s %s: %w", cnp.Name, v3.KindGlobalNetworkPolicy, out.Name, err)
	}
	return out, nil
}

// ---- the API server's validation (standard-channel CRD) ----

// validateClusterNetworkPolicy is what the API server checks before storing a
// ClusterNetworkPolicy: the object metadata (a DNS subdomain name), the CRD's
// OpenAPI schema (required fields, enums, ranges, list sizes, exactly one
// field of each one-of) and its CEL rules (port ranges, masked CIDRs), with
// the paths and messages the API server gives. Two additions of tortie's,
// both refusing, never accepting:
//   - label selectors are checked as Kubernetes checks them elsewhere (the
//     CRD schema does not): an unknown operator or a bad label would give a
//     Calico selector that fails to parse or silently matches more;
//   - the experimental-channel fields (peers nodes and domainNames, the
//     protocol destinationNamedPort), which the Go types carry but the
//     standard CRD does not, are unknown fields. Calico does not enforce
//     them either: its converter replaces such a rule with a deny-all rule
//     (Deny, Pass) or drops it (Accept).
func validateClusterNetworkPolicy(cnp *cnpv1alpha2.ClusterNetworkPolicy) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&cnp.ObjectMeta, false, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	spec := field.NewPath("spec")
	s := &cnp.Spec

	switch s.Tier {
	case cnpv1alpha2.AdminTier, cnpv1alpha2.BaselineTier:
	case "":
		errs = append(errs, field.Required(spec.Child("tier"), ""))
	default:
		errs = append(errs, field.NotSupported(spec.Child("tier"), s.Tier, []string{string(cnpv1alpha2.AdminTier), string(cnpv1alpha2.BaselineTier)}))
	}
	errs = append(errs, intRange(spec.Child("priority"), int64(s.Priority), 0, cnpMaxPriority)...)

	subj := spec.Child("subject")
	errs = append(errs, oneOf(subj, s.Subject.Namespaces != nil, s.Subject.Pods != nil)...)
	if s.Subject.Namespaces != nil {
		errs = append(errs, labelSelector(s.Subject.Namespaces, subj.Child("namespaces"))...)
	}
	if s.Subject.Pods != nil {
		errs = append(errs, namespacedPod(s.Subject.Pods, subj.Child("pods"))...)
	}

	for _, dir := range cnpDirections(s) {
		dp := spec.Child(dir.field)
		errs = append(errs, maxItems(dp, len(dir.rules), cnpMaxRules)...)
		for i, r := range dir.rules {
			p := dp.Index(i)
			errs = append(errs, ruleCommon(p, r.name, r.action, r.protocols)...)
			errs = append(errs, peerList(p.Child(dir.peersField), r.peers == nil, len(r.peers))...)
			for j := range r.peers {
				errs = append(errs, validateCNPPeer(&r.peers[j], p.Child(dir.peersField).Index(j))...)
			}
		}
	}
	return errs
}

// cnpRule is an ingress or an egress rule in one shape: an ingress peer is
// an egress peer without the egress-only fields.
type cnpRule struct {
	name      string
	action    cnpv1alpha2.ClusterNetworkPolicyRuleAction
	protocols []cnpv1alpha2.ClusterNetworkPolicyProtocol
	peers     []cnpv1alpha2.ClusterNetworkPolicyEgressPeer // nil when not given
}

type cnpDirection struct {
	field, peersField string // "ingress", "from"; "egress", "to"
	ingress           bool
	rules             []cnpRule
}

func cnpDirections(s *cnpv1alpha2.ClusterNetworkPolicySpec) []cnpDirection {
	in := cnpDirection{field: "ingress", peersField: "from", ingress: true}
	for _, r := range s.Ingress {
		cr := cnpRule{name: r.Name, action: r.Action, protocols: r.Protocols}
		if r.From != nil {
			cr.peers = make([]cnpv1alpha2.ClusterNetworkPolicyEgressPeer, len(r.From))
			for i, p := range r.From {
				cr.peers[i] = cnpv1alpha2.ClusterNetworkPolicyEgressPeer{Namespaces: p.Namespaces, Pods: p.Pods}
			}
		}
		in.rules = append(in.rules, cr)
	}
	out := cnpDirection{field: "egress", peersField: "to"}
	for _, r := range s.Egress {
		out.rules = append(out.rules, cnpRule{name: r.Name, action: r.Action, protocols: r.Protocols, peers: r.To})
	}
	return []cnpDirection{in, out}
}

// validateCNPPeer: exactly one peer field, its selectors, its networks; the
// experimental fields are reported as unknown (and count as properties, so
// only they are reported, as unknown fields are).
func validateCNPPeer(peer *cnpv1alpha2.ClusterNetworkPolicyEgressPeer, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if peer.Nodes != nil {
		errs = append(errs, experimental(p.Child("nodes")))
	}
	if peer.DomainNames != nil {
		errs = append(errs, experimental(p.Child("domainNames")))
	}
	errs = append(errs, oneOf(p, peer.Namespaces != nil, peer.Pods != nil, peer.Networks != nil, peer.Nodes != nil, peer.DomainNames != nil)...)
	if peer.Namespaces != nil {
		errs = append(errs, labelSelector(peer.Namespaces, p.Child("namespaces"))...)
	}
	if peer.Pods != nil {
		errs = append(errs, namespacedPod(peer.Pods, p.Child("pods"))...)
	}
	if peer.Networks != nil {
		errs = append(errs, networks(p.Child("networks"), peer.Networks)...)
	}
	return errs
}

// The OpenAPI schema's messages, as the API server words them
// (kube-openapi's errors, turned into field errors by apiextensions).

func intRange(p *field.Path, v, lo, hi int64) field.ErrorList {
	switch {
	case v < lo:
		return field.ErrorList{field.Invalid(p, v, fmt.Sprintf("%s in body should be greater than or equal to %d", p, lo))}
	case v > hi:
		return field.ErrorList{field.Invalid(p, v, fmt.Sprintf("%s in body should be less than or equal to %d", p, hi))}
	}
	return nil
}

func maxItems(p *field.Path, n, max int) field.ErrorList {
	if n > max {
		return field.ErrorList{field.TooMany(p, n, max)}
	}
	return nil
}

func minItems(p *field.Path, n, min int) field.ErrorList {
	if n < min {
		return field.ErrorList{field.Invalid(p, n, fmt.Sprintf("%s in body should have at least %d items", p, min))}
	}
	return nil
}

// oneOf is the schema's minProperties: 1, maxProperties: 1.
func oneOf(p *field.Path, set ...bool) field.ErrorList {
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	switch {
	case n == 0:
		return field.ErrorList{field.Invalid(p, n, fmt.Sprintf("%s in body should have at least 1 properties", p))}
	case n > 1:
		return field.ErrorList{field.TooMany(p, n, 1)}
	}
	return nil
}

func experimental(p *field.Path) *field.Error {
	return field.Forbidden(p, "unknown field: it belongs to the experimental channel of network-policy-api, not to the standard ClusterNetworkPolicy CRD (and Calico does not enforce it)")
}

func peerList(p *field.Path, missing bool, n int) field.ErrorList {
	if missing {
		return field.ErrorList{field.Required(p, "")}
	}
	return append(minItems(p, n, 1), maxItems(p, n, cnpMaxItems)...)
}

func labelSelector(s *metav1.LabelSelector, p *field.Path) field.ErrorList {
	return metav1validation.ValidateLabelSelector(s, metav1validation.LabelSelectorValidationOptions{}, p)
}

func namespacedPod(np *cnpv1alpha2.NamespacedPod, p *field.Path) field.ErrorList {
	errs := labelSelector(&np.NamespaceSelector, p.Child("namespaceSelector"))
	return append(errs, labelSelector(&np.PodSelector, p.Child("podSelector"))...)
}

func ruleCommon(p *field.Path, name string, action cnpv1alpha2.ClusterNetworkPolicyRuleAction, protocols []cnpv1alpha2.ClusterNetworkPolicyProtocol) field.ErrorList {
	var errs field.ErrorList
	if len(name) > cnpMaxRuleName {
		errs = append(errs, field.TooLong(p.Child("name"), "", cnpMaxRuleName))
	}
	switch action {
	case cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept, cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny, cnpv1alpha2.ClusterNetworkPolicyRuleActionPass:
	case "":
		errs = append(errs, field.Required(p.Child("action"), ""))
	default:
		errs = append(errs, field.NotSupported(p.Child("action"), action, []string{
			string(cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept),
			string(cnpv1alpha2.ClusterNetworkPolicyRuleActionDeny),
			string(cnpv1alpha2.ClusterNetworkPolicyRuleActionPass),
		}))
	}
	pp := p.Child("protocols")
	if protocols != nil {
		errs = append(errs, minItems(pp, len(protocols), 1)...)
		errs = append(errs, maxItems(pp, len(protocols), cnpMaxItems)...)
	}
	for i := range protocols {
		proto := &protocols[i]
		ip := pp.Index(i)
		if proto.DestinationNamedPort != "" {
			errs = append(errs, experimental(ip.Child("destinationNamedPort")))
		}
		errs = append(errs, oneOf(ip, proto.TCP != nil, proto.UDP != nil, proto.SCTP != nil, proto.DestinationNamedPort != "")...)
		if proto.TCP != nil {
			errs = append(errs, protoPort(ip.Child("tcp"), proto.TCP.DestinationPort)...)
		}
		if proto.UDP != nil {
			errs = append(errs, protoPort(ip.Child("udp"), proto.UDP.DestinationPort)...)
		}
		if proto.SCTP != nil {
			errs = append(errs, protoPort(ip.Child("sctp"), proto.SCTP.DestinationPort)...)
		}
	}
	return errs
}

// protoPort checks a tcp, udp or sctp object (minProperties: 1, so it must
// give destinationPort) and its port: exactly one of number and range,
// 1-65535, a range's start below its end.
func protoPort(p *field.Path, port *cnpv1alpha2.Port) field.ErrorList {
	if port == nil {
		return field.ErrorList{field.Invalid(p, 0, fmt.Sprintf("%s in body should have at least 1 properties", p))}
	}
	dp := p.Child("destinationPort")
	errs := oneOf(dp, port.Number != 0, port.Range != nil)
	if port.Number != 0 {
		errs = append(errs, intRange(dp.Child("number"), int64(port.Number), 1, 65535)...)
	}
	if r := port.Range; r != nil {
		rp := dp.Child("range")
		errs = append(errs, intRange(rp.Child("end"), int64(r.End), 1, 65535)...)
		errs = append(errs, intRange(rp.Child("start"), int64(r.Start), 1, 65535)...)
		if r.Start >= r.End {
			errs = append(errs, field.Invalid(rp, "object", "Start port must be less than End port"))
		}
	}
	return errs
}

// networks: 1-25 distinct entries (a set), each at most 43 characters and
// a masked IPv4 or IPv6 CIDR (the CEL rule isCIDR(self) && cidr(self) ==
// cidr(self).masked(), which refuses IPv4-mapped IPv6 addresses).
func networks(p *field.Path, nets []cnpv1alpha2.CIDR) field.ErrorList {
	errs := append(minItems(p, len(nets), 1), maxItems(p, len(nets), cnpMaxItems)...)
	seen := map[cnpv1alpha2.CIDR]bool{}
	for i, n := range nets {
		np := p.Index(i)
		if seen[n] {
			errs = append(errs, field.Duplicate(np, n))
			continue
		}
		seen[n] = true
		if len(n) > cnpMaxCIDRChars {
			errs = append(errs, field.TooLong(np, "", cnpMaxCIDRChars))
			continue
		}
		pfx, err := netip.ParsePrefix(string(n))
		if err != nil || pfx.Addr().Is4In6() || pfx != pfx.Masked() {
			errs = append(errs, field.Invalid(np, "string", "Invalid CIDR format provided"))
		}
	}
	return errs
}

// ---- Calico's conversion ----

// cnpPeerToCalico gives the entity a peer matches, as Calico's converter
// does: a namespaces peer is a namespace selector alone (no pod-selector
// term); a pods peer is the namespace selector and the pod selector (with
// Calico's orchestrator term); networks are nets, in Go's canonical form.
func cnpPeerToCalico(peer *cnpv1alpha2.ClusterNetworkPolicyEgressPeer) v3.EntityRule {
	var e v3.EntityRule
	switch {
	case peer.Namespaces != nil:
		e.NamespaceSelector = selectorToCalico(peer.Namespaces, namespaceSelector)
	case peer.Pods != nil:
		e.Selector = selectorToCalico(&peer.Pods.PodSelector, podSelector)
		e.NamespaceSelector = selectorToCalico(&peer.Pods.NamespaceSelector, namespaceSelector)
	default:
		for _, n := range peer.Networks {
			_, ipnet, err := net.ParseCIDR(string(n))
			if err != nil {
				e.Nets = append(e.Nets, string(n)) // unreachable after validation
				continue
			}
			e.Nets = append(e.Nets, ipnet.String())
		}
	}
	return e
}

// splitNetsByFamily is tortie's one departure from the shape of Calico's
// result, not from its verdicts: Calico puts all of a networks peer's CIDRs
// in one rule, which it never validates in a Kubernetes datastore (Felix
// renders a rule once per IP version with that version's CIDRs only), but
// which v3 validation, Calico's as tortie's, refuses when IPv4 and IPv6 are
// mixed. A mixed peer becomes two entities, the IPv4 CIDRs then the IPv6
// ones, each in the order given: a packet is of one version, so the two
// rules match exactly the packets the one rule matches.
func splitNetsByFamily(e v3.EntityRule) []v3.EntityRule {
	var v4, v6 []string
	for _, n := range e.Nets {
		if ip, _, err := net.ParseCIDR(n); err == nil && ip.To4() == nil {
			v6 = append(v6, n)
		} else {
			v4 = append(v4, n)
		}
	}
	if len(v4) == 0 || len(v6) == 0 {
		return []v3.EntityRule{e}
	}
	e4, e6 := e, e
	e4.Nets, e6.Nets = v4, v6
	return []v3.EntityRule{e4, e6}
}

// cnpRules turns one ClusterNetworkPolicy rule into Calico rules, as Calico
// does: the protocols are grouped by protocol (a protocol without a port
// matches all its ports; the ports of a group are merged into ranges), and
// the result is one rule per protocol group (in protocol name order) per
// peer (in the order given). No protocols means one group with no protocol
// at all. Ports are destination ports in both directions.
func cnpRules(name string, action cnpv1alpha2.ClusterNetworkPolicyRuleAction, protocols []cnpv1alpha2.ClusterNetworkPolicyProtocol, peers []v3.EntityRule, ingress bool) []v3.Rule {
	entries := make([]portEntry, 0, len(protocols))
	for _, p := range protocols {
		var e portEntry
		var port *cnpv1alpha2.Port
		switch {
		case p.TCP != nil:
			e.proto, port = numorstring.ProtocolTCP, p.TCP.DestinationPort
		case p.UDP != nil:
			e.proto, port = numorstring.ProtocolUDP, p.UDP.DestinationPort
		case p.SCTP != nil:
			e.proto, port = numorstring.ProtocolSCTP, p.SCTP.DestinationPort
		}
		if port != nil {
			pt := cnpPortToCalico(port)
			e.port = &pt
		}
		entries = append(entries, e)
	}
	var meta *v3.RuleMetadata
	if name != "" {
		meta = &v3.RuleMetadata{Annotations: map[string]string{CNPRuleNameAnnotation: name}}
	}
	calicoAction := v3.Action(action) // Deny and Pass are the same words
	if action == cnpv1alpha2.ClusterNetworkPolicyRuleActionAccept {
		calicoAction = v3.Allow
	}
	return rulesByProtocol(entries, len(peers), func(i int) v3.EntityRule {
		p := peers[i]
		if p.Nets != nil {
			p.Nets = append([]string(nil), p.Nets...)
		}
		return p
	}, ingress, v3.Rule{Action: calicoAction, Metadata: meta})
}

func cloneMeta(m *v3.RuleMetadata) *v3.RuleMetadata {
	if m == nil {
		return nil
	}
	out := &v3.RuleMetadata{Annotations: map[string]string{}}
	for k, v := range m.Annotations {
		out.Annotations[k] = v
	}
	return out
}

// cnpPortToCalico converts a (validated) port: a number or a range.
func cnpPortToCalico(p *cnpv1alpha2.Port) numorstring.Port {
	if r := p.Range; r != nil {
		return numorstring.PortFromRange(uint16(r.Start), uint16(r.End))
	}
	return numorstring.SinglePort(uint16(p.Number))
}

// ---- decoding ----

// checkCNPRequired reports the required fields of a ClusterNetworkPolicy
// document whose absence the Go types cannot show, because their zero value
// is valid: spec.priority (0 is the highest precedence, so a forgotten
// priority must not become 0) and a pods selector's podSelector ({} selects
// every pod), and a port number written as 0 (the Go field omits it).
func checkCNPRequired(js []byte) field.ErrorList {
	var doc struct {
		Spec *struct {
			Priority *json.RawMessage `json:"priority"`
			Subject  struct {
				Pods *struct {
					PodSelector *json.RawMessage `json:"podSelector"`
				} `json:"pods"`
			} `json:"subject"`
			Ingress []cnpRawRule `json:"ingress"`
			Egress  []cnpRawRule `json:"egress"`
		} `json:"spec"`
	}
	if json.Unmarshal(js, &doc) != nil {
		return nil // decodeStrict reports it
	}
	spec := field.NewPath("spec")
	if doc.Spec == nil {
		return field.ErrorList{field.Required(spec, "")}
	}
	var errs field.ErrorList
	if doc.Spec.Priority == nil {
		errs = append(errs, field.Required(spec.Child("priority"), ""))
	}
	if pods := doc.Spec.Subject.Pods; pods != nil && pods.PodSelector == nil {
		errs = append(errs, field.Required(spec.Child("subject", "pods", "podSelector"), ""))
	}
	for dir, rules := range map[string][]cnpRawRule{"egress": doc.Spec.Egress, "ingress": doc.Spec.Ingress} {
		for i, r := range rules {
			for j, p := range r.Protocols {
				for proto, pp := range map[string]*cnpRawProto{"tcp": p.TCP, "udp": p.UDP, "sctp": p.SCTP} {
					if pp != nil && pp.DestinationPort != nil && pp.DestinationPort.Number != nil && *pp.DestinationPort.Number == 0 {
						path := spec.Child(dir).Index(i).Child("protocols").Index(j).Child(proto, "destinationPort", "number")
						errs = append(errs, intRange(path, 0, 1, 65535)...)
					}
				}
			}
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Field < errs[j].Field })
	return errs
}

type cnpRawProto struct {
	DestinationPort *struct {
		Number *int64 `json:"number"`
	} `json:"destinationPort"`
}

type cnpRawRule struct {
	Protocols []struct {
		TCP  *cnpRawProto `json:"tcp"`
		UDP  *cnpRawProto `json:"udp"`
		SCTP *cnpRawProto `json:"sctp"`
	} `json:"protocols"`
}
