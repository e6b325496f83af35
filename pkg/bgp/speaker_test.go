package bgp

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
)

// twoNodes starts speakers on hosts 1 and 2 of l, meshed, each advertising
// a v4 and a v6 block (the v6 one with an explicit v6 next hop: it rides the
// IPv4 session).
func twoNodes(t *testing.T, l *lab, mod func(i int, p *Peer)) (a, b *node) {
	nodes := []*node{l.spawn(1), l.spawn(2)}
	for i, n := range nodes {
		h := i + 1
		n.start(testConfig(l, h))
		p := meshPeer(l, h, 3-h)
		if mod != nil {
			mod(h, &p)
		}
		n.setPeers(p)
		n.setAdverts(
			Advertisement{Prefix: pfx(fmt.Sprintf("10.244.%d.0/26", h))},
			Advertisement{Prefix: pfx(fmt.Sprintf("fd00:244:%d::/122", h)), NextHop: l.v6(h), Communities: []string{"64512:100", "64512:1:2"}},
		)
	}
	return nodes[0], nodes[1]
}

func TestTwoSpeakers(t *testing.T) {
	l := newLab(t, 2)
	t0 := time.Now()
	a, b := twoNodes(t, l, nil)
	a.waitEstablished(20*time.Second, l.v4(2))
	tEst := time.Since(t0)
	b.waitEstablished(5*time.Second, l.v4(1))

	r := a.waitRoute(10*time.Second, pfx("10.244.2.0/26"), l.v4(2))
	if r.Peer != l.v4(2) || r.Family != IPv4Unicast {
		t.Errorf("a's route to b's v4 block: %+v", r)
	}
	r = a.waitRoute(10*time.Second, pfx("fd00:244:2::/122"), l.v6(2))
	if r.Peer != l.v4(2) || r.Family != IPv6Unicast {
		t.Errorf("a's route to b's v6 block: %+v", r)
	}
	b.waitRoute(10*time.Second, pfx("10.244.1.0/26"), l.v4(1))
	b.waitRoute(10*time.Second, pfx("fd00:244:1::/122"), l.v6(1))
	// Route events reach the test over the child's stream, which may be
	// behind the routes it answers with: wait for the first.
	first := a.waitEvent(0, 10*time.Second, "a's first route event", func(RouteEvent) bool { return true })
	t.Logf("timing: both started → a Established %v (polled), first route event at a %v",
		tEst.Round(time.Millisecond), first.At.Sub(t0).Round(time.Millisecond))
	if rs := a.routes(); len(rs) != 2 {
		t.Errorf("a learned %d routes, want b's 2 (never its own): %+v", len(rs), rs)
	}

	st := a.peerStatus(l.v4(2))
	if st.Type != PeerTypeMesh || st.State != StateEstablished || st.Since.IsZero() || st.Since.Before(t0) || st.Info != "" {
		t.Errorf("a's status of b: %+v", st)
	}

	// Withdraw: b stops announcing its v6 block.
	m := a.mark()
	b.setAdverts(Advertisement{Prefix: pfx("10.244.2.0/26")})
	a.waitEvent(m, 10*time.Second, "withdraw of fd00:244:2::/122", func(ev RouteEvent) bool {
		return ev.Withdrawn && ev.Route.Prefix == pfx("fd00:244:2::/122")
	})
	if _, ok := findRoute(a.routes(), pfx("10.244.2.0/26")); !ok {
		t.Error("a lost b's v4 block when b withdrew only its v6 block")
	}

	// Relabelling a peer does not touch its session.
	m = a.mark()
	p := meshPeer(l, 1, 2)
	p.Type = PeerTypeGlobal
	a.setPeers(p)
	if st := a.peerStatus(l.v4(2)); st.Type != PeerTypeGlobal || st.State != StateEstablished {
		t.Errorf("after relabel: %+v", st)
	}

	// Peer removal tears the session down and withdraws what it brought.
	a.setPeers()
	a.waitEvent(m, 10*time.Second, "withdraw of 10.244.2.0/26", func(ev RouteEvent) bool {
		return ev.Withdrawn && ev.Route.Prefix == pfx("10.244.2.0/26")
	})
	if ss := a.status(); len(ss) != 0 {
		t.Errorf("a still reports peers after removal: %+v", ss)
	}
	eventually(t, 10*time.Second, "b sees the session go", func() (bool, string) {
		st := b.peerStatus(l.v4(1))
		return st.State != StateEstablished && st.State != "", fmt.Sprintf("%+v", st)
	})
	st = b.peerStatus(l.v4(1))
	t.Logf("b's status of a after a removed it: %+v", st)
	if _, ok := findRoute(b.routes(), pfx("10.244.1.0/26")); ok {
		t.Error("b kept a's route after a removed the session (no graceful restart configured)")
	}
}

