package main_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testpki"
)

// typhaProc is a tortie-typha process in the root namespace.
type typhaProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// startTypha runs tortie-typha (bin) on addr with the given TLS files and
// waits for its /readiness.
func startTypha(t *testing.T, bin, etcdURL, addr string, health int, tf testpki.Files) *typhaProc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "typha-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--etcd-endpoints", etcdURL, "--listen", addr,
		"--ca-file", tf.CA, "--server-cert-file", tf.Cert, "--server-key-file", tf.Key, "--client-cn", "tortie-node",
		"--health-addr", fmt.Sprintf("127.0.0.1:%d", health), "--ping-interval", "500ms", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &typhaProc{cmd: cmd, exited: make(chan struct{}), log: logf.Name()}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("typha log (last 4KB):\n%s", tail(b, 4096))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readiness", health))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("typha exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("typha not ready in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *typhaProc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// TestAgentThroughTypha: an agent fed by tortie-typha over mutual TLS
// enforces policy and its changes as one watching etcd does; with its typha
// gone it keeps what it programmed and is not ready, saying why; when a
// typha is back it converges to what changed meanwhile.
func TestAgentThroughTypha(t *testing.T) {
	l, _, cl := newAgentLab(t)
	typhaBin := filepath.Join(t.TempDir(), "tortie-typha")
	if out, err := exec.Command("go", "build", "-o", typhaBin, "github.com/tortie/tortie/cmd/tortie-typha").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ca, err := testpki.NewCA("typha-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srvPair, err := ca.Issue("tortie-typha", nil, []net.IP{net.ParseIP(l.rootIP.String())})
	if err != nil {
		t.Fatal(err)
	}
	agentPair, err := ca.Issue("tortie-node", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tf, err := ca.WriteFiles(dir, "typha", srvPair)
	if err != nil {
		t.Fatal(err)
	}
	af, err := ca.WriteFiles(dir, "agent", agentPair)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(l.rootIP.String(), strconv.Itoa(freePort(t, l.rootIP)))
	health := freePort(t, l.rootIP)
	ty := startTypha(t, typhaBin, l.etcdURL, addr, health, tf)

	apply(t, cl, profile, wep("a", ipA, "a"), wep("b", ipB, "server"), wep("c", ipC, "c"), allowFrom("a"))
	l.serve(&server{})
	l.startAgentWith(9099, []string{
		"FELIX_TYPHAADDR=" + addr, "FELIX_TYPHACAFILE=" + af.CA, "FELIX_TYPHACERTFILE=" + af.Cert,
		"FELIX_TYPHAKEYFILE=" + af.Key, "FELIX_TYPHACN=tortie-typha",
	}, "--health-addr", ":9099", "--resync-interval", "0")
	l.expect("initial policy through typha", true, false)
	apply(t, cl, allowFrom("c"))
	l.waitConnects("calic", ipB+":80", 5*time.Second)
	l.expect("policy changed through typha", false, true)
	if b, _ := os.ReadFile(l.agentLog); !strings.Contains(string(b), "connected to typha") {
		t.Error("the agent's log does not say it connected to typha")
	}

	// Typha gone: the agent says why it is not ready and keeps the table.
	ty.kill(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := l.httpGet(9099, "/readiness")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "no typha reachable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness with typha gone: %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.expect("typha gone", false, true)
	apply(t, cl, allowFrom("a")) // not seen until a typha is back

	// A typha back (at the same address): ready again, and the change
	// made meanwhile enforced.
	startTypha(t, typhaBin, l.etcdURL, addr, health, tf)
	l.waitReady(30 * time.Second)
	l.waitConnects("calia", ipB+":80", 10*time.Second)
	l.expect("after typha came back", true, false)
}
