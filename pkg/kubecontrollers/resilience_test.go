package kubecontrollers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

// converged compares the datastore with what the Kubernetes objects of
// the namespaces nss (and the namespaces themselves) say, through the
// same pure conversions, and says what differs.
func (h *harness) converged(ctx context.Context, nss []string) error {
	var problems []string
	check := func(want v3.Resource, k *v3.KindInfo) {
		cur, err := h.cl.Get(ctx, k, want.GetNamespace(), want.GetName())
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s %s/%s: %v", k.Kind, want.GetNamespace(), want.GetName(), err))
			return
		}
		if d := Diff(want, cur); d != nil {
			problems = append(problems, fmt.Sprintf("%s %s/%s differs: %v", k.Kind, want.GetNamespace(), want.GetName(), d))
		}
	}
	for _, ns := range nss {
		nso, err := h.admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p, _ := k8s.NamespaceToProfile(nso)
		check(p, kindProfile)
		sas, err := h.admin.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for i := range sas.Items {
			p, _ := k8s.ServiceAccountToProfile(&sas.Items[i])
			check(p, kindProfile)
		}
		nps, err := h.admin.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		want := map[string]bool{}
		for i := range nps.Items {
			p, _ := k8s.NetworkPolicyToV3(&nps.Items[i])
			want[p.Name] = true
			check(p, kindPolicy)
		}
		stored, _, err := h.cl.List(ctx, kindPolicy, ns)
		if err != nil {
			return err
		}
		for _, s := range stored {
			if !want[s.GetName()] {
				problems = append(problems, fmt.Sprintf("stale policy %s/%s", ns, s.GetName()))
			}
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func testPolicy(ns, name string, port int32) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: ptrIntOrString(port)}}}},
		},
	}
}

