package routing

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
)

// TestLabWireguard: three hosts, two on one subnet and one behind the
// router, a VXLAN CrossSubnet pool and a BGP mesh, with WireGuard on. Every
// pair of workloads connects, and the hosts' links carry their traffic only
// as WireGuard's UDP: no packet to or from a workload address and no marker
// in clear. A restart keeps the key; a lost key is replaced and taken up by
// the peers; turning WireGuard off on a host removes its device, rule and
// routes and its key from the Node, and its workloads are reached again
// without encryption; on again, encrypted. A connection opened before the
// restarts stays open through all of them.
func TestLabWireguard(t *testing.T) {
	l, hs := crossSubnetLab(t, func(h *host) { h.wireguard = "on" })
	eventually(t, 20*time.Second, "every host has the others as WireGuard peers", func() (bool, string) { return wgPeered(hs, hs) })

	pool := netip.MustParsePrefix(labPool)
	h1, h2, h3 := hs[0], hs[1], hs[2]
	caps := map[string]*testenv.Capture{}
	for _, h := range []*host{h1, h3} {
		caps[h.name] = testenv.StartCapture(t, "/run/netns/"+h.ns, "eth0")
	}
	const marker = "tortie-lab-wireguard-marker-5c1e"
	for _, p := range [][2]*host{{h1, h2}, {h1, h3}, {h3, h2}, {h2, h1}} {
		if err := tcpLine(t, p[0].wl[0], p[1].wl[0], marker); err != nil {
			for _, h := range p {
				st := h.agent.status()
				t.Logf("%s: WireGuard %+v\n%s%s", h.name, st.Wireguard, run(t, "ip", "-n", h.ns, "route", "show", "table", "1"),
					run(t, "ip", "-n", h.ns, "-s", "link", "show", "wireguard.cali"))
			}
			t.Fatalf("%s → %s: %v", p[0].name, p[1].name, err)
		}
	}
	allPairs(t, hs)
	for name, c := range caps {
		n := wireOnlyWireguard(t, c, pool, marker)
		t.Logf("%s's link: %d WireGuard packets, no workload packet or marker in clear", name, n)
		if n == 0 {
			t.Errorf("%s's link carried no WireGuard packet", name)
		}
	}
	st := h1.agent.status()
	if st.Wireguard == nil || st.Wireguard.Kind == "" || st.Wireguard.Addr == "" || !pool.Contains(netip.MustParseAddr(st.Wireguard.Addr)) {
		t.Fatalf("h1's WireGuard status: %+v", st.Wireguard)
	}
	for _, p := range st.Wireguard.Peers {
		if p.LatestHandshake.IsZero() || p.SentBytes == 0 || p.ReceivedBytes == 0 {
			t.Errorf("h1's peer %s after traffic: %+v", p.Node, p)
		}
	}
	if out := run(t, "ip", "-n", h1.ns, "rule"); !strings.Contains(out, "99:\tnot from all fwmark 0x100000/0x100000 lookup 1") {
		t.Errorf("h1's rules:\n%s", out)
	}

	// A connection from h1 to h2 that stays open through everything below:
	// h2's restarts, its new key, WireGuard turned off there.
	st12 := openStream(t, h1.wl[0], h2.wl[0])
	defer st12.close()
	flows := func(when string) {
		t.Helper()
		d := eventually(t, 10*time.Second, "the h1 → h2 connection answers "+when, func() (bool, string) {
			if err := st12.ping(); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
		t.Logf("the h1 → h2 connection answered %s after %v", when, d.Round(time.Millisecond))
	}

	// A restart keeps the key.
	key2 := l.nodeKey(h2.name)
	h2.agent.stop()
	l.start(h2)
	eventually(t, 30*time.Second, "h2 back", func() (bool, string) { return wgPeered(hs, hs) })
	if k := l.nodeKey(h2.name); k != key2 {
		t.Errorf("h2's key changed on restart: %s → %s", key2, k)
	}
	flows("after h2's restart")
	allPairsEventually(t, hs, 10*time.Second)

	// A lost key: a new one, which the peers take up.
	h2.agent.stop()
	if err := os.Remove(filepath.Join(l.dir, h2.name+".wgkey")); err != nil {
		t.Fatal(err)
	}
	l.start(h2)
	eventually(t, 30*time.Second, "h2's new key taken up", func() (bool, string) {
		if k := l.nodeKey(h2.name); k == key2 || k == "" {
			return false, "h2's key " + k
		}
		return wgPeered(hs, hs)
	})
	flows("after h2's new key")
	allPairsEventually(t, hs, 10*time.Second)

	// Off on h2: nothing of WireGuard is left there, and h2 is reached in
	// clear; h1 and h3 still encrypt to each other.
	h2.agent.stop()
	h2.wireguard = "off"
	l.start(h2)
	eventually(t, 30*time.Second, "h2's key gone from its Node", func() (bool, string) {
		n := l.node(h2.name)
		return n.Status.WireguardPublicKey == "" && n.Spec.Wireguard == nil, fmt.Sprintf("%+v %+v", n.Status, n.Spec.Wireguard)
	})
	eventually(t, 30*time.Second, "h1 and h3 drop h2 as a peer", func() (bool, string) { return wgPeered([]*host{h1, h3}, []*host{h1, h3}) })
	eventually(t, 30*time.Second, "h2 programmed", func() (bool, string) {
		st := h2.agent.status()
		return st.Ready && st.Wireguard == nil, fmt.Sprintf("ready %v, wireguard %+v", st.Ready, st.Wireguard)
	})
	if _, err := h2.nl.LinkByName(wireguard.DeviceName); err == nil {
		t.Error("h2 still has its WireGuard device")
	}
	if out := run(t, "ip", "-n", h2.ns, "rule"); strings.Contains(out, "lookup 1") {
		t.Errorf("h2's rules:\n%s", out)
	}
	if out := run(t, "ip", "-n", h2.ns, "route", "show", "table", "1"); strings.TrimSpace(out) != "" {
		t.Errorf("h2's table 1:\n%s", out)
	}
	if st := h1.agent.status(); st.Wireguard == nil || len(st.Wireguard.Unencrypted) != 1 || !strings.HasPrefix(st.Wireguard.Unencrypted[0], "h2: no WireGuard public key") {
		t.Errorf("h1's WireGuard status with h2 off: %+v", st.Wireguard)
	}
	flows("after WireGuard was turned off on h2")
	allPairsEventually(t, hs, 10*time.Second)

	// And on again, with the connection still open.
	h2.agent.stop()
	h2.wireguard = "on"
	l.start(h2)
	eventually(t, 30*time.Second, "h2 a peer again", func() (bool, string) { return wgPeered(hs, hs) })
	flows("after WireGuard was turned on again on h2")
	allPairsEventually(t, hs, 10*time.Second)
}

// wgPeered says whether each host of hs has a WireGuard device with exactly
// the others of peers (by node) as its peers, and no error.
func wgPeered(hs, peers []*host) (bool, string) {
	for _, h := range hs {
		st := h.agent.status()
		w := st.Wireguard
		if w == nil || w.Kind == "" || w.Error != "" || st.LastError != "" {
			return false, fmt.Sprintf("%s: %+v (last error %q)", h.name, w, st.LastError)
		}
		var got, want []string
		for _, p := range w.Peers {
			got = append(got, p.Node)
		}
		for _, p := range peers {
			if p != h {
				want = append(want, p.name)
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return false, fmt.Sprintf("%s's peers %v, want %v", h.name, got, want)
		}
	}
	return true, ""
}

// wireOnlyWireguard fails the test if a frame of c carries marker or an
// IPv4 packet to or from an address of pool, and counts the WireGuard
// packets.
func wireOnlyWireguard(t *testing.T, c *testenv.Capture, pool netip.Prefix, marker string) int {
	t.Helper()
	n := 0
	for _, f := range c.Frames() {
		if bytes.Contains(f, []byte(marker)) {
			t.Fatalf("the marker crossed a host's link in clear: % x", f)
		}
		p, ok := testenv.ParseIPv4(f)
		if !ok {
			continue
		}
		src, dst := netip.AddrFrom4(p.Src), netip.AddrFrom4(p.Dst)
		if pool.Contains(src) || pool.Contains(dst) {
			t.Fatalf("a packet %s → %s (protocol %d) crossed a host's link in clear", src, dst, p.Proto)
		}
		if p.Proto == unix.IPPROTO_UDP && p.DstPort == wireguard.DefaultPort {
			n++
		}
	}
	return n
}

// allPairsEventually retries allPairs' checks until they pass or timeout.
func allPairsEventually(t *testing.T, hs []*host, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "every pair of workloads connects", func() (bool, string) {
		for _, a := range hs {
			for _, b := range hs {
				if a == b {
					continue
				}
				if err := tcpCheck(t, a.wl[0], b.wl[0]); err != nil {
					return false, fmt.Sprintf("%s → %s: %v", a.name, b.name, err)
				}
			}
		}
		return true, ""
	})
}

func (l *lab) node(name string) *v3.Node {
	l.t.Helper()
	k, _ := v3.KindByKind(v3.KindNode)
	r, err := l.c.Get(context.Background(), k, "", name)
	if err != nil {
		l.t.Fatal(err)
	}
	return r.(*v3.Node)
}

func (l *lab) nodeKey(name string) string { return l.node(name).Status.WireguardPublicKey }
