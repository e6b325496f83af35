package ipam

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

const (
	crashEndpointEnv = "TORTIE_IPAM_CRASH_ENDPOINT"
	crashNodeEnv     = "TORTIE_IPAM_CRASH_NODE"
)

// TestCrashChild is the process TestCrashSafety kills: it allocates dual
// stack addresses as a CNI plugin would (AutoAssign, then the workload
// endpoint), and sometimes tears one down (endpoint, then ReleaseByHandle),
// until it is killed. It does nothing in a normal test run.
func TestCrashChild(t *testing.T) {
	ep := os.Getenv(crashEndpointEnv)
	if ep == "" {
		return // only as TestCrashSafety's child
	}
	be, err := datastore.New(datastore.Config{Endpoints: []string{ep}})
	if err != nil {
		t.Fatal(err)
	}
	node := os.Getenv(crashNodeEnv)
	ctx := context.Background()
	// Make the window between a claim's pending affinity and its block
	// wide enough that some kills land in it.
	testHookAfterPendingAffinity = func() { time.Sleep(5 * time.Millisecond) }
	ipam := New(be, Options{})
	c := client.New(be)
	var mine []string
	for i := 0; ; i++ {
		id := fmt.Sprintf("c%d-%d", os.Getpid(), i)
		h := "crash." + id
		as, err := ipam.AutoAssign(ctx, AutoAssignArgs{HandleID: h, Node: node, Num4: 1, Num6: 1})
		if err != nil {
			fmt.Fprintln(os.Stderr, "AutoAssign:", err)
			os.Exit(3)
		}
		w := kindOf(v3.KindWorkloadEndpoint).NewObject().(*v3.WorkloadEndpoint)
		w.Namespace = "default"
		w.Name = v3.WorkloadEndpointName(node, v3.OrchestratorCNI, id, "eth0")
		w.Spec = v3.WorkloadEndpointSpec{Orchestrator: v3.OrchestratorCNI, Node: node, ContainerID: id, Endpoint: "eth0", InterfaceName: "cali0123456789a"}
		for _, p := range as.Addrs() {
			w.Spec.IPNetworks = append(w.Spec.IPNetworks, netip.PrefixFrom(p, p.BitLen()).String())
		}
		if _, err := c.Create(ctx, w); err != nil {
			fmt.Fprintln(os.Stderr, "create endpoint:", err)
			os.Exit(3)
		}
		mine = append(mine, id)
		if rand.IntN(3) == 0 {
			k := rand.IntN(len(mine))
			id := mine[k]
			mine = append(mine[:k], mine[k+1:]...)
			name := v3.WorkloadEndpointName(node, v3.OrchestratorCNI, id, "eth0")
			if _, err := c.Delete(ctx, kindOf(v3.KindWorkloadEndpoint), "default", name, 0); err != nil {
				fmt.Fprintln(os.Stderr, "delete endpoint:", err)
				os.Exit(3)
			}
			if _, err := ipam.ReleaseByHandle(ctx, "crash."+id); err != nil {
				fmt.Fprintln(os.Stderr, "release:", err)
				os.Exit(3)
			}
		}
	}
}

// An allocating process is killed (SIGKILL) at random points 50 times,
// with small blocks so that many kills land inside a block claim. After
// that: no address is held twice, blocks and handles agree, every
// allocated address is either used by a workload endpoint or reported by
// check, and after check's repair nothing is left to report and every
// node can still allocate.
func TestCrashSafety(t *testing.T) {
	const kills = 50
	e := newTestEnv(t)
	e.pool("crash-v4", "10.90.0.0/22", 29)   // 128 blocks of 8
	e.pool("crash-v6", "fd00:90::/112", 125) // 8192 blocks of 8
	nodes := []string{"c0", "c1", "c2"}
	for _, n := range nodes {
		e.node(n, nil)
	}
	r := rand.New(rand.NewPCG(3, 4))
	var stderr strings.Builder
	inClaim := 0
	for k := 0; k < kills; k++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEndpointEnv+"="+e.ep, crashNodeEnv+"="+nodes[k%len(nodes)])
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(60+r.IntN(240)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("child %d ended on its own (%v): %s", k, err, stderr.String())
		}
		// Count kills that landed inside a claim (a pending affinity left);
		// the next child on that node must finish or undo it.
		kvs, _, err := e.be.List(e.ctx, hostPrefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range kvs {
			if strings.Contains(string(kv.Value), statePending) {
				inClaim++
				break
			}
		}
	}
	t.Logf("%d of %d kills left a claim half done", inClaim, kills)

	held := auditBlocks(e.ctx, t, e.be)
	rep, err := e.ipam.Check(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaked := map[netip.Addr]bool{}
	for _, l := range rep.Leaks {
		leaked[l.Addr] = true
	}
	weps, _, _ := e.c.List(e.ctx, kindOf(v3.KindWorkloadEndpoint), "")
	used := map[netip.Addr]bool{}
	for _, o := range weps {
		for _, n := range o.(*v3.WorkloadEndpoint).Spec.IPNetworks {
			used[netip.MustParsePrefix(n).Addr()] = true
		}
	}
	for a := range held {
		if !used[a] && !leaked[a] {
			t.Errorf("%s is allocated, used by no endpoint and not reported", a)
		}
	}
	if len(rep.Unallocated) > 0 || len(rep.Duplicates) > 0 || len(rep.HandleProblems) > 0 {
		t.Errorf("check: unallocated %v, duplicates %v, handle problems %v", rep.Unallocated, rep.Duplicates, rep.HandleProblems)
	}
	t.Logf("after %d kills: %d blocks, %d addresses allocated, %d used by %d endpoints, %d leaked, %d affinity problems",
		kills, rep.Blocks, len(held), rep.InUse, len(weps), len(rep.Leaks), len(rep.AffinityProblems))

	res, err := e.ipam.ReleaseLeaks(e.ctx, rep, 0)
	if err != nil || len(res.Errors) > 0 {
		t.Fatalf("repair: %+v %v", res, err)
	}
	if rep, err = e.ipam.Check(e.ctx); err != nil || rep.Problems() != 0 {
		t.Errorf("after repair: %+v %v", rep, err)
	}
	for _, n := range nodes {
		e.assign("after."+n, n, 1, 1)
	}
	auditBlocks(e.ctx, t, e.be)
}
