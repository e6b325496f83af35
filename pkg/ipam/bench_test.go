package ipam

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/datastore"
)

// countingBackend counts the requests IPAM sends to etcd: every method
// call is one round trip (List pages bigger than 2,000 keys would be more;
// the lists here are smaller).
type countingBackend struct {
	datastore.Backend
	reads, writes atomic.Int64
}

func (c *countingBackend) Get(ctx context.Context, key string) (*datastore.KV, error) {
	c.reads.Add(1)
	return c.Backend.Get(ctx, key)
}

func (c *countingBackend) List(ctx context.Context, prefix string) ([]*datastore.KV, int64, error) {
	c.reads.Add(1)
	return c.Backend.List(ctx, prefix)
}

func (c *countingBackend) Create(ctx context.Context, key string, value []byte) (*datastore.KV, error) {
	c.writes.Add(1)
	return c.Backend.Create(ctx, key, value)
}

func (c *countingBackend) Update(ctx context.Context, key string, value []byte, rev int64) (*datastore.KV, error) {
	c.writes.Add(1)
	return c.Backend.Update(ctx, key, value, rev)
}

func (c *countingBackend) Delete(ctx context.Context, key string, rev int64) (*datastore.KV, error) {
	c.writes.Add(1)
	return c.Backend.Delete(ctx, key, rev)
}

func (c *countingBackend) Txn(ctx context.Context, ops []datastore.Op) ([]*datastore.KV, error) {
	c.writes.Add(1)
	return c.Backend.Txn(ctx, ops)
}

// benchAllocate runs b.N AutoAssigns of one address each, spread over
// allocators nodes (one IPAM client and goroutine per node), from a /16
// pool with /26 blocks, and reports allocations per second and etcd round
// trips per allocation (block claims included).
func benchAllocate(b *testing.B, allocators int, opts Options) {
	e := newTestEnv(b)
	e.pool("default-ipv4-ippool", "10.244.0.0/16", 26)
	cb := &countingBackend{Backend: e.be}
	clients := make([]*IPAM, allocators)
	for i := range clients {
		clients[i] = New(cb, opts)
	}
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < allocators; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("node-%d", w)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				h := fmt.Sprintf("net.%s-%d", node, i)
				if _, err := clients[w].AutoAssign(e.ctx, AutoAssignArgs{HandleID: h, Node: node, Num4: 1}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "allocs/s")
	b.ReportMetric(float64(cb.reads.Load()+cb.writes.Load())/float64(b.N), "roundtrips/alloc")
	b.ReportMetric(float64(cb.writes.Load())/float64(b.N), "writes/alloc")
}

func BenchmarkAutoAssign1(b *testing.B)       { benchAllocate(b, 1, Options{}) }
func BenchmarkAutoAssign8(b *testing.B)       { benchAllocate(b, 8, Options{}) }
func BenchmarkAutoAssign1Cached(b *testing.B) { benchAllocate(b, 1, Options{ViewTTL: time.Second}) }
func BenchmarkAutoAssign8Cached(b *testing.B) { benchAllocate(b, 8, Options{ViewTTL: time.Second}) }

// A release by handle: read the handle, read the block, one transaction.
func BenchmarkReleaseByHandle(b *testing.B) {
	e := newTestEnv(b)
	e.pool("default-ipv4-ippool", "10.244.0.0/16", 26)
	cb := &countingBackend{Backend: e.be}
	cl := New(cb, Options{})
	for i := 0; i < b.N; i++ {
		if _, err := cl.AutoAssign(e.ctx, AutoAssignArgs{HandleID: fmt.Sprint("h", i), Node: "n1", Num4: 1}); err != nil {
			b.Fatal(err)
		}
	}
	cb.reads.Store(0)
	cb.writes.Store(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cl.ReleaseByHandle(e.ctx, fmt.Sprint("h", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cb.reads.Load()+cb.writes.Load())/float64(b.N), "roundtrips/op")
}
