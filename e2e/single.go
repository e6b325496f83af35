package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/cli"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
)

// MarkerDir holds one file per running suite (its ID): the test process's
// PID and the agent's, so that a later run can clean up after a run that
// was killed before it could.
const MarkerDir = "/run/tortie-e2e"

// SingleHostOptions configure NewSingleHost.
type SingleHostOptions struct {
	// BinDir holds tortie-node and tortie-cni.
	BinDir string
	// PoolCIDR is the IPv4 pool the workloads get addresses from.
	PoolCIDR string
	// AgentArgs are extra tortie-node flags.
	AgentArgs []string
	// Logf receives progress messages (default: none).
	Logf func(format string, args ...any)
}

// SingleHost is a Cluster on one host network namespace.
type SingleHost struct {
	opts     SingleHostOptions
	id       string
	dir      string
	node     string
	poolName string
	pool     netip.Prefix

	host    *Host
	outside *Place
	rootIf  string
	rootIP  netip.Addr
	nsNames []string

	srv     *embedded.Server
	be      *datastore.Etcd
	cl      *client.Client
	etcdURL string

	cniPath, cacheDir string
	netconf           *libcni.NetworkConfigList

	agent     *exec.Cmd
	agentDone chan struct{}
	agentLog  string

	servers Servers

	mu         sync.Mutex
	pods       []*Pod
	lastChange time.Time
	mark       metricsSample
	baseline   []v3.Resource // kns.* profiles and pools at Baseline
	undo       []func()      // LIFO teardown
}

var _ Cluster = (*SingleHost)(nil)

func randID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// NewSingleHost builds the host, the outside, the datastore and the agent.
// On error everything made so far is removed.
func NewSingleHost(opts SingleHostOptions) (_ *SingleHost, err error) {
	if opts.PoolCIDR == "" {
		opts.PoolCIDR = "10.248.0.0/16"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	c := &SingleHost{opts: opts, id: randID(3)}
	c.node = "e2e-" + c.id + "-h1"
	c.poolName = "e2e-" + c.id
	if c.pool, err = netip.ParsePrefix(opts.PoolCIDR); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.dir, err = os.MkdirTemp("", "tortie-e2e-"+c.id+"-"); err != nil {
		return nil, err
	}
	c.onClose(func() { os.RemoveAll(c.dir) })
	if err := c.writeMarker(); err != nil {
		return nil, err
	}
	if err := c.buildNetwork(); err != nil {
		return nil, err
	}
	if err := c.startDatastore(); err != nil {
		return nil, err
	}
	if err := c.setupCNI(); err != nil {
		return nil, err
	}
	if err := c.startAgent(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *SingleHost) onClose(f func()) { c.mu.Lock(); c.undo = append(c.undo, f); c.mu.Unlock() }

// Close removes everything the cluster made, in reverse order.
func (c *SingleHost) Close() {
	c.mu.Lock()
	undo := c.undo
	c.undo = nil
	c.mu.Unlock()
	for i := len(undo) - 1; i >= 0; i-- {
		undo[i]()
	}
}

func (c *SingleHost) writeMarker() error {
	if err := os.MkdirAll(MarkerDir, 0o755); err != nil {
		return err
	}
	p := filepath.Join(MarkerDir, c.id)
	if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	c.onClose(func() { os.Remove(p) })
	return nil
}

// CleanStale removes what suites killed before their cleanup left: for
// every marker whose test process is gone, its agent (if that PID still is
// a tortie-node), its network namespaces and its root veth.
func CleanStale(logf func(string, ...any)) {
	ents, _ := os.ReadDir(MarkerDir)
	for _, e := range ents {
		id := e.Name()
		b, err := os.ReadFile(filepath.Join(MarkerDir, id))
		if err != nil {
			continue
		}
		lines := strings.Fields(string(b))
		if len(lines) == 0 {
			continue
		}
		if pid, err := strconv.Atoi(lines[0]); err == nil && syscall.Kill(pid, 0) == nil {
			continue // still running
		}
		logf("cleaning up after killed run %s", id)
		for _, l := range lines[1:] {
			pid, err := strconv.Atoi(strings.TrimPrefix(l, "agent="))
			if err != nil {
				continue
			}
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(cmd, []byte("tortie-node")) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "te2e-"+id+"-") {
					_ = exec.Command("ip", "netns", "del", f[0]).Run()
				}
			}
		}
		_ = exec.Command("ip", "link", "del", "te2e"+id+"m").Run()
		if dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "tortie-e2e-"+id+"-*")); len(dirs) > 0 {
			for _, d := range dirs {
				os.RemoveAll(d)
			}
		}
		os.Remove(filepath.Join(MarkerDir, id))
	}
}

