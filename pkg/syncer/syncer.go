package syncer

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

// Update is one resource created or changed (Resource set) or deleted
// (Resource nil). Kind, Namespace and Name identify the resource the same
// way for every update of it, deletes included.
type Update struct {
	Kind      string
	Namespace string
	Name      string
	Resource  v3.Resource
	// Value is the stored value of a raw kind (one outside the v3 API,
	// such as KindIPAMBlock), undecoded; nil for a delete and for v3 kinds.
	Value []byte
	// Key and Revision are where and at which etcd revision the change
	// was seen; for logs and debugging.
	Key      string
	Revision int64
}

// Deleted reports whether the update removes the resource.
func (u Update) Deleted() bool { return u.Resource == nil && u.Value == nil }

// Batch is everything that arrived since the previous Take.
type Batch struct {
	// Updates in arrival order (per kind, the datastore's order).
	Updates []Update
	// InSync is true once every watched prefix has delivered its first
	// complete snapshot, and stays true. Updates that arrived before that
	// moment are in the batch that first says InSync, or an earlier one.
	InSync bool
	// Oldest is when the first of Updates arrived (zero when none did):
	// what the agent measures its sync latency from.
	Oldest time.Time
	// Resyncs counts prefixes that listed again since the previous batch
	// (compaction, a watch restarted after a failure), after their first
	// snapshot.
	Resyncs int
	// Skipped counts values that could not be decoded.
	Skipped int
	// Trouble is what keeps the syncer from its feed now (no typha
	// reachable, a stream that broke), "" when nothing does. The syncer
	// retries by itself; the agent is not ready meanwhile.
	Trouble string
}

// Kind is one datastore prefix the syncer lists and watches.
type Kind struct {
	// Kind names it as updates do: a v3 kind ("IPPool") or a raw kind.
	Kind   string
	Prefix string
	// Info is the v3 kind, whose values are decoded into Update.Resource;
	// nil for a raw kind, whose values arrive undecoded in Update.Value.
	Info *v3.KindInfo
}

// Raw kinds: datastore prefixes outside the v3 API that a component needs.
const (
	// KindIPAMBlock is Calico's IPAM blocks (one key per block, named by
	// its CIDR); routing reads which node each block is affine to.
	KindIPAMBlock = "IPAMBlock"
	// IPAMBlockPrefix is where Calico's etcd layout keeps them.
	IPAMBlockPrefix = "/calico/ipam/v2/assignment/"
)

var rawKinds = map[string]string{KindIPAMBlock: IPAMBlockPrefix}

// Config says what to watch.
type Config struct {
	// Kinds to list and watch, one prefix each (see KindsNamed).
	Kinds []Kind
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// RestartBackoff is the first pause before a watch that ended on an
	// error is started again (default 1s, doubling up to 30s).
	RestartBackoff time.Duration
	// Feed, when set, delivers every kind over one stream (tortie-typha)
	// and the syncer watches nothing itself.
	Feed Feed
	// MaxPending is how many updates may wait for Take before the watches
	// wait for it (default DefaultMaxPending). Without a bound a consumer
	// slower than decoding, as an agent building its state from 100,000
	// endpoints is, holds much of the datastore decoded twice.
	MaxPending int
}

// DefaultMaxPending is Config.MaxPending's default: a few milliseconds of a
// consumer's work, about 10 MB of decoded endpoints.
const DefaultMaxPending = 8192

// Feed delivers the events of many prefixes over one stream: each prefix's
// snapshot ended by its EventInSync, then its changes. typha.Client is one.
type Feed interface {
	// Stream calls handle with each event, the prefix given by its index
	// in prefixes, until the stream ends (with why) or ctx is done.
	Stream(ctx context.Context, prefixes []string, handle func(i int, ev datastore.WatchEvent)) error
}

const maxRestartBackoff = 30 * time.Second

// Syncer lists and watches Config.Kinds. Take and Notify are safe to use
// from another goroutine than Run's.
type Syncer struct {
	be   datastore.Backend
	cfg  Config
	log  *slog.Logger
	note chan struct{}

	mu      sync.Mutex
	room    sync.Cond // Take made room in pending, or Run ended
	stopped bool      // Run's ctx is done: emit waits no more
	pending []Update
	oldest  time.Time
	synced  int // prefixes that delivered their first snapshot
	resyncs int
	skipped int
	trouble string
}

