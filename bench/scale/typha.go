package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/procstat"
	"github.com/tortie/tortie/internal/testpki"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/ipam"
	"github.com/tortie/tortie/pkg/syncer"
	"github.com/tortie/tortie/pkg/typha"
)

// agentKinds are the kinds tortie-node watches by default: its policy,
// flow and routing components and its FelixConfiguration.
var agentKinds = []string{
	v3.KindWorkloadEndpoint, v3.KindHostEndpoint, v3.KindNetworkSet, v3.KindGlobalNetworkSet,
	v3.KindProfile, v3.KindTier, v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy,
	v3.KindIPPool, v3.KindNode, v3.KindBGPConfiguration, v3.KindBGPPeer, v3.KindFelixConfiguration,
	syncer.KindIPAMBlock,
}

const (
	probeName  = "fanout-probe" // the GlobalNetworkPolicy the changes modify
	agentCN    = "tortie-node"  // the agents' certificate, --client-cn
	typhaCN    = "tortie-typha" // typha's certificate, the agents' PeerCN
	faultTypha = 0              // the index of the typha that is killed
)

// fanLab is the etcd, the dataset and what the agents share.
type fanLab struct {
	o        options
	dir      string
	etcd     *fanProc
	etcdURL  string
	be       *datastore.Etcd
	c        *client.Client
	kinds    []syncer.Kind
	typhaPKI testpki.Files
	agentPKI testpki.Files
	agentLog *slog.Logger
	// policyPrefixes are where the policies the agents are checked on live.
	policyPrefixes []string
	// typhas are the typhas running, for the faults.
	typhas []*fanProc
}

// fanProc is a program the lab runs: etcd or a typha.
type fanProc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	addrs  map[string]string // what its start line named: "listen", "metrics"...
}

func (c *fanProc) pid() int { return c.cmd.Process.Pid }

// fanout runs the typha section: the lab, the typha case, the faults and
// the direct case.
func fanout(o options) *fanoutResult {
	l := newFanLab(o)
	r := &fanoutResult{o: o, keys: l.countKeys()}
	r.typha = l.typhaCase()
	if o.typhaFaults {
		r.faults = l.faultCase()
	}
	if o.typhaDirect {
		r.direct = l.directCase()
	}
	return r
}

func newFanLab(o options) *fanLab {
	dir, err := os.MkdirTemp("", "tortie-bench-fanout.")
	if err != nil {
		run.Fatalf("%v", err)
	}
	run.AddCleanup(func() { _ = os.RemoveAll(dir) })
	l := &fanLab{o: o, dir: dir}
	raiseNoFile(4*o.typhaAgents + 4096)
	run.Logf("typha: building tortie-datastore and tortie-typha")
	if err := labrun.Build(filepath.Join(dir, "bin"), "./cmd/tortie-datastore", "./cmd/tortie-typha"); err != nil {
		run.Fatalf("%v", err)
	}
	l.pki()
	if l.kinds, err = syncer.KindsNamed(agentKinds...); err != nil {
		run.Fatalf("%v", err)
	}
	f, err := os.Create(filepath.Join(dir, "agents.log"))
	if err != nil {
		run.Fatalf("%v", err)
	}
	run.AddCleanup(func() { f.Close() })
	l.agentLog = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, k := range []string{v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy} {
		info, _ := v3.KindByKind(k)
		l.policyPrefixes = append(l.policyPrefixes, client.KindPrefix(info, ""))
	}

	if err := os.Mkdir(filepath.Join(dir, "etcd"), 0o700); err != nil {
		run.Fatalf("%v", err)
	}
	serving := regexp.MustCompile(`serving on (http://\S+)`)
	l.etcd = l.start("etcd", []string{"tortie-datastore", "--data-dir", filepath.Join(dir, "etcd"), "--listen-client", "http://127.0.0.1:0"},
		func(line string) map[string]string {
			if m := serving.FindStringSubmatch(line); m != nil {
				return map[string]string{"url": m[1]}
			}
			return nil
		})
	l.etcdURL = l.etcd.addrs["url"]
	l.be = connect(l.etcdURL)
	l.c = client.New(l.be)
	l.writeDataset()
	return l
}

// raiseNoFile lifts the soft limit on open files to at least want (the
// agents' sockets; etcd and typha inherit it).
func raiseNoFile(want int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		run.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur >= uint64(want) {
		return
	}
	if lim.Max < uint64(want) {
		run.Fatalf("open files: the hard limit is %d, the agents need about %d (raise it: ulimit -Hn)", lim.Max, want)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		run.Fatalf("setrlimit: %v", err)
	}
}

// pki makes a CA, typha's certificate and the agents' one.
func (l *fanLab) pki() {
	ca, err := testpki.NewCA("fanout-ca")
	if err != nil {
		run.Fatalf("%v", err)
	}
	tp, err := ca.Issue(typhaCN, nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		run.Fatalf("%v", err)
	}
	ap, err := ca.Issue(agentCN, nil, nil)
	if err != nil {
		run.Fatalf("%v", err)
	}
	if l.typhaPKI, err = ca.WriteFiles(l.dir, "typha", tp); err != nil {
		run.Fatalf("%v", err)
	}
	if l.agentPKI, err = ca.WriteFiles(l.dir, "agent", ap); err != nil {
		run.Fatalf("%v", err)
	}
}