func (c *SingleHost) newNetNS(suffix string) (ns.NetNS, string, error) {
	name := "te2e-" + c.id + "-" + suffix
	if err := run("ip", "netns", "add", name); err != nil {
		return nil, "", err
	}
	c.onClose(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	n, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		return nil, "", err
	}
	c.onClose(func() { n.Close() })
	if err := run("ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return nil, "", err
	}
	c.mu.Lock()
	c.nsNames = append(c.nsNames, name)
	c.mu.Unlock()
	return n, name, nil
}

// freeSubnet picks a /29 of 198.18.0.0/15 whose /24 no address of the root
// namespace is in: labs (this suite's and others') take whole /24s there.
func freeSubnet() (netip.Addr, error) {
	used := map[[3]byte]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			b := p.Addr().As4()
			used[[3]byte{b[0], b[1], b[2]}] = true
		}
	}
	for range 1000 {
		k := mrand.IntN(1 << 14)
		base := netip.AddrFrom4([4]byte{198, 18 + byte(k>>13), byte(k >> 5), byte(k<<3) & 0xf8})
		b := base.As4()
		if !used[[3]byte{b[0], b[1], b[2]}] {
			return base, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free /24 left in 198.18.0.0/15")
}

// buildNetwork: the host namespace, joined to the root namespace by the
// management veth (etcd, health, metrics) and to the outside namespace by
// its uplink. Addresses: a /29 of 198.18.0.0/15 per run; .1/.2 the
// management link, .5/.6 the uplink.
func (c *SingleHost) buildNetwork() error {
	base, err := freeSubnet()
	if err != nil {
		return err
	}
	at := func(n int) netip.Addr {
		a := base
		for range n {
			a = a.Next()
		}
		return a
	}
	c.rootIP = at(1)
	hostMgmt, hostUp, outIP := at(2), at(5), at(6)

	hn, hostName, err := c.newNetNS("h1")
	if err != nil {
		return err
	}
	on, outName, err := c.newNetNS("out")
	if err != nil {
		return err
	}
	c.host = &Host{Place: Place{Name: c.node, IP: hostUp, netns: hn}, Node: c.node, Uplink: "up0"}
	c.outside = &Place{Name: "outside", IP: outIP, netns: on}

	c.rootIf = "te2e" + c.id + "m"
	steps := [][]string{
		{"ip", "link", "add", c.rootIf, "type", "veth", "peer", "name", "mgmt0", "netns", hostName},
		{"ip", "addr", "add", c.rootIP.String() + "/30", "dev", c.rootIf},
		{"ip", "link", "set", c.rootIf, "up"},
		{"ip", "-n", hostName, "addr", "add", hostMgmt.String() + "/30", "dev", "mgmt0"},
		{"ip", "-n", hostName, "link", "set", "mgmt0", "up"},
		{"ip", "-n", hostName, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", outName},
		{"ip", "-n", hostName, "addr", "add", hostUp.String() + "/30", "dev", "up0"},
		{"ip", "-n", hostName, "link", "set", "up0", "up"},
		{"ip", "-n", outName, "addr", "add", outIP.String() + "/30", "dev", "eth0"},
		{"ip", "-n", outName, "link", "set", "eth0", "up"},
		// The host's default route goes out of the uplink: that is also
		// the route to 169.254.1.1 through another device than the
		// workloads' that proxy ARP needs.
		{"ip", "-n", hostName, "route", "add", "default", "via", outIP.String(), "dev", "up0"},
		{"ip", "netns", "exec", hostName, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "netns", "exec", hostName, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		// The outside routes the pool back to the host, so that traffic
		// that is not masqueraded is seen with the pod's address.
		{"ip", "-n", outName, "route", "add", c.pool.String(), "via", hostUp.String()},
	}
	for i, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
		if i == 0 {
			c.onClose(func() { _ = exec.Command("ip", "link", "del", c.rootIf).Run() })
		}
	}
	c.host.Place.Name = c.node
	return nil
}

func (c *SingleHost) startDatastore() error {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := embedded.Serve(context.Background(), embedded.ServeConfig{
		DataDir: filepath.Join(c.dir, "etcd"), ListenClientURL: "http://" + c.rootIP.String() + ":0", Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	c.srv = srv
	c.onClose(func() { srv.Close() })
	c.etcdURL = srv.Endpoint()
	be, err := datastore.New(datastore.Config{Endpoints: []string{c.etcdURL}, Logger: logger})
	if err != nil {
		return err
	}
	c.be = be
	c.onClose(func() { be.Close() })
	c.cl = client.New(be)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.cl.EnsureInitialized(ctx); err != nil {
		return err
	}
	// The Node (what node startup would register) and the pool.
	node := &v3.Node{TypeMeta: metav1.TypeMeta{Kind: v3.KindNode, APIVersion: v3.APIVersion}, ObjectMeta: metav1.ObjectMeta{Name: c.node}}
	if _, err := c.cl.Create(ctx, node); err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	pool := &v3.IPPool{TypeMeta: metav1.TypeMeta{Kind: v3.KindIPPool, APIVersion: v3.APIVersion},
		ObjectMeta: metav1.ObjectMeta{Name: c.poolName},
		Spec:       v3.IPPoolSpec{CIDR: c.pool.String(), BlockSize: 26}}
	if _, err := c.cl.Create(ctx, pool); err != nil {
		return fmt.Errorf("create pool: %w", err)
	}
	return nil
}

func (c *SingleHost) setupCNI() error {
	c.cniPath = filepath.Join(c.dir, "cni-bin")
	c.cacheDir = filepath.Join(c.dir, "cni-cache")
	if err := os.MkdirAll(c.cniPath, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(c.opts.BinDir, "tortie-cni")
	if _, err := os.Stat(bin); err != nil {
		return err
	}
	// The one binary under both its names, as an installer lays it out.
	if err := os.Symlink(bin, filepath.Join(c.cniPath, "tortie")); err != nil {
		return err
	}
	if err := os.Symlink(bin, filepath.Join(c.cniPath, "tortie-ipam")); err != nil {
		return err
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "e2e-" + c.id,
		"plugins": []any{map[string]any{
			"type":           "tortie",
			"etcd_endpoints": c.etcdURL,
			"nodename":       c.node,
			"log_file_path":  filepath.Join(c.dir, "cni.log"),
			"log_level":      "info",
			"capabilities":   map[string]bool{"labels": true},
			"ipam": map[string]any{
				"type": "tortie-ipam", "assign_ipv4": "true", "assign_ipv6": "false",
				"ipv4_pools": []string{c.pool.String()},
			},
		}},
	}
	b, _ := json.Marshal(conf)
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		return err
	}
	c.netconf = l
	return nil
}

func (c *SingleHost) hostNSName() string { return "te2e-" + c.id + "-h1" }

func (c *SingleHost) startAgent() error {
	c.agentLog = filepath.Join(c.dir, "agent.log")
	logf, err := os.Create(c.agentLog)
	if err != nil {
		return err
	}
	args := append([]string{"netns", "exec", c.hostNSName(), filepath.Join(c.opts.BinDir, "tortie-node"),
		"--node-name", c.node, "--etcd-endpoints", c.etcdURL, "--log-level", "info",
		"--health-addr", ":9099", "--metrics-addr", ":9091"}, c.opts.AgentArgs...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The agent dies with the test process, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	c.agent, c.agentDone = cmd, done
	marker := filepath.Join(MarkerDir, c.id)
	if f, err := os.OpenFile(marker, os.O_APPEND|os.O_WRONLY, 0); err == nil {
		fmt.Fprintf(f, "agent=%d\n", cmd.Process.Pid)
		f.Close()
	}
	c.onClose(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := c.httpGet(9099, "/readiness"); code == http.StatusOK {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("tortie-node exited:\n%s", c.AgentLogTail(4096))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tortie-node not ready within 30s:\n%s", c.AgentLogTail(4096))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AgentLogTail is the end of the agent's log.
func (c *SingleHost) AgentLogTail(n int) string {
	b, _ := os.ReadFile(c.agentLog)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// CNILogTail is the end of the CNI plugin's log.
func (c *SingleHost) CNILogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "cni.log"))
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

var httpClient = &http.Client{Timeout: time.Second}

func (c *SingleHost) httpGet(port int, path string) (int, string) {
	// The host's management address is the root veth's peer.
	resp, err := httpClient.Get(fmt.Sprintf("http://%s:%d%s", c.rootIP.Next(), port, path))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ---- Cluster ----

func (c *SingleHost) ID() string             { return c.id }
func (c *SingleHost) Hosts() []*Host         { return []*Host{c.host} }
func (c *SingleHost) Outside() *Place        { return c.outside }
func (c *SingleHost) Client() *client.Client { return c.cl }

// PoolName is the IPPool the workloads are in.
func (c *SingleHost) PoolName() string { return c.poolName }

func (c *SingleHost) Probe(from Source, to Target, port int, proto string, timeout time.Duration) bool {
	return Probe(from, to, port, proto, timeout)
}

func (c *SingleHost) LastChange() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastChange
}

// metricsSample is what Settle compares with.
type metricsSample struct {
	ok             bool
	updates, syncs float64
}

func (c *SingleHost) sample() metricsSample {
	code, body := c.httpGet(9091, "/metrics")
	if code != 200 {
		return metricsSample{}
	}
	return parseMetrics(body)
}

// changing is called before every write.
func (c *SingleHost) changing() {
	m := c.sample()
	c.mu.Lock()
	c.mark = m
	c.lastChange = time.Now()
	c.mu.Unlock()
}

func (c *SingleHost) Settle(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	m := c.mark
	c.mu.Unlock()
	if !m.ok {
		return
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		s := c.sample()
		if s.ok && s.updates > m.updates && s.syncs > m.syncs {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("settle: the agent reported no apply after the last change within 3s (going on: the probes decide)")
}

// tortie runs the CLI in-process against the cluster's datastore.
func (c *SingleHost) tortie(stdin string, args ...string) (string, error) {
	var out, errw bytes.Buffer
	root := cli.NewRootCommand(strings.NewReader(stdin), &out, &errw)
	root.SetArgs(append(args, "--etcd-endpoints", c.etcdURL))
	if err := root.Execute(); err != nil {
		return out.String(), fmt.Errorf("tortie %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errw.String())
	}
	return out.String(), nil
}

func (c *SingleHost) Apply(t testing.TB, manifest string) {
	t.Helper()
	c.changing()
	if _, err := c.tortie(manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\nmanifest:\n%s", err, manifest)
	}
}

func (c *SingleHost) Delete(t testing.TB, manifest string) {
	t.Helper()
	c.changing()
	if _, err := c.tortie(manifest, "delete", "-f", "-"); err != nil {
		t.Fatalf("%v\nmanifest:\n%s", err, manifest)
	}
}

func (c *SingleHost) Patch(t testing.TB, kind, namespace, name, patch string) {
	t.Helper()
	c.changing()
	args := []string{"patch", kind, name, "-p", patch}
	if namespace != "" {
		args = append(args, "-n", namespace)
	}
	if _, err := c.tortie("", args...); err != nil {
		t.Fatal(err)
	}
}

func (c *SingleHost) Get(t testing.TB, kind, namespace, name string) (string, bool) {
	t.Helper()
	args := []string{"get", kind, name, "-o", "yaml"}
	if namespace != "" {
		args = append(args, "-n", namespace)
	}
	out, err := c.tortie("", args...)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "not found") {
			return "", false
		}
		t.Fatal(err)
	}
	return out, true
}

func (c *SingleHost) Ruleset(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", c.hostNSName(), "nft", "list", "table", "inet", "tortie").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v\n%s", err, out)
	}
	return string(out)
}

var wepKind, _ = v3.KindByKind(v3.KindWorkloadEndpoint)

func (c *SingleHost) AddPod(t testing.TB, nsName, name string, labels map[string]string, ports []Port) *Pod {
	t.Helper()
	p, err := c.addPod(nsName, name, labels, ports)
	if err != nil {
		t.Fatalf("pod %s/%s: %v\nCNI log:\n%s", nsName, name, err, c.CNILogTail(2048))
	}
	return p
}

func (c *SingleHost) addPod(nsName, name string, labels map[string]string, ports []Port) (*Pod, error) {
	c.mu.Lock()
	idx := len(c.pods)
	c.mu.Unlock()
	n, _, err := c.newNetNS(fmt.Sprintf("p%d", idx))
	if err != nil {
		return nil, err
	}
	rt := &libcni.RuntimeConf{
		ContainerID: fmt.Sprintf("e2e-%s-%d", c.id, idx), NetNS: n.Path(), IfName: "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", nsName}, {"K8S_POD_NAME", name}},
		CapabilityArgs: map[string]any{"labels": labels},
	}
	lib := libcni.NewCNIConfigWithCacheDir([]string{c.cniPath}, c.cacheDir, nil)
	var res *current.Result
	err = c.host.netns.Do(func(ns.NetNS) error {
		r, err := lib.AddNetworkList(context.Background(), c.netconf, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("CNI ADD: %w", err)
	}
	c.onClose(func() {
		_ = c.host.netns.Do(func(ns.NetNS) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return lib.DelNetworkList(ctx, c.netconf, rt)
		})
	})
	p := &Pod{Namespace: nsName, Name: name, Node: c.node, Labels: labels, Ports: ports, netns: n,
		Endpoint: v3.WorkloadEndpointName(c.node, v3.OrchestratorKubernetes, name, "eth0")}
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			p.IP = a.Unmap()
		}
	}
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" {
			p.Interface = ifc.Name
		}
	}
	if !p.IP.IsValid() {
		return nil, fmt.Errorf("CNI result has no IPv4 address: %v", res)
	}
	// The plugin does not know a pod's container ports (a kubelet does
	// not hand them to CNI; Calico's plugin reads them from the API
	// server): declare them on the endpoint, as that would.
	if len(ports) > 0 {
		if err := c.updateWEP(p, func(w *v3.WorkloadEndpoint) { w.Spec.Ports = wepPorts(ports) }); err != nil {
			return nil, fmt.Errorf("declaring named ports: %w", err)
		}
	}
	if err := c.servers.ServeEcho(n, ports); err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	c.mu.Lock()
	c.pods = append(c.pods, p)
	c.mu.Unlock()
	return p, nil
}

func wepPorts(ports []Port) []v3.WorkloadEndpointPort {
	var out []v3.WorkloadEndpointPort
	for _, p := range ports {
		var wp v3.WorkloadEndpointPort
		b, _ := json.Marshal(map[string]any{"name": p.Name, "protocol": p.Protocol, "port": p.Port})
		_ = json.Unmarshal(b, &wp)
		out = append(out, wp)
	}
	return out
}

func (c *SingleHost) updateWEP(p *Pod, fn func(*v3.WorkloadEndpoint)) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		r, err := c.cl.Get(ctx, wepKind, p.Namespace, p.Endpoint)
		if err != nil {
			return err
		}
		w := r.(*v3.WorkloadEndpoint)
		fn(w)
		_, err = c.cl.Update(ctx, w)
		if errors.Is(err, datastore.ErrConflict) && attempt < 5 {
			continue
		}
		return err
	}
}

