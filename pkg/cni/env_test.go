package cni_test

// Test environment for driving the built plugin: a dedicated "host"
// network namespace (so nothing on the machine running the tests changes
// but one veth into it), an embedded etcd reachable from that namespace
// over the veth, a CNI_PATH holding the binary under both its names, and
// workload namespaces. Every name carries a per-run ID and is removed when
// the test ends.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/cni"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/ipam"
)

const (
	testPoolV4 = "10.65.0.0/16"
	testPoolV6 = "fd00:65::/48"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// pluginBinary builds cmd/tortie-cni once per test binary, or returns
// $TORTIE_CNI_BINARY when set (to measure a given build, e.g. an older one
// against a newer in the same run).
func pluginBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("TORTIE_CNI_BINARY"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "tortie-cni-build-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "tortie-cni"), "github.com/tortie/tortie/cmd/tortie-cni").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "tortie-cni")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// repoBin is the repository's ./bin, where scripts/install-tools.sh puts
// cnitool and host-local.
func repoBin() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "bin")
}

// tool finds a tool installed by scripts/install-tools.sh, running the
// script if needed. Without it the test skips, or fails under CI.
func tool(tb testing.TB, name string) string {
	tb.Helper()
	p := filepath.Join(repoBin(), name)
	if _, err := os.Stat(p); err != nil {
		script := filepath.Join(repoBin(), "..", "scripts", "install-tools.sh")
		if out, err := exec.Command("bash", script).CombinedOutput(); err != nil {
			tb.Logf("install-tools.sh: %v\n%s", err, out)
		}
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not installed (run scripts/install-tools.sh / make deps): %v", name, err)
		}
		tb.Skipf("%s is not installed (run scripts/install-tools.sh)", name)
	}
	return p
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

type env struct {
	t        testing.TB
	id       string
	hostNS   string // name under /run/netns
	host     ns.NetNS
	rootAddr string // our end of the veth into the host namespace
	srv      *embedded.Server
	be       *datastore.Etcd
	cl       *client.Client
	ipam     *ipam.IPAM
	cniPath  string
	confDir  string
	cacheDir string
	logFile  string
	node     string
	nsCount  int
	mu       sync.Mutex
}

// newEnv builds the host namespace, the etcd, the pools and the CNI_PATH.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	testenv.RequireRoot(tb)
	bin := pluginBinary(tb)
	e := &env{t: tb, id: randHex(4), node: "node-" + randHex(2)}

	// The host namespace, joined to ours by a veth on 198.18.a.b/30.
	e.hostNS = "tth-" + e.id
	run(tb, "ip", "netns", "add", e.hostNS)
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", e.hostNS).Run() })
	rootIf, hostIf := "ttr"+e.id, "tte"+e.id
	run(tb, "ip", "link", "add", rootIf, "type", "veth", "peer", "name", hostIf)
	tb.Cleanup(func() { exec.Command("ip", "link", "del", rootIf).Run() })
	run(tb, "ip", "link", "set", hostIf, "netns", e.hostNS)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<15))
	base := net.IPv4(198, 18, 0, 0).To4()
	v := uint32(n.Int64()) * 4 // a /30 in 198.18.0.0/15
	base[1] += byte(v >> 16)
	base[2] = byte(v >> 8)
	base[3] = byte(v)
	rootIP := net.IPv4(base[0], base[1], base[2], base[3]+1)
	hostIP := net.IPv4(base[0], base[1], base[2], base[3]+2)
	e.rootAddr = rootIP.String()
	run(tb, "ip", "addr", "add", rootIP.String()+"/30", "dev", rootIf)
	run(tb, "ip", "link", "set", rootIf, "up")
	in := func(args ...string) { run(tb, "ip", append([]string{"-n", e.hostNS}, args...)...) }
	in("link", "set", "lo", "up")
	in("addr", "add", hostIP.String()+"/30", "dev", hostIf)
	in("link", "set", hostIf, "up")
	// What every tortie host needs (see dataplane.go): a route to
	// 169.254.1.1 through another device than the workload's, here the
	// default route, so that proxy ARP answers; and IPv6 forwarding.
	in("route", "add", "default", "via", rootIP.String())
	run(tb, "ip", "netns", "exec", e.hostNS, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
	h, err := ns.GetNS("/run/netns/" + e.hostNS)
	if err != nil {
		tb.Fatal(err)
	}
	e.host = h
	tb.Cleanup(func() { h.Close() })

	port, err := etcdtest.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	e.srv = etcdtest.StartWith(tb, embedded.ServeConfig{ListenClientURL: fmt.Sprintf("http://%s:%d", rootIP, port)})
	e.be = etcdtest.NewClient(tb, e.srv)
	e.cl = client.New(e.be)
	e.ipam = ipam.New(e.be, ipam.Options{})
	// The node agent registers the node; IPAM's check wants it to exist.
	node := &v3.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "projectcalico.org/v3"}, ObjectMeta: metav1.ObjectMeta{Name: e.node}}
	if _, err := e.cl.Create(context.Background(), node); err != nil {
		tb.Fatalf("create node: %v", err)
	}
	e.addPool("pool-v4", testPoolV4, 26)
	e.addPool("pool-v6", testPoolV6, 122)

	e.cniPath = tb.TempDir()
	e.confDir = tb.TempDir()
	e.cacheDir = tb.TempDir()
	e.logFile = filepath.Join(tb.TempDir(), "cni.log")
	if p := os.Getenv("TORTIE_CNI_TEST_LOG"); p != "" {
		e.logFile = p // keep the plugin's log for a look after the run
	}
	if err := os.Link(bin, filepath.Join(e.cniPath, cni.PluginType)); err != nil {
		copyFile(tb, bin, filepath.Join(e.cniPath, cni.PluginType))
	}
	if err := os.Symlink(cni.PluginType, filepath.Join(e.cniPath, cni.IPAMType)); err != nil {
		tb.Fatal(err)
	}
	if hl := filepath.Join(repoBin(), "host-local"); fileExists(hl) {
		os.Symlink(hl, filepath.Join(e.cniPath, "host-local"))
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			if b, err := os.ReadFile(e.logFile); err == nil {
				lines := strings.Split(string(b), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				tb.Logf("plugin log (tail):\n%s", strings.Join(lines, "\n"))
			}
		}
	})
	return e
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func copyFile(tb testing.TB, src, dst string) {
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		tb.Fatal(err)
	}
}

