package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The suite shares one cluster and one set of pods (x, y, z × a, b, c);
// each scenario starts from Reset and the all-allowed matrix.

var (
	setupOnce sync.Once
	setupErr  error
	shared    *SingleHost
	model     *Model
	suiteT0   time.Time
	binDir    string
)

func TestMain(m *testing.M) {
	suiteT0 = time.Now()
	code := m.Run()
	teardown()
	if shared != nil || testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: suite time %v; %s\n", time.Since(suiteT0).Round(time.Millisecond), Stats.Summary())
	}
	os.Exit(code)
}

var teardownOnce sync.Once

func teardown() {
	teardownOnce.Do(func() {
		if shared != nil {
			shared.Close()
		}
		if binDir != "" && os.Getenv("TORTIE_E2E_BIN") == "" {
			os.RemoveAll(binDir)
		}
	})
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the e2e suite needs root (network namespaces, nftables) and CI is set: it must not be skipped")
	}
	t.Skip("needs root")
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

// cluster returns the shared cluster and model, building them on first use.
func cluster(t *testing.T) (*SingleHost, *Model) {
	t.Helper()
	requireRoot(t)
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		t.Fatalf("cluster setup: %v", setupErr)
	}
	return shared, model
}

func setup() error {
	t0 := time.Now()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...) }
	CleanStale(logf)
	binDir = os.Getenv("TORTIE_E2E_BIN")
	if binDir == "" {
		var err error
		if binDir, err = os.MkdirTemp("", "tortie-e2e-bin-"); err != nil {
			return err
		}
		out, err := exec.Command("go", "build", "-o", binDir+string(filepath.Separator),
			"github.com/tortie/tortie/cmd/tortie-node", "github.com/tortie/tortie/cmd/tortie-cni").CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	tb := time.Now()
	var agentArgs []string
	if v := os.Getenv("TORTIE_E2E_RESYNC"); v != "" {
		agentArgs = append(agentArgs, "--resync-interval", v)
	}
	c, err := NewSingleHost(SingleHostOptions{BinDir: binDir, Logf: logf, AgentArgs: agentArgs})
	if err != nil {
		return err
	}
	shared = c
	// Interrupted runs clean up too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		teardown()
		os.Exit(2)
	}()
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
	if err := ft.run(func(tb testing.TB) { c.Baseline(tb) }); err != nil {
		return err
	}
	model = m
	logf("cluster %s up: build %v, host+etcd+agent %v, namespaces+9 pods %v", c.ID(),
		tb.Sub(t0).Round(time.Millisecond), tc.Sub(tb).Round(time.Millisecond), time.Since(tc).Round(time.Millisecond))
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
