package kubecontrollers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

// TestCalicoReference repeats, with kubectl, what the reference notes did
// to Calico's own kube-controllers, and compares what lands in etcd with
// what Calico left there, byte for byte but for uid and
// creationTimestamp. Then each source object is deleted and its Calico
// object must go.
func TestCalicoReference(t *testing.T) {
	c := kubetest.Shared(t)
	h := newHarness(t, c)
	in := h.start(t, nil)
	in.waitSynced(t, time.Minute)

	// Every namespace that exists gets a profile within a second of start.
	for _, ns := range []string{"default", "kube-system", "kube-public"} {
		eventually(t, 5*time.Second, func() error {
			if h.stored(t, kindProfile, "", "kns."+ns) == "" {
				return fmt.Errorf("no profile kns.%s", ns)
			}
			return nil
		})
	}

	c.Kubectl(t, "create", "namespace", "bars-x")
	t.Cleanup(func() { h.deleteNamespace(t, "bars-x") })
	c.Kubectl(t, "label", "namespace", "bars-x", "team=blue")
	c.Kubectl(t, "label", "namespace", "bars-x", "team=green", "--overwrite")
	c.Kubectl(t, "create", "serviceaccount", "robot", "-n", "bars-x")
	c.Apply(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np1, namespace: bars-x}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432, protocol: TCP}]}]
`)
	ref := reference(t)
	eventually(t, 10*time.Second, func() error {
		for key, want := range ref {
			kv, err := h.be.Get(context.Background(), key)
			if err != nil {
				return fmt.Errorf("%s: %v", key, err)
			}
			if got := withoutIdentity(string(kv.Value)); got != withoutIdentity(want) {
				return fmt.Errorf("%s:\n got %s\nwant %s", key, got, withoutIdentity(want))
			}
		}
		return nil
	})

	// Deleted sources take their Calico objects with them.
	c.Kubectl(t, "delete", "networkpolicy", "np1", "-n", "bars-x")
	c.Kubectl(t, "delete", "serviceaccount", "robot", "-n", "bars-x")
	h.deleteNamespace(t, "bars-x")
	eventually(t, 10*time.Second, func() error {
		for _, k := range []struct {
			kind     *v3.KindInfo
			ns, name string
		}{{kindPolicy, "bars-x", "knp.default.np1"}, {kindProfile, "", "ksa.bars-x.robot"}, {kindProfile, "", "kns.bars-x"}} {
			if v := h.stored(t, k.kind, k.ns, k.name); v != "" {
				return fmt.Errorf("%s %s/%s still stored", k.kind.Kind, k.ns, k.name)
			}
		}
		return nil
	})
	for _, l := range []string{"created Profile kns.bars-x", "updated Profile kns.bars-x", "deleted NetworkPolicy bars-x/knp.default.np1: NetworkPolicy bars-x/np1 no longer exists"} {
		if !strings.Contains(in.log.String(), l) {
			t.Errorf("no log line %q", l)
		}
	}
}

// TestStaleRemovedAtStart: objects of the controllers' own with no source
// left (written by an earlier run) are removed at start; objects of the
// same kinds that are not theirs stay as they are.
func TestStaleRemovedAtStart(t *testing.T) {
	c := kubetest.Shared(t)
	h := newHarness(t, c)
	ctx := context.Background()
	ns := c.Namespace(t)
	stale := []struct {
		kind     *v3.KindInfo
		ns, name string
	}{
		{kindProfile, "", "kns.no-such-namespace"},
		{kindProfile, "", "ksa." + ns + ".no-such-account"},
		{kindPolicy, ns, "knp.default.no-such-policy"},
	}
	foreign := []struct {
		kind     *v3.KindInfo
		ns, name string
	}{
		{kindProfile, "", "my-profile"},
		{kindPolicy, ns, "default.mine"},
	}
	for _, o := range append(stale, foreign...) {
		r := o.kind.NewObject()
		r.SetName(o.name)
		r.SetNamespace(o.ns)
		if np, ok := r.(*v3.NetworkPolicy); ok {
			np.Spec.Selector = "all()"
		}
		if _, err := h.cl.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string]string{}
	for _, o := range foreign {
		before[o.name] = h.stored(t, o.kind, o.ns, o.name)
	}
	in := h.start(t, nil)
	in.waitSynced(t, time.Minute)
	for _, o := range stale {
		if v := h.stored(t, o.kind, o.ns, o.name); v != "" {
			t.Errorf("stale %s %s still stored after the first reconcile", o.kind.Kind, o.name)
		}
	}
	for _, o := range foreign {
		if v := h.stored(t, o.kind, o.ns, o.name); v != before[o.name] {
			t.Errorf("%s %s changed: %s", o.kind.Kind, o.name, v)
		}
	}
	// And what is ours but was changed by hand is put back.
	prof, err := h.cl.Get(ctx, kindProfile, "", "kns."+ns)
	if err != nil {
		t.Fatal(err)
	}
	want := h.stored(t, kindProfile, "", "kns."+ns)
	p := prof.(*v3.Profile)
	p.Spec.LabelsToApply["pcns.evil"] = "1"
	if _, err := h.cl.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if got := h.stored(t, kindProfile, "", "kns."+ns); got != want {
			return fmt.Errorf("kns.%s not repaired: %s", ns, got)
		}
		return nil
	})
}
