// Command scale measures tortie at scale (issue 18), in sections that
// -sections chooses (default all of them). The ipam section measures IPAM
// in a burst. Many pods' addresses are allocated across many nodes by
// concurrent callers, then all are released, and `tortie ipam check`'s
// check must find nothing.
//
//	go run ./bench/scale [-pods 10000] [-nodes 100] [-callers 100]
//
// Each caller is what one CNI plugin process does for one pod: a new IPAM
// allocator per call (no pool view or block cache carried over from an
// earlier call), on the caller's own etcd connection. The plugin's process
// start is not in these numbers: docs/benchmarks.md's CNI rows have it.
// Only the number of machines is simulated. The nodes are Node resources in
// the datastore, and the callers run in this process. The datastore is a
// real single-member etcd (embedded, fsync on), on a port the kernel picks.
//
// It prints a markdown table: addresses per second, the latency of one call
// (p50, p99, max), duplicates found, blocks claimed, then the same for the
// release, and the check's result.
//
// The typha section sets N agents that each watch etcd beside N agents fed
// by one tortie-typha (typha.go):
//
//	go run ./bench/scale -sections typha [-typha-agents 1000] [-typha-endpoints 5000] [-typha-policies 200]
//
// etcd (tortie-datastore) and typha (mutual TLS) are processes of their
// own, so that their CPU time and memory, and the watchers etcd has open,
// are theirs alone. The agents are real syncers of the kinds tortie-node
// watches, each with its own etcd or typha connection, all in this process
// and started at once. Over -nodes nodes, their endpoints and policies, it
// measures the time until every agent is in sync, etcd's and typha's CPU
// and memory, and the time each of -typha-changes policy changes takes to
// reach one agent and the last of them. Then the faults: two typhas share
// the agents and one is SIGKILLed while policies change, and agents have
// their first connection cut mid-snapshot; every agent must end with
// etcd's policies. An agent that never syncs, or an update lost, fails the
// run.
//
// The moves section (root; moves.go) moves one workload's address between
// the hosts of a lab -moves times, as a VM migrating or an address
// re-assigned does, and times how long every other host takes to route it
// to the new host, over BGP and over VXLAN:
//
//	go run ./bench/scale -sections moves [-move-hosts 4] [-moves 50]
//
// The rr section (rr.go; not in the default: at 200 clients it takes about
// 10 minutes and 18 GB) runs one route reflector and -rr-clients client
// speakers on loopback addresses, -rr-blocks blocks each, with tortie's
// reflector and then BIRD 2's (Calico's reflector):
//
//	go run ./bench/scale -sections rr [-rr-clients 200] [-rr-blocks 100]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tortie/tortie/bench/internal/labrun"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
	"github.com/tortie/tortie/pkg/ipam"
)

var run = labrun.New("bench/scale")

type options struct {
	sections             string
	pods, nodes, callers int
	pool                 string
	blockSize            int

	typhaAgents, typhaEndpoints, typhaPolicies, typhaChanges int
	typhaSpacing, typhaSyncTimeout                           time.Duration
	typhaDirect, typhaFaults                                 bool

	moveHosts, moves    int
	rrClients, rrBlocks int
}

