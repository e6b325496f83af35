package agentconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/syncer"
)

// ErrRestart is what the agent stops with when a setting it cannot change
// live has changed; tortie-node then starts itself again (a restart
// reconciles the kernel in place), as Felix does.
var ErrRestart = errors.New("configuration changed: restarting to apply it")

// Component follows FelixConfiguration inside the agent's loop: the log
// level and the Go runtime's settings change live; a change of any other
// honoured setting stops the agent with ErrRestart; bpfEnabled keeps the
// agent not ready.
type Component struct {
	in      Input
	running Settings // what the agent was built with
	level   *slog.LevelVar
	log     *slog.Logger

	errs    []string // refused values last logged
	restart chan error
	asked   bool
}

// NewComponent follows the configuration for in.NodeName. running is the
// Settings the agent was built with; level is the agent's log level,
// changed live.
func NewComponent(in Input, running Settings, level *slog.LevelVar, log *slog.Logger) *Component {
	in.Global, in.Node = nil, nil // the watch delivers them
	return &Component{in: in, running: running, level: level, log: log.With("component", "config"), restart: make(chan error, 1)}
}

func (c *Component) Name() string    { return "config" }
func (c *Component) Kinds() []string { return []string{v3.KindFelixConfiguration} }
func (c *Component) OnInSync()       {}

// OnUpdate keeps this node's and the global FelixConfiguration.
func (c *Component) OnUpdate(u syncer.Update) {
	var p **v3.FelixConfiguration
	switch u.Name {
	case "default":
		p = &c.in.Global
	case "node." + c.in.NodeName:
		p = &c.in.Node
	default:
		return
	}
	fc, _ := u.Resource.(*v3.FelixConfiguration)
	*p = fc
}

// Apply resolves the settings again and acts on what changed.
func (c *Component) Apply(_ context.Context, _ bool) error {
	res := Resolve(c.in)
	var errs []string
	for _, err := range res.Errors {
		errs = append(errs, err.Error())
	}
	if !slices.Equal(errs, c.errs) {
		for _, e := range errs {
			c.log.Warn("configuration value refused; the next layer's value applies", "err", e)
		}
		c.errs = errs
	}
	s := res.Settings
	if lv := SlogLevel(s.LogSeverityScreen); c.level != nil && c.level.Level() != lv {
		c.log.Info("log level changed", "logSeverityScreen", s.LogSeverityScreen, "from", res.Sources["logSeverityScreen"])
		c.level.Set(lv)
	}
	if s.runtimeChanged(c.running) {
		c.log.Info("Go runtime settings changed", "applied", ApplyRuntime(s, c.in.Env))
		c.running.GoGCThreshold, c.running.GoMemoryLimitMB, c.running.GoMaxProcs = s.GoGCThreshold, s.GoMemoryLimitMB, s.GoMaxProcs
	}
	if changed := c.running.Changed(s); len(changed) > 0 && !c.asked {
		c.asked = true
		var from []string
		for _, f := range changed {
			from = append(from, fmt.Sprintf("%s (%s)", f, res.Sources[f]))
		}
		c.restart <- fmt.Errorf("%w: %s", ErrRestart, strings.Join(from, ", "))
	}
	if s.BPFEnabled {
		return fmt.Errorf("bpfEnabled is true (%s): tortie has no eBPF dataplane; policy stays enforced by nftables; set bpfEnabled to false", res.Sources["bpfEnabled"])
	}
	return nil
}

// Run stops the agent with ErrRestart when Apply asks for a restart.
func (c *Component) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-c.restart:
		return err
	}
}

// SlogLevel is the slog level of a Felix log severity (as LogLevel
// normalises it).
func SlogLevel(severity string) slog.Level {
	switch severity {
	case "Debug":
		return slog.LevelDebug
	case "Warning":
		return slog.LevelWarn
	case "Error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
