package kubecontrollers

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/ipam"
)

func TestOwnedNames(t *testing.T) {
	for _, c := range []struct{ name, ns, sa, np string }{
		{name: "kns.bars-x", ns: "bars-x"},
		{name: "ksa.bars-x.robot", sa: "bars-x/robot"},
		{name: "ksa.bars-x.robot.v2", sa: "bars-x/robot.v2"}, // an account name may hold dots
		{name: "ksa.bars-x"},
		{name: "knp.default.np1", np: "np1"},
		{name: "default.np1"},
		{name: "projectcalico-default-allow"},
	} {
		if got := namespaceOfProfile(c.name); got != c.ns {
			t.Errorf("namespaceOfProfile(%q) = %q, want %q", c.name, got, c.ns)
		}
		if got := serviceAccountOfProfile(c.name); got != c.sa {
			t.Errorf("serviceAccountOfProfile(%q) = %q, want %q", c.name, got, c.sa)
		}
		if got := policyNameOf(c.name); got != c.np {
			t.Errorf("policyNameOf(%q) = %q, want %q", c.name, got, c.np)
		}
	}
}

func TestNodeBelongsTo(t *testing.T) {
	withRef := &v3.Node{ObjectMeta: metav1.ObjectMeta{Name: "calico-a"}, Spec: v3.NodeSpec{OrchRefs: []v3.OrchRef{{Orchestrator: "k8s", NodeName: "kube-a"}}}}
	bare := &v3.Node{ObjectMeta: metav1.ObjectMeta{Name: "h1"}}
	for _, c := range []struct {
		n       *v3.Node
		k8s     string
		deleted bool
		want    bool
	}{
		{withRef, "kube-a", false, true},
		{withRef, "calico-a", true, false}, // the reference decides, not the name
		{bare, "h1", false, false},         // maybe a host outside Kubernetes
		{bare, "h1", true, true},
		{bare, "h2", true, false},
	} {
		if got := NodeBelongsTo(c.n, c.k8s, c.deleted); got != c.want {
			t.Errorf("NodeBelongsTo(%s, %s, %v) = %v", c.n.Name, c.k8s, c.deleted, got)
		}
	}
}

func TestEndpointForPod(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "robot", Containers: []corev1.Container{{
			Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}},
		}}},
	}
	wep := &v3.WorkloadEndpoint{
		TypeMeta:   metav1.TypeMeta{Kind: v3.KindWorkloadEndpoint, APIVersion: v3.APIVersion},
		ObjectMeta: metav1.ObjectMeta{Name: k8s.PodEndpointName("n1", "web-1", "eth0"), Namespace: "shop", ResourceVersion: "7", Annotations: map[string]string{"x": "y"}, Labels: map[string]string{v3.LabelNamespace: "shop", v3.LabelOrchestrator: "k8s"}},
		Spec:       v3.WorkloadEndpointSpec{Orchestrator: "k8s", Node: "n1", Pod: "web-1", Endpoint: "eth0", IPNetworks: []string{"10.0.0.5/32"}, Profiles: []string{"kns.shop"}, InterfaceName: "cali1", ContainerID: "abc"},
	}
	want, changed := EndpointForPod(pod, wep)
	if want == nil {
		t.Fatal("no change found")
	}
	if !slices.Equal(changed, []string{"labels", "spec.profiles", "spec.serviceAccountName", "spec.ports"}) {
		t.Errorf("changed = %v", changed)
	}
	if want.Labels["app"] != "web" || want.Labels[k8s.LabelServiceAccount] != "robot" || want.Labels[v3.LabelNamespace] != "shop" {
		t.Errorf("labels = %v", want.Labels)
	}
	if !slices.Equal(want.Spec.Profiles, []string{"kns.shop", "ksa.shop.robot"}) {
		t.Errorf("profiles = %v", want.Spec.Profiles)
	}
	// The CNI plugin's fields are kept, even when the pod's status says
	// other addresses.
	if want.Spec.IPNetworks[0] != "10.0.0.5/32" || want.Spec.InterfaceName != "cali1" || want.Spec.ContainerID != "abc" || want.Annotations["x"] != "y" || want.ResourceVersion != "7" {
		t.Errorf("CNI fields changed: %+v", want)
	}
	if wep.Labels["app"] != "" {
		t.Error("input modified")
	}
	if again, _ := EndpointForPod(pod, want); again != nil {
		t.Errorf("second pass still changes: %+v", again)
	}
	if d := Diff(want, wep); !slices.Equal(d, []string{"labels", "spec.ports", "spec.profiles", "spec.serviceAccountName"}) {
		t.Errorf("Diff = %v", d)
	}
}