// TestNetnsBinding proves that a speaker's sockets, listener and dialled
// connection alike, live in its own namespace and nowhere else.
func TestNetnsBinding(t *testing.T) {
	l := newLab(t, 2)
	a, b := twoNodes(t, l, nil)
	a.waitEstablished(20*time.Second, l.v4(2))
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, b} {
		want := nsLink(t, n.ns)
		p := n.proof()
		if len(p.Threads) != 1 || p.Threads[want] == 0 {
			t.Errorf("%s: threads' namespaces %v, want all in %s", n.name, p.Threads, want)
		}
		if want == self {
			t.Fatalf("%s: lab namespace is the test's own", n.name)
		}
		pid := "pid=" + strconv.Itoa(p.PID) + ","
		in := run(t, "ip", "netns", "exec", n.ns, "ss", "-Htanp", "sport = :179 or dport = :179")
		if !strings.Contains(in, pid) || !strings.Contains(in, "LISTEN") || !strings.Contains(in, "ESTAB") {
			t.Errorf("%s: ss in its namespace does not show its listener and session:\n%s", n.name, in)
		}
		if host := run(t, "ss", "-Htanp"); strings.Contains(host, pid) {
			t.Errorf("%s: has sockets in the test's namespace:\n%s", n.name, host)
		}
	}
	// a is the active side (lower address): its connection is the dialled one.
	out := run(t, "ip", "netns", "exec", a.ns, "ss", "-Htn", "state", "established", "dport = :179")
	if !strings.Contains(out, l.v4(2).String()+":179") {
		t.Errorf("a's dialled session not in its namespace:\n%s", out)
	}
}

// nsLink returns the readlink form ("net:[inode]") of a named namespace.
func nsLink(t *testing.T, ns string) string {
	t.Helper()
	out := run(t, "ip", "netns", "exec", ns, "readlink", "/proc/self/ns/net")
	return strings.TrimSpace(out)
}

func TestRouteReflector(t *testing.T) {
	l := newLab(t, 3)
	rr, c2, c3 := l.spawn(1), l.spawn(2), l.spawn(3)
	cluster := addr("1.0.0.1")
	rr.start(testConfig(l, 1))
	client := func(j int) Peer {
		p := meshPeer(l, 1, j)
		p.Type, p.RouteReflectorClient, p.ClusterID = PeerTypeGlobal, true, cluster
		return p
	}
	c3peer := client(3)
	c3peer.NextHopSelf = true // only towards c3
	rr.setPeers(client(2), c3peer)
	for i, c := range map[int]*node{2: c2, 3: c3} {
		c.start(testConfig(l, i))
		p := meshPeer(l, i, 1)
		p.Type = PeerTypeGlobal
		c.setPeers(p) // only the reflector: no session between the clients
		c.setAdverts(Advertisement{Prefix: pfx(fmt.Sprintf("10.244.%d.0/26", i))},
			Advertisement{Prefix: pfx(fmt.Sprintf("fd00:244:%d::/122", i)), NextHop: l.v6(i)})
	}
	rr.waitEstablished(20*time.Second, l.v4(2), l.v4(3))

	// Reflected routes keep the originator's next hop and arrive from the reflector.
	r := c2.waitRoute(10*time.Second, pfx("10.244.3.0/26"), l.v4(3))
	if r.Peer != l.v4(1) {
		t.Errorf("c2 learned c3's block from %s, want the reflector", r.Peer)
	}
	c2.waitRoute(10*time.Second, pfx("fd00:244:3::/122"), l.v6(3))
	// Towards c3 the reflector sets itself as next hop (NextHopSelf).
	r = c3.waitRoute(10*time.Second, pfx("10.244.2.0/26"), l.v4(1))
	if r.Peer != l.v4(1) {
		t.Errorf("c3 learned c2's block from %s, want the reflector", r.Peer)
	}
	if ss := c2.status(); len(ss) != 1 {
		t.Errorf("c2 has sessions %+v, want only the reflector", ss)
	}
	// A route the reflector itself originates reaches both.
	rr.setAdverts(Advertisement{Prefix: pfx("10.244.1.0/26")})
	c3.waitRoute(10*time.Second, pfx("10.244.1.0/26"), l.v4(1))
}

