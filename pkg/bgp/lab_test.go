package bgp

// The lab: network namespaces joined by a bridge, one speaker process per
// namespace.
//
// Why a process per namespace: a socket belongs to the network namespace of
// the thread that creates it. GoBGP creates its listeners on its own server
// goroutine but dials every peer from goroutines its FSM starts, and the Go
// runtime never runs a new goroutine on a thread whose namespace was changed
// (it starts new threads from a clean template thread). A server started on
// a goroutine locked into a namespace would listen there and dial from the
// host. So each speaker runs in a child process — this test binary again,
// in child mode — started by `ip netns exec`, which enters the namespace
// before exec: every thread of the child is in it. TestNetnsBinding proves
// it from both sides (every thread's namespace, and whose sockets ss sees).
//
// The parent drives each child over stdin/stdout with one JSON object per
// line: commands in, replies and route events out.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
)

const childEnv = "TORTIE_BGP_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

type childCmd struct {
	ID      int
	Op      string          // start, peers, adverts, status, routes, stop, proof
	Config  *Config         `json:",omitempty"`
	Peers   []Peer          `json:",omitempty"`
	Adverts []Advertisement `json:",omitempty"`
}

type childMsg struct {
	ID     int
	Err    string       `json:",omitempty"`
	Event  *RouteEvent  `json:",omitempty"`
	At     time.Time    `json:",omitempty"` // when the child saw Event
	Peers  []PeerStatus `json:",omitempty"`
	Routes []Route      `json:",omitempty"`
	Proof  *nsProof     `json:",omitempty"`
}

// nsProof is what a child reports about its own namespaces.
type nsProof struct {
	PID     int
	Threads map[string]int // net namespace link ("net:[inode]") → number of threads in it
}

// childMain runs one speaker driven by stdin. It returns when stdin closes.
func childMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var outMu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	send := func(m childMsg) {
		outMu.Lock()
		defer outMu.Unlock()
		if err := enc.Encode(m); err != nil {
			log.Error("write to parent", "err", err)
		}
	}
	var sp *Speaker
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var c childCmd
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			send(childMsg{Err: "bad command: " + err.Error()})
			continue
		}
		r := childMsg{ID: c.ID}
		var err error
		switch c.Op {
		case "start":
			cfg := *c.Config
			cfg.Logger = log
			if sp, err = New(cfg); err == nil {
				err = sp.Start(context.Background())
				go func(ch <-chan RouteEvent) {
					for ev := range ch {
						send(childMsg{Event: &ev, At: time.Now()})
					}
				}(sp.Routes())
			}
		case "peers":
			err = sp.SetPeers(context.Background(), c.Peers)
		case "adverts":
			err = sp.SetAdvertisements(c.Adverts)
		case "status":
			r.Peers = sp.Peers()
		case "routes":
			r.Routes = sp.LearnedRoutes()
		case "stop":
			err = sp.Stop()
		case "proof":
			r.Proof, err = proveNamespace()
		default:
			err = fmt.Errorf("unknown op %q", c.Op)
		}
		if err != nil {
			r.Err = err.Error()
		}
		send(r)
	}
	return 0
}

func proveNamespace() (*nsProof, error) {
	p := &nsProof{PID: os.Getpid(), Threads: map[string]int{}}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		link, err := os.Readlink(filepath.Join("/proc/self/task", t.Name(), "ns/net"))
		if err != nil {
			continue // thread exited meanwhile
		}
		p.Threads[link]++
	}
	return p, nil
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// lab is a switch namespace with a bridge and n host namespaces, host i
// (from 1) at 10.99.0.i/24 and fd00:99::i/64.
type lab struct {
	t     testing.TB
	id    string
	sw    string
	hosts []string
}

