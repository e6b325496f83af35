package k8s

import (
	"strings"
	"testing"
)

// The scenarios follow the upstream Kubernetes network policy e2e suite
// (its checklist: testdata/shared/testdata/k8s-netpol-e2e-scenarios.txt at
// the repository root) on its usual model: namespaces x, y and z labelled
// ns=<name>, pods a, b and c labelled pod=<name>, serving ports 80 and 81
// over TCP, UDP and SCTP under the names serve-<port>-<protocol>. Enforcement is tested elsewhere; these pin the v3
// objects the manifests convert into.

// netpol is a NetworkPolicy manifest in namespace x with the given spec
// (written at the indentation of spec's fields).
func netpol(name, spec string) string {
	return netpolIn("x", name, spec)
}

func netpolIn(ns, name, spec string) string {
	var b strings.Builder
	b.WriteString("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: \"" + ns + "\"\nspec:\n")
	for _, line := range strings.Split(strings.Trim(spec, "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}

func TestPodSelector(t *testing.T) {
	runGolden(t, "podselector", []goldenCase{
		// should enforce policy to allow traffic from pods within server
		// namespace based on PodSelector
		{"from-pod-b", netpol("allow-b-to-a", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - podSelector:
      matchLabels:
        pod: b
`)},
		// should enforce policy to allow ingress traffic for a target
		{"target-allow-all", netpol("allow-all-to-a", `
podSelector:
  matchLabels:
    pod: a
ingress:
- {}
`)},
		// should deny ingress from pods on other namespaces: an empty
		// podSelector peer is every pod of the policy's own namespace.
		{"same-namespace-only", netpol("deny-other-namespaces", `
podSelector: {}
ingress:
- from:
  - podSelector: {}
`)},
		// should enforce policy based on any PodSelectors
		{"any-of-two", netpol("allow-b-or-c", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - podSelector:
      matchLabels:
        pod: b
  - podSelector:
      matchLabels:
        pod: c
`)},
		// matchLabels with several keys are ANDed, sorted by key.
		{"several-labels", netpol("several-labels", `
podSelector:
  matchLabels:
    tier: web
    pod: a
ingress:
- from:
  - podSelector:
      matchLabels:
        z: "1"
        app.kubernetes.io/name: client
`)},
	})
}

func TestMatchExpressions(t *testing.T) {
	runGolden(t, "matchexpressions", []goldenCase{
		// should enforce policy based on PodSelector with MatchExpressions
		{"pod-in", netpol("allow-b-by-expression", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - podSelector:
      matchExpressions:
      - key: pod
        operator: In
        values: [b]
`)},
		// should enforce policy based on NamespaceSelector with MatchExpressions
		{"namespace-in", netpol("allow-y-by-expression", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchExpressions:
      - key: ns
        operator: In
        values: ["y"]
`)},
		// Every operator, after the sorted matchLabels, in the order given.
		{"all-operators", netpol("all-operators", `
podSelector:
  matchLabels:
    role: server
  matchExpressions:
  - key: pod
    operator: NotIn
    values: [b, c]
  - key: env
    operator: Exists
  - key: legacy
    operator: DoesNotExist
  - key: tier
    operator: In
    values: [web, api, web]
ingress:
- from:
  - namespaceSelector:
      matchExpressions:
      - key: ns
        operator: NotIn
        values: [x]
      - key: team
        operator: DoesNotExist
`)},
	})
}

func TestNamespaceSelector(t *testing.T) {
	runGolden(t, "namespaceselector", []goldenCase{
		// should enforce policy to allow traffic only from a different
		// namespace, based on NamespaceSelector
		{"namespace-y", netpol("allow-from-y", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchLabels:
        ns: "y"
`)},
		// should enforce policy to allow ingress traffic from pods in all
		// namespaces
		{"all-namespaces", netpol("allow-from-all-namespaces", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector: {}
`)},
		// should enforce policy to allow traffic based on NamespaceSelector
		// with MatchLabels using default ns label
		{"default-label-matchlabels", netpol("allow-y-by-name", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: "y"
`)},
		// should enforce policy based on NamespaceSelector with
		// MatchExpressions using default ns label
		{"default-label-matchexpressions", netpol("allow-y-z-by-name", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: In
        values: ["y", z]
`)},
	})
}

func TestPodAndNamespaceSelector(t *testing.T) {
	runGolden(t, "podandnamespace", []goldenCase{
		// should enforce policy based on PodSelector and NamespaceSelector:
		// one peer with both selectors matches pods b of namespaces other
		// than x.
		{"and", netpol("allow-b-outside-x", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchExpressions:
      - key: ns
        operator: NotIn
        values: [x]
    podSelector:
      matchLabels:
        pod: b
`)},
		// should enforce policy based on PodSelector or NamespaceSelector:
		// two peers, two rules.
		{"or", netpol("allow-b-or-outside-x", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchExpressions:
      - key: ns
        operator: NotIn
        values: [x]
  - podSelector:
      matchLabels:
        pod: b
`)},
		// should enforce policy based on Multiple PodSelectors and
		// NamespaceSelectors
		{"multiple", netpol("allow-b-c-outside-x", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchExpressions:
      - key: ns
        operator: NotIn
        values: [x]
    podSelector:
      matchExpressions:
      - key: pod
        operator: In
        values: [b, c]
`)},
		// should enforce policy to allow traffic only from a pod in a
		// different namespace based on PodSelector and NamespaceSelector
		{"pod-in-other-namespace", netpol("allow-y-c", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchLabels:
        ns: "y"
    podSelector:
      matchLabels:
        pod: c
`)},
		// should enforce egress policy allowing traffic to a server in a
		// different namespace based on PodSelector and NamespaceSelector
		{"egress", netpol("allow-egress-to-y-a", `
podSelector:
  matchLabels:
    pod: a
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector:
      matchLabels:
        ns: "y"
    podSelector:
      matchLabels:
        pod: a
`)},
		// Both selectors empty: every pod of every namespace.
		{"both-empty", netpol("allow-all-pods", `
podSelector: {}
ingress:
- from:
  - namespaceSelector: {}
    podSelector: {}
`)},
	})
}

func TestMultiplePeers(t *testing.T) {
	runGolden(t, "multiplepeers", []goldenCase{
		// One rule per (protocol group x peer): protocols in name order,
		// then peers in the order given.
		{"peers-times-protocols", netpol("peers-times-protocols", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - podSelector:
      matchLabels:
        pod: b
  - namespaceSelector:
      matchLabels:
        ns: "y"
  - ipBlock:
      cidr: 192.168.0.0/16
  ports:
  - port: 81
    protocol: UDP
  - port: 80
`)},
		// Each Kubernetes rule converts on its own, in order.
		{"several-rules", netpol("several-rules", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - podSelector:
      matchLabels:
        pod: b
  ports:
  - port: 80
- from:
  - podSelector:
      matchLabels:
        pod: c
  ports:
  - port: 81
`)},
	})
}

func TestPorts(t *testing.T) {
	runGolden(t, "ports", []goldenCase{
		// should enforce policy based on Ports
		{"port-81", netpol("allow-81", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector: {}
  ports:
  - port: 81
`)},
		// should enforce ingress policy allowing any port traffic to a
		// server on a specific protocol
		{"protocol-any-port", netpol("allow-tcp", `
podSelector:
  matchLabels:
    pod: a
ingress:
- ports:
  - protocol: TCP
`)},
		// should not allow access by TCP when a policy specifies only UDP
		{"udp-only", netpol("allow-udp-81", `
podSelector:
  matchLabels:
    pod: a
ingress:
- ports:
  - protocol: UDP
    port: 81
`)},
		// Numeric ports of one protocol merge into sorted ranges.
		{"merged", netpol("merged", `
podSelector: {}
ingress:
- ports:
  - port: 82
  - port: 80
  - port: 8080
  - port: 81
  - port: 80
`)},
		// A protocol listed without a port allows all its ports, whatever
		// else lists it.
		{"protocol-wins", netpol("protocol-wins", `
podSelector: {}
ingress:
- ports:
  - port: 80
  - protocol: TCP
  - port: 443
  - protocol: UDP
    port: 53
`)},
		// An empty port entry is TCP, any port.
		{"empty-port", netpol("empty-port", `
podSelector: {}
ingress:
- ports:
  - {}
`)},
		// Egress rules put the ports beside the peer, in the destination.
		{"egress", netpol("egress-ports", `
podSelector: {}
policyTypes: [Egress]
egress:
- to:
  - podSelector:
      matchLabels:
        pod: b
  ports:
  - port: 80
  - port: 81
    protocol: UDP
`)},
	})
}

func TestNamedPorts(t *testing.T) {
	runGolden(t, "namedports", []goldenCase{
		// should allow ingress access on one named port
		{"ingress", netpol("allow-named-80", `
podSelector: {}
ingress:
- ports:
  - port: serve-80-tcp
`)},
		// should allow ingress access from namespace on one named port
		{"ingress-from-namespace", netpol("allow-y-named-80", `
podSelector: {}
ingress:
- from:
  - namespaceSelector:
      matchLabels:
        ns: "y"
  ports:
  - port: serve-80-tcp
`)},
		// should allow egress access on one named port
		{"egress", netpol("allow-egress-named-80", `
podSelector: {}
policyTypes: [Egress]
egress:
- ports:
  - port: serve-80-udp
    protocol: UDP
`)},
		// A name with one numeric port keeps its order; with more numbers
		// the names come first, then the merged ranges.
		{"with-numbers", netpol("named-and-numbers", `
podSelector: {}
ingress:
- ports:
  - port: 81
  - port: serve-80-tcp
- ports:
  - port: 82
  - port: serve-80-tcp
  - port: 81
`)},
	})
}

func TestEndPort(t *testing.T) {
	runGolden(t, "endport", []goldenCase{
		// should support creating NetworkPolicy API with endport field
		{"range", netpol("allow-80-to-81", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - podSelector:
      matchLabels:
        pod: b
  ports:
  - port: 80
    endPort: 81
`)},
		{"single", netpol("end-equals-port", `
podSelector: {}
ingress:
- ports:
  - port: 80
    endPort: 80
`)},
		{"overlapping", netpol("overlapping-ranges", `
podSelector: {}
ingress:
- ports:
  - port: 83
    endPort: 90
  - port: 80
    endPort: 85
  - port: 95
  - port: 91
    protocol: UDP
    endPort: 92
`)},
		{"egress-sctp", netpol("egress-sctp-range", `
podSelector: {}
policyTypes: [Egress]
egress:
- ports:
  - port: 30000
    endPort: 32767
    protocol: SCTP
`)},
	})
}

func TestIPBlock(t *testing.T) {
	runGolden(t, "ipblock", []goldenCase{
		// should allow egress access to server in CIDR block
		{"egress-cidr", netpol("allow-egress-cidr", `
podSelector:
  matchLabels:
    pod: a
policyTypes: [Egress]
egress:
- to:
  - ipBlock:
      cidr: 10.244.1.5/32
`)},
		// should enforce except clause while egress access to server in
		// CIDR block
		{"egress-except", netpol("allow-egress-except", `
podSelector:
  matchLabels:
    pod: a
policyTypes: [Egress]
egress:
- to:
  - ipBlock:
      cidr: 10.244.0.0/16
      except:
      - 10.244.1.5/32
      - 10.244.2.0/24
`)},
		// should ensure an IP overlapping both IPBlock.CIDR and
		// IPBlock.Except is allowed: two peers, two rules, the second
		// allowing what the first excepts.
		{"overlap", netpol("allow-overlap", `
podSelector:
  matchLabels:
    pod: a
policyTypes: [Egress]
egress:
- to:
  - ipBlock:
      cidr: 10.244.0.0/16
      except:
      - 10.244.1.5/32
- to:
  - ipBlock:
      cidr: 10.244.1.5/32
`)},
		// The API server accepts a CIDR with host bits set; Calico writes
		// the network.
		{"host-bits", netpol("host-bits", `
podSelector: {}
ingress:
- from:
  - ipBlock:
      cidr: 10.1.2.3/8
      except:
      - 10.1.2.3/24
`)},
		{"ipv6", netpol("ipv6", `
podSelector: {}
ingress:
- from:
  - ipBlock:
      cidr: fd00::/64
      except:
      - fd00::1/128
  ports:
  - port: 80
`)},
	})
}

func TestPolicyTypes(t *testing.T) {
	runGolden(t, "policytypes", []goldenCase{
		// No policyTypes and no egress rules: Ingress.
		{"default-ingress", netpol("default-ingress", `
podSelector: {}
ingress:
- from:
  - podSelector: {}
`)},
		// No policyTypes with egress rules: Ingress and Egress, as the API
		// server defaults them (so the policy also isolates for ingress).
		{"default-with-egress", netpol("default-with-egress", `
podSelector: {}
egress:
- to:
  - podSelector: {}
`)},
		// should work with Ingress, Egress specified together
		{"both", netpol("ingress-and-egress", `
podSelector:
  matchLabels:
    pod: a
policyTypes: [Ingress, Egress]
ingress:
- from:
  - podSelector:
      matchLabels:
        pod: b
egress:
- to:
  - podSelector:
      matchLabels:
        pod: b
`)},
		// Calico lists Ingress before Egress whatever the given order.
		{"reordered", netpol("egress-first", `
podSelector: {}
policyTypes: [Egress, Ingress]
`)},
		// should deny egress from pods based on PodSelector
		{"deny-egress-pod", netpol("deny-egress-a", `
podSelector:
  matchLabels:
    pod: a
policyTypes: [Egress]
`)},
		// should deny egress from all pods in a namespace
		{"deny-egress-namespace", netpol("deny-egress-all", `
podSelector: {}
policyTypes: [Egress]
`)},
		// Ingress rules of an Egress-only policy are kept but not enforced,
		// as Calico converts them.
		{"egress-only-with-ingress-rules", netpol("egress-only", `
podSelector: {}
policyTypes: [Egress]
ingress:
- from:
  - podSelector: {}
egress:
- to:
  - podSelector: {}
`)},
		// should enforce policies to check ingress and egress policies can
		// be controlled independently based on PodSelector
		{"independent", netpol("deny-egress-to-b", `
podSelector:
  matchLabels:
    pod: a
policyTypes: [Egress]
egress:
- to:
  - podSelector:
      matchExpressions:
      - key: pod
        operator: NotIn
        values: [b]
`)},
	})
}

func TestDenyAll(t *testing.T) {
	runGolden(t, "denyall", []goldenCase{
		// should support a 'default-deny-ingress' policy: the policy
		// selects every pod for ingress and allows nothing, so tier
		// default's Deny ends ingress evaluation.
		{"default-deny-ingress", netpol("default-deny-ingress", `
podSelector: {}
`)},
		{"default-deny-ingress-explicit", netpol("default-deny-ingress", `
podSelector: {}
policyTypes: [Ingress]
ingress: []
`)},
		// should support a 'default-deny-all' policy
		{"default-deny-all", netpol("default-deny-all", `
podSelector: {}
policyTypes: [Ingress, Egress]
`)},
		// should deny ingress access to updated pod: a policy denying
		// ingress to pods labelled isolated=true.
		{"deny-labelled", netpol("deny-isolated", `
podSelector:
  matchLabels:
    isolated: "true"
policyTypes: [Ingress]
`)},
	})
}

func TestAllowAll(t *testing.T) {
	runGolden(t, "allowall", []goldenCase{
		// should support allow-all policy
		{"ingress", netpol("allow-all", `
podSelector: {}
ingress:
- {}
`)},
		// should enforce multiple egress policies with egress allow-all
		// policy taking precedence
		{"egress", netpol("allow-all-egress", `
podSelector: {}
policyTypes: [Egress]
egress:
- {}
`)},
		// should enforce multiple ingress policies with ingress allow-all
		// policy taking precedence: the narrow policy and the allow-all
		// one stack in the same tier at the same order.
		{"stacked-narrow", netpol("allow-80-only", `
podSelector:
  matchLabels:
    pod: a
ingress:
- ports:
  - port: 80
`)},
		{"stacked-all", netpol("allow-all-a", `
podSelector:
  matchLabels:
    pod: a
ingress:
- {}
`)},
		// should support denying of egress traffic on the client side
		// (even if the server explicitly allows this traffic): a deny-all
		// egress in y and an allow-all ingress in x.
		{"client-deny", netpolIn("y", "deny-egress", `
podSelector: {}
policyTypes: [Egress]
`)},
		{"server-allow", netpol("allow-ingress", `
podSelector: {}
ingress:
- {}
`)},
	})
}

func TestEmptyFrom(t *testing.T) {
	runGolden(t, "emptyfrom", []goldenCase{
		// An empty from list is no peer restriction at all: every source,
		// pod or not, on the listed ports.
		{"from-empty-with-ports", netpol("empty-from-ports", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from: []
  ports:
  - port: 80
`)},
		{"from-empty", netpol("empty-from", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from: []
`)},
		{"to-empty", netpol("empty-to", `
podSelector:
  matchLabels:
    pod: a
policyTypes: [Egress]
egress:
- to: []
  ports:
  - port: 53
    protocol: UDP
`)},
		// ports: [] is no port restriction either.
		{"ports-empty", netpol("empty-ports", `
podSelector: {}
ingress:
- from:
  - podSelector: {}
  ports: []
`)},
	})
}

func TestProtocols(t *testing.T) {
	runGolden(t, "protocols", []goldenCase{
		// Netpol ... using SCTP: should enforce policy based on Ports
		{"sctp-port", netpol("allow-sctp-81", `
podSelector:
  matchLabels:
    pod: a
ingress:
- ports:
  - port: 81
    protocol: SCTP
`)},
		// should properly isolate pods that are selected by a policy
		// allowing SCTP, even if the plugin doesn't support SCTP
		{"sctp-isolates", netpol("allow-sctp-only", `
podSelector: {}
ingress:
- ports:
  - protocol: SCTP
`)},
		// should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'
		{"sctp-not-tcp", netpol("sctp-80", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - podSelector: {}
  ports:
  - port: 80
    protocol: SCTP
`)},
		// Netpol ... using SCTP: should enforce policy to allow traffic only
		// from a pod in a different namespace based on PodSelector and
		// NamespaceSelector
		{"sctp-pod-in-namespace", netpol("allow-y-c-sctp", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchLabels:
        ns: "y"
    podSelector:
      matchLabels:
        pod: c
  ports:
  - port: 80
    protocol: SCTP
  - port: serve-81-sctp
    protocol: SCTP
`)},
		// Netpol ... using UDP: should enforce policy based on Ports
		{"udp-port", netpol("allow-udp-81", `
podSelector:
  matchLabels:
    pod: a
ingress:
- ports:
  - port: 81
    protocol: UDP
`)},
		// Netpol ... using UDP: pod in a different namespace
		{"udp-pod-in-namespace", netpol("allow-y-c-udp", `
podSelector:
  matchLabels:
    pod: a
ingress:
- from:
  - namespaceSelector:
      matchLabels:
        ns: "y"
    podSelector:
      matchLabels:
        pod: c
  ports:
  - port: 80
    protocol: UDP
`)},
		// All three protocols in one rule: three rules, SCTP, TCP, UDP.
		{"three", netpol("three-protocols", `
podSelector: {}
ingress:
- from:
  - podSelector:
      matchLabels:
        pod: b
  ports:
  - port: 80
    protocol: UDP
  - port: 80
    protocol: TCP
  - port: 80
    protocol: SCTP
`)},
	})
}

// TestNetpolAPI covers the "Netpol API" scenarios: a full policy with every
// kind of peer and port, as kubectl would send it (JSON, extra metadata).
func TestNetpolAPI(t *testing.T) {
	runGolden(t, "api", []goldenCase{
		{"full-json", `{
  "apiVersion": "networking.k8s.io/v1",
  "kind": "NetworkPolicy",
  "metadata": {
    "name": "e2e-example-netpol",
    "namespace": "z",
    "labels": {"e2e": "true"},
    "annotations": {"note": "converted without metadata"},
    "uid": "0f1e6b4e-4b8e-4bd6-9d0e-1df3b0b8a1aa",
    "resourceVersion": "42",
    "creationTimestamp": "2024-01-01T00:00:00Z"
  },
  "spec": {
    "podSelector": {"matchLabels": {"pod-name": "test-pod"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{
      "from": [{"namespaceSelector": {"matchLabels": {"ns-name": "pod-b"}}}],
      "ports": [{"protocol": "TCP", "port": 80}]
    }],
    "egress": [{
      "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
      "ports": [{"protocol": "TCP", "port": 20000, "endPort": 30000}]
    }]
  }
}`},
		// A manifest without a namespace is in "default", as with kubectl.
		{"no-namespace", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: no-namespace
spec:
  podSelector: {}
`},
	})
}
