package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/tortie/tortie/internal/parallel"
	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// Op is what a batch does with each of its documents.
type Op int

const (
	OpCreate  Op = iota // must not exist
	OpApply             // create or replace
	OpReplace           // must exist
	OpDelete            // must exist
)

func (o Op) String() string {
	return [...]string{"create", "apply", "replace", "delete"}[o]
}

// Result is what a batch wrote (or, for delete, removed), in input order,
// each with its new resourceVersion.
type Result struct {
	Objects []v3.Resource
	// Txns is how many etcd transactions the writes took.
	Txns int
}

// DocError is a problem with one document of a batch, by its index.
type DocError struct {
	Index int
	Err   error
}

func (e *DocError) Error() string { return fmt.Sprintf("document %d: %v", e.Index, e.Err) }
func (e *DocError) Unwrap() error { return e.Err }

// DocErrors is every document that was refused before anything was written.
type DocErrors []*DocError

func (l DocErrors) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.Is see each document's error.
func (l DocErrors) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// BatchError reports a batch that failed while writing. Written lists the
// documents that are in the datastore nonetheless (earlier transactions of a
// batch too large for one); Failed is the document whose write failed.
type BatchError struct {
	Written []int
	Failed  int
	Err     error
}

func (e *BatchError) Error() string {
	msg := fmt.Sprintf("document %d: %v", e.Failed, e.Err)
	if len(e.Written) > 0 {
		msg += fmt.Sprintf(" (%d document(s) before it were already written: %s)", len(e.Written), indexRanges(e.Written))
	} else {
		msg += " (nothing was written)"
	}
	return msg
}
func (e *BatchError) Unwrap() error { return e.Err }

// DefaultMaxTxnOps is etcd's stock limit on operations per transaction. A
// batch first tries one transaction for everything (tortie's embedded server
// allows far more) and falls back to chunks of this size.
const DefaultMaxTxnOps = 128

// Batch defaults and validates every document, then writes them all in one
// transaction, or in as few as the server allows. Nothing is written unless
// every document is valid, both on its own and against what is stored
// (Calico's datastore rules: see rules.go), and the write is conditional on
// what those rules read; when another writer changed it first, the batch is
// read, checked and written again. A failure while writing names the
// documents already written.
func (c *Client) Batch(ctx context.Context, op Op, rs []v3.Resource) (*Result, error) {
	return c.batch(ctx, op, rs, validateAll(op, rs))
}

// BatchValidated is Batch for documents that have been through
// v3.SetDefaults and v3.Validate without error and not changed since, as
// a command that reports every invalid document before it connects has
// done: they are not defaulted and validated again.
func (c *Client) BatchValidated(ctx context.Context, op Op, rs []v3.Resource) (*Result, error) {
	return c.batch(ctx, op, rs, make([]error, len(rs)))
}

// batch is Batch with each document's validation error by index (see
// validateAll).
func (c *Client) batch(ctx context.Context, op Op, rs []v3.Resource, invalid []error) (*Result, error) {
	items := make([]batchItem, len(rs))
	var derrs DocErrors
	seen := map[string]int{}
	for i, r := range rs {
		k := v3.KindOf(r)
		if k == nil {
			derrs = append(derrs, &DocError{i, fmt.Errorf("unknown kind %q", r.GetObjectKind().GroupVersionKind().Kind)})
			continue
		}
		if err := defaultAllowWrite(op, k, r.GetName()); err != nil {
			derrs = append(derrs, &DocError{i, err})
			continue
		}
		if op != OpDelete {
			if err := invalid[i]; err != nil {
				derrs = append(derrs, &DocError{i, err})
				continue
			}
		} else if err := checkNamespace(k, r.GetNamespace()); err != nil {
			derrs = append(derrs, &DocError{i, err})
			continue
		}
		rv, err := parseRV(r)
		if err != nil {
			derrs = append(derrs, &DocError{i, err})
			continue
		}
		key := Key(k, r.GetNamespace(), r.GetName())
		if j, dup := seen[key]; dup {
			derrs = append(derrs, &DocError{i, fmt.Errorf("%s %s appears twice in this batch (also document %d)", k.Kind, nsName(r.GetNamespace(), r.GetName()), j)})
			continue
		}
		seen[key] = i
		items[i] = batchItem{k, key, rv}
	}
	if len(derrs) > 0 {
		return nil, derrs
	}
	if len(rs) == 0 {
		return &Result{}, nil
	}
	for attempt := 0; ; attempt++ {
		res, err := c.batchAttempt(ctx, op, rs, items)
		if errors.Is(err, errSnapshotChanged) && attempt < conflictRetries {
			continue
		}
		if errors.Is(err, errSnapshotChanged) {
			return nil, fmt.Errorf("what this batch was checked against kept changing (%d attempts); try again: %w", attempt+1, datastore.ErrConflict)
		}
		return res, err
	}
}

