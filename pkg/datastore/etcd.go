package datastore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is one key with its value and revisions.
type KV struct {
	Key   string
	Value []byte
	// Revision is the key's mod revision: Calico's metadata.resourceVersion.
	Revision       int64
	CreateRevision int64
}

// OpType says what an Op does and under which condition.
type OpType int

const (
	OpCreate OpType = iota // put, only if the key does not exist
	OpUpdate               // put, only if the key's mod revision is Rev
	OpPut                  // put, unconditionally
	OpDelete               // delete; if Rev != 0 only at mod revision Rev, else only if it exists

	// OpUnchangedSince writes nothing: it makes the transaction conditional
	// on no key under the prefix Key having been created or modified after
	// revision Rev (typically the revision a List of that prefix was read
	// at). A delete leaves no key behind to compare, so it is not seen;
	// guard a key whose removal matters with OpCheck.
	OpUnchangedSince
	// OpCheck writes nothing: it makes the transaction conditional on Key
	// being at mod revision Rev (Rev 0: on Key not existing).
	OpCheck
)

// isCondition reports op types that only add a condition to a transaction.
func (t OpType) isCondition() bool { return t == OpUnchangedSince || t == OpCheck }

func (t OpType) String() string {
	switch t {
	case OpCreate:
		return "create"
	case OpUpdate:
		return "update"
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpUnchangedSince:
		return "unchanged-since"
	case OpCheck:
		return "check"
	}
	return fmt.Sprintf("OpType(%d)", int(t))
}

// Op is one operation of a transaction.
type Op struct {
	Type  OpType
	Key   string
	Value []byte
	Rev   int64
}

// Backend is the raw key/value store the rest of tortie is written against.
type Backend interface {
	Get(ctx context.Context, key string) (*KV, error)
	// List returns the keys under prefix sorted by key, and the store
	// revision the list was read at.
	List(ctx context.Context, prefix string) (kvs []*KV, revision int64, err error)
	Create(ctx context.Context, key string, value []byte) (*KV, error)
	Update(ctx context.Context, key string, value []byte, rev int64) (*KV, error)
	// Delete removes key (at mod revision rev, or whatever it is when rev is
	// 0) and returns what was deleted.
	Delete(ctx context.Context, key string, rev int64) (*KV, error)
	// Txn applies ops all or nothing in one etcd transaction and returns,
	// in op order, the written KVs (deleted ones for OpDelete, nil for the
	// conditions OpUnchangedSince and OpCheck). A failed condition is a
	// *TxnError naming the op.
	Txn(ctx context.Context, ops []Op) ([]*KV, error)
	Watch(ctx context.Context, prefix string, fromRev int64) <-chan WatchEvent
	Close() error
}

// A list is read in pages that grow. etcd counts, for every range request,
// each key from the request's start to the range's end (the response's
// count, which its Range always fills in, limit or not), so listing n keys
// in pages of p keys costs it n²/2p key visits: 100,000 endpoints in pages
// of 2,000 were 2.5 million visits, about 2.4 s of etcd's CPU at each agent
// start. The first page is listPageSize keys; each later one as many as fit
// in listPageBytes at the mean size seen so far, at most listPageMax keys.
// 100,000 endpoints of ~600 bytes are then 15 pages and ~720,000 visits, and
// a page stays far below the message size limit. Pages of 16 MiB (5 pages,
// ~330,000 visits) raised an agent's peak memory at that size by 15-20 MB:
// a page is held while its events are consumed.
const (
	listPageSize  = 2000
	listPageBytes = 4 << 20
	listPageMax   = 50000
)

// nextPageSize is the limit of the page after keys keys of bytes bytes in
// all have been read.
func nextPageSize(keys, bytes int) int64 {
	if keys == 0 || bytes == 0 {
		return listPageSize
	}
	mean := max(bytes/keys, 1)
	return int64(min(max(listPageBytes/mean, listPageSize), listPageMax))
}

