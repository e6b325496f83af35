package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/procfs"
)

// Proc is a process of the node, as a caller records it.
type Proc struct {
	Role string `json:"role"`
	PID  int    `json:"pid"`
	// Start is /proc/PID/stat's starttime: a reused PID is not the node's.
	Start uint64 `json:"start"`
}

// ProcOf is the Proc of a running pid.
func ProcOf(role string, pid int) (Proc, error) {
	_, start, err := procStat(pid)
	if err != nil {
		return Proc{}, err
	}
	return Proc{Role: role, PID: pid, Start: start}, nil
}

// procStat is a process's state letter and start time.
func procStat(pid int) (byte, uint64, error) { return procfs.Stat(pid) }

// Alive reports whether p runs: its PID exists, is not a zombie, and
// started when p says.
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	state, start, err := procStat(p.PID)
	return err == nil && state != 'Z' && (p.Start == 0 || start == p.Start)
}

// stop ends p: SIGTERM, then SIGKILL after grace; it returns once p is
// gone (or after a further 10 s).
func stop(ctx context.Context, p Proc, grace time.Duration) {
	if !p.Alive() {
		return
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
	if !waitGone(ctx, []Proc{p}, grace) {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
		waitGone(context.Background(), []Proc{p}, 10*time.Second)
	}
}

// waitGone waits until none of procs is alive, at most d; it reports
// whether they are all gone.
func waitGone(ctx context.Context, procs []Proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		alive := false
		for _, p := range procs {
			alive = alive || p.Alive()
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// launch starts c with its output appended to c.LogFile. Detached, it
// runs in a session of its own and outlives this process; otherwise it is
// killed when this process dies. The returned channel is closed once it
// has exited (and been reaped).
func launch(c Component, detach bool) (Proc, <-chan struct{}, error) {
	if err := os.MkdirAll(filepath.Dir(c.LogFile), 0o755); err != nil {
		return Proc{}, nil, err
	}
	f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "--- tortie %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(c.Argv, " "))
	cmd := exec.Command(c.Argv[0], c.Argv[1:]...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = f, f
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := apiserver.StartCommand(cmd); err != nil {
		return Proc{}, nil, fmt.Errorf("starting %s: %w", c.Role, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p := Proc{Role: c.Role, PID: cmd.Process.Pid}
	_, p.Start, _ = procStat(p.PID)
	return p, done, nil
}
