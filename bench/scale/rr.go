package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/procstat"
	"github.com/tortie/tortie/pkg/bgp"
)

// rrOptions say how big the route reflector's cluster is.
type rrOptions struct {
	clients, blocks int
}

var rrTimeout = 10 * time.Minute

// rrResult is what one route reflection run measured.
type rrResult struct {
	reflector    string        // "tortie" or "bird"
	converge     time.Duration // from starting the clients to every client holding every other client's blocks
	rrCPU        time.Duration // the reflector's CPU during that
	newBlock     []time.Duration
	rrRSS, rrHWM int64 // kB, after convergence
	clientsRSS   int64 // kB, this process (the clients) after convergence
	routes       int   // routes each client learned
}

// The reflector runs in a process of its own (this program again, with
// rrChildEnv set), so that its memory and CPU are its own.
const rrChildEnv = "TORTIE_BENCH_RR_CHILD"

// rrChild is the reflector: a tortie BGP speaker (pkg/bgp, GoBGP inside)
// listening on the address and port given, with every client address a
// route reflector client. It prints "ready" and runs until its standard
// input closes (the parent ended).
func rrChild() {
	var cfg struct {
		listen  netip.AddrPort
		clients []netip.Addr
	}
	var err error
	if cfg.listen, err = netip.ParseAddrPort(os.Getenv(rrChildEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "rr child:", err)
		os.Exit(2)
	}
	n, _ := strconv.Atoi(os.Getenv(rrChildEnv + "_CLIENTS"))
	base, err := netip.ParseAddr(os.Getenv(rrChildEnv + "_BASE"))
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "rr child: bad client settings")
		os.Exit(2)
	}
	for i := range n {
		cfg.clients = append(cfg.clients, rrClientAddr(base, i))
	}
	sp, err := bgp.New(bgp.Config{RouterID: cfg.listen.Addr(), ListenPort: int(cfg.listen.Port()), ListenAddrs: []netip.Addr{cfg.listen.Addr()},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "rr child:", err)
		os.Exit(1)
	}
	peers := make([]bgp.Peer, 0, n)
	for _, a := range cfg.clients {
		peers = append(peers, bgp.Peer{Address: a, ASN: bgp.DefaultASN, RouteReflectorClient: true, Passive: true})
	}
	if err := sp.SetPeers(context.Background(), peers); err != nil {
		fmt.Fprintln(os.Stderr, "rr child:", err)
		os.Exit(1)
	}
	if err := sp.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "rr child:", err)
		os.Exit(1)
	}
	go func() {
		for range sp.Routes() { // the reflector programs nothing
		}
	}()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = sp.Stop()
}

// rrClientAddr is client i's loopback address: base plus i, skipping
// addresses ending in .0 and .255.
func rrClientAddr(base netip.Addr, i int) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i/254)<<8 + uint32(i%254) + 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// rrBlock is the j-th /26 of client i, out of 10.0.0.0/8.
func rrBlock(i, j, blocks int) netip.Prefix {
	k := uint32(i*blocks + j)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k >> 10), byte(k >> 2), byte(k&3) << 6}), 26)
}

// rrClient is one client speaker and what it has learned.
type rrClient struct {
	sp      *bgp.Speaker
	addr    netip.Addr
	mu      sync.Mutex
	learned map[netip.Prefix]bool
	watch   netip.Prefix
	seen    chan time.Time // when watch arrived
}

// rrBenchmark runs one route reflector (its own process) and o.clients
// client speakers in this process, each on its own loopback address, each
// advertising o.blocks /26 blocks: every client must learn every other
// client's blocks through the reflector. The clients are tortie's speakers
// (pkg/bgp, GoBGP inside) as tortie-node runs them; the reflector is one
// too, then BIRD 2, Calico's reflector, for comparison. Only the number of
// machines is simulated (loopback addresses instead of hosts).
func rrBenchmark(ctx context.Context, o rrOptions) []*rrResult {
	var out []*rrResult
	for _, reflector := range []string{"tortie", "bird"} {
		if reflector == "bird" {
			if _, err := exec.LookPath("bird"); err != nil {
				run.Logf("route reflection: no bird binary (scripts/install-deps.sh installs bird2); BIRD's column is left out")
				continue
			}
		}
		out = append(out, rrRun(ctx, o, reflector))
	}
	return out
}

