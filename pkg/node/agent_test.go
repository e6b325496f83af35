package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/dataplane/nft"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/node"
	"github.com/tortie/tortie/pkg/syncer"
)

// lockedFake is knftables' fake made safe to read (Dump) while the agent
// writes to it, and able to refuse transactions on demand.
type lockedFake struct {
	mu   sync.Mutex
	fake *knftables.Fake
	fail atomic.Bool
	runs atomic.Int64
}

func newLockedFake() *lockedFake {
	return &lockedFake{fake: knftables.NewFake(knftables.InetFamily, "tortie")}
}

func (l *lockedFake) Dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fake.Dump()
}

// Unwrap implements nft.Unwrapper: the driver writes for a fake.
func (l *lockedFake) Unwrap() knftables.Interface { return l.fake }

func (l *lockedFake) NewTransaction() *knftables.Transaction { return l.fake.NewTransaction() }
func (l *lockedFake) Run(ctx context.Context, tx *knftables.Transaction) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs.Add(1)
	if l.fail.Load() {
		return errors.New("injected: nft refused the transaction")
	}
	return l.fake.Run(ctx, tx)
}
func (l *lockedFake) Check(ctx context.Context, tx *knftables.Transaction) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fake.Check(ctx, tx)
}
func (l *lockedFake) ListAll(ctx context.Context) (map[string][]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fake.ListAll(ctx)
}
func (l *lockedFake) List(ctx context.Context, t string) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fake.List(ctx, t)
}
func (l *lockedFake) ListRules(ctx context.Context, c string) ([]*knftables.Rule, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fake.ListRules(ctx, c)
}
func (l *lockedFake) ListElements(ctx context.Context, t, n string) ([]*knftables.Element, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fake.ListElements(ctx, t, n)
}
func (l *lockedFake) ListCounters(ctx context.Context) ([]*knftables.Counter, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fake.ListCounters(ctx)
}

func apply(t *testing.T, cl *client.Client, docs ...string) {
	t.Helper()
	for _, d := range docs {
		r, err := v3.Decode([]byte(d))
		if err != nil {
			t.Fatalf("decode %s: %v", d, err)
		}
		if _, err := cl.Apply(context.Background(), r); err != nil {
			t.Fatalf("apply %s: %v", d, err)
		}
	}
}

func wep(node, pod, ip, labels string) string {
	return fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: ns1, labels: {%s}}
spec: {node: %s, orchestrator: k8s, pod: %s, endpoint: eth0, interfaceName: cali%s, ipNetworks: [%s/32], profiles: [kns.ns1]}
`, labels, node, pod, pod, ip)
}

func policy(from string, port int) string {
	return fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: ns1, name: web}
spec:
  selector: "role == 'server'"
  ingress: [{action: Allow, protocol: TCP, source: {selector: "role == '%s'"}, destination: {ports: [%d]}}]
`, from, port)
}

const (
	profileDoc = `
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.ns1}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
`
	poolDoc = `
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.65.0.0/16, natOutgoing: true}
`
)

type env struct {
	t     *testing.T
	cl    *client.Client
	be    *datastore.Etcd
	fake  *lockedFake
	agent *node.Agent
	stop  func()
}

func newEnv(t *testing.T) *env {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	cl := client.New(be)
	if err := cl.EnsureInitialized(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, cl: cl, be: be, fake: newLockedFake()}
}

// start runs an agent for node h1 on backend be with the env's fake.
func (e *env) start(be datastore.Backend, resync time.Duration) {
	e.t.Helper()
	pol, err := node.NewPolicy(node.PolicyConfig{NodeName: "h1", NFT: e.fake, Driver: nft.Config{}})
	if err != nil {
		e.t.Fatal(err)
	}
	a, err := node.New(node.Config{
		NodeName: "h1", ResyncInterval: resync, MinApplyInterval: 10 * time.Millisecond,
		RetryInterval: 20 * time.Millisecond, HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		DebugAddr: "127.0.0.1:0",
	}, be, pol)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	e.agent = a
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("agent: %v", err)
			}
		})
	}
	e.t.Cleanup(e.stop)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) ready() bool {
	code, _ := get(e.t, "http://"+e.agent.HealthAddr()+"/readiness")
	return code == http.StatusOK
}

