package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/lab"
)

// The suite shares one cluster per backend and one set of pods (x, y, z ×
// a, b, c) on it; each scenario starts from Reset and the all-allowed
// matrix. Three backends: SingleHost (every test but TestLab*), the
// multi-host lab (TestLab*, see lab_test.go), and a lab with WireGuard on
// and VXLAN CrossSubnet (TestLabWireguard*), each built on first use.

type backend struct {
	name string
	make func(logf func(string, ...any)) (Cluster, func(), error)

	once  sync.Once
	err   error
	c     Cluster
	m     *Model
	close func()
}

var (
	singleBackend = &backend{name: "single-host", make: newSingleHostBackend}
	labBackend    = &backend{name: "lab", make: newLabBackend}
	labWGBackend  = &backend{name: "lab-wireguard", make: newLabWireguardBackend}
	backends      = []*backend{singleBackend, labBackend, labWGBackend}

	suiteT0 time.Time
	binOnce sync.Once
	binErr  error
	binDir  string
)

// backendFor: the encrypted lab for TestLabWireguard and its subtests, the
// lab for TestLab and its subtests, SingleHost otherwise.
func backendFor(t testing.TB) *backend {
	if strings.HasPrefix(t.Name(), "TestLabWireguard") {
		return labWGBackend
	}
	if strings.HasPrefix(t.Name(), "TestLab") {
		return labBackend
	}
	return singleBackend
}

func TestMain(m *testing.M) {
	suiteT0 = time.Now()
	// Interrupted runs clean up too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		teardown()
		os.Exit(2)
	}()
	code := m.Run()
	up := false
	for _, b := range backends {
		up = up || b.c != nil
	}
	teardown()
	if up || testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: suite time %v; %s\n", time.Since(suiteT0).Round(time.Millisecond), Stats.Summary())
	}
	os.Exit(code)
}

var teardownOnce sync.Once

func teardown() {
	teardownOnce.Do(func() {
		for _, b := range backends {
			if b.close != nil {
				b.close()
			}
		}
		if binDir != "" && os.Getenv("TORTIE_E2E_BIN") == "" {
			os.RemoveAll(binDir)
		}
	})
}

// Model is the upstream model: namespaces x, y, z with pods a, b, c, each
// serving 80 and 81 over TCP and UDP.
type Model struct {
	NS   map[string]string // "x" -> "x-<id>"
	Pods []*Pod
	pod  map[string]*Pod // "x/a"
}

// P returns the pod "x/a".
func (m *Model) P(s string) *Pod {
	p := m.pod[s]
	if p == nil {
		panic("no pod " + s)
	}
	return p
}

// In reports whether p is in model namespace key ("x").
func (m *Model) In(p *Pod, key string) bool { return p.Namespace == m.NS[key] }

// NamespaceManifest is the v1 Namespace of key with extra labels.
func (m *Model) NamespaceManifest(key string, labels map[string]string) string {
	s := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", m.NS[key])
	if len(labels) > 0 {
		s += "  labels:\n"
		for k, v := range labels {
			s += fmt.Sprintf("    %s: %q\n", k, v)
		}
	}
	return s
}

// cluster returns the shared cluster and model of the test's backend,
// building them on first use.
func cluster(t *testing.T) (Cluster, *Model) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
	b := backendFor(t)
	if b != singleBackend {
		if why := singleHostOnlyReason(t); why != "" {
			t.Skipf("needs the single-host backend (the same scenario runs outside TestLab): %s", why)
		}
	}
	b.once.Do(func() { b.err = b.setup() })
	if b.err != nil {
		t.Fatalf("%s cluster setup: %v", b.name, b.err)
	}
	if prevBackend.Swap(b) != b {
		// The other backend ran since this one's last change: the time
		// from that change is not a convergence to record.
		b.c.(interface{ restartClock() }).restartClock()
	}
	return b.c, b.m
}

// prevBackend is the backend of the last test that asked for a cluster.
var prevBackend atomic.Pointer[backend]

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...) }