// churn is one round of changes to the namespaces: a label, a new
// policy, the policy of two rounds ago deleted and another's changed, a
// service account.
func (h *harness) churn(t *testing.T, nss []string, round int) {
	t.Helper()
	ctx := context.Background()
	for _, ns := range nss {
		nso, err := h.admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nso.Labels["round"] = fmt.Sprint(round)
		if _, err := h.admin.CoreV1().Namespaces().Update(ctx, nso, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.admin.NetworkingV1().NetworkPolicies(ns).Create(ctx, testPolicy(ns, fmt.Sprintf("np-%d", round), 1000+int32(round)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if round >= 2 {
			if err := h.admin.NetworkingV1().NetworkPolicies(ns).Delete(ctx, fmt.Sprintf("np-%d", round-2), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if round >= 1 {
			np, err := h.admin.NetworkingV1().NetworkPolicies(ns).Get(ctx, fmt.Sprintf("np-%d", round-1), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			np.Spec.Ingress[0].Ports[0].Port = ptrIntOrString(2000 + int32(round))
			if _, err := h.admin.NetworkingV1().NetworkPolicies(ns).Update(ctx, np, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sa-%d", round), Namespace: ns, Labels: map[string]string{"round": fmt.Sprint(round)}}}
		if _, err := h.admin.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func (h *harness) churnNamespaces(t *testing.T, n int) []string {
	var nss []string
	for range n {
		ns := kubetest.UniqueName("churn")
		h.createNamespace(t, ns, map[string]string{"round": "init"})
		nss = append(nss, ns)
	}
	return nss
}

// TestRestartMidStream: the controllers are killed in the middle of a
// stream of changes, the stream goes on while they are down, and a new
// instance converges on every change: none is lost.
func TestRestartMidStream(t *testing.T) {
	c := kubetest.Shared(t)
	h := newHarness(t, c)
	nss := h.churnNamespaces(t, 10)
	a := h.start(t, nil)
	a.waitSynced(t, time.Minute)
	for round := range 6 {
		if round == 2 {
			a.stop(t) // mid-stream, writes in flight or not
		}
		if round == 4 {
			h.start(t, nil) // another instance, from nothing
		}
		h.churn(t, nss, round)
	}
	eventually(t, time.Minute, func() error { return h.converged(context.Background(), nss) })
}

// TestAPIServerOutage: with the API server stopped for 30 s the datastore
// is left exactly as it was (the leader cannot renew its lease and stops
// writing; nothing is deleted for objects the caches cannot see); when it
// returns, the controllers take the lease again, relist, and converge on
// changes made after.
func TestAPIServerOutage(t *testing.T) {
	c := kubetest.Start(t)
	h := newHarness(t, c)
	nss := h.churnNamespaces(t, 3)
	in := h.start(t, func(cfg *Config) {
		cfg.LeaderElection = true
		cfg.LeaseName = kubetest.UniqueName("lease")
		cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = 4*time.Second, 3*time.Second, time.Second
		cfg.ReconcileInterval = 5 * time.Second
	})
	in.waitSynced(t, time.Minute)
	h.churn(t, nss, 0)
	ctx := context.Background()
	eventually(t, 30*time.Second, func() error { return h.converged(ctx, nss) })
	snapshot := func() string {
		kvs, _, err := h.be.List(ctx, "/calico/")
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, kv := range kvs {
			fmt.Fprintf(&b, "%s %d %s\n", kv.Key, kv.Revision, kv.Value)
		}
		return b.String()
	}
	before := snapshot()
	if err := c.Server.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Second) {
		if now := snapshot(); now != before {
			t.Fatalf("the datastore changed while the API server was down")
		}
	}
	if in.Leading() {
		t.Error("still leading after 30 s without the API server")
	}
	if err := c.Server.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, func() error {
		if !in.Leading() {
			return errors.New("not leading again")
		}
		return nil
	})
	h.churn(t, nss, 1)
	eventually(t, time.Minute, func() error { return h.converged(ctx, nss) })
}

// TestTwoReplicas: two instances, one lease: only the leader writes, the
// standby is ready and writes nothing; killed (no lease release), the
// leader is replaced by the standby within the lease duration, which
// then does the work.
func TestTwoReplicas(t *testing.T) {
	c := kubetest.Shared(t)
	h := newHarness(t, c)
	lease := kubetest.UniqueName("lease")
	mod := func(id string) func(*Config) {
		return func(cfg *Config) {
			cfg.LeaderElection = true
			cfg.Identity = id
			cfg.LeaseName = lease
			cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = 4*time.Second, 3*time.Second, 500*time.Millisecond
			cfg.ReleaseOnCancel = false // killed, not shut down
		}
	}
	a := h.start(t, mod("replica-a"))
	b := h.start(t, mod("replica-b"))
	var leader, standby *instance
	eventually(t, 30*time.Second, func() error {
		switch {
		case a.Leading() && !b.Leading():
			leader, standby = a, b
		case b.Leading() && !a.Leading():
			leader, standby = b, a
		default:
			return fmt.Errorf("leading: a %v, b %v", a.Leading(), b.Leading())
		}
		return nil
	})
	leader.waitSynced(t, time.Minute)
	for _, in := range []*instance{leader, standby} {
		resp, err := http.Get("http://" + in.HealthAddr() + "/readiness")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("readiness %d: %s", resp.StatusCode, body)
		}
		t.Logf("readiness: %s", strings.TrimSpace(string(body)))
	}
	ns1 := kubetest.UniqueName("two-replicas")
	h.createNamespace(t, ns1, nil)
	eventually(t, 10*time.Second, func() error { return h.converged(context.Background(), []string{ns1}) })
	if n := writes(t, standby); n != 0 {
		t.Fatalf("the standby wrote %v times", n)
	}
	if a.Leading() && b.Leading() {
		t.Fatal("two leaders")
	}

	killed := time.Now()
	leader.stop(t)
	wrote := writes(t, leader)
	eventually(t, 20*time.Second, func() error {
		if !standby.Leading() {
			return errors.New("the standby has not taken over")
		}
		return nil
	})
	t.Logf("took over %v after the leader was killed", time.Since(killed).Round(100*time.Millisecond))
	ns2 := kubetest.UniqueName("two-replicas")
	h.createNamespace(t, ns2, nil)
	eventually(t, 30*time.Second, func() error { return h.converged(context.Background(), []string{ns1, ns2}) })
	if n := writes(t, standby); n == 0 {
		t.Error("the new leader wrote nothing")
	}
	if n := writes(t, leader); n != wrote {
		t.Errorf("the killed leader went on writing: %v, then %v", wrote, n)
	}
}

// writes is the instance's count of datastore writes (its metric).
func writes(t *testing.T, in *instance) float64 {
	t.Helper()
	mfs, err := in.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == metricPrefix+"writes_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

func ptrIntOrString(p int32) *intstr.IntOrString {
	v := intstr.FromInt32(p)
	return &v
}