// New returns a syncer on be. Nothing happens until Run.
func New(be datastore.Backend, cfg Config) *Syncer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	s := &Syncer{be: be, cfg: cfg, log: cfg.Logger.With("component", "syncer"), note: make(chan struct{}, 1)}
	s.room.L = &s.mu
	return s
}

// KindsNamed looks kinds up by their manifest names ("IPPool") or raw kind
// names (KindIPAMBlock); the result is sorted and without duplicates.
func KindsNamed(names ...string) ([]Kind, error) {
	var out []Kind
	for _, n := range names {
		if slices.ContainsFunc(out, func(k Kind) bool { return k.Kind == n }) {
			continue
		}
		if p, ok := rawKinds[n]; ok {
			out = append(out, Kind{Kind: n, Prefix: p})
			continue
		}
		info, ok := v3.KindByKind(n)
		if !ok {
			return nil, fmt.Errorf("syncer: unknown kind %q", n)
		}
		out = append(out, Kind{Kind: info.Kind, Prefix: client.KindPrefix(info, ""), Info: info})
	}
	slices.SortFunc(out, func(a, b Kind) int { return strings.Compare(a.Kind, b.Kind) })
	return out, nil
}

// Notify receives a value whenever a batch may be waiting; then call Take.
// Several arrivals may share one notification.
func (s *Syncer) Notify() <-chan struct{} { return s.note }

// Take returns and clears what arrived since the previous Take. It never
// blocks on the watchers for longer than an append.
func (s *Syncer) Take() Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := Batch{
		Updates: s.pending,
		InSync:  s.synced == len(s.cfg.Kinds),
		Oldest:  s.oldest,
		Resyncs: s.resyncs,
		Skipped: s.skipped,
		Trouble: s.trouble,
	}
	s.pending, s.oldest, s.resyncs, s.skipped = nil, time.Time{}, 0, 0
	s.room.Broadcast()
	return b
}

// Run watches every kind (or takes them from the feed) until ctx is done.
func (s *Syncer) Run(ctx context.Context) {
	s.mu.Lock()
	s.stopped = false
	s.mu.Unlock()
	defer context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.stopped = true
		s.room.Broadcast()
		s.mu.Unlock()
	})()
	if s.cfg.Feed != nil {
		s.runFeed(ctx)
		return
	}
	var wg sync.WaitGroup
	for _, k := range s.cfg.Kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.watchKind(ctx, k)
		}()
	}
	if len(s.cfg.Kinds) == 0 {
		s.signal()
	}
	wg.Wait()
}

func (s *Syncer) signal() {
	select {
	case s.note <- struct{}{}:
	default:
	}
}

// emit queues us for Take, first waiting while MaxPending updates are
// queued (us, one watch event's updates, goes in whole).
func (s *Syncer) emit(us ...Update) {
	if len(us) == 0 {
		return
	}
	s.mu.Lock()
	for len(s.pending) >= s.cfg.MaxPending && !s.stopped {
		s.room.Wait()
	}
	if len(s.pending) == 0 {
		s.oldest = time.Now()
	}
	s.pending = append(s.pending, us...)
	s.mu.Unlock()
	s.signal()
}

// sent is what the consumer was last told about one key.
type sent struct {
	ns, name string
	rev      int64
}

// kindWatch is the state of one kind's watch: what the consumer has been
// told per key, which is what deletes and identity changes are computed
// from.
type kindWatch struct {
	s      *Syncer
	k      Kind
	prefix string
	log    *slog.Logger
	known  map[string]sent
	// stale are the keys the consumer has that a restarted watch has not
	// listed yet; whatever is left at its InSync is gone.
	stale map[string]struct{}
	// held are updates of a watch response whose last event has not
	// arrived yet: one transaction reaches the consumer as one batch.
	held []Update
	more bool
	// first is true until the first snapshot was delivered.
	first bool
}

// emit hands an update on, or holds it while more of its watch response
// follows.
func (w *kindWatch) emit(u Update) {
	if w.more {
		w.held = append(w.held, u)
		return
	}
	w.s.emit(append(w.held, u)...)
	w.held = nil
}

// flush hands on what is held.
func (w *kindWatch) flush() {
	w.s.emit(w.held...)
	w.held = nil
}