// validateAll defaults (v3.SetDefaults) and validates (v3.Validate) the
// documents a write will check, Batch's first steps for each, and returns
// each one's validation error by index. Validation, most of the work before
// a write, only reads its own document, so it runs on every CPU; defaulting
// writes, so it runs first, in order.
func validateAll(op Op, rs []v3.Resource) []error {
	if op == OpDelete {
		return make([]error, len(rs))
	}
	check := make([]bool, len(rs))
	for i, r := range rs {
		if k := v3.KindOf(r); k != nil && defaultAllowWrite(op, k, r.GetName()) == nil {
			v3.SetDefaults(r)
			check[i] = true
		}
	}
	errs := make([]error, len(rs))
	parallel.ForEach(len(rs), func(i int) {
		if !check[i] {
			return
		}
		errs[i] = Validate(rs[i])
	})
	return errs
}

// Validate is v3.Validate, and for a StagedKubernetesNetworkPolicy the
// check of its rules the Kubernetes API server makes of a NetworkPolicy's
// (v3 cannot make it: the conversion that does imports v3). Every writer
// validates with it.
func Validate(r v3.Resource) error {
	if err := v3.Validate(r); err != nil {
		return err
	}
	if s, ok := r.(*v3.StagedKubernetesNetworkPolicy); ok && s.Spec.StagedAction != v3.StagedActionDelete {
		if _, err := k8s.StagedNetworkPolicyToV3(s); err != nil {
			return err
		}
	}
	return nil
}

type batchItem struct {
	k   *v3.KindInfo
	key string
	rv  int64
}

// errSnapshotChanged: the datastore rules' snapshot changed before the
// write, which therefore did not happen.
var errSnapshotChanged = errors.New("datastore rules' snapshot changed")

// batchAttempt reads what the documents replace, checks the datastore
// rules against a snapshot, and writes conditionally on both.
func (c *Client) batchAttempt(ctx context.Context, op Op, rs []v3.Resource, items []batchItem) (*Result, error) {
	// Whether the datastore is initialised is read alongside the documents'
	// current values, rather than after them; EnsureInitialized's answer
	// to it counts, as before, only once every document has passed.
	var initialized func() error
	if op != OpDelete && !c.initialized.Load() {
		done := make(chan struct{})
		var found error
		go func() {
			defer close(done)
			found = c.isInitialized(ctx)
		}()
		initialized = func() error { <-done; return found }
		defer initialized() // not left running past the attempt
	}
	var existing map[string]*datastore.KV
	if op != OpCreate {
		keys := make([]string, len(items))
		for i, it := range items {
			keys[i] = it.key
		}
		var err error
		if existing, err = c.readMany(ctx, keys); err != nil {
			return nil, err
		}
	}

	// Decoding what is stored, and encoding what replaces it, are the bulk
	// of the work here and each reads one document: they run on every CPU.
	// Their errors count where the document is, as if made in order.
	curObjs := make([]v3.Resource, len(rs))
	curErrs := make([]error, len(rs))
	// Only a delete (which returns what it deleted) and an IPPool update
	// (checkIPPool compares the stored spec) need all of it; other updates
	// carry over the stored identity alone.
	if len(existing) > 0 {
		parallel.ForEach(len(rs), func(i int) {
			if cur := existing[items[i].key]; cur != nil {
				if op == OpDelete || items[i].k.Kind == v3.KindIPPool {
					curObjs[i], curErrs[i] = decode(items[i].k, cur)
				} else {
					curObjs[i], curErrs[i] = decodeIdentity(items[i].k, cur)
				}
			}
		})
	}

	var derrs DocErrors
	ops := make([]datastore.Op, len(rs))
	out := make([]v3.Resource, len(rs))
	changes := make([]*change, 0, len(rs))
	sn := newSnapshot(c.be)
	now := c.now()
	var toEncode []int
	// firstBad is the first document whose stored value does not decode:
	// the documents after it are not looked at.
	firstBad := len(rs)
	for i, r := range rs {
		it := items[i]
		cur := existing[it.key]
		if curErrs[i] != nil {
			firstBad = i
			break
		}
		curObj := curObjs[i]
		casRev := it.rv
		if casRev == 0 && cur != nil {
			casRev = cur.Revision
		}
		switch {
		case op == OpDelete && cur == nil:
			derrs = append(derrs, &DocError{i, resourceError(it.k, r.GetNamespace(), r.GetName(), datastore.ErrNotFound)})
			continue
		case op == OpDelete:
			ops[i] = datastore.Op{Type: datastore.OpDelete, Key: it.key, Rev: casRev}
			out[i] = curObj
		case op == OpReplace && cur == nil:
			derrs = append(derrs, &DocError{i, resourceError(it.k, r.GetNamespace(), r.GetName(), datastore.ErrNotFound)})
			continue
		case op == OpCreate || cur == nil:
			stamp(r, nil, now)
			ops[i] = datastore.Op{Type: datastore.OpCreate, Key: it.key}
		default:
			stamp(r, curObj, now)
			ops[i] = datastore.Op{Type: datastore.OpUpdate, Key: it.key, Rev: casRev}
		}
		ch := &change{index: i, op: op, k: it.k, r: r, cur: curObj, key: it.key}
		if err := checkRules(ctx, sn, ch, changes); err != nil {
			derrs = append(derrs, &DocError{i, err})
			continue
		}
		changes = append(changes, ch)
		if op == OpDelete {
			continue
		}
		toEncode = append(toEncode, i)
	}
	encErrs := make([]error, len(toEncode))
	parallel.ForEach(len(toEncode), func(j int) {
		i := toEncode[j]
		_, ops[i].Value, encErrs[j] = encode(rs[i])
	})
	for j, i := range toEncode {
		if encErrs[j] != nil {
			return nil, &DocError{i, encErrs[j]}
		}
		out[i] = rs[i]
	}
	if firstBad < len(rs) {
		return nil, &DocError{firstBad, curErrs[firstBad]}
	}
	if len(derrs) > 0 {
		return nil, derrs
	}
	if initialized != nil {
		if err := c.initialize(ctx, initialized()); err != nil {
			return nil, err
		}
	}

	// Every transaction carries the snapshot's conditions, so each chunk
	// of a batch too large for one is checked against it.
	conds := sn.conditions()
	res := &Result{Objects: out}
	var written []int
	chunk := len(ops)
	for start := 0; start < len(ops); {
		end := min(start+chunk, len(ops))
		txn := append(append(make([]datastore.Op, 0, end-start+len(conds)), ops[start:end]...), conds...)
		kvs, err := c.be.Txn(ctx, txn)
		if errors.Is(err, datastore.ErrTooManyOps) && chunk > 1 {
			chunk = min(chunk/2, DefaultMaxTxnOps)
			continue
		}
		if err != nil {
			failed, cause := start, err
			var te *datastore.TxnError
			if errors.As(err, &te) {
				if te.Index >= end-start {
					if len(written) == 0 {
						return nil, errSnapshotChanged
					}
					cause = fmt.Errorf("what this batch was checked against changed (%s) before the rest could be written: %w", te.Key, te.Err)
				} else {
					failed = start + te.Index
					it := items[failed]
					cause = resourceError(it.k, rs[failed].GetNamespace(), rs[failed].GetName(), te.Err)
				}
			}
			return nil, &BatchError{Written: written, Failed: failed, Err: cause}
		}
		res.Txns++
		for j := range end - start {
			i := start + j
			written = append(written, i)
			if op != OpDelete && kvs[j] != nil {
				out[i].SetResourceVersion(strconv.FormatInt(kvs[j].Revision, 10))
			}
		}
		start = end
	}
	return res, nil
}

