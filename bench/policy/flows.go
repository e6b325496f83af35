package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/probe"
	"github.com/tortie/tortie/bench/internal/procstat"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
)

// The flow log benchmark (-flows), issue 16's numbers:
//
//  1. new connections per second, client -> server:80 (allowed by a
//     policy rule, the client's egress by its profile), with flow logs off,
//     on, and on with packet and byte totals: the agent restarted between
//     rounds, alternating, so all see the same machine. From the local
//     client both ends meet this host's policy (two NFLOG messages per
//     connection); from the remote client (another node's workload, routed
//     in) only the server's (one), as every connection between hosts is
//     seen by each;
//  2. at a paced 5,000 new connections per second for -flow-secs, whether
//     the flow records account for every connection: the sum of the
//     records' connection counts against the connections made, and what
//     the agent counted as lost, rate-limited or over the bound;
//  3. the agent's memory with its ring of 100,000 recent records full
//     (50,000 connections to distinct ports: two records each, the
//     client's egress and the server's ingress).

const flowEnv = "FELIX_FLOWLOGSLOCALREPORTER=Enabled"

type flowResults struct {
	start time.Time
	load  string
	// By mode: flow logs off, on, on with packet and byte totals
	// (TORTIE_FLOW_TOTALS); from the local and the remote client, and the
	// agent's CPU time during the local client's rounds.
	local, remote [3]crrResult
	cpu           [3]time.Duration
	rounds        int
	paced         sweepResult
	pacedRate     float64
	counted       int // connections in the records
	lost          float64
	rateLimited   float64
	overflow      float64
	unknown       float64
	messages      float64 // NFLOG messages the agent read for them
	rssBefore     int64   // kB, settled, flow logs on, ring nearly empty
	rssFull       int64   // kB, settled, ring full
	held          float64
	fill          sweepResult
}

func flowsBenchmark(o options) *flowResults {
	r := &flowResults{start: time.Now(), rounds: max(o.flowRounds, 1)}
	r.load = labrun.LoadAverage()
	dir, err := os.MkdirTemp("", "tortie-bench-flows.")
	if err != nil {
		fatalf("%v", err)
	}
	runner.AddCleanup(func() { _ = os.RemoveAll(dir) })
	if o.node == "" {
		o.node = build(dir, "tortie-node")
	}
	if o.node, err = filepath.Abs(o.node); err != nil {
		fatalf("%v", err)
	}
	l, prof, srv := startLab(o, dir, func(l *lab) []string { return append(baseResources(l), allowPolicy("Allow")) })
	serve(l.serverNS, serverIP, 80)
	interval := "FELIX_FLOWLOGSFLUSHINTERVAL=2s"
	// mode 0: flow logs off; 1: on; 2: on, with packet and byte totals.
	start := func(mode int) *agent {
		env := append([]string{interval}, prof.agentEnv()...)
		if mode > 0 {
			env = append(env, flowEnv)
		}
		if mode == 2 {
			env = append(env, "TORTIE_FLOW_TOTALS=true")
		}
		a := l.startAgent(o.node, srv.Endpoint(), env...)
		if _, err := l.waitReady(a, 30*time.Second); err != nil {
			fatalf("%v", err)
		}
		if _, err := l.waitConnects(80, 10*time.Second); err != nil {
			fatalf("%v", err)
		}
		return a
	}

	// 1. Off, on, on with totals, off, ...
	for i := range 3 * r.rounds {
		mode := i % 3
		flows := mode > 0
		logf("connect/close, flow logs %s (round %d of %d)", []string{"off", "on", "on with totals"}[mode], i/3+1, r.rounds)
		a := start(mode)
		l.crr(serverIP, 80, 500, time.Second) // warm up
		cpu0 := procCPU(a.pid)
		stop := func() {}
		if flows && i == 1 {
			stop = prof.cpu("flows-on", o.connTime)
		}
		res := l.crr(serverIP, 80, o.conns, o.connTime)
		stop()
		cpu := procCPU(a.pid) - cpu0
		crrFrom(l.remoteNS, serverIP, 80, 500, time.Second) // warm up
		r.remote[mode].add(crrFrom(l.remoteNS, serverIP, 80, o.conns, o.connTime))
		r.local[mode].add(res)
		r.cpu[mode] += cpu
		a.stop()
	}

	// 2. Accounting at a paced rate.
	a := start(1)
	hostNS, err := ns.GetNS("/var/run/netns/" + l.host)
	if err != nil {
		fatalf("%v", err)
	}
	defer hostNS.Close()
	time.Sleep(2500 * time.Millisecond) // the warm-up's records are flushed
	key := func(rec *flowlog.Record) bool {
		return rec.Direction == calc.Ingress && rec.Src.Addr == clientIP && rec.Dst.Addr == serverIP && rec.Dst.Port == 80
	}
	before := l.sumConnections(hostNS, key)
	m0 := l.flowCounters()
	r.pacedRate = 5000
	logf("%d connections at %.0f/s with flow logs on", int(r.pacedRate)*o.flowSecs, r.pacedRate)
	r.paced = l.sweep(serverIP, int(r.pacedRate)*o.flowSecs, r.pacedRate, func(int) int { return 80 })
	time.Sleep(3 * time.Second) // one flush interval and more
	r.counted = l.sumConnections(hostNS, key) - before
	m1 := l.flowCounters()
	r.lost, r.rateLimited = m1["lost"]-m0["lost"], m1["rate"]-m0["rate"]
	r.overflow, r.unknown = m1["overflow"]-m0["overflow"], m1["unknown"]-m0["unknown"]
	r.messages = m1["messages"] - m0["messages"]

	// 3. The ring full.
	r.rssBefore = settledRSS(a.pid)
	logf("50,000 connections to distinct ports (100,000 records)")
	r.fill = l.sweep(plainIP, 50000, 10000, func(i int) int { return 1 + i }) // under the agent's rate limit
	time.Sleep(3 * time.Second)
	r.rssFull = settledRSS(a.pid)
	r.held, _ = l.metric("tortie_flowlog_records_held")
	a.stop()
	return r
}

