package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/tortie/tortie/pkg/images"
	"github.com/tortie/tortie/pkg/installcni"
)

// objects are the manifest's documents, decoded strictly (an unknown or
// repeated field is an error) into their API types.
type objects struct {
	all             []runtime.Object
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	serviceAccounts map[string]*corev1.ServiceAccount
	roles           map[string]*rbacv1.Role
	clusterRoles    map[string]*rbacv1.ClusterRole
	roleBindings    []*rbacv1.RoleBinding
	crBindings      []*rbacv1.ClusterRoleBinding
	daemonSets      map[string]*appsv1.DaemonSet
	deployments     map[string]*appsv1.Deployment
	// crds are the CustomResourceDefinitions, by name, as written (the
	// client-go scheme has no apiextensions types).
	crds map[string][]byte
}

func decode(t *testing.T) objects {
	t.Helper()
	codec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	o := objects{
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		serviceAccounts: map[string]*corev1.ServiceAccount{}, roles: map[string]*rbacv1.Role{},
		clusterRoles: map[string]*rbacv1.ClusterRole{}, daemonSets: map[string]*appsv1.DaemonSet{},
		deployments: map[string]*appsv1.Deployment{}, crds: map[string][]byte{},
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(Manifest)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if isEmpty(doc) {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if head.Kind == "CustomResourceDefinition" && head.APIVersion == "apiextensions.k8s.io/v1" {
			o.crds[head.Metadata.Name] = doc
			continue
		}
		obj, gvk, err := codec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		o.all = append(o.all, obj)
		switch v := obj.(type) {
		case *corev1.ConfigMap:
			o.configMaps[v.Name] = v
		case *corev1.Secret:
			o.secrets[v.Name] = v
		case *corev1.ServiceAccount:
			o.serviceAccounts[v.Name] = v
		case *rbacv1.Role:
			o.roles[v.Name] = v
		case *rbacv1.ClusterRole:
			o.clusterRoles[v.Name] = v
		case *rbacv1.RoleBinding:
			o.roleBindings = append(o.roleBindings, v)
		case *rbacv1.ClusterRoleBinding:
			o.crBindings = append(o.crBindings, v)
		case *appsv1.DaemonSet:
			o.daemonSets[v.Name] = v
		case *appsv1.Deployment:
			o.deployments[v.Name] = v
		default:
			t.Errorf("document %d: a %s, not a kind the manifest should hold", i, gvk)
		}
	}
	return o
}

// withoutComments is a document less its whole-line comments and its
// leading and trailing blank lines.
func withoutComments(doc []byte) string {
	var out []string
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
		}
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

// isEmpty: a document of comments only (the header).
func isEmpty(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && l != "---" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func podSpecs(o objects) map[string]*corev1.PodSpec {
	m := map[string]*corev1.PodSpec{}
	for n, ds := range o.daemonSets {
		m["DaemonSet "+n] = &ds.Spec.Template.Spec
	}
	for n, d := range o.deployments {
		m["Deployment "+n] = &d.Spec.Template.Spec
	}
	return m
}

func TestManifest(t *testing.T) {
	o := decode(t)
	for _, name := range []string{"tortie-node", "tortie-cni-plugin", "tortie-kube-controllers"} {
		if o.serviceAccounts[name] == nil {
			t.Errorf("no ServiceAccount %s", name)
		}
	}
	if o.configMaps["tortie-config"] == nil || o.secrets["tortie-etcd-secrets"] == nil ||
		o.daemonSets["tortie-node"] == nil || o.deployments["tortie-kube-controllers"] == nil {
		t.Fatalf("missing one of ConfigMap tortie-config, Secret tortie-etcd-secrets, DaemonSet tortie-node, Deployment tortie-kube-controllers")
	}
	// Everything namespaced is in kube-system.
	for _, obj := range o.all {
		m, err := metaOf(obj)
		if err != nil {
			t.Fatal(err)
		}
		_, clusterScoped := obj.(*rbacv1.ClusterRole)
		if _, ok := obj.(*rbacv1.ClusterRoleBinding); ok {
			clusterScoped = true
		}
		if ns := m.GetNamespace(); clusterScoped != (ns == "") || (!clusterScoped && ns != "kube-system") {
			t.Errorf("%T %s: namespace %q", obj, m.GetName(), ns)
		}
	}

	cm := o.configMaps["tortie-config"].Data
	if !strings.HasPrefix(cm["etcd_endpoints"], "http") {
		t.Errorf("etcd_endpoints %q", cm["etcd_endpoints"])
	}
	// The images: exactly the three `make images` writes, never pulled.
	wantImages := map[string]bool{}
	for _, n := range images.Names {
		wantImages[images.Ref(images.DefaultRegistry, n, images.DefaultTag)] = false
	}
	for where, spec := range podSpecs(o) {
		if spec.ServiceAccountName == "" || o.serviceAccounts[spec.ServiceAccountName] == nil {
			t.Errorf("%s: ServiceAccount %q not in the manifest", where, spec.ServiceAccountName)
		}
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			used, known := wantImages[c.Image]
			switch {
			case !known:
				t.Errorf("%s, container %s: image %s is none of make images' %v", where, c.Name, c.Image, images.Names)
			case used && c.Image != images.Ref(images.DefaultRegistry, images.CNIName, images.DefaultTag):
				t.Errorf("%s: image %s used twice", where, c.Image)
			}
			wantImages[c.Image] = true
			if c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("%s, container %s: imagePullPolicy %q, want IfNotPresent", where, c.Name, c.ImagePullPolicy)
			}
			// Every ConfigMap key an env var names exists.
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.ConfigMapKeyRef
				if ref.Name != "tortie-config" {
					t.Errorf("%s, %s: ConfigMap %s", where, e.Name, ref.Name)
				} else if _, ok := cm[ref.Key]; !ok {
					t.Errorf("%s, %s: ConfigMap key %s does not exist", where, e.Name, ref.Key)
				}
			}
			// Mounts name volumes of the pod.
			for _, m := range c.VolumeMounts {
				if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
					t.Errorf("%s, %s: mount of volume %s, which the pod does not have", where, c.Name, m.Name)
				}
			}
			// A command is an image's binary.
			if len(c.Command) > 0 {
				ok := false
				for _, bins := range images.Binaries {
					ok = ok || slices.Contains(bins, strings.TrimPrefix(c.Command[0], "/usr/bin/"))
				}
				if !ok {
					t.Errorf("%s, %s: command %q is no image's binary", where, c.Name, c.Command)
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil && o.secrets[v.Secret.SecretName] == nil {
				t.Errorf("%s: Secret %s not in the manifest", where, v.Secret.SecretName)
			}
		}
	}
	for img, used := range wantImages {
		if !used {
			t.Errorf("image %s built by make images but not used", img)
		}
	}

	// The controllers are on the node's network (they write the profiles
	// that let pods' traffic through).
	if kc := o.deployments["tortie-kube-controllers"].Spec.Template.Spec; !kc.HostNetwork {
		t.Error("tortie-kube-controllers: not hostNetwork: from a pod's network it cannot reach etcd before it has written the profiles")
	}

	// The node DaemonSet.
	ds := o.daemonSets["tortie-node"].Spec.Template.Spec
	if !ds.HostNetwork || ds.PriorityClassName != "system-node-critical" {
		t.Errorf("tortie-node: hostNetwork %v, priorityClassName %q", ds.HostNetwork, ds.PriorityClassName)
	}
	for _, effect := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute} {
		if !slices.ContainsFunc(ds.Tolerations, func(tl corev1.Toleration) bool {
			return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == effect
		}) {
			t.Errorf("tortie-node does not tolerate every %s taint", effect)
		}
	}
	if len(ds.InitContainers) != 1 || ds.InitContainers[0].Command[0] != "/usr/bin/tortie-install-cni" {
		t.Fatalf("tortie-node: want one init container running tortie-install-cni")
	}
	node := ds.Containers[0]
	if node.SecurityContext == nil || node.SecurityContext.Privileged == nil || !*node.SecurityContext.Privileged {
		t.Error("tortie-node not privileged")
	}
	for _, p := range []*corev1.Probe{node.LivenessProbe, node.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 9099 || p.HTTPGet.Host != "127.0.0.1" {
			t.Errorf("tortie-node probe %+v: want an HTTP GET of 127.0.0.1:9099", p)
		}
	}
	env := envOf(node)
	for k, v := range map[string]string{"DATASTORE_TYPE": "etcdv3", "IP": "autodetect", "ETCD_ENDPOINTS": "configMap:etcd_endpoints",
		"NODENAME": "field:spec.nodeName", "CALICO_NETWORKING_BACKEND": "configMap:calico_backend"} {
		if env[k] != v {
			t.Errorf("tortie-node env %s = %q, want %q", k, env[k], v)
		}
	}
	initEnv := envOf(ds.InitContainers[0])
	for k, v := range map[string]string{"CNI_NETWORK_CONFIG": "configMap:cni_network_config", "CNI_MTU": "configMap:veth_mtu",
		"KUBERNETES_NODE_NAME": "field:spec.nodeName", "CNI_SERVICE_ACCOUNT": "tortie-cni-plugin", "CNI_CONF_NAME": installcni.DefaultConfName} {
		if initEnv[k] != v {
			t.Errorf("install-cni env %s = %q, want %q", k, initEnv[k], v)
		}
	}
	// The host paths the init container writes.
	hostPaths := map[string]string{}
	for _, v := range ds.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, m := range ds.InitContainers[0].VolumeMounts {
		if hp, ok := hostPaths[m.Name]; ok && m.MountPath != "/host"+hp {
			t.Errorf("install-cni mounts host %s at %s, want /host%s (the installer's defaults)", hp, m.MountPath, hp)
		}
	}
	if !slices.Contains(slices.Collect(maps.Values(hostPaths)), "/opt/cni/bin") || !slices.Contains(slices.Collect(maps.Values(hostPaths)), "/etc/cni/net.d") {
		t.Errorf("host paths %v: want /opt/cni/bin and /etc/cni/net.d", hostPaths)
	}

	// The controllers.
	kc := o.deployments["tortie-kube-controllers"].Spec
	if kc.Replicas == nil || *kc.Replicas != 1 || kc.Template.Spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("tortie-kube-controllers: replicas %v, priorityClassName %q", kc.Replicas, kc.Template.Spec.PriorityClassName)
	}
	kcEnv := envOf(kc.Template.Spec.Containers[0])
	if kcEnv["ETCD_ENDPOINTS"] != "configMap:etcd_endpoints" || kcEnv["ENABLED_CONTROLLERS"] == "" {
		t.Errorf("tortie-kube-controllers env %v", kcEnv)
	}

	// The ClusterNetworkPolicy CRD, the only one, is deploy/crds' copy of
	// upstream's, unchanged but for its status; and the controllers may read (only read) what
	// it defines.
	const cnpCRD = "clusternetworkpolicies.policy.networking.k8s.io"
	if len(o.crds) != 1 || o.crds[cnpCRD] == nil {
		t.Errorf("CustomResourceDefinitions %v: want %s alone", slices.Collect(maps.Keys(o.crds)), cnpCRD)
	} else {
		upstream, err := os.ReadFile("crds/policy.networking.k8s.io_clusternetworkpolicies.yaml")
		if err != nil {
			t.Fatal(err)
		}
		// Less the status stanza: status is the API server's, and its
		// nulls would make every apply a change.
		want, _, _ := strings.Cut(withoutComments(upstream), "\nstatus:\n")
		if got := withoutComments(o.crds[cnpCRD]); got != want {
			t.Errorf("the CRD %s in tortie.yaml is not deploy/crds/policy.networking.k8s.io_clusternetworkpolicies.yaml (%d bytes, want %d)", cnpCRD, len(got), len(want))
		}
	}
	var cnpRules []rbacv1.PolicyRule
	for _, r := range o.clusterRoles["tortie-kube-controllers"].Rules {
		if slices.Contains(r.APIGroups, "policy.networking.k8s.io") {
			cnpRules = append(cnpRules, r)
		}
	}
	if len(cnpRules) != 1 || !slices.Equal(cnpRules[0].Resources, []string{"clusternetworkpolicies"}) ||
		!slices.Equal(cnpRules[0].Verbs, []string{"get", "list", "watch"}) || len(cnpRules[0].APIGroups) != 1 {
		t.Errorf("ClusterRole tortie-kube-controllers, policy.networking.k8s.io: %+v, want get, list, watch on clusternetworkpolicies alone", cnpRules)
	}
	if !slices.Contains(strings.Split(kcEnv["ENABLED_CONTROLLERS"], ","), "clusternetworkpolicy") {
		t.Errorf("tortie-kube-controllers: ENABLED_CONTROLLERS %q lacks clusternetworkpolicy", kcEnv["ENABLED_CONTROLLERS"])
	}

	// Every binding binds a ServiceAccount of the manifest to a role of the manifest.
	for _, b := range o.roleBindings {
		if b.RoleRef.Kind != "Role" || o.roles[b.RoleRef.Name] == nil {
			t.Errorf("RoleBinding %s: role %s %s not in the manifest", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		checkSubjects(t, o, b.Name, b.Subjects)
	}
	for _, b := range o.crBindings {
		if b.RoleRef.Kind != "ClusterRole" || o.clusterRoles[b.RoleRef.Name] == nil {
			t.Errorf("ClusterRoleBinding %s: role %s %s not in the manifest", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		checkSubjects(t, o, b.Name, b.Subjects)
	}

	// The conflist template, as the installer renders it, is tortie's plugin
	// and IPAM with the values in place; mtu 0, from the node's MTU file.
	vals := map[string]string{
		"__CNI_MTU__": cm["veth_mtu"], "__KUBERNETES_NODE_NAME__": "node-1", "__DATASTORE_TYPE__": "etcdv3",
		"__ETCD_ENDPOINTS__": cm["etcd_endpoints"], "__ETCD_CA_CERT_FILE__": "", "__ETCD_CERT_FILE__": "", "__ETCD_KEY_FILE__": "",
		"__KUBECONFIG_FILEPATH__": "/etc/cni/net.d/tortie-kubeconfig",
	}
	out, err := installcni.Render(cm["cni_network_config"], vals)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			Type string `json:"type"`
			MTU  int    `json:"mtu"`
			IPAM struct {
				Type string `json:"type"`
			} `json:"ipam"`
			Kubernetes struct {
				Kubeconfig string `json:"kubeconfig"`
			} `json:"kubernetes"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(out, &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.Plugins) != 1 || conf.Plugins[0].Type != "tortie" || conf.Plugins[0].IPAM.Type != "tortie-ipam" ||
		conf.Plugins[0].MTU != 0 || conf.Plugins[0].Kubernetes.Kubeconfig != "/etc/cni/net.d/tortie-kubeconfig" {
		t.Errorf("rendered conflist:\n%s", out)
	}
}

func checkSubjects(t *testing.T, o objects, binding string, subjects []rbacv1.Subject) {
	t.Helper()
	for _, s := range subjects {
		if s.Kind != "ServiceAccount" || s.Namespace != "kube-system" || o.serviceAccounts[s.Name] == nil {
			t.Errorf("binding %s: subject %+v is not a ServiceAccount of the manifest", binding, s)
		}
	}
}

// envOf summarises a container's environment: a value, or
// "configMap:<key>", or "field:<path>".
func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			m[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			m[e.Name] = "configMap:" + e.ValueFrom.ConfigMapKeyRef.Key
		case e.ValueFrom.FieldRef != nil:
			m[e.Name] = "field:" + e.ValueFrom.FieldRef.FieldPath
		}
	}
	return m
}

type namedObject interface {
	GetName() string
	GetNamespace() string
}

func metaOf(obj runtime.Object) (namedObject, error) {
	m, ok := obj.(namedObject)
	if !ok {
		return nil, fmt.Errorf("%T has no metadata", obj)
	}
	return m, nil
}
