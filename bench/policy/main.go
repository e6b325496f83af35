// Command policy benchmarks tortie's policy engine end to end, as issue 5
// asks, and prints one markdown table with the goals and Calico's numbers
// (measured on the same machine, quoted from the issue) side by side:
//
//  1. new connections per second and connect latency, client workload ->
//     server workload through the host, with no policy and with 10,000
//     non-matching rules (100 policies x 100 rules) in front of the allowing
//     one;
//  2. policy change to enforcement: from the start of `tortie apply` of one
//     changed policy to the first probe that sees the new verdict, 100
//     changes alternating allow and deny, and from the datastore's commit
//     of each (the agent's part alone);
//  3. `tortie apply` of the 100 policies x 100 rules: wall time;
//  4. cold start of tortie-node to /readiness 200 with 10,000 endpoints and
//     1,000 policies in the datastore, and the agent's peak memory (VmHWM);
//  5. the agent's memory: idle, with the 10,000 rules in place, and its
//     peak while the stress variant replaces them.
//
// The goals are issue 15's, and they hold on a busy machine: unless -busy 0,
// the bench starts a process spinning at normal priority for the whole run
// (after building), so every run sees the same machine.
//
// It needs root: it builds the real tortie-node, runs it under `ip netns
// exec` in a "host" network namespace of its own against an embedded etcd
// in this process (reached over a veth with 198.18.x.y addresses), plumbs
// the client and server workload namespaces by hand as the CNI plugin
// would, and drives the real `tortie` CLI. Every namespace, interface and
// port is unique to the run and removed at the end, on failure and on
// SIGINT/SIGTERM.
//
// With -flows it measures flow logs instead (flows.go).
//
//	go run ./bench/policy [-tortie bin/tortie] [-quick] [-busy N] [-profile DIR] [-flows]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/probe"
	"github.com/tortie/tortie/bench/internal/procstat"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
)

type options struct {
	tortie, node string
	conns        int
	connTime     time.Duration
	changes      int
	coldRuns     int
	endpoints    int
	policies     int
	stress       bool
	inspect      bool
	logs         string
	logLevel     string
	busy         int
	profile      string
	flows        bool
	flowSecs     int
	flowRounds   int
	churn        time.Duration
	churnRate    int
}

func main() {
	o := options{}
	flag.StringVar(&o.tortie, "tortie", "", "the tortie CLI binary (default: built from this module)")
	flag.StringVar(&o.node, "tortie-node", "", "the tortie-node binary (default: built from this module)")
	flag.IntVar(&o.conns, "conns", 20000, "connections per connect/close run (at most)")
	flag.DurationVar(&o.connTime, "conn-time", 3*time.Second, "time per connect/close run (at most)")
	flag.IntVar(&o.changes, "changes", 100, "policy changes to time")
	flag.IntVar(&o.coldRuns, "cold-runs", 3, "cold starts to time")
	flag.IntVar(&o.endpoints, "endpoints", 10000, "endpoints in the cold-start datastore (100 namespaces)")
	flag.IntVar(&o.policies, "policies", 1000, "policies in the cold-start datastore")
	flag.BoolVar(&o.stress, "stress", true, "also measure 1,000 of the 10,000 rules on the measured port")
	flag.BoolVar(&o.inspect, "inspect", false, "stop once the 10,000 rules are in place, until Ctrl-C (to look at the table)")
	flag.StringVar(&o.logs, "logs", "", "keep the agents' logs in this directory")
	flag.StringVar(&o.logLevel, "agent-log-level", "info", "tortie-node --log-level")
	flag.IntVar(&o.busy, "busy", 1, "processes spinning at normal priority for the whole run (0: an idle machine)")
	flag.StringVar(&o.profile, "profile", "", "write the agent's CPU profiles (creating the rules, the changes, the stress variant) and heap profiles here")
	flag.BoolVar(&o.flows, "flows", false, "measure flow logs instead (issue 16): connections/s with them off and on, accounting at 5,000 connections/s, memory with the ring full")
	flag.IntVar(&o.flowSecs, "flow-secs", 10, "with -flows: seconds of paced connections")
	flag.IntVar(&o.flowRounds, "flow-rounds", 5, "with -flows: rounds of connect/close per mode (off, on, on with totals), alternating")
	flag.DurationVar(&o.churn, "churn", 0, "after the cold starts, change remote endpoints' addresses for this long (issue 18: 60s with -endpoints 100000 -policies 5000)")
	flag.IntVar(&o.churnRate, "churn-rate", 1000, "with -churn: endpoint updates per second")
	quick := flag.Bool("quick", false, "a short run: 5,000 connections or 1 s, 20 changes, 1 cold start")
	flag.Parse()
	if *quick {
		// -quick sets only what was not given: `-quick -cold-runs 5` times
		// five cold starts.
		given := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
		if !given["conns"] {
			o.conns = 5000
		}
		if !given["conn-time"] {
			o.connTime = time.Second
		}
		if !given["changes"] {
			o.changes = 20
		}
		if !given["cold-runs"] {
			o.coldRuns = 1
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/policy: needs root (network namespaces, nftables)")
		os.Exit(2)
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			fmt.Fprintf(os.Stderr, "bench/policy: needs %s\n", bin)
			os.Exit(2)
		}
	}
	runner.ExitOnSignal()
	defer func() {
		if r := recover(); r != nil {
			runner.Finish()
			panic(r)
		}
	}()
	if o.flows {
		res := flowsBenchmark(o)
		runner.Finish()
		res.print(os.Stdout, o)
		return
	}
	res := benchmark(o)
	runner.Finish()
	res.print(os.Stdout, o)
}