// start runs a built program, its output into a log of its own, and waits
// until started finds what it needs in a line of that output.
func (l *fanLab) start(name string, args []string, started func(line string) map[string]string) *fanProc {
	c := &fanProc{name: name, log: filepath.Join(l.dir, name+".log"), exited: make(chan struct{})}
	logf, err := os.Create(c.log)
	if err != nil {
		run.Fatalf("%v", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		run.Fatalf("%v", err)
	}
	c.cmd = exec.Command(filepath.Join(l.dir, "bin", args[0]), args[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = pw, pw
	// Killed with this process, should it die without cleaning up.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		run.Fatalf("start %s: %v", name, err)
	}
	pw.Close()
	found := make(chan map[string]string, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if found != nil {
				if m := started(sc.Text()); m != nil {
					found <- m
					found = nil
				}
			}
		}
	}()
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	run.AddCleanup(func() { c.stop() })
	select {
	case c.addrs = <-found:
	case <-c.exited:
		run.Fatalf("%s exited at start: %s\n%s", name, c.cmd.ProcessState, logTail(c.log, 20))
	case <-time.After(time.Minute):
		run.Fatalf("%s did not start within a minute:\n%s", name, logTail(c.log, 20))
	}
	return c
}

// stop ends the fanProc: SIGTERM, then SIGKILL after 10 s.
func (c *fanProc) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// tail is the last n lines of a log file.
func logTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// fanNamespaces is how many namespaces the endpoints and policies are in.
const fanNamespaces = 10

// writeDataset writes what a cluster of o.nodes hosts holds: pools, config,
// nodes, endpoints over them, policies, and a block per node.
func (l *fanLab) writeDataset() {
	ctx := context.Background()
	o := l.o
	if err := l.c.EnsureInitialized(ctx); err != nil {
		run.Fatalf("%v", err)
	}
	docs := []string{
		`{apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: fanout-pool}, spec: {cidr: 10.128.0.0/12, blockSize: 26, vxlanMode: Always, natOutgoing: true}}`,
		`{apiVersion: projectcalico.org/v3, kind: FelixConfiguration, metadata: {name: default}, spec: {logSeverityScreen: Info}}`,
		`{apiVersion: projectcalico.org/v3, kind: BGPConfiguration, metadata: {name: default}, spec: {asNumber: 64512, nodeToNodeMeshEnabled: false}}`,
		`{apiVersion: projectcalico.org/v3, kind: BGPPeer, metadata: {name: fanout-rr}, spec: {peerIP: 10.0.255.1, asNumber: 64512}}`,
		`{apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {name: fanout-external, labels: {zone: external}}, spec: {nets: [198.51.100.0/24, 203.0.113.0/24]}}`,
		probeDoc(0),
	}
	for n := range fanNamespaces {
		docs = append(docs, fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: Profile, metadata: {name: kns.fanout-%d},
spec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {projectcalico.org/name: fanout-%d}}}`, n, n))
	}
	for i := range o.nodes {
		docs = append(docs, fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: Node, metadata: {name: %s},
spec: {bgp: {ipv4Address: 10.0.%d.%d/16}, ipv4VXLANTunnelAddr: 10.128.%d.0, vxlanTunnelMACAddr: "66:0a:00:00:%02x:%02x"}}`,
			fanNode(i), i/250, 1+i%250, i%256, i/256%256, i%256))
	}
	for i := range o.typhaEndpoints {
		ns := i % fanNamespaces
		docs = append(docs, fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: WorkloadEndpoint,
metadata: {namespace: fanout-%d, labels: {app: app%d, tier: t%d, projectcalico.org/namespace: fanout-%d}},
spec: {node: %s, orchestrator: k8s, pod: pod-%05d, endpoint: eth0, interfaceName: cali%011x, ipNetworks: [10.%d.%d.%d/32], profiles: [kns.fanout-%d]}}`,
			ns, i%50, i%3, ns, fanNode(i%o.nodes), i, i, 128+i>>16, i>>8&255, i&255, ns))
	}
	for i := range o.typhaPolicies {
		rules := fmt.Sprintf(`ingress: [{action: Allow, protocol: TCP, source: {selector: "tier == 't%d'"}, destination: {ports: [%d, 8443]}},
  {action: Allow, protocol: TCP, source: {nets: [10.%d.0.0/16]}, destination: {ports: ["9000:9099"]}}],
egress: [{action: Allow, protocol: UDP, destination: {selector: "app == 'app%d'", ports: [53]}}]`, i%3, 8000+i%1000, 200+i%50, (i+1)%50)
		if i%2 == 0 {
			docs = append(docs, fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: NetworkPolicy, metadata: {namespace: fanout-%d, name: pol-%04d},
spec: {order: %d, selector: "app == 'app%d'", types: [Ingress, Egress], %s}}`, i/2%fanNamespaces, i, 100+i, i%50, rules))
		} else {
			docs = append(docs, gnpDoc(fmt.Sprintf("gpol-%04d", i), 100+i, rules))
		}
	}
	rs := make([]v3.Resource, 0, len(docs))
	for _, d := range docs {
		r, err := v3.Decode([]byte(d))
		if err != nil {
			run.Fatalf("decode %s: %v", d, err)
		}
		rs = append(rs, r)
	}
	t0 := time.Now()
	if _, err := l.c.Batch(ctx, client.OpCreate, rs); err != nil {
		run.Fatalf("write the dataset: %v", err)
	}
	a := ipam.New(l.be, ipam.Options{})
	for i := range o.nodes {
		if _, err := a.AutoAssign(ctx, ipam.AutoAssignArgs{HandleID: fmt.Sprintf("fanout.%d", i), Node: fanNode(i), Num4: 1}); err != nil {
			run.Fatalf("claim a block for %s: %v", fanNode(i), err)
		}
	}
	run.Logf("typha: dataset written in %v: %d resources, %d blocks", time.Since(t0).Round(time.Millisecond), len(rs), o.nodes)
}

