package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
)

// lab is one host namespace with workloads, linked to the root namespace.
type lab struct {
	t                  *testing.T
	host               string // netns name
	rootIP, hostIP     netip.Addr
	wls                map[string]ns.NetNS
	bin, etcdURL, data string
	agent              *exec.Cmd
	agentExited        chan struct{}
	agentLog           string
	etcd               *embedded.Server
	starts             int
	mtuFile            string // the agent's workload MTU file
}

const (
	ipA = "10.65.0.2" // client a
	ipB = "10.65.0.3" // server b, ports 80 and 81
	ipC = "10.65.0.4" // client c
)

func newLab(t *testing.T) *lab {
	_, hn := testenv.NewNS(t)
	l := &lab{t: t, host: hn, wls: map[string]ns.NetNS{}, mtuFile: filepath.Join(t.TempDir(), "mtu")}
	testenv.Sh(t, "ip", "-n", hn, "link", "set", "lo", "up")
	testenv.Sh(t, "ip", "netns", "exec", hn, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	// A /30 out of 198.18.0.0/15 (benchmarking space), chosen per run.
	k := rand.IntN(1 << 15)
	base := netip.AddrFrom4([4]byte{198, 18 + byte(k>>14), byte(k >> 6), byte(k<<2) & 0xfc})
	l.rootIP, l.hostIP = base.Next(), base.Next().Next()
	root := fmt.Sprintf("tn%08x", rand.Uint32())
	testenv.Sh(t, "ip", "link", "add", root, "type", "veth", "peer", "name", "up0", "netns", hn)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", root).Run() })
	testenv.Sh(t, "ip", "addr", "add", l.rootIP.String()+"/30", "dev", root)
	testenv.Sh(t, "ip", "link", "set", root, "up")
	testenv.Sh(t, "ip", "-n", hn, "addr", "add", l.hostIP.String()+"/30", "dev", "up0")
	testenv.Sh(t, "ip", "-n", hn, "link", "set", "up0", "up")

	testenv.PlumbHost(t, hn)
	for iface, addr := range map[string]string{"calia": ipA, "calib": ipB, "calic": ipC} {
		l.wls[iface] = testenv.PlumbWorkload(t, hn, iface, addr)
	}
	return l
}

// serveEtcd starts the embedded etcd on the lab's data dir at url.
func (l *lab) serveEtcd(url string) *embedded.Server {
	l.t.Helper()
	srv, err := embedded.Serve(context.Background(), embedded.ServeConfig{DataDir: l.data, ListenClientURL: url})
	if err != nil {
		l.t.Fatalf("etcd at %s: %v", url, err)
	}
	return srv
}

func freePort(t *testing.T, ip netip.Addr) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func connect(t *testing.T, url string) (*datastore.Etcd, *client.Client) {
	t.Helper()
	be, err := datastore.New(datastore.Config{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	cl := client.New(be)
	if err := cl.EnsureInitialized(context.Background()); err != nil {
		t.Fatal(err)
	}
	return be, cl
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

func wep(pod, ip, role string) string {
	return fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: ns1, labels: {role: %s}}
spec: {node: host1, orchestrator: k8s, pod: %s, endpoint: eth0, interfaceName: cali%s, ipNetworks: [%s/32], profiles: [kns.ns1]}
`, role, pod, pod, ip)
}

// allowFrom is the policy on the server: TCP 80 from role `from`, nothing
// else (a policy selecting it in the default tier denies what it does not
// allow).
func allowFrom(from string) string {
	return fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: ns1, name: web}
spec:
  selector: "role == 'server'"
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, source: {selector: "role == '%s'"}, destination: {ports: [80]}}]
`, from)
}

// netset is written and deleted during the etcd outage so that the history
// after the policy change is compacted away too.
const netset = `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: scratch}
spec: {nets: [192.0.2.0/24]}
`

const profile = `
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.ns1}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
`

// startAgent runs tortie-node in the host namespace and returns when it
// is ready, with how long that took from exec.
func (l *lab) startAgent() time.Duration {
	l.t.Helper()
	return l.startAgentWith(9099, nil, "--resync-interval", "1s", "--log-level", "debug",
		"--health-addr", ":9099", "--metrics-addr", ":9091") // read from the root namespace
}

// startAgentWith runs tortie-node with args (and env added to this
// process's) and waits for /readiness on healthPort of the host address.
func (l *lab) startAgentWith(healthPort int, env []string, args ...string) time.Duration {
	l.t.Helper()
	l.starts++
	logf, err := os.Create(filepath.Join(l.t.TempDir(), fmt.Sprintf("agent-%d.log", l.starts)))
	if err != nil {
		l.t.Fatal(err)
	}
	l.agentLog = logf.Name()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.host, l.bin,
		"--node-name", "host1", "--etcd-endpoints", l.etcdURL,
		"--nodename-file", "-", "--mtu-file", l.mtuFile}, args...)...) // the machine's own /var/lib/tortie is not the test's
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	l.agent, l.agentExited = cmd, exited
	l.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if l.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			l.t.Logf("agent log %s (last 4KB):\n%s", logf.Name(), tail(b, 4096))
		}
	})
	l.waitReadyOn(healthPort, 30*time.Second)
	return time.Since(t0)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (l *lab) httpGet(port int, path string) (int, string) {
	c := http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get(fmt.Sprintf("http://%s%s", net.JoinHostPort(l.hostIP.String(), strconv.Itoa(port)), path))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (l *lab) waitReady(timeout time.Duration) { l.t.Helper(); l.waitReadyOn(9099, timeout) }

func (l *lab) waitReadyOn(port int, timeout time.Duration) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if code, _ := l.httpGet(port, "/readiness"); code == http.StatusOK {
			return
		}
		select {
		case <-l.agentExited:
			l.t.Fatal("agent exited")
		default:
		}
		if time.Now().After(deadline) {
			l.t.Fatal("agent not ready in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *lab) ruleset() string {
	return testenv.Sh(l.t, "ip", "netns", "exec", l.host, "nft", "list", "table", "inet", "tortie")
}

// connects reports whether a TCP connect from workload `from` to addr
// succeeds within timeout.
func (l *lab) connects(from, addr string, timeout time.Duration) bool {
	ok := false
	_ = l.wls[from].Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			ok = true
			c.Close()
		}
		return nil
	})
	return ok
}