func logf(format string, args ...any) { runner.Logf(format, args...) }

// results holds every number the table shows.
type results struct {
	start                time.Time
	load                 string
	before               crrResult // no policy in the datastore
	base, rules          crrResult // interleaved: no policy / 10,000 rules
	base2, stress        crrResult // interleaved: no policy / stress variant
	changeAgent          agentMetrics
	changeLat, changeCLI []time.Duration
	changeAgentLat       []time.Duration // datastore commit → enforced
	changeFlaps          int
	changeFails          int
	applyCreate          time.Duration // CLI wall time, 100 x 100 created
	applyCreateEnforced  time.Duration // from its start to the sentinel connecting
	applyStress          time.Duration // CLI, the same 100 replaced (stress variant)
	applyStressEnforced  time.Duration
	hwmRules             int64 // kB, agent's peak while creating the 10,000 rules
	rssIdle, rssRules    int64 // kB, agent idle (no policy) / with the 10,000 rules, settled
	hwmStress            int64 // kB, agent's peak while the stress variant replaced them
	cold                 []time.Duration
	coldSync, coldProg   []float64 // the agent's own metrics, seconds
	coldHWM              []int64   // kB
	coldEndpoints        float64
	coldPolicies         float64
	churn                *churnResult
}

func benchmark(o options) *results {
	r := &results{start: time.Now()}
	r.load = labrun.LoadAverage()
	dir, err := os.MkdirTemp("", "tortie-bench-policy.")
	if err != nil {
		fatalf("%v", err)
	}
	runner.AddCleanup(func() { _ = os.RemoveAll(dir) })
	if o.logs != "" {
		runner.AddCleanup(func() {
			logs, _ := filepath.Glob(filepath.Join(dir, "agent-*.log"))
			_ = os.MkdirAll(o.logs, 0o755)
			for _, f := range logs {
				if b, err := os.ReadFile(f); err == nil {
					_ = os.WriteFile(filepath.Join(o.logs, filepath.Base(f)), b, 0o644)
				}
			}
		})
	}
	agentLogLevel = o.logLevel

	if o.node == "" {
		o.node = build(dir, "tortie-node")
	}
	if o.tortie == "" {
		o.tortie = build(dir, "tortie")
	}
	for _, p := range []*string{&o.node, &o.tortie} {
		if *p, err = filepath.Abs(*p); err != nil {
			fatalf("%v", err)
		}
	}

	l, prof, srv := startLab(o, dir, baseResources)
	ctx := context.Background()
	ports := []int{80, 81}
	for i := range 100 {
		ports = append(ports, sentinelCreate+i, sentinelStress+i)
	}
	serve(l.serverNS, serverIP, ports...)
	serve(l.plainNS, plainIP, 80)
	ag := l.startAgent(o.node, srv.Endpoint(), prof.agentEnv()...)
	if _, err := l.waitReady(ag, 30*time.Second); err != nil {
		fatalf("%v", err)
	}
	r.rssIdle = settledRSS(ag.pid)
	if !l.connects(80) {
		fatalf("client cannot reach the server with no policy")
	}

	// 1a. No policy at all: the profile allows.
	logf("connect/close, no policy")
	l.crr(serverIP, 80, 1000, time.Second) // warm up
	r.before = l.crr(serverIP, 80, o.conns, o.connTime)

	// The allowing policy, then the 100 x 100 in one apply (3.).
	cli := func(file string) (time.Time, *exec.Cmd) {
		cmd := exec.Command(o.tortie, "--etcd-endpoints", srv.Endpoint(), "apply", "-f", file)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			fatalf("tortie apply: %v", err)
		}
		runner.AddCleanup(func() { _ = cmd.Process.Kill() })
		return t0, cmd
	}
	wait := func(cmd *exec.Cmd) {
		if err := cmd.Wait(); err != nil {
			fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, cmd.Stdout)
		}
	}
	files := map[string]string{
		"allow.yaml":    allowPolicy("Allow"),
		"deny.yaml":     allowPolicy("Deny"),
		"rules.yaml":    rulePolicies(false, sentinelCreate),
		"rules-80.yaml": rulePolicies(true, sentinelStress),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			fatalf("%v", err)
		}
	}
	_, c := cli(filepath.Join(dir, "allow.yaml"))
	wait(c)
	// In force once port 81 (allowed by the profile until now) is denied.
	if _, _, err := l.firstVerdict(81, false, time.Now(), 10*time.Second); err != nil {
		fatalf("allow policy: %v", err)
	}
	if !l.connects(80) {
		fatalf("port 80 not reachable with the allow policy")
	}
	logf("tortie apply of 100 policies x 100 rules")
	resetPeak(ag.pid)
	stopProf := prof.cpu("create", 5*time.Second)
	t0, c := cli(filepath.Join(dir, "rules.yaml"))
	wait(c)
	r.applyCreate = time.Since(t0)
	seen, err := l.waitSentinels(sentinelCreate, 60*time.Second)
	if err != nil {
		fatalf("10,000 rules never enforced: %v\n%s", err, ag.logTail())
	}
	r.applyCreateEnforced = seen.Sub(t0)
	stopProf()
	// The gauge is set just after the transaction that enforced the rules.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n, err := l.metric("tortie_active_policies"); err == nil && n == 101 {
			break
		}
	}
	if n, err := l.metric("tortie_active_policies"); err != nil || n != 101 {
		fatalf("active policies %v (%v), want 101; agent log:\n%s", n, err, ag.logTail())
	}
	r.hwmRules, _ = procstat.StatusKB(ag.pid, "VmHWM")
	r.rssRules = settledRSS(ag.pid)
	prof.heap("rules")
	if o.inspect {
		logf("inspect: the 10,000 rules are in place in netns %s (agent pid %d); Ctrl-C to clean up", l.host, ag.pid)
		select {}
	}

	// 1b. The same flow behind the 10,000 rules, in rounds alternating
	// with the same client to a server no policy selects, so that both
	// see the same machine (other work on it comes and goes).
	logf("connect/close, 10,000 rules, alternating with no policy")
	r.base, r.rules = l.interleaved(o)
	apply0 := l.metrics()

	// 2. Policy changes: deny, allow, deny, ... (ends allowed).
	logf("%d policy changes", o.changes)
	commits := watchCommits(ctx, srv.Endpoint(), allowKey)
	stopProf = prof.cpu("changes", time.Duration(o.changes)*300*time.Millisecond)
	allowed := true
	for i := 0; i < o.changes; i++ {
		want := !allowed
		file := "deny.yaml"
		if want {
			file = "allow.yaml"
		}
		commits.drain()
		t0 := time.Now()
		type res struct {
			at    time.Time
			flaps int
			err   error
		}
		done := make(chan res, 1)
		go func() {
			at, flaps, err := l.firstVerdict(80, want, t0, 5*time.Second)
			done <- res{at, flaps, err}
		}()
		_, c := cli(filepath.Join(dir, file))
		wait(c)
		cliTime := time.Since(t0)
		v := <-done
		if v.err != nil {
			r.changeFails++
			logf("change %d (allowed=%v): %v", i, want, v.err)
			if r.changeFails > 3 {
				fatalf("too many failed changes; agent log tail:\n%s", ag.logTail())
			}
		} else {
			if d := v.at.Sub(t0); d > time.Second {
				logf("change %d (allowed=%v) took %v", i, want, d)
			}
			r.changeLat = append(r.changeLat, v.at.Sub(t0))
			r.changeFlaps += v.flaps
			if at, err := commits.next(time.Second); err != nil {
				logf("change %d: %v", i, err)
			} else {
				r.changeAgentLat = append(r.changeAgentLat, v.at.Sub(at))
			}
		}
		r.changeCLI = append(r.changeCLI, cliTime)
		allowed = want
	}
	apply1 := l.metrics()
	r.changeAgent = apply1.sub(apply0)
	stopProf()
	if !allowed {
		_, c := cli(filepath.Join(dir, "allow.yaml"))
		wait(c)
	}
	if _, err := l.waitConnects(80, 10*time.Second); err != nil {
		fatalf("after the changes: %v", err)
	}

	// Stress: 1,000 of the rules on the measured port.
	if o.stress {
		logf("tortie apply of the stress variant; connect/close")
		resetPeak(ag.pid)
		stopProf := prof.cpu("stress", 5*time.Second)
		t0, c := cli(filepath.Join(dir, "rules-80.yaml"))
		wait(c)
		r.applyStress = time.Since(t0)
		seen, err := l.waitSentinels(sentinelStress, 60*time.Second)
		if err != nil {
			fatalf("stress variant never enforced: %v", err)
		}
		r.applyStressEnforced = seen.Sub(t0)
		stopProf()
		time.Sleep(time.Second) // whatever follows enforcement counts too
		r.hwmStress, _ = procstat.StatusKB(ag.pid, "VmHWM")
		if l.connects(sentinelCreate) {
			fatalf("port %d still reachable after the stress variant", sentinelCreate)
		}
		r.base2, r.stress = l.interleaved(o)
	}
	ag.stop()

	// 4. Cold start: a fresh datastore, an empty table.
	logf("cold start: writing %d endpoints and %d policies", o.endpoints, o.policies)
	srv.Close()
	srv2 := l.serveEtcd("etcd2")
	cl2 := connect(srv2.Endpoint())
	if err := write(ctx, cl2, coldStartResources(100, o.endpoints, o.policies)); err != nil {
		fatalf("cold-start resources: %v", err)
	}
	for i := 0; i < o.coldRuns; i++ {
		// No table: a cold start, not a restart reconciling in place.
		_ = exec.Command("ip", "netns", "exec", l.host, "nft", "delete", "table", "inet", "tortie").Run()
		runtime.GC()
		time.Sleep(200 * time.Millisecond)
		t0 := time.Now()
		a := l.startAgent(o.node, srv2.Endpoint(), prof.agentEnv()...)
		stopProf := func() {}
		if i == 0 {
			stopProf = prof.cpuFromStart("cold", 10*time.Second)
		}
		ready, err := l.waitReady(a, 60*time.Second)
		if err != nil {
			fatalf("cold start: %v", err)
		}
		r.cold = append(r.cold, ready.Sub(t0))
		if comm := procComm(a.pid); comm != "tortie-node" {
			fatalf("pid %d is %q, not tortie-node", a.pid, comm)
		}
		time.Sleep(time.Second) // the high-water mark includes whatever follows readiness
		hwm, err := procstat.StatusKB(a.pid, "VmHWM")
		if err != nil {
			fatalf("%v", err)
		}
		r.coldHWM = append(r.coldHWM, hwm)
		if i == 0 {
			prof.heap("cold")
			stopProf()
		}
		s, _ := l.metric("tortie_datastore_first_sync_seconds")
		p, _ := l.metric("tortie_dataplane_first_programmed_seconds")
		r.coldSync, r.coldProg = append(r.coldSync, s), append(r.coldProg, p)
		r.coldEndpoints, _ = l.metric("tortie_active_endpoints")
		r.coldPolicies, _ = l.metric("tortie_active_policies")
		if o.churn > 0 && i == o.coldRuns-1 {
			logf("endpoint churn: %d/s for %v", o.churnRate, o.churn)
			r.churn = l.churn(o, a, cl2)
		}
		a.stop()
	}
	return r
}