func fanNode(i int) string { return fmt.Sprintf("fanout-node-%03d", i) }

func gnpDoc(name string, order int, rules string) string {
	return fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: %s},
spec: {order: %d, selector: "app == 'app%d'", types: [Ingress, Egress], %s}}`, name, order, order%50, rules)
}

// probeDoc is the probe policy, its order changed by every change.
func probeDoc(order int) string {
	return gnpDoc(probeName, order, `ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}], egress: []`)
}

// countKeys is how many keys the agents are sent: what their kinds hold.
func (l *fanLab) countKeys() int {
	n := 0
	for _, k := range l.kinds {
		kvs, _, err := l.be.List(context.Background(), k.Prefix)
		if err != nil {
			run.Fatalf("%v", err)
		}
		n += len(kvs)
	}
	return n
}

// apply writes one document and returns its revision.
func (l *fanLab) apply(doc string) int64 {
	r, err := v3.Decode([]byte(doc))
	if err != nil {
		run.Fatalf("decode %s: %v", doc, err)
	}
	got, err := l.c.Apply(context.Background(), r)
	if err != nil {
		run.Fatalf("apply %s: %v", doc, err)
	}
	rev, err := strconv.ParseInt(got.GetResourceVersion(), 10, 64)
	if err != nil {
		run.Fatalf("resourceVersion %q: %v", got.GetResourceVersion(), err)
	}
	return rev
}

// policies is what etcd holds of the policies: key → revision.
func (l *fanLab) policies() map[string]int64 {
	m := map[string]int64{}
	for _, p := range l.policyPrefixes {
		kvs, _, err := l.be.List(context.Background(), p)
		if err != nil {
			run.Fatalf("%v", err)
		}
		for _, kv := range kvs {
			m[kv.Key] = kv.Revision
		}
	}
	return m
}

// --- agents ---

// fanAgent is one agent: a syncer, and a consumer that takes its batches
// as tortie-node's loop does and keeps what the benchmark checks.
type fanAgent struct {
	s      *syncer.Syncer
	cancel context.CancelFunc
	done   sync.WaitGroup
	close  func()

	mu       sync.Mutex
	syncedAt time.Time
	probes   []seenRev        // the probe policy's revisions, when taken
	policies map[string]int64 // every policy: key → revision
	trouble  string
	troubles int       // times the feed broke
	backAt   time.Time // when the trouble last cleared
	resyncs  int
}

type seenRev struct {
	rev int64
	at  time.Time
}

func (a *fanAgent) consume(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.s.Notify():
		}
		b := a.s.Take()
		now := time.Now()
		a.mu.Lock()
		for _, u := range b.Updates {
			if u.Kind != v3.KindNetworkPolicy && u.Kind != v3.KindGlobalNetworkPolicy {
				continue
			}
			if u.Deleted() {
				delete(a.policies, u.Key)
				continue
			}
			a.policies[u.Key] = u.Revision
			if u.Kind == v3.KindGlobalNetworkPolicy && u.Name == probeName {
				a.probes = append(a.probes, seenRev{u.Revision, now})
			}
		}
		if b.InSync && a.syncedAt.IsZero() {
			a.syncedAt = now
		}
		if b.Trouble != "" && a.trouble == "" {
			a.troubles++
		}
		if b.Trouble == "" && a.trouble != "" {
			a.backAt = now
		}
		a.trouble = b.Trouble
		a.resyncs += b.Resyncs
		a.mu.Unlock()
	}
}

// fleet is N agents started together.
type fleet struct {
	agents []*fanAgent
	start  time.Time
}

// newAgent makes agent i's syncer and what closes its connection.
type newAgent func(i int) (*syncer.Syncer, func())

func (l *fanLab) startFleet(n int, mk newAgent) *fleet {
	f := &fleet{agents: make([]*fanAgent, n)}
	for i := range f.agents {
		s, closer := mk(i)
		f.agents[i] = &fanAgent{s: s, close: closer, policies: map[string]int64{}}
	}
	f.start = time.Now()
	for _, a := range f.agents {
		ctx, cancel := context.WithCancel(context.Background())
		a.cancel = cancel
		a.done.Go(func() { a.s.Run(ctx) })
		a.done.Go(func() { a.consume(ctx) })
	}
	run.AddCleanup(f.stop)
	return f
}

// breaks counts, over all agents, the streams from typha that broke and the
// prefixes resynced after their first snapshot.
func (f *fleet) breaks() (reconnects, resyncs int) {
	for _, a := range f.agents {
		a.mu.Lock()
		reconnects += a.troubles
		resyncs += a.resyncs
		a.mu.Unlock()
	}
	return reconnects, resyncs
}

func (f *fleet) stop() {
	for _, a := range f.agents {
		if a.cancel != nil {
			a.cancel()
		}
	}
	for _, a := range f.agents {
		a.done.Wait()
		if a.close != nil {
			a.close()
			a.close = nil
		}
	}
}

// directAgent is an agent on etcd: its own connection, its own watches.
func (l *fanLab) directAgent(int) (*syncer.Syncer, func()) {
	be, err := datastore.New(datastore.Config{Endpoints: []string{l.etcdURL}, Logger: l.agentLog})
	if err != nil {
		run.Fatalf("%v", err)
	}
	return syncer.New(be, syncer.Config{Kinds: l.kinds, Logger: l.agentLog}), func() { be.Close() }
}

// typhaAgent makes agents on the typhas at addrs, each with its own TLS
// connection, configured as tortie-node is by FELIX_TYPHA*.
func (l *fanLab) typhaAgent(addrs ...string) newAgent {
	return func(i int) (*syncer.Syncer, func()) {
		tc, err := typha.ClientTLS(typha.TLSFiles{CAFile: l.agentPKI.CA, CertFile: l.agentPKI.Cert, KeyFile: l.agentPKI.Key, PeerCN: typhaCN})
		if err != nil {
			run.Fatalf("%v", err)
		}
		cl, err := typha.NewClient(typha.ClientConfig{Addrs: addrs, TLS: tc, Node: fmt.Sprintf("agent-%04d", i), Logger: l.agentLog})
		if err != nil {
			run.Fatalf("%v", err)
		}
		return syncer.New(nil, syncer.Config{Kinds: l.kinds, Feed: cl, Logger: l.agentLog}), nil
	}
}

// fanWait polls cond every 50 ms until it holds, and fails the run after
// timeout saying what did not happen.
func fanWait(what string, timeout time.Duration, cond func() (bool, string)) {
	deadline := time.Now().Add(timeout)
	next := time.Now().Add(10 * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			run.Fatalf("%s: not after %v: %s", what, timeout, why)
		}
		if time.Now().After(next) {
			run.Logf("%s: still waiting: %s", what, why)
			next = time.Now().Add(10 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitSynced waits until every agent was told InSync and returns each
// one's time from the fleet's start.
func (l *fanLab) waitSynced(f *fleet, what string) []time.Duration {
	fanWait(what+": every agent in sync", l.o.typhaSyncTimeout, func() (bool, string) {
		n := 0
		for _, a := range f.agents {
			a.mu.Lock()
			if !a.syncedAt.IsZero() {
				n++
			}
			a.mu.Unlock()
		}
		return n == len(f.agents), fmt.Sprintf("%d of %d agents in sync after %v; %s", n, len(f.agents), time.Since(f.start).Round(time.Second), l.lastAgentLog())
	})
	out := make([]time.Duration, len(f.agents))
	for i, a := range f.agents {
		a.mu.Lock()
		out[i] = a.syncedAt.Sub(f.start)
		a.mu.Unlock()
	}
	return out
}

func (l *fanLab) lastAgentLog() string {
	t := logTail(filepath.Join(l.dir, "agents.log"), 1)
	if t == "" {
		return "the agents logged nothing"
	}
	return "the agents' last log line: " + t
}

// waitState waits until every agent has what etcd has of the policies and
// no trouble, and fails the run naming what differs.
func (l *fanLab) waitState(f *fleet, what string, timeout time.Duration) {
	want := l.policies()
	fanWait(what+": every agent holds etcd's policies", timeout, func() (bool, string) {
		bad, example := 0, ""
		for i, a := range f.agents {
			a.mu.Lock()
			if a.trouble != "" || !maps.Equal(a.policies, want) {
				if bad++; example == "" {
					example = fmt.Sprintf("agent %d: trouble %q, %s", i, a.trouble, diffRevs(a.policies, want))
				}
			}
			a.mu.Unlock()
		}
		return bad == 0, fmt.Sprintf("%d of %d agents differ (lost updates); e.g. %s", bad, len(f.agents), example)
	})
}

// diffRevs says how an agent's policies differ from etcd's.
func diffRevs(got, want map[string]int64) string {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			d = append(d, fmt.Sprintf("%s missing (etcd rev %d)", k, w))
		} else if g != w {
			d = append(d, fmt.Sprintf("%s at rev %d, etcd %d", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, k+" deleted in etcd")
		}
	}
	slices.Sort(d)
	return fmt.Sprintf("%d differences: %s", len(d), strings.Join(d[:min(3, len(d))], "; "))
}

// --- measurement ---

// fanUsage is what a process used at one moment.
type fanUsage struct {
	cpu      time.Duration
	rss, hwm int64 // kB
}

func fanUsageOf(pid int) fanUsage {
	var u fanUsage
	var err error
	if u.cpu, err = procstat.CPU(pid); err != nil {
		run.Fatalf("%v", err)
	}
	if u.rss, err = procstat.StatusKB(pid, "VmRSS"); err != nil {
		run.Fatalf("%v", err)
	}
	if u.hwm, err = procstat.StatusKB(pid, "VmHWM"); err != nil {
		run.Fatalf("%v", err)
	}
	return u
}

// fanPhase is what etcd, typha (when there is one) and this process used
// from one moment to another, and their memory at its end.
type fanPhase struct {
	wall                time.Duration
	etcd, typha, agents fanUsage // CPU used in the phase; memory at its end, the peak of the phase
	load                string
}

// meter measures a phase: call the returned function at its end.
func (l *fanLab) meter(ty *fanProc) func() fanPhase {
	pids := []int{l.etcd.pid(), os.Getpid()}
	if ty != nil {
		pids = append(pids, ty.pid())
	}
	for _, pid := range pids {
		if err := procstat.ResetPeak(pid); err != nil {
			run.Fatalf("reset the peak memory of %d: %v", pid, err)
		}
	}
	t0 := time.Now()
	e0, a0 := fanUsageOf(pids[0]), fanUsageOf(pids[1])
	var t0u fanUsage
	if ty != nil {
		t0u = fanUsageOf(ty.pid())
	}
	return func() fanPhase {
		p := fanPhase{wall: time.Since(t0), etcd: fanUsageOf(pids[0]), agents: fanUsageOf(pids[1]), load: labrun.LoadAverage()}
		p.etcd.cpu -= e0.cpu
		p.agents.cpu -= a0.cpu
		if ty != nil {
			p.typha = fanUsageOf(ty.pid())
			p.typha.cpu -= t0u.cpu
		}
		return p
	}
}

// scrape reads a Prometheus text page: series (with labels) → value.
func scrapeMetrics(url string) map[string]float64 {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		run.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); i > 0 && err == nil {
			m[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		run.Fatalf("metrics %s: %v", url, err)
	}
	return m
}

// byLabel lists the series of a metric with one label that are not zero,
// "none" when there is none.
func byLabel(m map[string]float64, name string) string {
	var out []string
	for k, v := range m {
		if labels, ok := strings.CutPrefix(k, name+"{"); ok && v != 0 {
			_, value, _ := strings.Cut(strings.TrimSuffix(labels, "}"), "=")
			out = append(out, fmt.Sprintf("%s %.0f", strings.Trim(value, `"`), v))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// watchers is what etcd has open: watchers and watch streams.
