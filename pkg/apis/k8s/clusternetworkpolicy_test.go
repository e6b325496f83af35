package k8s

import (
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/selector"
)

// cnpDoc is a ClusterNetworkPolicy manifest with the given spec (indented
// YAML, without the "spec:" line).
func cnpDoc(name, spec string) string {
	return "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata:\n  name: " + name + "\nspec:" +
		strings.ReplaceAll("\n"+strings.TrimPrefix(spec, "\n"), "\n", "\n  ") + "\n"
}

// TestBuiltinTiersForClusterNetworkPolicy: the two tiers converted policies
// go into exist among the built-in tiers with Calico's orders and default
// actions: kube-admin before the default tier, kube-baseline after it, both
// ending with Pass so that an unmatched packet goes on to the next tier.
func TestBuiltinTiersForClusterNetworkPolicy(t *testing.T) {
	for _, c := range []struct {
		tier   cnpv1alpha2.Tier
		name   string
		order  float64
		action v3.Action
	}{
		{cnpv1alpha2.AdminTier, "kube-admin", 1_000, v3.Pass},
		{cnpv1alpha2.BaselineTier, "kube-baseline", 10_000_000, v3.Pass},
	} {
		if got := ClusterNetworkPolicyTier(c.tier); got != c.name {
			t.Errorf("tier %s → %q, want %q", c.tier, got, c.name)
		}
		bt, ok := v3.LookupBuiltinTier(c.name)
		if !ok {
			t.Errorf("%s is not a built-in tier", c.name)
			continue
		}
		if bt.Order != c.order || bt.DefaultAction != c.action {
			t.Errorf("%s: order %v, default action %s; Calico has %v, %s", c.name, bt.Order, bt.DefaultAction, c.order, c.action)
		}
	}
	def, _ := v3.LookupBuiltinTier(v3.DefaultTierName)
	if !(v3.KubeAdminTierOrder < def.Order && def.Order < v3.KubeBaselineTierOrder) {
		t.Errorf("tier orders: kube-admin %v, default %v, kube-baseline %v", v3.KubeAdminTierOrder, def.Order, v3.KubeBaselineTierOrder)
	}
	if got := ClusterNetworkPolicyTier("Developer"); got != "" {
		t.Errorf("unknown tier → %q", got)
	}
}

