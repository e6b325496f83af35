package node_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/node"
	"github.com/tortie/tortie/pkg/syncer"
)

// stubComponent is a component of the loop under test: it records when and
// how it was applied, fails while told to, and can wake the loop and ask
// for its own resync interval. The loop is the logic under test here; the
// policy component beside it is the real one.
type stubComponent struct {
	name   string
	resync time.Duration
	wake   chan struct{}

	mu      sync.Mutex
	failing bool
	applies []stubApply
	updates int
}

type stubApply struct {
	at   time.Time
	full bool
	err  error
}

func newStub(name string) *stubComponent {
	return &stubComponent{name: name, wake: make(chan struct{}, 1)}
}

func (s *stubComponent) Name() string    { return s.name }
func (s *stubComponent) Kinds() []string { return []string{v3.KindIPPool} }
func (s *stubComponent) OnUpdate(syncer.Update) {
	s.mu.Lock()
	s.updates++
	s.mu.Unlock()
}
func (s *stubComponent) OnInSync()                     {}
func (s *stubComponent) Wake() <-chan struct{}         { return s.wake }
func (s *stubComponent) ResyncInterval() time.Duration { return s.resync }
func (s *stubComponent) Apply(_ context.Context, full bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.failing {
		err = errors.New("device busy")
	}
	s.applies = append(s.applies, stubApply{at: time.Now(), full: full, err: err})
	return err
}

func (s *stubComponent) setFailing(f bool) {
	s.mu.Lock()
	s.failing = f
	s.mu.Unlock()
}

func (s *stubComponent) history() []stubApply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stubApply(nil), s.applies...)
}

// startAgent runs an agent of comps on the env's datastore until the test ends.
func (e *env) startAgent(cfg node.Config, comps ...node.Component) *node.Agent {
	e.t.Helper()
	a, err := node.New(cfg, e.be, comps...)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("agent: %v", err)
		}
	})
	return a
}

// TestOneLoopRetriesAFailingComponentAlone: one loop drives every
// component. A component whose Apply fails is retried, in full, with a
// growing backoff; meanwhile the other components keep applying what
// reaches them, and readiness names the one that is not ready and why.
func TestOneLoopRetriesAFailingComponentAlone(t *testing.T) {
	e := newEnv(t)
	apply(e.t, e.cl, profileDoc, poolDoc, policy("client", 80), wep("h1", "a", "10.65.0.2", "role: client"))
	pol, err := node.NewPolicy(node.PolicyConfig{NodeName: "h1", NFT: e.fake})
	if err != nil {
		t.Fatal(err)
	}
	flaky := newStub("flaky")
	flaky.setFailing(true)
	const retry = 40 * time.Millisecond
	a := e.startAgent(node.Config{
		NodeName: "h1", ResyncInterval: time.Hour, MinApplyInterval: 5 * time.Millisecond,
		RetryInterval: retry, MaxRetryInterval: 10 * retry, HealthAddr: "127.0.0.1:0",
	}, pol, flaky)

	eventually(t, "four failed applies of flaky", func() bool { return len(flaky.history()) >= 4 })
	ok, why := a.Ready()
	if ok || !strings.Contains(why, "flaky: last apply failed") || !strings.Contains(why, "device busy") {
		t.Errorf("readiness %v %q: want not ready, naming flaky and its error", ok, why)
	}
	if strings.Contains(why, "policy") {
		t.Errorf("readiness %q names policy, which applied", why)
	}
	code, body := get(t, "http://"+a.HealthAddr()+"/readiness")
	if code != 503 || !strings.Contains(body, "flaky") {
		t.Errorf("/readiness: %d %q", code, body)
	}
	h := flaky.history()
	for i, ap := range h[:4] {
		if !ap.full {
			t.Errorf("apply %d of flaky was not full: the first and every retry must be", i)
		}
	}
	// Backoff doubles from RetryInterval: the gaps are at least 40, 80 and
	// 160 ms (a busy machine only makes them longer).
	for i := 1; i < 4; i++ {
		want := retry << (i - 1)
		if gap := h[i].at.Sub(h[i-1].at); gap < want*9/10 {
			t.Errorf("retry %d came %v after the previous attempt, want at least %v", i, gap, want)
		}
	}

	// The policy component keeps applying while flaky fails.
	apply(e.t, e.cl, wep("h1", "b", "10.65.0.3", "role: server"))
	eventually(t, "b programmed while flaky still fails", func() bool {
		return strings.Contains(e.fake.Dump(), "calib")
	})
	if ok, _ := a.Ready(); ok {
		t.Error("ready while flaky still fails")
	}

	flaky.setFailing(false)
	eventually(t, "ready once flaky applies", func() bool { ok, _ := a.Ready(); return ok })
	if last := flaky.history(); last[len(last)-1].err != nil || !last[len(last)-1].full {
		t.Errorf("last apply of flaky %+v: want a successful full apply", last[len(last)-1])
	}
}

// TestOneLoopWakesAndResyncsPerComponent: a component's own wake-ups get it
// applied (incrementally) without any datastore update, and a component
// with its own resync interval gets full applies at that interval while the
// agent's is an hour.
func TestOneLoopWakesAndResyncsPerComponent(t *testing.T) {
	e := newEnv(t)
	apply(e.t, e.cl, poolDoc)
	woken := newStub("woken")
	resyncing := newStub("resyncing")
	resyncing.resync = 50 * time.Millisecond
	a := e.startAgent(node.Config{NodeName: "h1", ResyncInterval: time.Hour, MinApplyInterval: time.Millisecond}, woken, resyncing)
	eventually(t, "ready", func() bool { ok, _ := a.Ready(); return ok })

	before := len(woken.history())
	woken.wake <- struct{}{}
	eventually(t, "an apply after a wake-up", func() bool { return len(woken.history()) > before })
	if h := woken.history(); h[len(h)-1].full {
		t.Error("a wake-up gave a full apply; want incremental")
	}

	eventually(t, "three periodic full applies of resyncing", func() bool {
		fulls := 0
		for _, ap := range resyncing.history() {
			if ap.full {
				fulls++
			}
		}
		return fulls >= 4 // the first apply, then three resyncs
	})
	if n := len(woken.history()); n > before+1 {
		// Only its wake-up and nothing else: the agent's own resync is an hour.
		t.Errorf("woken applied %d times after its wake-up, want 1", n-before)
	}
}

// failingRunner is a component whose goroutine fails.
type failingRunner struct{ *stubComponent }

func (f failingRunner) Run(ctx context.Context) error { return errors.New("speaker crashed") }

// TestRunnerFailureStopsTheAgent: a component's Runner failing stops the
// agent with its error (the agent's other goroutines are stopped first,
// not waited for forever).
func TestRunnerFailureStopsTheAgent(t *testing.T) {
	e := newEnv(t)
	a, err := node.New(node.Config{NodeName: "h1", HealthAddr: "127.0.0.1:0"}, e.be, failingRunner{newStub("crashy")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "component crashy: speaker crashed") {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after a Runner failed")
	}
}