func (l *fanLab) watchers() (watchers, streams int) {
	m := scrapeMetrics(l.etcdURL + "/metrics")
	w, okw := m["etcd_debugging_mvcc_watcher_total"]
	s, oks := m["etcd_debugging_mvcc_watch_stream_total"]
	if !okw || !oks {
		run.Fatalf("etcd's /metrics has no etcd_debugging_mvcc_watcher_total or etcd_debugging_mvcc_watch_stream_total")
	}
	return int(w), int(s)
}

// settle waits until etcd has at most want watchers open (the agents of a
// case gone).
func (l *fanLab) settle(want int) {
	fanWait("etcd's watchers closed", time.Minute, func() (bool, string) {
		w, s := l.watchers()
		return w <= want, fmt.Sprintf("%d watchers, %d streams open, want %d watchers", w, s, want)
	})
	time.Sleep(2 * time.Second)
}

// caseResult is one case (direct or typha) measured.
type caseResult struct {
	agents            int
	syncEach          []time.Duration
	sync, change      fanPhase
	watchers, streams int
	etcdFDs           int
	perAgent, lastOf  []time.Duration // a change reaching one agent; all of them
	writes            []time.Duration
	missed            int // changes an agent was never told of by themselves
	reconnects        int // typha streams that broke, over all agents
	resyncs           int // prefixes listed again after the first time, over all agents
	typhaReady        time.Duration
	typhaMetrics      map[string]float64
}