// TestClusterNetworkPolicyGolden: documents converted and compared with
// testdata/clusternetworkpolicy/<name>.json; each result also passes
// v3.Validate and is stable under v3.SetDefaults (runGolden).
func TestClusterNetworkPolicyGolden(t *testing.T) {
	runGolden(t, "clusternetworkpolicy", []goldenCase{
		// Admin tier, a namespaces subject, one rule of each action.
		{"admin-actions", cnpDoc("admin-actions", `
tier: Admin
priority: 10
subject:
  namespaces:
    matchLabels: {tenant: a}
ingress:
- name: deny-from-b
  action: Deny
  from:
  - namespaces:
      matchLabels: {tenant: b}
- name: pass-from-monitoring
  action: Pass
  from:
  - namespaces:
      matchLabels: {kubernetes.io/metadata.name: monitoring}
- action: Accept
  from:
  - namespaces: {}
`)},
		// Baseline tier, a pods subject, egress to pods and networks.
		{"baseline-pods", cnpDoc("baseline-pods", `
tier: Baseline
priority: 1000
subject:
  pods:
    namespaceSelector:
      matchExpressions:
      - {key: env, operator: In, values: [prod, staging]}
    podSelector:
      matchLabels: {app: web}
egress:
- action: Accept
  to:
  - pods:
      namespaceSelector: {}
      podSelector:
        matchLabels: {app: db}
  - networks: [10.0.0.0/8, "fd00:0::/8", 192.168.1.0/24]
- action: Deny
  to:
  - networks: [0.0.0.0/0, "::/0"]
`)},
		// Every subject and peer selector empty: all pods in all
		// namespaces (never host endpoints).
		{"all-pods", cnpDoc("all-pods", `
tier: Admin
priority: 0
subject:
  pods:
    namespaceSelector: {}
    podSelector: {}
ingress:
- action: Deny
  from:
  - pods:
      namespaceSelector: {}
      podSelector: {}
`)},
		// Port forms: numbers and ranges merged per protocol, a
		// protocol without a port (all its ports), protocols in name
		// order, times each peer.
		{"ports", cnpDoc("ports", `
tier: Admin
priority: 500
subject:
  namespaces: {}
ingress:
- name: web
  action: Accept
  protocols:
  - tcp: {destinationPort: {number: 443}}
  - tcp: {destinationPort: {number: 80}}
  - tcp: {destinationPort: {range: {start: 8000, end: 8080}}}
  - udp: {destinationPort: {number: 53}}
  - sctp: {destinationPort: {range: {start: 3000, end: 3001}}}
  from:
  - namespaces:
      matchLabels: {a: b}
  - pods:
      namespaceSelector:
        matchLabels: {c: d}
      podSelector:
        matchExpressions:
        - {key: role, operator: Exists}
egress:
- action: Deny
  protocols:
  - udp: {destinationPort: {number: 53}}
  - udp: {destinationPort: {number: 5353}}
  to:
  - networks: [203.0.113.0/24]
`)},
		// One port per protocol stays a single port; adjacent ports of a
		// protocol merge into one range.
		{"single-ports", cnpDoc("single-ports", `
tier: Baseline
priority: 1
subject:
  namespaces:
    matchLabels: {x: "y"}
egress:
- action: Pass
  protocols:
  - tcp: {destinationPort: {number: 22}}
  - udp: {destinationPort: {number: 53}}
  - sctp: {destinationPort: {number: 22}}
  - sctp: {destinationPort: {number: 23}}
  to:
  - namespaces: {}
`)},
		// v1beta1 is served with the same schema; a rule-less policy has
		// no rules and (once defaulted) type Ingress, which in a Pass tier
		// changes nothing.
		{"v1beta1-no-rules", strings.Replace(cnpDoc("v1beta1-no-rules", `
tier: Admin
priority: 3
subject:
  namespaces: {}
`), "v1alpha2", "v1beta1", 1)},
	})
}

