package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
)

// TestLab runs the Kubernetes network policy scenarios on the multi-host
// lab (pkg/lab): 3 hosts in a BGP mesh, one tortie-node each, the model's
// pods spread so that the pods of one namespace are on three different
// hosts (x/a on h1, x/b on h2, x/c on h3; y and z rotated by one and two),
// so nearly every flow of the matrix crosses hosts. The scenarios are the
// same functions as on SingleHost: start(t) and cluster(t) give every test
// under TestLab the lab backend.
func TestLab(t *testing.T) {
	m0, p0 := statsMark()
	t0 := time.Now()
	defer func() {
		t.Logf("lab: %v; %s", time.Since(t0).Round(time.Millisecond), statsSince(m0, p0).Summary())
	}()
	t.Run("pods spread over the hosts", func(t *testing.T) {
		_, m := cluster(t)
		for _, key := range []string{"x", "y", "z"} {
			nodes := map[string]bool{}
			for _, name := range []string{"a", "b", "c"} {
				nodes[m.P(key+"/"+name).Node] = true
			}
			if len(nodes) != 3 {
				t.Errorf("the pods of %s are on %d hosts, want 3", key, len(nodes))
			}
		}
	})
	for _, suite := range []struct {
		name      string
		scenarios []scenarioT
	}{
		{"NetworkPolicy between server and client", serverClientScenarios},
		{"NetworkPolicy between server and client using UDP", udpScenarios},
	} {
		t.Run(suite.name, func(t *testing.T) {
			for _, sc := range suite.scenarios {
				t.Run(sc.name, sc.run)
			}
		})
	}
	t.Run("SCTP", TestNetpolSCTP)
	t.Run("Calico", TestCalico)
	t.Run("API", TestNetpolAPI)
	t.Run("PolicyRecreatedSameName", TestPolicyRecreatedSameName)
}

// singleHostOnly are the scenarios that need what only SingleHost has, by
// their test name under TestLab: on the lab, start(t) reports them as
// skipped with the reason; the single-host suite of the same run runs them.
var singleHostOnly = map[string]string{
	"Calico/HostEndpoint with failsafe ports": "a host endpoint on the host's uplink, which on the lab also carries BGP and the datastore",
}

// singleHostOnlyReason is why the lab test t runs on SingleHost only, or "".
func singleHostOnlyReason(t testing.TB) string {
	for name, why := range singleHostOnly {
		if strings.HasSuffix(t.Name(), "/"+strings.ReplaceAll(name, " ", "_")) {
			return why
		}
	}
	return ""
}

// statsMark and statsSince cut the lab's share out of the suite-wide
// convergence record.
func statsMark() (int, int) {
	Stats.mu.Lock()
	defer Stats.mu.Unlock()
	return len(Stats.Matrix), len(Stats.Programmed)
}

func statsSince(m0, p0 int) *Convergence {
	Stats.mu.Lock()
	defer Stats.mu.Unlock()
	return &Convergence{Matrix: slices.Clone(Stats.Matrix[m0:]), Programmed: slices.Clone(Stats.Programmed[p0:])}
}

