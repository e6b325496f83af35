package datastore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

func TestCRUD(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.NewClient(t, etcdtest.Start(t))

	created, err := c.Create(ctx, "/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if created.Revision == 0 || created.CreateRevision != created.Revision || string(created.Value) != "1" {
		t.Fatalf("created %+v", created)
	}
	got, err := c.Get(ctx, "/a")
	if err != nil || !kvEqual(got, created) {
		t.Fatalf("get: %+v, %v; want %+v", got, err, created)
	}
	updated, err := c.Update(ctx, "/a", []byte("2"), created.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if updated.Revision <= created.Revision || updated.CreateRevision != created.CreateRevision || string(updated.Value) != "2" {
		t.Fatalf("updated %+v after %+v", updated, created)
	}

	tests := []struct {
		name string
		do   func() (*datastore.KV, error)
		want error
	}{
		{"get missing", func() (*datastore.KV, error) { return c.Get(ctx, "/nope") }, datastore.ErrNotFound},
		{"create existing", func() (*datastore.KV, error) { return c.Create(ctx, "/a", []byte("x")) }, datastore.ErrAlreadyExists},
		{"update stale", func() (*datastore.KV, error) { return c.Update(ctx, "/a", []byte("x"), created.Revision) }, datastore.ErrConflict},
		{"update missing", func() (*datastore.KV, error) { return c.Update(ctx, "/nope", []byte("x"), 5) }, datastore.ErrNotFound},
		{"delete stale", func() (*datastore.KV, error) { return c.Delete(ctx, "/a", created.Revision) }, datastore.ErrConflict},
		{"delete missing", func() (*datastore.KV, error) { return c.Delete(ctx, "/nope", 0) }, datastore.ErrNotFound},
		{"delete missing at rev", func() (*datastore.KV, error) { return c.Delete(ctx, "/nope", 3) }, datastore.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv, err := tt.do()
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %+v, %v; want %v", kv, err, tt.want)
			}
			if !strings.Contains(err.Error(), "/") {
				t.Errorf("error %q does not name the key", err)
			}
		})
	}
	// The failed writes changed nothing.
	if got, err := c.Get(ctx, "/a"); err != nil || got.Revision != updated.Revision || string(got.Value) != "2" {
		t.Fatalf("after failed writes: %+v, %v", got, err)
	}

	deleted, err := c.Delete(ctx, "/a", updated.Revision)
	if err != nil || string(deleted.Value) != "2" || deleted.Revision != updated.Revision {
		t.Fatalf("delete at rev: %+v, %v", deleted, err)
	}
	if _, err := c.Get(ctx, "/a"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := c.Create(ctx, "/b", []byte("b")); err != nil {
		t.Fatal(err)
	}
	if deleted, err := c.Delete(ctx, "/b", 0); err != nil || string(deleted.Value) != "b" {
		t.Fatalf("unconditional delete: %+v, %v", deleted, err)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	// More keys than one list page, written in an order that is not sorted.
	const n = 4500
	var ops []datastore.Op
	for i := n - 1; i >= 0; i-- {
		ops = append(ops, datastore.Op{Type: datastore.OpCreate, Key: fmt.Sprintf("/p/%05d", i), Value: []byte(fmt.Sprint(i))})
	}
	if _, err := c.Txn(ctx, ops); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/o", "/p", "/q/1", "/pa"} { // around the prefix, not under "/p/"
		if _, err := c.Create(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	kvs, rev, err := c.List(ctx, "/p/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != n {
		t.Fatalf("listed %d keys, want %d", len(kvs), n)
	}
	for i, kv := range kvs {
		if want := fmt.Sprintf("/p/%05d", i); kv.Key != want || string(kv.Value) != fmt.Sprint(i) {
			t.Fatalf("kvs[%d] = %s=%q, want %s", i, kv.Key, kv.Value, want)
		}
	}
	if last, _ := c.Get(ctx, "/pa"); rev != last.Revision {
		t.Errorf("list revision %d, want the store revision %d", rev, last.Revision)
	}
	all, _, err := c.List(ctx, "")
	if err != nil || len(all) != n+4 {
		t.Fatalf("list of everything: %d keys, %v", len(all), err)
	}
	none, _, err := c.List(ctx, "/nothing/")
	if err != nil || len(none) != 0 {
		t.Fatalf("empty list: %v, %v", none, err)
	}
}

func TestTxn(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	base, err := c.Txn(ctx, []datastore.Op{
		{Type: datastore.OpCreate, Key: "/t/a", Value: []byte("a1")},
		{Type: datastore.OpCreate, Key: "/t/b", Value: []byte("b1")},
		{Type: datastore.OpCreate, Key: "/t/c", Value: []byte("c1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if base[0].Revision != base[2].Revision {
		t.Fatalf("one txn, several revisions: %+v", base)
	}
	a, b, cc := base[0], base[1], base[2]

	tests := []struct {
		name    string
		ops     []datastore.Op
		wantIdx int
		want    error
	}{
		{"create existing", []datastore.Op{
			{Type: datastore.OpCreate, Key: "/t/new", Value: []byte("x")},
			{Type: datastore.OpCreate, Key: "/t/b", Value: []byte("x")},
		}, 1, datastore.ErrAlreadyExists},
		{"update stale", []datastore.Op{
			{Type: datastore.OpUpdate, Key: "/t/a", Value: []byte("x"), Rev: a.Revision},
			{Type: datastore.OpPut, Key: "/t/put", Value: []byte("x")},
			{Type: datastore.OpUpdate, Key: "/t/c", Value: []byte("x"), Rev: cc.Revision - 1},
		}, 2, datastore.ErrConflict},
		{"update missing", []datastore.Op{
			{Type: datastore.OpUpdate, Key: "/t/gone", Value: []byte("x"), Rev: 1},
		}, 0, datastore.ErrNotFound},
		{"delete missing", []datastore.Op{
			{Type: datastore.OpDelete, Key: "/t/a"},
			{Type: datastore.OpDelete, Key: "/t/gone"},
		}, 1, datastore.ErrNotFound},
		{"delete stale", []datastore.Op{
			{Type: datastore.OpDelete, Key: "/t/b", Rev: b.Revision + 100},
		}, 0, datastore.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Txn(ctx, tt.ops)
			var te *datastore.TxnError
			if !errors.As(err, &te) || !errors.Is(err, tt.want) || te.Index != tt.wantIdx || te.Key != tt.ops[tt.wantIdx].Key {
				t.Fatalf("got %v (%#v); want TxnError at op %d wrapping %v", err, te, tt.wantIdx, tt.want)
			}
			// Nothing of the failed txn was applied.
			kvs, _, _ := c.List(ctx, "/t/")
			if len(kvs) != 3 || kvs[0].Revision != a.Revision || kvs[1].Revision != b.Revision || kvs[2].Revision != cc.Revision {
				t.Fatalf("failed txn changed the store: %+v", kvs)
			}
		})
	}

	got, err := c.Txn(ctx, []datastore.Op{
		{Type: datastore.OpUpdate, Key: "/t/a", Value: []byte("a2"), Rev: a.Revision},
		{Type: datastore.OpDelete, Key: "/t/b", Rev: b.Revision},
		{Type: datastore.OpPut, Key: "/t/c", Value: []byte("c2")},
		{Type: datastore.OpPut, Key: "/t/d", Value: []byte("d1")},
		{Type: datastore.OpCreate, Key: "/t/e", Value: []byte("e1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	rev := got[0].Revision
	want := []datastore.KV{
		{Key: "/t/a", Value: []byte("a2"), Revision: rev, CreateRevision: a.CreateRevision},
		{Key: "/t/b", Value: []byte("b1"), Revision: b.Revision, CreateRevision: b.CreateRevision},
		{Key: "/t/c", Value: []byte("c2"), Revision: rev, CreateRevision: cc.CreateRevision},
		{Key: "/t/d", Value: []byte("d1"), Revision: rev, CreateRevision: rev},
		{Key: "/t/e", Value: []byte("e1"), Revision: rev, CreateRevision: rev},
	}
	for i := range want {
		if !kvEqual(got[i], &want[i]) {
			t.Errorf("result %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	if _, err := c.Txn(ctx, []datastore.Op{{Type: datastore.OpPut, Key: "/t/x"}, {Type: datastore.OpDelete, Key: "/t/x"}}); err == nil {
		t.Error("txn touching one key twice accepted")
	}
}

func kvEqual(a, b *datastore.KV) bool {
	return a != nil && b != nil && a.Key == b.Key && bytes.Equal(a.Value, b.Value) && a.Revision == b.Revision && a.CreateRevision == b.CreateRevision
}

func TestTxnTooManyOps(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.NewClient(t, etcdtest.StartWith(t, embedded.ServeConfig{MaxTxnOps: 10, MaxRequestBytes: 1 << 20}))
	ops := func(n, size int) []datastore.Op {
		var ops []datastore.Op
		for i := range n {
			ops = append(ops, datastore.Op{Type: datastore.OpPut, Key: fmt.Sprintf("/big/%d", i), Value: make([]byte, size)})
		}
		return ops
	}
	if _, err := c.Txn(ctx, ops(10, 10)); err != nil {
		t.Fatalf("txn at the limit: %v", err)
	}
	for _, tt := range []struct {
		name    string
		n, size int
	}{
		{"ops", 11, 10},
		{"bytes", 3, 600 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Txn(ctx, ops(tt.n, tt.size)); !errors.Is(err, datastore.ErrTooManyOps) {
				t.Fatalf("got %v, want ErrTooManyOps", err)
			}
		})
	}
}

// The default server limits take a large manifest in one transaction.
func TestTxnLargeDefault(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	var ops []datastore.Op
	for i := range 10000 {
		ops = append(ops, datastore.Op{Type: datastore.OpCreate, Key: fmt.Sprintf("/m/%d", i), Value: bytes.Repeat([]byte("x"), 2000)})
	}
	if _, err := c.Txn(ctx, ops); err != nil {
		t.Fatalf("10000 ops, 20 MB: %v", err)
	}
}

// A write whose response is lost is retried; the retry must recognise the
// first attempt's effect as its own, neither applying it twice nor calling
// it a conflict.
func TestRetriedWriteIsNotAppliedTwice(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	direct := etcdtest.NewClient(t, srv)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	c, err := datastore.New(datastore.Config{Endpoints: []string{proxy.Endpoint()}, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "/r/old", []byte("x")); err != nil { // connection up
		t.Fatal(err)
	}

	// lossy runs write while the first response is lost.
	lossy := func(write func() ([]*datastore.KV, error)) []*datastore.KV {
		t.Helper()
		proxy.DropResponses()
		done := make(chan struct{})
		var kvs []*datastore.KV
		var err error
		go func() {
			defer close(done)
			kvs, err = write()
		}()
		time.Sleep(time.Second) // applied, response lost, attempt timed out
		proxy.Cut()
		proxy.Restore()
		<-done
		if err != nil {
			t.Fatalf("retried write failed: %v", err)
		}
		return kvs
	}
	one := func(kv *datastore.KV, err error) ([]*datastore.KV, error) { return []*datastore.KV{kv}, err }

	created := lossy(func() ([]*datastore.KV, error) { return one(c.Create(ctx, "/r/a", []byte("1"))) })[0]
	updated := lossy(func() ([]*datastore.KV, error) { return one(c.Update(ctx, "/r/a", []byte("2"), created.Revision)) })[0]
	txn := lossy(func() ([]*datastore.KV, error) {
		return c.Txn(ctx, []datastore.Op{
			{Type: datastore.OpUpdate, Key: "/r/a", Value: []byte("3"), Rev: updated.Revision},
			{Type: datastore.OpCreate, Key: "/r/b", Value: []byte("1")},
			{Type: datastore.OpDelete, Key: "/r/old"},
		})
	})
	deleted := lossy(func() ([]*datastore.KV, error) { return one(c.Delete(ctx, "/r/a", txn[0].Revision)) })[0]

	if string(created.Value) != "1" || string(updated.Value) != "2" || updated.CreateRevision != created.Revision {
		t.Errorf("created %+v, updated %+v", created, updated)
	}
	if string(txn[0].Value) != "3" || txn[1].Revision != txn[0].Revision || string(txn[2].Value) != "x" {
		t.Errorf("txn result %+v %+v %+v", txn[0], txn[1], txn[2])
	}
	if string(deleted.Value) != "3" || deleted.Revision != txn[0].Revision {
		t.Errorf("deleted %+v, want /r/a=3 at %d", deleted, txn[0].Revision)
	}
	// Each write happened exactly once: one revision per write.
	resp, err := direct.Client().Get(ctx, "/r/b")
	if err != nil || resp.Kvs[0].Version != 1 {
		t.Fatalf("/r/b: %v, %v", resp, err)
	}
	if want := deleted.Revision + 1; resp.Header.Revision != want {
		t.Errorf("store at revision %d after the writes, want %d: some write was applied twice", resp.Header.Revision, want)
	}
}
