package cni_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/cni"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

const cniAccount = "tortie-cni-plugin"

// writeKubeconfig writes rc (the apiserver package's admin token, maybe
// impersonating) as a kubeconfig file, as install-cni writes the plugin's.
func writeKubeconfig(t *testing.T, rc *rest.Config) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken, Impersonate: rc.Impersonate.UserName, ImpersonateGroups: rc.Impersonate.Groups}
	cfg.Contexts["x"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "x"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// applyPluginRBAC applies the tortie-cni-plugin ServiceAccount, ClusterRole
// and ClusterRoleBinding exactly as deploy/tortie.yaml has them.
func applyPluginRBAC(t *testing.T, c *kubetest.Cluster) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoBin(), "..", "deploy", "tortie.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, doc := range strings.Split(string(b), "\n---") {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("deploy/tortie.yaml: %v", err)
		}
		switch meta.Kind {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding":
			if meta.Metadata.Name == cniAccount {
				docs = append(docs, doc)
			}
		}
	}
	if len(docs) != 3 {
		t.Fatalf("deploy/tortie.yaml has %d of the ServiceAccount, ClusterRole and ClusterRoleBinding %s", len(docs), cniAccount)
	}
	c.Apply(t, strings.Join(docs, "\n---\n"))
}

// kubeEnv is env with a Kubernetes API the plugin reaches from the host
// namespace, and a kubeconfig with exactly tortie-cni-plugin's rights.
type kubeEnv struct {
	*env
	kc         *kubetest.Cluster
	kubeconfig string
}

func newKubeEnv(t *testing.T) *kubeEnv {
	kubetest.RequireBinaries(t)
	e := newEnv(t)
	// The apiserver listens on our end of the veth, which the plugin, in
	// the host namespace, reaches as it reaches etcd.
	kc := kubetest.StartWith(t, func(c *apiserver.Config) { c.BindAddress = e.rootAddr })
	applyPluginRBAC(t, kc)
	user, groups := apiserver.ServiceAccountUser("kube-system", cniAccount)
	return &kubeEnv{env: e, kc: kc, kubeconfig: writeKubeconfig(t, kc.Server.ImpersonatingConfig(user, groups...))}
}

// k8sPlugin is the plugin entry of Calico's Kubernetes mode.
func (k *kubeEnv) k8sPlugin(kubeconfig string) func(map[string]any) {
	return func(p map[string]any) {
		p["policy"] = map[string]any{"type": "k8s"}
		p["kubernetes"] = map[string]any{"kubeconfig": kubeconfig}
		p["ipam"] = map[string]any{"type": cni.CalicoIPAMType}
		p["datastore_type"] = "etcdv3"
	}
}

func (k *kubeEnv) createNamespace(t *testing.T, name string, annotations map[string]string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	if _, err := k.kc.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager makes the default account: pods name theirs.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "robot", Namespace: name}}
	if _, err := k.kc.Client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (k *kubeEnv) createPod(t *testing.T, ns, name string, labels, annotations map[string]string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			NodeName:           k.node,
			ServiceAccountName: "robot",
			Containers: []corev1.Container{{Name: "c", Image: "pause", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 80},
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				{ContainerPort: 9000}, // unnamed: not an endpoint port
			}}},
		},
	}
	out, err := k.kc.Client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (k *kubeEnv) pod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := k.kc.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKubernetesMode drives the built plugin through cnitool as a kubelet
