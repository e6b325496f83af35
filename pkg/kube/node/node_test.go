package node_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/images"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/kube/node"
)

// requireTools skips (fails under CI) without what a real node needs.
func requireTools(t *testing.T) (cniPlugins []string) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, b := range []string{"kube-apiserver", "kubectl", "kube-controller-manager", "kube-scheduler", "kubelet"} {
		if _, err := apiserver.Binary(b); err != nil {
			testenv.Missing(t, err.Error())
		}
	}
	for _, b := range []string{"containerd", "ctr", "runc", "nsenter", "go"} {
		if _, err := exec.LookPath(b); err != nil {
			testenv.Missing(t, b+" (scripts/install-deps.sh)")
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		testenv.Missing(t, "cgroup v1 hierarchies under /sys/fs/cgroup")
	}
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(file), "..", "..", "..", "bin")
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		f := filepath.Join(bin, p)
		if _, err := os.Stat(f); err != nil {
			testenv.Missing(t, "the CNI plugin "+f+" (scripts/install-tools.sh)")
		}
		cniPlugins = append(cniPlugins, f)
	}
	return cniPlugins
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	return testenv.Sh(t, args...)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// pickSubnet is a /24 of 10.200.0.0/13 no route of the root namespace
// touches.
func pickSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	routes := sh(t, "ip", "-4", "route", "show", "table", "all")
	for range 50 {
		b := make([]byte, 2)
		_, _ = rand.Read(b)
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%8, b[1], 0}), 24)
		if !strings.Contains(routes, strings.TrimSuffix(pfx.Addr().String(), ".0")+".") {
			return pfx
		}
	}
	t.Fatal("no free /24 in 10.200.0.0/13")
	return netip.Prefix{}
}

type testNode struct {
	name, ip, netns string
	n               *node.Node
}

