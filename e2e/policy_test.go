package e2e

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Builders for networking.k8s.io/v1 NetworkPolicy manifests (JSON, which
// `tortie apply` reads as YAML).

type npOpt func(*netv1.NetworkPolicySpec)

// netpol is a NetworkPolicy in namespace ns selecting podSelector (nil
// labels: every pod of the namespace).
func netpol(ns, name string, podSelector map[string]string, opts ...npOpt) string {
	p := netv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       netv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: podSelector}},
	}
	for _, o := range opts {
		o(&p.Spec)
	}
	b, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return string(b) + "\n"
}

func addType(s *netv1.NetworkPolicySpec, pt netv1.PolicyType) {
	for _, t := range s.PolicyTypes {
		if t == pt {
			return
		}
	}
	s.PolicyTypes = append(s.PolicyTypes, pt)
}

// ingress sets the ingress rules (none: deny all ingress) and adds Ingress
// to policyTypes.
func ingress(rules ...netv1.NetworkPolicyIngressRule) npOpt {
	return func(s *netv1.NetworkPolicySpec) {
		s.Ingress = append([]netv1.NetworkPolicyIngressRule{}, rules...)
		addType(s, netv1.PolicyTypeIngress)
	}
}

// egress sets the egress rules (none: deny all egress) and adds Egress to
// policyTypes.
func egress(rules ...netv1.NetworkPolicyEgressRule) npOpt {
	return func(s *netv1.NetworkPolicySpec) {
		s.Egress = append([]netv1.NetworkPolicyEgressRule{}, rules...)
		addType(s, netv1.PolicyTypeEgress)
	}
}

func from(peers ...netv1.NetworkPolicyPeer) netv1.NetworkPolicyIngressRule {
	return netv1.NetworkPolicyIngressRule{From: peers}
}

func to(peers ...netv1.NetworkPolicyPeer) netv1.NetworkPolicyEgressRule {
	return netv1.NetworkPolicyEgressRule{To: peers}
}

func inPorts(r netv1.NetworkPolicyIngressRule, ports ...netv1.NetworkPolicyPort) netv1.NetworkPolicyIngressRule {
	r.Ports = ports
	return r
}

func outPorts(r netv1.NetworkPolicyEgressRule, ports ...netv1.NetworkPolicyPort) netv1.NetworkPolicyEgressRule {
	r.Ports = ports
	return r
}

func labels(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func expr(key string, op metav1.LabelSelectorOperator, vals ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: vals}}}
}

func podPeer(sel *metav1.LabelSelector) netv1.NetworkPolicyPeer {
	return netv1.NetworkPolicyPeer{PodSelector: sel}
}
func nsPeer(sel *metav1.LabelSelector) netv1.NetworkPolicyPeer {
	return netv1.NetworkPolicyPeer{NamespaceSelector: sel}
}
func bothPeer(ns, pod *metav1.LabelSelector) netv1.NetworkPolicyPeer {
	return netv1.NetworkPolicyPeer{NamespaceSelector: ns, PodSelector: pod}
}
func ipBlock(cidr string, except ...string) netv1.NetworkPolicyPeer {
	return netv1.NetworkPolicyPeer{IPBlock: &netv1.IPBlock{CIDR: cidr, Except: except}}
}

// port is a numbered port; proto "" leaves the protocol to its default (TCP).
func port(n int, proto corev1.Protocol) netv1.NetworkPolicyPort {
	p := netv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(int32(n)))}
	if proto != "" {
		p.Protocol = ptr(proto)
	}
	return p
}

func portRange(n, end int, proto corev1.Protocol) netv1.NetworkPolicyPort {
	p := port(n, proto)
	e := int32(end)
	p.EndPort = &e
	return p
}

func namedPort(name string, proto corev1.Protocol) netv1.NetworkPolicyPort {
	p := netv1.NetworkPolicyPort{Port: ptr(intstr.FromString(name))}
	if proto != "" {
		p.Protocol = ptr(proto)
	}
	return p
}

func protoOnly(proto corev1.Protocol) netv1.NetworkPolicyPort {
	return netv1.NetworkPolicyPort{Protocol: ptr(proto)}
}

func ptr[T any](v T) *T { return &v }

const (
	TCP  = corev1.ProtocolTCP
	UDP  = corev1.ProtocolUDP
	SCTP = corev1.ProtocolSCTP
	// nsNameLabel is the label the API server puts on every namespace.
	nsNameLabel = corev1.LabelMetadataName
)

var (
	opIn    = metav1.LabelSelectorOpIn
	opNotIn = metav1.LabelSelectorOpNotIn
)

// start begins a scenario on the shared cluster: everything from earlier
// scenarios removed and the all-allowed matrix observed.
func start(t *testing.T) (Cluster, *Model) {
	t.Helper()
	c, m := cluster(t)
	c.Reset(t)
	ExpectMatrix(t, c, "baseline after reset", m.Pods, AllCases, AllowAll)
	return c, m
}

// expect checks the full model matrix (9 pods × 80/81 × TCP/UDP).
func expect(t *testing.T, c Cluster, m *Model, what string, want Expectation) {
	t.Helper()
	ExpectMatrix(t, c, what, m.Pods, AllCases, want)
}