// startLab starts the spinning processes, the lab, its profiler (with
// -profile) and its datastore, with resources(l) written.
func startLab(o options, dir string, resources func(*lab) []string) (*lab, *profiler, *embedded.Server) {
	startBusy(o.busy)
	l := newLab(dir)
	var prof *profiler
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			fatalf("%v", err)
		}
		prof = &profiler{dir: o.profile, lab: l, port: profilerPort}
	}
	logf("lab %s: host netns %s, etcd on %s", l.id, l.host, l.rootIP)
	srv := l.serveEtcd("etcd1")
	if err := write(context.Background(), connect(srv.Endpoint()), resources(l)); err != nil {
		fatalf("resources: %v", err)
	}
	return l, prof, srv
}

// Ports the last rule of each of the 100 policies allows from the client,
// in the first manifest and in the stress variant.
const (
	sentinelCreate = 30000
	sentinelStress = 31000
)

// waitSentinels returns when the client reaches all 100 sentinel ports:
// the time the last of them was first reached. It waits on the last port
// (the last policy's) probing it every millisecond, then checks the others
// once each, and waits on any not reached yet: so when one transaction
// enforces them all (the agent's aim), the time is that of the first probe
// after it, not of the 99 probes that follow (1–2 ms each on a busy
// machine, which the earlier sequential wait added to the result).
func (l *lab) waitSentinels(base int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	last, err := l.waitConnects(base+99, time.Until(deadline))
	if err != nil {
		return time.Time{}, err
	}
	for i := range 99 {
		if l.connects(base + i) {
			continue
		}
		t, err := l.waitConnects(base+i, time.Until(deadline))
		if err != nil {
			return time.Time{}, err
		}
		last = t
	}
	return last, nil
}

