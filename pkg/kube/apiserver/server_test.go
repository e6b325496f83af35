package apiserver_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/kube/apiserver"
)

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := apiserver.BinDir(); err != nil {
		testenv.Missing(t, "the Kubernetes binaries: "+err.Error())
	}
}

func clientset(t *testing.T, s *apiserver.Server) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// processGone reports whether pid is no longer a process (not even a zombie).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// TestLifecycle starts a real kube-apiserver on an embedded etcd, uses it
// with a clientset and kubectl (as the admin and as a token user), restarts
// it keeping data and credentials, and stops it leaving no process.
func TestLifecycle(t *testing.T) {
	requireBinaries(t)
	etcd := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	begin := time.Now()
	s, err := apiserver.Start(ctx, apiserver.Config{
		Dir:         dir,
		EtcdServers: []string{etcd.Endpoint()},
		EtcdPrefix:  "/kube-test",
		Users:       []apiserver.User{{Name: "alice", Groups: []string{"devs", "ops"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver ready in %s at %s", time.Since(begin).Round(time.Millisecond), s.URL())
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = s.Stop(context.Background())
		}
	})
	pid := s.PID()
	if pid == 0 || !s.Running() {
		t.Fatalf("PID %d, Running %v after Start", pid, s.Running())
	}

	// Files: keys private, kubeconfigs per user.
	for _, f := range []string{"pki/ca.key", "pki/apiserver.key", "pki/sa.key", "tokens.csv", "kubeconfig/" + apiserver.AdminUser + ".kubeconfig"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, st.Mode().Perm())
		}
	}

	cs := clientset(t, s)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "lifecycle"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Stored under the prefix asked for.
	ec := etcdtest.NewClient(t, etcd)
	kvs, err := ec.Client().Get(ctx, "/kube-test/namespaces/lifecycle")
	if err != nil || len(kvs.Kvs) != 1 {
		t.Fatalf("namespace not in etcd under /kube-test: %v, %v", kvs, err)
	}

	out, err := apiserver.Kubectl(ctx, s.AdminKubeconfig(), "get", "namespace", "lifecycle", "-o", "jsonpath={.metadata.name}")
	if err != nil || out != "lifecycle" {
		t.Fatalf("kubectl get namespace: %q, %v", out, err)
	}
	alice, err := s.Kubeconfig("alice")
	if err != nil {
		t.Fatal(err)
	}
	out, err = apiserver.Kubectl(ctx, alice, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
	if err != nil || !strings.HasPrefix(out, "alice ") || !strings.Contains(out, "devs") || !strings.Contains(out, "ops") {
		t.Fatalf("kubectl auth whoami as alice: %q, %v", out, err)
	}
	// alice has no RBAC: kubectl fails, and says why on stderr.
	_, err = apiserver.Kubectl(ctx, alice, "get", "pods", "-n", "lifecycle")
	var kerr *apiserver.KubectlError
	if !errors.As(err, &kerr) || !strings.Contains(kerr.Stderr, "forbidden") {
		t.Fatalf("kubectl get pods as alice: %v, want forbidden", err)
	}
	if _, err := s.Kubeconfig("nobody"); err == nil {
		t.Error("Kubeconfig of an unknown user: no error")
	}

	// Restart: same port, data kept, old clients' credentials still good.
	port := s.Port()
	begin = time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted in %s", time.Since(begin).Round(time.Millisecond))
	if !processGone(pid) {
		t.Errorf("old kube-apiserver %d still there after Restart", pid)
	}
	if s.Port() != port || s.PID() == pid {
		t.Errorf("after Restart: port %d (was %d), PID %d (was %d)", s.Port(), port, s.PID(), pid)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "lifecycle", metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace after Restart through the old clientset: %v", err)
	}
	if _, err := apiserver.Kubectl(ctx, alice, "auth", "whoami"); err != nil {
		t.Fatalf("alice's kubeconfig after Restart: %v", err)
	}

	// Stop: nothing left; clients get connection errors.
	pid = s.PID()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if !processGone(pid) || s.Running() || s.PID() != 0 {
		t.Fatalf("after Stop: process %d gone %v, Running %v, PID %d", pid, processGone(pid), s.Running(), s.PID())
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "lifecycle", metav1.GetOptions{}); err == nil || apierrors.IsNotFound(err) {
		t.Fatalf("Get from a stopped apiserver: %v, want a connection error", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// processesIn lists the processes whose command line mentions dir.
func processesIn(t *testing.T, dir string) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var found []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), dir) {
			found = append(found, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found
}

// TestStartFails: a server that exits, cannot bind or does not get ready
// is reported with the end of its log, and nothing is left running.
func TestStartFails(t *testing.T) {
	requireBinaries(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	closed, err := etcdtest.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*apiserver.Config)
		want   []string
	}{
		{"bad flag", func(c *apiserver.Config) { c.ExtraArgs = []string{"--no-such-flag=1"} },
			[]string{"exited before it was ready", "unknown flag: --no-such-flag", "kube-apiserver.log"}},
		{"port taken", func(c *apiserver.Config) { c.Port = busy.Addr().(*net.TCPAddr).Port },
			[]string{"port in use"}},
		{"no etcd", func(c *apiserver.Config) {
			c.EtcdServers = []string{fmt.Sprintf("http://127.0.0.1:%d", closed)}
			c.ReadyTimeout = 3 * time.Second
		}, []string{"not ready after", "ReadyTimeout 3s", "last /readyz"}},
		{"no binary", func(c *apiserver.Config) { c.Binary = "/nonexistent/kube-apiserver" },
			[]string{"/nonexistent/kube-apiserver", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := apiserver.Config{Dir: dir, EtcdServers: []string{"http://127.0.0.1:1"}, ReadyTimeout: time.Minute}
			tt.change(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			s, err := apiserver.Start(ctx, cfg)
			if err == nil {
				_ = s.Stop(ctx)
				t.Fatal("Start: no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Start: error without %q:\n%v", w, err)
				}
			}
			if left := processesIn(t, dir); len(left) > 0 {
				t.Errorf("left running: %v", left)
			}
		})
	}
}

// TestStopWithEtcdGone: an apiserver whose etcd has gone never finishes a
// graceful shutdown; Stop kills it after the grace period.
func TestStopWithEtcdGone(t *testing.T) {
	requireBinaries(t)
	proxy := etcdtest.NewProxy(t, etcdtest.Start(t).Endpoint())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := apiserver.Start(ctx, apiserver.Config{Dir: t.TempDir(), EtcdServers: []string{proxy.Endpoint()}, StopGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	pid := s.PID()
	proxy.Cut()
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer stopCancel()
	if err := s.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if stopCtx.Err() != nil {
		t.Error("Stop returned only when its context ended, not after StopGrace")
	}
	if !processGone(pid) {
		t.Errorf("kube-apiserver %d still there after Stop", pid)
	}
}

// helperEnv makes the test binary a process that starts an apiserver,
// prints its PID and waits to be killed (TestParentDies).
const helperEnv = "TORTIE_APISERVER_TEST_HELPER"

func TestMain(m *testing.M) {
	if arg := os.Getenv(helperEnv); arg != "" {
		startAndWait(arg)
	}
	os.Exit(m.Run())
}

// startAndWait is the helper process: arg is dir,etcd-endpoint,detach.
func startAndWait(arg string) {
	f := strings.Split(arg, ",")
	s, err := apiserver.Start(context.Background(), apiserver.Config{Dir: f[0], EtcdServers: []string{f[1]}, Detach: f[2] == "true"})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("pid", s.PID())
	select {}
}

// TestParentDies: a server dies with the process that started it (a test
// binary that crashes or times out leaves nothing behind), unless it was
// started detached (the lab's), when it lives on in a session of its own.
func TestParentDies(t *testing.T) {
	requireBinaries(t)
	etcd := etcdtest.Start(t)
	for _, detach := range []bool{false, true} {
		t.Run(fmt.Sprintf("detach=%v", detach), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.timeout=10m")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%v", helperEnv, dir, etcd.Endpoint(), detach))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, _ := bufio.NewReader(out).ReadString('\n')
			var pid int
			if _, err := fmt.Sscanf(line, "pid %d", &pid); err != nil || pid == 0 {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("helper said %q", line)
			}
			t.Cleanup(func() {
				if !processGone(pid) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			// A detached server is given 2 s to die, an attached one 30.
			wait := 30 * time.Second
			if detach {
				wait = 2 * time.Second
			}
			gone := false
			for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				// Not our child: reaped by init (or a subreaper) once dead.
				if gone = processGone(pid) || isZombie(pid); gone {
					break
				}
			}
			if gone == detach {
				t.Fatalf("parent killed: kube-apiserver %d gone %v, want %v", pid, gone, !detach)
			}
			if detach {
				sid, err := unix.Getsid(pid)
				if err != nil || sid != pid {
					t.Errorf("detached server's session %d (%v), want its own (%d)", sid, err, pid)
				}
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}
