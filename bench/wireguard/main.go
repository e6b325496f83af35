// Command wireguard measures what encryption costs between two hosts'
// workloads: the same two-host lab (pkg/lab: namespaces, tortie-node agents,
// the CNI plugin) brought up without and with `--encryption wireguard`, and
// in each, one workload on each host. It prints one table with both side by
// side: TCP throughput of one stream, TCP connections per second (connect,
// one byte each way, close), their round-trip time, and the CPU the two
// agents use while the stream runs (with userspace WireGuard the encryption
// runs inside the agents). Run as root from the repository:
//
//	go run ./bench/wireguard [-duration 10s] [-conns 8]
//
// Nothing is simulated: the packets cross real veths and the lab's bridge,
// and are encrypted by the agents' devices. On a kernel with WireGuard the
// agents use the kernel's device (TORTIE_WIREGUARD_MODE=userspace in the
// environment forces the userspace one); the table says which ran.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/procstat"
	"github.com/tortie/tortie/pkg/lab"
)

var run = labrun.New("bench/wireguard")

type result struct {
	name       string
	kind       string // the WireGuard device: kernel, userspace, or "" (none)
	up         time.Duration
	gbps       float64
	agentCores float64 // both agents' CPU during the stream, in cores
	connsPerS  float64
	rtt        []time.Duration // connect + one byte each way + close
}

func main() {
	duration := flag.Duration("duration", 10*time.Second, "how long the stream and the connection loop each run")
	conns := flag.Int("conns", 8, "connections made at once in the connection loop")
	flag.Parse()
	if os.Geteuid() != 0 {
		run.Fatalf("needs root: it builds a lab of network namespaces")
	}
	if *duration < time.Second || *conns < 1 {
		run.Fatalf("-duration must be at least 1s and -conns at least 1")
	}
	run.ExitOnSignal()
	defer run.Finish()
	dir, err := os.MkdirTemp("", "tortie-bench-wireguard-bin.")
	if err != nil {
		run.Fatalf("%v", err)
	}
	run.AddCleanup(func() { _ = os.RemoveAll(dir) })
	if err := labrun.Build(dir, "./cmd/tortie", "./cmd/tortie-node", "./cmd/tortie-cni", "./cmd/tortie-datastore"); err != nil {
		run.Fatalf("%v", err)
	}
	load0 := labrun.LoadAverage()
	var results []*result
	for _, enc := range []string{lab.EncryptionNone, lab.EncryptionWireguard} {
		results = append(results, measure(context.Background(), dir, enc, *duration, *conns))
	}
	fmt.Printf("## WireGuard between two hosts' workloads, %s (load average at start %s, at end %s; %d CPUs)\n\n",
		time.Now().UTC().Format("2006-01-02"), load0, labrun.LoadAverage(), runtime.NumCPU())
	fmt.Printf("Two hosts of a lab, one workload on each; %v of one TCP stream, then %v of connections, %d at once.\n\n",
		*duration, *duration, *conns)
	row := func(what string, f func(r *result) string) {
		fmt.Printf("| %s |", what)
		for _, r := range results {
			fmt.Printf(" %s |", f(r))
		}
		fmt.Println()
	}
	fmt.Printf("| | %s | %s |\n|---|---|---|\n", results[0].name, results[1].name)
	row("device", func(r *result) string {
		if r.kind == "" {
			return "none"
		}
		return r.kind
	})
	row("one TCP stream", func(r *result) string { return fmt.Sprintf("%.2f Gbit/s", r.gbps) })
	row("the two agents' CPU during it", func(r *result) string { return fmt.Sprintf("%.2f cores", r.agentCores) })
	row("TCP connections/s (connect, 1 byte each way, close)", func(r *result) string { return fmt.Sprintf("%.0f", r.connsPerS) })
	row("their round trip p50 / p99", func(r *result) string {
		return fmt.Sprintf("%.2f / %.2f ms", ms(pct(r.rtt, 50)), ms(pct(r.rtt, 99)))
	})
	row("lab up", func(r *result) string { return r.up.Round(10 * time.Millisecond).String() })
}

