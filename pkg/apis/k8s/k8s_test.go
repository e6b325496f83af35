package k8s

import (
	"errors"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/selector"
)

func TestIsKubernetesKind(t *testing.T) {
	for _, c := range []struct {
		apiVersion, kind string
		want             bool
	}{
		{"networking.k8s.io/v1", "NetworkPolicy", true},
		{"v1", "Namespace", true},
		{"projectcalico.org/v3", "NetworkPolicy", false},
		{"networking.k8s.io/v1beta1", "NetworkPolicy", false},
		{"extensions/v1beta1", "NetworkPolicy", false},
		{"v1", "Pod", false},
		{"networking.k8s.io/v1", "Namespace", false},
		{"v1", "namespace", false},
		{"", "", false},
		{"policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy", true},
		{"policy.networking.k8s.io/v1beta1", "ClusterNetworkPolicy", true},
		{"policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy", false},
		{"policy.networking.k8s.io/v1", "ClusterNetworkPolicy", false},
		{"projectcalico.org/v3", "ClusterNetworkPolicy", false},
		{"policy.networking.k8s.io/v1beta1", "clusternetworkpolicy", false},
	} {
		if got := IsKubernetesKind(c.apiVersion, c.kind); got != c.want {
			t.Errorf("IsKubernetesKind(%q, %q) = %v, want %v", c.apiVersion, c.kind, got, c.want)
		}
	}
}

func TestNamespaceToProfile(t *testing.T) {
	runGolden(t, "namespace", []goldenCase{
		// The usual e2e namespace: its label, the name label the API server
		// adds, and Calico's name label.
		{"labelled", `apiVersion: v1
kind: Namespace
metadata:
  name: "y"
  labels:
    ns: "y"
`},
		{"unlabelled", `apiVersion: v1
kind: Namespace
metadata:
  name: z
`},
		// A user-set metadata.name label is overwritten by the API server;
		// metadata.namespace on a cluster-scoped object is ignored; status
		// and spec are accepted and play no part.
		{"api-server-defaults", `{
  "apiVersion": "v1",
  "kind": "Namespace",
  "metadata": {
    "name": "team-a",
    "namespace": "ignored",
    "labels": {"kubernetes.io/metadata.name": "spoofed", "team": "a", "example.com/tier": "gold"},
    "annotations": {"owner": "someone"}
  },
  "spec": {"finalizers": ["kubernetes"]},
  "status": {"phase": "Active"}
}`},
	})

	t.Run("direct", func(t *testing.T) {
		in := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"ns": "x"}}}
		before := in.DeepCopy()
		got, err := NamespaceToProfile(in)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(in, before) {
			t.Errorf("input modified: %+v", in)
		}
		want := &v3.Profile{
			TypeMeta:   metav1.TypeMeta{APIVersion: "projectcalico.org/v3", Kind: "Profile"},
			ObjectMeta: metav1.ObjectMeta{Name: "kns.x"},
			Spec: v3.ProfileSpec{
				Ingress: []v3.Rule{{Action: v3.Allow}},
				Egress:  []v3.Rule{{Action: v3.Allow}},
				LabelsToApply: map[string]string{
					"pcns.ns":                          "x",
					"pcns.kubernetes.io/metadata.name": "x",
					"pcns.projectcalico.org/name":      "x",
				},
			},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, c := range []struct {
			name string
			ns   *corev1.Namespace
			want string
		}{
			{"nil", nil, "nil Namespace"},
			{"no name", &corev1.Namespace{}, "metadata.name: Required value"},
			{"not a DNS label", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a.b"}}, "metadata.name: Invalid value"},
			{"bad label", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"k": "bad value"}}}, "metadata.labels: Invalid value"},
			// A 60-character key is a valid Kubernetes label but "pcns." makes
			// it too long for a label name, which v3 validation refuses.
			{"prefixed key too long", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{strings.Repeat("k", 60): "v"}}}, "converts to an invalid Profile kns.a"},
		} {
			_, err := NamespaceToProfile(c.ns)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
			}
		}
	})
}

