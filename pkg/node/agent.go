package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/serve"
	"github.com/tortie/tortie/pkg/syncer"
)

// Agent is tortie-node's core: a syncer, the components it feeds, and the
// health and metrics endpoints.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	sync    *syncer.Syncer
	comps   []*compState
	byKind  map[string][]*compState
	reg     *prometheus.Registry
	metrics *agentMetrics
	start   time.Time

	endpoints *serve.Listeners // health and metrics endpoints

	// Loop state, touched only by the loop goroutine.
	inSync       bool
	programmed   bool
	trouble      string    // the syncer's, while its feed is down
	pendingSince time.Time // arrival of the oldest update not yet applied
	lastApply    time.Time
	// woken carries the components whose Waker fired.
	woken chan *compState

	// What the HTTP handlers read.
	heartbeat atomic.Int64 // unix nanoseconds of the loop's last turn
	freeing   atomic.Bool  // returnMemory is at work
	ready     atomic.Bool
	notReady  atomic.Pointer[string]
}

// compState is the loop's bookkeeping for one component.
type compState struct {
	c       Component
	dirty   bool // an update reached it, or a full apply is due
	full    bool
	applied bool // at least one successful apply
	err     error
	retries int
	retryAt time.Time
	// resync is the interval of its periodic full apply (<= 0: never);
	// resyncAt when the next is due.
	resync   time.Duration
	resyncAt time.Time
}

// New makes an agent for the components, watching be. It opens the health
// and metrics listeners at once, so that a port in use is an error here;
// Run serves them and closes them when it returns.
func New(cfg Config, be datastore.Backend, comps ...Component) (*Agent, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if len(comps) == 0 {
		return nil, errors.New("node: no components")
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger.With("component", "agent", "node", cfg.NodeName),
		byKind: map[string][]*compState{}, reg: prometheus.NewRegistry(), start: time.Now(),
	}
	a.metrics = newAgentMetrics(a.reg)
	a.woken = make(chan *compState, len(comps))
	var kinds []string
	for _, c := range comps {
		cs := &compState{c: c, resync: cfg.ResyncInterval}
		if r, ok := c.(Resyncer); ok && r.ResyncInterval() > 0 {
			cs.resync = r.ResyncInterval()
		}
		a.comps = append(a.comps, cs)
		for _, k := range c.Kinds() {
			if !slices.Contains(a.byKind[k], cs) {
				a.byKind[k] = append(a.byKind[k], cs)
			}
			kinds = append(kinds, k)
		}
		if col, ok := c.(prometheus.Collector); ok {
			if err := a.reg.Register(col); err != nil {
				return nil, fmt.Errorf("node: metrics of component %s: %w", c.Name(), err)
			}
		}
	}
	infos, err := syncer.KindsNamed(kinds...)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	a.sync = syncer.New(be, syncer.Config{Kinds: infos, Logger: cfg.Logger, Feed: cfg.Feed})
	a.setNotReady("not in sync with the datastore yet")
	a.heartbeat.Store(time.Now().UnixNano())

	if a.endpoints, err = serve.Listen(cfg.HealthAddr, cfg.MetricsAddr, cfg.DebugAddr); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return a, nil
}

// HealthAddr is the address /liveness and /readiness are served on, or ""
// when they are not.
func (a *Agent) HealthAddr() string { return a.endpoints.HealthAddr() }

// MetricsAddr is the address /metrics is served on, or "".
func (a *Agent) MetricsAddr() string { return a.endpoints.MetricsAddr() }

// DebugAddr is the address Go's profiler (/debug/pprof/) is served on, or "".
func (a *Agent) DebugAddr() string { return a.endpoints.DebugAddr() }

// Registry is where the agent's and the components' metrics live.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Ready reports what /readiness says: in sync, and every component's last
// apply succeeded; if not, why.
func (a *Agent) Ready() (bool, string) {
	if a.ready.Load() {
		return true, ""
	}
	return false, *a.notReady.Load()
}

func (a *Agent) setNotReady(why string) {
	a.notReady.Store(&why)
	a.ready.Store(false)
	a.metrics.ready.Set(0)
}