// interleaved measures connect/close to the plain server (no policy) and to
// the server behind the rules in alternating rounds, each getting at most
// o.conns connections and o.connTime in all.
func (l *lab) interleaved(o options) (plain, rules crrResult) {
	const rounds = 6
	l.crr(plainIP, 80, 1000, time.Second) // warm up
	l.crr(serverIP, 80, 1000, time.Second)
	for range rounds {
		plain.add(l.crr(plainIP, 80, o.conns/rounds, o.connTime/rounds))
		rules.add(l.crr(serverIP, 80, o.conns/rounds, o.connTime/rounds))
	}
	return plain, rules
}

// agentMetrics are the agent's own counters around the policy changes.
type agentMetrics struct {
	applySum, applyCount float64 // incremental and full applies
	nftSum, nftCount     float64 // kernel transactions (nft -f and netlink)
	netlinkCount         float64 // of which over netlink
	resyncs              float64
}

func (l *lab) metrics() agentMetrics {
	get := func(name string) float64 {
		v, err := l.metric(name)
		if err != nil {
			fatalf("%v", err)
		}
		return v
	}
	var m agentMetrics
	for _, mode := range []string{"incremental", "full"} {
		sum, _ := l.metric(`tortie_apply_duration_seconds_sum{component="policy",mode="` + mode + `"}`)
		n, _ := l.metric(`tortie_apply_duration_seconds_count{component="policy",mode="` + mode + `"}`)
		m.applySum, m.applyCount = m.applySum+sum, m.applyCount+n
	}
	m.nftSum, m.nftCount = get("tortie_nft_transaction_duration_seconds_sum"), get("tortie_nft_transaction_duration_seconds_count")
	m.netlinkCount = get(`tortie_nft_transactions_total{path="netlink"}`)
	m.resyncs = get("tortie_datastore_resyncs_total")
	return m
}