// TestNamespaceSelectorMatchesProfileLabels checks the two halves meet: a
// converted namespaceSelector, evaluated (as tortie's calculation graph
// does) against the namespace's labels recovered from its profile's
// pcns.-prefixed labelsToApply, selects exactly the namespaces Kubernetes
// would.
func TestNamespaceSelectorMatchesProfileLabels(t *testing.T) {
	namespaces := map[string]map[string]string{
		"x": {"ns": "x"},
		"y": {"ns": "y", "team": "blue"},
		"z": {"ns": "z"},
	}
	profileLabels := map[string]map[string]string{}
	for name, labels := range namespaces {
		p, err := NamespaceToProfile(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
		if err != nil {
			t.Fatal(err)
		}
		nsLabels := map[string]string{}
		for k, v := range p.Spec.LabelsToApply {
			nsLabels[strings.TrimPrefix(k, NamespaceLabelPrefix)] = v
		}
		profileLabels[name] = nsLabels
	}
	for _, c := range []struct {
		sel  *metav1.LabelSelector
		want string
	}{
		{&metav1.LabelSelector{}, "x y z"},
		{&metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}, "y"},
		{&metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "z"}}, "z"},
		{&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "ns", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"x"}}}}, "y z"},
		{&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpDoesNotExist}}}, "x z"},
		{&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"red"}}}}, "x y z"},
		{&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpExists}}}, "y"},
		{&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "projectcalico.org/name", Operator: metav1.LabelSelectorOpIn, Values: []string{"x", "z"}}}}, "x z"},
	} {
		expr := selectorToCalico(c.sel, namespaceSelector)
		sel, err := selector.Parse(expr)
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		var got []string
		for name, labels := range profileLabels {
			if sel.Evaluate(labels) {
				got = append(got, name)
			}
		}
		sort.Strings(got)
		if strings.Join(got, " ") != c.want {
			t.Errorf("%q selects %v, want %s", expr, got, c.want)
		}
	}
}

// TestSelectorConversion pins selector text, term for term, to Calico's
// converter (its own test table and the rules around it).
func TestSelectorConversion(t *testing.T) {
	for _, c := range []struct {
		name string
		sel  *metav1.LabelSelector
		kind selectorKind
		want string
	}{
		{"empty pod selector", &metav1.LabelSelector{}, podSelector, "projectcalico.org/orchestrator == 'k8s'"},
		{"nil pod selector", nil, podSelector, "projectcalico.org/orchestrator == 'k8s'"},
		{"empty namespace selector", &metav1.LabelSelector{}, namespaceSelector, "all()"},
		{"nil namespace selector", nil, namespaceSelector, ""},
		{"DoesNotExist namespace", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "toast", Operator: metav1.LabelSelectorOpDoesNotExist}}}, namespaceSelector, "! has(toast)"},
		{"Exists namespace", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "toast", Operator: metav1.LabelSelectorOpExists}}}, namespaceSelector, "has(toast)"},
		{"In namespace", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "toast", Operator: metav1.LabelSelectorOpIn, Values: []string{"butter", "jam"}}}}, namespaceSelector, "toast in { 'butter', 'jam' }"},
		{"NotIn namespace", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "toast", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"marmite", "milk"}}}}, namespaceSelector, "toast not in { 'marmite', 'milk' }"},
		{"DoesNotExist pod", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "toast", Operator: metav1.LabelSelectorOpDoesNotExist}}}, podSelector, "projectcalico.org/orchestrator == 'k8s' && ! has(toast)"},
		{"matchLabels sorted", &metav1.LabelSelector{MatchLabels: map[string]string{"namespaceRole": "dev", "namespaceFoo": "bar"}}, namespaceSelector, "namespaceFoo == 'bar' && namespaceRole == 'dev'"},
		{"empty value", &metav1.LabelSelector{MatchLabels: map[string]string{"k": ""}}, podSelector, "projectcalico.org/orchestrator == 'k8s' && k == ''"},
	} {
		got := selectorToCalico(c.sel, c.kind)
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
		if _, err := selector.Parse(got); err != nil {
			t.Errorf("%s: %q does not parse: %v", c.name, got, err)
		}
	}
}

