package kubecontrollers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/kube/kubetest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// mk decodes a resource of kind from JSON.
func mk(t testing.TB, kind *v3.KindInfo, js string) v3.Resource {
	t.Helper()
	r := kind.NewObject()
	if err := json.Unmarshal([]byte(js), r); err != nil {
		t.Fatalf("%s %s: %v", kind.Kind, js, err)
	}
	return r
}

// podManifest is a pod bound to node (no kubelet needed), with the
// account robot.
func podManifest(ns, name, node, labels string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s}}
spec:
  nodeName: %s
  serviceAccountName: robot
  automountServiceAccountToken: false
  containers:
  - name: c
    image: registry.k8s.io/pause:3.10
    ports: [{name: http, containerPort: 8080}, {containerPort: 9000, hostPort: 9000, protocol: UDP}]
`, name, ns, labels, node)
}

// writeEndpoint writes a pod's WorkloadEndpoint as the CNI plugin does at
// ADD.
func (h *harness) writeEndpoint(t testing.TB, ns, pod, node string, ip netip.Addr) *v3.WorkloadEndpoint {
	t.Helper()
	name := k8s.PodEndpointName(node, pod, "eth0")
	wep := mk(t, kindWEP, fmt.Sprintf(`{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3",
		"metadata":{"name":%q,"namespace":%q,"annotations":{"cni.projectcalico.org/network":"k8s-pod-network"}},
		"spec":{"orchestrator":"k8s","node":%q,"pod":%q,"endpoint":"eth0","containerID":"cid-%s",
		"ipNetworks":["%s/32"],"profiles":["kns.%s"],"interfaceName":"cali%s","mac":"ee:ee:ee:ee:ee:ee"}}`,
		name, ns, node, pod, pod, ip, ns, strings.Repeat("0", 11)))
	got, err := h.cl.Create(context.Background(), wep)
	if err != nil {
		t.Fatal(err)
	}
	return got.(*v3.WorkloadEndpoint)
}

func (h *harness) endpoint(t testing.TB, ns, name string) *v3.WorkloadEndpoint {
	t.Helper()
	r, err := h.cl.Get(context.Background(), kindWEP, ns, name)
	if err != nil {
		return nil
	}
	return r.(*v3.WorkloadEndpoint)
}

// TestWorkloadEndpoints: a pod's endpoint, written by the CNI plugin with
// what it knows, gets the pod's labels, profiles, service account and
// ports, follows kubectl label, and goes a grace period after the pod;
// an endpoint written before its pod reaches the API server is kept.
func TestWorkloadEndpoints(t *testing.T) {
	c := kubetest.Shared(t)
	h := newHarness(t, c)
	ns := c.Namespace(t)
	c.Kubectl(t, "create", "serviceaccount", "robot", "-n", ns)
	// The late pod below must reach the API server within the grace
	// period; a loaded machine can take seconds to start kubectl, so the
	// grace is longer here and that pod goes in through the client.
	const grace = 5 * time.Second
	in := h.start(t, func(cfg *Config) { cfg.EndpointGracePeriod = grace })
	in.waitSynced(t, time.Minute)

	c.Apply(t, podManifest(ns, "web", "n1", "app: web"))
	wep := h.writeEndpoint(t, ns, "web", "n1", netip.MustParseAddr("10.0.0.5"))
	check := func(labels map[string]string) func() error {
		return func() error {
			w := h.endpoint(t, ns, wep.Name)
			if w == nil {
				return fmt.Errorf("endpoint %s gone", wep.Name)
			}
			want := maps.Clone(labels)
			want["projectcalico.org/namespace"] = ns
			want["projectcalico.org/orchestrator"] = "k8s"
			want["projectcalico.org/serviceaccount"] = "robot"
			if !maps.Equal(w.Labels, want) {
				return fmt.Errorf("labels %v, want %v", w.Labels, want)
			}
			if !slices.Equal(w.Spec.Profiles, []string{"kns." + ns, "ksa." + ns + ".robot"}) || w.Spec.ServiceAccountName != "robot" {
				return fmt.Errorf("profiles %v, service account %q", w.Spec.Profiles, w.Spec.ServiceAccountName)
			}
			ports, _ := json.Marshal(w.Spec.Ports)
			if string(ports) != `[{"name":"http","protocol":"tcp","port":8080,"hostPort":0,"hostIP":""},{"name":"","protocol":"udp","port":9000,"hostPort":9000,"hostIP":""}]` {
				return fmt.Errorf("ports %s", ports)
			}
			// The CNI plugin's fields stay.
			if !slices.Equal(w.Spec.IPNetworks, []string{"10.0.0.5/32"}) || w.Spec.ContainerID != "cid-web" || w.Spec.MAC != "ee:ee:ee:ee:ee:ee" || w.Annotations["cni.projectcalico.org/network"] != "k8s-pod-network" || w.UID != wep.UID {
				return fmt.Errorf("CNI fields changed: %+v", w)
			}
			return nil
		}
	}
	eventually(t, 10*time.Second, check(map[string]string{"app": "web"}))
	c.Kubectl(t, "label", "pod", "web", "-n", ns, "app=api", "tier=front", "--overwrite")
	eventually(t, 10*time.Second, check(map[string]string{"app": "api", "tier": "front"}))

	// The CNI plugin may write the endpoint before this instance sees the
	// pod: within the grace period nothing is deleted.
	late := h.writeEndpoint(t, ns, "late", "n1", netip.MustParseAddr("10.0.0.6"))
	written := time.Now()
	time.Sleep(time.Second)
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(podManifest(ns, "late", "n1", "app: late")), &pod); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.CoreV1().Pods(ns).Create(context.Background(), &pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(written); d >= grace {
		t.Fatalf("the late pod took %v to create, past the %v grace period: its endpoint may rightly go", d, grace)
	}
	eventually(t, 10*time.Second, func() error {
		if w := h.endpoint(t, ns, late.Name); w == nil || w.Labels["app"] != "late" {
			return fmt.Errorf("late endpoint: %+v", w)
		}
		return nil
	})
	// Past the grace period counted from the endpoint's write.
	time.Sleep(time.Until(written.Add(grace + time.Second)))
	if h.endpoint(t, ns, late.Name) == nil {
		t.Fatal("the endpoint of a pod created after it was deleted")
	}

	// A pod that goes takes its endpoint with it, after the grace period.
	gone := time.Now()
	c.Kubectl(t, "delete", "pod", "web", "-n", ns, "--grace-period=0", "--force")
	eventually(t, grace+15*time.Second, func() error {
		if h.endpoint(t, ns, wep.Name) != nil {
			return fmt.Errorf("endpoint of deleted pod still there")
		}
		return nil
	})
	if d := time.Since(gone); d < grace {
		t.Errorf("endpoint deleted %v after its pod, before the grace period", d)
	}
	if h.endpoint(t, ns, late.Name) == nil {
		t.Error("the other pod's endpoint went too")
	}
	if !strings.Contains(in.log.String(), "deleted WorkloadEndpoint "+ns+"/"+wep.Name+": pod "+ns+"/web no longer exists") {
		t.Error("no log line for the deletion")
	}

	// An endpoint of another orchestrator is not the controllers'.
	other := mk(t, kindWEP, fmt.Sprintf(`{"kind":"WorkloadEndpoint","apiVersion":"projectcalico.org/v3","metadata":{"name":"n1-cni-abc-eth0","namespace":%q},
		"spec":{"orchestrator":"cni","node":"n1","workload":"abc","containerID":"abc","endpoint":"eth0","ipNetworks":["10.0.0.7/32"],"interfaceName":"cali1"}}`, ns))
	if _, err := h.cl.Create(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	before := h.stored(t, kindWEP, ns, "n1-cni-abc-eth0")
	time.Sleep(3 * time.Second)
	if after := h.stored(t, kindWEP, ns, "n1-cni-abc-eth0"); after != before {
		t.Errorf("a cni endpoint changed: %s", after)
	}
}