// dispatch is the program the wl-to map sends iface's ingress to, or "".
func dispatch(dump, iface string) string {
	m := regexp.MustCompile(`add element inet tortie wl-to \{ ` + iface + ` : jump (\S+) \}`).FindStringSubmatch(dump)
	if m == nil {
		return ""
	}
	return m[1]
}

func TestAgentProgramsAfterInSync(t *testing.T) {
	e := newEnv(t)
	apply(e.t, e.cl, profileDoc, poolDoc, policy("client", 80),
		wep("h1", "a", "10.65.0.2", "role: client"), wep("h1", "b", "10.65.0.3", "role: server"),
		wep("h2", "r", "10.65.1.2", "role: client"))
	// The tiers' watch is held back: the datastore is "not in sync" until
	// it is released.
	tk, _ := v3.KindByKind(v3.KindTier)
	gate := etcdtest.NewGated(e.be, client.KindPrefix(tk, ""))
	e.start(gate, time.Hour)

	// Not in sync: nothing programmed, not ready, but alive.
	time.Sleep(300 * time.Millisecond)
	if d := e.fake.Dump(); d != "" || e.fake.runs.Load() != 0 {
		t.Fatalf("programmed before in sync:\n%s", d)
	}
	if code, body := get(t, "http://"+e.agent.HealthAddr()+"/readiness"); code != http.StatusServiceUnavailable {
		t.Fatalf("readiness before in sync: %d %s", code, body)
	}
	if code, _ := get(t, "http://"+e.agent.HealthAddr()+"/liveness"); code != http.StatusOK {
		t.Fatalf("liveness: %d", code)
	}

	close(gate.Release)
	eventually(t, "ready", e.ready)
	dump := e.fake.Dump()
	progB, progA := dispatch(dump, "calib"), dispatch(dump, "calia")
	if progB == "" || progA == "" {
		t.Fatalf("no dispatch for calia/calib in:\n%s", dump)
	}
	if progA == progB {
		t.Errorf("a and b share program %s although only b is selected by the policy", progA)
	}
	for _, want := range []string{
		"add element inet tortie wl-ifaces { calia }",
		"add element inet tortie wl-ifaces { calib }",
		"add element inet tortie nat-pools-v4 { 10.65.0.0/16 }",
		// The rule's source set holds the clients, the remote one included.
		"10.65.0.2", "10.65.1.2",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "calir") {
		t.Errorf("the remote endpoint's interface is programmed:\n%s", dump)
	}

	// The profiler answers on its own endpoint, not on the others.
	if code, body := get(t, "http://"+e.agent.DebugAddr()+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("profiler: %d %.200s", code, body)
	}
	if _, body := get(t, "http://"+e.agent.MetricsAddr()+"/debug/pprof/"); strings.Contains(body, "Types of profiles") {
		t.Errorf("the metrics endpoint serves the profiler")
	}

	// The metrics endpoint serves the named metrics.
	code, body := get(t, "http://"+e.agent.MetricsAddr()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		"tortie_datastore_in_sync 1", "tortie_ready 1", "tortie_active_endpoints 2", "tortie_active_policies 1",
		"tortie_active_profiles 1", "tortie_active_ip_sets ", "tortie_nft_transactions_total{path=\"nft\"} ",
		"tortie_nft_transaction_failures_total{path=\"nft\"} 0", "tortie_apply_duration_seconds_bucket{component=\"policy\",mode=\"full\"",
		"tortie_sync_latency_seconds_bucket", "tortie_datastore_resyncs_total 0",
		"tortie_datastore_first_sync_seconds ", "tortie_dataplane_first_programmed_seconds ",
		"tortie_datastore_updates_total{kind=\"WorkloadEndpoint\"} 3", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// A policy change updates b's program in place (the driver changes
	// programs by difference, so b's dispatch stays); a's is untouched.
	if strings.Contains(e.fake.Dump(), "8080") {
		t.Fatal("port 8080 is in the ruleset before the change")
	}
	apply(e.t, e.cl, policy("client", 8080))
	eventually(t, "b's program allows 8080", func() bool { return strings.Contains(e.fake.Dump(), "8080") })
	if got := dispatch(e.fake.Dump(), "calib"); got != progB {
		t.Errorf("b's dispatch changed from %s to %s", progB, got)
	}
	if got := dispatch(e.fake.Dump(), "calia"); got != progA {
		t.Errorf("a's program changed from %s to %s", progA, got)
	}
	// A deleted endpoint leaves the dispatch maps.
	wk, _ := v3.KindByKind(v3.KindWorkloadEndpoint)
	if _, err := e.cl.Delete(context.Background(), wk, "ns1", "h1-k8s-a-eth0", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a removed", func() bool { return !strings.Contains(e.fake.Dump(), "calia") })
	_, body = get(t, "http://"+e.agent.MetricsAddr()+"/metrics")
	if !strings.Contains(body, "tortie_active_endpoints 1") {
		t.Errorf("active endpoints not 1 after the delete")
	}
	if !regexp.MustCompile(`tortie_sync_latency_seconds_count [1-9]`).MatchString(body) {
		t.Errorf("no sync latency observed")
	}
}

func TestAgentRepairsDriftAndRecoversFromFailure(t *testing.T) {
	e := newEnv(t)
	apply(e.t, e.cl, profileDoc, policy("client", 80), wep("h1", "a", "10.65.0.2", "role: client"),
		wep("h1", "b", "10.65.0.3", "role: server"))
	e.start(e.be, 200*time.Millisecond)
	eventually(t, "ready", e.ready)
	want := e.fake.Dump()

	// Drift by hand: an element of the dispatch map is deleted.
	tx := e.fake.NewTransaction()
	tx.Delete(&knftables.Element{Map: "wl-to", Key: []string{"calib"}})
	if err := e.fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if dispatch(e.fake.Dump(), "calib") != "" {
		t.Fatal("drift not made")
	}
	eventually(t, "the periodic resync to repair the drift", func() bool { return e.fake.Dump() == want })

	// nft refuses: not ready, then ready again once it accepts.
	e.fake.fail.Store(true)
	apply(e.t, e.cl, policy("client", 81))
	eventually(t, "not ready", func() bool { return !e.ready() })
	_, why := e.agent.Ready()
	if !strings.Contains(why, "injected") {
		t.Errorf("not-ready reason %q does not say why", why)
	}
	e.fake.fail.Store(false)
	eventually(t, "ready again", e.ready)
	if d := e.fake.Dump(); d == want || !strings.Contains(d, "81") {
		t.Errorf("the change made while nft failed was not applied:\n%s", d)
	}
	_, body := get(t, "http://"+e.agent.MetricsAddr()+"/metrics")
	if !regexp.MustCompile(`tortie_nft_transaction_failures_total\{path="nft"\} [1-9]`).MatchString(body) ||
		!regexp.MustCompile(`tortie_apply_failures_total\{component="policy"\} [1-9]`).MatchString(body) {
		t.Errorf("failures not counted:\n%s", grep(body, "failures"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestAgentRestartReconcilesInPlace(t *testing.T) {
	e := newEnv(t)
	apply(e.t, e.cl, profileDoc, poolDoc, policy("client", 80), wep("h1", "a", "10.65.0.2", "role: client"),
		wep("h1", "b", "10.65.0.3", "role: server"))
	e.start(e.be, time.Hour)
	eventually(t, "ready", e.ready)
	e.stop()
	before := e.fake.Dump()

	// A new agent on the same table: same ruleset, and not by flushing:
	// its transactions never delete the table, flush a base chain or
	// re-add what is there.
	var txs []string
	rec := &recordingNFT{lockedFake: e.fake, txs: &txs}
	pol, err := node.NewPolicy(node.PolicyConfig{NodeName: "h1", NFT: rec})
	if err != nil {
		t.Fatal(err)
	}
	a, err := node.New(node.Config{NodeName: "h1", ResyncInterval: time.Hour}, e.be, pol)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "second agent ready", func() bool { ok, _ := a.Ready(); return ok })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after := e.fake.Dump(); after != before {
		t.Fatalf("ruleset changed across a restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, tx := range txs {
		for _, bad := range []string{"flush table", "delete table", "destroy table", "flush chain inet tortie filter-forward"} {
			if strings.Contains(tx, bad) {
				t.Errorf("restart transaction contains %q:\n%s", bad, tx)
			}
		}
	}
}

// recordingNFT records the text of every transaction.
type recordingNFT struct {
	*lockedFake
	txs *[]string
}

func (r *recordingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	*r.txs = append(*r.txs, tx.String())
	return r.lockedFake.Run(ctx, tx)
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []node.Config{
		{},
		{NodeName: "h1", MinApplyInterval: -1},
		{NodeName: "h1", RetryInterval: time.Minute, MaxRetryInterval: time.Second},
	} {
		if err := c.Defaults().Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (node.Config{NodeName: "h1"}).Defaults().Validate(); err != nil {
		t.Error(err)
	}
	// A port in use is an error from New, not a silent failure later.
	e := newEnv(t)
	pol, _ := node.NewPolicy(node.PolicyConfig{NodeName: "h1", NFT: e.fake})
	a, err := node.New(node.Config{NodeName: "h1", HealthAddr: "127.0.0.1:0"}, e.be, pol)
	if err != nil {
		t.Fatal(err)
	}
	pol2, _ := node.NewPolicy(node.PolicyConfig{NodeName: "h1", NFT: e.fake})
	if _, err := node.New(node.Config{NodeName: "h1", HealthAddr: a.HealthAddr()}, e.be, pol2); err == nil {
		t.Error("second agent on the same health port: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = a.Run(ctx) // closes the listener
}

// routesStandIn is what the routing half will plug in: a component with
// kinds of its own, a goroutine and a status page.
type routesStandIn struct {
	mu      sync.Mutex
	kinds   map[string]int
	inSync  bool
	applies int
	fulls   int
	ran     atomic.Bool
}

func (r *routesStandIn) Name() string    { return "routes" }
func (r *routesStandIn) Kinds() []string { return []string{v3.KindNode, v3.KindIPPool} }
func (r *routesStandIn) OnUpdate(u syncer.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kinds[u.Kind]++
}
func (r *routesStandIn) OnInSync() { r.mu.Lock(); r.inSync = true; r.mu.Unlock() }
func (r *routesStandIn) Apply(_ context.Context, full bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.inSync {
		panic("apply before in sync")
	}
	r.applies++
	if full {
		r.fulls++
	}
	return nil
}
func (r *routesStandIn) Run(ctx context.Context) error { r.ran.Store(true); <-ctx.Done(); return nil }
func (r *routesStandIn) ServeStatus(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(w, "applies %d\n", r.applies)
}

func TestAgentRunsFurtherComponents(t *testing.T) {
	e := newEnv(t)
	apply(e.t, e.cl, profileDoc, poolDoc, wep("h1", "a", "10.65.0.2", "role: client"), `
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: h1}
spec: {bgp: {ipv4Address: 192.0.2.1/24}}
`)
	rs := &routesStandIn{kinds: map[string]int{}}
	pol, err := node.NewPolicy(node.PolicyConfig{NodeName: "h1", NFT: e.fake})
	if err != nil {
		t.Fatal(err)
	}
	a, err := node.New(node.Config{NodeName: "h1", ResyncInterval: time.Hour, HealthAddr: "127.0.0.1:0"}, e.be, pol, rs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "ready", func() bool { ok, _ := a.Ready(); return ok })
	if !rs.ran.Load() {
		t.Error("Run not started")
	}
	rs.mu.Lock()
	if rs.kinds[v3.KindNode] != 1 || rs.kinds[v3.KindIPPool] != 1 || len(rs.kinds) != 2 {
		t.Errorf("routes got %v, want one Node and one IPPool only", rs.kinds)
	}
	if rs.applies != 1 || rs.fulls != 1 {
		t.Errorf("applies %d (full %d), want one full apply", rs.applies, rs.fulls)
	}
	rs.mu.Unlock()
	if code, body := get(t, "http://"+a.HealthAddr()+"/status/routes"); code != 200 || body != "applies 1\n" {
		t.Errorf("status page: %d %q", code, body)
	}
	// A workload change is the policy component's business only.
	apply(e.t, e.cl, wep("h1", "b", "10.65.0.3", "role: server"))
	eventually(t, "b programmed", func() bool { return strings.Contains(e.fake.Dump(), "calib") })
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.applies != 1 {
		t.Errorf("routes applied %d times, want 1: it got no update", rs.applies)
	}
}
