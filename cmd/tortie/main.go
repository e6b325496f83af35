// Command tortie is the CLI: resources, IPAM, node status, the datastore and the lab.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"syscall"
	"time"

	"github.com/tortie/tortie/pkg/cli"
)

// main runs the command under one context that Ctrl-C (SIGINT) or SIGTERM
// cancels; every command reaches it as cmd.Context(). The signals stay
// caught until the command returns, so that a second Ctrl-C does not cut
// short a command's cleanup (`lab up` removing what it had made).
func main() {
	collectLate()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := cli.NewRootCommand(os.Stdin, os.Stdout, os.Stderr)
	root.SetArgs(os.Args[1:])
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// For its first startupPeriod, the process lets its heap grow to
// startupHeap before it collects garbage, instead of the runtime's 4 MB
// minimum: initialising the runtime and the dependencies allocates nearly
// 3 MB, so a one-policy apply would collect once for nothing, and a large
// manifest many times while its heap is still small. Commands that run
// longer (`lab serve` in every lab workload) go back to the runtime's
// default after startupPeriod.
const (
	startupHeap   = 64 << 20
	startupPeriod = time.Second
)

var startup struct {
	sync.Mutex
	over bool
}

// collectLate keeps the heap goal at startupHeap, or at twice the live heap
// (the default, GOGC=100) once that is more, so a large manifest's heap is
// bounded as before: after each collection it sets the GOGC that puts the
// next goal there, until startupPeriod is over. A GOGC in the environment
// is left as it is. (The Go compiler starts its heap large for the same
// reason.)
func collectLate() {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	// GOGC scales the runtime's 4 MB minimum heap, the first goal.
	debug.SetGCPercent(100 * startupHeap / (4 << 20))
	afterNextGC()
	time.AfterFunc(startupPeriod, func() {
		startup.Lock()
		defer startup.Unlock()
		startup.over = true
		debug.SetGCPercent(100)
	})
}

// afterNextGC sets GOGC for the goal after the next collection, and again
// after each one, until the live heap is half of startupHeap.
func afterNextGC() {
	// Unreachable from the start, so the next collection finalizes it.
	// (Big enough not to share a tiny-allocation block, which could keep
	// it alive.)
	runtime.SetFinalizer(new([32]byte), func(*[32]byte) {
		startup.Lock()
		defer startup.Unlock()
		if startup.over {
			return
		}
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		live := s[0].Value.Uint64()
		if s[0].Value.Kind() != metrics.KindUint64 || 2*live >= startupHeap {
			startup.over = true
			debug.SetGCPercent(100)
			return
		}
		debug.SetGCPercent(int(100*startupHeap/max(live, 1) - 100))
		afterNextGC()
	})
}