// runCase starts n agents, measures their sync, then the changes, and
// stops them.
func (l *fanLab) runCase(name string, ty *fanProc, mk newAgent) *caseResult {
	n := l.o.typhaAgents
	r := &caseResult{agents: n}
	run.Logf("%s: %d agents start", name, n)
	end := l.meter(ty)
	f := l.startFleet(n, mk)
	r.syncEach = l.waitSynced(f, name)
	r.sync = end()
	r.watchers, r.streams = l.watchers()
	var err error
	if r.etcdFDs, err = procstat.FDs(l.etcd.pid()); err != nil {
		run.Fatalf("%v", err)
	}
	run.Logf("%s: all %d in sync after %v; etcd has %d watchers, %d streams", name, n, slices.Max(r.syncEach).Round(time.Millisecond), r.watchers, r.streams)

	end = l.meter(ty)
	r.perAgent, r.lastOf, r.writes, r.missed = l.probeChanges(f, name)
	r.change = end()
	l.waitState(f, name, time.Minute)
	r.reconnects, r.resyncs = f.breaks()
	if ty != nil {
		r.typhaMetrics = scrapeMetrics("http://" + ty.addrs["metrics"] + "/metrics")
	}
	f.stop()
	if ty != nil {
		l.waitGone(ty)
	}
	return r
}

// waitGone waits until typha counts no agent connected. It notices that an
// agent left only when a write to it fails, which is the second write after
// the agent closed (the first draws the reset): the pings of idle
// connections (every 10 s), or changes written meanwhile, which make it
// write to every agent sooner.
func (l *fanLab) waitGone(ty *fanProc) {
	i := 0
	fanWait(ty.name+": the agents that left counted gone", time.Minute, func() (bool, string) {
		n := scrapeMetrics("http://" + ty.addrs["metrics"] + "/metrics")["tortie_typha_connections"]
		if i++; n > 0 && i%10 == 0 {
			l.apply(probeDoc(-i))
		}
		return n == 0, fmt.Sprintf("tortie_typha_connections %.0f", n)
	})
}

// probeChanges changes the probe policy o.typhaChanges times and returns
// how long each change took to reach each agent, and all of them.
func (l *fanLab) probeChanges(f *fleet, name string) (perAgent, lastOf, writes []time.Duration, missed int) {
	type change struct {
		rev int64
		at  time.Time
	}
	changes := make([]change, l.o.typhaChanges)
	for i := range changes {
		t0 := time.Now()
		changes[i] = change{l.apply(probeDoc(1 + i)), t0}
		writes = append(writes, time.Since(t0))
		time.Sleep(time.Until(t0.Add(l.o.typhaSpacing)))
	}
	last := changes[len(changes)-1].rev
	fanWait(name+": the last change at every agent", time.Minute, func() (bool, string) {
		n := 0
		for _, a := range f.agents {
			a.mu.Lock()
			if len(a.probes) > 0 && a.probes[len(a.probes)-1].rev >= last {
				n++
			}
			a.mu.Unlock()
		}
		return n == len(f.agents), fmt.Sprintf("%d of %d agents have rev %d", n, len(f.agents), last)
	})
	lastOf = make([]time.Duration, len(changes))
	for _, a := range f.agents {
		a.mu.Lock()
		for i, c := range changes {
			j := slices.IndexFunc(a.probes, func(s seenRev) bool { return s.rev >= c.rev })
			if a.probes[j].rev != c.rev {
				missed++
			}
			d := a.probes[j].at.Sub(c.at)
			perAgent = append(perAgent, d)
			lastOf[i] = max(lastOf[i], d)
		}
		a.mu.Unlock()
	}
	return perAgent, lastOf, writes, missed
}