// expect checks the verdicts of the three interesting flows.
func (l *lab) expect(what string, aTo80, cTo80 bool) {
	l.t.Helper()
	const timeout = 300 * time.Millisecond
	if got := l.connects("calia", ipB+":80", timeout); got != aTo80 {
		l.t.Errorf("%s: a -> b:80 connects = %v, want %v", what, got, aTo80)
	}
	if got := l.connects("calic", ipB+":80", timeout); got != cTo80 {
		l.t.Errorf("%s: c -> b:80 connects = %v, want %v", what, got, cTo80)
	}
	if l.connects("calia", ipB+":81", timeout) || l.connects("calic", ipB+":81", timeout) {
		l.t.Errorf("%s: b:81 reachable, want denied", what)
	}
}

// waitConnects probes until from reaches addr, and returns when it did.
func (l *lab) waitConnects(from, addr string, timeout time.Duration) time.Time {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l.connects(from, addr, 10*time.Millisecond) {
			return time.Now()
		}
	}
	l.t.Fatalf("%s never reached %s", from, addr)
	return time.Time{}
}

// server listens on b:80 and b:81, counting what it receives.
type server struct{ received atomic.Int64 }

func (l *lab) serve(s *server) {
	l.t.Helper()
	err := l.wls["calib"].Do(func(ns.NetNS) error {
		for _, port := range []string{"80", "81"} {
			ln, err := net.Listen("tcp", net.JoinHostPort(ipB, port))
			if err != nil {
				return err
			}
			l.t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						buf := make([]byte, 4096)
						for {
							n, err := c.Read(buf)
							s.received.Add(int64(n))
							if err != nil {
								return
							}
						}
					}()
				}
			}()
		}
		return nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
}

// stream is a long-lived connection sending bytes every 10ms.
type stream struct {
	sent   atomic.Int64
	err    atomic.Pointer[error]
	cancel context.CancelFunc
}