// TestClusterNetworkPolicyToV3 checks the conversion field by field for Go
// objects: tier, order from priority, selectors, actions, peers, ports and
// rule names; every result passes tortie's v3 validation.
func TestClusterNetworkPolicyToV3(t *testing.T) {
	tcp := numorstring.ProtocolFromStringP("TCP")
	orch := "projectcalico.org/orchestrator == 'k8s'"
	base := func(tier cnpv1alpha2.Tier, prio int32) *cnpv1alpha2.ClusterNetworkPolicy {
		return &cnpv1alpha2.ClusterNetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ignored", Labels: map[string]string{"a": "b"}, UID: "u"},
			Spec: cnpv1alpha2.ClusterNetworkPolicySpec{
				Tier: tier, Priority: prio,
				Subject: cnpv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}},
			},
		}
	}
	nsPeer := func(k, v string) cnpv1alpha2.ClusterNetworkPolicyIngressPeer {
		return cnpv1alpha2.ClusterNetworkPolicyIngressPeer{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}}
	}
	for _, c := range []struct {
		name  string
		in    func() *cnpv1alpha2.ClusterNetworkPolicy
		check func(t *testing.T, g *v3.GlobalNetworkPolicy)
	}{
		{"admin tier, priority 0 first", func() *cnpv1alpha2.ClusterNetworkPolicy { return base(cnpv1alpha2.AdminTier, 0) },
			func(t *testing.T, g *v3.GlobalNetworkPolicy) {
				if g.Name != "kcnp.kube-admin.p" || g.Namespace != "" || g.Labels != nil || g.UID != "" {
					t.Errorf("metadata %+v: want only the name", g.ObjectMeta)
				}
				if g.Spec.Tier != "kube-admin" || *g.Spec.Order != 0 {
					t.Errorf("tier %q order %v", g.Spec.Tier, *g.Spec.Order)
				}
				if g.Spec.Selector != orch || g.Spec.NamespaceSelector != "all()" {
					t.Errorf("selector %q namespaceSelector %q", g.Spec.Selector, g.Spec.NamespaceSelector)
				}
			}},
		{"baseline tier, priority 1000 last", func() *cnpv1alpha2.ClusterNetworkPolicy { return base(cnpv1alpha2.BaselineTier, 1000) },
			func(t *testing.T, g *v3.GlobalNetworkPolicy) {
				if g.Spec.Tier != "kube-baseline" || *g.Spec.Order != 1000 {
					t.Errorf("tier %q order %v", g.Spec.Tier, *g.Spec.Order)
				}
			}},
		{"pods subject", func() *cnpv1alpha2.ClusterNetworkPolicy {
			p := base(cnpv1alpha2.AdminTier, 5)
			p.Spec.Subject = cnpv1alpha2.ClusterNetworkPolicySubject{Pods: &cnpv1alpha2.NamespacedPod{
				NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}},
				PodSelector:       metav1.LabelSelector{MatchLabels: map[string]string{"app": "y"}},
			}}
			return p
		}, func(t *testing.T, g *v3.GlobalNetworkPolicy) {
			if g.Spec.Selector != orch+" && app == 'y'" || g.Spec.NamespaceSelector != "team == 'x'" {
				t.Errorf("selector %q namespaceSelector %q", g.Spec.Selector, g.Spec.NamespaceSelector)
			}
		}},
		{"actions", func() *cnpv1alpha2.ClusterNetworkPolicy {
			p := base(cnpv1alpha2.AdminTier, 5)
			for _, a := range []cnpv1alpha2.ClusterNetworkPolicyRuleAction{"Accept", "Deny", "Pass"} {
				p.Spec.Ingress = append(p.Spec.Ingress, cnpv1alpha2.ClusterNetworkPolicyIngressRule{Action: a, From: []cnpv1alpha2.ClusterNetworkPolicyIngressPeer{nsPeer("k", "v")}})
			}
			return p
		}, func(t *testing.T, g *v3.GlobalNetworkPolicy) {
			var got []v3.Action
			for _, r := range g.Spec.Ingress {
				got = append(got, r.Action)
				if r.Source.NamespaceSelector != "k == 'v'" || r.Source.Selector != "" || r.Protocol != nil || r.Metadata != nil {
					t.Errorf("rule %+v", r)
				}
			}
			if want := []v3.Action{v3.Allow, v3.Deny, v3.Pass}; !reflect.DeepEqual(got, want) {
				t.Errorf("actions %v, want %v", got, want)
			}
			if !reflect.DeepEqual(g.Spec.Types, []v3.PolicyType{v3.PolicyTypeIngress}) {
				t.Errorf("types %v", g.Spec.Types)
			}
		}},
		{"egress only, rule name, ports", func() *cnpv1alpha2.ClusterNetworkPolicy {
			p := base(cnpv1alpha2.AdminTier, 5)
			p.Spec.Egress = []cnpv1alpha2.ClusterNetworkPolicyEgressRule{{
				Name: "to dns", Action: "Accept",
				Protocols: []cnpv1alpha2.ClusterNetworkPolicyProtocol{
					{TCP: &cnpv1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnpv1alpha2.Port{Number: 54}}},
					{TCP: &cnpv1alpha2.ClusterNetworkPolicyProtocolTCP{DestinationPort: &cnpv1alpha2.Port{Number: 53}}},
				},
				To: []cnpv1alpha2.ClusterNetworkPolicyEgressPeer{
					{Networks: []cnpv1alpha2.CIDR{"10.96.0.10/32"}},
					{Pods: &cnpv1alpha2.NamespacedPod{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}}}},
				},
			}}
			return p
		}, func(t *testing.T, g *v3.GlobalNetworkPolicy) {
			meta := &v3.RuleMetadata{Annotations: map[string]string{"name": "to dns"}}
			ports := []numorstring.Port{numorstring.PortFromRange(53, 54)}
			want := []v3.Rule{
				{Action: v3.Allow, Protocol: tcp, Metadata: meta, Destination: v3.EntityRule{Nets: []string{"10.96.0.10/32"}, Ports: ports}},
				{Action: v3.Allow, Protocol: tcp, Metadata: meta, Destination: v3.EntityRule{Selector: orch + " && k8s-app == 'kube-dns'", NamespaceSelector: "all()", Ports: ports}},
			}
			if !reflect.DeepEqual(g.Spec.Egress, want) {
				t.Errorf("egress\n%+v\nwant\n%+v", g.Spec.Egress, want)
			}
			if g.Spec.Ingress != nil || !reflect.DeepEqual(g.Spec.Types, []v3.PolicyType{v3.PolicyTypeEgress}) {
				t.Errorf("ingress %v types %v", g.Spec.Ingress, g.Spec.Types)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := c.in()
			before := in.DeepCopy()
			g, err := ClusterNetworkPolicyToV3(in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(in, before) {
				t.Error("the input was modified")
			}
			if err := v3.Validate(g); err != nil {
				t.Errorf("v3.Validate: %v", err)
			}
			c.check(t, g)
		})
	}
	if _, err := ClusterNetworkPolicyToV3(nil); err == nil {
		t.Error("nil: no error")
	}
}