// startTypha runs a tortie-typha on etcd with mutual TLS and waits until
// it is ready.
func (l *fanLab) startTypha(name string) (*fanProc, time.Duration) {
	starting := regexp.MustCompile(`msg="tortie-typha starting".* listen=(\S+).* metrics=(\S+)`)
	t0 := time.Now()
	c := l.start(name, []string{"tortie-typha", "--etcd-endpoints", l.etcdURL, "--listen", "127.0.0.1:0",
		"--ca-file", l.typhaPKI.CA, "--server-cert-file", l.typhaPKI.Cert, "--server-key-file", l.typhaPKI.Key, "--client-cn", agentCN,
		"--health-addr", "", "--metrics-addr", "127.0.0.1:0"},
		func(line string) map[string]string {
			if m := starting.FindStringSubmatch(line); m != nil {
				return map[string]string{"listen": m[1], "metrics": m[2]}
			}
			return nil
		})
	fanWait(name+" ready", time.Minute, func() (bool, string) {
		return scrapeMetrics("http://" + c.addrs["metrics"] + "/metrics")["tortie_typha_in_sync"] == 1, "tortie_typha_in_sync is not 1"
	})
	return c, time.Since(t0)
}

func (l *fanLab) typhaCase() *caseResult {
	w0, _ := l.watchers()
	ty, ready := l.startTypha("typha")
	w1, _ := l.watchers()
	r := l.runCase("typha", ty, l.typhaAgent(ty.addrs["listen"]))
	r.typhaReady = ready
	if !l.o.typhaFaults {
		ty.stop()
		l.settle(w0)
		return r
	}
	l.typhas = append(l.typhas, ty)
	l.settle(w1)
	return r
}

func (l *fanLab) directCase() *caseResult {
	for _, t := range l.typhas {
		t.stop()
	}
	l.settle(0)
	return l.runCase("direct", nil, l.directAgent)
}

// --- faults ---

type faultResult struct {
	agents              int
	before              []int // agents on each typha before the kill
	afterSurvivor       int
	writes, writesAfter int
	moved               int
	killedHad           int
	resync              []time.Duration // kill → a moved agent back in sync
	reconnects          int             // troubles over all agents
	syncReconnects      int             // streams that broke during the first sync
	cuts                []cutResult
	snapshotBytes       float64
	survivor            map[string]float64
}

type cutResult struct {
	at       int64         // bytes passed before the cut
	conns    int           // connections the agent made through the proxy
	recovery time.Duration // cut → in sync
}

// faultCase: two typhas, N agents over both; one typha is killed while
// policies change; every agent must move to the other and end with
// etcd's policies. Then agents whose first connection is cut mid-snapshot.
func (l *fanLab) faultCase() *faultResult {
	n := l.o.typhaAgents
	r := &faultResult{agents: n}
	second, _ := l.startTypha("typha-b")
	l.typhas = append(l.typhas, second)
	addrs := []string{l.typhas[0].addrs["listen"], l.typhas[1].addrs["listen"]}
	run.Logf("faults: %d agents over two typhas", n)
	f := l.startFleet(n, l.typhaAgent(addrs...))
	l.waitSynced(f, "faults")
	r.syncReconnects, _ = f.breaks()
	polls := 0
	fanWait("faults: the typhas count every agent once", time.Minute, func() (bool, string) {
		r.before = r.before[:0]
		for _, t := range l.typhas {
			r.before = append(r.before, int(scrapeMetrics("http://" + t.addrs["metrics"] + "/metrics")["tortie_typha_connections"]))
		}
		if polls++; polls%10 == 0 {
			l.apply(probeDoc(-polls)) // see waitGone
		}
		return r.before[0]+r.before[1] == n, fmt.Sprintf("the typhas count %v agents, want %d in all", r.before, n)
	})
	killed, survivor := l.typhas[faultTypha], l.typhas[1-faultTypha]
	r.killedHad = r.before[faultTypha]

	// Ten changes to different policies 200 ms apart, the typha killed
	// before the fourth: updates, a deletion and a creation.
	var killAt time.Time
	gnpRules := `ingress: [{action: Allow, protocol: TCP, destination: {ports: [443]}}], egress: []`
	for i := range 10 {
		if i == 3 {
			killAt = time.Now()
			_ = killed.cmd.Process.Signal(syscall.SIGKILL)
			<-killed.exited
			run.Logf("faults: %s (%d agents) killed", killed.name, r.killedHad)
		}
		t0 := time.Now()
		switch i {
		case 5:
			gnp, _ := v3.KindByKind(v3.KindGlobalNetworkPolicy)
			if _, err := l.c.Delete(context.Background(), gnp, "", "gpol-0001", 0); err != nil {
				run.Fatalf("delete: %v", err)
			}
		case 7:
			l.apply(gnpDoc("fanout-new", 7, gnpRules))
		default:
			l.apply(gnpDoc(fmt.Sprintf("gpol-%04d", 2*i+3), 1000+i, gnpRules))
		}
		r.writes++
		if i >= 3 {
			r.writesAfter++
		}
		time.Sleep(time.Until(t0.Add(200 * time.Millisecond)))
	}
	l.waitState(f, "faults", 2*time.Minute)
	for _, a := range f.agents {
		a.mu.Lock()
		if a.troubles > 0 && a.backAt.After(killAt) {
			r.moved++
			r.resync = append(r.resync, a.backAt.Sub(killAt))
		}
		a.mu.Unlock()
	}
	r.reconnects, _ = f.breaks()
	r.reconnects -= r.syncReconnects
	r.survivor = scrapeMetrics("http://" + survivor.addrs["metrics"] + "/metrics")
	r.afterSurvivor = int(r.survivor["tortie_typha_connections"])
	if r.afterSurvivor != n {
		run.Fatalf("faults: %s has %d agents after the kill, want all %d", survivor.name, r.afterSurvivor, n)
	}
	f.stop()

	r.snapshotBytes = r.survivor["tortie_typha_snapshot_bytes"]
	r.cuts = l.cutMidSnapshot(survivor, int64(r.snapshotBytes))
	return r
}