func TestBIRD(t *testing.T) {
	l := newLab(t, 2)
	if _, err := os.Stat("/usr/sbin/bird"); err != nil {
		testenv.Missing(t, "BIRD 2 (scripts/install-deps.sh installs bird2)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bird.conf")
	sock := filepath.Join(dir, "bird.ctl")
	// BIRD at host 2 is a top-of-rack router in AS 65000 originating one
	// prefix per family; it takes everything we send.
	cfg := fmt.Sprintf(`router id %[1]s;
log stderr all;
protocol device { scan time 1; }
protocol static static4 { ipv4; route 198.51.100.0/24 blackhole; }
protocol static static6 { ipv6; route 2001:db8:100::/48 blackhole; }
protocol bgp node1 {
	local %[1]s as 65000;
	neighbor %[2]s as 64512;
	hold time 6; keepalive time 2; connect delay time 1; connect retry time 2;
	ipv4 { import all; export where source = RTS_STATIC; };
	ipv6 { import all; export where source = RTS_STATIC; next hop address %[3]s; };
}
`, l.v4(2), l.v4(1), l.v6(2))
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	birdLog, _ := os.Create(filepath.Join(dir, "bird.log"))
	bird := exec.Command("ip", "netns", "exec", l.ns(2), "/usr/sbin/bird", "-f", "-c", conf, "-s", sock)
	bird.Stdout, bird.Stderr = birdLog, birdLog
	if err := bird.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bird.Process.Kill()
		bird.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(birdLog.Name())
			t.Logf("--- bird log ---\n%s", b)
		}
	})
	birdc := func(args ...string) string {
		out, _ := exec.Command("birdc", append([]string{"-s", sock}, args...)...).CombinedOutput()
		return string(out)
	}

	n := l.spawn(1)
	n.start(testConfig(l, 1))
	n.setPeers(Peer{Address: l.v4(2), ASN: 65000, Type: PeerTypeGlobal, HoldTime: testHold, KeepaliveTime: testKeepalive})
	n.setAdverts(Advertisement{Prefix: pfx("10.244.1.0/26"), Communities: []string{"64512:100"}},
		Advertisement{Prefix: pfx("fd00:244:1::/122"), NextHop: l.v6(1)})
	n.waitEstablished(20*time.Second, l.v4(2))

	eventually(t, 10*time.Second, "BIRD learns our prefixes", func() (bool, string) {
		out := birdc("show", "route", "protocol", "node1")
		return strings.Contains(out, "10.244.1.0/26") && strings.Contains(out, "fd00:244:1::/122"), out
	})
	out := birdc("show", "route", "all", "10.244.1.0/26")
	if !strings.Contains(out, l.v4(1).String()) || !strings.Contains(out, "(64512,100)") {
		t.Errorf("BIRD's view of 10.244.1.0/26 lacks our next hop or community:\n%s", out)
	}
	t.Logf("birdc show route:\n%s", birdc("show", "route"))

	r := n.waitRoute(10*time.Second, pfx("198.51.100.0/24"), l.v4(2))
	if r.Peer != l.v4(2) {
		t.Errorf("route from BIRD: %+v", r)
	}
	n.waitRoute(10*time.Second, pfx("2001:db8:100::/48"), l.v6(2))
	if st := n.peerStatus(l.v4(2)); st.Type != PeerTypeGlobal {
		t.Errorf("status: %+v", st)
	}
}

func TestMD5(t *testing.T) {
	l := newLab(t, 2)
	a, b := twoNodes(t, l, func(i int, p *Peer) { p.Password = "calico-s3cret" })
	a.waitEstablished(20*time.Second, l.v4(2))
	a.waitRoute(10*time.Second, pfx("10.244.2.0/26"), l.v4(2))

	// b changes its password: the session is rebuilt and cannot come back.
	p := meshPeer(l, 2, 1)
	p.Password = "wrong"
	b.setPeers(p)
	time.Sleep(2 * testHold) // a few connect attempts and hold times
	var sa, sb PeerStatus
	eventually(t, 15*time.Second, "both sides say TCP MD5", func() (bool, string) {
		sa, sb = a.peerStatus(l.v4(2)), b.peerStatus(l.v4(1))
		return strings.Contains(sa.Info, "TCP MD5") && strings.Contains(sb.Info, "TCP MD5"), fmt.Sprintf("a: %+v b: %+v", sa, sb)
	})
	if sa.Established() || sb.Established() {
		t.Errorf("session up with different passwords: a %+v b %+v", sa, sb)
	}
	if !strings.Contains(sb.Info, "authentication failed") {
		t.Errorf("b (passive, receives a's signed SYNs) Info = %q", sb.Info)
	}
	t.Logf("a: %+v", sa)
	t.Logf("b: %+v", sb)

	// Same password again: up.
	p.Password = "calico-s3cret"
	b.setPeers(p)
	a.waitEstablished(30*time.Second, l.v4(2))
	if st := a.peerStatus(l.v4(2)); st.Info != "" {
		t.Errorf("Info kept after recovery: %q", st.Info)
	}
}