func (e *env) addPool(name, cidr string, blockSize int) {
	e.t.Helper()
	pool := &v3.IPPool{
		TypeMeta:   metav1.TypeMeta{Kind: "IPPool", APIVersion: "projectcalico.org/v3"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v3.IPPoolSpec{CIDR: cidr, BlockSize: blockSize},
	}
	if _, err := e.cl.Create(context.Background(), pool); err != nil {
		e.t.Fatalf("create pool %s: %v", cidr, err)
	}
}

func (e *env) endpoint() string { return e.srv.Endpoint() }

// specVersions are the CNI spec versions the plugin must speak. They are
// listed here, not taken from cni.SupportedVersions, so that a version
// dropped from the plugin fails the tests.
var specVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// atLeast reports whether spec version v is min or later.
func atLeast(v, min string) bool {
	ok, err := version.GreaterThanOrEqualTo(v, min)
	return err == nil && ok
}

// netConf is the conflist the tests use; mod adjusts the plugin entry.
func (e *env) netConf(name, version string, mod func(plugin map[string]any)) []byte {
	b, _ := json.Marshal(map[string]any{"cniVersion": version, "name": name, "plugins": []any{e.plugin(mod)}})
	return b
}

// pluginConf is one plugin's network config, as a runtime hands it to the
// plugin (name and cniVersion injected), for running the plugin by hand.
func (e *env) pluginConf(name, version string, mod func(plugin map[string]any)) []byte {
	p := e.plugin(mod)
	p["name"], p["cniVersion"] = name, version
	b, _ := json.Marshal(p)
	return b
}

func (e *env) plugin(mod func(plugin map[string]any)) map[string]any {
	plugin := map[string]any{
		"type":           cni.PluginType,
		"etcd_endpoints": e.endpoint(),
		"nodename":       e.node,
		"mtu":            1450,
		"log_file_path":  e.logFile,
		"log_level":      "debug",
		"capabilities":   map[string]bool{"labels": true},
		"ipam":           map[string]any{"type": cni.IPAMType},
	}
	if mod != nil {
		mod(plugin)
	}
	return plugin
}

// execResult is what one run of the plugin by hand printed.
type execResult struct {
	stdout, stderr []byte
	err            error // the exit status
}

// cniError decodes the error object the plugin printed on stdout.
func (r execResult) cniError(tb testing.TB) *types.Error {
	tb.Helper()
	if r.err == nil {
		tb.Fatalf("expected the plugin to fail; it printed %s", r.stdout)
	}
	te := &types.Error{}
	if err := json.Unmarshal(r.stdout, te); err != nil || te.Code == 0 {
		tb.Fatalf("stdout is not a CNI error object (%v): %s\nstderr: %s", err, r.stdout, r.stderr)
	}
	return te
}

func (r execResult) ok(tb testing.TB, what string) {
	tb.Helper()
	if r.err != nil {
		tb.Fatalf("%s: %v\nstdout: %s\nstderr: %s", what, r.err, r.stdout, r.stderr)
	}
}

// exec runs the plugin as a runtime does, without libcni (which refuses
// some commands for some versions before the plugin is called): the binary
// under name in e.cniPath, in the host namespace, CNI_COMMAND=cmd, with
// extra CNI_* variables (CNI_PATH is set), stdin the plugin's config.
func (e *env) exec(name, cmd string, stdin []byte, vars ...string) execResult {
	return e.execPath(filepath.Join(e.cniPath, name), cmd, stdin, vars...)
}

func (e *env) execPath(path, cmd string, stdin []byte, vars ...string) execResult {
	c := exec.Command("ip", "netns", "exec", e.hostNS, path)
	c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_PATH="+e.cniPath)
	c.Env = append(c.Env, vars...)
	c.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	return execResult{stdout: out.Bytes(), stderr: errOut.Bytes(), err: err}
}

// containerVars are the CNI_* variables of one attachment.
func containerVars(containerID, netns, ifName string, args string) []string {
	return []string{"CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns, "CNI_IFNAME=" + ifName, "CNI_ARGS=" + args}
}

func (e *env) writeConf(name string, conf []byte) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.confDir, "10-"+name+".conflist"), conf, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// workloadNS makes a workload namespace and returns its path.
func (e *env) workloadNS() string {
	e.mu.Lock()
	e.nsCount++
	name := fmt.Sprintf("ttw%s-%d", e.id, e.nsCount)
	e.mu.Unlock()
	run(e.t, "ip", "netns", "add", name)
	e.t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

// inHost runs f in the host namespace: a plugin started from there (by
// libcni's exec, on this locked thread) runs there.
func (e *env) inHost(f func() error) error {
	return e.host.Do(func(ns.NetNS) error { return f() })
}

func (e *env) lib() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{e.cniPath}, e.cacheDir, nil)
}