func (a agentMetrics) sub(b agentMetrics) agentMetrics {
	return agentMetrics{a.applySum - b.applySum, a.applyCount - b.applyCount, a.nftSum - b.nftSum, a.nftCount - b.nftCount,
		a.netlinkCount - b.netlinkCount, a.resyncs - b.resyncs}
}

func build(dir, name string) string {
	out := filepath.Join(dir, name)
	logf("building %s", name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = moduleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as `make build`
	if b, err := cmd.CombinedOutput(); err != nil {
		fatalf("go build %s: %v\n%s", name, err, b)
	}
	return out
}

func moduleRoot() string {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		fatalf("run from inside the tortie module: go env GOMOD: %v", err)
	}
	return filepath.Dir(string(bytes.TrimSpace(b)))
}

func connect(url string) *client.Client {
	be, err := datastore.New(datastore.Config{Endpoints: []string{url}})
	if err != nil {
		fatalf("%v", err)
	}
	runner.AddCleanup(func() { be.Close() })
	cl := client.New(be)
	if err := cl.EnsureInitialized(context.Background()); err != nil {
		fatalf("%v", err)
	}
	return cl
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
func sec(d time.Duration) string {
	return fmt.Sprintf("%.2f s", d.Seconds())
}
func mb(kb int64) string { return fmt.Sprintf("%.0f MB", float64(kb)/1024) }

func crrCell(c crrResult) string {
	return fmt.Sprintf("%.0f/s (p50 %s, p90 %s; %d conns)", c.rate(), us(probe.Percentile(c.lat, 0.5)), us(probe.Percentile(c.lat, 0.9)), c.n)
}

func median[T int64 | time.Duration | float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func spread[T int64 | time.Duration | float64](xs []T, f func(T) string) string {
	if len(xs) == 1 {
		return f(xs[0])
	}
	return fmt.Sprintf("%s (%s–%s over %d)", f(median(xs)), f(slices.Min(xs)), f(slices.Max(xs)), len(xs))
}

func (r *results) print(w *os.File, o options) {
	busy := "no background load (-busy 0)"
	if o.busy > 0 {
		busy = fmt.Sprintf("%d process(es) spinning at normal priority throughout", o.busy)
	}
	fmt.Fprintf(w, "\n## tortie policy benchmarks, %s (load average at start %s, at end %s; %d CPUs; %s)\n\n",
		r.start.Format("2006-01-02"), r.load, labrun.LoadAverage(), runtime.NumCPU(), busy)
	fmt.Fprintln(w, "| what | tortie | goal (issue 15) | Calico's agent, nftables, same harness (issue 15) |")
	fmt.Fprintln(w, "|---|---|---|---|")
	fmt.Fprintf(w, "| new connections, client → server through the host, no policy (alternating with the next row; alone, before any policy existed: %.0f/s, p50 %s) | %s | — | — |\n",
		r.before.rate(), us(probe.Percentile(r.before.lat, 0.5)), crrCell(r.base))
	fmt.Fprintf(w, "| same, 10,000 non-matching rules (100 policies × 100, each rule its own port) before the allowing policy | %s | — | — |\n", crrCell(r.rules))
	ratio := r.rules.rate() / r.base.rate()
	fmt.Fprintf(w, "| **ratio** of connections/s, 10,000 rules ÷ none | **%.2f** | ≥ 0.95 | 0.08–0.10 |\n", ratio)
	if o.stress {
		fmt.Fprintf(w, "| stress: 1,000 of the 10,000 rules on the measured port (sources not matching), alternating with no policy (%.0f/s) | %s, ratio %.2f | — | — |\n",
			r.base2.rate(), crrCell(r.stress), r.stress.rate()/r.base2.rate())
	}
	n := len(r.changeLat)
	flaps := ""
	if r.changeFlaps > 0 || r.changeFails > 0 {
		flaps = fmt.Sprintf("; %d probes saw the old verdict after the new one, %d changes never seen", r.changeFlaps, r.changeFails)
	}
	fmt.Fprintf(w, "| policy change → enforcement: start of `tortie apply` of one changed policy to the first probe with the new verdict, 10,000 rules in place, %d changes (allow/deny alternating) | **p50 %s, p99 %s** (p90 %s, max %s%s) | p50 < 50 ms, p99 < 100 ms | p50 121–148 ms, p99 210–335 ms |\n",
		n, ms(probe.Percentile(r.changeLat, 0.5)), ms(probe.Percentile(r.changeLat, 0.99)), ms(probe.Percentile(r.changeLat, 0.9)), ms(slices.Max(r.changeLat)), flaps)
	if len(r.changeAgentLat) > 0 {
		fmt.Fprintf(w, "| the agent's part: from the datastore's commit of each change (its watch event here) to the first probe with the new verdict | **p50 %s, p99 %s** (p90 %s, max %s; %d changes) | — | — |\n",
			ms(probe.Percentile(r.changeAgentLat, 0.5)), ms(probe.Percentile(r.changeAgentLat, 0.99)), ms(probe.Percentile(r.changeAgentLat, 0.9)), ms(slices.Max(r.changeAgentLat)), len(r.changeAgentLat))
	}
	ca := r.changeAgent
	fmt.Fprintf(w, "| agent's own work over those changes (its metrics) | %.0f applies, mean %s; %.0f kernel transactions (%.0f over netlink, the rest nft -f), mean %s; %.0f datastore resyncs | — | applies mean 41–51 ms |\n",
		ca.applyCount, ms(time.Duration(ca.applySum/max(ca.applyCount, 1)*float64(time.Second))),
		ca.nftCount, ca.netlinkCount, ms(time.Duration(ca.nftSum/max(ca.nftCount, 1)*float64(time.Second))), ca.resyncs)
	fmt.Fprintf(w, "| of which the CLI process (start to exit of `tortie apply`) | p50 %s, p99 %s | — | — |\n",
		ms(probe.Percentile(r.changeCLI, 0.5)), ms(probe.Percentile(r.changeCLI, 0.99)))
	fmt.Fprintf(w, "| `tortie apply -f` of 100 policies × 100 rules (created) → enforced (all 100 sentinel ports reachable) | **%s** (the CLI's part %s) | < 1 s | 2.6–3.8 s |\n", sec(r.applyCreateEnforced), sec(r.applyCreate))
	if o.stress {
		fmt.Fprintf(w, "| same 100 policies replaced by the stress variant (1,000 rules move) → enforced | **%s** (the CLI's part %s) | < 1 s | 2.7–3.8 s |\n", sec(r.applyStressEnforced), sec(r.applyStress))
	}
	fmt.Fprintf(w, "| cold start to /readiness 200, %d endpoints (%.0f local, rest on 50 other nodes, 100 namespaces), %d policies, empty table | **%s** (agent's own metrics: in sync %s, programmed %s) | < 1.5 s | 3.05 s |\n",
		o.endpoints, r.coldEndpoints, o.policies, spread(r.cold, sec),
		spread(r.coldSync, func(f float64) string { return fmt.Sprintf("%.2f s", f) }),
		spread(r.coldProg, func(f float64) string { return fmt.Sprintf("%.2f s", f) }))
	fmt.Fprintf(w, "| agent peak memory (VmHWM) after that cold start | %s | — | — |\n", spread(r.coldHWM, mb))
	if r.churn != nil {
		r.churn.print(w, o)
	}
	fmt.Fprintf(w, "| agent memory (VmRSS, settled): idle / with the 10,000 rules in place | %s / **%s** | — / < 100 MB | 71–73 / 111–113 MB |\n", mb(r.rssIdle), mb(r.rssRules))
	stressHWM := "— (no stress variant: -stress=false)"
	if o.stress {
		stressHWM = "**" + mb(r.hwmStress) + "**"
	}
	fmt.Fprintf(w, "| agent peak memory (VmHWM, reset before each): creating the 10,000 rules / the stress variant replacing them | %s / %s | — / < 120 MB | — / 124–127 MB |\n", mb(r.hwmRules), stressHWM)
	fmt.Fprintf(w, "\nRerun: `go run ./bench/policy` (as root) (part of `make bench`). Connections: one client thread, blocking connect() then close with SO_LINGER 0, at most %d connections or %v per server, in 6 rounds alternating between the two servers, after 1,000 warm-up each; probes: one non-blocking connect every 1 ms, \"denied\" = no SYN-ACK within 25 ms, time = when the probe's SYN was sent. Cold-start policies active on this node: %.0f.\n",
		o.conns, o.connTime, r.coldPolicies)
}