func main() {
	if os.Getenv(rrChildEnv) != "" {
		rrChild() // this program again, as the route reflector (rr.go)
		return
	}
	var o options
	flag.IntVar(&o.pods, "pods", 10000, "pods to give an IPv4 address each")
	flag.IntVar(&o.nodes, "nodes", 100, "nodes the pods are spread over (round robin)")
	flag.IntVar(&o.callers, "callers", 100, "concurrent callers, each with its own etcd connection")
	flag.StringVar(&o.pool, "pool", "10.128.0.0/16", "the IPv4 pool's CIDR")
	flag.IntVar(&o.blockSize, "block-size", 26, "the pool's block size")
	flag.StringVar(&o.sections, "sections", "ipam,typha,moves", "comma-separated sections to run: ipam, typha, moves, rr")
	flag.IntVar(&o.typhaAgents, "typha-agents", 200, "typha: agents in each case (issue 18's numbers are for 1000)")
	flag.IntVar(&o.typhaEndpoints, "typha-endpoints", 5000, "typha: workload endpoints in the datastore (over -nodes nodes)")
	flag.IntVar(&o.typhaPolicies, "typha-policies", 200, "typha: network policies in the datastore, half of them global")
	flag.IntVar(&o.typhaChanges, "typha-changes", 20, "typha: changes of one policy whose arrival at the agents is timed")
	flag.DurationVar(&o.typhaSpacing, "typha-spacing", 300*time.Millisecond, "typha: time between two changes")
	flag.DurationVar(&o.typhaSyncTimeout, "typha-sync-timeout", 5*time.Minute, "typha: how long all agents may take to sync before the run fails")
	flag.BoolVar(&o.typhaDirect, "typha-direct", true, "typha: also run the case of every agent watching etcd itself")
	flag.BoolVar(&o.typhaFaults, "typha-faults", true, "typha: also kill one of two typhas under load, and cut connections mid-snapshot")
	flag.IntVar(&o.moveHosts, "move-hosts", 4, "moves: hosts in the lab")
	flag.IntVar(&o.moves, "moves", 50, "moves: address moves in each case (BGP, VXLAN)")
	flag.IntVar(&o.rrClients, "rr-clients", 200, "rr: the reflector's clients")
	flag.IntVar(&o.rrBlocks, "rr-blocks", 100, "rr: blocks each client advertises")
	flag.Parse()
	sections := map[string]bool{}
	for _, s := range strings.Split(o.sections, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains([]string{"ipam", "typha", "moves", "rr"}, s) {
			run.Fatalf("-sections: unknown section %q (ipam, typha, moves, rr)", s)
		}
		sections[s] = true
	}
	if sections["moves"] && os.Geteuid() != 0 {
		run.Fatalf("the moves section needs root (it builds a lab of network namespaces); leave it out with -sections ipam,typha")
	}
	if o.moveHosts < 3 || o.moves < 1 || o.rrClients < 2 || o.rrBlocks < 1 {
		run.Fatalf("-move-hosts must be at least 3, -moves and -rr-blocks at least 1, -rr-clients at least 2")
	}
	if o.pods < 1 || o.nodes < 1 || o.callers < 1 {
		run.Fatalf("-pods, -nodes and -callers must be at least 1")
	}
	if o.typhaAgents < 1 || o.typhaEndpoints < 1 || o.typhaPolicies < 24 || o.typhaChanges < 1 {
		run.Fatalf("-typha-agents, -typha-endpoints and -typha-changes must be at least 1, -typha-policies at least 24 (the faults change 10 of them)")
	}
	if _, err := netip.ParsePrefix(o.pool); err != nil {
		run.Fatalf("-pool: %v", err)
	}
	run.ExitOnSignal()
	defer run.Finish()

	load0 := labrun.LoadAverage()
	var burst *burstResult
	if sections["ipam"] {
		srv := serveEtcd()
		burst = ipamBurst(srv.Endpoint(), o)
		srv.Close()
	}
	var fan *fanoutResult
	if sections["typha"] {
		fan = fanout(o)
	}
	var moves []*moveCase
	if sections["moves"] {
		dir, err := os.MkdirTemp("", "tortie-bench-scale-bin.")
		if err != nil {
			run.Fatalf("%v", err)
		}
		run.AddCleanup(func() { _ = os.RemoveAll(dir) })
		if err := labrun.Build(dir, "./cmd/tortie", "./cmd/tortie-node", "./cmd/tortie-cni", "./cmd/tortie-datastore"); err != nil {
			run.Fatalf("%v", err)
		}
		moves = movesBenchmark(context.Background(), movesOptions{hosts: o.moveHosts, moves: o.moves}, dir)
	}
	var rrs []*rrResult
	if sections["rr"] {
		rrs = rrBenchmark(context.Background(), rrOptions{clients: o.rrClients, blocks: o.rrBlocks})
	}
	fmt.Printf("## tortie scale benchmarks, %s (load average at start %s, at end %s; %d CPUs)\n\n",
		time.Now().UTC().Format("2006-01-02"), load0, labrun.LoadAverage(), runtime.NumCPU())
	if burst != nil {
		burst.print(os.Stdout, o)
	}
	if fan != nil {
		fan.print(os.Stdout)
	}
	if moves != nil {
		printMoves(os.Stdout, movesOptions{hosts: o.moveHosts, moves: o.moves}, moves)
	}
	if rrs != nil {
		printRR(os.Stdout, rrOptions{clients: o.rrClients, blocks: o.rrBlocks}, rrs)
	}
}