// would (CNI_ARGS K8S_POD_NAMESPACE and K8S_POD_NAME), in Calico's
// Kubernetes mode (policy.type k8s, kubernetes.kubeconfig), against a real
// kube-apiserver, with exactly the rights deploy/tortie.yaml gives
// tortie-cni-plugin (any 403 fails the ADD, and so the test), for cniVersion
// 0.3.1, 0.4.0, 1.0.0 and 1.1.0: the endpoint takes the pod's labels,
// service account, named ports and profiles; the namespace's pool
// annotation, the pod's (which wins) and the pod's ipAddrs choose the
// addresses; ADD annotates the pod with them and DEL empties podIP and
// podIPs, but only for the container that owns them.
func TestKubernetesMode(t *testing.T) {
	cnitool := tool(t, "cnitool")
	k := newKubeEnv(t)
	k.addPool("pool-blue", "10.66.0.0/16", 26)
	blue := netip.MustParsePrefix("10.66.0.0/16")
	v4 := netip.MustParsePrefix(testPoolV4)

	for i, ver := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			ns := fmt.Sprintf("shop-%d", i)
			k.createNamespace(t, ns, map[string]string{k8s.AnnotationIPv4Pools: `["pool-blue"]`})
			name := "k8s" + strings.ReplaceAll(ver, ".", "")
			k.writeConf(name, k.netConf(name, ver, k.k8sPlugin(k.kubeconfig)))
			fixed := fmt.Sprintf("10.65.200.%d", 10+i)
			pods := []struct {
				name       string
				annotation map[string]string
				inside     netip.Prefix
				exact      string
			}{
				{"web-0", nil, blue, ""}, // the namespace's pool
				{"api-0", map[string]string{k8s.AnnotationIPv4Pools: `["` + testPoolV4 + `"]`}, v4, ""}, // the pod's wins
				{"db-0", map[string]string{k8s.AnnotationIPAddrs: `["` + fixed + `"]`}, v4, fixed},
			}
			tool := func(pod, cmd, netns string) (string, error) {
				c := exec.Command("ip", "netns", "exec", k.hostNS, cnitool, cmd, name, netns)
				c.Env = append(os.Environ(), "NETCONFPATH="+k.confDir, "CNI_PATH="+k.cniPath,
					"CNI_ARGS=K8S_POD_NAMESPACE="+ns+";K8S_POD_NAME="+pod)
				out, err := c.CombinedOutput()
				return string(out), err
			}
			netnses := map[string]string{}
			for _, p := range pods {
				k.createPod(t, ns, p.name, map[string]string{"app": p.name, "projectcalico.org/namespace": "forged"}, p.annotation)
				netns := k.workloadNS()
				netnses[p.name] = netns
				out, err := tool(p.name, "add", netns)
				if err != nil {
					t.Fatalf("cnitool add %s: %v\n%s", p.name, err, out)
				}
				if !strings.Contains(out, `"cniVersion": "`+ver+`"`) {
					t.Errorf("%s: not a %s result:\n%s", p.name, ver, out)
				}
				wep := getWEP(t, k.env, ns, v3.WorkloadEndpointName(k.node, "k8s", p.name, "eth0"))
				wantLabels := map[string]string{"app": p.name, "projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "robot"}
				if !reflect.DeepEqual(wep.Labels, wantLabels) {
					t.Errorf("%s: labels %v, want %v", p.name, wep.Labels, wantLabels)
				}
				if want := []string{"kns." + ns, "ksa." + ns + ".robot"}; !slices.Equal(wep.Spec.Profiles, want) {
					t.Errorf("%s: profiles %v, want %v", p.name, wep.Spec.Profiles, want)
				}
				wantPorts := []v3.WorkloadEndpointPort{
					{Name: "http", Protocol: numorstring.ProtocolFromString("tcp"), Port: 80},
					{Name: "dns", Protocol: numorstring.ProtocolFromString("udp"), Port: 53},
				}
				if !reflect.DeepEqual(wep.Spec.Ports, wantPorts) || wep.Spec.ServiceAccountName != "robot" {
					t.Errorf("%s: ports %+v, service account %q", p.name, wep.Spec.Ports, wep.Spec.ServiceAccountName)
				}
				if len(wep.Spec.IPNetworks) != 1 {
					t.Fatalf("%s: ipNetworks %v", p.name, wep.Spec.IPNetworks)
				}
				addr := netip.MustParsePrefix(wep.Spec.IPNetworks[0]).Addr()
				if !p.inside.Contains(addr) || (p.exact != "" && addr.String() != p.exact) {
					t.Errorf("%s: address %s, want one in %s %s", p.name, addr, p.inside, p.exact)
				}
				if p.inside == v4 && blue.Contains(addr) {
					t.Errorf("%s: the namespace's pool was used", p.name)
				}
				ann := k.pod(t, ns, p.name).Annotations
				want := map[string]string{k8s.AnnotationPodIP: wep.Spec.IPNetworks[0], k8s.AnnotationPodIPs: wep.Spec.IPNetworks[0], k8s.AnnotationContainerID: wep.Spec.ContainerID}
				for key, v := range want {
					if ann[key] != v {
						t.Errorf("%s: annotation %s = %q, want %q", p.name, key, ann[key], v)
					}
				}
				if atLeast(ver, "0.4.0") {
					if out, err := tool(p.name, "check", netns); err != nil {
						t.Errorf("cnitool check %s: %v\n%s", p.name, err, out)
					}
				}
			}
			if ver == "1.1.0" {
				if out, err := tool("web-0", "status", netnses["web-0"]); err != nil {
					t.Errorf("cnitool status: %v\n%s", err, out)
				}
			}

			// A DEL of another (an earlier) sandbox of web-0 leaves its
			// annotations and endpoint alone.
			conf := k.pluginConf(name, ver, k.k8sPlugin(k.kubeconfig))
			k.exec(cni.PluginType, "DEL", conf, containerVars("earlier-sandbox", "", "eth0", "K8S_POD_NAMESPACE="+ns+";K8S_POD_NAME=web-0")...).ok(t, "DEL of another container")
			if ann := k.pod(t, ns, "web-0").Annotations; ann[k8s.AnnotationPodIP] == "" {
				t.Errorf("another container's DEL cleared the annotations: %v", ann)
			}
			getWEP(t, k.env, ns, v3.WorkloadEndpointName(k.node, "k8s", "web-0", "eth0"))

			for _, p := range pods {
				cid := getWEP(t, k.env, ns, v3.WorkloadEndpointName(k.node, "k8s", p.name, "eth0")).Spec.ContainerID
				for range 2 { // a repeated DEL succeeds
					if out, err := tool(p.name, "del", netnses[p.name]); err != nil {
						t.Fatalf("cnitool del %s: %v\n%s", p.name, err, out)
					}
				}
				ann := k.pod(t, ns, p.name).Annotations
				if v, ok := ann[k8s.AnnotationPodIP]; !ok || v != "" || ann[k8s.AnnotationPodIPs] != "" || ann[k8s.AnnotationContainerID] != cid {
					t.Errorf("%s after DEL: annotations %v, want podIP and podIPs empty, containerID %s kept", p.name, ann, cid)
				}
			}
			k.assertClean(t)
		})
	}
}