// TestClusterNetworkPolicySelectorsMatch evaluates the converted selectors
// on endpoint labels as Calico would: the subject selects pods (never a host
// endpoint, which has no orchestrator label) of the chosen namespaces.
func TestClusterNetworkPolicySelectorsMatch(t *testing.T) {
	r, err := Decode([]byte(cnpDoc("m", `
tier: Admin
priority: 1
subject:
  pods:
    namespaceSelector:
      matchLabels: {team: a}
    podSelector:
      matchExpressions:
      - {key: app, operator: NotIn, values: [db]}
`)))
	if err != nil {
		t.Fatal(err)
	}
	g := r.(*v3.GlobalNetworkPolicy)
	sel, err := selector.Parse(g.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	nsSel, err := selector.Parse(g.Spec.NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"web pod", map[string]string{"projectcalico.org/orchestrator": "k8s", "app": "web"}, true},
		{"unlabelled pod", map[string]string{"projectcalico.org/orchestrator": "k8s"}, true},
		{"db pod", map[string]string{"projectcalico.org/orchestrator": "k8s", "app": "db"}, false},
		{"host endpoint", map[string]string{"app": "web"}, false},
	} {
		if got := sel.Evaluate(c.labels); got != c.want {
			t.Errorf("%s: selector %q matches %v, want %v", c.name, g.Spec.Selector, got, c.want)
		}
	}
	if !nsSel.Evaluate(map[string]string{"team": "a"}) || nsSel.Evaluate(map[string]string{"team": "b"}) {
		t.Errorf("namespace selector %q", g.Spec.NamespaceSelector)
	}
}