// cutMidSnapshot runs agents whose first connection to typha is cut, each
// after a different part of its snapshot: each must reconnect, must not say
// it is in sync before the cut, and must end with etcd's policies.
func (l *fanLab) cutMidSnapshot(ty *fanProc, snapshot int64) []cutResult {
	if snapshot < 64<<10 {
		run.Fatalf("cut: a snapshot of %d bytes is too small to cut in", snapshot)
	}
	offsets := []int64{8 << 10, snapshot / 4, snapshot / 2, snapshot - 16<<10}
	proxies := make([]*cutProxy, len(offsets))
	for i, off := range offsets {
		proxies[i] = newCutProxy(ty.addrs["listen"], off)
	}
	f := l.startFleet(len(offsets), func(i int) (*syncer.Syncer, func()) {
		return l.typhaAgent(proxies[i].addr())(i)
	})
	l.waitSynced(f, "cut")
	l.waitState(f, "cut", time.Minute)
	out := make([]cutResult, len(offsets))
	for i, p := range proxies {
		p.mu.Lock()
		a := f.agents[i]
		a.mu.Lock()
		out[i] = cutResult{at: p.cutAt, conns: p.conns, recovery: a.syncedAt.Sub(p.cutTime)}
		switch {
		case p.cutTime.IsZero():
			run.Fatalf("cut: the connection of agent %d was never cut", i)
		case p.conns < 2:
			run.Fatalf("cut: agent %d did not reconnect after its connection was cut", i)
		case a.syncedAt.Before(p.cutTime):
			run.Fatalf("cut: agent %d said it was in sync at %v, before its snapshot was cut at %v after %d bytes",
				i, a.syncedAt.Format(time.StampMicro), p.cutTime.Format(time.StampMicro), p.cutAt)
		}
		a.mu.Unlock()
		p.mu.Unlock()
	}
	f.stop()
	for _, p := range proxies {
		p.ln.Close()
	}
	return out
}

// cutProxy forwards connections to a typha; the first one it closes after
// cutAfter bytes from the typha.
type cutProxy struct {
	ln       net.Listener
	target   string
	cutAfter int64
	mu       sync.Mutex
	conns    int
	cutAt    int64
	cutTime  time.Time
}

func newCutProxy(target string, cutAfter int64) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		run.Fatalf("%v", err)
	}
	p := &cutProxy{ln: ln, target: target, cutAfter: cutAfter}
	run.AddCleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) pipe(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.conns++
	first := p.conns == 1
	p.mu.Unlock()
	go func() {
		_, _ = io.Copy(up, c)
		up.Close()
	}()
	if !first {
		_, _ = io.Copy(c, up)
		return
	}
	n, _ := io.CopyN(c, up, p.cutAfter)
	p.mu.Lock()
	p.cutAt, p.cutTime = n, time.Now()
	p.mu.Unlock()
}

// --- the report ---

type fanoutResult struct {
	o             options
	keys          int
	typha, direct *caseResult
	faults        *faultResult
}

