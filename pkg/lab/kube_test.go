package lab_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/lab"
)

var (
	kubeBuildOnce sync.Once
	kubeBuildErr  error
)

// kubeBins is bins plus what a --kube-api lab needs: the cached
// kube-apiserver and kubectl (a skip without them, a failure under CI) and
// tortie-kube-controllers, built beside the others.
func kubeBins(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := apiserver.BinDir(); err != nil {
		testenv.Missing(t, err.Error())
	}
	dir := bins(t)
	kubeBuildOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "tortie-kube-controllers"), "github.com/tortie/tortie/cmd/tortie-kube-controllers").CombinedOutput()
		if err != nil {
			kubeBuildErr = fmt.Errorf("go build tortie-kube-controllers: %v\n%s", err, out)
		}
	})
	if kubeBuildErr != nil {
		t.Fatal(kubeBuildErr)
	}
	return dir
}

// kubectl runs `tortie lab kubectl` with stdin and fails the test when it
// fails.
func kubectl(t *testing.T, labName, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bins(t), "tortie"), append([]string{"lab", "--name", labName, "kubectl", "--"}, args...)...)
	cmd.Env = envWithoutEtcd()
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("tortie lab kubectl %s: %v\n%s%s", strings.Join(args, " "), err, o.String(), e.String())
	}
	return o.String()
}

// TestLabKube: a --kube-api lab with 2 hosts and workloads (pods) in two
// namespaces. Kubernetes NetworkPolicies applied with kubectl change the
// matrix as Kubernetes says: default deny plus a podSelector, pod and
// namespace labels changed with `kubectl label`, a namedspaceSelector, a
// named port. Workload delete deletes the pod; lab down leaves nothing.
func TestLabKube(t *testing.T) {
	kubeBins(t)
	before := takeSnapshot(t)
	t0 := time.Now()
	name := upLab(t, "--hosts", "2", "--kube-api")
	t.Logf("timing: lab up --kube-api (2 hosts) %v", time.Since(t0).Round(time.Millisecond))

	st := mustTortie(t, "lab", "--name", name, "status")
	if !strings.Contains(st, "Kubernetes API https://") || !strings.Contains(st, "KUBECONFIG="+lab.KubeconfigFile(name)) || strings.Contains(st, "NOT RUNNING") {
		t.Errorf("lab status:\n%s", st)
	}
	nodes := kubectl(t, name, "", "get", "nodes", "-o", "name")
	for _, h := range []string{"h1", "h2"} {
		if !strings.Contains(nodes, "node/"+name+"-"+h) {
			t.Errorf("kubectl get nodes: no %s-%s:\n%s", name, h, nodes)
		}
	}

	t0 = time.Now()
	addWorkload(t, name, "alpha", "web", "h1", "app=web")
	addWorkload(t, name, "alpha", "client", "h2", "app=client")
	addWorkload(t, name, "beta", "client", "h1", "app=client")
	addWorkload(t, name, "beta", "other", "h2", "app=other")
	t.Logf("timing: 4 workloads (pods) added in %v", time.Since(t0).Round(time.Millisecond))
	// The plugin read the pod and wrote its annotations.
	ann := kubectl(t, name, "", "get", "pod", "web", "-n", "alpha", "-o", `jsonpath={.metadata.annotations.cni\.projectcalico\.org/podIP}`)
	if !strings.HasPrefix(ann, "10.244.") {
		t.Errorf("pod alpha/web: podIP annotation %q", ann)
	}
	if ports := kubectl(t, name, "", "get", "pod", "web", "-n", "alpha", "-o", "jsonpath={.spec.containers[0].ports[*].name}"); ports != "serve-80-tcp serve-81-tcp serve-80-udp serve-81-udp" {
		t.Errorf("pod alpha/web: container ports %q", ports)
	}
	ports := []string{"--ports", "80,81", "--protocols", "tcp"}
	waitMatrix(t, name, time.Minute, all, ports...)

	// 1. In alpha: deny all ingress, but from alpha's pods labelled
	// app=client.
	kubectl(t, name, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: alpha}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
`, "apply", "-f", "-")
	clients := map[string]bool{"alpha/client": true}
	teamBlue := false
	want := func(r lab.Result) bool {
		if !strings.HasPrefix(r.To, "alpha/") {
			return true
		}
		return clients[r.From] || (teamBlue && r.From == "beta/client")
	}
	took, _ := waitMatrix(t, name, time.Minute, want, ports...)
	t.Logf("timing: kubectl apply (deny + podSelector) → matrix after %v", took.Round(time.Millisecond))

	// 2. alpha/web labelled app=client: it is allowed in alpha too.
	kubectl(t, name, "", "label", "pod", "web", "-n", "alpha", "app=client", "--overwrite")
	clients["alpha/web"] = true
	took, _ = waitMatrix(t, name, time.Minute, want, ports...)
	t.Logf("timing: kubectl label pod → matrix after %v", took.Round(time.Millisecond))

	// 3. From namespaces labelled team=blue, their app=client pods: beta
	// gets the label, then loses it.
	kubectl(t, name, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-team-blue, namespace: alpha}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {app: client}}}]
`, "apply", "-f", "-")
	waitMatrix(t, name, time.Minute, want, ports...) // no namespace is blue yet
	kubectl(t, name, "", "label", "namespace", "beta", "team=blue")
	teamBlue = true
	took, _ = waitMatrix(t, name, time.Minute, want, ports...)
	t.Logf("timing: kubectl label namespace → matrix after %v", took.Round(time.Millisecond))
	kubectl(t, name, "", "label", "namespace", "beta", "team-")
	teamBlue = false
	waitMatrix(t, name, time.Minute, want, ports...)

	// 4. A named port: beta/other takes TCP 80 by its port's name, from
	// anyone, and nothing else.
	kubectl(t, name, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-port, namespace: beta}
