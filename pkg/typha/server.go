package typha

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tortie/tortie/pkg/datastore"
)

// ServerConfig says what a Server watches and how it serves it.
type ServerConfig struct {
	// Backend is the datastore; the server only watches it.
	Backend datastore.Backend
	// Prefixes are the datastore prefixes served (see syncer.KindsNamed).
	Prefixes []string
	// TLS, when set, is the listener's TLS (ServerTLS makes one that
	// requires and checks client certificates); nil serves plain TCP.
	TLS *tls.Config
	// Name is what the welcome tells agents this server is called.
	Name string
	// MaxLag is how many changes an agent may fall behind before it is
	// disconnected, to reconnect and take a fresh snapshot (default 100,000).
	MaxLag int
	// WriteTimeout is how long one write to an agent may block before the
	// agent is disconnected (default 10 s).
	WriteTimeout time.Duration
	// PingInterval is how often an idle connection carries a ping (default
	// 10 s); an agent that hears nothing for three intervals reconnects.
	PingInterval time.Duration
	// HandshakeTimeout bounds the TLS handshake and the hello (default 10 s).
	HandshakeTimeout time.Duration
	// RestartBackoff is the first pause before a watch that failed is
	// started again (default 1 s, doubling up to 30 s).
	RestartBackoff time.Duration
	Logger         *slog.Logger
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.MaxLag <= 0 {
		c.MaxLag = 100000
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 10 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.RestartBackoff <= 0 {
		c.RestartBackoff = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// entry is one change in the server's log, encoded once for every agent.
type entry struct {
	prefix int
	frame  []byte
	at     time.Time // when the server received it
}

// Server watches the datastore once and serves what it holds, a snapshot
// then every change in order, to any number of agents. Agents are served
// each by its own goroutine from a shared log of encoded changes: a slow
// agent falls behind in the log and never holds up the watch or the other
// agents; when it is more than MaxLag changes behind, or a write to it
// blocks for WriteTimeout, it is disconnected and takes a new snapshot when
// it reconnects.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	kvs     []map[string]*datastore.KV // per prefix: what the datastore holds
	synced  int                        // prefixes that delivered their first snapshot
	ready   chan struct{}              // closed when synced == len(prefixes)
	entries []entry
	first   uint64        // sequence number of entries[0]
	wake    chan struct{} // closed (and replaced) when entries grow
	conns   int

	// snapMu serialises encoding snapshots; snap is the latest.
	snapMu sync.Mutex
	snap   *sharedSnapshot
}

// NewServer makes a server; Run watches and Serve serves.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg = cfg.withDefaults()
	if cfg.Backend == nil {
		return nil, errors.New("typha: no datastore")
	}
	if len(cfg.Prefixes) == 0 {
		return nil, errors.New("typha: no prefixes to serve")
	}
	for i, p := range cfg.Prefixes {
		if p == "" || slices.Contains(cfg.Prefixes[:i], p) {
			return nil, fmt.Errorf("typha: prefix %q empty or given twice", p)
		}
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger.With("component", "typha"), metrics: newMetrics(),
		kvs: make([]map[string]*datastore.KV, len(cfg.Prefixes)), ready: make(chan struct{}), wake: make(chan struct{}),
	}
	for i := range s.kvs {
		s.kvs[i] = map[string]*datastore.KV{}
	}
	return s, nil
}

// Collector is the server's metrics, to register where they are served.
func (s *Server) Collector() prometheus.Collector { return s.metrics }

// Ready reports whether every prefix delivered its first snapshot: until
// then agents that connect wait.
func (s *Server) Ready() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// Connections is how many agents are connected now.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Run watches every prefix until ctx is done.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range s.cfg.Prefixes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.watch(ctx, i)
		}()
	}
	wg.Wait()
}

