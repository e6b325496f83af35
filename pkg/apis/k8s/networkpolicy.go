package k8s

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

const (
	// PolicyNamePrefix starts the name of every v3 NetworkPolicy converted
	// from a Kubernetes NetworkPolicy, as in Calico.
	PolicyNamePrefix = "knp.default."
	// PolicyOrder is the order Calico gives every converted policy.
	PolicyOrder = 1000.0
	// DefaultNamespace is where a NetworkPolicy without a namespace goes, as
	// with kubectl's default context.
	DefaultNamespace = "default"
)

// NetworkPolicyToV3 converts a Kubernetes NetworkPolicy into the v3
// NetworkPolicy a cluster running Calico enforces for it. The input is first
// defaulted and validated as the Kubernetes API server would (an object the
// API server refuses is an error naming the field); it is not modified.
//
// The result is named "knp.default.<name>", lives in the policy's namespace
// (DefaultNamespace when it has none), in tier default at order 1000, and has
// passed v3.SetDefaults and v3.Validate. Only the name and namespace of the
// metadata carry over (as when Calico's kube-controllers write converted
// policies to etcd): a manifest's uid, resourceVersion, labels and
// annotations belong to the Kubernetes object, not to tortie's.
func NetworkPolicyToV3(in *networkingv1.NetworkPolicy) (*v3.NetworkPolicy, error) {
	if in == nil {
		return nil, errors.New("nil NetworkPolicy")
	}
	np := in.DeepCopy()
	defaultNetworkPolicy(np)
	if errs := validateNetworkPolicy(np); len(errs) > 0 {
		return nil, fieldErrors(errs)
	}

	var ingress, egress []v3.Rule
	for _, r := range np.Spec.Ingress {
		ingress = append(ingress, convertRule(r.From, r.Ports, true)...)
	}
	for _, r := range np.Spec.Egress {
		egress = append(egress, convertRule(r.To, r.Ports, false)...)
	}

	// Types: Calico lists Ingress then Egress, whatever order they were
	// given in. (policyTypes is never empty here: defaulting filled it.)
	var hasIngress, hasEgress bool
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			hasIngress = true
		case networkingv1.PolicyTypeEgress:
			hasEgress = true
		}
	}
	var types []v3.PolicyType
	if hasIngress {
		types = append(types, v3.PolicyTypeIngress)
	}
	if hasEgress {
		types = append(types, v3.PolicyTypeEgress)
	}

	order := PolicyOrder
	out := &v3.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: v3.APIVersion, Kind: v3.KindNetworkPolicy},
		ObjectMeta: metav1.ObjectMeta{
			Name:      PolicyNamePrefix + np.Name,
			Namespace: np.Namespace,
		},
		Spec: v3.NetworkPolicySpec{
			Tier:     v3.DefaultTierName,
			Order:    &order,
			Selector: selectorToCalico(&np.Spec.PodSelector, podSelector),
			Ingress:  ingress,
			Egress:   egress,
			Types:    types,
		},
	}
	v3.SetDefaults(out)
	if err := v3.Validate(out); err != nil {
		return nil, fmt.Errorf("NetworkPolicy %s/%s converts to an invalid %s %s: %w", np.Namespace, np.Name, v3.KindNetworkPolicy, out.Name, err)
	}
	return out, nil
}

// defaultNetworkPolicy applies what stands between a manifest and the stored
// object in a cluster: kubectl's default namespace and the API server's
// defaulting (a port's protocol is TCP; no policyTypes means Ingress, plus
// Egress when there are egress rules).
func defaultNetworkPolicy(np *networkingv1.NetworkPolicy) {
	if np.Namespace == "" {
		np.Namespace = DefaultNamespace
	}
	tcp := corev1.ProtocolTCP
	defaultPorts := func(ports []networkingv1.NetworkPolicyPort) {
		for i := range ports {
			if ports[i].Protocol == nil {
				p := tcp
				ports[i].Protocol = &p
			}
		}
	}
	for i := range np.Spec.Ingress {
		defaultPorts(np.Spec.Ingress[i].Ports)
	}
	for i := range np.Spec.Egress {
		defaultPorts(np.Spec.Egress[i].Ports)
	}
	if len(np.Spec.PolicyTypes) == 0 {
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(np.Spec.Egress) > 0 {
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}
}

// validateNetworkPolicy is the Kubernetes API server's validation of a new
// NetworkPolicy (pkg/apis/networking/validation), with its field paths and
// messages. CIDRs get the default (non-strict) legacy-field rules: a CIDR
// with host bits set is accepted, as the API server accepts it.
func validateNetworkPolicy(np *networkingv1.NetworkPolicy) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&np.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	spec := field.NewPath("spec")
	selOpts := metav1validation.LabelSelectorValidationOptions{}
	errs = append(errs, metav1validation.ValidateLabelSelector(&np.Spec.PodSelector, selOpts, spec.Child("podSelector"))...)
	for i, r := range np.Spec.Ingress {
		p := spec.Child("ingress").Index(i)
		for j := range r.Ports {
			errs = append(errs, validatePort(&r.Ports[j], p.Child("ports").Index(j))...)
		}
		for j := range r.From {
			errs = append(errs, validatePeer(&r.From[j], p.Child("from").Index(j))...)
		}
	}
	for i, r := range np.Spec.Egress {
		p := spec.Child("egress").Index(i)
		for j := range r.Ports {
			errs = append(errs, validatePort(&r.Ports[j], p.Child("ports").Index(j))...)
		}
		for j := range r.To {
			errs = append(errs, validatePeer(&r.To[j], p.Child("to").Index(j))...)
		}
	}
	allowed := []string{string(networkingv1.PolicyTypeIngress), string(networkingv1.PolicyTypeEgress)}
	if len(np.Spec.PolicyTypes) > len(allowed) {
		return append(errs, field.Invalid(spec.Child("policyTypes"), np.Spec.PolicyTypes, "may not specify more than two policyTypes"))
	}
	for i, t := range np.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, field.NotSupported(spec.Child("policyTypes").Index(i), t, allowed))
		}
	}
	return errs
}

