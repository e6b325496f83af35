package kubecontrollers

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// reconciler is one controller's logic: make the datastore right for one
// key, and list every key there is (on either side) for a full reconcile.
type reconciler interface {
	sync(ctx context.Context, key string) error
	keys() []string
}

// controller drives a reconciler: one rate-limited workqueue of keys (a
// key is never worked on by two workers at once, and a key queued many
// times while waiting is worked on once, from the latest state), workers,
// and a full reconcile every interval.
type controller struct {
	name      string
	r         reconciler
	q         workqueue.TypedRateLimitingInterface[string]
	workers   int
	interval  time.Duration
	timeout   time.Duration
	log       *slog.Logger
	m         *metrics
	termStart time.Time

	// firstPending are the keys of the first full reconcile not yet
	// reconciled; firstDone is closed when none is left.
	mu           sync.Mutex
	firstPending map[string]bool
	firstDone    chan struct{}
	lastErr      atomic.Pointer[string]

	// busySince is, per worker, when its current key started (0: idle),
	// for liveness.
	busySince []atomic.Int64

	// wait, if set, is what must be there before the workers start and
	// the first full reconcile (a source that may not exist yet); false:
	// ctx ended. Until it returns, waiting is the controller's readiness.
	wait     func(ctx context.Context) bool
	waiting  func() (ready bool, why string)
	waitDone atomic.Bool
}

func newController(name string, r reconciler, cfg *Config, m *metrics, termStart time.Time) *controller {
	c := &controller{
		name: name, r: r, workers: cfg.Workers, interval: cfg.ReconcileInterval, timeout: cfg.SyncTimeout,
		log: cfg.Logger.With("controller", name), m: m, termStart: termStart,
		q: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](cfg.RetryInterval, cfg.MaxRetryInterval),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
		firstDone: make(chan struct{}),
	}
	c.busySince = make([]atomic.Int64, c.workers)
	return c
}

func (c *controller) enqueue(key string) { c.q.Add(key) }

func (c *controller) enqueueAfter(key string, d time.Duration) { c.q.AddAfter(key, d) }

// enqueueAll queues every key: a full reconcile.
func (c *controller) enqueueAll() {
	keys := c.r.keys()
	c.m.fullSyncs.WithLabelValues(c.name).Inc()
	c.mu.Lock()
	if c.firstPending == nil {
		c.firstPending = make(map[string]bool, len(keys))
		for _, k := range keys {
			c.firstPending[k] = true
		}
		c.checkFirstLocked()
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.q.Add(k)
	}
}

func (c *controller) checkFirstLocked() {
	if len(c.firstPending) > 0 {
		return
	}
	select {
	case <-c.firstDone:
	default:
		close(c.firstDone)
		d := time.Since(c.termStart)
		c.m.firstSync.WithLabelValues(c.name).Set(d.Seconds())
		c.log.Info("first full reconcile done", "after", d.Round(time.Millisecond))
	}
}

func (c *controller) firstSynced() bool {
	select {
	case <-c.firstDone:
		return true
	default:
		return false
	}
}

// run starts the workers and the periodic full reconcile; it returns when
// ctx is done and the workers have stopped.
func (c *controller) run(ctx context.Context) {
	if c.wait != nil {
		if !c.wait(ctx) {
			c.q.ShutDown()
			return
		}
		c.waitDone.Store(true)
	}
	var wg sync.WaitGroup
	for i := range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx, i) {
			}
		}()
	}
	c.enqueueAll()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.q.ShutDown()
			wg.Wait()
			return
		case <-t.C:
			c.log.Debug("full reconcile")
			c.enqueueAll()
		}
		c.m.queueDepth.WithLabelValues(c.name).Set(float64(c.q.Len()))
	}
}

func (c *controller) next(ctx context.Context, worker int) bool {
	key, shutdown := c.q.Get()
	if shutdown {
		return false
	}
	defer c.q.Done(key)
	start := time.Now()
	c.busySince[worker].Store(start.UnixNano())
	sctx, cancel := context.WithTimeout(ctx, c.timeout)
	err := c.r.sync(sctx, key)
	cancel()
	c.busySince[worker].Store(0)
	c.m.syncDuration.WithLabelValues(c.name).Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() != nil {
			return true // the term ended; the next one reconciles everything
		}
		c.m.syncs.WithLabelValues(c.name, "error").Inc()
		msg := fmt.Sprintf("%s: %v", key, err)
		c.lastErr.Store(&msg)
		c.log.Warn("reconcile failed; will retry", "key", key, "retries", c.q.NumRequeues(key), "error", err)
		c.q.AddRateLimited(key)
		return true
	}
	c.m.syncs.WithLabelValues(c.name, "ok").Inc()
	c.q.Forget(key)
	c.mu.Lock()
	if c.firstPending[key] {
		delete(c.firstPending, key)
		c.checkFirstLocked()
	}
	c.mu.Unlock()
	return true
}

// stuckFor is how long the longest-running current key has been worked
// on.
func (c *controller) stuckFor(now time.Time) time.Duration {
	var worst time.Duration
	for i := range c.busySince {
		if s := c.busySince[i].Load(); s != 0 {
			worst = max(worst, now.Sub(time.Unix(0, s)))
		}
	}
	return worst
}

// status is the controller's line on /readiness.
func (c *controller) status() (ready bool, why string) {
	if c.waiting != nil && !c.waitDone.Load() {
		return c.waiting()
	}
	if !c.firstSynced() {
		c.mu.Lock()
		n := len(c.firstPending)
		c.mu.Unlock()
		why = fmt.Sprintf("%s: first full reconcile not done (%d keys left)", c.name, n)
		if e := c.lastErr.Load(); e != nil {
			why += "; last error: " + *e
		}
		return false, why
	}
	return true, ""
}
