package datastore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventType says what a WatchEvent reports.
type EventType int

const (
	EventAdded    EventType = iota // a key the consumer has not seen
	EventModified                  // a new value for a key the consumer has seen
	EventDeleted                   // a key is gone; PrevKV is its last known value
	EventInSync                    // everything up to now has been delivered
	EventError                     // a failure that will not heal; the channel closes next
)

func (t EventType) String() string {
	switch t {
	case EventAdded:
		return "added"
	case EventModified:
		return "modified"
	case EventDeleted:
		return "deleted"
	case EventInSync:
		return "in-sync"
	case EventError:
		return "error"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// WatchEvent is one change under a watched prefix.
type WatchEvent struct {
	Type EventType
	// KV is the new value; for Deleted only Key and Revision (the revision
	// of the deletion, or of the list that found the key gone) are set.
	KV *KV
	// PrevKV, for Deleted, is the key's last value, as etcd reports a
	// deletion it watched. For a key a resync found gone it has only the Key
	// and the last Revision delivered: the watcher keeps every key's
	// revision, not its value (at 100,000 endpoints keeping them cost the
	// agent 59 MB of heap: 311 MB after readiness, 252 MB without).
	PrevKV *KV
	Err    error // for EventError
	// More says that further events of the same etcd watch response (one
	// transaction's changes arrive in one) follow at once: a consumer that
	// wants to act on whole transactions waits for an event without it.
	More bool
}

// watchBuffer lets the watcher run a little ahead of a slow consumer.
const watchBuffer = 256

// Watch reports changes under prefix.
//
// With fromRev == 0 it lists the prefix, sends EventAdded for every key and
// then EventInSync, and watches from the list's revision on. With fromRev > 0
// it watches from fromRev, taking the prefix as it was at fromRev-1 as what
// the consumer already has.
//
// When the watch cannot resume where it left off (the revision was compacted)
// it lists again and sends only the difference from what it has delivered
// (EventDeleted for vanished keys, EventAdded or EventModified for
// the rest), then EventInSync, and goes on; the consumer never misses a
// change. Lost connections and leader changes are retried inside. EventError
// is sent only for failures retrying cannot fix, then the channel closes; it
// also closes when ctx is done.
func (e *Etcd) Watch(ctx context.Context, prefix string, fromRev int64) <-chan WatchEvent {
	w := &watcher{e: e, prefix: prefix, out: make(chan WatchEvent, watchBuffer), known: map[string]int64{}}
	go w.run(ctx, fromRev)
	return w.out
}

type watcher struct {
	e      *Etcd
	prefix string
	out    chan WatchEvent
	// known is what the consumer has been told, each key's revision: the
	// base for the diff after a resync.
	known map[string]int64
}

func (w *watcher) run(ctx context.Context, fromRev int64) {
	defer close(w.out)
	next := fromRev // the revision to watch from
	resync := fromRev <= 0
	if fromRev > 1 {
		var ok bool
		if resync, ok = w.seed(ctx, fromRev-1); !ok {
			return
		}
	}
	var b backoff
	for ctx.Err() == nil {
		if resync {
			rev, err := w.resync(ctx)
			if err != nil {
				if !w.fail(ctx, err) {
					return
				}
				w.sleep(ctx, &b)
				continue
			}
			next, resync = rev+1, false
		}
		var err error
		var progressed bool
		next, resync, progressed, err = w.stream(ctx, next)
		if progressed {
			b.reset()
		}
		if err != nil {
			if !w.fail(ctx, err) {
				return
			}
			w.e.log.Info("watch interrupted, resuming", "prefix", w.prefix, "rev", next, "err", err)
			w.sleep(ctx, &b)
		}
	}
}

// seed takes the prefix as it was at rev as what the consumer has. When rev
// is compacted that can no longer be read: it asks for a resync, which tells
// the consumer everything there is now (deletions before rev are lost to it;
// a consumer that cares starts from 0). ok is false when the watch must end.
func (w *watcher) seed(ctx context.Context, rev int64) (resync, ok bool) {
	var b backoff
	for {
		_, err := w.e.listAt(ctx, w.prefix, rev, func(page []*KV) error {
			for _, kv := range page {
				w.known[kv.Key] = kv.Revision
			}
			return nil
		})
		if err != nil {
			clear(w.known) // part of a list is not the prefix as it was
		}
		switch {
		case err == nil:
			return false, true
		case errors.Is(err, rpctypes.ErrCompacted):
			w.e.log.Warn("watch start revision compacted, listing", "prefix", w.prefix, "fromRev", rev+1)
			return true, true
		case !w.fail(ctx, err):
			return false, false
		}
		w.sleep(ctx, &b)
	}
}

// fail decides what an error means for the watch: a transient one is
// retried (true); anything else is sent as EventError (false).
func (w *watcher) fail(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if transient(ctx, err) || errors.Is(err, ErrUnavailable) {
		return true
	}
	if w.e.cli.Ctx().Err() != nil {
		err = fmt.Errorf("datastore: watch %s: client closed", w.prefix)
	}
	w.send(ctx, WatchEvent{Type: EventError, Err: err})
	return false
}

func (w *watcher) sleep(ctx context.Context, b *backoff) {
	select {
	case <-ctx.Done():
	case <-time.After(b.next()):
	}
}

func (w *watcher) send(ctx context.Context, ev WatchEvent) bool {
	select {
	case w.out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// resync lists the prefix and sends the difference from known, then
// EventInSync. It returns the revision of the list. Each page's events go
// out as the page arrives, so only a page of keys and values is held at a
// time, not the whole prefix. known follows what was sent: a list that
// fails part way and starts again sends only what differs.
func (w *watcher) resync(ctx context.Context) (int64, error) {
	now := make(map[string]struct{}, len(w.known))
	rev, err := w.e.listPages(ctx, w.prefix, func(page []*KV) error {
		for _, kv := range page {
			now[kv.Key] = struct{}{}
			old, ok := w.known[kv.Key]
			if ok && old == kv.Revision {
				continue
			}
			ev := WatchEvent{Type: EventAdded, KV: kv}
			if ok {
				ev.Type = EventModified
			}
			if !w.send(ctx, ev) {
				return ctx.Err()
			}
			w.known[kv.Key] = kv.Revision
		}
		return nil
	}, func() { clear(now) })
	if err != nil {
		return 0, err
	}
	var gone []string
	for k := range w.known {
		if _, ok := now[k]; !ok {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		if !w.send(ctx, WatchEvent{Type: EventDeleted, KV: &KV{Key: k, Revision: rev}, PrevKV: &KV{Key: k, Revision: w.known[k]}}) {
			return 0, ctx.Err()
		}
		delete(w.known, k)
	}
	w.send(ctx, WatchEvent{Type: EventInSync})
	return rev, ctx.Err()
}

// stream watches from rev until the watch ends. It returns the revision to
// resume from, whether a resync is needed (compaction), whether any event was
// delivered, and the error that ended it (nil when it needs a resync or ctx
// is done).
func (w *watcher) stream(ctx context.Context, rev int64) (next int64, resync, progressed bool, err error) {
	// Require a leader: a member cut off from the quorum cancels the watch
	// instead of silently serving nothing, and we reconnect elsewhere.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.e.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev),
		clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	next = rev
	for resp := range wch {
		if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
			w.e.log.Info("watch revision compacted, resyncing", "prefix", w.prefix, "rev", next, "compacted", resp.CompactRevision)
			return next, true, progressed, nil
		}
		if err := resp.Err(); err != nil {
			return next, false, progressed, err
		}
		w.e.saw(resp.Header.Revision)
		if resp.IsProgressNotify() {
			// Every event up to the header's revision has been delivered.
			next = max(next, resp.Header.Revision+1)
			continue
		}
		for i, ev := range resp.Events {
			kv := toKV(ev.Kv)
			var out WatchEvent
			if ev.Type == clientv3.EventTypeDelete {
				prev := toKV(ev.PrevKv)
				if prev == nil {
					prev = &KV{Key: kv.Key, Revision: w.known[kv.Key]}
				}
				delete(w.known, kv.Key)
				out = WatchEvent{Type: EventDeleted, KV: &KV{Key: kv.Key, Revision: kv.Revision}, PrevKV: prev}
			} else {
				out = WatchEvent{Type: EventAdded, KV: kv}
				if _, ok := w.known[kv.Key]; ok {
					out.Type = EventModified
				}
				w.known[kv.Key] = kv.Revision
			}
			out.More = i < len(resp.Events)-1
			if !w.send(ctx, out) {
				return next, false, progressed, nil
			}
			next, progressed = kv.Revision+1, true
		}
	}
	if ctx.Err() != nil {
		return next, false, progressed, nil
	}
	if w.e.cli.Ctx().Err() != nil {
		return next, false, progressed, w.e.cli.Ctx().Err()
	}
	// The stream ended without a reason (e.g. the member went away and the
	// client gave up on it): resume.
	return next, false, progressed, fmt.Errorf("%w: watch stream closed", ErrUnavailable)
}