func TestGracefulRestart(t *testing.T) {
	const restart = 20 * time.Second
	l := newLab(t, 2)
	cfg := func(i int, restarting bool) Config {
		c := testConfig(l, i)
		c.GracefulRestart, c.RestartTime, c.Restarting = true, restart, restarting
		return c
	}
	bPrefixes := []Advertisement{{Prefix: pfx("10.244.2.0/26")}, {Prefix: pfx("fd00:244:2::/122"), NextHop: l.v6(2)}}
	a := l.spawn(1)
	a.start(cfg(1, false))
	a.setPeers(meshPeer(l, 1, 2))
	startB := func(restarting bool) *node {
		b := l.spawn(2)
		b.start(cfg(2, restarting))
		b.setPeers(meshPeer(l, 2, 1))
		b.setAdverts(bPrefixes...)
		return b
	}
	b := startB(false)
	a.waitEstablished(20*time.Second, l.v4(2))
	for _, adv := range bPrefixes {
		nh := adv.NextHop
		if !nh.IsValid() {
			nh = l.v4(2)
		}
		a.waitRoute(10*time.Second, adv.Prefix, nh)
	}

	// Graceful: b stops without a NOTIFICATION and a new b comes back.
	m := a.mark()
	tStop := time.Now()
	b.stop()
	b.kill()
	eventually(t, 10*time.Second, "a marks b's routes stale", func() (bool, string) {
		rs := a.routes()
		r, ok := findRoute(rs, pfx("10.244.2.0/26"))
		return ok && r.Stale, fmt.Sprintf("%+v", rs)
	})
	b = startB(true)
	a.waitEstablished(restart, l.v4(2))
	for _, adv := range bPrefixes {
		nh := adv.NextHop
		if !nh.IsValid() {
			nh = l.v4(2)
		}
		a.waitRoute(10*time.Second, adv.Prefix, nh) // refreshed: not stale
	}
	t.Logf("b stopped and back, routes refreshed, after %v", time.Since(tStop).Round(time.Millisecond))
	evs, _ := a.eventsSince(m)
	for _, ev := range evs {
		if ev.Withdrawn {
			t.Errorf("a withdrew %s during b's graceful restart", ev.Route.Prefix)
		}
	}

	// Hard stop and no return: a keeps the routes for the restart time, then drops them.
	m = a.mark()
	tKill := time.Now()
	b.kill()
	ev := a.waitEvent(m, restart+15*time.Second, "withdraw after the restart time", func(ev RouteEvent) bool {
		return ev.Withdrawn && ev.Route.Prefix == pfx("10.244.2.0/26")
	})
	kept := ev.At.Sub(tKill)
	t.Logf("after a hard stop a kept b's routes for %v (restart time %v)", kept.Round(time.Millisecond), restart)
	if kept < restart-2*time.Second {
		t.Errorf("routes withdrawn after %v, before the restart time %v", kept, restart)
	}
	if st := a.peerStatus(l.v4(2)); st.Established() {
		t.Errorf("a reports b Established after it died: %+v", st)
	}
}

// BenchmarkStartToRoute measures, for two speakers started together, the
// time until the first is Established and until it has learned the other's
// block. GoBGP's first dial waits 1.5–2s (its minimum connect retry, with
// jitter), which dominates. Run: go test -run '^$' -bench StartToRoute -benchtime 5x
func BenchmarkStartToRoute(b *testing.B) {
	l := newLab(b, 2)
	var est, route time.Duration
	for b.Loop() {
		na, nb := l.spawn(1), l.spawn(2)
		t0 := time.Now()
		for i, n := range []*node{na, nb} {
			h := i + 1
			n.start(testConfig(l, h))
			n.setPeers(meshPeer(l, h, 3-h))
			n.setAdverts(Advertisement{Prefix: pfx(fmt.Sprintf("10.244.%d.0/26", h))})
		}
		for !na.peerStatus(l.v4(2)).Established() {
			time.Sleep(5 * time.Millisecond)
		}
		est += time.Since(t0)
		ev := na.waitEvent(0, 20*time.Second, "first route", func(RouteEvent) bool { return true })
		route += ev.At.Sub(t0)
		na.kill()
		nb.kill()
	}
	b.ReportMetric(float64(est.Milliseconds())/float64(b.N), "ms-to-established")
	b.ReportMetric(float64(route.Milliseconds())/float64(b.N), "ms-to-first-route")
}