// watch follows one prefix: the datastore's watch lists, watches and
// resyncs by itself and ends only on an error retrying cannot fix; then a
// new one starts from a fresh list and the keys that list lacks are
// deleted, so the log always says exactly what changed.
func (s *Server) watch(ctx context.Context, i int) {
	prefix := s.cfg.Prefixes[i]
	log := s.log.With("prefix", prefix)
	first := true
	pause := s.cfg.RestartBackoff
	var stale map[string]struct{}
	var held []datastore.WatchEvent
	for ctx.Err() == nil {
		for ev := range s.cfg.Backend.Watch(ctx, prefix, 0) {
			switch ev.Type {
			case datastore.EventError:
				log.Error("watch failed, will list again", "err", ev.Err)
				continue
			case datastore.EventInSync:
				s.apply(i, held, stale)
				held, stale = nil, nil
				if first {
					s.markSynced(prefix)
					first = false
				} else {
					log.Info("resynced with the datastore")
				}
				pause = s.cfg.RestartBackoff
				continue
			}
			if stale != nil && ev.KV != nil {
				delete(stale, ev.KV.Key)
			}
			held = append(held, ev)
			if !ev.More {
				s.apply(i, held, nil)
				held = nil
			}
		}
		s.apply(i, held, nil)
		held = nil
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		stale = make(map[string]struct{}, len(s.kvs[i]))
		for k := range s.kvs[i] {
			stale[k] = struct{}{}
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

func (s *Server) markSynced(prefix string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced++
	s.log.Debug("prefix in sync", "prefix", prefix, "keys", len(s.kvs[slices.Index(s.cfg.Prefixes, prefix)]))
	if s.synced == len(s.cfg.Prefixes) {
		close(s.ready)
		s.metrics.inSync.Set(1)
		keys := 0
		for _, m := range s.kvs {
			keys += len(m)
		}
		s.log.Info("in sync with the datastore; serving", "keys", keys)
	}
}

// apply takes one datastore transaction's events (and, at the end of a
// restarted watch's list, the deletion of the stale keys it lacked) into
// what the server holds and, as one run of entries, into the log.
func (s *Server) apply(i int, evs []datastore.WatchEvent, stale map[string]struct{}) {
	gone := make([]string, 0, len(stale))
	for k := range stale {
		gone = append(gone, k)
	}
	slices.Sort(gone)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.kvs[i]
	var out []datastore.WatchEvent
	for _, ev := range evs {
		switch ev.Type {
		case datastore.EventAdded, datastore.EventModified:
			prev, had := m[ev.KV.Key]
			if had && prev.Revision == ev.KV.Revision {
				continue // a re-list found what the agents have
			}
			m[ev.KV.Key] = ev.KV
			t := datastore.EventAdded
			if had {
				t = datastore.EventModified
			}
			out = append(out, datastore.WatchEvent{Type: t, KV: ev.KV})
		case datastore.EventDeleted:
			if _, had := m[ev.KV.Key]; had {
				delete(m, ev.KV.Key)
				out = append(out, datastore.WatchEvent{Type: datastore.EventDeleted, KV: &datastore.KV{Key: ev.KV.Key, Revision: ev.KV.Revision}})
			}
		}
	}
	for _, k := range gone {
		if prev, had := m[k]; had {
			delete(m, k)
			out = append(out, datastore.WatchEvent{Type: datastore.EventDeleted, KV: &datastore.KV{Key: k, Revision: prev.Revision}})
		}
	}
	if len(out) == 0 {
		return
	}
	for j, ev := range out {
		ev.More = j < len(out)-1
		s.entries = append(s.entries, entry{prefix: i, frame: eventFrame(i, ev), at: now})
	}
	if over := len(s.entries) - s.cfg.MaxLag; over > 0 {
		// Drop a quarter more than needed so that trimming is rare; the
		// agents still behind that are disconnected when they read on.
		drop := min(over+s.cfg.MaxLag/4, len(s.entries))
		s.entries = slices.Clone(s.entries[drop:])
		s.first += uint64(drop)
	}
	close(s.wake)
	s.wake = make(chan struct{})
	s.metrics.logEntries.Set(float64(len(s.entries)))
	s.metrics.keys.Add(float64(countKeys(out)))
}

// countKeys is how the events change the number of keys held.
func countKeys(evs []datastore.WatchEvent) int {
	n := 0
	for _, ev := range evs {
		switch ev.Type {
		case datastore.EventAdded:
			n++
		case datastore.EventDeleted:
			n--
		}
	}
	return n
}

// Serve accepts agents on ln until ctx is done, then closes ln and every
// connection and returns nil; any other accept error is returned.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("typha: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

// agent is one connection being served.
type agent struct {
	s      *Server
	c      net.Conn
	w      *bufio.Writer
	log    *slog.Logger
	wanted []bool // by server prefix index
}

// disconnect reasons, the label of tortie_typha_disconnects_total.
const (
	reasonHandshake = "handshake"
	reasonHello     = "bad hello"
	reasonWrite     = "write failed"
	reasonSlow      = "too slow"
	reasonShutdown  = "shutdown"
)

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	s.metrics.accepted.Inc()
	a := &agent{s: s, c: c, log: s.log.With("remote", c.RemoteAddr().String())}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()

	reason, err := a.handshake()
	if err != nil {
		s.metrics.disconnects.WithLabelValues(reason).Inc()
		a.log.Warn("agent refused", "reason", reason, "err", err)
		return
	}
	s.mu.Lock()
	s.conns++
	s.metrics.connections.Set(float64(s.conns))
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.conns--
		s.metrics.connections.Set(float64(s.conns))
		s.mu.Unlock()
	}()
	a.log.Info("agent connected")
	reason, err = a.serve(ctx)
	if ctx.Err() != nil {
		reason = reasonShutdown
	}
	s.metrics.disconnects.WithLabelValues(reason).Inc()
	if reason == reasonShutdown {
		a.log.Debug("agent disconnected", "reason", reason)
	} else {
		a.log.Info("agent disconnected", "reason", reason, "err", err)
	}
}

// handshake completes TLS, reads the hello and sends the welcome (or an
// error frame saying why not).
func (a *agent) handshake() (string, error) {
	s := a.s
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	if err := a.c.SetDeadline(deadline); err != nil {
		return reasonHandshake, err
	}
	if s.cfg.TLS != nil {
		tc := tls.Server(a.c, s.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			return reasonHandshake, fmt.Errorf("TLS: %w", err)
		}
		a.c = tc
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			a.log = a.log.With("client", certs[0].Subject.CommonName)
		}
	}
	a.w = bufio.NewWriterSize(a.c, 64<<10)
	typ, p, _, err := readFrame(bufio.NewReader(a.c), nil)
	if err != nil {
		return reasonHello, fmt.Errorf("reading the hello: %w", err)
	}
	var h helloMsg
	if typ != frameHello {
		err = fmt.Errorf("first frame is of type %d, not a hello", typ)
	} else if err = json.Unmarshal(p, &h); err != nil {
		err = fmt.Errorf("hello: %w", err)
	} else if h.Version != ProtocolVersion {
		err = fmt.Errorf("protocol version %d; this typha speaks version %d", h.Version, ProtocolVersion)
	} else {
		a.log = a.log.With("node", h.Node)
		a.wanted = make([]bool, len(s.cfg.Prefixes))
		for _, p := range h.Prefixes {
			i := slices.Index(s.cfg.Prefixes, p)
			if i < 0 {
				err = fmt.Errorf("prefix %s is not served here (typha serves %d prefixes; see its --kinds)", p, len(s.cfg.Prefixes))
				break
			}
			a.wanted[i] = true
		}
	}
	if err != nil {
		_, _ = a.c.Write(jsonFrame(frameError, errorMsg{Error: err.Error()}))
		return reasonHello, err
	}
	w := welcomeMsg{Version: ProtocolVersion, Server: s.cfg.Name, Prefixes: s.cfg.Prefixes, PingMillis: s.cfg.PingInterval.Milliseconds()}
	if _, err := a.c.Write(jsonFrame(frameWelcome, w)); err != nil {
		return reasonWrite, err
	}
	return "", a.c.SetDeadline(time.Time{})
}