// Run runs the agent until ctx is done (then it returns nil) or a
// component's Runner fails. It leaves the kernel as programmed: stopping the
// agent must not open or close anything.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Stop the goroutines, then wait for them: Run also returns when a
	// Runner fails, with ctx still live.
	defer func() {
		cancel()
		wg.Wait()
	}()

	a.endpoints.Run(ctx, &wg, a.healthHandler(), promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}), a.log)

	wg.Add(1)
	go func() {
		defer wg.Done()
		a.sync.Run(ctx)
	}()
	runErr := make(chan error, len(a.comps))
	for _, cs := range a.comps {
		if w, ok := cs.c.(Waker); ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.forwardWakes(ctx, cs, w.Wake())
			}()
		}
		if r, ok := cs.c.(Runner); ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := r.Run(ctx); err != nil && ctx.Err() == nil {
					runErr <- fmt.Errorf("component %s: %w", cs.c.Name(), err)
				}
			}()
		}
	}
	a.log.Info("agent started", "health", a.HealthAddr(), "metrics", a.MetricsAddr(), "profiler", a.DebugAddr(),
		"resyncInterval", a.cfg.ResyncInterval, "minApplyInterval", a.cfg.MinApplyInterval)
	err := a.loop(ctx, runErr)
	for _, cs := range a.comps {
		if c, ok := cs.c.(Closer); ok {
			if cerr := c.Close(); cerr != nil {
				a.log.Warn("closing component", "dataplane", cs.c.Name(), "err", cerr)
			}
		}
	}
	if err != nil {
		a.log.Error("agent stopping", "err", err)
	} else {
		a.log.Info("agent stopping")
	}
	return err
}

// forwardWakes hands a component's wake-ups to the loop until ctx ends.
func (a *Agent) forwardWakes(ctx context.Context, cs *compState, wake <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-wake:
			if !ok {
				return
			}
			select {
			case a.woken <- cs:
			case <-ctx.Done():
				return
			}
		}
	}
}

// loop is the agent's one goroutine for the components: updates in,
// applies out, at most one apply per MinApplyInterval.
func (a *Agent) loop(ctx context.Context, runErr <-chan error) error {
	beat := time.NewTicker(time.Second)
	defer beat.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-runErr:
			return err
		case <-a.sync.Notify():
			a.take()
		case cs := <-a.woken:
			cs.dirty = true
		case <-timer.C:
		case <-beat.C:
		}
		a.heartbeat.Store(time.Now().UnixNano())
		if wait, ok := a.applyDue(ctx); ok {
			timer.Reset(wait)
		}
	}
}

// take routes what the syncer has to the components.
func (a *Agent) take() {
	b := a.sync.Take()
	if b.Resyncs > 0 {
		a.metrics.resyncs.Add(float64(b.Resyncs))
	}
	if b.Skipped > 0 {
		a.metrics.undecodable.Add(float64(b.Skipped))
	}
	if b.Trouble != a.trouble {
		a.trouble = b.Trouble
		switch {
		case b.Trouble != "":
			a.setNotReady(b.Trouble)
		case a.inSync:
			// The stream is back; a snapshot equal to what the agent
			// has may apply nothing, so readiness is recomputed here.
			a.updateReadiness()
		default:
			a.setNotReady("not in sync with the datastore yet")
		}
	}
	if len(b.Updates) > 0 && a.pendingSince.IsZero() {
		a.pendingSince = b.Oldest
	}
	for _, u := range b.Updates {
		a.metrics.updates.WithLabelValues(u.Kind).Inc()
		if a.log.Enabled(context.Background(), slog.LevelDebug) {
			a.log.Debug("datastore update", "kind", u.Kind, "namespace", u.Namespace, "name", u.Name,
				"deleted", u.Deleted(), "rev", u.Revision)
		}
		for _, cs := range a.byKind[u.Kind] {
			cs.c.OnUpdate(u)
			cs.dirty = true
		}
	}
	if b.InSync && !a.inSync {
		a.inSync = true
		d := time.Since(a.start)
		a.metrics.inSync.Set(1)
		a.metrics.firstSync.Set(d.Seconds())
		a.log.Info("in sync with the datastore", "after", d.Round(time.Millisecond))
		for _, cs := range a.comps {
			cs.c.OnInSync()
			cs.dirty, cs.full = true, true
		}
		a.scheduleResyncs(time.Now())
		a.setNotReady("in sync, not programmed yet")
		// The snapshot is the cold start, not an update's latency.
		a.pendingSince = time.Time{}
	}
}

// scheduleResyncs sets every component's next periodic full apply.
func (a *Agent) scheduleResyncs(now time.Time) {
	for _, cs := range a.comps {
		if cs.resync > 0 {
			cs.resyncAt = now.Add(cs.resync)
		}
	}
}

