package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/images"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/lab"
)

var (
	clusterOnce   sync.Once
	clusterImages string
	clusterErr    error
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// clusterBins is kubeBins plus what a --kubernetes lab needs: the cached
// kubelet, kube-proxy, controller manager and scheduler, containerd, runc,
// nsenter, the loopback CNI plugin (scripts/install-tools.sh), and the
// images (built once per test binary, as `make images` builds them). It
// returns the binaries' and the images' directories.
func clusterBins(t *testing.T) (string, string) {
	t.Helper()
	dir := kubeBins(t)
	for _, b := range []string{"kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler"} {
		if _, err := apiserver.Binary(b); err != nil {
			testenv.Missing(t, err.Error())
		}
	}
	for _, b := range []string{"containerd", "ctr", "runc", "nsenter"} {
		if _, err := exec.LookPath(b); err != nil {
			testenv.Missing(t, b+" (scripts/install-deps.sh)")
		}
	}
	loopback := filepath.Join(repoRoot(), "bin", "loopback")
	if _, err := os.Stat(loopback); err != nil {
		testenv.Missing(t, "the CNI plugin "+loopback+" (scripts/install-tools.sh)")
	}
	clusterOnce.Do(func() {
		if clusterErr = os.Symlink(loopback, filepath.Join(dir, "loopback")); clusterErr != nil {
			return
		}
		root := filepath.Join(dir, "cluster-images")
		if clusterErr = images.BuildPrograms(context.Background(), repoRoot(), filepath.Join(root, "bin"), nil); clusterErr != nil {
			return
		}
		clusterImages = filepath.Join(root, "images")
		_, clusterErr = images.WriteAll(filepath.Join(root, "bin"), clusterImages, images.DefaultRegistry, images.DefaultTag)
	})
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	return dir, clusterImages
}

// cluster is a --kubernetes lab under test.
type cluster struct {
	t    *testing.T
	name string
	st   lab.State
}

func (c *cluster) kubectl(args ...string) string {
	c.t.Helper()
	return kubectl(c.t, c.name, "", args...)
}

func (c *cluster) apply(yaml string) {
	c.t.Helper()
	kubectl(c.t, c.name, yaml, "apply", "-f", "-")
}

// pods are the pods of a label selector in namespace default.
func (c *cluster) pods(selector string) []corev1.Pod {
	c.t.Helper()
	var l corev1.PodList
	if err := json.Unmarshal([]byte(c.kubectl("get", "pods", "-l", selector, "-o", "json")), &l); err != nil {
		c.t.Fatal(err)
	}
	return l.Items
}

// get runs echoserver's client in pod from: GET url, bounded by timeout.
func (c *cluster) get(from, url string, timeout time.Duration) (string, error) {
	cmd := exec.Command(filepath.Join(bins(c.t), "tortie"), "lab", "--name", c.name, "kubectl", "--",
		"exec", from, "--", "/usr/bin/echoserver", "get", url, timeout.String())
	cmd.Env = envWithoutEtcd()
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return string(out), err
}

// reaches says whether pod from reaches url, answered by host name want:
// it retries for up to a minute (a new route, policy or service on a busy
// machine), and fails the test if it never does.
func (c *cluster) reaches(from, url, wantHost, wantClient string) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := c.get(from, url, 3*time.Second)
		want := "host=" + wantHost + " client=" + wantClient + ":"
		if err == nil && strings.HasPrefix(out, want) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Errorf("%s -> %s: got %q (%v), want %q...", from, url, out, err, want)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// blocked fails the test if pod from reaches url (3 s of silence, twice:
// a blocked flow is silent, never refused, under tortie's policy).
func (c *cluster) blocked(from, url string) {
	c.t.Helper()
	for range 2 {
		if out, err := c.get(from, url, 3*time.Second); err == nil {
			c.t.Errorf("%s -> %s: connected (%q), want blocked", from, url, out)
			return
		} else if !strings.Contains(err.Error(), "Timeout") && !strings.Contains(err.Error(), "deadline") {
			c.t.Errorf("%s -> %s: %v, want a timeout (blocked)", from, url, err)
			return
		}
	}
}

func (c *cluster) tortieCLI(args ...string) string {
	c.t.Helper()
	return mustTortie(c.t, append(args, "--config", lab.ConfigFile(c.name))...)
}

// byNode groups pods by node.
func byNode(pods []corev1.Pod) map[string][]corev1.Pod {
	m := map[string][]corev1.Pod{}
	for _, p := range pods {
		m[p.Spec.NodeName] = append(m[p.Spec.NodeName], p)
	}
	return m
}

const echoDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: 6
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
      - {name: echo, image: docker.io/tortie/echoserver:v0.1.0-dev, ports: [{containerPort: 8080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {selector: {app: echo}, ports: [{port: 80, targetPort: 8080}]}
`

// TestLabKubernetes: a 3-node `lab up --kubernetes` cluster, tortie
// installed by kubectl apply alone; then all through kubectl: a Deployment
// spread over the nodes gets addresses from tortie's per-node blocks; pods
// reach each other across nodes, routed natively over BGP and then over
// VXLAN; a ClusterIP Service balances over the nodes, from pods and from a
// host; a NetworkPolicy cuts exactly what it says; a deleted pod's address
// is free; a node drained and deleted has its blocks released; and lab
// down leaves the machine as it was (processes, namespaces, links,
// cgroups, mounts).
func TestLabKubernetes(t *testing.T) {
	_, imgs := clusterBins(t)
	before := takeSnapshot(t)
	var name string
	t.Cleanup(func() { // after lab down (cleanups run last first)
		if name == "" {
			return
		}
		compareSnapshots(t, before, takeSnapshot(t), name)
		checkNodeTraces(t, name)
	})
	t0 := time.Now()
	name = upLab(t, "--kubernetes", "--hosts", "3", "--images", imgs)
	t.Logf("timing: lab up --kubernetes, 3 nodes: %v", time.Since(t0).Round(time.Millisecond))
	st, err := lab.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, name: name, st: st.State()}
	hosts := c.st.Hosts

	status, _ := tortie(t, "lab", "status", "--name", name)
	for _, h := range hosts {
		if !strings.Contains(status, h.Node+"  Ready") || !strings.Contains(status, "tortie-node-") {
			t.Errorf("lab status does not show node %s Ready with its tortie-node pod:\n%s", h.Node, status)
		}
	}

	// A Deployment over the nodes.
	c.apply(echoDeployment)
	c.kubectl("rollout", "status", "deployment/echo", "--timeout", "3m")
	pods := c.pods("app=echo")
	nodes := byNode(pods)
	pool := netip.MustParsePrefix(c.st.Options.Pool)
	blocks := map[string]netip.Prefix{}
	for _, h := range hosts {
		if len(nodes[h.Node]) != 2 {
			t.Fatalf("node %s runs %d echo pods, want 2 (topology spread)", h.Node, len(nodes[h.Node]))
		}
		for _, p := range nodes[h.Node] {
			ip := netip.MustParseAddr(p.Status.PodIP)
			if !pool.Contains(ip) {
				t.Errorf("pod %s: %s not in the pool %s", p.Name, ip, pool)
			}
			// The address is IPAM's, held for this pod on this node.
			show := c.tortieCLI("ipam", "show", "--ip", ip.String())
			if !strings.Contains(show, "pod: "+p.Name) || !strings.Contains(show, "node: "+h.Node) {
				t.Errorf("ipam show --ip %s: want pod %s on %s:\n%s", ip, p.Name, h.Node, show)
			}
			// Both of a node's pods are in its block (/26), no two nodes
			// share one.
			b, _ := ip.Prefix(26)
			if prev, ok := blocks[h.Node]; ok && prev != b {
				t.Errorf("node %s: pods in blocks %s and %s", h.Node, prev, b)
			}
			blocks[h.Node] = b
		}
	}
	if blocks[hosts[0].Node] == blocks[hosts[1].Node] || blocks[hosts[1].Node] == blocks[hosts[2].Node] || blocks[hosts[0].Node] == blocks[hosts[2].Node] {
		t.Errorf("nodes share blocks: %v", blocks)
	}

	// Pod to pod across nodes: from the first pod of each node to every
	// pod of the others, the source address kept.
	across := func(how string) {
		t0 := time.Now()
		for _, h := range hosts {
			from := nodes[h.Node][0]
			for _, to := range pods {
				if to.Spec.NodeName != h.Node {
					c.reaches(from.Name, "http://"+to.Status.PodIP+":8080/", to.Name, from.Status.PodIP)
				}
			}
		}
		t.Logf("pod to pod across nodes (%s): 12 flows in %v", how, time.Since(t0).Round(time.Millisecond))
	}
	across("native routes over BGP")
	for _, h := range hosts {
		for other, b := range blocks {
			if other == h.Node {
				continue
			}
			if r := mustRun(t, "ip", "-n", h.Netns, "route", "show", b.String()); !strings.Contains(r, "via") || strings.Contains(r, "vxlan") {
				t.Errorf("host %s: route to %s's block %s is %q, want via a host address", h.Name, other, b, r)
			}
		}
	}

	// A ClusterIP Service: balanced over pods of every node, from a pod and
	// from a host.
	svcIP := strings.TrimSpace(c.kubectl("get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"))
	seen := map[string]bool{}
	from := nodes[hosts[0].Node][0]
	podNode := map[string]string{}
	for _, p := range pods {
		podNode[p.Name] = p.Spec.NodeName
	}
	for range 30 {
		out, err := c.get(from.Name, "http://"+svcIP+"/", 5*time.Second)
		if err != nil {
			t.Fatalf("service %s from %s: %v", svcIP, from.Name, err)
		}
		host, _, _ := strings.Cut(strings.TrimPrefix(out, "host="), " ")
		seen[podNode[host]] = true
	}
	if len(seen) < 2 {
		t.Errorf("30 requests to service %s all went to pods of %v", svcIP, seen)
	}
	echo := filepath.Join(filepath.Dir(imgs), "bin", images.EchoServerName)
	if out, err := exec.Command("ip", "netns", "exec", hosts[1].Netns, echo, "get", "http://"+svcIP+"/", "5s").Output(); err != nil || !strings.HasPrefix(string(out), "host=echo-") {
		t.Errorf("service %s from host %s: %q %v", svcIP, hosts[1].Name, out, err)
	}
	t.Logf("service %s answered from pods of %d nodes", svcIP, len(seen))

	// VXLAN: the pool's vxlanMode Always, the routes move onto
	// vxlan.calico, and pods still reach each other across nodes.
	c.tortieCLI("apply", "-f", writeFile(t, fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lab-ipv4}
spec: {cidr: %q, vxlanMode: Always, natOutgoing: true, nodeSelector: all()}
`, c.st.Options.Pool)))
	t1 := time.Now()
	for _, h := range hosts {
		for other, b := range blocks {
			if other == h.Node {
				continue
			}
			for {
				r := mustRun(t, "ip", "-n", h.Netns, "route", "show", b.String())
				if strings.Contains(r, "dev vxlan.calico") {
					break
				}
				if time.Since(t1) > time.Minute {
					t.Fatalf("host %s: route to %s is %q a minute after vxlanMode Always", h.Name, b, r)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	t.Logf("every route on vxlan.calico %v after the pool changed", time.Since(t1).Round(time.Millisecond))
	across("VXLAN")

	// A NetworkPolicy: the echo pods admit only pods labelled role=client,
	// on 8080.
	client := fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {role: client}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers: [{name: client, image: docker.io/tortie/echoserver:v0.1.0-dev}]
`, hosts[1].Node)
	c.apply(client)
	c.kubectl("wait", "--for=condition=Ready", "pod/client", "--timeout", "2m")
	cl := c.pods("role=client")[0]
	c.apply(`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: echo-from-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: echo}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 8080}, {port: 8081}]}]
