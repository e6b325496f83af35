package k8s

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

func testPod(mod func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "bars-x"},
		Spec:       corev1.PodSpec{NodeName: "node-a"},
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func TestPodEndpointLabels(t *testing.T) {
	long := strings.Repeat("s", 63)
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want map[string]string
	}{
		{"no labels, no service account", testPod(nil), map[string]string{
			"projectcalico.org/namespace": "bars-x", "projectcalico.org/orchestrator": "k8s",
		}},
		{"labels and service account", testPod(func(p *corev1.Pod) {
			p.Labels = map[string]string{"app": "web", "tier": "front"}
			p.Spec.ServiceAccountName = "robot"
		}), map[string]string{
			"app": "web", "tier": "front",
			"projectcalico.org/namespace": "bars-x", "projectcalico.org/orchestrator": "k8s",
			"projectcalico.org/serviceaccount": "robot",
		}},
		// Calico sets its labels after copying the pod's: they win.
		{"colliding pod labels are overwritten", testPod(func(p *corev1.Pod) {
			p.Labels = map[string]string{
				"projectcalico.org/namespace":      "other",
				"projectcalico.org/orchestrator":   "cni",
				"projectcalico.org/serviceaccount": "admin",
			}
			p.Spec.ServiceAccountName = "robot"
		}), map[string]string{
			"projectcalico.org/namespace": "bars-x", "projectcalico.org/orchestrator": "k8s",
			"projectcalico.org/serviceaccount": "robot",
		}},
		// Without a service account the pod's own label stays, as in Calico.
		{"serviceaccount label kept without a service account", testPod(func(p *corev1.Pod) {
			p.Labels = map[string]string{"projectcalico.org/serviceaccount": "admin"}
		}), map[string]string{
			"projectcalico.org/namespace": "bars-x", "projectcalico.org/orchestrator": "k8s",
			"projectcalico.org/serviceaccount": "admin",
		}},
		{"service account name of 63 characters has no label", testPod(func(p *corev1.Pod) {
			p.Spec.ServiceAccountName = long
		}), map[string]string{
			"projectcalico.org/namespace": "bars-x", "projectcalico.org/orchestrator": "k8s",
		}},
		{"service account name of 62 characters is labelled", testPod(func(p *corev1.Pod) {
			p.Spec.ServiceAccountName = long[:62]
		}), map[string]string{
			"projectcalico.org/namespace": "bars-x", "projectcalico.org/orchestrator": "k8s",
			"projectcalico.org/serviceaccount": long[:62],
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := c.pod.DeepCopy()
			got := PodEndpointLabels(c.pod)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("PodEndpointLabels = %v, want %v", got, c.want)
			}
			if !reflect.DeepEqual(before, c.pod) {
				t.Errorf("PodEndpointLabels modified the pod: %v", c.pod.Labels)
			}
		})
	}
}

func TestPodProfiles(t *testing.T) {
	for _, c := range []struct {
		sa   string
		want []string
	}{
		{"", []string{"kns.bars-x"}},
		{"robot", []string{"kns.bars-x", "ksa.bars-x.robot"}},
		{"default", []string{"kns.bars-x", "ksa.bars-x.default"}},
	} {
		pod := testPod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = c.sa })
		if got := PodProfiles(pod); !reflect.DeepEqual(got, c.want) {
			t.Errorf("sa %q: PodProfiles = %v, want %v", c.sa, got, c.want)
		}
	}
}

func TestPodEndpointName(t *testing.T) {
	for _, c := range []struct{ node, pod, iface, want string }{
		{"node-a", "web-1", "eth0", "node--a-k8s-web--1-eth0"},
		{"n1", "p", "eth0", "n1-k8s-p-eth0"},
		{"n1.example.com", "x-y-z", "net1", "n1.example.com-k8s-x--y--z-net1"},
	} {
		if got := PodEndpointName(c.node, c.pod, c.iface); got != c.want {
			t.Errorf("PodEndpointName(%q, %q, %q) = %q, want %q", c.node, c.pod, c.iface, got, c.want)
		}
	}
}