// TestLabWireguard runs the lab's policy scenarios with WireGuard on (`tortie
// lab up --encryption wireguard --encap vxlan-crosssubnet`: a BGP mesh of 3
// hosts, h3 across a router from the others): the matrices are those of
// TestLab, and all the while the hosts' uplinks carry no packet between two
// workloads in clear or inside VXLAN, while their devices carry traffic to
// and from every peer. The workloads' MTU leaves room for WireGuard.
func TestLabWireguard(t *testing.T) {
	c, m := cluster(t)
	pool := c.(*LabCluster).pool
	// The kernel passes a packet socket on each uplink only the packets
	// between two workload addresses: any at all is traffic in clear.
	var clear sync.Map // host → the first such packet
	for _, h := range c.Hosts() {
		testenv.WatchFrames(t, h.NetNS().Path(), h.Uplink, testenv.IPv4Between(pool), func(f []byte) {
			p, ok := testenv.ParseIPv4(f)
			if !ok {
				return
			}
			how := ""
			if inner, isVXLAN := p.VXLANInner(); isVXLAN {
				p, how = inner, " inside VXLAN"
			}
			clear.LoadOrStore(h.Name, fmt.Sprintf("%s → %s (protocol %d)%s", netip.AddrFrom4(p.Src), netip.AddrFrom4(p.Dst), p.Proto, how))
		})
	}
	lc := c.(*LabCluster)
	checkWire := func(when string) {
		t.Helper()
		clear.Range(func(host, pkt any) bool {
			t.Errorf("%s: %s's uplink carried %s in clear", when, host, pkt)
			return true
		})
		// What went through the devices instead.
		for _, hs := range lc.lab.Status(context.Background()).Hosts {
			w := hs.Wireguard
			if w == nil || w.Kind == "" || len(w.Peers) != len(lc.hosts)-1 {
				t.Fatalf("%s: %s's WireGuard: %+v (%s)", when, hs.Name, w, hs.Error)
			}
			var sent, received int64
			for _, p := range w.Peers {
				sent, received = sent+p.SentBytes, received+p.ReceivedBytes
				if p.SentBytes == 0 || p.ReceivedBytes == 0 {
					t.Errorf("%s: %s's peer %s: nothing sent or received: %+v", when, hs.Name, p.Node, p)
				}
			}
			t.Logf("%s: %s's %s device sent %d and received %d bytes to and from its %d peers; no workload-to-workload packet in clear on its uplink",
				when, hs.Name, w.Kind, sent, received, len(w.Peers))
		}
	}
	c.Reset(t) // what an earlier test left (the same lab serves -count=N)
	ExpectMatrix(t, c, "all allowed, encrypted", m.Pods, AllCases, AllowAll)
	checkWire("all allowed")
	t.Run("workload MTU", func(t *testing.T) {
		// x/a, x/b and x/c are on three hosts, across the router and not.
		pods := []*Pod{m.P("x/a"), m.P("x/b"), m.P("x/c")}
		uplink := linkMTU(t, lc.hosts[0].NetNS(), lc.hosts[0].Uplink)
		want := uplink - wireguard.Overhead
		for _, p := range pods {
			if got := linkMTU(t, p.NetNS(), "eth0"); got != want {
				t.Errorf("%s's eth0 has MTU %d, want %d: the uplink's %d less WireGuard's %d", p, got, want, uplink, wireguard.Overhead)
			}
		}
		// The largest datagram the workload's MTU lets through, with
		// "don't fragment", crosses to every other host and comes back;
		// one byte more is refused by the sender's own interface.
		for i, from := range pods {
			to := pods[(i+1)%len(pods)]
			if err := fullSizeEcho(from, to, 80, want-28); err != nil {
				t.Errorf("%s → %s, %d bytes with don't fragment: %v", from, to, want, err)
			}
			if err := fullSizeEcho(from, to, 80, want-27); !errors.Is(err, unix.EMSGSIZE) {
				t.Errorf("%s → %s, %d bytes with don't fragment: %v, want EMSGSIZE", from, to, want+1, err)
			}
		}
	})
	t.Run("NetworkPolicy between server and client", func(t *testing.T) {
		for _, sc := range serverClientScenarios {
			t.Run(sc.name, sc.run)
		}
	})
	checkWire("after the scenarios")
}

// linkMTU is the MTU of the interface name in n.
func linkMTU(t *testing.T, n ns.NetNS, name string) int {
	t.Helper()
	l, err := testenv.NetlinkIn(t, n.Path()).LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, n.Path(), err)
	}
	return l.Attrs().MTU
}

// fullSizeEcho sends a UDP datagram of size bytes of payload with "don't
// fragment" from one pod to the other's echo server on port, a few times
// until the echo comes back (the first may wait for the neighbour), and
// checks that it comes back whole. A datagram over the interface's MTU
// fails at once with EMSGSIZE.
func fullSizeEcho(from *Pod, to *Pod, port, size int) error {
	var c *net.UDPConn
	err := from.NetNS().Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to.Addr(), uint16(port))))
		if err != nil {
			return err
		}
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		return err
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("tortie-mtu "), size/11+1)[:size]
	buf := make([]byte, size+1)
	for range 20 {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:n], msg) {
			return nil
		}
		if err == nil {
			return fmt.Errorf("the echo has %d bytes, not the %d sent", n, size)
		}
		if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
			return err
		}
	}
	return errors.New("no echo in 5 s")
}