func (s *Syncer) newKindWatch(k Kind) *kindWatch {
	return &kindWatch{s: s, k: k, prefix: k.Prefix, known: map[string]sent{}, first: true, log: s.log.With("kind", k.Kind)}
}

// handle takes one event of the kind's watch.
func (w *kindWatch) handle(ev datastore.WatchEvent) {
	w.more = ev.More
	switch ev.Type {
	case datastore.EventAdded, datastore.EventModified:
		w.put(ev.KV)
	case datastore.EventDeleted:
		w.remove(ev.KV.Key, ev.KV.Revision)
	case datastore.EventInSync:
		w.inSync(w.first)
		w.first = false
	case datastore.EventError:
		w.log.Error("watch failed, will list again", "prefix", w.prefix, "err", ev.Err)
	}
	if !w.more {
		w.flush()
	}
}

// ended hands on what is held when the watch ends, and takes every key the
// consumer has as stale until the next watch lists it again.
func (w *kindWatch) ended() {
	w.more = false
	w.flush()
	w.stale = make(map[string]struct{}, len(w.known))
	for key := range w.known {
		w.stale[key] = struct{}{}
	}
}

func (s *Syncer) watchKind(ctx context.Context, k Kind) {
	w := s.newKindWatch(k)
	pause := s.cfg.RestartBackoff
	for ctx.Err() == nil {
		// The datastore's watch lists, watches and resyncs by itself; it
		// ends only on an error retrying cannot fix (or ctx). Then start
		// over from a fresh list, and delete what that list lacks.
		for ev := range s.be.Watch(ctx, w.prefix, 0) {
			w.handle(ev)
			if ev.Type == datastore.EventInSync {
				pause = s.cfg.RestartBackoff
			}
		}
		w.ended()
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, maxRestartBackoff)
	}
}