func validatePort(port *networkingv1.NetworkPolicyPort, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if pr := port.Protocol; pr != nil && *pr != corev1.ProtocolTCP && *pr != corev1.ProtocolUDP && *pr != corev1.ProtocolSCTP {
		errs = append(errs, field.NotSupported(p.Child("protocol"), *pr, []string{string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP)}))
	}
	switch {
	case port.Port == nil:
		if port.EndPort != nil {
			errs = append(errs, field.Invalid(p.Child("endPort"), *port.EndPort, "may not be specified when `port` is not specified"))
		}
	case port.Port.Type == intstr.Int:
		for _, msg := range validation.IsValidPortNum(int(port.Port.IntVal)) {
			errs = append(errs, field.Invalid(p.Child("port"), port.Port.IntVal, msg))
		}
		if port.EndPort != nil {
			if *port.EndPort < port.Port.IntVal {
				errs = append(errs, field.Invalid(p.Child("endPort"), *port.EndPort, "must be greater than or equal to `port`"))
			}
			for _, msg := range validation.IsValidPortNum(int(*port.EndPort)) {
				errs = append(errs, field.Invalid(p.Child("endPort"), *port.EndPort, msg))
			}
		}
	default:
		if port.EndPort != nil {
			errs = append(errs, field.Invalid(p.Child("endPort"), *port.EndPort, "may not be specified when `port` is non-numeric"))
		}
		for _, msg := range validation.IsValidPortName(port.Port.StrVal) {
			errs = append(errs, field.Invalid(p.Child("port"), port.Port.StrVal, msg))
		}
	}
	return errs
}

func validatePeer(peer *networkingv1.NetworkPolicyPeer, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	opts := metav1validation.LabelSelectorValidationOptions{}
	n := 0
	if peer.PodSelector != nil {
		n++
		errs = append(errs, metav1validation.ValidateLabelSelector(peer.PodSelector, opts, p.Child("podSelector"))...)
	}
	if peer.NamespaceSelector != nil {
		n++
		errs = append(errs, metav1validation.ValidateLabelSelector(peer.NamespaceSelector, opts, p.Child("namespaceSelector"))...)
	}
	if peer.IPBlock != nil {
		n++
		errs = append(errs, validateIPBlock(peer.IPBlock, p.Child("ipBlock"))...)
	}
	switch {
	case n == 0:
		errs = append(errs, field.Required(p, "must specify a peer"))
	case n > 1 && peer.IPBlock != nil:
		errs = append(errs, field.Forbidden(p, "may not specify both ipBlock and another peer"))
	}
	return errs
}

func validateIPBlock(b *networkingv1.IPBlock, p *field.Path) field.ErrorList {
	if b.CIDR == "" {
		return field.ErrorList{field.Required(p.Child("cidr"), "")}
	}
	errs := validation.IsValidCIDRForLegacyField(p.Child("cidr"), b.CIDR, false, nil)
	_, cidr, err := netutils.ParseCIDRSloppy(b.CIDR)
	if err != nil {
		return errs
	}
	for i, ex := range b.Except {
		ep := p.Child("except").Index(i)
		errs = append(errs, validation.IsValidCIDRForLegacyField(ep, ex, false, nil)...)
		_, exNet, err := netutils.ParseCIDRSloppy(ex)
		if err != nil {
			continue
		}
		cidrLen, _ := cidr.Mask.Size()
		exLen, _ := exNet.Mask.Size()
		if !cidr.Contains(exNet.IP) || cidrLen >= exLen {
			errs = append(errs, field.Invalid(ep, ex, "must be a strict subset of `cidr`"))
		}
	}
	return errs
}