// TestSelectorSemantics checks, label set by label set, that a converted
// pod selector selects exactly what Kubernetes' own selector does, for pods
// (which carry Calico's orchestrator label).
func TestSelectorSemantics(t *testing.T) {
	sels := []*metav1.LabelSelector{
		{},
		{MatchLabels: map[string]string{"pod": "a"}},
		{MatchLabels: map[string]string{"pod": "a", "tier": ""}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}}}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"a", "b"}}}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpDoesNotExist}}},
		{MatchLabels: map[string]string{"tier": "web"}, MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "pod", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"c"}},
			{Key: "env", Operator: metav1.LabelSelectorOpDoesNotExist},
		}},
	}
	var labelSets []map[string]string
	for _, pod := range []string{"", "a", "b", "c"} {
		for _, tier := range []string{"-", "", "web"} {
			for _, env := range []string{"-", "prod"} {
				l := map[string]string{v3.LabelOrchestrator: "k8s"}
				if pod != "" {
					l["pod"] = pod
				}
				if tier != "-" {
					l["tier"] = tier
				}
				if env != "-" {
					l["env"] = env
				}
				labelSets = append(labelSets, l)
			}
		}
	}
	for _, s := range sels {
		k8sSel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		expr := selectorToCalico(s, podSelector)
		cSel, err := selector.Parse(expr)
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		for _, l := range labelSets {
			if want, got := k8sSel.Matches(labelsOf(l)), cSel.Evaluate(l); got != want {
				t.Errorf("%q on %v = %v, Kubernetes says %v", expr, l, got, want)
			}
		}
		// Without the orchestrator label (a non-Kubernetes endpoint), never.
		if cSel.Evaluate(map[string]string{"pod": "a", "tier": "web"}) {
			t.Errorf("%q selects an endpoint without the orchestrator label", expr)
		}
	}
}

type labelsOf map[string]string

func (l labelsOf) Has(k string) bool   { _, ok := l[k]; return ok }
func (l labelsOf) Get(k string) string { return l[k] }
func (l labelsOf) Lookup(k string) (string, bool) {
	v, ok := l[k]
	return v, ok
}

// TestSimplifyPorts compares the range merge with Calico's own method
// (expand every numeric port, sort, join runs) on random inputs.
func TestSimplifyPorts(t *testing.T) {
	calico := func(ports []numorstring.Port) []numorstring.Port {
		if len(ports) <= 1 {
			return ports
		}
		var nums []int
		var out []numorstring.Port
		for _, p := range ports {
			if p.PortName != "" {
				out = append(out, p)
				continue
			}
			for i := int(p.MinPort); i <= int(p.MaxPort); i++ {
				nums = append(nums, i)
			}
		}
		if len(nums) <= 1 {
			return ports
		}
		sort.Ints(nums)
		for len(nums) > 0 {
			first, last := nums[0], nums[0]
			nums = nums[1:]
			for len(nums) > 0 && nums[0] <= last+1 {
				last = nums[0]
				nums = nums[1:]
			}
			out = append(out, numorstring.PortFromRange(uint16(first), uint16(last)))
		}
		return out
	}
	rng := rand.New(rand.NewSource(1))
	names := []string{"http", "dns", "serve-80-tcp"}
	for i := 0; i < 5000; i++ {
		n := rng.Intn(6)
		var ports []numorstring.Port
		for j := 0; j < n; j++ {
			switch rng.Intn(4) {
			case 0:
				ports = append(ports, numorstring.NamedPort(names[rng.Intn(len(names))]))
			case 1:
				lo := uint16(1 + rng.Intn(30))
				ports = append(ports, numorstring.PortFromRange(lo, lo+uint16(rng.Intn(8))))
			default:
				ports = append(ports, numorstring.SinglePort(uint16(1+rng.Intn(30))))
			}
		}
		if i == 0 {
			ports = []numorstring.Port{numorstring.PortFromRange(1, 65535), numorstring.SinglePort(65535)}
		}
		in := append([]numorstring.Port(nil), ports...)
		want := calico(append([]numorstring.Port(nil), ports...))
		got := simplifyPorts(ports)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("simplifyPorts(%v) = %v, Calico gives %v", in, got, want)
		}
	}
}