// rrRun measures one reflector, "tortie" or "bird".
func rrRun(ctx context.Context, o rrOptions, reflector string) *rrResult {
	r := &rrResult{routes: (o.clients - 1) * o.blocks, reflector: reflector}
	port := freeTCPPort()
	rrAddr := netip.MustParseAddr("127.0.0.1")
	// Clients on 127.X.0.1...: X chosen per run, so that two runs on one
	// machine do not collide.
	base := netip.AddrFrom4([4]byte{127, byte(100 + rand.IntN(100)), 0, 0})
	var child *exec.Cmd
	if reflector == "bird" {
		dir, err := os.MkdirTemp("", "tortie-bench-rr.")
		if err != nil {
			run.Fatalf("%v", err)
		}
		run.AddCleanup(func() { os.RemoveAll(dir) })
		// What Calico's reflector does for its clients: iBGP, rr client,
		// next hops kept; the loopback addresses resolve through lo.
		conf := fmt.Sprintf(`router id %s;
protocol device {}
protocol direct { ipv4; interface "lo"; }
protocol bgp reflector {
  local %s port %d as %d;
  neighbor range %s/16 as %d;
  rr client;
  rr cluster id %s;
  ipv4 { import all; export all; next hop keep; };
}
`, rrAddr, rrAddr, port, bgp.DefaultASN, base, bgp.DefaultASN, rrAddr)
		if err := os.WriteFile(filepath.Join(dir, "bird.conf"), []byte(conf), 0o644); err != nil {
			run.Fatalf("%v", err)
		}
		child = exec.CommandContext(ctx, "bird", "-f", "-c", filepath.Join(dir, "bird.conf"), "-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			run.Fatalf("bird: %v", err)
		}
		// BIRD is up when its control socket is.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "bird.ctl")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				run.Fatalf("bird did not start")
			}
		}
		stop := func() {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
		run.AddCleanup(stop) // if the run fails
		defer stop()
	} else {
		child = exec.CommandContext(ctx, os.Args[0])
		child.Env = append(os.Environ(), rrChildEnv+"="+netip.AddrPortFrom(rrAddr, uint16(port)).String(),
			rrChildEnv+"_CLIENTS="+strconv.Itoa(o.clients), rrChildEnv+"_BASE="+base.String())
		stdin, err := child.StdinPipe()
		if err != nil {
			run.Fatalf("%v", err)
		}
		stdout, err := child.StdoutPipe()
		if err != nil {
			run.Fatalf("%v", err)
		}
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			run.Fatalf("route reflector: %v", err)
		}
		var once sync.Once
		stop := func() {
			once.Do(func() {
				stdin.Close()
				_ = child.Wait()
			})
		}
		run.AddCleanup(stop)
		defer stop()
		if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
			run.Fatalf("route reflector did not start: %q %v", line, err)
		}
	}
	return rrClients(ctx, o, r, rrAddr, port, base, child.Process.Pid)
}

