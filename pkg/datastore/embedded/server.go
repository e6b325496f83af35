// Package embedded runs a single-member etcd inside the process: the
// datastore `tortie datastore serve` and the tests use. It is its own package
// so that binaries that only talk to a datastore (the CNI plugin, started
// for every container) do not link etcd's server and pay its start-up.
package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/tortie/tortie/pkg/datastore"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ServeConfig configures the embedded single-member etcd.
type ServeConfig struct {
	// DataDir holds the member's data (and its peer socket); required.
	DataDir string
	// ListenClientURL is the one TCP port opened (default
	// http://127.0.0.1:2379). Port 0 picks a free port; Endpoint tells it.
	ListenClientURL string
	// MaxTxnOps is the most operations one transaction may carry (default
	// 16384, etcd's own is 128), so a big manifest applies in one txn.
	MaxTxnOps uint
	// MaxRequestBytes is the largest request accepted (default 64 MiB).
	MaxRequestBytes uint
	// Logger receives etcd's warnings and errors (default slog.Default()).
	Logger *slog.Logger
	// UnsafeNoFsync skips fsync (etcd's --unsafe-no-fsync): the data
	// survives this process's end, not the machine's. For tests and labs,
	// whose data is thrown away, on a machine whose disk stalls under
	// other work (a 14 s fdatasync was seen failing a 10 s CNI timeout).
	UnsafeNoFsync bool
}

const (
	defaultMaxTxnOps       = 16384
	defaultMaxRequestBytes = 64 << 20
	// startTimeout bounds how long Serve waits for the member to be ready.
	startTimeout = time.Minute
	// autoCompactionRetention keeps an hour of history: watchers that fall
	// further behind resync by listing, and the store does not grow without
	// bound towards etcd's space quota.
	autoCompactionRetention = "1h"
)

// Server is a running embedded etcd.
type Server struct {
	etcd     *embed.Etcd
	endpoint string
	closing  chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// Serve starts a single-member etcd in cfg.DataDir and returns once it
// serves clients. It opens exactly one port, the client port: a single
// member has no peers, so it gets no peer listener (see peerURL). It stops
// when ctx is done or Close is called.
func Serve(ctx context.Context, cfg ServeConfig) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("datastore: serve: no data dir")
	}
	if cfg.ListenClientURL == "" {
		cfg.ListenClientURL = datastore.DefaultEndpoint
	}
	if cfg.MaxTxnOps == 0 {
		cfg.MaxTxnOps = defaultMaxTxnOps
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = defaultMaxRequestBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("datastore: serve: %w", err)
	}
	// etcd wants its data private (and warns otherwise).
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("datastore: serve: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("datastore: serve: %w", err)
	}
	clientURL, err := url.Parse(cfg.ListenClientURL)
	if err != nil || clientURL.Scheme != "http" || clientURL.Port() == "" {
		return nil, fmt.Errorf("datastore: serve: client URL %q: want http://<ip>:<port>", cfg.ListenClientURL)
	}
	peer := peerURL(dir)

	ec := embed.NewConfig()
	ec.Name = "tortie"
	ec.Dir = dir
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = nil
	ec.AdvertisePeerUrls = []url.URL{peer}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.MaxTxnOps = cfg.MaxTxnOps
	ec.MaxRequestBytes = cfg.MaxRequestBytes
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = autoCompactionRetention
	ec.LogLevel = "warn"
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	core := &slogCore{log: cfg.Logger.With("component", "etcd"), stopping: new(atomic.Bool)}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core))

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("datastore: serve %s in %s: %w", cfg.ListenClientURL, dir, err)
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("datastore: serve %s: %w", cfg.ListenClientURL, err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("datastore: serve %s: not ready after %v", cfg.ListenClientURL, startTimeout)
	}

	endpoint := *clientURL
	endpoint.Host = e.Clients[0].Addr().String() // the real port when asked for port 0
	s := &Server{etcd: e, endpoint: endpoint.String(), closing: make(chan struct{}), done: make(chan struct{})}
	go func() {
		select {
		case <-ctx.Done():
		case <-s.closing:
		case <-e.Server.StopNotify():
		case err := <-e.Err():
			cfg.Logger.Error("embedded etcd failed", "endpoint", s.endpoint, "err", err)
		}
		core.stopping.Store(true)
		e.Close()
		close(s.done)
	}()
	return s, nil
}

// peerURL is the member's advertised raft peer URL. A single member never
// talks to peers, so nothing listens on it: the embedded server opens no peer
// port at all. It names a socket path in the data dir only so that it is
// unique per data dir (it feeds the member and cluster IDs) and says where
// a peer listener would live.
func peerURL(dir string) url.URL {
	return url.URL{Scheme: "unix", Path: filepath.Join(dir, "peer.sock")}
}

// Endpoint is the client URL to give to New.
func (s *Server) Endpoint() string { return s.endpoint }

// Close stops the server and waits until it has stopped.
func (s *Server) Close() error {
	s.stopOnce.Do(func() { close(s.closing) })
	<-s.done
	return nil
}

// Done is closed once the server has stopped, for whatever reason.
func (s *Server) Done() <-chan struct{} { return s.done }

// expectedWarnings are warnings etcd logs on every start of a server
// configured as Serve does on purpose; they are logged at debug level.
var expectedWarnings = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"exceeded recommended request limit":                                                   true, // MaxRequestBytes, for big manifests
	"simple token is not cryptographically signed":                                         true, // auth is off
}

// maxLogValue caps one etcd log field.
const maxLogValue = 512

// slogCore routes etcd's zap logs at warn and above to slog. What etcd says
// while it is being stopped (listeners closing, requests cancelled) is the
// expected noise of a shutdown and goes to debug.
type slogCore struct {
	log      *slog.Logger
	fields   []zapcore.Field
	stopping *atomic.Bool
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, fields: append(c.fields[:len(c.fields):len(c.fields)], fields...), stopping: c.stopping}
}

func (c *slogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) && c.log.Enabled(context.Background(), c.level(ent)) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *slogCore) level(ent zapcore.Entry) slog.Level {
	if expectedWarnings[ent.Message] || c.stopping.Load() {
		return slog.LevelDebug
	}
	return slogLevel(ent.Level)
}

func (c *slogCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		v := enc.Fields[k]
		// etcd quotes whole requests in some warnings ("apply request took
		// too long"): megabytes of user data for a big transaction.
		if s := fmt.Sprint(v); len(s) > maxLogValue {
			v = fmt.Sprintf("%s... (%d bytes)", s[:maxLogValue], len(s))
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	c.log.LogAttrs(context.Background(), c.level(ent), ent.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l >= zapcore.WarnLevel:
		return slog.LevelWarn
	case l >= zapcore.InfoLevel:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}
