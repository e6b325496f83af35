package kubecontrollers

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/ipam"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

// TestNodeDeletion: deleting Kubernetes Nodes removes their Calico Nodes
// (one tied by orchRefs under another name, one by name alone) with their
// endpoints, BGP peer, per-node configurations, addresses (pods' and the
// tunnel's) and blocks, so that ipam check is clean; a node that stays and
// a Calico Node outside Kubernetes are untouched; an address whose pod
// never existed is released after the leak grace period.
func TestNodeDeletion(t *testing.T) {
	c := kubetest.Shared(t)
	h := newHarness(t, c)
	ctx := context.Background()
	ns := c.Namespace(t)
	c.Kubectl(t, "create", "serviceaccount", "robot", "-n", ns)

	k1, k2, keep := kubetest.UniqueName("gone-a"), kubetest.UniqueName("gone-b"), kubetest.UniqueName("keep")
	for _, n := range []string{k1, k2, keep} {
		if _, err := h.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.admin.CoreV1().Nodes().Delete(context.Background(), n, metav1.DeleteOptions{}) })
	}
	// Calico Nodes: c1 refers to k1 by orchRefs; k2's has its name and no
	// reference; keep's refers to keep; bare-host is no Kubernetes Node's.
	c1 := "calico-" + k1
	calicoNodes := map[string]string{
		c1:          fmt.Sprintf(`{"orchRefs":[{"orchestrator":"k8s","nodeName":%q}]}`, k1),
		k2:          `{}`,
		keep:        fmt.Sprintf(`{"orchRefs":[{"orchestrator":"k8s","nodeName":%q}]}`, keep),
		"bare-host": `{}`,
	}
	for name, spec := range calicoNodes {
		n := mk(t, kindNode, fmt.Sprintf(`{"kind":"Node","apiVersion":"projectcalico.org/v3","metadata":{"name":%q},"spec":%s}`, name, spec))
		if _, err := h.cl.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.cl.Create(ctx, mk(t, mustKind(v3.KindIPPool), `{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"pool"},"spec":{"cidr":"10.77.0.0/16","blockSize":26,"nodeSelector":"all()"}}`)); err != nil {
		t.Fatal(err)
	}
	am := ipam.New(h.be, ipam.Options{})
	assign := func(handle, node string, attrs map[string]string, use v3.IPPoolAllowedUse) string {
		as, err := am.AutoAssign(ctx, ipam.AutoAssignArgs{HandleID: handle, Node: node, Num4: 1, Attrs: attrs, IntendedUse: use})
		if err != nil {
			t.Fatal(err)
		}
		return as.IPv4[0].Addr().String()
	}
	// Pods with endpoints on each node.
	for i, node := range []string{c1, k2, keep} {
		k8sNode := []string{k1, k2, keep}[i]
		for j := range 2 {
			pod := fmt.Sprintf("p%d-%d", i, j)
			c.Apply(t, podManifest(ns, pod, k8sNode, "app: x"))
			ip := assign("k8s-pod-network.cid-"+pod, node, map[string]string{"node": node, "namespace": ns, "pod": pod}, "")
			h.writeEndpoint(t, ns, pod, node, netipMust(ip))
		}
	}
	// c1's VXLAN tunnel address, on its Node.
	tun := assign("vxlan-tunnel-addr-"+c1, c1, map[string]string{"node": c1, "type": "vxlanTunnelAddress"}, v3.AllowedUseTunnel)
	n1, err := h.cl.Get(ctx, kindNode, "", c1)
	if err != nil {
		t.Fatal(err)
	}
	n1.(*v3.Node).Spec.IPv4VXLANTunnelAddr = tun
	if _, err := h.cl.Update(ctx, n1); err != nil {
		t.Fatal(err)
	}
	// c1's BGP peer and per-node configurations.
	for _, r := range []v3.Resource{
		mk(t, kindBGPPeer, fmt.Sprintf(`{"kind":"BGPPeer","apiVersion":"projectcalico.org/v3","metadata":{"name":"peer-of-c1"},"spec":{"node":%q,"peerIP":"192.0.2.1","asNumber":64513}}`, c1)),
		mk(t, kindBGPPeer, `{"kind":"BGPPeer","apiVersion":"projectcalico.org/v3","metadata":{"name":"global-peer"},"spec":{"peerIP":"192.0.2.2","asNumber":64513}}`),
		mk(t, kindFelixConf, fmt.Sprintf(`{"kind":"FelixConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":"node.%s"},"spec":{}}`, c1)),
		mk(t, kindBGPConf, fmt.Sprintf(`{"kind":"BGPConfiguration","apiVersion":"projectcalico.org/v3","metadata":{"name":"node.%s"},"spec":{}}`, c1)),
	} {
		if _, err := h.cl.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// An address of a pod that never existed, on a node that stays.
	ghost := assign("k8s-pod-network.cid-ghost", keep, map[string]string{"node": keep, "namespace": ns, "pod": "ghost"}, "")

	rep, err := am.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Problems() != 1 || len(rep.Leaks) != 1 || rep.Leaks[0].Addr.String() != ghost {
		t.Fatalf("before: want only the ghost's leak, got %+v", rep)
	}

	in := h.start(t, nil)
	in.waitSynced(t, time.Minute)
	// The ghost's address goes after the grace period (3 s here).
	eventually(t, 20*time.Second, func() error {
		rep, err := am.Check(ctx)
		if err != nil {
			return err
		}
		if rep.Problems() != 0 {
			return fmt.Errorf("ipam check: %d problems: %+v", rep.Problems(), rep.Leaks)
		}
		return nil
	})
	for name := range calicoNodes {
		if _, err := h.cl.Get(ctx, kindNode, "", name); err != nil {
			t.Fatalf("Calico Node %s removed while its Kubernetes Node exists: %v", name, err)
		}
	}

	c.Kubectl(t, "delete", "node", k1, k2)
	eventually(t, 30*time.Second, func() error {
		for _, name := range []string{c1, k2} {
			if _, err := h.cl.Get(ctx, kindNode, "", name); err == nil {
				return fmt.Errorf("Calico Node %s still there", name)
			}
		}
		rep, err := am.Check(ctx)
		if err != nil {
			return err
		}
		if rep.Problems() != 0 {
			return fmt.Errorf("ipam check: %d problems: %+v", rep.Problems(), rep)
		}
		if rep.Allocations != 2 || rep.InUse != 2 {
			return fmt.Errorf("ipam check: %d allocations, %d in use; want keep's two pods'", rep.Allocations, rep.InUse)
		}
		return nil
	})
	weps, _, err := h.cl.List(ctx, kindWEP, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(weps) != 2 {
		t.Errorf("%d endpoints left, want keep's 2", len(weps))
	}
	for _, w := range weps {
		if w.(*v3.WorkloadEndpoint).Spec.Node != keep {
			t.Errorf("endpoint %s of node %s left", w.GetName(), w.(*v3.WorkloadEndpoint).Spec.Node)
		}
	}
	for _, o := range []struct {
		kind *v3.KindInfo
		name string
		want bool
	}{
		{kindBGPPeer, "peer-of-c1", false},
		{kindBGPPeer, "global-peer", true},
		{kindFelixConf, "node." + c1, false},
		{kindBGPConf, "node." + c1, false},
		{kindNode, keep, true},
		{kindNode, "bare-host", true},
	} {
		if _, err := h.cl.Get(ctx, o.kind, "", o.name); (err == nil) != o.want {
			t.Errorf("%s %s: exists %v, want %v", o.kind.Kind, o.name, err == nil, o.want)
		}
	}
	// keep's block is still its own.
	if aff, _, err := h.be.List(ctx, "/calico/ipam/v2/host/"+keep+"/"); err != nil || len(aff) == 0 {
		t.Errorf("node %s lost its affinities (%v)", keep, err)
	}
	if aff, _, _ := h.be.List(ctx, "/calico/ipam/v2/host/"+c1+"/"); len(aff) != 0 {
		t.Errorf("removed node %s keeps %d affinities", c1, len(aff))
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
