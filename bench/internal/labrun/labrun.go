// Package labrun is what the benchmarks that bring up a lab of their own
// share to run it: log lines under the command's name, cleanups that run
// once in reverse order (at the end, on a failure and once a signal has
// made the run fail), and either a context that SIGINT, SIGTERM and SIGHUP
// end or an exit on them.
package labrun

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// Run is one benchmark run. Its methods are safe to call from any
// goroutine.
type Run struct {
	name     string
	mu       sync.Mutex
	cleanups []func()
	cleaned  bool          // the cleanups started: one added now runs at once
	done     chan struct{} // closed when the cleanups have run
	finished chan struct{}
	once     sync.Once
}

// New is a run of the command name ("bench/kube"), which prefixes its log
// lines.
func New(name string) *Run {
	return &Run{name: name, done: make(chan struct{}), finished: make(chan struct{})}
}

// Logf writes one line to stderr, after the command's name.
func (r *Run) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, r.name+": "+format+"\n", args...)
}

// AddCleanup registers f to run at the end, before the cleanups added
// before it; once the cleanups have run (a goroutine still at work after a
// failure), f runs at once. f must not call Fatalf (it would wait for
// itself).
func (r *Run) AddCleanup(f func()) {
	r.mu.Lock()
	if r.cleaned {
		r.mu.Unlock()
		f()
		return
	}
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// runCleanups runs the cleanups added so far, the last first, once; a
// second caller (a failure the first one's cleanups caused, a signal
// meanwhile) waits until they have run, so that neither exits halfway.
func (r *Run) runCleanups() {
	r.mu.Lock()
	if r.cleaned {
		r.mu.Unlock()
		<-r.done
		return
	}
	fs := r.cleanups
	r.cleanups, r.cleaned = nil, true
	r.mu.Unlock()
	for _, f := range slices.Backward(fs) {
		f()
	}
	close(r.done)
}

// Fatalf logs, runs the cleanups and exits with status 1.
func (r *Run) Fatalf(format string, args ...any) {
	r.Logf(format, args...)
	r.runCleanups()
	os.Exit(1)
}

// Interruptible is a context that SIGINT, SIGTERM and SIGHUP end, and the
// function that stops catching them (defer it). The run notices a signal
// through the context: lab.Up removes what it made by itself, and after
// it a command or wait fails and Fatalf runs the cleanups. If notice is
// not empty, it is logged when a signal comes before Finish.
func (r *Run) Interruptible(notice string) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	if notice != "" {
		go func() {
			select {
			case <-ctx.Done():
				r.Logf("%s", notice)
			case <-r.finished:
			}
		}()
	}
	return ctx, stop
}

// ExitOnSignal makes SIGINT, SIGTERM and SIGHUP run the cleanups and exit
// with status 130, for a run that does not pass a context down.
func (r *Run) ExitOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		r.Logf("%v: cleaning up", s)
		r.runCleanups()
		os.Exit(130)
	}()
}

// Finish ends a run that succeeded: a signal is no longer noticed, and
// the cleanups run.
func (r *Run) Finish() {
	r.once.Do(func() { close(r.finished) })
	r.runCleanups()
}

// LoadAverage is the machine's load average over 1, 5 and 15 minutes, as
// /proc/loadavg has it ("?" where it cannot be read): every benchmark
// reports it beside its numbers.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// Build builds commands of the module the working directory is in
// ("./cmd/tortie-typha") static, as `make build` does, into dir, each named
// as its directory.
func Build(dir string, cmds ...string) error {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(gomod)) == 0 || string(bytes.TrimSpace(gomod)) == os.DevNull {
		return fmt.Errorf("run from inside the tortie module: go env GOMOD: %v", err)
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, cmds...)...)
	cmd.Dir = filepath.Dir(string(bytes.TrimSpace(gomod)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(cmds, " "), err, out)
	}
	return nil
}