func (l *lab) startStream(from, addr string) *stream {
	l.t.Helper()
	var conn net.Conn
	if err := l.wls[from].Do(func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, time.Second)
		return err
	}); err != nil {
		l.t.Fatalf("stream %s -> %s: %v", from, addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{cancel: cancel}
	l.t.Cleanup(func() { cancel(); conn.Close() })
	go func() {
		buf := bytes.Repeat([]byte("x"), 1024)
		for ctx.Err() == nil {
			_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := conn.Write(buf); err != nil {
				if ctx.Err() == nil {
					s.err.Store(&err)
				}
				return
			}
			s.sent.Add(int64(len(buf)))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return s
}

// flowing checks that the stream and the server make progress for d.
func (l *lab) flowing(what string, st *stream, srv *server, d time.Duration) {
	l.t.Helper()
	s0, r0 := st.sent.Load(), srv.received.Load()
	time.Sleep(d)
	if e := st.err.Load(); e != nil {
		l.t.Fatalf("%s: stream broke: %v", what, *e)
	}
	if st.sent.Load() <= s0 || srv.received.Load() <= r0 {
		l.t.Fatalf("%s: stream stalled (sent %d -> %d, received %d -> %d)", what, s0, st.sent.Load(), r0, srv.received.Load())
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// newAgentLab is a lab with the agent built and an etcd serving on the root
// side of the host's link (needs root and nft).
func newAgentLab(t *testing.T) (*lab, *datastore.Etcd, *client.Client) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		testenv.Missing(t, "the nft binary (scripts/install-deps.sh installs nftables)")
	}
	l := newLab(t)
	l.bin = filepath.Join(t.TempDir(), "tortie-node")
	if out, err := exec.Command("go", "build", "-o", l.bin, "github.com/tortie/tortie/cmd/tortie-node").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	l.data = t.TempDir()
	l.etcdURL = fmt.Sprintf("http://%s", net.JoinHostPort(l.rootIP.String(), strconv.Itoa(freePort(t, l.rootIP))))
	l.etcd = l.serveEtcd(l.etcdURL)
	t.Cleanup(func() { l.etcd.Close() })
	be, cl := connect(t, l.etcdURL)
	return l, be, cl
}

func TestAgentEndToEnd(t *testing.T) {
	l, be, cl := newAgentLab(t)
	apply(t, cl, profile, wep("a", ipA, "a"), wep("b", ipB, "server"), wep("c", ipC, "c"), allowFrom("a"))
	srvCounts := &server{}
	l.serve(srvCounts)

	// Cold start: exec to ready.
	cold := l.startAgent()
	t.Logf("cold start (exec to /readiness 200): %v", cold)
	l.expect("initial policy", true, false)
	if code, body := l.httpGet(9091, "/metrics"); code != 200 || !strings.Contains(body, "tortie_active_endpoints 3") {
		t.Errorf("metrics: %d, active endpoints line: %q", code, grepLine(body, "tortie_active_endpoints"))
	}

	// Policy changes: time from the write to the first probe that sees the
	// new verdict (the newly allowed client connecting).
	var lat []time.Duration
	from := "a"
	for i := 0; i < 10; i++ {
		next, probe := "c", "calic"
		if from == "c" {
			next, probe = "a", "calia"
		}
		t0 := time.Now()
		apply(t, cl, allowFrom(next))
		lat = append(lat, l.waitConnects(probe, ipB+":80", 5*time.Second).Sub(t0))
		from = next
	}
	if from != "a" {
		t.Fatal("odd number of flips")
	}
	apply(t, cl, allowFrom("c"))
	l.waitConnects("calic", ipB+":80", 5*time.Second)
	l.expect("policy changed to c", false, true)
	t.Logf("policy change to enforcement over %d changes: p50 %v, max %v (all: %v)", len(lat),
		percentile(lat, 0.5), percentile(lat, 1), lat)

	// SIGKILL while a stream runs through an allowed path.
	st := l.startStream("calic", ipB+":80")
	l.flowing("before the kill", st, srvCounts, 300*time.Millisecond)
	time.Sleep(1500 * time.Millisecond) // a periodic resync removes what old programs left
	before := l.ruleset()
	if err := l.agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-l.agentExited
	l.flowing("agent down", st, srvCounts, 500*time.Millisecond)
	l.expect("agent down", false, true)
	restart := l.startAgent()
	t.Logf("restart (exec to ready, table in place): %v", restart)
	if after := l.ruleset(); after != before {
		t.Fatalf("ruleset changed across the restart:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	l.flowing("after the restart", st, srvCounts, 300*time.Millisecond)
	l.expect("after the restart", false, true)

	// etcd goes away: nothing changes in the kernel.
	be.Close()
	l.etcd.Close()
	l.flowing("etcd down", st, srvCounts, 2*time.Second)
	l.expect("etcd down", false, true)
	if code, _ := l.httpGet(9099, "/liveness"); code != http.StatusOK {
		t.Errorf("liveness while etcd is down: %d", code)
	}
	// Meanwhile, where the agent cannot see it, the policy changes back
	// to a and the history is compacted: the agent must relist.
	private := l.serveEtcd(fmt.Sprintf("http://127.0.0.1:%d", freePort(t, netip.MustParseAddr("127.0.0.1"))))
	pbe, pcl := connect(t, private.Endpoint())
	apply(t, pcl, allowFrom("a"), netset)
	gk, _ := v3.KindByKind(v3.KindGlobalNetworkSet)
	if _, err := pcl.Delete(context.Background(), gk, "", "scratch", 0); err != nil {
		t.Fatal(err)
	}
	_, rev, err := pbe.List(context.Background(), client.ResourcePrefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pbe.Client().Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	pbe.Close()
	private.Close()
	l.expect("etcd still away from the agent", false, true)

	t0 := time.Now()
	srv := l.serveEtcd(l.etcdURL)
	t.Cleanup(func() { srv.Close() })
	seen := l.waitConnects("calia", ipB+":80", 60*time.Second)
	t.Logf("etcd back: change made during the outage enforced %v after the server restarted", seen.Sub(t0))
	l.expect("after etcd came back", true, false)
	_, body := l.httpGet(9091, "/metrics")
	if !regexp.MustCompile(`tortie_datastore_resyncs_total [1-9]`).MatchString(body) {
		t.Errorf("no resync counted: %q", grepLine(body, "tortie_datastore_resyncs_total"))
	}
	// The established stream was allowed when it started: conntrack keeps it.
	l.flowing("at the end", st, srvCounts, 300*time.Millisecond)
}

func grepLine(s, prefix string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}
