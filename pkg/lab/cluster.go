package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"

	"github.com/tortie/tortie/deploy"
	"github.com/tortie/tortie/pkg/apis/k8s"
	"github.com/tortie/tortie/pkg/images"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/kube/node"
)

// A lab with Options.Kubernetes (`tortie lab up --kubernetes`) is a real
// Kubernetes cluster whose network is tortie, installed as an operator
// installs it: every host is a Kubernetes node (containerd, a kubelet and
// an nftables kube-proxy in the host's network namespace, package
// kube/node), a control plane (kube-apiserver on the lab's etcd under
// /registry, kube-controller-manager, kube-scheduler) runs in the root
// namespace beside the datastore, the images of `make images` (tortie's
// and the test images) are imported into every node's containerd, and then
// tortie is installed by `kubectl apply -f deploy/tortie.yaml` alone, the
// ConfigMap's etcd_endpoints pointed at the lab's etcd. Nothing of tortie
// runs outside Kubernetes: the agents are the DaemonSet's pods, the
// controllers the Deployment's. The lab's own configuration (its IP pool,
// BGP configuration and peers of the topology) is written to the datastore
// before, as an operator would with calicoctl; tortie-node then makes no
// default pool.

// Process roles of a Kubernetes cluster lab (beside roleKubeAPIServer).
const (
	roleKubeControllerManager = "kube-controller-manager"
	roleKubeScheduler         = "kube-scheduler"
)

// TortieNamespace is where deploy/tortie.yaml puts tortie's pods.
const TortieNamespace = "kube-system"

// clusterHealthPort is where the DaemonSet's agents answer /readiness and
// their status, on each node's loopback (FELIX_HEALTHPORT of the manifest).
const clusterHealthPort = 9099

// KubeNode is a node of a --kubernetes lab: what Down needs to remove it.
type KubeNode struct {
	Host   string      `json:"host"`
	Record node.Record `json:"record"`
}

// resolveCluster finds what --kubernetes needs: the Kubernetes binaries
// (scripts/build-kubernetes.sh's cache), containerd and runc, the loopback
// CNI plugin containerd calls for every pod, and the images.
func (o *Options) resolveCluster() error {
	if o.KubeAPI {
		return errors.New("--kubernetes and --kube-api: give one (--kubernetes runs a whole cluster, its API server included)")
	}
	if o.IPv6 {
		return errors.New("--kubernetes: IPv6 is not supported yet (deploy/tortie.yaml sets FELIX_IPV6SUPPORT=false)")
	}
	b := &o.Bins
	for _, f := range []struct {
		p    *string
		name string
	}{{&b.KubeAPIServer, "kube-apiserver"}, {&b.Kubectl, "kubectl"}} {
		if *f.p == "" {
			p, err := apiserver.Binary(f.name)
			if err != nil {
				return fmt.Errorf("--kubernetes: %w", err)
			}
			*f.p = p
		}
	}
	for _, name := range []string{"kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler"} {
		if _, err := apiserver.Binary(name); err != nil {
			return fmt.Errorf("--kubernetes: %w", err)
		}
	}
	if b.Loopback == "" {
		for _, c := range []string{filepath.Join(filepath.Dir(b.Tortie), "loopback"), filepath.Join(node.CNIBinDir, "loopback")} {
			if isExec(c) {
				b.Loopback = c
				break
			}
		}
		if b.Loopback == "" {
			return fmt.Errorf("--kubernetes: the CNI loopback plugin (containerd calls it for every pod) is neither beside %s nor in %s: run `make deps`", b.Tortie, node.CNIBinDir)
		}
	}
	if o.Images == "" {
		o.Images = filepath.Join(filepath.Dir(b.Tortie), "images")
	}
	if abs, err := filepath.Abs(o.Images); err == nil {
		o.Images = abs
	}
	for _, a := range images.AllArchives {
		if _, err := os.Stat(filepath.Join(o.Images, a)); err != nil {
			return fmt.Errorf("--images %s: no %s (run `make images`, which writes bin/images)", o.Images, a)
		}
	}
	return nil
}