func confList(tb testing.TB, b []byte) *libcni.NetworkConfigList {
	tb.Helper()
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func (e *env) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (*current.Result, error) {
	var res types.Result
	err := e.inHost(func() error {
		var err error
		res, err = e.lib().AddNetworkList(context.Background(), list, rt)
		return err
	})
	if err != nil {
		return nil, err
	}
	// The plugin answers in the config's version.
	if res.Version() != list.CNIVersion {
		return nil, fmt.Errorf("ADD returned a %s result for a %s config", res.Version(), list.CNIVersion)
	}
	return current.NewResultFromResult(res)
}

func (e *env) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return e.inHost(func() error { return e.lib().DelNetworkList(context.Background(), list, rt) })
}

func (e *env) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return e.inHost(func() error { return e.lib().CheckNetworkList(context.Background(), list, rt) })
}

// hostLinks lists the cali interfaces of the host namespace.
func (e *env) hostLinks() []string {
	out := run(e.t, "ip", "-n", e.hostNS, "-o", "link", "show")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], cni.HostVethPrefix) {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}

// assertClean: no workload interface, endpoint, handle or allocation left.
func (e *env) assertClean(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	if l := e.hostLinks(); len(l) > 0 {
		tb.Errorf("leaked host interfaces: %v", l)
	}
	if rs, _, err := e.cl.List(ctx, wepKind(), ""); err != nil || len(rs) > 0 {
		names := []string{}
		for _, r := range rs {
			names = append(names, r.GetNamespace()+"/"+r.GetName())
		}
		tb.Errorf("leaked workload endpoints: %v (err %v)", names, err)
	}
	if kvs, _, err := e.be.List(ctx, "/calico/ipam/v2/handle/"); err != nil || len(kvs) > 0 {
		var keys []string
		for _, kv := range kvs {
			keys = append(keys, kv.Key)
		}
		tb.Errorf("leaked IPAM handles: %v (err %v)", keys, err)
	}
	r, err := e.ipam.Check(ctx)
	if err != nil {
		tb.Fatalf("ipam check: %v", err)
	}
	if r.Problems() > 0 || r.Allocations > 0 {
		tb.Errorf("ipam check: %d allocations, %d problems: %+v", r.Allocations, r.Problems(), r)
	}
}

// linkIn reports whether an interface exists in a namespace.
func linkIn(nsPath, name string) bool {
	found := false
	ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		_, err := net.InterfaceByName(name)
		found = err == nil
		return nil
	})
	return found
}

func cniError(tb testing.TB, err error) *types.Error {
	tb.Helper()
	if err == nil {
		tb.Fatal("expected an error, got none")
	}
	var te *types.Error
	if !errors.As(err, &te) {
		tb.Fatalf("error is not a CNI error object: %T %v", err, err)
	}
	return te
}

func wepKind() *v3.KindInfo {
	k, _ := v3.KindByKind(v3.KindWorkloadEndpoint)
	return k
}
