package kubecontrollers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	npaversioned "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"

	"github.com/tortie/tortie/deploy"
	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

func cnpFrom(t *testing.T, doc string) *cnpv1alpha2.ClusterNetworkPolicy {
	t.Helper()
	cnp := &cnpv1alpha2.ClusterNetworkPolicy{}
	if err := yaml.UnmarshalStrict([]byte(doc), cnp); err != nil {
		t.Fatal(err)
	}
	return cnp
}

// TestDesiredClusterNetworkPolicy: a policy the converter takes is its
// conversion; a rule it refuses is failed closed as Calico does (Deny and
// Pass become deny-all, Accept is dropped), the rest kept in place; a
// policy whose own fields it refuses is an error.
func TestDesiredClusterNetworkPolicy(t *testing.T) {
	const good = `
metadata: {name: web}
spec:
  tier: Admin
  priority: 7
  subject: {pods: {namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {app: web}}}}
  ingress:
  - {name: from-b, action: Accept, from: [{namespaces: {matchLabels: {team: b}}}]}
  egress:
  - {action: Deny, to: [{networks: [10.0.0.0/8]}]}
`
	cnp := cnpFrom(t, good)
	want, err := k8s.ClusterNetworkPolicyToV3(cnp)
	if err != nil {
		t.Fatal(err)
	}
	got, problems, err := DesiredClusterNetworkPolicy(cnp)
	if err != nil || len(problems) > 0 {
		t.Fatalf("problems %v, error %v", problems, err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("not the conversion (-want +got):\n%s", d)
	}
	if got.Name != "kcnp.kube-admin.web" || got.Spec.Tier != "kube-admin" || *got.Spec.Order != 7 {
		t.Errorf("name %s, tier %s, order %v", got.Name, got.Spec.Tier, *got.Spec.Order)
	}

	// Rules the converter refuses (a selector operator the CRD lets
	// through) between good ones.
	bad := cnpFrom(t, `
metadata: {name: mixed}
spec:
  tier: Baseline
  priority: 3
  subject: {namespaces: {}}
  ingress:
  - {name: ok1, action: Deny, from: [{namespaces: {matchLabels: {x: "1"}}}]}
  - {name: bad-deny, action: Deny, from: [{namespaces: {matchExpressions: [{key: x, operator: Near}]}}]}
  - {name: bad-accept, action: Accept, from: [{namespaces: {matchExpressions: [{key: x, operator: Near}]}}]}
  - {name: ok2, action: Accept, from: [{namespaces: {matchLabels: {x: "2"}}}]}
  egress:
  - {name: bad-pass, action: Pass, to: [{pods: {namespaceSelector: {}, podSelector: {matchExpressions: [{key: "bad key", operator: Exists}]}}}]}
`)
	if _, err := k8s.ClusterNetworkPolicyToV3(bad); err == nil {
		t.Fatal("the converter takes the bad rules")
	}
	got, problems, err = DesiredClusterNetworkPolicy(bad)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 3 || !strings.Contains(problems[0], `ingress rule 1 ("bad-deny") replaced by a rule denying everything`) ||
		!strings.Contains(problems[1], `ingress rule 2 ("bad-accept") dropped`) || !strings.Contains(problems[2], `egress rule 0 ("bad-pass") replaced`) {
		t.Errorf("problems:\n%s", strings.Join(problems, "\n"))
	}
	var shape []string
	for _, r := range got.Spec.Ingress {
		shape = append(shape, fmt.Sprintf("%s %s", r.Action, r.Source.NamespaceSelector))
	}
	for _, r := range got.Spec.Egress {
		shape = append(shape, fmt.Sprintf("egress %s %s", r.Action, r.Destination.Selector))
	}
	wantShape := []string{"Deny x == '1'", "Deny ", "Allow x == '2'", "egress Deny "}
	if d := cmp.Diff(wantShape, shape); d != "" {
		t.Errorf("rules (-want +got):\n%s\n%+v", d, got.Spec)
	}
	if got.Name != "kcnp.kube-baseline.mixed" || *got.Spec.Order != 3 || len(got.Spec.Types) != 2 {
		t.Errorf("name %s, order %v, types %v", got.Name, *got.Spec.Order, got.Spec.Types)
	}
	if err := v3.Validate(got); err != nil {
		t.Error(err)
	}

	// What cannot be failed closed: the subject, or a name too long with
	// its prefix.
	badSubject := cnpFrom(t, good)
	badSubject.Spec.Subject.Pods.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}
	long := cnpFrom(t, good)
	long.Name = strings.Repeat("a", 250)
	for _, c := range []*cnpv1alpha2.ClusterNetworkPolicy{badSubject, long} {
		if g, _, err := DesiredClusterNetworkPolicy(c); err == nil {
			t.Errorf("%.20s: %+v, want an error", c.Name, g)
		}
	}

	for name, want := range map[string]string{
		"kcnp.kube-admin.web": "web", "kcnp.kube-baseline.a.b": "a.b", "kcnp.kube-admin.": "", "kcnp.other.x": "",
		"knp.default.web": "", "web": "",
	} {
		if got := clusterNetworkPolicyOf(name); got != want {
			t.Errorf("clusterNetworkPolicyOf(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestClusterNetworkPolicyWithoutCRD: on by default, the controller in a
// cluster without the CRD is ready, says it waits, and touches nothing,
// not even a kcnp. policy it would otherwise remove as stale.
func TestClusterNetworkPolicyWithoutCRD(t *testing.T) {
	c := kubetest.Shared(t)
	if _, err := c.KubectlErr("get", "crd", "clusternetworkpolicies.policy.networking.k8s.io"); err == nil {
		t.Fatal("the shared cluster has the ClusterNetworkPolicy CRD: this test wants one without")
	}
	h := newHarness(t, c)
	stale := h.putGNP(t, "kcnp.kube-admin.left-alone", "kube-admin")
	in := h.start(t, nil)
	in.waitSynced(t, time.Minute)
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(in.log.String(), "the ClusterNetworkPolicy CRD (policy.networking.k8s.io/v1alpha2 clusternetworkpolicies) is not installed: waiting for it") {
			return errors.New("no log line saying the controller waits for the CRD")
		}
		return nil
	})
	time.Sleep(2 * crdCheckInterval)
	if got := h.stored(t, kindGNP, "", "kcnp.kube-admin.left-alone"); got != stale {
		t.Errorf("a kcnp. policy changed while the CRD is absent: %q", got)
	}
	if ok, why := in.Ready(); !ok {
		t.Errorf("not ready: %s", why)
	}
}

// TestClusterNetworkPolicy runs the controller on a cluster of its own:
// started without the CRD, it waits; once the CRD of deploy/tortie.yaml is
// applied it removes stale kcnp. policies and converts Admin and Baseline
// ClusterNetworkPolicies applied with kubectl, follows changes of
// priority and tier, removes the policy of one it cannot convert, and
// removes each with its source; restarted, it removes stale ones at start;
// and when the CRD is removed, its objects' policies go with them.
func TestClusterNetworkPolicy(t *testing.T) {
	c := kubetest.Start(t)
	h := newHarness(t, c)
	ctx := context.Background()
	adminCNP, err := npaversioned.NewForConfig(c.Server.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	mine := h.putGNP(t, "mine", "default")
	stale := []string{"kcnp.kube-admin.gone", "kcnp.kube-baseline.gone"}
	for _, n := range stale {
		h.putGNP(t, n, strings.Split(n, ".")[1])
	}
	only := func(cfg *Config) { cfg.Controllers = []string{ControllerClusterNetworkPolicy} }
	in := h.start(t, only)
	in.waitSynced(t, time.Minute)
	time.Sleep(crdCheckInterval)
	for _, n := range stale {
		if h.stored(t, kindGNP, "", n) == "" {
			t.Fatalf("%s removed while the CRD is absent", n)
		}
	}

	// The CRD appears: the controller starts, and the stale policies go.
	c.Apply(t, crdOf(t))
	c.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/clusternetworkpolicies.policy.networking.k8s.io")
	eventually(t, 30*time.Second, func() error {
		for _, n := range stale {
			if h.stored(t, kindGNP, "", n) != "" {
				return fmt.Errorf("stale %s still stored", n)
			}
		}
		return nil
	})
	in.waitSynced(t, time.Minute)

	c.Apply(t, `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin-a}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - {name: deny-b, action: Deny, from: [{namespaces: {matchLabels: {team: b}}}], protocols: [{tcp: {destinationPort: {number: 5432}}}]}
  egress:
  - {action: Accept, to: [{networks: [10.1.0.0/16]}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline-b}
spec:
  tier: Baseline
  priority: 50
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
  - {action: Deny, from: [{namespaces: {}}]}
`)
	// converged: the stored policy of name says what the ClusterNetworkPolicy
	// cnp, as the API server has it now, converts to.
	converged := func(cnp, name string) error {
		obj, err := adminCNP.PolicyV1alpha2().ClusterNetworkPolicies().Get(ctx, cnp, metav1.GetOptions{})
		if err != nil {
			return err
		}
		want, err := k8s.ClusterNetworkPolicyToV3(obj)
		if err != nil {
			return err
		}
		got, err := h.cl.Get(ctx, kindGNP, "", name)
		if err != nil {
			return err
		}
		if d := Diff(want, got); len(d) > 0 {
			return fmt.Errorf("%s: %v differ", name, d)
		}
		return nil
	}
	gnp := func(name string) *v3.GlobalNetworkPolicy {
		t.Helper()
		r, err := h.cl.Get(ctx, kindGNP, "", name)
		if err != nil {
			t.Fatal(err)
		}
		return r.(*v3.GlobalNetworkPolicy)
	}
	eventually(t, 10*time.Second, func() error {
		return errors.Join(converged("admin-a", "kcnp.kube-admin.admin-a"), converged("baseline-b", "kcnp.kube-baseline.baseline-b"))
	})
	a, b := gnp("kcnp.kube-admin.admin-a"), gnp("kcnp.kube-baseline.baseline-b")
	for _, ck := range []struct{ got, want string }{
		{a.Spec.Tier, "kube-admin"}, {fmt.Sprint(*a.Spec.Order), "10"},
		{a.Spec.Selector, "projectcalico.org/orchestrator == 'k8s' && app == 'db'"},
		{a.Spec.NamespaceSelector, "team == 'a'"},
		{a.Spec.Ingress[0].Source.NamespaceSelector, "team == 'b'"},
		{string(a.Spec.Ingress[0].Action), "Deny"}, {a.Spec.Ingress[0].Metadata.Annotations["name"], "deny-b"},
		{fmt.Sprint(a.Spec.Egress[0].Destination.Nets), "[10.1.0.0/16]"},
		{b.Spec.Tier, "kube-baseline"}, {fmt.Sprint(*b.Spec.Order), "50"},
		{b.Spec.Selector, "projectcalico.org/orchestrator == 'k8s'"}, {b.Spec.NamespaceSelector, "env == 'prod'"},
		{fmt.Sprint(b.Spec.Types), "[Ingress]"},
	} {
		if ck.got != ck.want {
			t.Errorf("got %q, want %q", ck.got, ck.want)
		}
	}

	// Priority → order; Admin → Baseline moves it.
	c.Kubectl(t, "patch", "clusternetworkpolicy", "admin-a", "--type=merge", "-p", `{"spec":{"priority":20}}`)
	eventually(t, 10*time.Second, func() error {
		if o := *gnp("kcnp.kube-admin.admin-a").Spec.Order; o != 20 {
			return fmt.Errorf("order %v, want 20", o)
		}
		return nil
	})
	c.Kubectl(t, "patch", "clusternetworkpolicy", "baseline-b", "--type=merge", "-p", `{"spec":{"tier":"Admin","priority":5}}`)
	eventually(t, 10*time.Second, func() error {
		if h.stored(t, kindGNP, "", "kcnp.kube-baseline.baseline-b") != "" {
			return errors.New("kcnp.kube-baseline.baseline-b still stored")
		}
		return converged("baseline-b", "kcnp.kube-admin.baseline-b")
	})

	// A subject selector the API server accepts and the conversion
	// refuses: logged, and the policy it had is removed.
	c.Kubectl(t, "patch", "clusternetworkpolicy", "admin-a", "--type=merge", "-p",
		`{"spec":{"subject":{"pods":{"podSelector":{"matchLabels":null,"matchExpressions":[{"key":"app","operator":"Near"}]}}}}}`)
	eventually(t, 10*time.Second, func() error {
		if h.stored(t, kindGNP, "", "kcnp.kube-admin.admin-a") != "" {
			return errors.New("the policy of an unconvertible ClusterNetworkPolicy is still stored")
		}
		if !strings.Contains(in.log.String(), "cannot convert ClusterNetworkPolicy; removing its GlobalNetworkPolicy") {
			return errors.New("no log line for the refusal")
		}
		return nil
	})

	// Deleted sources take their policies with them.
	c.Kubectl(t, "delete", "clusternetworkpolicy", "admin-a", "baseline-b")
	eventually(t, 10*time.Second, func() error {
		for _, n := range []string{"kcnp.kube-admin.admin-a", "kcnp.kube-admin.baseline-b"} {
			if h.stored(t, kindGNP, "", n) != "" {
				return fmt.Errorf("%s still stored", n)
			}
		}
		return nil
	})
	for _, l := range []string{"created GlobalNetworkPolicy kcnp.kube-admin.admin-a: from ClusterNetworkPolicy admin-a",
		"updated GlobalNetworkPolicy kcnp.kube-admin.admin-a: from ClusterNetworkPolicy admin-a (spec.order changed)",
		"deleted GlobalNetworkPolicy kcnp.kube-baseline.baseline-b: ClusterNetworkPolicy baseline-b is now in tier Admin",
		"deleted GlobalNetworkPolicy kcnp.kube-admin.baseline-b: ClusterNetworkPolicy baseline-b no longer exists",
		"deleted GlobalNetworkPolicy kcnp.kube-admin.gone: ClusterNetworkPolicy gone no longer exists"} {
		if !strings.Contains(in.log.String(), l) {
			t.Errorf("no log line %q", l)
		}
	}

	// Restarted with a stale policy and a new source: the first full
	// reconcile removes the one and writes the other.
	in.stop(t)
	h.putGNP(t, "kcnp.kube-baseline.gone-again", "kube-baseline")
	c.Apply(t, `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: later}
spec: {tier: Baseline, priority: 1, subject: {namespaces: {}}, egress: [{action: Deny, to: [{pods: {namespaceSelector: {}, podSelector: {}}}]}]}
`)
	in = h.start(t, only)
	in.waitSynced(t, time.Minute)
	if h.stored(t, kindGNP, "", "kcnp.kube-baseline.gone-again") != "" {
		t.Error("stale kcnp.kube-baseline.gone-again still stored after the first full reconcile")
	}
	if err := converged("later", "kcnp.kube-baseline.later"); err != nil {
		t.Error(err)
	}

	// Removing the CRD deletes its objects, and their policies go.
	c.Kubectl(t, "delete", "crd", "clusternetworkpolicies.policy.networking.k8s.io", "--wait=true", "--timeout=60s")
	eventually(t, 10*time.Second, func() error {
		if h.stored(t, kindGNP, "", "kcnp.kube-baseline.later") != "" {
			return errors.New("kcnp.kube-baseline.later still stored after its CRD was removed")
		}
		return nil
	})
	if got := h.stored(t, kindGNP, "", "mine"); got != mine {
		t.Errorf("GlobalNetworkPolicy mine, not the controller's, changed: %s", got)
	}
}

// putGNP stores a GlobalNetworkPolicy as someone else (or an earlier run)
// would, and returns its stored value.
func (h *harness) putGNP(t *testing.T, name, tier string) string {
	t.Helper()
	g := kindGNP.NewObject().(*v3.GlobalNetworkPolicy)
	g.Name = name
	g.Spec.Tier = tier
	g.Spec.Selector = "all()"
	if _, err := h.cl.Create(context.Background(), g); err != nil && !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatal(err)
	}
	return h.stored(t, kindGNP, "", name)
}

// crdOf is the ClusterNetworkPolicy CRD as deploy/tortie.yaml installs it.
func crdOf(t *testing.T) string {
	t.Helper()
	for _, doc := range strings.Split(string(deploy.Manifest), "\n---") {
		if strings.Contains(doc, "\nkind: CustomResourceDefinition\n") && strings.Contains(doc, "name: clusternetworkpolicies.policy.networking.k8s.io") {
			return doc
		}
	}
	t.Fatal("deploy/tortie.yaml has no ClusterNetworkPolicy CRD")
	return ""
}