// applyDue applies every component that is dirty and due, after marking
// those whose periodic resync is due. It returns how long to wait for the
// next apply or resync, if any is waiting.
func (a *Agent) applyDue(ctx context.Context) (time.Duration, bool) {
	if !a.inSync {
		return 0, false
	}
	for {
		now := time.Now()
		var next time.Time
		earliest := func(t time.Time) {
			if next.IsZero() || t.Before(next) {
				next = t
			}
		}
		for _, cs := range a.comps {
			if !cs.resyncAt.IsZero() && !now.Before(cs.resyncAt) {
				a.log.Debug("periodic resync", "dataplane", cs.c.Name())
				cs.dirty, cs.full = true, true
				cs.resyncAt = now.Add(cs.resync)
			}
			if !cs.resyncAt.IsZero() {
				earliest(cs.resyncAt)
			}
			if cs.dirty {
				earliest(later(a.lastApply.Add(a.cfg.MinApplyInterval), cs.retryAt))
			}
		}
		if next.IsZero() {
			return 0, false
		}
		if wait := next.Sub(now); wait > 0 {
			return wait, true
		}
		a.applyNow(ctx, now)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (a *Agent) applyNow(ctx context.Context, now time.Time) {
	a.lastApply = now
	for _, cs := range a.comps {
		if !cs.dirty || cs.retryAt.After(now) {
			continue
		}
		name, full := cs.c.Name(), cs.full
		mode := "incremental"
		if full {
			mode = "full"
		}
		t0 := time.Now()
		err := cs.c.Apply(ctx, full)
		d := time.Since(t0)
		a.metrics.applyDuration.WithLabelValues(name, mode).Observe(d.Seconds())
		if err != nil {
			a.metrics.applyFailures.WithLabelValues(name).Inc()
			cs.err = err
			backoff := a.cfg.RetryInterval << min(cs.retries, 16)
			backoff = min(backoff, a.cfg.MaxRetryInterval)
			cs.retries++
			cs.retryAt = time.Now().Add(backoff)
			cs.full = true
			a.log.Error("apply failed, will retry with a full apply", "dataplane", name, "mode", mode,
				"retryIn", backoff, "attempt", cs.retries, "err", err)
			continue
		}
		if cs.err != nil {
			a.log.Info("apply succeeded again", "dataplane", name, "after", cs.retries)
		}
		cs.dirty, cs.full, cs.err, cs.retries, cs.retryAt, cs.applied = false, false, nil, 0, time.Time{}, true
		a.log.Debug("applied", "dataplane", name, "mode", mode, "took", d)
	}
	if time.Since(now) >= bigApply {
		a.returnMemory()
	}
	a.updateReadiness()
}

// bigApply is how long an apply round takes before the memory it used is
// handed back to the system at once (returnMemory).
const bigApply = 100 * time.Millisecond

// returnMemory collects the garbage of a big apply and returns the freed
// memory to the system, in the background: otherwise the runtime keeps
// the pages of a burst for minutes, and the agent looks as big as its
// biggest change ever was.
func (a *Agent) returnMemory() {
	if !a.freeing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer a.freeing.Store(false)
		debug.FreeOSMemory()
	}()
}

// updateReadiness recomputes readiness after an apply round and records
// the latency of what it programmed. Not ready names every component that
// is not, and why.
func (a *Agent) updateReadiness() {
	var why []string
	if a.trouble != "" {
		why = append(why, a.trouble)
	}
	for _, cs := range a.comps {
		switch {
		case cs.err != nil:
			why = append(why, fmt.Sprintf("%s: last apply failed (attempt %d, next in %v): %v",
				cs.c.Name(), cs.retries, time.Until(cs.retryAt).Round(time.Millisecond), cs.err))
		case !cs.applied:
			why = append(why, cs.c.Name()+": not programmed yet")
		}
	}
	if len(why) > 0 {
		a.setNotReady(strings.Join(why, "; "))
		return
	}
	if !a.programmed {
		a.programmed = true
		d := time.Since(a.start)
		a.metrics.programmed.Set(d.Seconds())
		a.log.Info("dataplane programmed, ready", "after", d.Round(time.Millisecond))
	}
	if !a.pendingSince.IsZero() && !slices.ContainsFunc(a.comps, func(cs *compState) bool { return cs.dirty }) {
		a.metrics.syncLatency.Observe(time.Since(a.pendingSince).Seconds())
		a.pendingSince = time.Time{}
	}
	a.ready.Store(true)
	a.metrics.ready.Set(1)
}

// healthHandler serves /liveness (the loop turns), /readiness (Ready) and
// the components' /status/<name> pages.
func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/liveness", func(w http.ResponseWriter, r *http.Request) {
		since := time.Since(time.Unix(0, a.heartbeat.Load()))
		if since > a.cfg.LivenessTimeout {
			http.Error(w, fmt.Sprintf("agent loop stuck for %v", since.Round(time.Second)), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	for _, cs := range a.comps {
		if sh, ok := cs.c.(StatusHandler); ok {
			mux.HandleFunc("/status/"+cs.c.Name(), sh.ServeStatus)
		}
	}
	mux.HandleFunc("/readiness", func(w http.ResponseWriter, r *http.Request) {
		if ok, why := a.Ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
