package routing

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/ipam"
)

const labPool = "10.250.0.0/16"

func meshLab(t *testing.T, n int) (*lab, []*host) {
	l := newLab(t, 1)
	l.createPool("lab", labPool, nil)
	var hs []*host
	for i := 1; i <= n; i++ {
		h := l.addHost(i, 0)
		l.addWorkload(h)
		hs = append(hs, h)
	}
	return l, hs
}

func meshWant(hs []*host) map[string]int {
	want := map[string]int{}
	for _, h := range hs {
		want[h.name] = len(hs) - 1
	}
	return want
}

// TestLabMesh: three hosts in a full mesh. Sessions come up, every host
// routes to the others' blocks and blackholes its own, workloads talk
// across hosts with no route added by the test; a new block reaches the
// others; cutting a host's link withdraws its routes within the hold time
// and restoring it brings them back; a graceful restart of one agent
// keeps its routes on the others and a TCP stream through it alive.
func TestLabMesh(t *testing.T) {
	l, hs := meshLab(t, 3)
	t0 := time.Now()
	for _, h := range hs {
		l.start(h)
	}
	tEst := eventually(t, 40*time.Second, "all sessions Established", func() (bool, string) { return establishedAll(hs, meshWant(hs)) })
	tRoutes := eventually(t, 20*time.Second, "all routes programmed", func() (bool, string) { return l.routedAll(hs) })
	t.Logf("timing: 3 hosts: agents started → all sessions Established %v, → all routes programmed %v",
		(tEst).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	_ = tRoutes

	// Routes to the others are learned ones via their addresses.
	h1 := hs[0]
	for _, b := range l.blocksOf("h2") {
		r := h1.kernelRoutes()[b]
		if gw, _ := netip.AddrFromSlice(r.Gw); gw.Unmap() != hs[1].addr {
			t.Errorf("h1's route to h2's block %s: %v", b, r)
		}
	}
	// Workload /32s.
	for _, h := range hs {
		w := h.wl[0]
		r, ok := h.kernelRoutes()[netip.PrefixFrom(w.addr, 32)]
		if !ok || r.Scope != unix.RT_SCOPE_LINK {
			t.Errorf("%s: no link route to its workload %s: %v", h.name, w.addr, r)
		}
	}
	allPairs(t, hs)
	st := h1.agent.status()
	if !st.Ready || !st.BGPEnabled || len(st.Peers) != 2 || st.Peers[0].Type != "node-to-node mesh" {
		t.Errorf("h1 status: %+v", st)
	}

	// A new block: claim one for h1 in a second pool and time its arrival.
	l.createPool("lab2", "10.251.0.0/16", nil)
	tClaim := time.Now()
	w := l.addWorkload(h1, netip.MustParsePrefix("10.251.0.0/16"))
	blk := netip.PrefixFrom(w.addr, 26).Masked()
	for _, h := range hs[1:] {
		d := eventually(t, 10*time.Second, h.name+" routes the new block", func() (bool, string) {
			_, ok := h.kernelRoutes()[blk]
			return ok, ""
		})
		t.Logf("timing: block %s claimed for h1 → route on %s after %v", blk, h.name, (time.Since(tClaim) - 0*d).Round(time.Millisecond))
	}
	if err := tcpCheck(t, hs[2].wl[0], w); err != nil {
		t.Errorf("to the new workload: %v", err)
	}

	t.Run("flap", func(t *testing.T) {
		h3 := hs[2]
		port := l.hostPort(h3)
		h3blocks := l.blocksOf("h3")
		run(t, "ip", "-n", l.sw, "link", "set", port, "down")
		restored := false
		defer func() {
			if !restored {
				run(t, "ip", "-n", l.sw, "link", "set", port, "up")
			}
		}()
		tCut := time.Now()
		for _, h := range hs[:2] {
			eventually(t, labHold+4*time.Second, h.name+" withdraws h3's routes", func() (bool, string) {
				krs := h.kernelRoutes()
				for _, b := range h3blocks {
					if _, ok := krs[b]; ok {
						return false, b.String()
					}
				}
				return true, ""
			})
		}
		t.Logf("timing: h3's link cut → its routes gone on h1 and h2 after %v (hold time %v)", time.Since(tCut).Round(time.Millisecond), labHold)
		run(t, "ip", "-n", l.sw, "link", "set", port, "up")
		restored = true
		tUp := time.Now()
		eventually(t, 40*time.Second, "routes back after restore", func() (bool, string) { return l.routedAll(hs) })
		t.Logf("timing: h3's link restored → routes back after %v", time.Since(tUp).Round(time.Millisecond))
		allPairs(t, hs)
	})

	t.Run("graceful-restart", func(t *testing.T) {
		h2 := hs[1]
		eventually(t, 40*time.Second, "all sessions Established", func() (bool, string) { return establishedAll(hs, meshWant(hs)) })
		// A TCP stream from h1's workload to h2's, open across the restart.
		stream := openStream(t, hs[0].wl[0], h2.wl[0])
		defer stream.close()
		h2blocks := l.blocksOf("h2")
		h2.agent.stop()
		// For a while (well past the hold time), the others keep h2's routes.
		deadline := time.Now().Add(labHold + 2*time.Second)
		for time.Now().Before(deadline) {
			for _, h := range []*host{hs[0], hs[2]} {
				krs := h.kernelRoutes()
				for _, b := range h2blocks {
					if _, ok := krs[b]; !ok {
						t.Fatalf("%s dropped h2's block %s during its graceful restart", h.name, b)
					}
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := stream.ping(); err != nil {
			t.Errorf("stream while h2's agent is down: %v", err)
		}
		l.start(h2)
		eventually(t, 40*time.Second, "all sessions Established again", func() (bool, string) { return establishedAll(hs, meshWant(hs)) })
		eventually(t, 20*time.Second, "all routes programmed", func() (bool, string) { return l.routedAll(hs) })
		if err := stream.ping(); err != nil {
			t.Errorf("stream after h2's agent restarted: %v", err)
		}
		// Once settled, nothing is stale: routes still there after the restart window.
		allPairs(t, hs)
	})
}

// TestLabBIRD: BIRD 2 as a top-of-rack router with a global BGPPeer. Its
// table shows every node's blocks, and a route it originates reaches
// every node's kernel.
func TestLabBIRD(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/bird"); err != nil {
		testenv.Missing(t, "BIRD 2 (scripts/install-deps.sh installs bird2)")
	}
	l, hs := meshLab(t, 3)
	birdNS := "trt" + l.id + "bird"
	l.addNS(birdNS)
	birdAddr := l.subnetAddr(0, 200)
	l.plug(birdNS, "eth0", 0, birdAddr)
	dir := t.TempDir()
	conf, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	var nb strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&nb, `protocol bgp %s {
	local %s as 65000;
	neighbor %s as 64512;
	hold time 6; keepalive time 2; connect delay time 1; connect retry time 2;
	ipv4 { import all; export where source = RTS_STATIC; };
}
`, h.name, birdAddr, h.addr)
	}
	cfg := fmt.Sprintf(`router id %s;
log stderr all;
protocol device { scan time 1; }
protocol static { ipv4; route 203.0.113.0/24 blackhole; }
%s`, birdAddr, nb.String())
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	birdLog, _ := os.Create(filepath.Join(dir, "bird.log"))
	bird := exec.Command("ip", "netns", "exec", birdNS, "/usr/sbin/bird", "-f", "-c", conf, "-s", sock)
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
	k, _ := v3.KindByKind(v3.KindBGPPeer)
	p := k.NewObject().(*v3.BGPPeer)
	p.Name = "tor"
	p.Spec.PeerIP = birdAddr.String()
	p.Spec.ASNumber = numorstring.ASNumber(65000)
	l.create(p)

	for _, h := range hs {
		l.start(h)
	}
	want := map[string]int{}
	for _, h := range hs {
		want[h.name] = len(hs) // the mesh and BIRD
	}
	eventually(t, 40*time.Second, "all sessions Established", func() (bool, string) { return establishedAll(hs, want) })
	eventually(t, 20*time.Second, "BIRD has every node's blocks", func() (bool, string) {
		out := birdc("show", "route")
		for _, h := range hs {
			for _, b := range l.blocksOf(h.name) {
				if !strings.Contains(out, b.String()) {
					return false, out
				}
			}
		}
		return true, ""
	})
	out := birdc("show", "route")
	t.Logf("birdc show route:\n%s", out)
	for _, h := range hs {
		eventually(t, 10*time.Second, h.name+" routes BIRD's prefix", func() (bool, string) {
			r, ok := h.kernelRoutes()[netip.MustParsePrefix("203.0.113.0/24")]
			gw, _ := netip.AddrFromSlice(r.Gw)
			return ok && gw.Unmap() == birdAddr, fmt.Sprintf("%v", r)
		})
	}
	st := hs[0].agent.status()
	var types []string
	for _, p := range st.Peers {
		types = append(types, p.Address+"="+p.Type)
	}
	if !strings.Contains(strings.Join(types, " "), birdAddr.String()+"=global") {
		t.Errorf("h1 peers: %v", types)
	}
	allPairs(t, hs)
}

// TestLabRouteReflector: four hosts, h1 a route reflector, the mesh off,
// everyone peering with the reflectors: only sessions to the reflector
// exist, and every pair of workloads connects.
func TestLabRouteReflector(t *testing.T) {
	l, hs := meshLab(t, 4)
	ctx := context.Background()
	// The reflector's Node is prepared before its agent starts; startup
	// keeps what it does not own.
	k, _ := v3.KindByKind(v3.KindNode)
	n := k.NewObject().(*v3.Node)
	n.Name = "h1"
	n.Labels = map[string]string{"route-reflector": "true"}
	n.Spec.BGP = &v3.NodeBGPSpec{RouteReflectorClusterID: "224.0.0.1"}
	l.create(n)
	bk, _ := v3.KindByKind(v3.KindBGPConfiguration)
	bc := bk.NewObject().(*v3.BGPConfiguration)
	bc.Name = "default"
	off := false
	bc.Spec.NodeToNodeMeshEnabled = &off
	l.create(bc)
	pk, _ := v3.KindByKind(v3.KindBGPPeer)
	p := pk.NewObject().(*v3.BGPPeer)
	p.Name = "peer-with-route-reflectors"
	p.Spec.NodeSelector = "all()"
	p.Spec.PeerSelector = "route-reflector == 'true'"
	l.create(p)

	for _, h := range hs {
		l.start(h)
	}
	want := map[string]int{"h1": 3, "h2": 1, "h3": 1, "h4": 1}
	eventually(t, 40*time.Second, "sessions to the reflector Established", func() (bool, string) { return establishedAll(hs, want) })
	for _, h := range hs[1:] {
		st := h.agent.status()
		if st.Peers[0].Address != hs[0].addr.String() || st.Peers[0].Type != "node specific" {
			t.Errorf("%s peers: %+v", h.name, st.Peers)
		}
	}
	eventually(t, 20*time.Second, "all routes programmed", func() (bool, string) { return l.routedAll(hs) })
	allPairs(t, hs)
	// Startup kept the reflector's cluster ID and label.
	r, err := l.c.Get(ctx, k, "", "h1")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.(*v3.Node); got.Spec.BGP.RouteReflectorClusterID != "224.0.0.1" || got.Labels["route-reflector"] != "true" || got.Spec.BGP.IPv4Address == "" {
		t.Errorf("reflector's Node after startup: %+v %+v", got.Labels, got.Spec.BGP)
	}
	_ = ipam.AttrNode
}