// serve sends the snapshot, then the log, until the connection fails or ctx
// is done.
func (a *agent) serve(ctx context.Context) (string, error) {
	s := a.s
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	// Wait for the server's first complete snapshot, pinging meanwhile.
	for !s.Ready() {
		select {
		case <-ctx.Done():
			return reasonShutdown, ctx.Err()
		case <-s.ready:
		case <-ping.C:
			if err := a.ping(); err != nil {
				return reasonWrite, err
			}
		}
	}
	next, err := a.snapshot()
	if err != nil {
		return reasonWrite, err
	}
	for {
		s.mu.Lock()
		if next < s.first {
			behind := s.first + uint64(len(s.entries)) - next
			s.mu.Unlock()
			_ = a.c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = a.c.Write(jsonFrame(frameError, errorMsg{Error: fmt.Sprintf("too slow: %d changes behind (at most %d); reconnect for a new snapshot", behind, s.cfg.MaxLag)}))
			return reasonSlow, fmt.Errorf("%d changes behind", behind)
		}
		batch := s.entries[next-s.first:]
		wake := s.wake
		s.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return reasonShutdown, ctx.Err()
			case <-wake:
				continue
			case <-ping.C:
				if err := a.ping(); err != nil {
					return reasonWrite, err
				}
				continue
			}
		}
		sent := false
		for _, e := range batch {
			if a.wanted[e.prefix] {
				if err := a.send(e.frame); err != nil {
					return reasonWrite, err
				}
				sent = true
			}
		}
		if sent {
			if err := a.flush(); err != nil {
				return reasonWrite, err
			}
			s.metrics.sendLatency.Observe(time.Since(batch[0].at).Seconds())
			ping.Reset(s.cfg.PingInterval)
		}
		next += uint64(len(batch))
	}
}