// sweepResult is one sweep of connection attempts.
type sweepResult struct {
	attempts, connected, refused, failed int
	elapsed                              time.Duration
}

// sweep makes n connection attempts from the client to ip, to port
// portOf(i), paced at rate per second (0: as fast as it can). Every
// attempt sends a SYN, which meets policy and is logged: connected,
// refused (no listener: an RST) or failed (no answer in 1 s).
func (l *lab) sweep(ip netip.Addr, n int, rate float64, portOf func(int) int) sweepResult {
	var r sweepResult
	err := l.clientNS.Do(func(ns.NetNS) error {
		tv := unix.Timeval{Sec: 1}
		t0 := time.Now()
		for i := range n {
			if rate > 0 {
				if d := time.Until(t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
					time.Sleep(d)
				}
			}
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
			err = unix.Connect(fd, probe.Sockaddr(ip, portOf(i)))
			_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, probe.RSTLinger)
			unix.Close(fd)
			r.attempts++
			switch err {
			case nil:
				r.connected++
			case unix.ECONNREFUSED:
				r.refused++
			default:
				r.failed++
			}
		}
		r.elapsed = time.Since(t0)
		return nil
	})
	if err != nil {
		fatalf("sweep to %s: %v", ip, err)
	}
	return r
}

// sumConnections reads every record the agent holds (from inside the
// host namespace: flow records are served to loopback only) and sums the
// connections of those keep keeps.
func (l *lab) sumConnections(hostNS ns.NetNS, keep func(*flowlog.Record) bool) int {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = hostNS.Do(func(ns.NetNS) error {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := c.Get("http://127.0.0.1:9099/status/flows?last=1000000")
	if err != nil {
		fatalf("flow records: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fatalf("flow records: %s", resp.Status)
	}
	sum := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var rec flowlog.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			fatalf("flow record %q: %v", sc.Text(), err)
		}
		if keep(&rec) {
			sum += rec.Connections
		}
	}
	if err := sc.Err(); err != nil {
		fatalf("flow records: %v", err)
	}
	return sum
}

// flowCounters are the agent's flow log loss counters.
func (l *lab) flowCounters() map[string]float64 {
	out := map[string]float64{}
	for k, name := range map[string]string{"lost": "tortie_flowlog_packets_lost_total", "rate": "tortie_flowlog_packets_rate_limited_total",
		"overflow": "tortie_flowlog_packets_over_max_flows_total", "unknown": "tortie_flowlog_packets_unknown_rule_total",
		"messages": "tortie_flowlog_packets_total"} {
		v, err := l.metric(name)
		if err != nil {
			fatalf("%v", err)
		}
		out[k] = v
	}
	return out
}

func (r *flowResults) print(w *os.File, o options) {
	fmt.Fprintf(w, "\n## bench/policy -flows: flow logs (%s, load average %s at the start, %d spinning process(es))\n\n",
		r.start.Format("2006-01-02 15:04"), r.load, o.busy)
	fmt.Fprintln(w, "| what | flow logs off | flow logs on | goal | flow logs on, with packet and byte totals |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	p50 := func(c crrResult) time.Duration {
		s := slices.Clone(c.lat)
		slices.Sort(s)
		if len(s) == 0 {
			return 0
		}
		return s[len(s)/2]
	}
	rates := func(what string, c [3]crrResult) {
		fmt.Fprintf(w, "| new connections/s, %s -> server:80 (%d rounds each, alternating) | %.0f | %.0f (ratio **%.2f**) | ratio ≥ 0.9 | %.0f (ratio %.2f) |\n",
			what, r.rounds, c[0].rate(), c[1].rate(), c[1].rate()/c[0].rate(), c[2].rate(), c[2].rate()/c[0].rate())
		fmt.Fprintf(w, "| connect p50, %s | %v | %v | — | %v |\n", what,
			p50(c[0]).Round(time.Microsecond), p50(c[1]).Round(time.Microsecond), p50(c[2]).Round(time.Microsecond))
	}
	rates("client", r.local)
	rates("remote client (another node's workload, routed in)", r.remote)
	perConn := func(cpu time.Duration, c crrResult) string {
		return fmt.Sprintf("%.1f µs (%.0f%% of a core)", float64(cpu.Microseconds())/float64(max(c.n, 1)), 100*cpu.Seconds()/c.elapsed.Seconds())
	}
	fmt.Fprintf(w, "| the agent's CPU per connection during the client's rounds | %s | %s | — | %s |\n",
		perConn(r.cpu[0], r.local[0]), perConn(r.cpu[1], r.local[1]), perConn(r.cpu[2], r.local[2]))
	fmt.Fprintf(w, "| %d connections paced at %.0f/s (reached %.0f/s): in flow records | — | **%d** (%d made; lost %.0f, rate-limited %.0f, over the bound %.0f, unknown rule %.0f) | every one, or the loss counted | — |\n",
		r.paced.attempts, r.pacedRate, float64(r.paced.attempts)/r.paced.elapsed.Seconds(), r.counted, r.paced.attempts,
		r.lost, r.rateLimited, r.overflow, r.unknown)
	fmt.Fprintf(w, "| NFLOG messages per connection between the two local workloads (both sides' decisions) | — | %.2f | — | — |\n",
		r.messages/float64(max(r.paced.attempts, 1)))
	fmt.Fprintf(w, "| agent memory (VmRSS, settled): few records / ring full (%.0f records held) | — | %d MB / **%d MB** | reported | — |\n",
		r.held, r.rssBefore/1024, r.rssFull/1024)
	fmt.Fprintf(w, "\nFilling the ring took %d connections to distinct closed ports in %v (%d refused, %d failed).\n",
		r.fill.attempts, r.fill.elapsed.Round(time.Millisecond), r.fill.refused, r.fill.failed)
	fmt.Fprintf(w, "Load average at the end: %s.\n", labrun.LoadAverage())
}

// procCPU is the user and system CPU time a process used so far.
func procCPU(pid int) time.Duration {
	d, err := procstat.CPU(pid)
	if err != nil {
		fatalf("%v", err)
	}
	return d
}
