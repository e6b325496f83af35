package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tortie/tortie/pkg/procfs"
)

// ErrInterrupted is wrapped by the error of work that was cut short: its
// context was cancelled (Ctrl-C, SIGTERM), or a command it ran was killed
// by SIGINT or SIGTERM (a terminal's Ctrl-C reaches the whole process group).
var ErrInterrupted = errors.New("interrupted")

// interrupted is the error of work that ctx cut short, with the reason
// (for a signal: which one).
func interrupted(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("%w (%v)", ErrInterrupted, cause)
	}
	return ErrInterrupted
}

// sleep waits d, or less when ctx ends first; it reports whether ctx is
// still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// run runs a command and returns its combined output, with the command in
// the error. A cancelled ctx kills the command; its error, and that of a
// command killed by SIGINT or SIGTERM, wraps ErrInterrupted.
func run(ctx context.Context, args ...string) (string, error) {
	if ctx.Err() != nil {
		return "", fmt.Errorf("%s: %w", strings.Join(args, " "), interrupted(ctx))
	}
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	switch {
	case err == nil:
		return string(out), nil
	case ctx.Err() != nil:
		return string(out), fmt.Errorf("%s: %w", strings.Join(args, " "), interrupted(ctx))
	case signalled(err):
		return string(out), fmt.Errorf("%s: %w (%v)", strings.Join(args, " "), ErrInterrupted, err)
	}
	return string(out), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
}

// signalled reports whether a command's error is its death by SIGINT or
// SIGTERM.
func signalled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGINT || ws.Signal() == syscall.SIGTERM)
}

// ipn runs `ip -n NS ARGS` (or `ip ARGS` in the root namespace for ns "").
func ipn(ctx context.Context, ns string, args ...string) error {
	a := []string{"ip"}
	if ns != "" {
		a = append(a, "-n", ns)
	}
	_, err := run(ctx, append(a, args...)...)
	return err
}

// linkExists reports whether the root namespace has an interface of that
// name.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// sysctl sets sysctls (k=v) in a namespace.
func sysctl(ctx context.Context, ns string, kv ...string) error {
	_, err := run(ctx, append([]string{"ip", "netns", "exec", ns, "sysctl", "-qw"}, kv...)...)
	return err
}

// spawn starts a long-lived process in namespace ns ("" for the root
// namespace) in its own session, so that it outlives the command that
// started it (and a terminal's Ctrl-C does not reach it); its output goes
// to logPath. ctx only decides whether it starts: the process is the
// lab's, and is stopped by Down, not by ctx.
func spawn(ctx context.Context, role, name, ns, logPath string, env []string, argv ...string) (Proc, error) {
	if ctx.Err() != nil {
		return Proc{}, fmt.Errorf("starting %s %s: %w", role, name, interrupted(ctx))
	}
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Proc{}, fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	// Reap it if it dies while we run (tests call the lab in-process);
	// when this process exits first, init adopts it.
	w := &procWait{done: make(chan struct{})}
	go func() { w.err = cmd.Wait(); close(w.done) }()
	p := Proc{Role: role, Name: name, PID: cmd.Process.Pid, Log: logPath, wait: w}
	p.Start, _ = procStart(p.PID)
	return p, nil
}

// procWait is the end of a process this process started: done is closed
// once it has exited and been reaped, err is then what Wait said.
type procWait struct {
	done chan struct{}
	err  error
}

// exitStatus says how p ended ("exit status 1", "signal: killed") when this
// process started it and it has ended; "" when that is not known.
func (p Proc) exitStatus() string {
	if p.wait == nil {
		return ""
	}
	select {
	case <-p.wait.done:
	default:
		return ""
	}
	if p.wait.err == nil {
		return "exit status 0"
	}
	return p.wait.err.Error()
}

// procStat returns the state letter and start time of a process.
func procStat(pid int) (state byte, start uint64, err error) { return procfs.Stat(pid) }

func procStart(pid int) (uint64, error) {
	_, s, err := procStat(pid)
	return s, err
}

// alive reports whether p still runs (and is the process the lab started).
//
// A process this process started is alive until it has been reaped: its
// PID cannot be another's before that. Any other is judged by /proc, where
// a zombie is dead only when it is the whole process: a thread group whose
// leader is a zombie while other threads still run is alive. That is what
// a multi-threaded program looks like while it execs from another thread
// than its first (`tortie datastore serve` becoming tortie-datastore: Go
// execs from whichever thread it is on); the kernel shows the leader as a
// zombie until the new program takes over its PID, tens to hundreds of
// milliseconds on a busy machine.
func (p Proc) alive() bool {
	if p.wait != nil {
		select {
		case <-p.wait.done:
			return false
		default:
			return true
		}
	}
	state, start, err := procStat(p.PID)
	if err != nil || (p.Start != 0 && start != p.Start) {
		return false
	}
	switch state {
	case 'X':
		return false
	case 'Z':
		return procThreads(p.PID) > 1
	}
	return true
}

// procThreads is how many threads a process has (0 when it is gone): a
// zombie that is the whole process has one, itself.
func procThreads(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// signal sends sig to p if p is still the process the lab started. It goes
// through a pidfd opened before the check, so that a PID freed and taken by
// another process meanwhile is never signalled.
func (p Proc) signal(sig syscall.Signal) {
	proc, err := os.FindProcess(p.PID)
	if err != nil {
		return
	}
	defer proc.Release()
	if p.alive() {
		_ = proc.Signal(sig)
	}
}

// stop ends p: SIGTERM, then SIGKILL after grace, or as soon as ctx ends
// (a process is never left running because its stop was interrupted).
func (p Proc) stop(ctx context.Context, grace time.Duration) {
	if !p.alive() {
		return
	}
	p.signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return
		}
		if !sleep(ctx, 20*time.Millisecond) {
			break
		}
	}
	p.signal(syscall.SIGKILL)
	for i := 0; i < 100 && p.alive(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// procsInNetns lists the processes whose network namespace is the named
// one (/run/netns/NAME): what still runs inside a lab's namespace when it
// is torn down (a `lab exec` left behind, say).
func procsInNetns(names []string) []Proc {
	inodes := map[uint64]string{}
	for _, n := range names {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", n), &st) == nil {
			inodes[st.Ino] = n
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if n, ok := inodes[st.Ino]; ok {
			start, _ := procStart(pid)
			out = append(out, Proc{Role: "stray", Name: n, PID: pid, Start: start})
		}
	}
	return out
}