func TestPodPorts(t *testing.T) {
	tcp := numorstring.ProtocolFromString("tcp")
	udp := numorstring.ProtocolFromString("udp")
	sctp := numorstring.ProtocolFromString("sctp")
	for _, c := range []struct {
		name       string
		containers []corev1.Container
		init       []corev1.Container
		want       []v3.WorkloadEndpointPort
	}{
		{"none", nil, nil, nil},
		{"unnamed ports are not endpoint ports", []corev1.Container{{Ports: []corev1.ContainerPort{{ContainerPort: 80}}}}, nil, nil},
		{"named ports in order, protocol lower case, TCP by default",
			[]corev1.Container{
				{Name: "a", Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 80},
					{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				}},
				{Name: "b", Ports: []corev1.ContainerPort{
					{Name: "https", ContainerPort: 443, Protocol: corev1.ProtocolTCP},
					{Name: "sig", ContainerPort: 3868, Protocol: corev1.ProtocolSCTP},
				}},
			}, nil,
			[]v3.WorkloadEndpointPort{
				{Name: "http", Protocol: tcp, Port: 80},
				{Name: "dns", Protocol: udp, Port: 53},
				{Name: "https", Protocol: tcp, Port: 443},
				{Name: "sig", Protocol: sctp, Port: 3868},
			}},
		{"host ports, named or not, carry host port and IP",
			[]corev1.Container{{Ports: []corev1.ContainerPort{
				{ContainerPort: 8080, HostPort: 80, HostIP: "10.0.0.1"},
				{Name: "metrics", ContainerPort: 9090, HostPort: 9090},
			}}}, nil,
			[]v3.WorkloadEndpointPort{
				{Protocol: tcp, Port: 8080, HostPort: 80, HostIP: "10.0.0.1"},
				{Name: "metrics", Protocol: tcp, Port: 9090, HostPort: 9090},
			}},
		{"init containers after containers",
			[]corev1.Container{{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}},
			[]corev1.Container{{Ports: []corev1.ContainerPort{{Name: "side", ContainerPort: 15000}}}},
			[]v3.WorkloadEndpointPort{
				{Name: "http", Protocol: tcp, Port: 80},
				{Name: "side", Protocol: tcp, Port: 15000},
			}},
		{"unknown protocol and zero port skipped",
			[]corev1.Container{{Ports: []corev1.ContainerPort{
				{Name: "weird", ContainerPort: 1, Protocol: "ICMP"},
				{Name: "zero"},
				{Name: "ok", ContainerPort: 2},
			}}}, nil,
			[]v3.WorkloadEndpointPort{{Name: "ok", Protocol: tcp, Port: 2}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pod := testPod(func(p *corev1.Pod) { p.Spec.Containers, p.Spec.InitContainers = c.containers, c.init })
			got := PodPorts(pod)
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("PodPorts = %+v, want %+v", got, c.want)
			}
			// The ports are ones a WorkloadEndpoint accepts.
			wep := &v3.WorkloadEndpoint{
				TypeMeta:   metav1.TypeMeta{APIVersion: v3.APIVersion, Kind: v3.KindWorkloadEndpoint},
				ObjectMeta: metav1.ObjectMeta{Name: PodEndpointName("node-a", "web-1", "eth0"), Namespace: "bars-x"},
				Spec: v3.WorkloadEndpointSpec{
					Orchestrator: "k8s", Node: "node-a", Pod: "web-1", Endpoint: "eth0",
					InterfaceName: "cali0123456789a", Ports: got, Profiles: PodProfiles(pod),
				},
			}
			v3.SetDefaults(wep)
			if err := v3.Validate(wep); err != nil {
				t.Errorf("endpoint with these ports is invalid: %v", err)
			}
		})
	}
}

