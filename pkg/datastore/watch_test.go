package datastore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// event renders a WatchEvent compactly for comparison: "added /k=v@rev".
func event(ev datastore.WatchEvent) string {
	switch ev.Type {
	case datastore.EventInSync:
		return "in-sync"
	case datastore.EventError:
		return "error " + ev.Err.Error()
	case datastore.EventDeleted:
		if ev.PrevKV.Value == nil {
			// Found gone by a resync: the watcher kept the revision, not
			// the value.
			if ev.PrevKV.Revision > 0 && ev.PrevKV.Key == ev.KV.Key {
				return fmt.Sprintf("deleted %s (last revision known)", ev.KV.Key)
			}
			return fmt.Sprintf("deleted %s (nothing known)", ev.KV.Key)
		}
		return fmt.Sprintf("deleted %s (was %s)", ev.KV.Key, ev.PrevKV.Value)
	}
	return fmt.Sprintf("%s %s=%s", ev.Type, ev.KV.Key, ev.KV.Value)
}

// expect reads len(want) events and compares them; within a resync (events
// before an in-sync) the order is not part of the contract, so runs of
// events between in-syncs are compared as sets when unordered is set.
func expect(t *testing.T, ch <-chan datastore.WatchEvent, unordered bool, want ...string) {
	t.Helper()
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %q; want %q", got, want)
			}
			got = append(got, event(ev))
		case <-timeout:
			t.Fatalf("got %q, then nothing for 10s; want %q", got, want)
		}
	}
	if unordered {
		got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n got  %q\n want %q", got, want)
	}
}

func expectNothing(t *testing.T, ch <-chan datastore.WatchEvent) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event %s", event(ev))
	case <-time.After(200 * time.Millisecond):
	}
}

func put(t *testing.T, c *datastore.Etcd, key, value string) {
	t.Helper()
	if _, err := c.Txn(context.Background(), []datastore.Op{{Type: datastore.OpPut, Key: key, Value: []byte(value)}}); err != nil {
		t.Fatal(err)
	}
}

func del(t *testing.T, c *datastore.Etcd, key string) {
	t.Helper()
	if _, err := c.Delete(context.Background(), key, 0); err != nil {
		t.Fatal(err)
	}
}

func TestWatchListThenLive(t *testing.T) {
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	put(t, c, "/w/a", "1")
	put(t, c, "/w/b", "1")
	put(t, c, "/other", "1")
	ctx, cancel := context.WithCancel(context.Background())
	ch := c.Watch(ctx, "/w/", 0)
	expect(t, ch, false, "added /w/a=1", "added /w/b=1", "in-sync")

	put(t, c, "/w/c", "1")
	put(t, c, "/w/a", "2")
	put(t, c, "/other", "2")
	del(t, c, "/w/b")
	expect(t, ch, false, "added /w/c=1", "modified /w/a=2", "deleted /w/b (was 1)")
	expectNothing(t, ch)

	cancel()
	for range ch { // must close
	}
}

func TestWatchFromRevision(t *testing.T) {
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	put(t, c, "/w/a", "1")
	kv, _ := c.Create(context.Background(), "/w/b", []byte("1"))
	put(t, c, "/w/a", "2")
	del(t, c, "/w/b")

	// From b's creation on: a was known (as 1) before, b is new.
	ch := c.Watch(t.Context(), "/w/", kv.Revision)
	expect(t, ch, false, "added /w/b=1", "modified /w/a=2", "deleted /w/b (was 1)")
	expectNothing(t, ch)
}