var framePingBytes = appendFrame(nil, framePing, func(b []byte) []byte { return b })

// ping writes a ping at once.
func (a *agent) ping() error {
	if err := a.send(framePingBytes); err != nil {
		return err
	}
	return a.flush()
}

// sharedSnapshot is one encoded snapshot, sent as it is to every agent
// that wants the same prefixes while it is recent: when many agents connect
// at once (a typha restarted, a cluster rebooted), it is encoded once, not
// once per agent.
type sharedSnapshot struct {
	next   uint64 // the first log entry it does not include
	wanted string // which prefixes it has, one byte per prefix
	frames []byte
	keys   int
}

// snapshotReuse is how many log entries an agent may be made to replay
// after a shared snapshot before a new one is encoded.
const snapshotReuse = 10000

// snapshot sends every wanted prefix's keys, each prefix ended by its
// in-sync event, and returns the sequence number of the first log entry
// the snapshot does not include.
func (a *agent) snapshot() (uint64, error) {
	s := a.s
	start := time.Now()
	snap := s.snapshotFor(a.wanted)
	if err := a.flush(); err != nil {
		return 0, err
	}
	// Written in pieces, each under the write timeout, as the log is.
	for rest := snap.frames; len(rest) > 0; {
		n := min(len(rest), 256<<10)
		if err := a.c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)); err != nil {
			return 0, err
		}
		if _, err := a.c.Write(rest[:n]); err != nil {
			return 0, err
		}
		rest = rest[n:]
	}
	s.metrics.snapshotKeys.Set(float64(snap.keys))
	s.metrics.snapshotBytes.Set(float64(len(snap.frames)))
	s.metrics.snapshotSeconds.Observe(time.Since(start).Seconds())
	a.log.Debug("snapshot sent", "keys", snap.keys, "bytes", len(snap.frames), "took", time.Since(start).Round(time.Millisecond))
	return snap.next, nil
}

// snapshotFor returns a recent shared snapshot of the wanted prefixes, or
// encodes one.
func (s *Server) snapshotFor(wanted []bool) *sharedSnapshot {
	sig := make([]byte, len(wanted))
	for i, w := range wanted {
		if w {
			sig[i] = 1
		}
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.Lock()
	end := s.first + uint64(len(s.entries))
	if c := s.snap; c != nil && c.wanted == string(sig) && c.next >= s.first && end-c.next <= snapshotReuse {
		s.mu.Unlock()
		return c
	}
	kvs := make([][]*datastore.KV, len(s.cfg.Prefixes))
	for i, m := range s.kvs {
		if !wanted[i] {
			continue
		}
		kvs[i] = make([]*datastore.KV, 0, len(m))
		for _, kv := range m {
			kvs[i] = append(kvs[i], kv)
		}
	}
	s.mu.Unlock()
	snap := &sharedSnapshot{next: end, wanted: string(sig)}
	for i, list := range kvs {
		if !wanted[i] {
			continue
		}
		for _, kv := range list {
			snap.frames = append(snap.frames, eventFrame(i, datastore.WatchEvent{Type: datastore.EventAdded, KV: kv})...)
		}
		snap.frames = append(snap.frames, eventFrame(i, datastore.WatchEvent{Type: datastore.EventInSync})...)
		snap.keys += len(list)
	}
	s.snap = snap
	s.metrics.snapshotsEncoded.Inc()
	return snap
}

// send buffers a frame; a full buffer is written out under the write
// timeout.
func (a *agent) send(f []byte) error {
	if a.w.Available() < len(f) {
		if err := a.c.SetWriteDeadline(time.Now().Add(a.s.cfg.WriteTimeout)); err != nil {
			return err
		}
	}
	_, err := a.w.Write(f)
	return err
}

func (a *agent) flush() error {
	if err := a.c.SetWriteDeadline(time.Now().Add(a.s.cfg.WriteTimeout)); err != nil {
		return err
	}
	return a.w.Flush()
}