// clusterArchives are the archives every node imports: the images
// directory's, then the Kubernetes cache's, where the conformance suites'
// images are written (images/agnhost.tar for Kubernetes' e2e tests,
// images/cnp-conformance/agnhost.tar for network-policy-api's), when they
// have been built.
func (l *Lab) clusterArchives() []string {
	cache := filepath.Join(images.KubernetesCache(apiserver.Version), "images")
	var out []string
	for _, pattern := range []string{filepath.Join(l.st.Options.Images, "*.tar"), filepath.Join(cache, "*.tar"), filepath.Join(cache, "*", "*.tar")} {
		m, _ := filepath.Glob(pattern)
		sort.Strings(m)
		out = append(out, m...)
	}
	return out
}

// buildCluster is Up's Kubernetes part after the datastore and BIRD: the
// control plane, the nodes, tortie by kubectl apply, and the wait until
// every node is Ready and every tortie pod ready.
func (l *Lab) buildCluster(ctx context.Context) error {
	st := l.st
	l.step("starting the Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler)")
	users := append(apiserver.ControlPlaneUsers(), apiserver.User{Name: "system:kube-proxy"})
	for _, h := range st.Hosts {
		users = append(users, apiserver.User{Name: "system:node:" + h.Node, Groups: []string{"system:nodes"}})
	}
	prep, err := l.startKubeAPI(ctx, users)
	if err != nil {
		return err
	}
	if err := l.startControlPlane(ctx, prep); err != nil {
		return err
	}
	archives := l.clusterArchives()
	l.step(fmt.Sprintf("starting %d nodes (containerd, kubelet, kube-proxy) and importing %d images into each", len(st.Hosts), len(archives)))
	if err := l.startNodes(ctx, prep, archives); err != nil {
		return err
	}
	l.step("installing tortie: kubectl apply -f deploy/tortie.yaml")
	if err := l.installTortie(ctx); err != nil {
		return err
	}
	l.step("waiting for every node Ready and every tortie pod ready")
	return l.waitCluster(ctx, l.clusterTimeout())
}

func (l *Lab) clusterTimeout() time.Duration {
	if t := l.st.Options.Timeout; t > 0 {
		return t
	}
	return DefaultClusterTimeout
}

// DefaultClusterTimeout bounds each wait of a --kubernetes lab (the
// control plane, the nodes, tortie's pods): cold kubelets and image
// imports on a busy machine are slow.
const DefaultClusterTimeout = 5 * time.Minute

// startControlPlane runs kube-controller-manager and kube-scheduler as lab
// processes and waits until both are healthy.
func (l *Lab) startControlPlane(ctx context.Context, prep *apiserver.Prepared) error {
	comps, err := prep.ControlPlane(apiserver.ControlPlaneConfig{})
	if err != nil {
		return err
	}
	procs := make([]Proc, len(comps))
	for i, c := range comps {
		p, err := spawn(ctx, c.Name, c.Name, "", c.LogFile, nil, c.Argv...)
		if err != nil {
			return err
		}
		l.st.Procs = append(l.st.Procs, p)
		if err := l.save(); err != nil {
			return err
		}
		procs[i] = p
	}
	for i, c := range comps {
		wctx, cancel := context.WithTimeout(ctx, l.clusterTimeout())
		err := apiserver.WaitHealthy(wctx, c.HealthzURL)
		cancel()
		if err != nil {
			if !procs[i].alive() {
				return exited(procs[i])
			}
			if ctx.Err() != nil {
				return interrupted(ctx)
			}
			return fmt.Errorf("%s: %w%s", c.Name, err, logTail(procs[i]))
		}
	}
	return nil
}

func (l *Lab) nodeDir(h Host) string { return filepath.Join(Dir(l.st.Name), "nodes", h.Name) }

// startNodes makes every host a node, all at once. Each node's record is
// saved before it starts (Down finds what it started through its cgroup
// root even if this process dies meanwhile), and again with its
// processes.
func (l *Lab) startNodes(ctx context.Context, prep *apiserver.Prepared, archives []string) error {
	st := l.st
	cfgs := make([]node.Config, len(st.Hosts))
	for i, h := range st.Hosts {
		cfgs[i] = node.Config{Name: h.Node, Dir: l.nodeDir(h), Netns: h.Netns, NodeIP: h.Addr,
			Kubeconfig:          prep.Kubeconfigs["system:node:"+h.Node],
			KubeProxyKubeconfig: prep.Kubeconfigs["system:kube-proxy"],
			ClusterCIDR:         st.Options.Pool,
			CNIPlugins:          []string{st.Options.Bins.Loopback},
			NodeLabels:          []string{"tortie.dev/lab-host=" + h.Name},
		}
		plan, err := node.Prepare(cfgs[i])
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		st.Kube.Nodes = append(st.Kube.Nodes, KubeNode{Host: h.Name, Record: plan.Record()})
	}
	if err := l.save(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(cfgs))
	started := make([]*node.Node, len(cfgs))
	for i := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started[i], errs[i] = node.Start(ctx, cfgs[i], true, archives...)
		}()
	}
	wg.Wait()
	for i, n := range started {
		if n != nil {
			st.Kube.Nodes[i].Record = n.Record()
		}
	}
	if err := l.save(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return interrupted(ctx)
	}
	return errors.Join(errs...)
}

