package ipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// Eight nodes allocate 2,000 addresses each from one /16 pool, each through
// its own IPAM client (its own process, as far as the datastore can tell),
// while a ninth client releases random ones, by handle or by address. No
// address is ever held by two handles at once; at the end the blocks and
// handles agree, and after releasing everything nothing is in use and
// check finds nothing.
func TestConcurrentAllocateRelease(t *testing.T) {
	const (
		nodes   = 8
		perNode = 2000
	)
	e := newTestEnv(t)
	e.pool("default-ipv4-ippool", "10.244.0.0/16", 26)
	for n := 0; n < nodes; n++ {
		e.node(fmt.Sprintf("node-%d", n), nil)
	}

	var mu sync.Mutex
	holder := map[netip.Addr]string{} // address -> handle, while held
	var live []string                 // handles not yet released
	addrOf := map[string]netip.Addr{}
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
	}

	start := time.Now()
	var wg sync.WaitGroup
	done := make(chan struct{})
	for n := 0; n < nodes; n++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := New(e.be, Options{})
			node := fmt.Sprintf("node-%d", n)
			for i := 0; i < perNode; i++ {
				h := fmt.Sprintf("k8s-pod-network.%s-%05d", node, i)
				as, err := cl.AutoAssign(e.ctx, AutoAssignArgs{HandleID: h, Node: node, Num4: 1})
				if err != nil {
					fail("%s: %v", h, err)
					return
				}
				a := as.IPv4[0].Addr()
				mu.Lock()
				if other, ok := holder[a]; ok {
					fail("%s handed to %s while %s holds it", a, h, other)
				}
				holder[a] = h
				addrOf[h] = a
				live = append(live, h)
				mu.Unlock()
			}
		}()
	}
	var released int
	var relWG sync.WaitGroup
	relWG.Add(1)
	go func() {
		defer relWG.Done()
		cl := New(e.be, Options{})
		r := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-done:
				return
			default:
			}
			mu.Lock()
			if len(live) == 0 {
				mu.Unlock()
				time.Sleep(time.Millisecond)
				continue
			}
			i := r.IntN(len(live))
			h := live[i]
			live[i] = live[len(live)-1]
			live = live[:len(live)-1]
			a := addrOf[h]
			delete(holder, a) // before the release: from then on it may be handed out again
			mu.Unlock()
			var err error
			if r.IntN(2) == 0 {
				_, err = cl.ReleaseByHandle(e.ctx, h)
			} else {
				var un []netip.Addr
				un, err = cl.ReleaseIPs(e.ctx, ReleaseOptions{Address: a, Handle: h})
				if len(un) > 0 {
					fail("release of %s (%s): not allocated", a, h)
				}
			}
			if err != nil {
				fail("release %s: %v", h, err)
			}
			released++
		}
	}()
	wg.Wait()
	close(done)
	relWG.Wait()
	elapsed := time.Since(start)
	t.Logf("%d allocations by %d nodes with %d concurrent releases in %v (%.0f allocations/s)",
		nodes*perNode, nodes, released, elapsed, float64(nodes*perNode)/elapsed.Seconds())
	if t.Failed() {
		return
	}

	held := auditBlocks(e.ctx, t, e.be)
	if len(held) != len(live) {
		t.Errorf("blocks hold %d addresses, %d handles are live", len(held), len(live))
	}
	for _, h := range live {
		if held[addrOf[h]] != h {
			t.Errorf("%s should hold %s, blocks say %q", h, addrOf[h], held[addrOf[h]])
		}
	}
	// Every node used its own blocks only (the pool never ran short).
	blocks, _ := e.ipam.listBlocks(e.ctx, 4)
	for _, info := range blocks {
		for ord, idx := range info.block().Allocations {
			if idx != nil && info.block().Attributes[*idx].Secondary[AttrNode] != info.block().host() {
				t.Errorf("%s of %s's block allocated to %s", info.block().addr(ord), info.block().host(), info.block().Attributes[*idx].Secondary[AttrNode])
			}
		}
	}

	// Release everything that is left, eight at a time.
	work := make(chan string)
	var relAll sync.WaitGroup
	for w := 0; w < nodes; w++ {
		relAll.Add(1)
		go func() {
			defer relAll.Done()
			cl := New(e.be, Options{})
			for h := range work {
				if _, err := cl.ReleaseByHandle(e.ctx, h); err != nil {
					fail("release %s: %v", h, err)
				}
			}
		}()
	}
	for _, h := range live {
		work <- h
	}
	close(work)
	relAll.Wait()
	usage, err := e.ipam.Usage(e.ctx)
	if err != nil || len(usage) != 1 || usage[0].InUse != 0 {
		t.Errorf("usage after releasing everything: %+v %v", usage, err)
	}
	rep, err := e.ipam.Check(e.ctx)
	if err != nil || rep.Problems() != 0 || rep.Handles != 0 {
		t.Errorf("check after releasing everything: %+v %v", rep, err)
	}
	t.Logf("%d blocks claimed", rep.Blocks)
}