// fieldErrors turns the API server's errors into tortie's, keeping paths.
func fieldErrors(errs field.ErrorList) v3.ErrorList {
	out := make(v3.ErrorList, 0, len(errs))
	for _, e := range errs {
		out = append(out, &v3.FieldError{Field: e.Field, Detail: e.ErrorBody()})
	}
	return out
}

// ---- Calico's conversion ----

type selectorKind int

const (
	podSelector selectorKind = iota
	namespaceSelector
)

// selectorToCalico writes a Kubernetes label selector in Calico's selector
// language, term for term as Calico does: a pod selector always starts with
// Calico's `projectcalico.org/orchestrator == 'k8s'` term (so only
// Kubernetes pods match); then matchLabels sorted by key; then
// matchExpressions in their order. A nil pod selector is that term alone; a
// nil namespace selector is "" (the policy's own namespace) and an empty one
// "all()" (every namespace). Namespace selectors stay in namespace-label
// terms.
func selectorToCalico(s *metav1.LabelSelector, kind selectorKind) string {
	var terms []string
	if kind == podSelector {
		terms = append(terms, fmt.Sprintf("%s == 'k8s'", v3.LabelOrchestrator))
	}
	if s == nil {
		return strings.Join(terms, " && ")
	}
	if kind == namespaceSelector && len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0 {
		return "all()"
	}
	keys := make([]string, 0, len(s.MatchLabels))
	for k := range s.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		terms = append(terms, fmt.Sprintf("%s == '%s'", k, s.MatchLabels[k]))
	}
	for _, e := range s.MatchExpressions {
		values := strings.Join(e.Values, "', '")
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			terms = append(terms, fmt.Sprintf("%s in { '%s' }", e.Key, values))
		case metav1.LabelSelectorOpNotIn:
			terms = append(terms, fmt.Sprintf("%s not in { '%s' }", e.Key, values))
		case metav1.LabelSelectorOpExists:
			terms = append(terms, fmt.Sprintf("has(%s)", e.Key))
		case metav1.LabelSelectorOpDoesNotExist:
			terms = append(terms, fmt.Sprintf("! has(%s)", e.Key))
		}
	}
	return strings.Join(terms, " && ")
}

// protoGroup is the ports of one protocol in one Kubernetes rule.
type protoGroup struct {
	all   bool // some port entry named the protocol without a port
	ports []numorstring.Port
}

// convertRule turns one Kubernetes ingress or egress rule into Calico rules,
// as Calico does: ports are grouped by protocol (a protocol listed without a
// port allows all its ports; the numeric ports of a group are merged into
// ranges), and the result is one Allow rule per protocol group (in protocol
// name order) per peer (in the order given). No ports means one group with
// no protocol at all; no peers means one rule with no source (ingress) or
// destination (egress) criteria, which matches every address, pod or not.
func convertRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, ingress bool) []v3.Rule {
	entries := make([]portEntry, 0, len(ports))
	for i := range ports {
		e := portEntry{proto: string(*ports[i].Protocol)} // defaulted to TCP
		if ports[i].Port != nil {
			pt := portToCalico(&ports[i])
			e.port = &pt
		}
		entries = append(entries, e)
	}
	n := max(len(peers), 1) // no peers: one rule with no peer match
	return rulesByProtocol(entries, n, func(i int) v3.EntityRule {
		if len(peers) == 0 {
			return peerToCalico(nil)
		}
		return peerToCalico(&peers[i])
	}, ingress, v3.Rule{Action: v3.Allow})
}

// portEntry is one port entry of a Kubernetes rule: its protocol ("": no
// protocol given) and its port (nil: every port of the protocol).
type portEntry struct {
	proto string
	port  *numorstring.Port
}