// measure brings up one lab and measures it.
func measure(ctx context.Context, binDir, encryption string, d time.Duration, conns int) *result {
	r := &result{name: "plain"}
	if encryption == lab.EncryptionWireguard {
		r.name = "WireGuard"
	}
	name := fmt.Sprintf("twg%06x", rand.Uint32()&0xffffff)
	t0 := time.Now()
	l, _, err := lab.Up(ctx, lab.Options{Name: name, Hosts: 2, Encryption: encryption, Log: io.Discard,
		Bins: lab.Binaries{Tortie: filepath.Join(binDir, "tortie"), Node: filepath.Join(binDir, "tortie-node"), CNI: filepath.Join(binDir, "tortie-cni")}})
	if err != nil {
		run.Fatalf("lab up (%s): %v", r.name, err)
	}
	run.AddCleanup(func() {
		if err := lab.Down(context.Background(), name, io.Discard); err != nil {
			run.Logf("lab down %s: %v", name, err)
		}
	})
	if err := l.WaitConverged(ctx, 90*time.Second); err != nil {
		run.Fatalf("lab %s (%s) never converged: %v", name, r.name, err)
	}
	r.up = time.Since(t0)
	st := l.State()
	var ws []*lab.Workload
	for _, h := range st.Hosts {
		w, err := l.AddWorkload(ctx, lab.WorkloadSpec{Name: "bench-" + h.Name, Host: h.Name, Listen: []string{}})
		if err != nil {
			run.Fatalf("%v", err)
		}
		ws = append(ws, w)
	}
	if encryption == lab.EncryptionWireguard {
		for _, hs := range l.Status(ctx).Hosts {
			if hs.Wireguard == nil || hs.Wireguard.Kind == "" || len(hs.Wireguard.Peers) != 1 {
				run.Fatalf("lab %s: %s's WireGuard is not up: %+v (%s)", name, hs.Name, hs.Wireguard, hs.Error)
			}
			r.kind = hs.Wireguard.Kind
		}
	}
	client, server := ws[0], ws[1]
	srvIP, _ := server.Addr(4)
	addr, _ := netip.AddrFromSlice(srvIP.To4())

	var agents []int
	for _, p := range st.Procs {
		if p.Role == "agent" {
			agents = append(agents, p.PID)
		}
	}
	agentCPU := func() time.Duration {
		var sum time.Duration
		for _, pid := range agents {
			c, err := procstat.CPU(pid)
			if err != nil {
				run.Fatalf("agent %d: %v", pid, err)
			}
			sum += c
		}
		return sum
	}

	// The stream: the server counts what arrives.
	streamLn := listen(server, addr, 5001)
	defer streamLn.Close()
	var received atomic.Int64
	go serve(streamLn, func(c net.Conn) {
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	c := dial(client, addr, 5001, 30*time.Second) // the first may wait for a handshake
	buf := make([]byte, 128<<10)
	cpu0, start := agentCPU(), time.Now()
	rec0 := received.Load()
	for time.Since(start) < d {
		if _, err := c.Write(buf); err != nil {
			run.Fatalf("stream: %v", err)
		}
	}
	elapsed := time.Since(start)
	r.gbps = float64(received.Load()-rec0) * 8 / elapsed.Seconds() / 1e9
	r.agentCores = float64(agentCPU()-cpu0) / float64(elapsed)
	c.Close()

	// The connections: the server answers one byte with one byte.
	echoLn := listen(server, addr, 5002)
	defer echoLn.Close()
	go serve(echoLn, func(c net.Conn) {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err == nil {
			c.Write(b)
		}
	})
	var mu sync.Mutex
	var wg sync.WaitGroup
	start = time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			b := []byte{1}
			for time.Since(start) < d {
				t := time.Now()
				c := dial(client, addr, 5002, 5*time.Second)
				if _, err := c.Write(b); err != nil {
					run.Fatalf("connection: %v", err)
				}
				if _, err := io.ReadFull(c, b); err != nil {
					run.Fatalf("connection: %v", err)
				}
				c.Close()
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			r.rtt = append(r.rtt, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.connsPerS = float64(len(r.rtt)) / time.Since(start).Seconds()
	slices.Sort(r.rtt)
	run.Logf("%s: %.2f Gbit/s, agents %.2f cores, %.0f connections/s", r.name, r.gbps, r.agentCores, r.connsPerS)
	return r
}

// serve hands each connection ln accepts to handle, on a goroutine of its
// own, and closes it after, until ln is closed.
func serve(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// listen opens a TCP listener in workload w's namespace.
func listen(w *lab.Workload, addr netip.Addr, port uint16) net.Listener {
	var ln net.Listener
	err := ns.WithNetNSPath(netnsPath(w), func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, port).String())
		return err
	})
	if err != nil {
		run.Fatalf("listen in %s: %v", w.ID(), err)
	}
	return ln
}

// dial connects from workload w's namespace, retrying until within.
func dial(w *lab.Workload, addr netip.Addr, port uint16, within time.Duration) net.Conn {
	deadline := time.Now().Add(within)
	for {
		var c net.Conn
		err := ns.WithNetNSPath(netnsPath(w), func(ns.NetNS) (err error) {
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(addr, port).String(), time.Second)
			return err
		})
		if err == nil {
			return c
		}
		if time.Now().After(deadline) || !isTimeout(err) {
			run.Fatalf("connect from %s to %s:%d: %v", w.ID(), addr, port, err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func netnsPath(w *lab.Workload) string { return filepath.Join("/run/netns", w.Netns) }

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