func TestDiffIgnoresIdentityAndTierLabel(t *testing.T) {
	np := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"team": "x"}}}
	want, err := k8s.NamespaceToProfile(np)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := k8s.NamespaceToProfile(np)
	cur.UID, cur.ResourceVersion, cur.CreationTimestamp = "u", "9", metav1.Now()
	if d := Diff(want, cur); d != nil {
		t.Errorf("identity counted: %v", d)
	}
	np.Labels["team"] = "y"
	changed, _ := k8s.NamespaceToProfile(np)
	if d := Diff(changed, cur); !slices.Equal(d, []string{"spec.labelsToApply"}) {
		t.Errorf("Diff = %v", d)
	}
	pol := &v3.NetworkPolicy{TypeMeta: metav1.TypeMeta{Kind: v3.KindNetworkPolicy}, Spec: v3.NetworkPolicySpec{Tier: "default", Selector: "all()"}}
	stored := &v3.NetworkPolicy{TypeMeta: pol.TypeMeta, ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"projectcalico.org/tier": "default"}}, Spec: pol.Spec}
	if d := Diff(pol, stored); d != nil {
		t.Errorf("tier label counted: %v", d)
	}
}

func TestJudgeLeak(t *testing.T) {
	f := Facts{
		PodExists:        func(ns, name string) bool { return ns+"/"+name == "a/live" },
		K8sNodeExists:    func(name string) bool { return name == "n1" },
		CalicoNodeExists: func(name string) bool { return name == "n1" || name == "calico-only" },
	}
	for _, c := range []struct {
		attrs map[string]string
		want  Verdict
	}{
		{map[string]string{"node": "n1", "namespace": "a", "pod": "live"}, Keep},
		{map[string]string{"node": "n1", "namespace": "a", "pod": "gone"}, Wait},
		{map[string]string{"node": "n9", "namespace": "a", "pod": "gone"}, ReleaseNow},
		{map[string]string{"node": "n9", "namespace": "a", "pod": "live"}, Keep},
		{map[string]string{"node": "calico-only", "namespace": "a", "pod": "gone"}, Wait},
		{map[string]string{"node": "n9", "type": "vxlanTunnelAddress"}, ReleaseNow},
		{map[string]string{"node": "n1", "type": "vxlanTunnelAddress"}, Keep},
		{map[string]string{"node": "calico-only", "namespace": "", "containerID": "x"}, Keep},
		{nil, Keep},
	} {
		if got := JudgeLeak(c.attrs, f); got != c.want {
			t.Errorf("JudgeLeak(%v) = %v, want %v", c.attrs, got, c.want)
		}
	}
}

func TestPlanGCGrace(t *testing.T) {
	f := Facts{
		PodExists:        func(string, string) bool { return false },
		K8sNodeExists:    func(name string) bool { return name == "n1" },
		CalicoNodeExists: func(name string) bool { return name == "n1" },
	}
	leak := func(a string, node string) ipam.Leak {
		return ipam.Leak{Addr: netip.MustParseAddr(a), Handle: "h-" + a, Attrs: map[string]string{"node": node, "namespace": "a", "pod": "p-" + a}}
	}
	r := &ipam.Report{
		Leaks:        []ipam.Leak{leak("10.0.0.1", "n1"), leak("10.0.0.2", "gone-node")},
		OrphanBlocks: []ipam.BlockProblem{{Block: netip.MustParsePrefix("10.0.1.0/26"), Node: "gone-node"}, {Block: netip.MustParsePrefix("10.0.2.0/26"), Node: "n1"}},
	}
	t0 := time.Unix(1000, 0)
	grace := time.Minute
	p := PlanGC(r, f, nil, t0, grace)
	if len(p.Release) != 1 || p.Release[0].Addr.String() != "10.0.0.2" {
		t.Fatalf("first round releases %v, want only the gone node's", p.Release)
	}
	if len(p.Blocks) != 1 || p.Blocks[0].Node != "gone-node" {
		t.Errorf("blocks %v", p.Blocks)
	}
	if !p.Next.Equal(t0.Add(grace)) || len(p.Seen) != 1 {
		t.Errorf("next %v seen %v", p.Next, p.Seen)
	}
	p2 := PlanGC(r, f, p.Seen, t0.Add(30*time.Second), grace)
	if len(p2.Release) != 1 {
		t.Errorf("released before the grace period: %v", p2.Release)
	}
	p3 := PlanGC(r, f, p2.Seen, t0.Add(grace), grace)
	if len(p3.Release) != 2 || len(p3.Seen) != 0 {
		t.Errorf("after the grace period: release %v seen %v", p3.Release, p3.Seen)
	}
	// An allocation no longer garbage is forgotten: a later one starts
	// its grace period afresh.
	r.Leaks = r.Leaks[1:]
	if p4 := PlanGC(r, f, p2.Seen, t0.Add(40*time.Second), grace); len(p4.Seen) != 0 {
		t.Errorf("kept %v", p4.Seen)
	}
}