// rulesByProtocol is how Calico turns the ports and peers of one Kubernetes
// rule into Calico rules: the port entries grouped by protocol (a protocol
// named without a port matches all its ports; no entries at all match every
// protocol), the ports of a protocol merged, then one rule per protocol, in
// order, and peer, each a copy of base with the protocol, the peer (a fresh
// EntityRule from peer(i)) as source (ingress) or destination (egress) and
// the ports on the destination.
func rulesByProtocol(entries []portEntry, peers int, peer func(i int) v3.EntityRule, ingress bool, base v3.Rule) []v3.Rule {
	groups := map[string]*protoGroup{}
	if len(entries) == 0 {
		groups[""] = &protoGroup{all: true}
	}
	for _, e := range entries {
		g := groups[e.proto]
		if g == nil {
			g = &protoGroup{}
			groups[e.proto] = g
		}
		switch {
		case e.port == nil:
			g.all, g.ports = true, nil
		case !g.all:
			g.ports = append(g.ports, *e.port)
		}
	}
	protos := make([]string, 0, len(groups))
	for k := range groups {
		protos = append(protos, k)
	}
	sort.Strings(protos)

	var rules []v3.Rule
	for _, proto := range protos {
		var protocol *numorstring.Protocol
		if proto != "" {
			protocol = numorstring.ProtocolFromStringP(proto)
		}
		ports := simplifyPorts(groups[proto].ports)
		for i := range peers {
			entity := peer(i)
			r := base
			r.Protocol = protocol
			r.Metadata = cloneMeta(base.Metadata)
			if ingress {
				r.Source = entity
				r.Destination = v3.EntityRule{Ports: clonePorts(ports)}
			} else {
				entity.Ports = clonePorts(ports)
				r.Destination = entity
			}
			rules = append(rules, r)
		}
	}
	return rules
}

func clonePorts(p []numorstring.Port) []numorstring.Port {
	if p == nil {
		return nil
	}
	return append([]numorstring.Port(nil), p...)
}

// portToCalico converts a (validated) port: a number, a number with endPort
// (the range "port:endPort") or a name.
func portToCalico(p *networkingv1.NetworkPolicyPort) numorstring.Port {
	if p.Port.Type == intstr.String {
		return numorstring.NamedPort(p.Port.StrVal)
	}
	lo := uint16(p.Port.IntVal)
	if p.EndPort != nil {
		return numorstring.PortFromRange(lo, uint16(*p.EndPort))
	}
	return numorstring.SinglePort(lo)
}

// simplifyPorts is Calico's port merge: when the numeric ports cover more
// than one port number, the result is the named ports in their order followed
// by the smallest sorted list of ranges covering the numeric ports (adjacent
// and overlapping ones merged); otherwise the list is unchanged.
func simplifyPorts(ports []numorstring.Port) []numorstring.Port {
	if len(ports) <= 1 {
		return ports
	}
	var named, numeric []numorstring.Port
	covered := 0
	for _, p := range ports {
		if p.IsNamed() {
			named = append(named, p)
			continue
		}
		numeric = append(numeric, p)
		covered += int(p.MaxPort) - int(p.MinPort) + 1
	}
	if covered <= 1 {
		return ports
	}
	sort.Slice(numeric, func(i, j int) bool { return numeric[i].MinPort < numeric[j].MinPort })
	out := named
	cur := numeric[0]
	for _, p := range numeric[1:] {
		if int(p.MinPort) <= int(cur.MaxPort)+1 {
			if p.MaxPort > cur.MaxPort {
				cur.MaxPort = p.MaxPort
			}
			continue
		}
		out = append(out, cur)
		cur = p
	}
	return append(out, cur)
}

// peerToCalico gives the entity a peer matches: an ipBlock's CIDR as nets
// (masked, as Calico writes it) and its exceptions as notNets; otherwise the
// pod selector (Calico's orchestrator term alone when only a namespace
// selector is given) and the namespace selector. A nil peer matches anything.
func peerToCalico(peer *networkingv1.NetworkPolicyPeer) v3.EntityRule {
	var e v3.EntityRule
	if peer == nil {
		return e
	}
	if b := peer.IPBlock; b != nil {
		e.Nets = []string{maskedCIDR(b.CIDR)}
		for _, ex := range b.Except {
			e.NotNets = append(e.NotNets, maskedCIDR(ex))
		}
		return e
	}
	e.Selector = selectorToCalico(peer.PodSelector, podSelector)
	e.NamespaceSelector = selectorToCalico(peer.NamespaceSelector, namespaceSelector)
	return e
}

// maskedCIDR parses a CIDR as the API server does (validation has passed)
// and writes its network: "10.0.0.1/24" is 10.0.0.0/24.
func maskedCIDR(s string) string {
	_, n, err := netutils.ParseCIDRSloppy(s)
	if err != nil {
		return s // unreachable after validation; v3.Validate would catch it
	}
	return n.String()
}

// StagedNetworkPolicyToV3 is the NetworkPolicy a StagedKubernetesNetworkPolicy
// would be in force ("knp.default.<name>" in its namespace): its spec read as
// a Kubernetes NetworkPolicy's, defaulted, checked as the API server checks
// one (an error names the field, under spec) and converted as Calico
// converts one.
func StagedNetworkPolicyToV3(s *v3.StagedKubernetesNetworkPolicy) (*v3.NetworkPolicy, error) {
	return NetworkPolicyToV3(&networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: s.Spec.PodSelector, Ingress: s.Spec.Ingress,
			Egress: s.Spec.Egress, PolicyTypes: s.Spec.PolicyTypes},
	})
}
