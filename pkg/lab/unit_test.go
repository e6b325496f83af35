package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"tortie", "a", "tl3fa9c2", "my-lab-2"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "A", "a_b", "a.b", strings.Repeat("x", 33), "a/b"} {
		if ValidName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// Interface names fit the kernel's 15 characters and differ per lab.
	seen := map[string]bool{}
	for _, n := range []string{"a", "tortie", "tortie-demo", "twelve-chars", "thirteen-char", strings.Repeat("x", 32), strings.Repeat("x", 31)} {
		r := rootLinkName(n)
		if len(r) > 15 || seen[r] {
			t.Errorf("rootLinkName(%q) = %q", n, r)
		}
		seen[r] = true
	}
}

func TestParseListen(t *testing.T) {
	got, err := ParseListen([]string{"TCP:80", " udp:53 ", ""})
	if err != nil || strings.Join(got, ",") != "tcp:80,udp:53" {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"tcp", "sctp:80", "tcp:0", "tcp:65536", "udp:x"} {
		if _, err := ParseListen([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestServe: the built-in server echoes over TCP and UDP; as root, the
// probe (made in a namespace: here our own) sees it, and sees a closed
// port as blocked.
func TestServe(t *testing.T) {
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, []string{"tcp:" + strconv.Itoa(port), "udp:" + strconv.Itoa(port)}, io.MultiWriter(&out, pw))
	}()
	buf := make([]byte, 256)
	if n, _ := pr.Read(buf); !strings.Contains(string(buf[:n]), ServeReadyLine) {
		t.Fatalf("server said %q", buf[:n])
	}
	go io.Copy(io.Discard, pr)
	for _, proto := range []string{"tcp", "udp"} {
		c, err := net.Dial(proto, "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		c.Write([]byte("hello"))
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Errorf("%s echo: %q, %v", proto, buf[:n], err)
		}
		c.Close()
	}
	if os.Geteuid() == 0 {
		for _, proto := range []string{"tcp", "udp"} {
			// An open port answers within the timeout however busy the
			// machine; a closed one is blocked whatever the timeout.
			ok, detail, err := ProbeIn(ctx, "/proc/self/ns/net", net.ParseIP("127.0.0.1"), port, proto, 30*time.Second)
			if err != nil || !ok {
				t.Errorf("probe %s: %v %s %v", proto, ok, detail, err)
			}
			closed := freePort(t)
			if ok, detail, err := ProbeIn(ctx, "/proc/self/ns/net", net.ParseIP("127.0.0.1"), closed, proto, 300*time.Millisecond); err != nil || ok {
				t.Errorf("probe %s to a closed port: %v %s %v", proto, ok, detail, err)
			}
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPrintMatrix(t *testing.T) {
	var b bytes.Buffer
	PrintMatrix(&b, []Result{
		{From: "a/x", To: "b/y", Port: 80, Protocol: "tcp", Connected: true},
		{From: "b/y", To: "a/x", Port: 80, Protocol: "tcp", Connected: false},
	})
	want := `tcp/80 (row: from, column: to)
     a/x  b/y
a/x  .    ok
b/y  -    .

1 of 2 flows connected
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestCLIConfigRestore: the config file is written when absent, put back
// as it was on down, and never written over when a lab did not write it.
func TestCLIConfigRestore(t *testing.T) {
	dir := t.TempDir()
	oldRun, oldCfg := RunDir, CLIConfigFile
	RunDir, CLIConfigFile = dir+"/run", dir+"/etc/tortie/tortie.cfg"
	t.Cleanup(func() { RunDir, CLIConfigFile = oldRun, oldCfg })
	mk := func(name string) *Lab {
		l := &Lab{st: &State{Name: name, Endpoint: "http://198.18.0.254:1"}}
		if err := os.MkdirAll(Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := mk("a"), mk("b")
	if err := a.writeCLIConfig(); err != nil {
		t.Fatal(err)
	}
	aText, _ := os.ReadFile(CLIConfigFile)
	if err := b.writeCLIConfig(); err != nil {
		t.Fatal(err)
	}
	if err := b.restoreCLIConfig(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(CLIConfigFile); string(got) != string(aText) {
		t.Errorf("after b's down: %q, want a's", got)
	}
	if err := a.restoreCLIConfig(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + "/etc/tortie"); !os.IsNotExist(err) {
		t.Errorf("the directory the lab made is still there: %v", err)
	}
	// Someone else's file is left alone.
	os.MkdirAll(dir+"/etc/tortie", 0o755)
	os.WriteFile(CLIConfigFile, []byte("mine\n"), 0o644)
	c := mk("c")
	if err := c.writeCLIConfig(); err != nil {
		t.Fatal(err)
	}
	if err := c.restoreCLIConfig(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(CLIConfigFile); string(got) != "mine\n" {
		t.Errorf("someone else's config: %q", got)
	}
}

// TestInterrupted: a lock waited for, a command cancelled and a command
// killed by SIGINT all end in ErrInterrupted; a command that fails on its
// own does not.
func TestInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := lockFile(ctx, path); !errors.Is(err, ErrInterrupted) {
		t.Errorf("lock held elsewhere, ctx ended: %v", err)
	}
	unlock()
	unlock, err = lockFile(ctx, path)
	if err != nil {
		t.Errorf("lock released: %v", err)
	} else {
		unlock()
	}

	cancelled, cancelNow := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancelNow() }()
	if _, err := run(cancelled, "sleep", "10"); !errors.Is(err, ErrInterrupted) {
		t.Errorf("command whose ctx ended: %v", err)
	}
	if _, err := run(cancelled, "true"); !errors.Is(err, ErrInterrupted) {
		t.Errorf("command started with an ended ctx: %v", err)
	}
	if _, err := run(context.Background(), "sh", "-c", "kill -INT $$"); !errors.Is(err, ErrInterrupted) {
		t.Errorf("command killed by SIGINT: %v", err)
	}
	if _, err := run(context.Background(), "sh", "-c", "exit 3"); err == nil || errors.Is(err, ErrInterrupted) {
		t.Errorf("command that failed: %v", err)
	}
}

// zombieLeaderEnv makes the test binary the helper of
// TestAliveZombieLeader (see init).
const zombieLeaderEnv = "TORTIE_LAB_TEST_ZOMBIE_LEADER"

// init, in the helper only: the main thread (the thread group leader; the
// main goroutine is on it during init) ends alone with the raw exit
// syscall while the process's other threads go on, so that /proc shows
// the leader as a zombie in a process that runs, as it shows a program
// that execs from another thread than its first until the new program
// takes over.
func init() {
	if os.Getenv(zombieLeaderEnv) == "" {
		return
	}
	started := make(chan struct{})
	go func() {
		close(started)
		io.Copy(io.Discard, os.Stdin) // until the test kills us
	}()
	<-started
	os.Stdout.WriteString("leader exits\n")
	syscall.RawSyscall(syscall.SYS_EXIT, 0, 0, 0)
}

// TestAliveZombieLeader: a process whose leader thread is a zombie while
// its other threads run is alive, and is stopped; a process that ended is
// not alive, in the process that started it (it has reaped it) and in
// another (a zombie not yet reaped).
func TestAliveZombieLeader(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), zombieLeaderEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "leader exits\n" {
		t.Fatalf("helper said %q", line)
	}
	p := Proc{Role: "test", PID: cmd.Process.Pid}
	p.Start, _ = procStart(p.PID)
	deadline := time.Now().Add(time.Minute)
	for {
		state, _, err := procStat(p.PID)
		if err != nil {
			t.Fatal(err)
		}
		if state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the helper's leader is %c, not a zombie, after a minute", state)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := procThreads(p.PID); n < 2 {
		t.Fatalf("the helper has %d threads", n)
	}
	if !p.alive() {
		t.Fatal("a process whose leader is a zombie while its other threads run is judged dead")
	}
	p.stop(context.Background(), 10*time.Second)
	// Killed, not yet reaped: a zombie that is the whole process.
	for deadline := time.Now().Add(time.Minute); procThreads(p.PID) > 1; {
		if time.Now().After(deadline) {
			t.Fatal("the helper still runs a minute after its stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.alive() {
		t.Error("a process ended (a zombie of one thread) is judged alive")
	}
}

// TestExited: a process the lab started and that ended says how, with the
// end of its log.
func TestExited(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "x.log")
	p, err := spawn(context.Background(), "datastore", "etcd", "", logPath, nil, "sh", "-c", "echo cannot bind >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); p.alive(); {
		if time.Now().After(deadline) {
			t.Fatal("sh -c 'exit 3' still runs after a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	msg := exited(p).Error()
	for _, want := range []string{"the datastore (pid ", "exited: exit status 3", "cannot bind", logPath} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
	os.Truncate(logPath, 0)
	if msg := exited(p).Error(); !strings.Contains(msg, "is empty") {
		t.Errorf("with an empty log: %q", msg)
	}
}

// TestLockFileRemoved: a lock file removed while a command waits on it
// (a teardown removes its lab's, the last lab's removes the allocation
// lock) leaves the waiter holding the lock at the path, which a third
// command then waits for, not a lock on the removed file.
func TestLockFileRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", ".alloc.lock")
	unlockA, err := lockFile(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		unlock, err := lockFile(context.Background(), path)
		if err != nil {
			t.Error(err)
			unlock = func() {}
		}
		got <- unlock
	}()
	time.Sleep(100 * time.Millisecond) // let it wait (not needed for the check to hold)
	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	unlockA()
	var unlockB func()
	select {
	case unlockB = <-got:
	case <-time.After(time.Minute):
		t.Fatal("the waiter did not get the lock within a minute")
	}
	defer unlockB()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if unlockC, err := lockFile(ctx, path); err == nil {
		unlockC()
		t.Fatal("a third command got the lock while the waiter holds it")
	} else if !errors.Is(err, ErrInterrupted) {
		t.Fatal(err)
	}
}