// TestClusterNetworkPolicyValidation covers what the API server refuses
// against the standard CRD (and the selectors and experimental fields tortie
// also refuses), with the field paths: nothing is converted.
func TestClusterNetworkPolicyValidation(t *testing.T) {
	const subj = "tier: Admin\npriority: 1\nsubject:\n  namespaces: {}\n"
	for _, c := range []struct {
		name   string
		doc    string
		fields []string
		detail string
	}{
		{"missing spec", "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: p}\n",
			[]string{"spec"}, "Required value"},
		{"bad name", cnpDoc("Bad_Name", subj),
			[]string{"metadata.name"}, "RFC 1123"},
		{"missing tier and priority", cnpDoc("p", "subject:\n  namespaces: {}\n"),
			[]string{"spec.tier", "spec.priority"}, "Required value"},
		{"unknown tier", cnpDoc("p", "tier: Developer\npriority: 1\nsubject:\n  namespaces: {}\n"),
			[]string{"spec.tier"}, `Unsupported value: "Developer": supported values: "Admin", "Baseline"`},
		{"priority out of range", cnpDoc("p", "tier: Admin\npriority: 1001\nsubject:\n  namespaces: {}\n"),
			[]string{"spec.priority"}, "spec.priority in body should be less than or equal to 1000"},
		{"negative priority", cnpDoc("p", "tier: Admin\npriority: -1\nsubject:\n  namespaces: {}\n"),
			[]string{"spec.priority"}, "should be greater than or equal to 0"},
		{"empty subject", cnpDoc("p", "tier: Admin\npriority: 1\nsubject: {}\n"),
			[]string{"spec.subject"}, "should have at least 1 properties"},
		{"two subjects", cnpDoc("p", "tier: Admin\npriority: 1\nsubject:\n  namespaces: {}\n  pods: {podSelector: {}}\n"),
			[]string{"spec.subject"}, "Too many"},
		{"pods without podSelector", cnpDoc("p", "tier: Admin\npriority: 1\nsubject:\n  pods: {namespaceSelector: {}}\n"),
			[]string{"spec.subject.pods.podSelector"}, "Required value"},
		{"bad selector", cnpDoc("p", subj+"ingress:\n- action: Deny\n  from:\n  - namespaces:\n      matchExpressions:\n      - {key: a, operator: Equals, values: [b]}\n"),
			[]string{"spec.ingress[0].from[0].namespaces.matchExpressions[0].operator"}, "not a valid selector operator"},
		{"bad action", cnpDoc("p", subj+"ingress:\n- action: Allow\n  from:\n  - namespaces: {}\n"),
			[]string{"spec.ingress[0].action"}, `Unsupported value: "Allow"`},
		{"missing from and action", cnpDoc("p", subj+"ingress:\n- name: x\n"),
			[]string{"spec.ingress[0].action", "spec.ingress[0].from"}, "Required value"},
		{"empty to", cnpDoc("p", subj+"egress:\n- action: Deny\n  to: []\n"),
			[]string{"spec.egress[0].to"}, "should have at least 1 items"},
		{"empty peer", cnpDoc("p", subj+"egress:\n- action: Deny\n  to:\n  - {}\n"),
			[]string{"spec.egress[0].to[0]"}, "should have at least 1 properties"},
		{"two peers in one", cnpDoc("p", subj+"egress:\n- action: Deny\n  to:\n  - {namespaces: {}, networks: [10.0.0.0/8]}\n"),
			[]string{"spec.egress[0].to[0]"}, "Too many"},
		{"rule name too long", cnpDoc("p", subj+"ingress:\n- action: Deny\n  name: "+strings.Repeat("n", 101)+"\n  from:\n  - namespaces: {}\n"),
			[]string{"spec.ingress[0].name"}, "may not be more than 100"},
		{"networks", cnpDoc("p", subj+"egress:\n- action: Deny\n  to:\n  - networks: [10.0.0.1/8, 10.0.0.0, \"::ffff:10.0.0.0/104\", 10.0.0.0/33, 010.0.0.0/8, 192.168.0.0/16, 192.168.0.0/16]\n"),
			[]string{"spec.egress[0].to[0].networks[0]", "spec.egress[0].to[0].networks[1]", "spec.egress[0].to[0].networks[2]", "spec.egress[0].to[0].networks[3]", "spec.egress[0].to[0].networks[4]", "spec.egress[0].to[0].networks[6]"}, "Invalid CIDR format provided"},
		{"port range", cnpDoc("p", subj+"ingress:\n- action: Deny\n  from:\n  - namespaces: {}\n  protocols:\n  - tcp: {destinationPort: {range: {start: 90, end: 80}}}\n  - udp: {destinationPort: {range: {start: 80, end: 80}}}\n"),
			[]string{"spec.ingress[0].protocols[0].tcp.destinationPort.range", "spec.ingress[0].protocols[1].udp.destinationPort.range"}, "Start port must be less than End port"},
		{"port numbers", cnpDoc("p", subj+"ingress:\n- action: Deny\n  from:\n  - namespaces: {}\n  protocols:\n  - tcp: {destinationPort: {number: 65536}}\n  - sctp: {destinationPort: {number: 0}}\n"),
			[]string{"spec.ingress[0].protocols[0].tcp.destinationPort.number", "spec.ingress[0].protocols[1].sctp.destinationPort", "spec.ingress[0].protocols[1].sctp.destinationPort.number"}, "destinationPort.number in body should be less than or equal to 65535"},
		{"protocol one-of", cnpDoc("p", subj+"ingress:\n- action: Deny\n  from:\n  - namespaces: {}\n  protocols:\n  - {}\n  - tcp: {destinationPort: {number: 1}}\n    udp: {destinationPort: {number: 1}}\n  - tcp: {}\n  - tcp: {destinationPort: {number: 1, range: {start: 1, end: 2}}}\n"),
			[]string{"spec.ingress[0].protocols[0]", "spec.ingress[0].protocols[1]", "spec.ingress[0].protocols[2].tcp", "spec.ingress[0].protocols[3].tcp.destinationPort"}, "properties"},
		{"empty protocols", cnpDoc("p", subj+"ingress:\n- action: Deny\n  from:\n  - namespaces: {}\n  protocols: []\n"),
			[]string{"spec.ingress[0].protocols"}, "should have at least 1 items"},
		{"experimental fields", cnpDoc("p", subj+"egress:\n- action: Accept\n  to:\n  - domainNames: [example.com]\n  - nodes: {}\n  protocols:\n  - destinationNamedPort: http\n"),
			[]string{"spec.egress[0].protocols[0].destinationNamedPort", "spec.egress[0].to[0].domainNames", "spec.egress[0].to[1].nodes"}, "experimental channel"},
		{"unknown field", cnpDoc("p", subj+"ingres: []\n"),
			[]string{"spec.ingres"}, "unknown field"},
		// The API server takes a DNS subdomain of up to 253 characters;
		// with the "kcnp.kube-admin." prefix it must still fit.
		{"name too long with the prefix", cnpDoc(strings.Repeat("a", 240), subj),
			[]string{"metadata.name"}, "converts to an invalid GlobalNetworkPolicy"},
		{"apiVersion", strings.Replace(cnpDoc("p", subj), "v1alpha2", "v1alpha1", 1),
			[]string{"apiVersion"}, "not supported for kind ClusterNetworkPolicy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decode([]byte(c.doc))
			if err == nil {
				t.Fatalf("no error; converted to %+v", r)
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

	t.Run("too many rules", func(t *testing.T) {
		p := &cnpv1alpha2.ClusterNetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec:       cnpv1alpha2.ClusterNetworkPolicySpec{Tier: "Admin", Subject: cnpv1alpha2.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{}}},
		}
		for range 26 {
			p.Spec.Ingress = append(p.Spec.Ingress, cnpv1alpha2.ClusterNetworkPolicyIngressRule{Action: "Deny", From: []cnpv1alpha2.ClusterNetworkPolicyIngressPeer{{Namespaces: &metav1.LabelSelector{}}}})
		}
		_, err := ClusterNetworkPolicyToV3(p)
		if got := fieldsOf(err); !reflect.DeepEqual(got, []string{"spec.ingress"}) || !strings.Contains(err.Error(), "must have at most 25 items") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("namespace ignored", func(t *testing.T) {
		doc := strings.Replace(cnpDoc("p", subj), "name: p", "name: p\n  namespace: Not_A_Namespace", 1)
		r, err := Decode([]byte(doc))
		if err != nil || r.GetNamespace() != "" {
			t.Errorf("%v, %v", r, err)
		}
	})
}
