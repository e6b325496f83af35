package v3

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// want is one expected validation error: the exact field path and a
// substring of its message.
type want struct{ field, msg string }

type validationCase struct {
	name string
	doc  string
	errs []want // nil: must be valid
}

// runValidationCases decodes, defaults and validates each document and
// requires exactly the listed errors (all of them, and no others).
func runValidationCases(t *testing.T, cases []validationCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Decode([]byte(tc.doc))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			SetDefaults(r)
			err = Validate(r)
			if tc.errs == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("want %d errors, got %v", len(tc.errs), err)
			}
			if !matchErrors(list, tc.errs) {
				t.Fatalf("got errors:\n%s\nwant:\n%s", formatErrors(list), formatWants(tc.errs))
			}
		})
	}
}

func matchErrors(list ErrorList, wants []want) bool {
	if len(list) != len(wants) {
		return false
	}
	used := make([]bool, len(list))
	for _, w := range wants {
		found := false
		for i, e := range list {
			if !used[i] && e.Field == w.field && strings.Contains(e.Detail, w.msg) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func formatErrors(list ErrorList) string {
	var s []string
	for _, e := range list {
		s = append(s, fmt.Sprintf("  %s: %s", e.Field, e.Detail))
	}
	sort.Strings(s)
	return strings.Join(s, "\n")
}

func formatWants(ws []want) string {
	var s []string
	for _, w := range ws {
		s = append(s, fmt.Sprintf("  %s: …%s…", w.field, w.msg))
	}
	return strings.Join(s, "\n")
}

// np and gnp wrap a spec (indented YAML) in a policy document.
func np(name, spec string) string {
	return "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: prod\nspec:\n" + spec
}

func gnp(name, spec string) string {
	return "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: " + name + "\nspec:\n" + spec
}

func TestPolicyValidation(t *testing.T) {
	runValidationCases(t, []validationCase{
		// ---- good ----
		{name: "plain name, default tier", doc: np("web", "  selector: app == 'web'\n")},
		{name: "default-prefixed name", doc: np("default.web", "  selector: app == 'web'\n")},
		{name: "tier-prefixed name", doc: gnp("security.dns", "  tier: security\n  order: 10\n")},
		{name: "unprefixed name in a tier", doc: gnp("dns", "  tier: security\n")},
		{name: "knp prefix", doc: np("knp.default.allow-web", "  selector: all()\n")},
		{name: "kcnp prefix, kube-admin", doc: gnp("kcnp.kube-admin.block.dns", "  tier: kube-admin\n")},
		{name: "kcnp prefix, kube-baseline", doc: gnp("kcnp.kube-baseline.x", "  tier: kube-baseline\n")},
		{name: "every rule field", doc: np("full", `  order: 1.5
  serviceAccountSelector: role == 'x'
  performanceHints: [AssumeNeededOnEveryNode]
  ingress:
  - action: Allow
    ipVersion: 4
    protocol: TCP
    notProtocol: 17
    metadata:
      annotations: {owner: team-a}
    http:
      methods: [GET, PUT]
      paths: [{exact: /a}, {prefix: /b/}]
    source:
      nets: [10.0.0.0/8, 192.168.1.1]
      notNets: [10.1.0.0/16]
      selector: app == 'a'
      notSelector: app == 'b'
      namespaceSelector: global()
      serviceAccounts: {names: [sa1], selector: team == 'x'}
      ports: [80, "1000:2000", http]
      notPorts: [81]
    destination:
      ports: [443]
  - action: Deny
    protocol: ICMPv6
    ipVersion: 6
    icmp: {type: 128, code: 0}
    destination: {nets: ["fd00::/64"]}
  - action: Log
    protocol: icmp
    notICMP: {type: 8}
  - action: Pass
  egress:
  - action: Allow
    protocol: 6
    destination:
      services: {name: kube-dns, namespace: kube-system}
`)},
		{name: "gnp host policy", doc: gnp("pre", "  preDNAT: true\n  applyOnForward: true\n  namespaceSelector: has(team)\n  ingress:\n  - action: Deny\n")},
		{name: "gnp untracked", doc: gnp("untracked", "  doNotTrack: true\n  applyOnForward: true\n  egress:\n  - action: Allow\n")},
		{name: "selector label value global()", doc: np("quoted", "  selector: name == 'global()'\n")},
		{name: "source services on ingress", doc: np("svc", "  ingress:\n  - action: Allow\n    source:\n      services: {name: web}\n")},

		// ---- bad ----
		{name: "ports without protocol", doc: np("p1", "  ingress:\n  - action: Allow\n    destination:\n      ports: [80]\n"),
			errs: []want{{"spec.ingress[0].destination.ports", "ports need protocol TCP, UDP or SCTP"}}},
		{name: "notPorts with ICMP", doc: np("p2", "  egress:\n  - action: Allow\n    protocol: ICMP\n    source:\n      notPorts: [80]\n"),
			errs: []want{{"spec.egress[0].source.notPorts", "notPorts need protocol TCP, UDP or SCTP"}}},
		{name: "reversed range", doc: np("p3", "  ingress:\n  - action: Allow\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: ['90:80']\n"),
			errs: []want{{"spec.ingress[1].destination.ports[0]", "port range 90:80 is reversed"}}},
		{name: "port zero", doc: np("p4", "  ingress:\n  - action: Allow\n    protocol: UDP\n    destination:\n      ports: [0, '0:5']\n"),
			errs: []want{{"spec.ingress[0].destination.ports[0]", "port 0 is invalid"}, {"spec.ingress[0].destination.ports[1]", "starts at 0"}}},
		{name: "bad port name", doc: np("p5", "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      notPorts: [Web_Port]\n"),
			errs: []want{{"spec.ingress[0].destination.notPorts[0]", `port name "Web_Port" is invalid`}}},
		{name: "missing action", doc: np("a1", "  ingress:\n  - protocol: TCP\n"),
			errs: []want{{"spec.ingress[0].action", "required"}}},
		{name: "bad action", doc: np("a2", "  egress:\n  - action: Accept\n"),
			errs: []want{{"spec.egress[0].action", `"Accept" is not one of Allow, Deny, Log, Pass`}}},
		{name: "bad ipVersion", doc: np("v1", "  ingress:\n  - action: Allow\n    ipVersion: 5\n"),
			errs: []want{{"spec.ingress[0].ipVersion", "5 is not 4 or 6"}}},
		{name: "ipVersion vs nets", doc: np("v2", "  ingress:\n  - action: Allow\n    ipVersion: 6\n    source:\n      nets: [10.0.0.0/8]\n"),
			errs: []want{{"spec.ingress[0].source.nets", "does not match ipVersion 6"}}},
		{name: "mixed families", doc: np("v3", "  ingress:\n  - action: Allow\n    source:\n      nets: [10.0.0.0/8]\n    destination:\n      notNets: ['fd00::/8']\n"),
			errs: []want{{"spec.ingress[0].destination.notNets", "mixes IPv4 and IPv6"}}},
		{name: "unmasked net", doc: np("n1", "  ingress:\n  - action: Allow\n    source:\n      nets: [10.0.0.1/8]\n"),
			errs: []want{{"spec.ingress[0].source.nets[0]", "host bits set"}}},
		{name: "garbage net", doc: np("n2", "  egress:\n  - action: Allow\n    destination:\n      notNets: [10.0.0.0/33]\n"),
			errs: []want{{"spec.egress[0].destination.notNets[0]", "is not a valid CIDR"}}},
		{name: "bad protocol", doc: np("pr1", "  ingress:\n  - action: Allow\n    protocol: GRE\n    notProtocol: 0\n"),
			errs: []want{{"spec.ingress[0].protocol", `"GRE" is not one of`}, {"spec.ingress[0].notProtocol", "protocol number 0 is invalid"}}},
		{name: "icmp without protocol", doc: np("i1", "  ingress:\n  - action: Allow\n    icmp: {type: 8}\n"),
			errs: []want{{"spec.ingress[0].icmp", "needs protocol ICMP or ICMPv6"}}},
		{name: "icmp code without type", doc: np("i2", "  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp: {code: 1}\n"),
			errs: []want{{"spec.ingress[0].icmp.code", "ICMP code needs an ICMP type"}}},
		{name: "icmp ranges", doc: np("i3", "  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp: {type: 255, code: 256}\n"),
			errs: []want{{"spec.ingress[0].icmp.type", "255 is not an ICMP type 0-254"}, {"spec.ingress[0].icmp.code", "256 is not an ICMP code 0-255"}}},
		{name: "icmp with ipVersion 6", doc: np("i4", "  ingress:\n  - action: Allow\n    protocol: ICMP\n    ipVersion: 6\n"),
			errs: []want{{"spec.ingress[0].ipVersion", "ICMP requires ipVersion 4"}}},
		{name: "icmpv6 with ipVersion 4", doc: np("i5", "  ingress:\n  - action: Allow\n    notProtocol: ICMPv6\n    ipVersion: 4\n"),
			errs: []want{{"spec.ingress[0].ipVersion", "ICMPv6 requires ipVersion 6"}}},
		{name: "notICMP without icmp protocol", doc: np("i6", "  ingress:\n  - action: Allow\n    protocol: TCP\n    notICMP: {type: 3}\n"),
			errs: []want{{"spec.ingress[0].notICMP", "needs protocol (or notProtocol) ICMP"}}},
		{name: "bad selector", doc: np("s1", "  selector: app = 'x'\n"),
			errs: []want{{"spec.selector", "invalid selector"}}},
		{name: "global in policy selector", doc: np("s2", "  selector: global()\n"),
			errs: []want{{"spec.selector", "global() can only be used in a rule's namespaceSelector"}}},
		{name: "global in rule selector", doc: np("s3", "  ingress:\n  - action: Allow\n    source:\n      selector: global() && has(x)\n      notSelector: '!global()'\n"),
			errs: []want{{"spec.ingress[0].source.selector", "global() can only be used"}, {"spec.ingress[0].source.notSelector", "global() can only be used"}}},
		{name: "global combined in namespaceSelector", doc: np("s4", "  ingress:\n  - action: Allow\n    source:\n      namespaceSelector: global() || has(x)\n"),
			errs: []want{{"spec.ingress[0].source.namespaceSelector", "global() cannot be combined"}}},
		{name: "bad rule selectors", doc: np("s5", "  serviceAccountSelector: '('\n  egress:\n  - action: Allow\n    destination:\n      namespaceSelector: 'a in'\n      serviceAccounts: {selector: '&&', names: [Bad_Name]}\n"),
			errs: []want{{"spec.serviceAccountSelector", "invalid selector"}, {"spec.egress[0].destination.namespaceSelector", "invalid selector"},
				{"spec.egress[0].destination.serviceAccounts.selector", "invalid selector"}, {"spec.egress[0].destination.serviceAccounts.names[0]", "Bad_Name"}}},
		{name: "global in gnp selectors", doc: gnp("g1", "  namespaceSelector: global()\n  serviceAccountSelector: global()\n"),
			errs: []want{{"spec.namespaceSelector", "global() can only be used"}, {"spec.serviceAccountSelector", "global() can only be used"}}},
		{name: "bad types", doc: np("t1", "  types: [Ingress, Forward, Ingress]\n"),
			errs: []want{{"spec.types[1]", `"Forward" is not one of Ingress, Egress`}, {"spec.types[2]", "listed more than once"}}},
		{name: "preDNAT without applyOnForward, with egress", doc: gnp("pd1", "  preDNAT: true\n  egress:\n  - action: Allow\n"),
			errs: []want{{"spec.egress", "preDNAT policy cannot have egress rules"}, {"spec.types", "cannot have type Egress"}, {"spec.applyOnForward", "must be true"}}},
		{name: "preDNAT and doNotTrack", doc: gnp("pd2", "  preDNAT: true\n  doNotTrack: true\n  applyOnForward: true\n  types: [Ingress]\n"),
			errs: []want{{"spec.preDNAT", "preDNAT and doNotTrack cannot both be true"}}},
		{name: "doNotTrack without applyOnForward", doc: gnp("dnt", "  doNotTrack: true\n"),
			errs: []want{{"spec.applyOnForward", "must be true when preDNAT or doNotTrack"}}},
		{name: "http on deny", doc: np("h1", "  ingress:\n  - action: Deny\n    http: {methods: [GET]}\n"),
			errs: []want{{"spec.ingress[0].http", "only valid on Allow rules"}}},
		{name: "http in egress, with UDP", doc: np("h2", "  egress:\n  - action: Allow\n    protocol: UDP\n    http: {paths: [{exact: /a, prefix: /b}, {}, {prefix: 'x'}]}\n"),
			errs: []want{{"spec.egress[0].http", "not allowed in egress rules"}, {"spec.egress[0].protocol", "HTTP match must have protocol TCP"},
				{"spec.egress[0].http.paths[0]", "only one of exact or prefix"}, {"spec.egress[0].http.paths[1]", "one of exact or prefix is required"},
				{"spec.egress[0].http.paths[2]", "must start with '/'"}}},
		{name: "duplicate http method", doc: np("h3", "  ingress:\n  - action: Allow\n    http: {methods: [GET, GET]}\n"),
			errs: []want{{"spec.ingress[0].http.methods[1]", `duplicate method "GET"`}}},
		{name: "services misuse", doc: np("sv1", "  ingress:\n  - action: Allow\n    protocol: TCP\n    source:\n      services: {}\n      selector: has(x)\n      nets: [10.0.0.0/8]\n    destination:\n      services: {name: web}\n      ports: [80]\n"),
			errs: []want{{"spec.ingress[0].source.services.name", "required"}, {"spec.ingress[0].source.services", "cannot be used with selector"},
				{"spec.ingress[0].source.services", "cannot be used with nets"}, {"spec.ingress[0].destination.ports", "cannot be used with services"},
				{"spec.ingress[0].destination.services", "not allowed in an ingress rule's destination"}}},
		{name: "gnp service without namespace", doc: gnp("sv2", "  egress:\n  - action: Allow\n    destination:\n      services: {name: web}\n    source:\n      services: {name: x, namespace: kube-system}\n"),
			errs: []want{{"spec.egress[0].destination.services.namespace", "required in a global policy"}, {"spec.egress[0].source.services", "not allowed in an egress rule's source"}}},
		{name: "bad performance hint", doc: np("ph", "  performanceHints: [Fast, AssumeNeededOnEveryNode, AssumeNeededOnEveryNode]\n"),
			errs: []want{{"spec.performanceHints[0]", `"Fast" is not one of`}, {"spec.performanceHints[2]", "listed more than once"}}},
		{name: "bad rule annotation", doc: np("ra", "  ingress:\n  - action: Allow\n    metadata:\n      annotations: {'bad key!': x}\n"),
			errs: []want{{"spec.ingress[0].metadata.annotations[bad key!]", "name part must consist"}}},
		{name: "kcnp prefix in another tier", doc: gnp("kcnp.kube-admin.x", "  tier: kube-baseline\n"),
			errs: []want{{"metadata.name", `has tier prefix "kcnp" but the policy is in tier "kube-baseline"`}}},
		{name: "kcnp prefix on a namespaced policy", doc: np("kcnp.kube-admin.x", "  tier: kube-admin\n"),
			errs: []want{{"metadata.name", `has tier prefix "kcnp" but the policy is in tier "kube-admin"`}}},
		{name: "wrong tier prefix", doc: gnp("other.dns", "  tier: security\n"),
			errs: []want{{"metadata.name", `has tier prefix "other" but the policy is in tier "security"`}}},
		{name: "prefix on default tier", doc: np("security.web", ""),
			errs: []want{{"metadata.name", `has tier prefix "security" but the policy is in tier "default"`}}},
		{name: "name not a label", doc: np("Web_1", ""),
			errs: []want{{"metadata.name", "RFC 1123 label"}}},
		{name: "name with two dots", doc: gnp("security.a.b", "  tier: security\n"),
			errs: []want{{"metadata.name", "must not contain dots"}}},
		{name: "bad tier name", doc: gnp("x", "  tier: my.tier\n"),
			errs: []want{{"spec.tier", "must not contain '.'"}}},
		{name: "every error at once", doc: np("Bad!", "  tier: Bad\n  selector: '=='\n  types: [Sideways]\n  ingress:\n  - action: Nope\n    ipVersion: 7\n"),
			errs: []want{{"metadata.name", "RFC 1123 label"}, {"spec.tier", "RFC 1123 label"}, {"spec.selector", "invalid selector"},
				{"spec.types[0]", "not one of Ingress, Egress"}, {"spec.ingress[0].action", "not one of"}, {"spec.ingress[0].ipVersion", "7 is not 4 or 6"}}},
	})
}

func TestPolicyRuleLimit(t *testing.T) {
	p := &GlobalNetworkPolicy{}
	p.Kind, p.APIVersion, p.Name = KindGlobalNetworkPolicy, APIVersion, "big"
	for i := 0; i < MaxRulesPerDirection; i++ {
		p.Spec.Ingress = append(p.Spec.Ingress, Rule{Action: Allow})
	}
	SetDefaults(p)
	if err := Validate(p); err != nil {
		t.Fatalf("1024 rules must be accepted: %v", err)
	}
	p.Spec.Ingress = append(p.Spec.Ingress, Rule{Action: Allow})
	p.Spec.Egress = append(p.Spec.Ingress, Rule{Action: Allow})
	var list ErrorList
	if err := Validate(p); !errors.As(err, &list) || !matchErrors(list, []want{
		{"spec.ingress", "1025 rules is more than the limit of 1024"},
		{"spec.egress", "1026 rules is more than the limit of 1024"},
	}) {
		t.Fatalf("got %v", err)
	}
}

func TestPolicyOrderNaN(t *testing.T) {
	for _, o := range []float64{math.NaN(), math.Inf(1)} {
		p := &NetworkPolicy{}
		p.Kind, p.APIVersion, p.Name, p.Namespace = KindNetworkPolicy, APIVersion, "x", "ns"
		p.Spec.Order = &o
		var list ErrorList
		if err := Validate(p); !errors.As(err, &list) || !matchErrors(list, []want{{"spec.order", "is not a finite number"}}) {
			t.Fatalf("order %v: got %v", o, err)
		}
	}
}

func TestStagedPolicyValidation(t *testing.T) {
	snp := func(spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata:\n  name: s\n  namespace: prod\nspec:\n" + spec
	}
	sgnp := func(spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata:\n  name: s\nspec:\n" + spec
	}
	runValidationCases(t, []validationCase{
		{name: "set", doc: snp("  stagedAction: Set\n  ingress:\n  - action: Deny\n")},
		{name: "default action", doc: sgnp("  egress:\n  - action: Deny\n  preDNAT: false\n")},
		{name: "learn", doc: sgnp("  stagedAction: Learn\n")},
		{name: "ignore", doc: snp("  stagedAction: Ignore\n")},
		{name: "delete", doc: snp("  stagedAction: Delete\n  tier: default\n")},
		{name: "bad action", doc: snp("  stagedAction: Remove\n"),
			errs: []want{{"spec.stagedAction", `"Remove" is not one of Set, Delete, Learn, Ignore`}}},
		{name: "delete with rules", doc: sgnp("  stagedAction: Delete\n  selector: all()\n  ingress:\n  - action: Allow\n"),
			errs: []want{{"spec.ingress", "must be empty when stagedAction is Delete"}, {"spec.selector", "must be empty when stagedAction is Delete"}}},
		{name: "staged global rules checked", doc: sgnp("  preDNAT: true\n  ingress:\n  - action: Allow\n    protocol: ICMP\n    destination: {ports: [1]}\n"),
			errs: []want{{"spec.applyOnForward", "must be true"}, {"spec.ingress[0].destination.ports", "ports need protocol"}}},
	})
}

func TestPolicyDefaults(t *testing.T) {
	in, eg := []Rule{{Action: Allow}}, []Rule{{Action: Deny}}
	I, E := PolicyTypeIngress, PolicyTypeEgress
	tests := []struct {
		name            string
		types           []PolicyType
		ingress, egress []Rule
		want            []PolicyType
	}{
		{"no rules", nil, nil, nil, []PolicyType{I}},
		{"ingress only", nil, in, nil, []PolicyType{I}},
		{"egress only", nil, nil, eg, []PolicyType{E}},
		{"both", nil, in, eg, []PolicyType{I, E}},
		{"empty list is unset", []PolicyType{}, in, eg, []PolicyType{I, E}},
		{"explicit egress kept", []PolicyType{E}, in, nil, []PolicyType{E}},
		{"explicit both kept", []PolicyType{E, I}, nil, nil, []PolicyType{E, I}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(kind string, r Resource, types func() []PolicyType, tier func() string) {
				SetDefaults(r)
				SetDefaults(r) // idempotent
				if got := types(); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s: types = %v, want %v", kind, got, tt.want)
				}
				if tier() != "default" {
					t.Errorf("%s: tier = %q", kind, tier())
				}
			}
			n := &NetworkPolicy{Spec: NetworkPolicySpec{Types: tt.types, Ingress: tt.ingress, Egress: tt.egress}}
			check("NetworkPolicy", n, func() []PolicyType { return n.Spec.Types }, func() string { return n.Spec.Tier })
			g := &GlobalNetworkPolicy{Spec: GlobalNetworkPolicySpec{Types: tt.types, Ingress: tt.ingress, Egress: tt.egress}}
			check("GlobalNetworkPolicy", g, func() []PolicyType { return g.Spec.Types }, func() string { return g.Spec.Tier })
			s := &StagedNetworkPolicy{Spec: StagedNetworkPolicySpec{Types: tt.types, Ingress: tt.ingress, Egress: tt.egress}}
			check("StagedNetworkPolicy", s, func() []PolicyType { return s.Spec.Types }, func() string { return s.Spec.Tier })
			sg := &StagedGlobalNetworkPolicy{Spec: StagedGlobalNetworkPolicySpec{Types: tt.types, Ingress: tt.ingress, Egress: tt.egress}}
			check("StagedGlobalNetworkPolicy", sg, func() []PolicyType { return sg.Spec.Types }, func() string { return sg.Spec.Tier })
		})
	}

	// An explicit tier is kept; a staged Delete gets no types.
	g := &GlobalNetworkPolicy{Spec: GlobalNetworkPolicySpec{Tier: "security"}}
	SetDefaults(g)
	if g.Spec.Tier != "security" {
		t.Errorf("tier = %q", g.Spec.Tier)
	}
	d := &StagedNetworkPolicy{Spec: StagedNetworkPolicySpec{StagedAction: StagedActionDelete}}
	SetDefaults(d)
	if d.Spec.Types != nil || d.Spec.Tier != "default" {
		t.Errorf("staged delete defaults: %+v", d.Spec)
	}
}

func TestRuleJSON(t *testing.T) {
	// Empty source/destination are omitted, even when allocated but empty.
	r := &Profile{Spec: ProfileSpec{Ingress: []Rule{{Action: Allow, Source: EntityRule{Nets: []string{}}}}}}
	r.Kind, r.APIVersion, r.Name = KindProfile, APIVersion, "p"
	got, err := marshalString(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, `"spec":{"ingress":[{"action":"Allow"}]}`) {
		t.Errorf("got %s", got)
	}
}