// serveEtcd starts an embedded etcd in a directory of its own, removed at
// the end.
func serveEtcd() *embedded.Server {
	dir, err := os.MkdirTemp("", "tortie-bench-scale.")
	if err != nil {
		run.Fatalf("%v", err)
	}
	run.AddCleanup(func() { _ = os.RemoveAll(dir) })
	srv, err := embedded.Serve(context.Background(), embedded.ServeConfig{
		DataDir:         dir,
		ListenClientURL: "http://127.0.0.1:0",
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		run.Fatalf("etcd: %v", err)
	}
	run.AddCleanup(func() { srv.Close() })
	return srv
}

// connect opens a datastore connection, closed at the end.
func connect(endpoint string) *datastore.Etcd {
	be, err := datastore.New(datastore.Config{Endpoints: []string{endpoint}})
	if err != nil {
		run.Fatalf("%v", err)
	}
	run.AddCleanup(func() { be.Close() })
	return be
}

type burstResult struct {
	assign, release         []time.Duration // per call
	assignWall, releaseWall time.Duration
	duplicates              []string
	blocks                  int
	check                   *ipam.Report
	failures                int
}

func ipamBurst(endpoint string, o options) *burstResult {
	ctx := context.Background()
	be := connect(endpoint)
	c := client.New(be)
	if err := c.EnsureInitialized(ctx); err != nil {
		run.Fatalf("%v", err)
	}
	poolKind, _ := v3.KindByKind(v3.KindIPPool)
	nodeKind, _ := v3.KindByKind(v3.KindNode)
	pool := poolKind.NewObject().(*v3.IPPool)
	pool.Name, pool.Spec.CIDR, pool.Spec.BlockSize = "scale-ipv4", o.pool, o.blockSize
	if _, err := c.Create(ctx, pool); err != nil {
		run.Fatalf("create pool: %v", err)
	}
	nodeName := func(i int) string { return fmt.Sprintf("scale-node-%03d", i) }
	for i := range o.nodes {
		n := nodeKind.NewObject().(*v3.Node)
		n.Name = nodeName(i)
		if _, err := c.Create(ctx, n); err != nil {
			run.Fatalf("create node: %v", err)
		}
	}
	handle := func(pod int) string { return fmt.Sprintf("k8s-pod-network.scale-%05d", pod) }

	// Each caller has its own connection, opened before the clock starts
	// (a plugin process's connection is part of its start).
	callers := make([]*datastore.Etcd, o.callers)
	for i := range callers {
		callers[i] = connect(endpoint)
		if err := callers[i].Ping(ctx); err != nil {
			run.Fatalf("%v", err)
		}
	}
	// burst runs f for every pod, the pods dealt round robin to the
	// callers, and returns each call's duration and the wall time.
	burst := func(what string, f func(be *datastore.Etcd, pod int) error) ([]time.Duration, time.Duration, int) {
		run.Logf("%s: %d pods, %d callers", what, o.pods, o.callers)
		lat := make([]time.Duration, o.pods)
		var failed sync.Map
		var wg sync.WaitGroup
		t0 := time.Now()
		for ci := range o.callers {
			wg.Go(func() {
				for pod := ci; pod < o.pods; pod += o.callers {
					t := time.Now()
					if err := f(callers[ci], pod); err != nil {
						failed.Store(pod, err)
					}
					lat[pod] = time.Since(t)
				}
			})
		}
		wg.Wait()
		wall := time.Since(t0)
		n := 0
		failed.Range(func(k, v any) bool {
			if n < 5 {
				run.Logf("%s: pod %d: %v", what, k, v)
			}
			n++
			return true
		})
		return lat, wall, n
	}

	r := &burstResult{}
	var mu sync.Mutex
	holder := make(map[netip.Addr]int, o.pods)
	var fails int
	r.assign, r.assignWall, fails = burst("assign", func(be *datastore.Etcd, pod int) error {
		as, err := ipam.New(be, ipam.Options{}).AutoAssign(ctx, ipam.AutoAssignArgs{
			HandleID: handle(pod),
			Node:     nodeName(pod % o.nodes),
			Num4:     1,
			Attrs:    map[string]string{"namespace": "scale", "pod": fmt.Sprintf("pod-%05d", pod)},
		})
		if err != nil {
			return err
		}
		if len(as.IPv4) != 1 {
			return fmt.Errorf("got %d IPv4 addresses, want 1", len(as.IPv4))
		}
		a := as.IPv4[0].Addr()
		mu.Lock()
		defer mu.Unlock()
		if other, ok := holder[a]; ok {
			r.duplicates = append(r.duplicates, fmt.Sprintf("%s to pods %d and %d", a, other, pod))
		}
		holder[a] = pod
		return nil
	})
	r.failures += fails
	report, err := ipam.New(be, ipam.Options{}).Check(ctx)
	if err != nil {
		run.Fatalf("check after assigning: %v", err)
	}
	r.blocks = report.Blocks
	if report.Allocations != len(holder) || report.Handles != len(holder) || len(report.Duplicates) > 0 {
		r.duplicates = append(r.duplicates, fmt.Sprintf("the blocks hold %d allocations and %d handles (%d addresses in two blocks), the callers were handed %d addresses",
			report.Allocations, report.Handles, len(report.Duplicates), len(holder)))
	}

	r.release, r.releaseWall, fails = burst("release", func(be *datastore.Etcd, pod int) error {
		got, err := ipam.New(be, ipam.Options{}).ReleaseByHandle(ctx, handle(pod))
		if err == nil && len(got) != 1 {
			err = fmt.Errorf("released %d addresses, want 1", len(got))
		}
		return err
	})
	r.failures += fails
	if r.check, err = ipam.New(be, ipam.Options{}).Check(ctx); err != nil {
		run.Fatalf("check after releasing: %v", err)
	}
	return r
}

func (r *burstResult) print(w io.Writer, o options) {
	fmt.Fprintf(w, "| IPAM in a burst: %d pods over %d nodes, %d concurrent callers, pool %s in /%d blocks | result |\n|---|---|\n",
		o.pods, o.nodes, o.callers, o.pool, o.blockSize)
	fmt.Fprintf(w, "| assign: addresses/s (wall %s) | **%.0f/s** |\n", r.assignWall.Round(time.Millisecond), float64(o.pods)/r.assignWall.Seconds())
	fmt.Fprintf(w, "| assign: one call, p50 / p99 / max | %s |\n", quantiles(r.assign))
	fmt.Fprintf(w, "| blocks claimed (at most %d addresses each) | %d |\n", 1<<(32-o.blockSize), r.blocks)
	fmt.Fprintf(w, "| duplicates (an address handed to two pods, or the blocks disagreeing with the callers) | **%d**%s |\n", len(r.duplicates), firstFew(r.duplicates))
	fmt.Fprintf(w, "| release by handle: addresses/s (wall %s) | %.0f/s |\n", r.releaseWall.Round(time.Millisecond), float64(o.pods)/r.releaseWall.Seconds())
	fmt.Fprintf(w, "| release: one call, p50 / p99 / max | %s |\n", quantiles(r.release))
	fmt.Fprintf(w, "| failed calls | %d |\n", r.failures)
	verdict := "**clean**"
	if r.check.Problems() > 0 || r.check.Allocations > 0 || r.check.Handles > 0 {
		verdict = fmt.Sprintf("**%d problems, %d addresses and %d handles left**", r.check.Problems(), r.check.Allocations, r.check.Handles)
	}
	fmt.Fprintf(w, "| `tortie ipam check` after releasing them all | %s (the %d blocks stay claimed by their nodes, empty) |\n", verdict, r.check.Blocks)
	fmt.Fprintf(w, "\nRerun: `go run ./bench/scale -sections ipam`. A call is one IPAM library call as the CNI plugin makes it (a new allocator, nothing cached), without the plugin's process start.\n")
	if len(r.duplicates) > 0 || r.failures > 0 || r.check.Problems() > 0 || r.check.Allocations > 0 || r.check.Handles > 0 {
		run.Fatalf("IPAM burst: %d duplicates, %d failed calls, %d problems after release", len(r.duplicates), r.failures, r.check.Problems())
	}
}

func quantiles(ds []time.Duration) string {
	s := slices.Sorted(slices.Values(ds))
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	if rank(s, 1) >= 10*time.Second {
		ms = func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	}
	return ms(rank(s, 0.5)) + " / " + ms(rank(s, 0.99)) + " / " + ms(rank(s, 1))
}

func firstFew(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return " (" + strings.Join(l[:min(3, len(l))], "; ") + ")"
}
