package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// TestUnchangedSince: a transaction conditional on nothing under a prefix
// having been created or modified since the revision a list was read at
// applies only while that holds, and says which key broke it.
func TestUnchangedSince(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	for _, k := range []string{"/p/a", "/p/b", "/q/a"} {
		if _, err := c.Create(ctx, k, []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	_, rev, err := c.List(ctx, "/p/")
	if err != nil {
		t.Fatal(err)
	}
	guarded := func(key string) ([]*datastore.KV, error) {
		return c.Txn(ctx, []datastore.Op{
			{Type: datastore.OpCreate, Key: key, Value: []byte("new")},
			{Type: datastore.OpUnchangedSince, Key: "/p/", Rev: rev},
		})
	}

	// A change outside the prefix does not matter.
	if _, err := c.Txn(ctx, []datastore.Op{{Type: datastore.OpPut, Key: "/q/a", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	kvs, err := guarded("/p/c")
	if err != nil {
		t.Fatalf("nothing under /p/ changed, yet: %v", err)
	}
	if len(kvs) != 2 || kvs[0] == nil || kvs[1] != nil {
		t.Errorf("results %+v: want the created key, then nil for the condition", kvs)
	}

	// Our own write above moved /p/ past rev: the same condition now fails,
	// as it does for anyone else's create or update under /p/.
	for _, change := range []struct {
		name string
		do   func() error
	}{
		{"created", func() error { return nil }}, // /p/c, just above
		{"updated", func() error {
			kv, err := c.Get(ctx, "/p/a")
			if err == nil {
				_, err = c.Update(ctx, "/p/a", []byte("2"), kv.Revision)
			}
			return err
		}},
	} {
		t.Run(change.name, func(t *testing.T) {
			if err := change.do(); err != nil {
				t.Fatal(err)
			}
			_, err := guarded("/p/d")
			var te *datastore.TxnError
			if !errors.As(err, &te) || te.Index != 1 || !errors.Is(err, datastore.ErrConflict) {
				t.Fatalf("got %v, want a conflict on op 1", err)
			}
			if !strings.Contains(err.Error(), "/p/") {
				t.Errorf("error %q names no key", err)
			}
			if _, err := c.Get(ctx, "/p/d"); !errors.Is(err, datastore.ErrNotFound) {
				t.Errorf("the write of a failed transaction landed: %v", err)
			}
		})
	}
}

// TestCheck: OpCheck conditions a transaction on one key's revision (or
// absence); it is how a caller guards a key whose deletion matters, which
// OpUnchangedSince cannot see.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	a, err := c.Create(ctx, "/c/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	_, rev, _ := c.List(ctx, "/c/")
	ok := []datastore.Op{
		{Type: datastore.OpPut, Key: "/d/x", Value: []byte("1")},
		{Type: datastore.OpCheck, Key: "/c/a", Rev: a.Revision},
		{Type: datastore.OpCheck, Key: "/c/absent"},
		{Type: datastore.OpUnchangedSince, Key: "/c/", Rev: rev},
	}
	kvs, err := c.Txn(ctx, ok)
	if err != nil || kvs[1] != nil || kvs[2] != nil || kvs[3] != nil {
		t.Fatalf("conditions that hold: %+v, %v", kvs, err)
	}
	// Deleting /c/a is invisible to OpUnchangedSince but not to OpCheck.
	if _, err := c.Delete(ctx, "/c/a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Txn(ctx, []datastore.Op{ok[0], ok[3]}); err != nil {
		t.Errorf("a delete under the prefix is documented as not seen: %v", err)
	}
	_, err = c.Txn(ctx, ok)
	var te *datastore.TxnError
	if !errors.As(err, &te) || te.Index != 1 || !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("check of a deleted key: %v, want a conflict on op 1", err)
	}
	if _, err := c.Create(ctx, "/c/absent", []byte("1")); err != nil {
		t.Fatal(err)
	}
	_, err = c.Txn(ctx, []datastore.Op{ok[0], ok[2]})
	if !errors.As(err, &te) || te.Index != 1 || !errors.Is(err, datastore.ErrConflict) {
		t.Errorf("check of absence of a key that exists: %v, want a conflict on op 1", err)
	}
	// A condition is not a write: it may not be combined with a write of
	// the same key, and needs a prefix and revision.
	if _, err := c.Txn(ctx, []datastore.Op{ok[1], {Type: datastore.OpPut, Key: "/c/a"}}); err == nil {
		t.Errorf("check and write of one key accepted")
	}
	if _, err := c.Txn(ctx, []datastore.Op{{Type: datastore.OpUnchangedSince, Key: "/c/"}}); err == nil {
		t.Errorf("OpUnchangedSince without a revision accepted")
	}
}

// TestUnchangedSinceRace: writers that each read a prefix, decide from what
// they read that they may add a key, and write conditionally on the prefix
// being unchanged: exactly one of them wins, whatever the interleaving.
func TestUnchangedSinceRace(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			kvs, rev, err := c.List(ctx, "/only-one/")
			if err != nil {
				errs[i] = err
				return
			}
			if len(kvs) > 0 {
				errs[i] = datastore.ErrAlreadyExists // decided from the read
				return
			}
			_, errs[i] = c.Txn(ctx, []datastore.Op{
				{Type: datastore.OpCreate, Key: fmt.Sprintf("/only-one/%d", i), Value: []byte("x")},
				{Type: datastore.OpUnchangedSince, Key: "/only-one/", Rev: rev},
			})
		}()
	}
	time.Sleep(10 * time.Millisecond)
	close(start)
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, datastore.ErrConflict), errors.Is(err, datastore.ErrAlreadyExists):
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	kvs, _, _ := c.List(ctx, "/only-one/")
	if won != 1 || len(kvs) != 1 {
		t.Errorf("%d writers succeeded and %d keys exist; want exactly one", won, len(kvs))
	}
}

// TestRetriedConditionalWrite: a conditional write whose response is lost
// is retried; on the retry its own landed write has broken the condition,
// and that must be recognised as success, not reported as a conflict.
func TestRetriedConditionalWrite(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	c, err := datastore.New(datastore.Config{Endpoints: []string{proxy.Endpoint()}, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "/g/old", []byte("x")); err != nil {
		t.Fatal(err)
	}
	_, rev, err := c.List(ctx, "/g/")
	if err != nil {
		t.Fatal(err)
	}
	proxy.DropResponses()
	done := make(chan struct{})
	var kvs []*datastore.KV
	go func() {
		defer close(done)
		kvs, err = c.Txn(ctx, []datastore.Op{
			{Type: datastore.OpCreate, Key: "/g/new", Value: []byte("1")},
			{Type: datastore.OpUnchangedSince, Key: "/g/", Rev: rev},
		})
	}()
	time.Sleep(time.Second) // applied, response lost, attempt timed out
	proxy.Cut()
	proxy.Restore()
	<-done
	if err != nil {
		t.Fatalf("retried conditional write: %v", err)
	}
	if len(kvs) != 2 || kvs[0] == nil || string(kvs[0].Value) != "1" || kvs[1] != nil {
		t.Errorf("results %+v", kvs)
	}
}