// TestKubernetesModeFailures: when the Kubernetes API does not answer,
// refuses the plugin (403), lacks the pod, or the pod's annotations are
// bad, ADD fails with a clear error and leaves nothing behind; a refused
// annotation patch (after the endpoint was written) is undone too.
func TestKubernetesModeFailures(t *testing.T) {
	k := newKubeEnv(t)
	k.createNamespace(t, "fail", nil)
	k.createPod(t, "fail", "p", map[string]string{"app": "p"}, nil)
	k.createPod(t, "fail", "bad-pools", nil, map[string]string{k8s.AnnotationIPv4Pools: `pool-v4`})
	k.createPod(t, "fail", "no-pool", nil, map[string]string{k8s.AnnotationIPAddrs: `["192.0.2.7"]`})

	// A ServiceAccount that may read but not patch: ADD gets as far as the
	// endpoint, then the annotation is refused.
	k.kc.Apply(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: read-only-cni}
rules: [{apiGroups: [""], resources: [pods, namespaces], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: read-only-cni}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: read-only-cni}
subjects: [{kind: ServiceAccount, name: read-only-cni, namespace: kube-system}]
`)
	readOnly := writeKubeconfig(t, k.kc.Server.ServiceAccountConfig("kube-system", "read-only-cni"))
	nobody := writeKubeconfig(t, k.kc.Server.ServiceAccountConfig("kube-system", "nobody"))
	closedCfg := k.kc.Server.ServiceAccountConfig("kube-system", cniAccount)
	closedCfg.Host = "https://" + k.rootAddr + ":1" // nothing listens there
	closed := writeKubeconfig(t, closedCfg)

	for _, c := range []struct {
		name, kubeconfig, pod string
		code                  uint
		msg                   string
	}{
		{"unreachable", closed, "p", types.ErrTryAgainLater, "could not be reached"},
		{"forbidden", nobody, "p", cni.CodeKubernetes, `cannot get resource "namespaces"`},
		{"annotation refused", readOnly, "p", cni.CodeKubernetes, `cannot patch resource "pods/status"`},
		{"no such pod", k.kubeconfig, "ghost", cni.CodeKubernetes, `pods "ghost" not found`},
		{"bad pools annotation", k.kubeconfig, "bad-pools", cni.CodePodAnnotation, `Pod fail/bad-pools: annotation cni.projectcalico.org/ipv4pools "pool-v4": not a JSON list`},
		{"ipAddrs outside the pools", k.kubeconfig, "no-pool", cni.CodePodAnnotation, "Pod fail/no-pool: annotation cni.projectcalico.org/ipAddrs: address 192.0.2.7 is in no enabled IPPool"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conf := k.pluginConf("fail", "1.0.0", k.k8sPlugin(c.kubeconfig))
			netns := k.workloadNS()
			start := time.Now()
			te := k.exec(cni.PluginType, "ADD", conf, containerVars("c-"+randHex(4), netns, "eth0", "K8S_POD_NAMESPACE=fail;K8S_POD_NAME="+c.pod)...).cniError(t)
			t.Logf("ADD: code %d: %s", te.Code, te.Msg)
			if te.Code != c.code || !strings.Contains(te.Msg, c.msg) {
				t.Errorf("ADD: code %d %q (%s), want code %d with %q", te.Code, te.Msg, te.Details, c.code, c.msg)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("ADD took %s to fail", d)
			}
			if linkIn(netns, "eth0") {
				t.Error("eth0 left in the container")
			}
			k.assertClean(t)
			if ann := k.pod(t, "fail", "p").Annotations; ann[k8s.AnnotationPodIP] != "" {
				t.Errorf("pod annotated: %v", ann)
			}
		})
	}
	// The refused key of Calico's shape: a client without policy.type k8s.
	conf := k.pluginConf("fail", "1.0.0", func(p map[string]any) {
		k.k8sPlugin(k.kubeconfig)(p)
		delete(p, "policy")
	})
	te := k.exec(cni.PluginType, "ADD", conf, containerVars("c-nopolicy", k.workloadNS(), "eth0", "K8S_POD_NAMESPACE=fail;K8S_POD_NAME=p")...).cniError(t)
	if te.Code != types.ErrUnsupportedField || !strings.HasPrefix(te.Msg, "kubernetes.kubeconfig set ("+k.kubeconfig+`): without policy.type "k8s"`) {
		t.Errorf("client without policy.type: %d %q", te.Code, te.Msg)
	}
	k.assertClean(t)
}