// A watcher cut off from the server while keys change and the history is
// compacted resumes with a list and reports exactly the difference.
func TestWatchCompactedWhileDisconnected(t *testing.T) {
	srv := etcdtest.Start(t)
	direct := etcdtest.NewClient(t, srv)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	watching, err := datastore.New(datastore.Config{Endpoints: []string{proxy.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer watching.Close()

	for _, k := range []string{"a", "b", "c", "same"} {
		put(t, direct, "/w/"+k, "1")
	}
	ch := watching.Watch(t.Context(), "/w/", 0)
	expect(t, ch, true, "added /w/a=1", "added /w/b=1", "added /w/c=1", "added /w/same=1")
	expect(t, ch, false, "in-sync")

	proxy.Cut()
	put(t, direct, "/w/a", "2")
	del(t, direct, "/w/b")
	put(t, direct, "/w/c", "2")
	put(t, direct, "/w/c", "3")
	put(t, direct, "/w/d", "1")
	put(t, direct, "/w/brief", "1") // born and gone while cut off: never seen
	del(t, direct, "/w/brief")
	kv, _ := direct.Get(context.Background(), "/w/d")
	if _, err := direct.Client().Compact(context.Background(), kv.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()

	expect(t, ch, true, "modified /w/a=2", "deleted /w/b (last revision known)", "modified /w/c=3", "added /w/d=1")
	expect(t, ch, false, "in-sync")
	// And it goes on watching.
	put(t, direct, "/w/e", "1")
	del(t, direct, "/w/same")
	expect(t, ch, false, "added /w/e=1", "deleted /w/same (was 1)")
}

// A watcher cut off without compaction resumes where it was: the missed
// events come as events, with no resync.
func TestWatchResumesAfterDisconnect(t *testing.T) {
	srv := etcdtest.Start(t)
	direct := etcdtest.NewClient(t, srv)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	watching, err := datastore.New(datastore.Config{Endpoints: []string{proxy.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer watching.Close()

	ch := watching.Watch(t.Context(), "/w/", 0)
	expect(t, ch, false, "in-sync")
	put(t, direct, "/w/a", "1")
	expect(t, ch, false, "added /w/a=1")
	proxy.Cut()
	put(t, direct, "/w/a", "2")
	put(t, direct, "/w/b", "1")
	del(t, direct, "/w/a")
	proxy.Restore()
	expect(t, ch, false, "modified /w/a=2", "added /w/b=1", "deleted /w/a (was 2)")
	expectNothing(t, ch)
}

// The start revision itself compacted: the watcher cannot know what the
// consumer has, so it lists everything and says when it is in sync.
func TestWatchFromCompactedRevision(t *testing.T) {
	c := etcdtest.NewClient(t, etcdtest.Start(t))
	put(t, c, "/w/a", "1")
	put(t, c, "/w/a", "2")
	kv, _ := c.Get(context.Background(), "/w/a")
	if _, err := c.Client().Compact(context.Background(), kv.Revision); err != nil {
		t.Fatal(err)
	}
	ch := c.Watch(t.Context(), "/w/", kv.Revision-1)
	expect(t, ch, false, "added /w/a=2", "in-sync")
}

func TestWatchClientClosed(t *testing.T) {
	srv := etcdtest.Start(t)
	c, err := datastore.New(datastore.Config{Endpoints: []string{srv.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	ch := c.Watch(t.Context(), "/w/", 0)
	expect(t, ch, false, "in-sync")
	c.Close()
	var last datastore.WatchEvent
	for ev := range ch {
		last = ev
	}
	if last.Type != datastore.EventError || !strings.Contains(last.Err.Error(), "closed") {
		t.Fatalf("last event %+v, want an error saying the client closed", last)
	}
}

// A resync sends each page as it arrives. When the list's revision is
// compacted between two pages, the list starts again at a newer one and
// sends only what differs from what it already sent: no key twice unless
// it changed, nothing of the old revision's later pages.
func TestWatchResyncCompactedBetweenPages(t *testing.T) {
	srv := etcdtest.Start(t)
	c := etcdtest.NewClient(t, srv)
	// Pages of 2,000 then 50,000 keys (small values), then the rest: the
	// compaction, made while the first page is being sent, falls before a
	// later page is read, even by a list that reads a page ahead.
	const n = 52100
	key := func(i int) string { return fmt.Sprintf("/w/%06d", i) }
	var ops []datastore.Op
	for i := range n {
		ops = append(ops, datastore.Op{Type: datastore.OpCreate, Key: key(i), Value: []byte("1")})
		if len(ops) == 5000 || i == n-1 {
			if _, err := c.Txn(t.Context(), ops); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	ch := c.Watch(t.Context(), "/w/", 0)
	// The watcher now waits to send the rest of the first page: the
	// channel holds far fewer.
	expect(t, ch, false, "added /w/000000=1")
	put(t, c, key(1), "2")   // sent already: sent again, changed
	put(t, c, key(n-1), "2") // on the last page: sent once, new
	del(t, c, key(n-2))      // on the last page: never sent
	put(t, c, key(n), "1")
	kv, _ := c.Get(t.Context(), key(n))
	if _, err := c.Client().Compact(t.Context(), kv.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	seen := map[string][]string{}
	for done := false; !done; {
		select {
		case ev := <-ch:
			switch ev.Type {
			case datastore.EventInSync:
				done = true
			case datastore.EventError:
				t.Fatal(ev.Err)
			default:
				seen[ev.KV.Key] = append(seen[ev.KV.Key], event(ev))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no in-sync after %d keys", len(seen))
		}
	}
	for i := 1; i <= n; i++ {
		var want []string
		switch i {
		case 1:
			want = []string{"added /w/000001=1", "modified /w/000001=2"}
		case n - 2:
		case n - 1:
			want = []string{fmt.Sprintf("added %s=2", key(i))}
		default:
			want = []string{fmt.Sprintf("added %s=1", key(i))}
		}
		if got := seen[key(i)]; !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", key(i), got, want)
		}
	}
}