func newLab(t testing.TB, n int) *lab {
	t.Helper()
	testenv.RequireRoot(t)
	b := make([]byte, 3)
	rand.Read(b)
	l := &lab{t: t, id: hex.EncodeToString(b)}
	l.sw = "tbgp" + l.id + "sw"
	t.Cleanup(func() {
		for _, ns := range append([]string{l.sw}, l.hosts...) {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	run(t, "ip", "netns", "add", l.sw)
	run(t, "ip", "-n", l.sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", l.sw, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("tbgp%sh%d", l.id, i)
		l.hosts = append(l.hosts, ns)
		port := fmt.Sprintf("p%d", i)
		run(t, "ip", "netns", "add", ns)
		run(t, "ip", "-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		run(t, "ip", "-n", l.sw, "link", "set", port, "master", "br0", "up")
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
		run(t, "ip", "-n", ns, "addr", "add", l.v4(i).String()+"/24", "dev", "eth0")
		run(t, "ip", "-n", ns, "addr", "add", l.v6(i).String()+"/64", "dev", "eth0", "nodad")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	return l
}

func (l *lab) v4(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 99, 0, byte(i)}) }
func (l *lab) v6(i int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:99::%d", i))
}
func (l *lab) ns(i int) string { return l.hosts[i-1] }

// node is a speaker process in one of the lab's namespaces.
type node struct {
	t      testing.TB
	name   string
	ns     string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	logf   string
	exited chan struct{}

	mu      sync.Mutex
	nextID  int
	pending map[int]chan childMsg
	history []timedEvent
	changed chan struct{} // closed and replaced on every new event
}

type timedEvent struct {
	RouteEvent
	At time.Time
}

// spawn starts a speaker process in host i's namespace (not yet a running
// speaker: send "start").
func (l *lab) spawn(i int) *node {
	t := l.t
	t.Helper()
	n := &node{t: t, name: fmt.Sprintf("h%d", i), ns: l.ns(i), pending: map[int]chan childMsg{},
		changed: make(chan struct{}), exited: make(chan struct{})}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	n.logf = filepath.Join(t.TempDir(), n.name+".log")
	logFile, err := os.Create(n.logf)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command("ip", "netns", "exec", n.ns, exe, "-test.run=^$")
	n.cmd.Env = append(os.Environ(), childEnv+"=1")
	n.cmd.Stderr = logFile
	n.stdin, _ = n.cmd.StdinPipe()
	stdout, _ := n.cmd.StdoutPipe()
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		dec := json.NewDecoder(stdout)
		for {
			var m childMsg
			if err := dec.Decode(&m); err != nil {
				break
			}
			n.mu.Lock()
			if m.Event != nil {
				n.history = append(n.history, timedEvent{*m.Event, m.At})
				close(n.changed)
				n.changed = make(chan struct{})
			} else if ch := n.pending[m.ID]; ch != nil {
				ch <- m
				delete(n.pending, m.ID)
			}
			n.mu.Unlock()
		}
		n.cmd.Wait()
		logFile.Close()
		close(n.exited)
	}()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			b, _ := os.ReadFile(n.logf)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- %s log tail ---\n%s", n.name, b)
		}
	})
	return n
}