func rrClients(ctx context.Context, o rrOptions, r *rrResult, rrAddr netip.Addr, port int, base netip.Addr, pid int) *rrResult {
	cpu0, _ := procstat.CPU(pid)

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	clients := make([]*rrClient, o.clients)
	all := make(chan struct{}, o.clients)
	t0 := time.Now()
	for i := range clients {
		c := &rrClient{addr: rrClientAddr(base, i), learned: map[netip.Prefix]bool{}, seen: make(chan time.Time, 1)}
		clients[i] = c
		sp, err := bgp.New(bgp.Config{RouterID: c.addr, ListenPort: -1, Logger: quiet, ConnectRetry: 2 * time.Second})
		if err != nil {
			run.Fatalf("client %d: %v", i, err)
		}
		c.sp = sp
		if err := sp.SetPeers(ctx, []bgp.Peer{{Address: rrAddr, Port: port, ASN: bgp.DefaultASN, SourceAddr: c.addr}}); err != nil {
			run.Fatalf("client %d: %v", i, err)
		}
		advs := make([]bgp.Advertisement, o.blocks)
		for j := range advs {
			advs[j] = bgp.Advertisement{Prefix: rrBlock(i, j, o.blocks)}
		}
		if err := sp.SetAdvertisements(advs); err != nil {
			run.Fatalf("client %d: %v", i, err)
		}
		if err := sp.Start(ctx); err != nil {
			run.Fatalf("client %d: %v", i, err)
		}
		run.AddCleanup(func() { _ = sp.Stop() }) // if the run fails
		defer sp.Stop()
		go func() {
			full := false
			for ev := range sp.Routes() {
				c.mu.Lock()
				if ev.Withdrawn {
					delete(c.learned, ev.Route.Prefix)
				} else {
					c.learned[ev.Route.Prefix] = true
					if ev.Route.Prefix == c.watch {
						select {
						case c.seen <- time.Now():
						default:
						}
					}
				}
				n := len(c.learned)
				c.mu.Unlock()
				if !full && n >= r.routes {
					full = true
					all <- struct{}{}
				}
			}
		}()
	}
	run.Logf("route reflection: %d clients × %d blocks started in %v; waiting for %d routes at each", o.clients, o.blocks, time.Since(t0).Round(time.Millisecond), r.routes)
	deadline := time.After(rrTimeout)
	for range o.clients {
		select {
		case <-all:
		case <-deadline:
			var short []string
			for i, c := range clients {
				c.mu.Lock()
				if len(c.learned) < r.routes {
					var missing []string
					for k := range o.clients {
						for j := range o.blocks {
							if p := rrBlock(k, j, o.blocks); k != i && !c.learned[p] {
								missing = append(missing, fmt.Sprintf("%s (client %d)", p, k))
							}
						}
					}
					inTable := len(c.sp.LearnedRoutes())
					short = append(short, fmt.Sprintf("client %d (%s): %d routes streamed, %d in the speaker's table, missing %v, sessions %+v", i, c.addr, len(c.learned), inTable, missing[:min(len(missing), 5)], c.sp.Peers()))
				}
				c.mu.Unlock()
			}
			run.Fatalf("route reflection: after %v, %d clients lack routes: %s", rrTimeout, len(short), strings.Join(short, "; "))
		}
	}
	r.converge = time.Since(t0)
	cpu1, _ := procstat.CPU(pid)
	r.rrCPU = cpu1 - cpu0
	time.Sleep(2 * time.Second) // whatever follows convergence
	r.rrRSS, _ = procstat.StatusKB(pid, "VmRSS")
	r.rrHWM, _ = procstat.StatusKB(pid, "VmHWM")
	r.clientsRSS, _ = procstat.StatusKB(os.Getpid(), "VmRSS")

	// One new block at a time, from a client chosen at random, to all
	// the others.
	for n := range 20 {
		from := rand.IntN(o.clients)
		p := rrBlock(o.clients, n, o.blocks) // numbered past every client's blocks
		for _, c := range clients {
			c.mu.Lock()
			c.watch = p
			c.mu.Unlock()
			for len(c.seen) > 0 {
				<-c.seen
			}
		}
		advs := make([]bgp.Advertisement, 0, o.blocks+1)
		for j := range o.blocks {
			advs = append(advs, bgp.Advertisement{Prefix: rrBlock(from, j, o.blocks)})
		}
		advs = append(advs, bgp.Advertisement{Prefix: p})
		t1 := time.Now()
		if err := clients[from].sp.SetAdvertisements(advs); err != nil {
			run.Fatalf("%v", err)
		}
		var last time.Duration
		for i, c := range clients {
			if i == from {
				continue
			}
			select {
			case at := <-c.seen:
				last = max(last, at.Sub(t1))
			case <-time.After(30 * time.Second):
				run.Fatalf("new block %s from client %d never reached client %d", p, from, i)
			}
		}
		r.newBlock = append(r.newBlock, last)
		if err := clients[from].sp.SetAdvertisements(advs[:o.blocks]); err != nil {
			run.Fatalf("%v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

func freeTCPPort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		run.Fatalf("%v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func printRR(w io.Writer, o rrOptions, rs []*rrResult) {
	fmt.Fprintf(w, "### Route reflection: one reflector, %d clients × %d blocks (load average %s)\n\n", o.clients, o.blocks, labrun.LoadAverage())
	fmt.Fprintf(w, "The clients are tortie's BGP speakers in both columns; the reflector is tortie's, then BIRD 2 (what Calico runs as its reflector).\n\n")
	names := map[string]string{"tortie": "tortie's reflector (pkg/bgp, GoBGP)", "bird": "BIRD 2 as the reflector"}
	row := sideBySide(w, rs, func(r *rrResult) string { return names[r.reflector] })
	row(fmt.Sprintf("cold start → every client holds the other clients' %d routes", (o.clients-1)*o.blocks), func(r *rrResult) string {
		return fmt.Sprintf("**%s**", sec(r.converge))
	})
	row("the reflector's CPU during the cold start", func(r *rrResult) string { return sec(r.rrCPU) })
	row(fmt.Sprintf("one new block → all %d other clients: p50 / p99 / max", o.clients-1), func(r *rrResult) string {
		return fmt.Sprintf("%s / **%s** / %s (over %d)", msOf(pct(r.newBlock, 0.5)), msOf(pct(r.newBlock, 0.99)), msOf(pct(r.newBlock, 1)), len(r.newBlock))
	})
	row("the reflector's memory, settled / peak", func(r *rrResult) string { return fmt.Sprintf("%d MB / %d MB", r.rrRSS/1024, r.rrHWM/1024) })
	row("this process, the clients (for scale)", func(r *rrResult) string { return fmt.Sprintf("%d MB", r.clientsRSS/1024) })
	fmt.Fprintln(w)
}

func sec(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