// Etcd is the Backend on an etcd v3 cluster. It is safe for concurrent use.
type Etcd struct {
	cli *clientv3.Client
	cfg Config
	log *slog.Logger

	// seenRev is the highest store revision any response has shown. A write
	// sent after it was read lands at a higher revision, which is how a
	// retried write recognises its own earlier attempt (see ownWrite).
	seenRev atomic.Int64
}

var _ Backend = (*Etcd)(nil)

// Client exposes the underlying etcd client for maintenance (compaction,
// status) and tests; resource code must not use it.
func (e *Etcd) Client() *clientv3.Client { return e.cli }

// Close releases the client's connections.
func (e *Etcd) Close() error { return e.cli.Close() }

func (e *Etcd) saw(rev int64) {
	for {
		cur := e.seenRev.Load()
		if rev <= cur || e.seenRev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// A request that keeps failing is logged at warning level after
// answerWarnAfter, then every answerWarnEvery.
const (
	answerWarnAfter = 5 * time.Second
	answerWarnEvery = 30 * time.Second
)

// retry runs attempt until it succeeds, fails for good, or the retry budget
// runs out. Each attempt gets its own timeout so a request stuck on a dead
// member is abandoned and sent again (clientv3 picks a live endpoint).
// attempt is told whether an earlier attempt failed in a way that leaves
// open whether it was applied.
func (e *Etcd) retry(ctx context.Context, what string, attempt func(ctx context.Context, retried bool) error) error {
	start := time.Now()
	deadline := start.Add(e.cfg.RetryTimeout)
	var b backoff
	retried := false
	nextWarn := answerWarnAfter
	for {
		attemptEnd := time.Now().Add(e.cfg.RequestTimeout)
		if attemptEnd.After(deadline) {
			attemptEnd = deadline
		}
		actx, cancel := context.WithDeadline(ctx, attemptEnd)
		err := attempt(actx, retried)
		cancel()
		if !transient(ctx, err) {
			return translate(err)
		}
		wait := b.next()
		if !time.Now().Add(wait).Before(deadline) {
			return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
		}
		if failing := time.Since(start); failing >= nextWarn {
			// An operator must see that the datastore is away, and where
			// it was looked for, long before the request gives up.
			e.log.Warn("datastore does not answer; retrying", "endpoints", e.cfg.Endpoints, "op", what,
				"failingFor", failing.Round(time.Second), "err", err)
			nextWarn = failing + answerWarnEvery
		} else {
			e.log.Debug("retrying etcd request", "op", what, "err", err, "wait", wait)
		}
		retried = true
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// backoff is capped exponential backoff with jitter.
type backoff struct{ cur time.Duration }

func (b *backoff) next() time.Duration {
	const minWait, maxWait = 50 * time.Millisecond, 2 * time.Second
	if b.cur == 0 {
		b.cur = minWait
	} else {
		b.cur = min(2*b.cur, maxWait)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

func toKV(kv *mvccpb.KeyValue) *KV {
	if kv == nil {
		return nil
	}
	return &KV{Key: string(kv.Key), Value: kv.Value, Revision: kv.ModRevision, CreateRevision: kv.CreateRevision}
}

// Get reads one key (linearizable).
func (e *Etcd) Get(ctx context.Context, key string) (*KV, error) {
	var kv *KV
	err := e.retry(ctx, "get "+key, func(ctx context.Context, _ bool) error {
		resp, err := e.cli.Get(ctx, key)
		if err != nil {
			return err
		}
		e.saw(resp.Header.Revision)
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("%w: %s", ErrNotFound, key)
		}
		kv = toKV(resp.Kvs[0])
		return nil
	})
	return kv, err
}

// List reads every key under prefix at one store revision, in pages.
func (e *Etcd) List(ctx context.Context, prefix string) ([]*KV, int64, error) {
	var kvs []*KV
	rev, err := e.listPages(ctx, prefix, func(page []*KV) error {
		kvs = append(kvs, page...)
		return nil
	}, func() { kvs = kvs[:0] })
	if err != nil {
		return nil, 0, err
	}
	return kvs, rev, nil
}

// listPages lists prefix at the current revision, giving each page to
// page as it arrives, and returns the revision. When that revision is
// compacted between two pages it calls restart and lists again at a newer
// one. An error of page ends the list with it.
func (e *Etcd) listPages(ctx context.Context, prefix string, page func([]*KV) error, restart func()) (int64, error) {
	for {
		rev, err := e.listAt(ctx, prefix, 0, page)
		if errors.Is(err, rpctypes.ErrCompacted) {
			// Compacted between two pages: start again at a newer revision.
			e.log.Info("list revision compacted between pages, listing again", "prefix", prefix)
			restart()
			continue
		}
		return rev, err
	}
}

// listAt lists prefix at revision rev (0: the current one), giving each
// page to page, and returns the revision read. A compacted rev is
// reported as rpctypes.ErrCompacted. Pages are read one after the other:
// reading the next while page takes one was measured no faster at 100,000
// endpoints here, and holds two pages.
func (e *Etcd) listAt(ctx context.Context, prefix string, rev int64, page func([]*KV) error) (int64, error) {
	start, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	if prefix == "" {
		start, end = "\x00", "\x00" // the whole keyspace
	}
	n, size := 0, 0 // keys, and bytes of keys and values, read so far
	for {
		var resp *clientv3.GetResponse
		limit := nextPageSize(n, size)
		err := e.retry(ctx, "list "+prefix, func(ctx context.Context, _ bool) error {
			var err error
			resp, err = e.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(limit), clientv3.WithRev(rev))
			return err
		})
		if err != nil {
			return 0, err
		}
		e.saw(resp.Header.Revision)
		if rev == 0 {
			rev = resp.Header.Revision // later pages read the same snapshot
		}
		kvs := make([]*KV, len(resp.Kvs))
		for i, kv := range resp.Kvs {
			kvs[i] = toKV(kv)
			size += len(kv.Key) + len(kv.Value)
		}
		n += len(kvs)
		more := resp.More && len(kvs) > 0
		if more {
			start = kvs[len(kvs)-1].Key + "\x00"
		}
		if err := page(kvs); err != nil {
			return 0, err
		}
		if !more {
			return rev, nil
		}
	}
}

// Create writes key only if it does not exist.
func (e *Etcd) Create(ctx context.Context, key string, value []byte) (*KV, error) {
	return e.single(ctx, Op{Type: OpCreate, Key: key, Value: value})
}

// Update writes key only if its mod revision is rev.
func (e *Etcd) Update(ctx context.Context, key string, value []byte, rev int64) (*KV, error) {
	return e.single(ctx, Op{Type: OpUpdate, Key: key, Value: value, Rev: rev})
}

// Delete deletes key at mod revision rev, or unconditionally when rev is 0;
// either way ErrNotFound if it does not exist.
func (e *Etcd) Delete(ctx context.Context, key string, rev int64) (*KV, error) {
	return e.single(ctx, Op{Type: OpDelete, Key: key, Rev: rev})
}

// single runs a one-op transaction, so single writes share Txn's conditions
// and its recognition of retried writes.
func (e *Etcd) single(ctx context.Context, op Op) (*KV, error) {
	kvs, err := e.Txn(ctx, []Op{op})
	var te *TxnError
	if errors.As(err, &te) {
		return nil, fmt.Errorf("%w: %s", te.Err, te.Key)
	}
	if err != nil {
		return nil, err
	}
	return kvs[0], nil
}

// Txn applies ops in one etcd transaction: If(every op's condition)
// Then(every write) Else(read every key). The Else reads say which condition
// failed, and after an attempt whose outcome is unknown they also show
// whether that attempt was in fact applied.
func (e *Etcd) Txn(ctx context.Context, ops []Op) ([]*KV, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	seen := make(map[string]int, len(ops))
	var cmps []clientv3.Cmp
	var thenOps []clientv3.Op
	writes := make([]int, 0, len(ops)) // thenOps[j] is ops[writes[j]]
	elseOps := make([]clientv3.Op, len(ops))
	for i, op := range ops {
		if op.Type != OpUnchangedSince {
			if j, dup := seen[op.Key]; dup {
				return nil, fmt.Errorf("datastore: txn ops %d and %d both touch %s", j, i, op.Key)
			}
			seen[op.Key] = i
		}
		elseOps[i] = clientv3.OpGet(op.Key)
		switch op.Type {
		case OpCreate:
			cmps = append(cmps, clientv3.Compare(clientv3.Version(op.Key), "=", 0))
			thenOps = append(thenOps, clientv3.OpPut(op.Key, string(op.Value)))
		case OpUpdate:
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "=", op.Rev))
			thenOps = append(thenOps, clientv3.OpPut(op.Key, string(op.Value), clientv3.WithPrevKV()))
		case OpPut:
			thenOps = append(thenOps, clientv3.OpPut(op.Key, string(op.Value), clientv3.WithPrevKV()))
		case OpDelete:
			if op.Rev != 0 {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "=", op.Rev))
			} else {
				cmps = append(cmps, clientv3.Compare(clientv3.Version(op.Key), ">", 0))
			}
			thenOps = append(thenOps, clientv3.OpDelete(op.Key, clientv3.WithPrevKV()))
		case OpUnchangedSince:
			if op.Key == "" || op.Rev <= 0 {
				return nil, fmt.Errorf("datastore: txn op %d: %s needs a prefix and a revision", i, op.Type)
			}
			// A compare on a range holds when it holds for every key in it
			// (and trivially for an empty range): no mod revision above Rev.
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "<", op.Rev+1).WithPrefix())
			// On failure, read one key that changed, to name it.
			elseOps[i] = clientv3.OpGet(op.Key, clientv3.WithPrefix(), clientv3.WithMinModRev(op.Rev+1),
				clientv3.WithLimit(1), clientv3.WithKeysOnly())
			continue
		case OpCheck:
			if op.Rev != 0 {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(op.Key), "=", op.Rev))
			} else {
				cmps = append(cmps, clientv3.Compare(clientv3.Version(op.Key), "=", 0))
			}
			continue
		default:
			return nil, fmt.Errorf("datastore: txn op %d on %s: unknown op type %v", i, op.Key, op.Type)
		}
		writes = append(writes, i)
	}

	// A write sent from now on lands above this revision.
	floor := e.seenRev.Load()
	var out []*KV
	err := e.retry(ctx, fmt.Sprintf("txn of %d ops (first %s %s)", len(ops), ops[0].Type, ops[0].Key),
		func(actx context.Context, retried bool) error {
			resp, err := e.cli.Txn(actx).If(cmps...).Then(thenOps...).Else(elseOps...).Commit()
			if err != nil {
				return err
			}
			e.saw(resp.Header.Revision)
			current := make([]*KV, len(ops))
			if resp.Succeeded {
				for j, r := range resp.Responses {
					i := writes[j]
					current[i] = written(ops[i], r, resp.Header.Revision)
				}
				out = current
				return nil
			}
			for i, r := range resp.Responses {
				if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
					current[i] = toKV(kvs[0])
				}
			}
			if retried {
				if kvs, ok := e.ownWrite(actx, ops, current, floor); ok {
					e.log.Info("retried etcd txn had already been applied", "ops", len(ops), "key", ops[0].Key)
					out = kvs
					return nil
				}
			}
			return failedCondition(ops, current)
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// written is the KV an applied op produced (for a delete: what it removed).
func written(op Op, r *etcdserverpb.ResponseOp, rev int64) *KV {
	if op.Type == OpDelete {
		if prev := r.GetResponseDeleteRange().PrevKvs; len(prev) > 0 {
			return toKV(prev[0])
		}
		return &KV{Key: op.Key} // the condition guaranteed it existed
	}
	kv := &KV{Key: op.Key, Value: op.Value, Revision: rev, CreateRevision: rev}
	if prev := r.GetResponsePut().GetPrevKv(); prev != nil {
		kv.CreateRevision = prev.CreateRevision
	}
	return kv
}

// failedCondition names the first op whose condition does not hold in
// current (the keys' values as the failed transaction read them; for
// OpUnchangedSince, a key under the prefix that changed after Rev).
func failedCondition(ops []Op, current []*KV) error {
	for i, op := range ops {
		kv := current[i]
		var err error
		key := op.Key
		switch {
		case op.Type == OpCreate && kv != nil:
			err = ErrAlreadyExists
		case (op.Type == OpUpdate || op.Type == OpDelete) && kv == nil:
			err = ErrNotFound
		case (op.Type == OpUpdate || op.Type == OpDelete) && op.Rev != 0 && kv.Revision != op.Rev:
			err = ErrConflict
		case op.Type == OpUnchangedSince && kv != nil:
			err = fmt.Errorf("%w: %s changed after revision %d", ErrConflict, kv.Key, op.Rev)
		case op.Type == OpCheck && (kv == nil) != (op.Rev == 0):
			err = ErrConflict
		case op.Type == OpCheck && kv != nil && kv.Revision != op.Rev:
			err = ErrConflict
		}
		if err != nil {
			return &TxnError{Index: i, Key: key, Err: err}
		}
	}
	// etcd evaluated the same conditions on the same snapshot, so one of
	// them must have failed.
	return errors.New("datastore: txn failed but every condition holds")
}

// ownWrite decides whether the keys as they are now (current) are the
// result of an earlier attempt of this very transaction whose response was
// lost. That is so when every written key holds exactly our value, all of
// them at one mod revision above floor (an etcd transaction writes all its
// keys at one revision, and floor was read before our first attempt), a
// created key was created by that same revision, and every deleted key is
// gone. Another writer producing precisely that state in that window would
// leave the store exactly as we meant it to be, so reporting success is
// still true to the caller's intent.
//
// The reverse order is safe too: should the lost attempt reach the leader
// only after the retry was applied, its conditions no longer hold and it
// does nothing. (An OpPut has no condition; applied twice it writes the same
// value at two revisions.)
//
// It returns the KVs the transaction produced; the value a delete removed is
// read back from history, when not yet compacted.
func (e *Etcd) ownWrite(ctx context.Context, ops []Op, current []*KV, floor int64) ([]*KV, bool) {
	var rev int64
	for i, op := range ops {
		kv := current[i]
		if op.Type.isCondition() {
			// A condition says nothing about whether the writes landed
			// (our own landed attempt may well be what broke it).
			continue
		}
		if op.Type == OpDelete {
			if kv != nil {
				return nil, false
			}
			continue
		}
		if kv == nil || !bytes.Equal(kv.Value, op.Value) || kv.Revision <= floor || (rev != 0 && kv.Revision != rev) {
			return nil, false
		}
		if op.Type == OpCreate && kv.CreateRevision != kv.Revision {
			return nil, false
		}
		if op.Type == OpUpdate && kv.CreateRevision == kv.Revision {
			return nil, false // re-created since, not updated by us
		}
		rev = kv.Revision
	}
	out := make([]*KV, len(ops))
	for i, op := range ops {
		if op.Type.isCondition() {
			continue
		}
		if op.Type != OpDelete {
			out[i] = current[i]
			continue
		}
		// What did the delete remove? The key as it was just before our
		// write, or before any revision we may have written at.
		before := rev - 1
		if rev == 0 {
			before = floor
		}
		out[i] = &KV{Key: op.Key}
		if before > 0 {
			if resp, err := e.cli.Get(ctx, op.Key, clientv3.WithRev(before)); err == nil && len(resp.Kvs) > 0 {
				out[i] = toKV(resp.Kvs[0])
			}
		}
	}
	return out, true
}