// etcdEndpointsLine is the ConfigMap's line the lab rewrites.
var etcdEndpointsLine = regexp.MustCompile(`(?m)^(\s*etcd_endpoints:\s*).*$`)

// ClusterManifest is deploy/tortie.yaml with the ConfigMap's etcd_endpoints
// set to endpoints: the one edit docs/kubernetes.md asks of an operator.
func ClusterManifest(endpoints string) ([]byte, error) {
	if n := len(etcdEndpointsLine.FindAll(deploy.Manifest, -1)); n != 1 {
		return nil, fmt.Errorf("deploy/tortie.yaml: %d etcd_endpoints lines, want one", n)
	}
	q, _ := json.Marshal(endpoints)
	return etcdEndpointsLine.ReplaceAll(deploy.Manifest, append([]byte("${1}"), bytes.ReplaceAll(q, []byte("$"), []byte("$$"))...)), nil
}

// ManifestFile is where a --kubernetes lab keeps the manifest it applied.
func ManifestFile(lab string) string { return filepath.Join(Dir(lab), "tortie.yaml") }

// installTortie applies the manifest with kubectl.
func (l *Lab) installTortie(ctx context.Context) error {
	m, err := ClusterManifest(l.st.Endpoint)
	if err != nil {
		return err
	}
	path := ManifestFile(l.st.Name)
	if err := os.WriteFile(path, m, 0o644); err != nil {
		return err
	}
	cmd, err := l.KubectlCommand(ctx, "apply", "-f", path)
	if err != nil {
		return err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return interrupted(ctx)
		}
		return fmt.Errorf("kubectl apply -f %s: %v\n%s", path, err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		l.logf("  %s", line)
	}
	return nil
}

// ClusterStatus is what the Kubernetes API says of a --kubernetes lab's
// nodes and of tortie's pods.
type ClusterStatus struct {
	Nodes []ClusterNode `json:"nodes"`
	Pods  []ClusterPod  `json:"pods"`
}

// ClusterNode is one Kubernetes Node.
type ClusterNode struct {
	Name    string `json:"name"`
	Ready   bool   `json:"ready"`
	Message string `json:"message,omitempty"`
}

// ClusterPod is one of tortie's pods.
type ClusterPod struct {
	Name     string `json:"name"`
	Node     string `json:"node"`
	Phase    string `json:"phase"`
	Ready    bool   `json:"ready"`
	Restarts int32  `json:"restarts"`
	IP       string `json:"ip,omitempty"`
}

// clusterStatus asks the API server.
func (l *Lab) clusterStatus(ctx context.Context) (*ClusterStatus, error) {
	kc, err := l.kube()
	if err != nil {
		return nil, err
	}
	defer kc.close()
	var nodes corev1.NodeList
	if err := kc.do(ctx, http.MethodGet, "/api/v1/nodes", nil, &nodes); err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := kc.do(ctx, http.MethodGet, "/api/v1/namespaces/"+TortieNamespace+"/pods?labelSelector=k8s-app+in+(tortie-node,tortie-kube-controllers)", nil, &pods); err != nil {
		return nil, err
	}
	cs := &ClusterStatus{}
	for _, n := range nodes.Items {
		cn := ClusterNode{Name: n.Name, Message: "no Ready condition"}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				cn.Ready, cn.Message = c.Status == corev1.ConditionTrue, c.Message
			}
		}
		cs.Nodes = append(cs.Nodes, cn)
	}
	for _, p := range pods.Items {
		cp := ClusterPod{Name: p.Name, Node: p.Spec.NodeName, Phase: string(p.Status.Phase), IP: p.Status.PodIP}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				cp.Ready = c.Status == corev1.ConditionTrue
			}
		}
		for _, c := range p.Status.ContainerStatuses {
			cp.Restarts += c.RestartCount
		}
		cs.Pods = append(cs.Pods, cp)
	}
	sort.Slice(cs.Nodes, func(i, j int) bool { return cs.Nodes[i].Name < cs.Nodes[j].Name })
	sort.Slice(cs.Pods, func(i, j int) bool { return cs.Pods[i].Name < cs.Pods[j].Name })
	return cs, nil
}