func (c *SingleHost) SetPodLabels(t testing.TB, p *Pod, labels map[string]string) {
	t.Helper()
	c.changing()
	if err := c.updateWEP(p, func(w *v3.WorkloadEndpoint) { w.Labels = copyLabels(labels) }); err != nil {
		t.Fatalf("relabel %s: %v", p, err)
	}
}

func (c *SingleHost) SetPodPorts(t testing.TB, p *Pod, ports []Port) {
	t.Helper()
	c.changing()
	if err := c.updateWEP(p, func(w *v3.WorkloadEndpoint) { w.Spec.Ports = wepPorts(ports) }); err != nil {
		t.Fatalf("ports of %s: %v", p, err)
	}
}

func (c *SingleHost) SetPodProfiles(t testing.TB, p *Pod, profiles []string) {
	t.Helper()
	c.changing()
	if err := c.updateWEP(p, func(w *v3.WorkloadEndpoint) { w.Spec.Profiles = profiles }); err != nil {
		t.Fatalf("profiles of %s: %v", p, err)
	}
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Baseline records the namespaces' profiles, the pools and tiers as Reset
// restores them.
func (c *SingleHost) Baseline(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	var base []v3.Resource
	for _, kind := range []string{v3.KindProfile, v3.KindIPPool, v3.KindTier} {
		k, _ := v3.KindByKind(kind)
		rs, _, err := c.cl.List(ctx, k, "")
		if err != nil {
			t.Fatal(err)
		}
		base = append(base, rs...)
	}
	c.mu.Lock()
	c.baseline = base
	c.mu.Unlock()
}

func (c *SingleHost) Reset(t testing.TB) {
	t.Helper()
	touch := sync.OnceFunc(c.changing) // only when something is written
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.mu.Lock()
	base := c.baseline
	pods := append([]*Pod(nil), c.pods...)
	c.mu.Unlock()
	keep := map[string]bool{}
	for _, r := range base {
		keep[v3.KindOf(r).Kind+"/"+r.GetName()] = true
	}
	del := func(kind string, skip func(v3.Resource) bool) {
		k, _ := v3.KindByKind(kind)
		rs, _, err := c.cl.List(ctx, k, "")
		if err != nil {
			t.Fatalf("reset: list %s: %v", kind, err)
		}
		for _, r := range rs {
			if skip != nil && skip(r) {
				continue
			}
			touch()
			if _, err := c.cl.Delete(ctx, k, r.GetNamespace(), r.GetName(), 0); err != nil && !errors.Is(err, datastore.ErrNotFound) {
				t.Fatalf("reset: delete %s %s/%s: %v", kind, r.GetNamespace(), r.GetName(), err)
			}
		}
	}
	for _, kind := range []string{v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy, v3.KindStagedNetworkPolicy,
		v3.KindStagedGlobalNetworkPolicy, v3.KindNetworkSet, v3.KindGlobalNetworkSet, v3.KindHostEndpoint} {
		del(kind, nil)
	}
	del(v3.KindTier, func(r v3.Resource) bool { return keep[v3.KindTier+"/"+r.GetName()] })
	del(v3.KindProfile, func(r v3.Resource) bool { return keep[v3.KindProfile+"/"+r.GetName()] })
	for _, r := range base {
		cur, err := c.cl.Get(ctx, v3.KindOf(r), "", r.GetName())
		if err == nil && sameSpecAndLabels(cur, r) {
			continue
		}
		touch()
		r.SetResourceVersion("")
		if _, err := c.cl.Apply(ctx, r); err != nil {
			t.Fatalf("reset: restore %s %s: %v", v3.KindOf(r).Kind, r.GetName(), err)
		}
	}
	for _, p := range pods {
		r, err := c.cl.Get(ctx, wepKind, p.Namespace, p.Endpoint)
		if err != nil {
			t.Fatalf("reset: pod %s: %v", p, err)
		}
		if w := r.(*v3.WorkloadEndpoint); podAsCreated(w, p) {
			continue
		}
		touch()
		if err := c.updateWEP(p, func(w *v3.WorkloadEndpoint) {
			w.Labels = copyLabels(p.Labels)
			w.Spec.Ports = wepPorts(p.Ports)
			w.Spec.Profiles = []string{"kns." + p.Namespace}
		}); err != nil {
			t.Fatalf("reset: pod %s: %v", p, err)
		}
	}
}

// podAsCreated: the endpoint has the pod's own labels (the ones the
// datastore adds aside), ports and namespace profile.
func podAsCreated(w *v3.WorkloadEndpoint, p *Pod) bool {
	own := map[string]string{}
	for k, v := range w.Labels {
		if !strings.HasPrefix(k, "projectcalico.org/") {
			own[k] = v
		}
	}
	want := map[string]string{}
	for k, v := range p.Labels {
		want[k] = v
	}
	a, _ := json.Marshal([]any{own, w.Spec.Ports, w.Spec.Profiles})
	b, _ := json.Marshal([]any{want, wepPorts(p.Ports), []string{"kns." + p.Namespace}})
	return bytes.Equal(a, b)
}

func sameSpecAndLabels(a, b v3.Resource) bool {
	ja, _ := json.Marshal(map[string]any{"l": a.GetLabels(), "s": specOf(a)})
	jb, _ := json.Marshal(map[string]any{"l": b.GetLabels(), "s": specOf(b)})
	return bytes.Equal(ja, jb)
}

func specOf(r v3.Resource) any {
	var m map[string]any
	b, _ := json.Marshal(r)
	_ = json.Unmarshal(b, &m)
	return m["spec"]
}