func TestNetworkPolicyToV3(t *testing.T) {
	t.Run("structs", func(t *testing.T) {
		// Built in Go without the API server's defaults: the converter
		// applies them (namespace, TCP, policyTypes) and leaves its input
		// alone.
		port := intstr.FromInt32(80)
		end := int32(90)
		in := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u", ResourceVersion: "7"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
				Egress: []networkingv1.NetworkPolicyEgressRule{{
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port, EndPort: &end}},
					To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}}},
				}},
			},
		}
		before := in.DeepCopy()
		got, err := NetworkPolicyToV3(in)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(in, before) {
			t.Errorf("input modified")
		}
		order := 1000.0
		want := &v3.NetworkPolicy{
			TypeMeta:   metav1.TypeMeta{APIVersion: "projectcalico.org/v3", Kind: "NetworkPolicy"},
			ObjectMeta: metav1.ObjectMeta{Name: "knp.default.p", Namespace: "default"},
			Spec: v3.NetworkPolicySpec{
				Tier:     "default",
				Order:    &order,
				Selector: "projectcalico.org/orchestrator == 'k8s' && pod == 'a'",
				Egress: []v3.Rule{{
					Action:   v3.Allow,
					Protocol: numorstring.ProtocolFromStringP("TCP"),
					Destination: v3.EntityRule{
						Nets:  []string{"10.0.0.0/8"},
						Ports: []numorstring.Port{numorstring.PortFromRange(80, 90)},
					},
				}},
				Types: []v3.PolicyType{v3.PolicyTypeIngress, v3.PolicyTypeEgress},
			},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got.Spec, want.Spec)
		}
	})

	t.Run("nil", func(t *testing.T) {
		if _, err := NetworkPolicyToV3(nil); err == nil {
			t.Error("no error for nil")
		}
	})

	// A policy that selects pods and has no rule for a direction in its
	// types denies that direction: the conversion leaves no rule, and the
	// tier it lands in ends with Deny.
	t.Run("default deny comes from the tier", func(t *testing.T) {
		got, err := NetworkPolicyToV3(&networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "deny", Namespace: "x"},
			Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Spec.Ingress) != 0 || len(got.Spec.Egress) != 0 || len(got.Spec.Types) != 2 {
			t.Fatalf("got %+v", got.Spec)
		}
		tier, ok := v3.LookupBuiltinTier(got.Spec.Tier)
		if !ok || tier.DefaultAction != v3.Deny {
			t.Errorf("tier %q: %+v, want a built-in tier ending with Deny", got.Spec.Tier, tier)
		}
	})

	t.Run("name too long for v3", func(t *testing.T) {
		_, err := NetworkPolicyToV3(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("a", 250), Namespace: "x"}})
		if err == nil || !strings.Contains(err.Error(), "converts to an invalid NetworkPolicy") {
			t.Errorf("error %v", err)
		}
	})
}