// kill ends the process at once: no NOTIFICATION, the kernel closes its sockets.
func (n *node) kill() {
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

func (n *node) call(c childCmd) childMsg {
	n.t.Helper()
	ch := make(chan childMsg, 1)
	n.mu.Lock()
	n.nextID++
	c.ID = n.nextID
	n.pending[c.ID] = ch
	n.mu.Unlock()
	b, _ := json.Marshal(c)
	if _, err := n.stdin.Write(append(b, '\n')); err != nil {
		n.t.Fatalf("%s: %s: %v", n.name, c.Op, err)
	}
	select {
	case m := <-ch:
		return m
	case <-n.exited:
		n.t.Fatalf("%s: process exited during %s", n.name, c.Op)
	case <-time.After(30 * time.Second):
		n.t.Fatalf("%s: %s: no reply", n.name, c.Op)
	}
	return childMsg{}
}

func (n *node) must(c childCmd) childMsg {
	n.t.Helper()
	m := n.call(c)
	if m.Err != "" {
		n.t.Fatalf("%s: %s: %s", n.name, c.Op, m.Err)
	}
	return m
}

func (n *node) start(cfg Config)    { n.t.Helper(); n.must(childCmd{Op: "start", Config: &cfg}) }
func (n *node) setPeers(ps ...Peer) { n.t.Helper(); n.must(childCmd{Op: "peers", Peers: ps}) }
func (n *node) setAdverts(as ...Advertisement) {
	n.t.Helper()
	n.must(childCmd{Op: "adverts", Adverts: as})
}
func (n *node) status() []PeerStatus               { n.t.Helper(); return n.must(childCmd{Op: "status"}).Peers }
func (n *node) routes() []Route                    { n.t.Helper(); return n.must(childCmd{Op: "routes"}).Routes }
func (n *node) stop()                              { n.t.Helper(); n.must(childCmd{Op: "stop"}) }
func (n *node) proof() *nsProof                    { n.t.Helper(); return n.must(childCmd{Op: "proof"}).Proof }
func (n *node) peerStatus(a netip.Addr) PeerStatus { return findStatus(n.status(), a) }

func findStatus(ss []PeerStatus, a netip.Addr) PeerStatus {
	for _, s := range ss {
		if s.Address == a {
			return s
		}
	}
	return PeerStatus{}
}

// eventsSince returns the route events seen from index i on, and the index
// to continue from.
func (n *node) eventsSince(i int) ([]timedEvent, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]timedEvent(nil), n.history[i:]...), len(n.history)
}

func (n *node) mark() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.history)
}

// waitEvent waits for an event from index i on that satisfies pred.
func (n *node) waitEvent(i int, timeout time.Duration, what string, pred func(RouteEvent) bool) timedEvent {
	n.t.Helper()
	deadline := time.After(timeout)
	for {
		n.mu.Lock()
		for ; i < len(n.history); i++ {
			if pred(n.history[i].RouteEvent) {
				ev := n.history[i]
				n.mu.Unlock()
				return ev
			}
		}
		ch := n.changed
		n.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			n.t.Fatalf("%s: no event %s within %s", n.name, what, timeout)
		}
	}
}

// eventually polls cond every 100ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %s: %s", what, timeout, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *node) waitEstablished(timeout time.Duration, peers ...netip.Addr) {
	n.t.Helper()
	eventually(n.t, timeout, n.name+" sessions Established", func() (bool, string) {
		ss := n.status()
		for _, p := range peers {
			if s := findStatus(ss, p); !s.Established() {
				return false, fmt.Sprintf("%+v", ss)
			}
		}
		return true, ""
	})
}

func findRoute(rs []Route, p netip.Prefix) (Route, bool) {
	for _, r := range rs {
		if r.Prefix == p {
			return r, true
		}
	}
	return Route{}, false
}

// waitRoute waits until the speaker's learned table has p with next hop nh.
func (n *node) waitRoute(timeout time.Duration, p netip.Prefix, nh netip.Addr) Route {
	n.t.Helper()
	var got Route
	eventually(n.t, timeout, n.name+" learns "+p.String(), func() (bool, string) {
		rs := n.routes()
		r, ok := findRoute(rs, p)
		got = r
		return ok && r.NextHop == nh && !r.Stale, fmt.Sprintf("%+v", rs)
	})
	return got
}

// testTimers are short so that the suite runs in minutes: GoBGP counts in
// whole seconds, dials at the earliest 1.5–2s after a peer is added, and
// sits 5s in Idle after a session drops.
const (
	testHold      = 6 * time.Second
	testKeepalive = 2 * time.Second
	testRetry     = 2 * time.Second
)

func testConfig(l *lab, i int) Config {
	return Config{RouterID: l.v4(i), ASN: 64512, ConnectRetry: testRetry}
}

// meshPeer is host j as seen from host i in a Calico full mesh.
func meshPeer(l *lab, i, j int) Peer {
	return Peer{
		Address: l.v4(j), ASN: 64512, Type: PeerTypeMesh,
		Passive:  l.v4(i).Compare(l.v4(j)) > 0, // the higher address waits
		HoldTime: testHold, KeepaliveTime: testKeepalive,
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
