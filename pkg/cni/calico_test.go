package cni_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/cni"
)

// calicoManifestConflist is the conflist of Calico's etcd manifest
// (calico-etcd.yaml, cni_network_config) with its placeholders filled in as
// Calico's installer fills them for an etcd without TLS, less the portmap
// and bandwidth plugins (not installed here), plus "nodename" (the test's
// node; on a host, tortie-node's node name file says it) and the log file
// (the test's, not /var/log/calico/cni/cni.log).
func (e *env) calicoManifestConflist(mod func(plugin map[string]any)) []byte {
	plugin := map[string]any{
		"type":              "calico",
		"log_level":         "debug",
		"log_file_path":     e.logFile,
		"etcd_endpoints":    e.endpoint(),
		"etcd_key_file":     "",
		"etcd_cert_file":    "",
		"etcd_ca_cert_file": "",
		"mtu":               1440,
		"ipam":              map[string]any{"type": "calico-ipam"},
		"policy":            map[string]any{"type": "k8s"},
		"kubernetes":        map[string]any{"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
		"nodename":          e.node,
	}
	if mod != nil {
		mod(plugin)
	}
	b, _ := json.Marshal(map[string]any{"name": "k8s-pod-network", "cniVersion": "0.3.1", "plugins": []any{plugin}})
	return b
}

// TestCalicoConflist: Calico's own conflist, the binary installed as calico
// and calico-ipam, driven by cnitool. As shipped it names a kubeconfig that
// install-cni writes, missing here: ADD fails with code 7 naming the key and
// the file, and makes nothing; DEL removes everything, then fails the same
// way (it could not clear the pod's address annotations), so that the
// runtime repeats it. Without the kubernetes section (and with the pool
// named as operators name it) it works: policy.type k8s is accepted (one
// debug line per call), the pod gets its namespace's profile.
func TestCalicoConflist(t *testing.T) {
	cnitool := tool(t, "cnitool")
	e := newEnv(t)
	e.link(cni.CalicoPluginType)
	e.link(cni.CalicoIPAMType)
	tool := func(args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", e.hostNS, cnitool}, args...)...)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+e.confDir, "CNI_PATH="+e.cniPath, "CNI_ARGS=K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	logSince := func(off int) string {
		b, _ := os.ReadFile(e.logFile)
		return string(b[off:])
	}
	logSize := func() int { fi, _ := os.Stat(e.logFile); return int(fi.Size()) }

	e.writeConf("k8s-pod-network", e.calicoManifestConflist(nil))
	netns := e.workloadNS()
	out, err := tool("add", "k8s-pod-network", netns)
	const refusal = "cannot load the Kubernetes client configuration (kubernetes.kubeconfig /etc/cni/net.d/calico-kubeconfig)"
	if err == nil || !strings.Contains(out, refusal) {
		t.Errorf("ADD with Calico's conflist as shipped: err %v\n%s", err, out)
	}
	// The same by hand, for the error's code.
	var list struct{ Plugins []map[string]any }
	json.Unmarshal(e.calicoManifestConflist(nil), &list)
	plugin := list.Plugins[0]
	plugin["name"], plugin["cniVersion"] = "k8s-pod-network", "0.3.1"
	pc, _ := json.Marshal(plugin)
	te := e.exec(cni.CalicoPluginType, "ADD", pc, containerVars("by-hand", netns, "eth0", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0")...).cniError(t)
	if te.Code != types.ErrInvalidNetworkConfig || !strings.HasPrefix(te.Msg, refusal) {
		t.Errorf("ADD by hand: %d %q, want code 7", te.Code, te.Msg)
	}
	if linkIn(netns, "eth0") {
		t.Error("eth0 made")
	}
	if out, err := tool("del", "k8s-pod-network", netns); err == nil || !strings.Contains(out, refusal) {
		t.Errorf("DEL with Calico's conflist as shipped: err %v, want the kubeconfig's error\n%s", err, out)
	}
	e.assertClean(t)

	e.writeConf("k8s-pod-network", e.calicoManifestConflist(func(p map[string]any) {
		delete(p, "kubernetes")
		p["ipam"] = map[string]any{"type": "calico-ipam", "ipv4_pools": []string{"pool-v4"}}
	}))
	off := logSize()
	out, err = tool("add", "k8s-pod-network", netns)
	if err != nil {
		t.Fatalf("ADD without the kubernetes section: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"cniVersion": "0.3.1"`) || !strings.Contains(out, `"version": "4"`) {
		t.Errorf("ADD result is not a 0.3.1 result:\n%s", out)
	}
	if n := strings.Count(logSince(off), "policy.type k8s without a Kubernetes client"); n != 1 {
		t.Errorf("ADD logged policy.type k8s %d times, want once", n)
	}
	wep := getWEP(t, e, "shop", v3.WorkloadEndpointName(e.node, "k8s", "web-0", "eth0"))
	if !slices.Equal(wep.Spec.Profiles, []string{"kns.shop"}) {
		t.Errorf("profiles %v, want kns.shop", wep.Spec.Profiles)
	}
	if out, err := tool("del", "k8s-pod-network", netns); err != nil {
		t.Fatalf("DEL: %v\n%s", err, out)
	}
	e.assertClean(t)
}