// fieldsOf lists the paths of a Decode error.
func fieldsOf(err error) []string {
	var list v3.ErrorList
	if errors.As(err, &list) {
		var out []string
		for _, e := range list {
			out = append(out, e.Field)
		}
		return out
	}
	var fe *v3.FieldError
	if errors.As(err, &fe) {
		return []string{fe.Field}
	}
	return nil
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		doc    string
		fields []string // every path reported, in order
		detail string   // part of the message
	}{
		{"unknown top-level field", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec: {podSelector: {}}
status: {}
`, []string{"status"}, "unknown field"},
		{"misspelt peer", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec:
  podSelector: {}
  ingress:
  - form:
    - podSelector: {}
`, []string{"spec.ingress[0].form"}, "unknown field"},
		{"several unknown fields", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec:
  podSelector: {matchLabel: {pod: a}}
  egress:
  - to:
    - ipBlock: {cidr: 10.0.0.0/8, exept: [10.1.0.0/16]}
`, []string{"spec.egress[0].to[0].ipBlock.exept", "spec.podSelector.matchLabel"}, "unknown field"},
		{"wrong case", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec: {PodSelector: {}}
`, []string{"spec.PodSelector"}, "unknown field"},
		{"duplicate field", `{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "name": "q"}, "spec": {"podSelector": {}}}`,
			nil, `key "name" already set`},
		{"unquoted y is a boolean", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          ns: y
`, []string{"spec.ingress[0].from[0].namespaceSelector.matchLabels[ns]"}, "cannot use bool value as string"},
		{"port of the wrong type", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: [80]
`, []string{"spec.ingress[0].ports[0].port"}, "array"},
		{"number for a string", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  egress:
  - to:
    - ipBlock: {cidr: 10}
`, []string{"spec.egress[0].to[0].ipBlock.cidr"}, "cannot use number value as string"},
		{"namespace unknown field", `apiVersion: v1
kind: Namespace
metadata: {name: x, lables: {a: b}}
`, []string{"metadata.lables"}, "unknown field"},
		{"missing kind", `apiVersion: v1
metadata: {name: x}
`, []string{"kind"}, "missing"},
		{"unsupported kind", `apiVersion: v1
kind: Pod
metadata: {name: x}
`, []string{"kind"}, "not a Kubernetes kind tortie converts"},
		{"old NetworkPolicy apiVersion", `apiVersion: extensions/v1beta1
kind: NetworkPolicy
metadata: {name: x}
`, []string{"apiVersion"}, "not supported"},
		{"Namespace of another group", `apiVersion: core/v1
kind: Namespace
metadata: {name: x}
`, []string{"apiVersion"}, "not supported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode([]byte(c.doc))
			if err == nil {
				t.Fatal("no error")
			}
			if got := fieldsOf(err); !reflect.DeepEqual(got, c.fields) {
				t.Errorf("fields %q, want %q (error: %v)", got, c.fields, err)
			}
			if !strings.Contains(err.Error(), c.detail) {
				t.Errorf("error %q does not contain %q", err, c.detail)
			}
		})
	}

	t.Run("empty document", func(t *testing.T) {
		for _, doc := range []string{"", "---\n", "# only a comment\n", "null"} {
			if _, err := Decode([]byte(doc)); !errors.Is(err, v3.ErrEmptyDocument) {
				t.Errorf("%q: error %v, want ErrEmptyDocument", doc, err)
			}
		}
	})
	t.Run("not YAML", func(t *testing.T) {
		if _, err := Decode([]byte("kind: [")); err == nil || !strings.Contains(err.Error(), "not valid YAML") {
			t.Errorf("error %v", err)
		}
	})
}

// TestValidationErrors covers what the Kubernetes API server refuses, with
// its field paths: tortie refuses the same manifests.
func TestValidationErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		spec   string
		fields []string
		detail string
	}{
		{"endPort with a named port", `
podSelector: {}
ingress:
- ports:
  - port: http
    endPort: 90
`, []string{"spec.ingress[0].ports[0].endPort"}, "may not be specified when `port` is non-numeric"},
		{"endPort without port", `
podSelector: {}
ingress:
- ports:
  - endPort: 90
`, []string{"spec.ingress[0].ports[0].endPort"}, "may not be specified when `port` is not specified"},
		{"endPort below port", `
podSelector: {}
egress:
- ports:
  - port: 90
    endPort: 80
`, []string{"spec.egress[0].ports[0].endPort"}, "must be greater than or equal to `port`"},
		{"port out of range", `
podSelector: {}
ingress:
- ports:
  - port: 0
  - port: 70000
  - port: 80
    endPort: 65536
`, []string{"spec.ingress[0].ports[0].port", "spec.ingress[0].ports[1].port", "spec.ingress[0].ports[2].endPort"}, "between 1 and 65535"},
		{"bad port name", `
podSelector: {}
ingress:
- ports:
  - port: "80"
  - port: Serve_80
`, []string{"spec.ingress[0].ports[0].port", "spec.ingress[0].ports[1].port"}, "Invalid value"},
		{"unsupported protocol", `
podSelector: {}
ingress:
- ports:
  - protocol: ICMP
`, []string{"spec.ingress[0].ports[0].protocol"}, "Unsupported value"},
		{"empty peer", `
podSelector: {}
ingress:
- from:
  - {}
`, []string{"spec.ingress[0].from[0]"}, "must specify a peer"},
		{"ipBlock with a selector", `
podSelector: {}
egress:
- to:
  - ipBlock: {cidr: 10.0.0.0/8}
    podSelector: {}
`, []string{"spec.egress[0].to[0]"}, "may not specify both ipBlock and another peer"},
		{"except outside cidr", `
podSelector: {}
egress:
- to:
  - ipBlock:
      cidr: 10.0.0.0/16
      except: [10.1.0.0/24, 10.0.0.0/16, fd00::/64]
`, []string{"spec.egress[0].to[0].ipBlock.except[0]", "spec.egress[0].to[0].ipBlock.except[1]", "spec.egress[0].to[0].ipBlock.except[2]"}, "must be a strict subset of `cidr`"},
		{"bad cidr", `
podSelector: {}
ingress:
- from:
  - ipBlock: {cidr: 10.0.0.1}
  - ipBlock: {cidr: ""}
`, []string{"spec.ingress[0].from[0].ipBlock.cidr", "spec.ingress[0].from[1].ipBlock.cidr"}, "Invalid value"},
		{"selector operator", `
podSelector:
  matchExpressions:
  - {key: pod, operator: Equals, values: [a]}
  - {key: pod, operator: In}
  - {key: pod, operator: Exists, values: [a]}
`, []string{"spec.podSelector.matchExpressions[0].operator", "spec.podSelector.matchExpressions[1].values", "spec.podSelector.matchExpressions[2].values"}, ""},
		{"bad label value", `
podSelector:
  matchLabels:
    pod: "a b"
`, []string{"spec.podSelector.matchLabels"}, "Invalid value"},
		{"bad namespaceSelector key", `
podSelector: {}
ingress:
- from:
  - namespaceSelector:
      matchLabels:
        "bad key!": x
`, []string{"spec.ingress[0].from[0].namespaceSelector.matchLabels"}, "Invalid value"},
		{"policyTypes", `
podSelector: {}
policyTypes: [Ingress, Both]
`, []string{"spec.policyTypes[1]"}, "Unsupported value"},
		{"too many policyTypes", `
podSelector: {}
policyTypes: [Ingress, Egress, Ingress]
`, []string{"spec.policyTypes"}, "may not specify more than two policyTypes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decode([]byte(netpol("p", c.spec)))
			if err == nil {
				t.Fatal("no error")
			}
			if r != nil {
				t.Errorf("a resource (%T) with the error", r)
			}
			if got := fieldsOf(err); !reflect.DeepEqual(got, c.fields) {
				t.Errorf("fields %q, want %q (error: %v)", got, c.fields, err)
			}
			if !strings.Contains(err.Error(), c.detail) {
				t.Errorf("error %q does not contain %q", err, c.detail)
			}
		})
	}

	t.Run("metadata", func(t *testing.T) {
		for _, c := range []struct{ doc, field string }{
			{"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: Bad_Name}\nspec: {podSelector: {}}\n", "metadata.name"},
			{"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x}\nspec: {podSelector: {}}\n", "metadata.name"},
			{"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: X}\nspec: {podSelector: {}}\n", "metadata.namespace"},
		} {
			_, err := Decode([]byte(c.doc))
			if got := fieldsOf(err); len(got) != 1 || got[0] != c.field {
				t.Errorf("%q: error %v, want one at %s", c.doc, err, c.field)
			}
		}
	})
}