`)
	a, b := nodes[hosts[0].Node][0], nodes[hosts[2].Node][0]
	// Wait for the policy by its first effect, then check the rest.
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := c.get(a.Name, "http://"+b.Status.PodIP+":8080/", 2*time.Second); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still reaches %s a minute after the NetworkPolicy", a.Name, b.Name)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, to := range pods {
		c.reaches(cl.Name, "http://"+to.Status.PodIP+":8080/", to.Name, cl.Status.PodIP)
	}
	c.blocked(a.Name, "http://"+b.Status.PodIP+":8080/")
	c.blocked(b.Name, "http://"+a.Status.PodIP+":8080/")
	c.blocked(nodes[hosts[1].Node][0].Name, "http://"+a.Status.PodIP+":8080/")
	c.agentRestarts(hosts[2], cl, a, b)

	// The client reaches the echo pods through the service too, and not
	// the client from the echo pods (the policy is about echo's ingress:
	// the client admits everything).
	for range 5 {
		if out, err := c.get(cl.Name, "http://"+svcIP+"/", 5*time.Second); err != nil || !strings.HasPrefix(out, "host=echo-") {
			t.Errorf("client -> service %s: %q %v", svcIP, out, err)
		}
	}
	c.kubectl("delete", "networkpolicy", "echo-from-client")
	c.reaches(a.Name, "http://"+b.Status.PodIP+":8080/", b.Name, a.Status.PodIP)

	// A pod deleted frees its address.
	c.kubectl("delete", "pod", "client", "--wait")
	deadline = time.Now().Add(time.Minute)
	for {
		out := c.tortieCLI("ipam", "show", "--ip", cl.Status.PodIP)
		if strings.Contains(out, "not assigned") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after pod client was deleted, its address: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := c.tortieCLI("get", "workloadendpoints", "-A"); strings.Contains(out, " client ") {
		t.Errorf("pod client's WorkloadEndpoint is still there:\n%s", out)
	}

	// A node drained and deleted: its Calico Node goes, its block is
	// released; IPAM stays consistent.
	gone := hosts[2]
	c.kubectl("drain", gone.Node, "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout", "2m")
	c.kubectl("delete", "node", gone.Node)
	deadline = time.Now().Add(time.Minute)
	for {
		nodesOut := c.tortieCLI("get", "nodes")
		blocksOut := c.tortieCLI("ipam", "show", "--show-blocks")
		if !strings.Contains(nodesOut, gone.Node) && !strings.Contains(blocksOut, blocks[gone.Node].String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after node %s was deleted:\n%s\n%s", gone.Node, nodesOut, blocksOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := c.tortieCLI("ipam", "check"); !strings.Contains(out, "found 0 problems") {
		t.Errorf("ipam check after the node's deletion:\n%s", out)
	}
	c.kubectl("rollout", "status", "deployment/echo", "--timeout", "3m")
}

// agentRestarts: while the client streams to pod b (on host h) through an
// established connection and pod a keeps trying a flow the policy denies
// to b, h's tortie-node pod is deleted (the DaemonSet makes a new one),
// then the new pod's agent is SIGKILLed (the kubelet restarts it). The
// stream loses nothing, the denied flow never connects, and h's nftables
// table keeps b's rules throughout: no restart flushes them.
func (c *cluster) agentRestarts(h lab.Host, client, a, b corev1.Pod) {
	t := c.t
	t.Helper()
	iface := ""
	for _, l := range strings.Split(c.tortieCLI("get", "workloadendpoints", "-n", "default", "-o", "wide"), "\n") {
		if strings.Contains(l, b.Name) {
			for _, f := range strings.Fields(l) {
				if strings.HasPrefix(f, "cali") {
					iface = f
				}
			}
		}
	}
	if iface == "" {
		t.Fatalf("no interface of %s in tortie get workloadendpoints", b.Name)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	note := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// The established flow.
	const streamFor = 30 * time.Second
	var streamOut string
	var streamErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		cmd := exec.Command(filepath.Join(bins(t), "tortie"), "lab", "--name", c.name, "kubectl", "--",
			"exec", client.Name, "--", "/usr/bin/echoserver", "stream", b.Status.PodIP+":8081", streamFor.String())
		cmd.Env = envWithoutEtcd()
		out, err := cmd.CombinedOutput()
		streamOut, streamErr = string(out), err
	}()
	// poll calls f in a goroutine of wg until stop: back to back, or with
	// a pause of every before each call.
	poll := func(every time.Duration, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if every > 0 {
					select {
					case <-stop:
						return
					case <-time.After(every):
					}
				}
				f()
			}
		}()
	}
	// The denied flow, and the rules, sampled until stop.
	var denied, samples int
	poll(0, func() {
		if out, err := c.get(a.Name, "http://"+b.Status.PodIP+":8080/", time.Second); err == nil {
			note("denied flow %s -> %s connected during the restarts: %q", a.Name, b.Name, out)
		}
		denied++
	})
	poll(100*time.Millisecond, func() {
		out, err := exec.Command("ip", "netns", "exec", h.Netns, "nft", "list", "table", "inet", "tortie").CombinedOutput()
		if err != nil || !strings.Contains(string(out), iface) {
			note("table inet tortie of %s without %s's rules (%v) during the restarts", h.Name, iface, err)
		}
		samples++
	})
	t0 := time.Now()
	agentPod := func() corev1.Pod {
		var l corev1.PodList
		if err := json.Unmarshal([]byte(kubectl(t, c.name, "", "get", "pods", "-n", lab.TortieNamespace, "-l", "k8s-app=tortie-node",
			"--field-selector", "spec.nodeName="+h.Node, "-o", "json")), &l); err != nil || len(l.Items) == 0 {
			t.Fatalf("tortie-node pod of %s: %v", h.Node, err)
		}
		return l.Items[0]
	}
	time.Sleep(3 * time.Second)
	old := agentPod()
	kubectl(t, c.name, "", "delete", "pod", "-n", lab.TortieNamespace, old.Name, "--wait")
	kubectl(t, c.name, "", "rollout", "status", "-n", lab.TortieNamespace, "daemonset/tortie-node", "--timeout", "2m")
	t.Logf("tortie-node pod %s deleted; the DaemonSet's new one ready %v later", old.Name, time.Since(t0).Round(time.Millisecond))
	// SIGKILL the new pod's agent: the process tortie-node in h's network
	// namespace.
	nsIno := inode(t, filepath.Join("/run/netns", h.Netns))
	killed := 0
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		if !strings.HasPrefix(string(cmdline), "/usr/bin/tortie-node\x00") && string(cmdline) != "/usr/bin/tortie-node" {
			continue
		}
		if inode(t, filepath.Join(p, "ns", "net")) == nsIno {
			if err := exec.Command("kill", "-KILL", filepath.Base(p)).Run(); err == nil {
				killed++
			}
		}
	}
	if killed != 1 {
		t.Errorf("SIGKILLed %d tortie-node processes in %s, want 1", killed, h.Netns)
	}
	t1 := time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p := agentPod()
		ready := false
		for _, cs := range p.Status.ContainerStatuses {
			ready = cs.Ready && cs.RestartCount > 0
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tortie-node on %s not ready again 2 minutes after SIGKILL", h.Node)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("its agent SIGKILLed; the restarted container ready %v later", time.Since(t1).Round(time.Millisecond))
	time.Sleep(time.Until(t0.Add(streamFor + 2*time.Second)))
	close(stop)
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	if streamErr != nil || !strings.HasPrefix(streamOut, "sent=") {
		t.Errorf("the established flow %s -> %s:8081 did not survive: %v\n%s", client.Name, b.Name, streamErr, streamOut)
	}
	t.Logf("through both restarts: stream %s; %d denied probes, none connected; %d looks at the rules, none without them", strings.TrimSpace(streamOut), denied, samples)
}

// inode is the inode number of a namespace file.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "doc.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkNodeTraces fails on a cgroup or mount of the lab's nodes left
// behind.
func checkNodeTraces(t *testing.T, name string) {
	t.Helper()
	if m, _ := filepath.Glob("/sys/fs/cgroup/*/tortie-" + name + "-*"); len(m) > 0 {
		t.Errorf("cgroups left by lab %s's nodes: %v", name, m)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, lab.Dir(name)) {
			t.Errorf("mount left by lab %s's nodes: %s", name, l)
		}
	}
}