// listThreshold is how many keys of one kind make a List cheaper than one Get
// each.
const listThreshold = 16

// readMany fetches the current value of each key, absent keys left out. Many
// keys of one kind are read with one List rather than one round trip each;
// the reads are made at once, not one after another.
func (c *Client) readMany(ctx context.Context, keys []string) (map[string]*datastore.KV, error) {
	byPrefix := map[string][]string{}
	var prefixes []string
	for _, key := range keys {
		p := key[:len(ResourcePrefix)+strings.Index(key[len(ResourcePrefix):], "/")+1]
		if byPrefix[p] == nil {
			prefixes = append(prefixes, p)
		}
		byPrefix[p] = append(byPrefix[p], key)
	}
	// Each read is a List of a prefix or a Get of a key; each one's result
	// goes to its own slot.
	type read struct {
		prefix string   // a List of it, keeping the keys of want
		want   []string // or, without prefix, a Get of want[0]
		kvs    []*datastore.KV
		err    error
	}
	var reads []*read
	for _, prefix := range prefixes {
		ks := byPrefix[prefix]
		if len(ks) > listThreshold {
			reads = append(reads, &read{prefix: prefix, want: ks})
			continue
		}
		for _, k := range ks {
			reads = append(reads, &read{want: []string{k}})
		}
	}
	do := func(r *read) {
		if r.prefix == "" {
			kv, err := c.be.Get(ctx, r.want[0])
			switch {
			case errors.Is(err, datastore.ErrNotFound):
			case err != nil:
				r.err = err
			default:
				r.kvs = []*datastore.KV{kv}
			}
			return
		}
		kvs, _, err := c.be.List(ctx, r.prefix)
		if err != nil {
			r.err = err
			return
		}
		want := make(map[string]bool, len(r.want))
		for _, k := range r.want {
			want[k] = true
		}
		for _, kv := range kvs {
			if want[kv.Key] {
				r.kvs = append(r.kvs, kv)
			}
		}
	}
	if len(reads) == 1 {
		do(reads[0])
	} else {
		sem := make(chan struct{}, maxConcurrentReads)
		var wg sync.WaitGroup
		for _, r := range reads {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				do(r)
			})
		}
		wg.Wait()
	}
	out := make(map[string]*datastore.KV, len(keys))
	for _, r := range reads {
		if r.err != nil {
			return nil, r.err
		}
		for _, kv := range r.kvs {
			out[kv.Key] = kv
		}
	}
	return out, nil
}

// maxConcurrentReads bounds the reads readMany has in flight.
const maxConcurrentReads = 16

// indexRanges prints sorted indexes compactly: "0-127, 130".
func indexRanges(idx []int) string {
	var parts []string
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(idx[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", idx[i], idx[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
