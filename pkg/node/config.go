package node

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/tortie/tortie/pkg/syncer"
)

// Config is the agent's own configuration; the components have theirs.
type Config struct {
	// NodeName is this host's Node name (required).
	NodeName string
	// ResyncInterval is how often every component compares the kernel with
	// its desired state and repairs drift (default 90s; negative: never).
	ResyncInterval time.Duration
	// MinApplyInterval is the least time between two applies: updates that
	// arrive meanwhile are applied together (default 20ms). The first update
	// after a quiet period is applied at once.
	MinApplyInterval time.Duration
	// RetryInterval is the first pause before a failed apply is retried
	// (default 250ms, doubling up to MaxRetryInterval, default 30s).
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// LivenessTimeout is how long the loop may go without a turn before
	// /liveness fails (default 60s; an apply in progress counts as stuck
	// only after this long).
	LivenessTimeout time.Duration
	// HealthAddr and MetricsAddr are where /liveness and /readiness, and
	// /metrics, are served ("host:port"; port 0 picks one; empty: not
	// served). tortie-node's defaults are :9099 and :9091.
	HealthAddr  string
	MetricsAddr string
	// DebugAddr is where Go's profiler is served (/debug/pprof/; empty:
	// not served, the default). FelixConfiguration debugHost/debugPort.
	DebugAddr string
	// Feed, when set, is where the datastore's resources come from (a
	// typha.Client) instead of watching the datastore directly.
	Feed syncer.Feed
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Defaults fills in what is unset.
func (c Config) Defaults() Config {
	if c.ResyncInterval == 0 {
		c.ResyncInterval = 90 * time.Second
	}
	if c.MinApplyInterval == 0 {
		c.MinApplyInterval = 20 * time.Millisecond
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = 250 * time.Millisecond
	}
	if c.MaxRetryInterval == 0 {
		c.MaxRetryInterval = 30 * time.Second
	}
	if c.LivenessTimeout == 0 {
		c.LivenessTimeout = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports a configuration the agent cannot run with.
func (c Config) Validate() error {
	if c.NodeName == "" {
		return fmt.Errorf("node name is empty")
	}
	if c.MinApplyInterval < 0 {
		return fmt.Errorf("minimum apply interval %v is negative", c.MinApplyInterval)
	}
	if c.RetryInterval <= 0 || c.MaxRetryInterval < c.RetryInterval {
		return fmt.Errorf("retry interval %v, maximum %v: want 0 < interval <= maximum", c.RetryInterval, c.MaxRetryInterval)
	}
	if c.LivenessTimeout <= time.Second {
		return fmt.Errorf("liveness timeout %v: want more than 1s", c.LivenessTimeout)
	}
	return nil
}