spec:
  podSelector: {matchLabels: {app: other}}
  ingress:
  - ports: [{port: serve-80-tcp}]
`, "apply", "-f", "-")
	wantNamed := func(r lab.Result) bool {
		if r.To == "beta/other" {
			return r.Port == 80
		}
		return want(r)
	}
	took, _ = waitMatrix(t, name, time.Minute, wantNamed, ports...)
	t.Logf("timing: named-port policy → matrix after %v", took.Round(time.Millisecond))

	// Deleting a workload deletes its pod.
	mustTortie(t, "lab", "--name", name, "workload", "del", "beta/client")
	if out := kubectl(t, name, "", "get", "pods", "-n", "beta", "-o", "name"); strings.TrimSpace(out) != "pod/other" {
		t.Errorf("pods in beta after the workload's delete: %q", out)
	}

	mustTortie(t, "lab", "down", "--name", name)
	compareSnapshots(t, before, takeSnapshot(t), name)
	for _, left := range leftovers(t, name) {
		t.Errorf("left behind: %s", left)
	}
}

// TestLabKubeUpInterrupted: `lab up --kube-api` interrupted while the API
// server starts or the controllers do leaves nothing behind.
func TestLabKubeUpInterrupted(t *testing.T) {
	kubeBins(t)
	cfgBefore, _ := os.ReadFile(lab.CLIConfigFile)
	kube := []string{"--kube-api"}
	for _, c := range []interruptCase{
		{name: "apiserver-starting", args: kube, after: "starting the Kubernetes API server", delay: 300 * time.Millisecond, sig: syscall.SIGINT, to: processGroup, made: true},
		{name: "controllers", args: kube, after: "starting tortie-kube-controllers", sig: syscall.SIGTERM, to: tortieAlone, made: true},
	} {
		t.Run(c.name, func(t *testing.T) { upInterrupted(t, c, cfgBefore) })
	}
}
