package nft

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
)

// cancelOnList cancels a context once the driver has listed the table: a
// full sync is then cancelled between its read and its write.
type cancelOnList struct {
	*recorder
	cancel context.CancelFunc
}

func (c *cancelOnList) ListAll(ctx context.Context) (map[string][]string, error) {
	defer c.cancel()
	return c.recorder.ListAll(ctx)
}

// webOnPort is the feature scenario's web policy changed to allow only
// TCP port p.
func webOnPort(p uint16) *calc.Policy {
	return gpol("web", "default", []calc.Rule{
		rule("default web I0", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(p, p) }),
	}, nil)
}

// TestCancelledContextWritesNothing: a context done before the write makes
// Apply and Resync return its error having written nothing, the change is
// kept, and the next sync with a live context writes it.
func TestCancelledContextWritesNothing(t *testing.T) {
	s := featureScenario()
	f := newFake()
	rec := &recorder{Interface: f}
	d := New(rec, Config{Pools: s.pools})
	if err := d.Apply(t.Context(), changesOf(s.state)); err != nil {
		t.Fatal(err)
	}
	before, txs := sortedDump(f), len(rec.txs)

	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	change := &calc.Changes{InSync: true, PolicyUpdates: []*calc.Policy{webOnPort(81)}}
	if err := d.Apply(cancelled, change); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a cancelled context: %v, want context.Canceled", err)
	}
	if err := d.Resync(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Resync with a cancelled context: %v, want context.Canceled", err)
	}
	expired, cancelExpired := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancelExpired()
	if err := d.Resync(expired); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Resync past the deadline: %v, want context.DeadlineExceeded", err)
	}
	// Cancelled between the listing of a full sync and its write.
	ctx, cancelAfterList := context.WithCancel(t.Context())
	d.nft = &cancelOnList{recorder: rec, cancel: cancelAfterList}
	if err := d.Resync(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Resync cancelled after listing: %v, want context.Canceled", err)
	}
	d.nft = rec
	if len(rec.txs) != txs || sortedDump(f) != before {
		t.Fatalf("a cancelled context wrote %d transactions:\n%s", len(rec.txs)-txs, rec.last())
	}

	// The change was kept: the next sync writes it, and the table is what a
	// driver that never saw a cancelled context writes.
	if err := d.Apply(t.Context(), &calc.Changes{InSync: true}); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(t.Context(), &calc.Changes{InSync: true}); err != nil { // deletes what the change left unreferenced
		t.Fatal(err)
	}
	want, ref := render(t, s)
	for _, c := range []*calc.Changes{change, {InSync: true}} {
		if err := ref.Apply(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := sortedDump(f), sortedDump(want); got != want {
		t.Errorf("after the cancelled changes were written:\n%s\nwant:\n%s", got, want)
	}
}

// TestKernelNetlinkCancelled: over netlink too, a cancelled context writes
// nothing, and the next sync writes what it held back.
func TestKernelNetlinkCancelled(t *testing.T) {
	testenv.RequireRoot(t)
	n, name := testenv.NewNS(t)
	d := New(newNSNFT(t, n), Config{})
	nl, count := newNSNetlink(t, n)
	d.SetNetlink(nl)
	list := func() string {
		return sortBlocks(sortElements(testenv.Sh(t, "ip", "netns", "exec", name, "nft", "list", "table", "inet", "tortie")))
	}
	st := featureScenario().state
	if err := d.Apply(t.Context(), changesOf(st)); err != nil {
		t.Fatal(err)
	}
	// An incremental change that goes over netlink, to be sure the path is
	// the one under test.
	if err := d.Apply(t.Context(), &calc.Changes{InSync: true, PolicyUpdates: []*calc.Policy{webOnPort(81)}}); err != nil {
		t.Fatal(err)
	}
	if count.runs == 0 {
		t.Fatalf("no transaction over netlink (last fallback: %v)", count.last)
	}
	before, runs := list(), count.runs

	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	change := &calc.Changes{InSync: true, PolicyUpdates: []*calc.Policy{webOnPort(82)},
		MemberDeltas: []calc.MemberDelta{{SetID: "s:front", Added: []calc.Member{member("10.9.9.9/32")}}}}
	if err := d.Apply(cancelled, change); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a cancelled context: %v, want context.Canceled", err)
	}
	if after := list(); after != before || count.runs != runs {
		t.Fatalf("a cancelled context changed the table (%d netlink runs):\n%s\nbefore:\n%s", count.runs-runs, after, before)
	}

	// The next sync writes the change; a second driver given the same
	// changes, none cancelled, writes the same table.
	for range 2 {
		if err := d.Apply(t.Context(), &calc.Changes{InSync: true}); err != nil {
			t.Fatal(err)
		}
	}
	n2, name2 := testenv.NewNS(t)
	ref := New(newNSNFT(t, n2), Config{})
	for _, c := range []*calc.Changes{changesOf(st), {InSync: true, PolicyUpdates: []*calc.Policy{webOnPort(81)}}, change, {InSync: true}} {
		if err := ref.Apply(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	want := sortBlocks(sortElements(testenv.Sh(t, "ip", "netns", "exec", name2, "nft", "list", "table", "inet", "tortie")))
	if got := list(); got != want {
		t.Errorf("after the cancelled change was written:\n%s\nwant:\n%s", got, want)
	}
}