// TestTwoNodes runs a control plane and two nodes, each in a network
// namespace of its own behind a bridge of the root namespace, with the
// reference bridge CNI plugin; a pod on each, exec, logs, pod to pod
// across nodes; then Down leaves nothing.
func TestTwoNodes(t *testing.T) {
	plugins := requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	id := randHex(3)
	subnet := pickSubnet(t)
	brIP := subnet.Addr().Next()
	bridge := "tkb" + id

	// Root namespace bridge; the API server listens there.
	sh(t, "ip", "link", "add", bridge, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", bridge).Run() })
	sh(t, "ip", "addr", "add", brIP.String()+"/24", "dev", bridge)
	sh(t, "ip", "link", "set", bridge, "up")

	nodes := make([]*testNode, 2)
	ip := brIP
	for i := range nodes {
		ip = ip.Next()
		_, nsName := testenv.NewNS(t)
		tn := &testNode{name: fmt.Sprintf("n%d-%s", i+1, id), ip: ip.String(), netns: nsName}
		nodes[i] = tn
		veth := fmt.Sprintf("tkv%s%d", id, i)
		sh(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", nsName)
		sh(t, "ip", "link", "set", veth, "master", bridge, "up")
		sh(t, "ip", "-n", nsName, "link", "set", "lo", "up")
		sh(t, "ip", "-n", nsName, "addr", "add", tn.ip+"/24", "dev", "eth0")
		sh(t, "ip", "-n", nsName, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", nsName, "route", "add", "default", "via", brIP.String())
		sh(t, "ip", "netns", "exec", nsName, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}

	// Control plane.
	etcd := etcdtest.Start(t)
	users := append(apiserver.ControlPlaneUsers(), apiserver.User{Name: "system:kube-proxy"})
	for _, n := range nodes {
		users = append(users, apiserver.User{Name: "system:node:" + n.name, Groups: []string{"system:nodes"}})
	}
	t0 := time.Now()
	srv, err := apiserver.Start(ctx, apiserver.Config{Dir: t.TempDir(), EtcdServers: []string{etcd.Endpoint()},
		BindAddress: "0.0.0.0", AdvertiseAddress: brIP.String(), Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	const clusterCIDR = "10.244.0.0/16"
	cp, err := srv.StartControlPlane(ctx, apiserver.ControlPlaneConfig{ClusterCIDR: clusterCIDR})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop(context.Background()) })
	t.Logf("apiserver + controller manager + scheduler healthy in %s", time.Since(t0).Round(time.Millisecond))
	client, err := kubernetes.NewForConfig(srv.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}

	imgs, err := node.BuildTestImages(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	// What the machine looked like before the nodes.
	before := snapshot(t)

	// Nodes, started together.
	t1 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, tn := range nodes {
		kc, err := srv.Kubeconfig("system:node:" + tn.name)
		if err != nil {
			t.Fatal(err)
		}
		kpc, err := srv.Kubeconfig("system:kube-proxy")
		if err != nil {
			t.Fatal(err)
		}
		cfg := node.Config{Name: tn.name, Dir: filepath.Join(t.TempDir(), tn.name), Netns: tn.netns, NodeIP: tn.ip,
			Kubeconfig: kc, KubeProxyKubeconfig: kpc, ClusterCIDR: clusterCIDR, CNIPlugins: plugins,
			CgroupRoot: "/tortie-test-" + tn.name}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tn.n, errs[i] = node.Start(ctx, cfg, false, imgs.Archives()...)
		}()
	}
	wg.Wait()
	for i, tn := range nodes {
		if tn.n != nil {
			t.Cleanup(func() {
				if err := tn.n.Stop(context.Background()); err != nil {
					t.Error(err)
				}
			})
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	t.Logf("nodes' containerd + kubelet started, images imported, in %s", time.Since(t1).Round(time.Millisecond))

	// A CNI installer's work: each node's conflist from its pod CIDR, and
	// routes to the other nodes' pod CIDRs.
	cidrs := map[string]string{}
	for _, tn := range nodes {
		var cidr string
		for cidr == "" {
			n, err := client.CoreV1().Nodes().Get(ctx, tn.name, metav1.GetOptions{})
			if err == nil {
				cidr = n.Spec.PodCIDR
			}
			if cidr == "" {
				select {
				case <-ctx.Done():
					t.Fatalf("node %s: no pod CIDR: %v", tn.name, err)
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
		cidrs[tn.name] = cidr
		if err := tn.n.Plan.SetCNIConfig(bridgeConf(t, cidr)); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				sh(t, "ip", "-n", a.netns, "route", "add", cidrs[b.name], "via", b.ip)
			}
		}
	}
	for _, tn := range nodes {
		if _, err := waitReady(ctx, client, tn.name); err != nil {
			t.Fatalf("%v\nkubelet log:\n%s", err, tailFile(tn.n.Plan.Kubelet.LogFile, 30))
		}
	}
	t.Logf("both nodes Ready %s after they started", time.Since(t1).Round(time.Millisecond))

	// A pod on each node.
	t2 := time.Now()
	pods := make([]*corev1.Pod, len(nodes))
	for i, tn := range nodes {
		pod := echoPod("echo-"+strconv.Itoa(i+1), tn.name)
		for {
			_, err := client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
			if err == nil {
				break
			}
			// The default ServiceAccount comes with the controller manager.
			if !strings.Contains(err.Error(), "serviceaccount") || ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for i := range nodes {
		pods[i] = waitPodReady(ctx, t, client, "echo-"+strconv.Itoa(i+1))
		if pods[i].Spec.NodeName != nodes[i].name {
			t.Errorf("pod %s on %s, want %s", pods[i].Name, pods[i].Spec.NodeName, nodes[i].name)
		}
	}
	t.Logf("pods Ready %s after creation: %s on %s, %s on %s", time.Since(t2).Round(time.Millisecond),
		pods[0].Status.PodIP, pods[0].Spec.NodeName, pods[1].Status.PodIP, pods[1].Spec.NodeName)

	// kubectl exec on node 1, to the pod on node 2; then the other way.
	admin := srv.AdminKubeconfig()
	for i := range pods {
		from, to := pods[i], pods[1-i]
		out, err := apiserver.Kubectl(ctx, admin, "exec", from.Name, "--", "/usr/bin/echoserver", "get", "http://"+to.Status.PodIP+":8080/")
		if err != nil {
			t.Fatal(err)
		}
		if want := "host=" + to.Name + " client=" + from.Status.PodIP + ":"; !strings.HasPrefix(out, want) {
			t.Errorf("%s -> %s: got %q, want %q...", from.Name, to.Name, out, want)
		}
	}
	// A ClusterIP Service of pod 2, through kube-proxy (nftables) on node 1.
	svc, err := client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-2"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "echo-2"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		out, err := apiserver.Kubectl(ctx, admin, "exec", pods[0].Name, "--", "/usr/bin/echoserver", "get", "http://"+svc.Spec.ClusterIP+"/")
		if err == nil && strings.HasPrefix(out, "host="+pods[1].Name+" ") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("service %s from %s: %q %v", svc.Spec.ClusterIP, pods[0].Name, out, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	logs, err := apiserver.Kubectl(ctx, admin, "logs", pods[1].Name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs, pods[0].Status.PodIP+":") || !strings.Contains(logs, "echoserver "+pods[1].Name) {
		t.Errorf("logs of %s lack the request from %s:\n%s", pods[1].Name, pods[0].Status.PodIP, logs)
	}

	// Memory of each node: containerd, kubelet, the shims.
	for _, tn := range nodes {
		t.Logf("node %s: %s", tn.name, nodeMemory(tn.n))
	}

	// Down, then the machine is as it was.
	t3 := time.Now()
	for _, tn := range nodes {
		rec := tn.n.Record()
		if err := node.Down(ctx, rec); err != nil {
			t.Fatal(err)
		}
		checkGone(t, rec)
	}
	t.Logf("both nodes down in %s", time.Since(t3).Round(time.Millisecond))
	if after := snapshot(t); after != before {
		t.Errorf("machine changed by the nodes:\nbefore: %s\nafter:  %s", before, after)
	}
}

func bridgeConf(t *testing.T, cidr string) []byte {
	t.Helper()
	pfx := netip.MustParsePrefix(cidr)
	gw := pfx.Addr().Next()
	return fmt.Appendf(nil, `{
  "cniVersion": "1.0.0",
  "name": "tortie-test",
  "plugins": [
    {"type": "bridge", "bridge": "cbr0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}
`, cidr, gw.String())
}

func echoPod(name, nodeName string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": nodeName},
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name:            "echo",
				Image:           images.EchoServerRef,
				ImagePullPolicy: corev1.PullNever,
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

func waitPodReady(ctx context.Context, t *testing.T, client kubernetes.Interface, name string) *corev1.Pod {
	t.Helper()
	last := ""
	for {
		p, err := client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return p
				}
			}
			last = fmt.Sprintf("phase %s, conditions %v, statuses %v", p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
		}
		select {
		case <-ctx.Done():
			ev, _ := client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
			var msgs []string
			if ev != nil {
				for _, e := range ev.Items {
					msgs = append(msgs, e.Reason+": "+e.Message)
				}
			}
			t.Fatalf("pod %s not Ready: %s\nevents:\n%s", name, last, strings.Join(msgs, "\n"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// snapshot is the machine-wide state the nodes could change: the cgroups
// at the hierarchies' roots.
func snapshot(t *testing.T) string {
	t.Helper()
	var cgs []string
	for _, h := range []string{"memory", "pids", "cpuset", "systemd"} {
		ents, _ := os.ReadDir("/sys/fs/cgroup/" + h)
		for _, e := range ents {
			if e.IsDir() && strings.HasPrefix(e.Name(), "tortie-test-") {
				cgs = append(cgs, h+":"+e.Name())
			}
		}
	}
	return fmt.Sprintf("test cgroups %v", cgs)
}

func checkGone(t *testing.T, r node.Record) {
	t.Helper()
	for _, p := range r.Procs {
		if p.Alive() {
			t.Errorf("%s (%d) still runs", p.Role, p.PID)
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(cmdline), r.Dir) {
			t.Errorf("process %s left: %q", e.Name(), cmdline)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, r.Dir) {
			t.Errorf("mount under %s left: %s", r.Dir, l)
		}
	}
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + r.CgroupRoot)
	if len(dirs) > 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
	if err := node.Down(context.Background(), r); err != nil {
		t.Errorf("Down again: %v", err)
	}
}

// nodeMemory is the resident memory of a node's processes.
func nodeMemory(n *node.Node) string {
	var parts []string
	total := 0
	for _, p := range n.Procs() {
		kb := rssKB(p.PID)
		total += kb
		parts = append(parts, fmt.Sprintf("%s %d MiB", p.Role, kb>>10))
	}
	// Shims and pods under the cgroup root, besides containerd.
	shims := 0
	b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", n.Plan.Config.CgroupRoot, "containerd", "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		if pid != n.Procs()[0].PID {
			shims += rssKB(pid)
		}
	}
	total += shims
	parts = append(parts, fmt.Sprintf("shims %d MiB", shims>>10))
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", n.Plan.Config.CgroupRoot, "memory.usage_in_bytes")); err == nil {
		u, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		parts = append(parts, fmt.Sprintf("cgroup root usage (with page cache, pods) %d MiB", u>>20))
	}
	return fmt.Sprintf("RSS %d MiB (%s)", total>>10, strings.Join(parts, ", "))
}

func rssKB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitReady waits until Node name is Ready and returns it. (A test
// helper: the package itself does not link the Kubernetes clientset, whose
// start-up cost every `tortie` command would pay.)
func waitReady(ctx context.Context, client kubernetes.Interface, name string) (*corev1.Node, error) {
	last := "not registered"
	for {
		n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = "no Ready condition"
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return n, nil
					}
					last = fmt.Sprintf("Ready=%s: %s", c.Status, c.Message)
				}
			}
		} else if ctx.Err() == nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s not Ready (%v): %s", name, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