// runFeed takes every kind from one stream (a typha). Each connection
// starts with a complete snapshot; what the consumer is told is the
// difference from what it has, as after a watch restarted.
func (s *Syncer) runFeed(ctx context.Context) {
	ws := make([]*kindWatch, len(s.cfg.Kinds))
	prefixes := make([]string, len(s.cfg.Kinds))
	for i, k := range s.cfg.Kinds {
		ws[i] = s.newKindWatch(k)
		prefixes[i] = k.Prefix
	}
	pause := s.cfg.RestartBackoff
	for ctx.Err() == nil {
		synced, streamed := 0, false
		err := s.cfg.Feed.Stream(ctx, prefixes, func(i int, ev datastore.WatchEvent) {
			streamed = true
			ws[i].handle(ev)
			if ev.Type == datastore.EventInSync {
				if synced++; synced == len(ws) {
					s.setTrouble("")
				}
			}
		})
		if streamed {
			// The typha answered and streamed: whatever cut the stream
			// (a snapshot that timed out while many agents connected),
			// try again soon rather than after a backoff grown by
			// earlier failures.
			pause = s.cfg.RestartBackoff
		}
		for _, w := range ws {
			w.ended()
		}
		if ctx.Err() != nil {
			return
		}
		s.setTrouble(err.Error())
		// Spread the reconnections of many agents that lost the same
		// typha: between half and the whole pause.
		wait := pause/2 + rand.N(pause/2+1)
		s.log.Warn("no stream from typha; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		pause = min(2*pause, maxRestartBackoff)
	}
}

// setTrouble records what keeps the syncer from its source ("" once it
// streams again) and tells the consumer.
func (s *Syncer) setTrouble(why string) {
	s.mu.Lock()
	changed := s.trouble != why
	s.trouble = why
	s.mu.Unlock()
	if changed {
		s.signal()
	}
}

func (w *kindWatch) inSync(first bool) {
	if first && w.k.Kind == v3.KindProfile {
		// Calico's built-in profile exists in every datastore without being
		// stored (Felix's syncer hands it out the same way).
		w.emit(Update{Kind: v3.KindProfile, Name: client.DefaultAllowProfileName, Resource: client.DefaultAllowProfile(), Key: "(built in)"})
	}
	if w.stale != nil {
		gone := make([]string, 0, len(w.stale))
		for key := range w.stale {
			gone = append(gone, key)
		}
		slices.Sort(gone)
		for _, key := range gone {
			w.remove(key, 0)
		}
		w.stale = nil
	}
	w.s.mu.Lock()
	if first {
		w.s.synced++
	} else {
		w.s.resyncs++
	}
	w.s.mu.Unlock()
	w.s.signal()
	if first {
		w.log.Debug("snapshot delivered", "prefix", w.prefix, "keys", len(w.known))
	} else {
		w.log.Info("resynced with the datastore", "prefix", w.prefix, "keys", len(w.known))
	}
}

func (w *kindWatch) put(kv *datastore.KV) {
	delete(w.stale, kv.Key)
	prev, had := w.known[kv.Key]
	if had && prev.rev == kv.Revision {
		return // a re-list found what the consumer already has
	}
	r, value, ns, name, err := w.decode(kv)
	if err == nil && w.k.Kind == v3.KindProfile && name == client.DefaultAllowProfileName {
		err = fmt.Errorf("profile %s is built in; a stored one is ignored", name)
	}
	if err != nil {
		w.s.mu.Lock()
		w.s.skipped++
		w.s.mu.Unlock()
		if had {
			// Calico does the same: a value that cannot be read is as good
			// as gone, and keeping the old one would pretend otherwise.
			w.log.Warn("undecodable value, treating the resource as deleted", "key", kv.Key, "rev", kv.Revision, "err", err)
			w.remove(kv.Key, kv.Revision)
		} else {
			w.log.Warn("undecodable value, skipped", "key", kv.Key, "rev", kv.Revision, "err", err)
		}
		return
	}
	if had && (prev.ns != ns || prev.name != name) {
		// Same key, other identity (the stored metadata's name changed
		// under the same key, as another writer may do): the old identity
		// is gone.
		w.emit(Update{Kind: w.k.Kind, Namespace: prev.ns, Name: prev.name, Key: kv.Key, Revision: kv.Revision})
	}
	w.known[kv.Key] = sent{ns: ns, name: name, rev: kv.Revision}
	w.emit(Update{Kind: w.k.Kind, Namespace: ns, Name: name, Resource: r, Value: value, Key: kv.Key, Revision: kv.Revision})
}

func (w *kindWatch) remove(key string, rev int64) {
	delete(w.stale, key)
	prev, had := w.known[key]
	if !had {
		return // never delivered (it could not be decoded)
	}
	delete(w.known, key)
	w.emit(Update{Kind: w.k.Kind, Namespace: prev.ns, Name: prev.name, Key: key, Revision: rev})
}

// decode reads a value and works out its identity: the namespace from the
// key (the key is what makes it unique), the name from the value (a policy's
// stored metadata carries the name the user gave) or else from the key. A
// raw kind's value is handed on as it is, named by its key.
func (w *kindWatch) decode(kv *datastore.KV) (r v3.Resource, value []byte, ns, name string, err error) {
	rest, ok := strings.CutPrefix(kv.Key, w.prefix)
	if !ok || rest == "" {
		return nil, nil, "", "", fmt.Errorf("key outside %s", w.prefix)
	}
	if w.k.Info == nil {
		// A raw kind is named by the rest of its key, which may have
		// segments of its own (ipv4/block/10.65.0.0-26).
		if len(kv.Value) == 0 {
			return nil, nil, "", "", fmt.Errorf("stored value at %s is empty", kv.Key)
		}
		return nil, kv.Value, "", rest, nil
	}
	var keyName string
	if w.k.Info.Namespaced {
		ns, keyName, ok = strings.Cut(rest, "/")
		if !ok || ns == "" || keyName == "" || strings.Contains(keyName, "/") {
			return nil, nil, "", "", fmt.Errorf("key %s is not <prefix>/<namespace>/<name>", kv.Key)
		}
	} else {
		if strings.Contains(rest, "/") {
			return nil, nil, "", "", fmt.Errorf("key %s is not <prefix>/<name>", kv.Key)
		}
		keyName = rest
	}
	if r, err = client.DecodeKV(w.k.Info, kv); err != nil {
		return nil, nil, "", "", err
	}
	if r == nil {
		return nil, nil, "", "", fmt.Errorf("stored value at %s is empty", kv.Key)
	}
	if name = r.GetName(); name == "" || name == keyName {
		// The key's copy: what is kept per key then shares its bytes.
		name = keyName
	}
	return r, nil, ns, name, nil
}