func (r *fanoutResult) print(w io.Writer) {
	o := r.o
	fmt.Fprintf(w, "\n| typha fan-out: %d agents (real syncers in this process, the %d kinds tortie-node watches, %d keys each: %d nodes, %d endpoints, %d policies) | direct to etcd | through one typha |\n|---|---|---|\n",
		o.typhaAgents, len(agentKinds), r.keys, o.nodes, o.typhaEndpoints, o.typhaPolicies+1)
	row := func(what string, f func(c *caseResult) string) {
		cell := func(c *caseResult) string {
			if c == nil {
				return "not run"
			}
			return f(c)
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", what, cell(r.direct), cell(r.typha))
	}
	typhaRow := func(what string, f func(c *caseResult) string) {
		row(what, func(c *caseResult) string {
			if c.typhaMetrics == nil {
				return "—"
			}
			return f(c)
		})
	}
	mb := func(kb int64) string { return fmt.Sprintf("%.0f MB", float64(kb)/1024) }
	sec := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	row("time until an agent is in sync (snapshot delivered), from the start of all: p50 / p99 / the last", func(c *caseResult) string {
		return "**" + quantiles(c.syncEach) + "**"
	})
	row("etcd CPU during the sync", func(c *caseResult) string { return "**" + sec(c.sync.etcd.cpu) + "**" })
	row("etcd watchers / watch streams open (etcd_debugging_mvcc_watcher_total / _watch_stream_total)", func(c *caseResult) string {
		return fmt.Sprintf("**%d** / %d", c.watchers, c.streams)
	})
	row("etcd open files", func(c *caseResult) string { return strconv.Itoa(c.etcdFDs) })
	row("etcd memory: RSS after the sync (peak during it)", func(c *caseResult) string {
		return fmt.Sprintf("**%s** (%s)", mb(c.sync.etcd.rss), mb(c.sync.etcd.hwm))
	})
	row(fmt.Sprintf("etcd CPU during the %d changes (%v apart)", o.typhaChanges, o.typhaSpacing), func(c *caseResult) string {
		return fmt.Sprintf("**%s** in %s", sec(c.change.etcd.cpu), sec(c.change.wall))
	})
	row("etcd memory: RSS after the changes (peak during them)", func(c *caseResult) string {
		return fmt.Sprintf("%s (%s)", mb(c.change.etcd.rss), mb(c.change.etcd.hwm))
	})
	typhaRow("typha: ready after start; CPU during the sync / the changes", func(c *caseResult) string {
		return fmt.Sprintf("%s; %s / %s", sec(c.typhaReady), sec(c.sync.typha.cpu), sec(c.change.typha.cpu))
	})
	typhaRow("typha memory: RSS after the sync (peak during it) / after the changes", func(c *caseResult) string {
		return fmt.Sprintf("%s (%s) / %s", mb(c.sync.typha.rss), mb(c.sync.typha.hwm), mb(c.change.typha.rss))
	})
	typhaRow("typha: snapshot size; snapshots completed, mean time to send one; agents it disconnected, by reason", func(c *caseResult) string {
		m := c.typhaMetrics
		return fmt.Sprintf("%.1f MB; %.0f, %.0f ms; %s", m["tortie_typha_snapshot_bytes"]/(1<<20), m["tortie_typha_snapshot_seconds_count"],
			1000*m["tortie_typha_snapshot_seconds_sum"]/max(1, m["tortie_typha_snapshot_seconds_count"]), byLabel(m, "tortie_typha_disconnects_total"))
	})
	row("agents' streams from typha that broke (each reconnects for a new snapshot); prefixes resynced", func(c *caseResult) string {
		return fmt.Sprintf("**%d**; %d", c.reconnects, c.resyncs)
	})
	row("the agents' process: CPU during the sync / the changes; RSS after the sync", func(c *caseResult) string {
		return fmt.Sprintf("%s / %s; %s", sec(c.sync.agents.cpu), sec(c.change.agents.cpu), mb(c.sync.agents.rss))
	})
	row("a change reaching one agent: p50 / p99 / max", func(c *caseResult) string { return quantiles(c.perAgent) })
	row(fmt.Sprintf("a change reaching all %d agents: p50 / p99 / max over the changes", o.typhaAgents), func(c *caseResult) string {
		return "**" + quantiles(c.lastOf) + "**"
	})
	row("the write itself (counted in the above): p50 / p99 / max", func(c *caseResult) string { return quantiles(c.writes) })
	row("changes an agent was not told of one by one (coalesced)", func(c *caseResult) string { return strconv.Itoa(c.missed) })
	row("load average after the sync / after the changes", func(c *caseResult) string { return c.sync.load + " / " + c.change.load })

	if f := r.faults; f != nil {
		fmt.Fprintf(w, "\n| typha faults under load: %d agents over two typhas | result |\n|---|---|\n", f.agents)
		fmt.Fprintf(w, "| agents on typha A / B before A is SIGKILLed (streams that broke during their first sync) | %d / %d (%d) |\n", f.before[0], f.before[1], f.syncReconnects)
		fmt.Fprintf(w, "| policy changes written (updates, a deletion, a creation), 200 ms apart | %d, %d of them after the kill |\n", f.writes, f.writesAfter)
		fmt.Fprintf(w, "| agents whose stream broke and that moved to B (A had %d) | **%d** (%d reconnections) |\n", f.killedHad, f.moved, f.reconnects)
		fmt.Fprintf(w, "| kill → a moved agent in sync again on B: p50 / p99 / max | **%s** |\n", quantiles(f.resync))
		fmt.Fprintf(w, "| agents on B at the end | %d |\n", f.afterSurvivor)
		fmt.Fprintf(w, "| lost updates (an agent whose policies differ from etcd's at the end) | **0** |\n")
		var cuts []string
		for _, c := range f.cuts {
			cuts = append(cuts, fmt.Sprintf("%d KB: %d connections, in sync %s after the cut", c.at>>10, c.conns, ms(c.recovery)))
		}
		fmt.Fprintf(w, "| an agent's connection cut mid-snapshot (%.1f MB), at: | %s; none said in sync before the cut, all hold etcd's policies |\n",
			f.snapshotBytes/(1<<20), strings.Join(cuts, "; "))
	}
	fmt.Fprintf(w, "\nRerun: `go run ./bench/scale -sections typha -typha-agents %d -typha-endpoints %d -typha-policies %d -nodes %d`. "+
		"etcd (tortie-datastore) and the typhas are processes of their own; the agents are `syncer.New` clients in this process, "+
		"each with its own etcd connection (direct) or its own TLS connection to typha, and a consumer that takes batches as tortie-node does, "+
		"all started at once. A change counts from the start of its write to the consumer's Take.\n",
		o.typhaAgents, o.typhaEndpoints, o.typhaPolicies, o.nodes)
}