// notReady says what of cs is not yet as up wants it ("" when all is):
// every host's node Ready, a ready tortie-node pod on each, a ready
// tortie-kube-controllers pod.
func (l *Lab) notReady(cs *ClusterStatus) string {
	nodes := map[string]ClusterNode{}
	for _, n := range cs.Nodes {
		nodes[n.Name] = n
	}
	agents := map[string]bool{}
	controllers := false
	for _, p := range cs.Pods {
		switch {
		case strings.HasPrefix(p.Name, "tortie-node-"):
			agents[p.Node] = agents[p.Node] || p.Ready
		case strings.HasPrefix(p.Name, "tortie-kube-controllers-"):
			controllers = controllers || p.Ready
		}
	}
	for _, h := range l.st.Hosts {
		n, ok := nodes[h.Node]
		switch {
		case !ok:
			return fmt.Sprintf("node %s not registered", h.Node)
		case !n.Ready:
			return fmt.Sprintf("node %s not Ready: %s", h.Node, n.Message)
		case !agents[h.Node]:
			return fmt.Sprintf("no ready tortie-node pod on %s", h.Node)
		}
	}
	if !controllers {
		return "no ready tortie-kube-controllers pod"
	}
	return ""
}

// waitCluster waits until notReady says nothing, then until every agent's
// BGP sessions are Established.
func (l *Lab) waitCluster(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	why := "no answer yet"
	for {
		if dead := l.deadProcs(); len(dead) > 0 {
			return fmt.Errorf("%s stopped", strings.Join(dead, ", "))
		}
		if dead := l.deadNodeProcs(); len(dead) > 0 {
			return fmt.Errorf("%s stopped", strings.Join(dead, ", "))
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cs, err := l.clusterStatus(rctx)
		cancel()
		if err != nil {
			why = err.Error()
		} else if why = l.notReady(cs); why == "" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready within %v: %s (kubectl: `tortie lab kubectl --name %s get pods -A -o wide`; node logs under %s)", timeout, why, l.st.Name, filepath.Join(Dir(l.st.Name), "nodes"))
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return interrupted(ctx)
		}
	}
	// The controllers are working once they have written the namespaces'
	// profiles (a Ready pod may still wait for its Lease).
	if err := l.waitProfiles(ctx, time.Until(deadline), k8s.NamespaceProfileName("default"), k8s.NamespaceProfileName(TortieNamespace)); err != nil {
		return err
	}
	return l.waitConverged(ctx, time.Until(deadline))
}

// deadNodeProcs are the nodes' processes that have ended.
func (l *Lab) deadNodeProcs() []string {
	if l.st.Kube == nil {
		return nil
	}
	var dead []string
	for _, kn := range l.st.Kube.Nodes {
		for _, p := range kn.Record.Procs {
			if !p.Alive() {
				dead = append(dead, fmt.Sprintf("%s of host %s (pid %d; log %s)", p.Role, kn.Host, p.PID, filepath.Join(kn.Record.Dir, "log", p.Role+".log")))
			}
		}
	}
	return dead
}

// downNodes removes every node (its pods, containerd, kubelet, mounts and
// cgroups), all at once.
func (l *Lab) downNodes(ctx context.Context) error {
	if l.st.Kube == nil {
		return nil
	}
	nodes := l.st.Kube.Nodes
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, kn := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := node.Down(ctx, kn.Record); err != nil {
				errs[i] = fmt.Errorf("node of host %s: %w", kn.Host, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// nsHTTPClient is an HTTP client whose connections are made in the
// network namespace at path (a node's loopback: the DaemonSet's agents
// answer on 127.0.0.1 there).
func nsHTTPClient(path string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		netns, err := ns.GetNS(path)
		if err != nil {
			return nil, err
		}
		defer netns.Close()
		var conn net.Conn
		var derr error
		if err := netns.Do(func(ns.NetNS) error {
			var d net.Dialer
			conn, derr = d.DialContext(ctx, network, addr)
			return nil
		}); err != nil {
			return nil, err
		}
		return conn, derr
	}
	return &http.Client{Timeout: httpClient.Timeout, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}
