// Package verdicts times policy changes by what a probe sees: a change is
// enforced at the first probe with its verdict. bench/kube and
// bench/kubecluster share it.
package verdicts

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/probe"
)

// Series is what a run of changes measured.
type Series struct {
	// First is the first change's time: for a policy, its creation.
	First    time.Duration
	Enforced []time.Duration // the others': command start → first probe with the new verdict
	Command  []time.Duration // command start → its exit
	Flaps    int
	Fails    int
}

// Flow is the probed flow: TCP from a namespace to an address and port.
type Flow struct {
	From ns.NetNS
	To   netip.Addr
	Port int
}

// Timer makes and times changes of one flow's verdict within one run.
type Timer struct {
	Ctx  context.Context
	Run  *labrun.Run
	Flow Flow
	// Slow is how long a change may take before it is logged.
	Slow time.Duration
}

// Changes makes n changes, each to the other verdict than the last
// (starting from cur), through the command do gives, and times them into
// s. It returns the last verdict. More than 3 changes never seen fail the
// run.
func (t Timer) Changes(s *Series, n int, cur bool, do func(allow bool) *exec.Cmd) bool {
	for i := range n {
		want := !cur
		type verdict struct {
			at    time.Time
			flaps int
			err   error
		}
		got := make(chan verdict, 1)
		cmd := do(want)
		t0 := time.Now()
		go func() {
			at, flaps, err := probe.FirstVerdict(t.Flow.From, t.Flow.To, t.Flow.Port, want, t0, 20*time.Second)
			got <- verdict{at, flaps, err}
		}()
		Must(t.Run, cmd)
		s.Command = append(s.Command, time.Since(t0))
		v := <-got
		if t.Ctx.Err() != nil {
			t.Run.Fatalf("interrupted")
		}
		if v.err != nil {
			s.Fails++
			t.Run.Logf("change %d (allowed=%v): %v", i, want, v.err)
			if s.Fails > 3 {
				t.Run.Fatalf("too many changes never enforced")
			}
			t.Wait(want, "a late change")
		} else {
			d := v.at.Sub(t0)
			if d > t.Slow {
				t.Run.Logf("change %d (allowed=%v) took %v", i, want, d.Round(time.Millisecond))
			}
			if i == 0 {
				s.First = d
			} else {
				s.Enforced = append(s.Enforced, d)
			}
			s.Flaps += v.flaps
		}
		cur = want
	}
	return cur
}

// Wait waits up to a minute until the flow has the verdict allowed; the
// run fails when it does not, or when it is interrupted.
func (t Timer) Wait(allowed bool, after string) {
	var err error
	for range 60 {
		if t.Ctx.Err() != nil {
			t.Run.Fatalf("interrupted")
		}
		if _, _, err = probe.FirstVerdict(t.Flow.From, t.Flow.To, t.Flow.Port, allowed, time.Now(), time.Second); err == nil {
			return
		}
	}
	t.Run.Fatalf("after %s: %v", after, err)
}

// Must runs a command and fails the run, with its output, when it fails.
func Must(run *labrun.Run, cmd *exec.Cmd) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		run.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out.String())
	}
}
