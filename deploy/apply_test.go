package deploy

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/installcni"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/kube/kubetest"
)

// TestApply applies the manifest to a real kube-apiserver: a server-side
// dry run, then for real (twice: the second changes nothing), after which
// the ClusterNetworkPolicy CRD it holds serves ClusterNetworkPolicies; checks each
// ServiceAccount's rights, each needed one granted and the others refused;
// and runs the installer as the init container would, with a token of
// tortie-node, for a real TokenRequest of tortie-cni-plugin's token, whose
// kubeconfig then has the plugin's rights.
func TestApply(t *testing.T) {
	c := kubetest.Start(t)
	file := filepath.Join(t.TempDir(), "tortie.yaml")
	if err := os.WriteFile(file, Manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log(c.Kubectl(t, "apply", "--dry-run=server", "-f", file))
	if out := c.Kubectl(t, "get", "daemonsets,deployments,configmaps", "-n", "kube-system", "-o", "name"); strings.Contains(out, "tortie") {
		t.Fatalf("the dry run created objects:\n%s", out)
	}
	t.Log(c.Kubectl(t, "apply", "-f", file))
	again := c.Kubectl(t, "apply", "-f", file)
	for _, line := range strings.Split(strings.TrimSpace(again), "\n") {
		if !strings.HasSuffix(line, " unchanged") {
			t.Errorf("second apply changed something: %s", line)
		}
	}
	// The manifest installs the ClusterNetworkPolicy CRD: once established,
	// a ClusterNetworkPolicy can be created, with nothing else applied.
	c.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/clusternetworkpolicies.policy.networking.k8s.io")
	t.Log(c.Apply(t, `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: apply-test}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {matchLabels: {a: b}}}]}]
`))
	c.Kubectl(t, "delete", "clusternetworkpolicy", "apply-test")
	for _, obj := range []string{"daemonset/tortie-node", "deployment/tortie-kube-controllers", "configmap/tortie-config",
		"secret/tortie-etcd-secrets", "serviceaccount/tortie-node", "serviceaccount/tortie-cni-plugin", "serviceaccount/tortie-kube-controllers"} {
		c.Kubectl(t, "get", "-n", "kube-system", obj)
	}

	canI := func(as string, args ...string) bool {
		t.Helper()
		full := append([]string{"auth", "can-i", "--as=system:serviceaccount:kube-system:" + as}, args...)
		out, err := c.KubectlErr(full...)
		switch strings.TrimSpace(out) {
		case "yes":
			return true
		case "no":
			return false
		}
		t.Fatalf("kubectl %s: %q, %v", strings.Join(full, " "), out, err)
		return false
	}
	type check struct {
		as   string
		args []string
		want bool
	}
	var checks []check
	yes := func(as string, args ...string) { checks = append(checks, check{as, args, true}) }
	no := func(as string, args ...string) { checks = append(checks, check{as, args, false}) }
	const kc, cni, node = "tortie-kube-controllers", "tortie-cni-plugin", "tortie-node"
	for _, verb := range []string{"get", "list", "watch"} {
		for _, res := range []string{"namespaces", "serviceaccounts", "pods", "nodes", "networkpolicies.networking.k8s.io"} {
			yes(kc, verb, res, "--all-namespaces")
		}
	}
	for _, verb := range []string{"get", "list", "watch"} {
		yes(kc, verb, "clusternetworkpolicies.policy.networking.k8s.io")
	}
	for _, verb := range []string{"create", "update", "patch", "delete"} {
		no(kc, verb, "clusternetworkpolicies.policy.networking.k8s.io")
	}
	no(kc, "get", "customresourcedefinitions.apiextensions.k8s.io")
	for _, verb := range []string{"get", "create", "update"} {
		yes(kc, verb, "leases.coordination.k8s.io", "-n", "kube-system")
	}
	no(kc, "create", "leases.coordination.k8s.io", "-n", "default")
	no(kc, "delete", "leases.coordination.k8s.io", "-n", "kube-system")
	no(kc, "delete", "pods", "--all-namespaces")
	no(kc, "update", "pods", "--all-namespaces")
	no(kc, "get", "secrets", "-n", "kube-system")
	no(kc, "list", "secrets", "--all-namespaces")
	no(kc, "create", "networkpolicies.networking.k8s.io", "-n", "default")
	no(kc, "update", "nodes")
	no(kc, "get", "configmaps", "-n", "kube-system")

	yes(cni, "get", "pods", "-n", "default")
	yes(cni, "patch", "pods", "--subresource=status", "-n", "default")
	no(cni, "patch", "pods", "-n", "default")
	yes(cni, "get", "namespaces")
	no(cni, "list", "pods", "--all-namespaces")
	no(cni, "delete", "pods", "-n", "default")
	no(cni, "update", "namespaces")
	no(cni, "get", "secrets", "-n", "kube-system")
	no(cni, "get", "nodes")

	yes(node, "create", "serviceaccounts/tortie-cni-plugin", "--subresource=token", "-n", "kube-system")
	no(node, "create", "serviceaccounts/tortie-kube-controllers", "--subresource=token", "-n", "kube-system")
	no(node, "create", "serviceaccounts/tortie-node", "--subresource=token", "-n", "kube-system")
	no(node, "get", "secrets", "-n", "kube-system")
	no(node, "get", "pods", "-n", "default")
	for _, ck := range checks {
		if got := canI(ck.as, ck.args...); got != ck.want {
			t.Errorf("%s can-i %s: %v, want %v", ck.as, strings.Join(ck.args, " "), got, ck.want)
		}
	}

	// The init container, for real: tortie-node's token asks for the
	// plugin's, and the kubeconfig written with it has the plugin's rights.
	root := t.TempDir()
	sa := filepath.Join(root, "serviceaccount")
	token := strings.TrimSpace(c.Kubectl(t, "create", "token", "tortie-node", "-n", "kube-system"))
	for name, data := range map[string][]byte{"token": []byte(token), "ca.crt": c.Server.CACert(), "namespace": []byte("kube-system")} {
		if err := os.MkdirAll(sa, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sa, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plugin := filepath.Join(root, "image", "tortie-cni")
	if err := os.MkdirAll(filepath.Dir(plugin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plugin, []byte("plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(c.Server.URL())
	if err != nil {
		t.Fatal(err)
	}
	cm := decode(t).configMaps["tortie-config"].Data
	env := map[string]string{
		"CNI_NETWORK_CONFIG": cm["cni_network_config"], "CNI_MTU": cm["veth_mtu"], "ETCD_ENDPOINTS": cm["etcd_endpoints"],
		"CNI_CONF_NAME": "10-tortie.conflist", "KUBERNETES_NODE_NAME": "node-1", "CNI_SERVICE_ACCOUNT": cni,
		"KUBERNETES_SERVICE_HOST": u.Hostname(), "KUBERNETES_SERVICE_PORT": u.Port(),
		"CNI_DEST_BIN_DIR": filepath.Join(root, "host/opt/cni/bin"), "CNI_DEST_NET_DIR": filepath.Join(root, "host/etc/cni/net.d"),
		"SERVICEACCOUNT_DIR": sa,
	}
	cfg, err := installcni.FromEnv(func(k string) string { return env[k] }, filepath.Join(root, "image", "tortie-install-cni"))
	if err != nil {
		t.Fatal(err)
	}
	if err := installcni.Install(cfg); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(root, "host/etc/cni/net.d", installcni.DefaultKubeconfigName)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	whoami, err := apiserver.Kubectl(ctx, kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil || strings.TrimSpace(whoami) != "system:serviceaccount:kube-system:"+cni {
		t.Errorf("the plugin's kubeconfig is %q (%v), want tortie-cni-plugin", whoami, err)
	}
	for args, want := range map[string]string{"patch pods --subresource=status -n default": "yes", "patch pods -n default": "no", "get secrets -n kube-system": "no"} {
		out, _ := apiserver.Kubectl(ctx, kubeconfig, append([]string{"auth", "can-i"}, strings.Fields(args)...)...)
		if strings.TrimSpace(out) != want {
			t.Errorf("the plugin's kubeconfig: can-i %s: %q, want %s", args, out, want)
		}
	}
}