// buildBinaries builds what both backends run, once: tortie-node and
// tortie-cni, and tortie with tortie-datastore (the lab's datastore);
// TORTIE_E2E_BIN=<dir> uses
// binaries from there instead.
func buildBinaries() (string, error) {
	binOnce.Do(func() {
		CleanStaleLabs(logf)
		CleanStale(logf)
		binDir = os.Getenv("TORTIE_E2E_BIN")
		if binDir != "" {
			return
		}
		if binDir, binErr = os.MkdirTemp("", "tortie-e2e-bin-"); binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+string(filepath.Separator),
			"github.com/tortie/tortie/cmd/tortie-node", "github.com/tortie/tortie/cmd/tortie-cni",
			"github.com/tortie/tortie/cmd/tortie", "github.com/tortie/tortie/cmd/tortie-datastore").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	return binDir, binErr
}

func newSingleHostBackend(logf func(string, ...any)) (Cluster, func(), error) {
	dir, err := buildBinaries()
	if err != nil {
		return nil, nil, err
	}
	var agentArgs []string
	if v := os.Getenv("TORTIE_E2E_RESYNC"); v != "" {
		agentArgs = append(agentArgs, "--resync-interval", v)
	}
	c, err := NewSingleHost(SingleHostOptions{BinDir: dir, Logf: logf, AgentArgs: agentArgs})
	if err != nil {
		return nil, nil, err
	}
	return c, c.Close, nil
}

func newLabBackend(logf func(string, ...any)) (Cluster, func(), error) {
	return newLabWith(LabOptions{Logf: logf})
}

func newLabWireguardBackend(logf func(string, ...any)) (Cluster, func(), error) {
	// VXLAN CrossSubnet under the BGP mesh: without WireGuard, hosts on
	// one subnet route to each other directly and those across the router
	// through VXLAN; with it, WireGuard carries both.
	return newLabWith(LabOptions{Logf: logf, Encryption: "wireguard", Encap: lab.EncapCrossSubnet})
}

func newLabWith(opts LabOptions) (Cluster, func(), error) {
	dir, err := buildBinaries()
	if err != nil {
		return nil, nil, err
	}
	opts.BinDir = dir
	c, err := NewLab(opts)
	if err != nil {
		return nil, nil, err
	}
	return c, c.Close, nil
}

// setup builds the backend's cluster and the model on it.
func (b *backend) setup() error {
	t0 := time.Now()
	c, closeFn, err := b.make(logf)
	if err != nil {
		return err
	}
	b.close = closeFn
	tc := time.Now()

	m := &Model{NS: map[string]string{}, pod: map[string]*Pod{}}
	ft := &fatalTB{}
	for _, key := range []string{"x", "y", "z"} {
		m.NS[key] = key + "-" + c.ID()
		if err := ft.run(func(tb testing.TB) { c.Apply(tb, m.NamespaceManifest(key, nil)) }); err != nil {
			return err
		}
	}
	for _, key := range []string{"x", "y", "z"} {
		for _, name := range []string{"a", "b", "c"} {
			var p *Pod
			if err := ft.run(func(tb testing.TB) {
				p = c.AddPod(tb, m.NS[key], name, map[string]string{"pod": name}, StandardPorts())
			}); err != nil {
				return err
			}
			m.Pods = append(m.Pods, p)
			m.pod[key+"/"+name] = p
		}
	}
	if err := ft.run(func(tb testing.TB) { c.(interface{ Baseline(testing.TB) }).Baseline(tb) }); err != nil {
		return err
	}
	b.c, b.m = c, m
	var where []string
	for _, p := range m.Pods {
		where = append(where, p.Short()+"@"+p.Node)
	}
	logf("%s cluster %s up: build and hosts+etcd+agents %v, namespaces+9 pods %v (%s)", b.name, c.ID(),
		tc.Sub(t0).Round(time.Millisecond), time.Since(tc).Round(time.Millisecond), strings.Join(where, " "))
	return nil
}

// fatalTB lets setup (which has no *testing.T) call helpers that take one.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper()                   {}
func (f *fatalTB) Logf(string, ...any)       {}
func (f *fatalTB) Fatal(args ...any)         { f.msg = fmt.Sprint(args...); runtime.Goexit() }
func (f *fatalTB) Fatalf(s string, a ...any) { f.msg = fmt.Sprintf(s, a...); runtime.Goexit() }

func (f *fatalTB) run(fn func(testing.TB)) error {
	f.msg = ""
	done := make(chan struct{})
	go func() { defer close(done); fn(f) }()
	<-done
	if f.msg != "" {
		return fmt.Errorf("%s", f.msg)
	}
	return nil
}