func TestPodIPs(t *testing.T) {
	for _, c := range []struct {
		name    string
		mod     func(*corev1.Pod)
		want    []string
		wantErr string
	}{
		{"none", nil, nil, ""},
		{"status.podIPs first", func(p *corev1.Pod) {
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.5"}, {IP: "fd00::5"}}
			p.Status.PodIP = "10.9.9.9"
			p.Annotations = map[string]string{AnnotationPodIPs: "10.1.1.1/32"}
		}, []string{"10.0.0.5/32", "fd00::5/128"}, ""},
		{"status.podIP", func(p *corev1.Pod) {
			p.Status.PodIP = "10.9.9.9"
			p.Annotations = map[string]string{AnnotationPodIPs: "10.1.1.1/32"}
		}, []string{"10.9.9.9/32"}, ""},
		{"podIPs annotation before podIP", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationPodIPs: "10.1.1.1/32,fd00::1/128", AnnotationPodIP: "10.2.2.2/32"}
		}, []string{"10.1.1.1/32", "fd00::1/128"}, ""},
		{"podIP annotation", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationPodIP: "10.2.2.2/32"}
		}, []string{"10.2.2.2/32"}, ""},
		{"empty annotations are no addresses", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationPodIP: "", AnnotationPodIPs: ""}
		}, nil, ""},
		{"bad annotation names it", func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationPodIPs: "10.1.1.1/32,nonsense"}
		}, nil, `pod bars-x/web-1: annotation cni.projectcalico.org/podIPs: "nonsense" is not an IP address or CIDR`},
		{"bad status names it", func(p *corev1.Pod) {
			p.Status.PodIP = "10.0.0.300"
		}, nil, `status.podIP: "10.0.0.300"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := PodIPs(testPod(c.mod))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("PodIPs error = %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("PodIPs = %v, want %v", got, c.want)
			}
		})
	}
}

func TestParseCIDROrIP(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"10.0.0.5", "10.0.0.5/32"},
		{"10.0.0.5/32", "10.0.0.5/32"},
		{"10.0.0.5/24", "10.0.0.0/24"},
		{"fd00::5", "fd00::5/128"},
		{" fd00::5/128 ", "fd00::5/128"},
		{"::ffff:10.0.0.5", "10.0.0.5/32"},
		{"fe80::1%eth0", ""},
		{"10.0.0.5/33", ""},
		{"", ""},
		{"x", ""},
	} {
		p, err := ParseCIDROrIP(c.in)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("ParseCIDROrIP(%q) = %v, want an error", c.in, p)
		case c.want != "" && (err != nil || p.String() != c.want):
			t.Errorf("ParseCIDROrIP(%q) = %v, %v; want %s", c.in, p, err, c.want)
		}
	}
}

func TestPodStates(t *testing.T) {
	now := metav1.Now()
	for _, c := range []struct {
		name                             string
		mod                              func(*corev1.Pod)
		finished, hostNet, sched, hasWEP bool
	}{
		{"running", func(p *corev1.Pod) { p.Status.Phase = corev1.PodRunning }, false, false, true, true},
		{"pending", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }, false, false, true, true},
		{"succeeded", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, true, false, true, true},
		{"failed", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }, true, false, true, true},
		{"completed", func(p *corev1.Pod) { p.Status.Phase = "Completed" }, true, false, true, true},
		{"deleting, network still there", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.DeletionTimestamp = &now
			p.Annotations = map[string]string{AnnotationPodIP: "10.0.0.5/32"}
		}, false, false, true, true},
		{"deleting, CNI DEL emptied podIP", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.DeletionTimestamp = &now
			p.Annotations = map[string]string{AnnotationPodIP: ""}
		}, true, false, true, true},
		{"not deleting, empty podIP", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.Annotations = map[string]string{AnnotationPodIP: ""}
		}, false, false, true, true},
		{"deleting without the annotation", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.DeletionTimestamp = &now
		}, false, false, true, true},
		{"host network", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, false, true, true, false},
		{"unscheduled", func(p *corev1.Pod) { p.Spec.NodeName = "" }, false, false, false, false},
	} {
		p := testPod(c.mod)
		if got := IsPodFinished(p); got != c.finished {
			t.Errorf("%s: IsPodFinished = %v", c.name, got)
		}
		if got := IsPodHostNetworked(p); got != c.hostNet {
			t.Errorf("%s: IsPodHostNetworked = %v", c.name, got)
		}
		if got := IsPodScheduled(p); got != c.sched {
			t.Errorf("%s: IsPodScheduled = %v", c.name, got)
		}
		if got := PodHasEndpoint(p); got != c.hasWEP {
			t.Errorf("%s: PodHasEndpoint = %v", c.name, got)
		}
	}
}

func TestServiceAccountToProfile(t *testing.T) {
	for _, c := range []struct {
		name    string
		sa      *corev1.ServiceAccount
		want    string // JSON of the profile
		wantErr string
	}{
		// Observed from Calico's kube-controllers (etcd mode):
		// testdata reference kube-controllers-etcd.md.
		{"unlabelled, as observed from Calico", &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: "robot", Namespace: "bars-x", UID: "33a8b54c-3d51-4359-bf85-64aaa1c5409a"},
		}, `{"kind":"Profile","apiVersion":"projectcalico.org/v3","metadata":{"name":"ksa.bars-x.robot"},"spec":{"labelsToApply":{"pcsa.projectcalico.org/name":"robot"}}}`, ""},
		{"labelled", &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: "robot", Namespace: "bars-x", Labels: map[string]string{"team": "blue", "example.com/role": "db"}},
			// Secrets and the rest play no part.
			AutomountServiceAccountToken: new(bool),
		}, `{"kind":"Profile","apiVersion":"projectcalico.org/v3","metadata":{"name":"ksa.bars-x.robot"},"spec":{"labelsToApply":{"pcsa.example.com/role":"db","pcsa.projectcalico.org/name":"robot","pcsa.team":"blue"}}}`, ""},
		// A label of the account's own named projectcalico.org/name loses to the name.
		{"name label overwritten", &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: "robot", Namespace: "bars-x", Labels: map[string]string{"projectcalico.org/name": "admin"}},
		}, `{"kind":"Profile","apiVersion":"projectcalico.org/v3","metadata":{"name":"ksa.bars-x.robot"},"spec":{"labelsToApply":{"pcsa.projectcalico.org/name":"robot"}}}`, ""},
		{"dotted name", &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: "a.b", Namespace: "default"},
		}, `{"kind":"Profile","apiVersion":"projectcalico.org/v3","metadata":{"name":"ksa.default.a.b"},"spec":{"labelsToApply":{"pcsa.projectcalico.org/name":"a.b"}}}`, ""},
		{"nil", nil, "", "nil ServiceAccount"},
		{"no namespace", &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "robot"}}, "", "metadata.namespace"},
		{"no name", &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "x"}}, "", "metadata.name"},
		{"bad name", &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "Robot_1", Namespace: "x"}}, "", "metadata.name"},
		{"bad label", &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "x", Labels: map[string]string{"a b": "c"}}}, "", "metadata.labels"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before *corev1.ServiceAccount
			if c.sa != nil {
				before = c.sa.DeepCopy()
			}
			got, err := ServiceAccountToProfile(c.sa)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != c.want {
				t.Errorf("profile\n got %s\nwant %s", b, c.want)
			}
			if !reflect.DeepEqual(before, c.sa) {
				t.Errorf("input modified")
			}
		})
	}
}
