package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
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
// lab up --encryption wireguard`, a BGP mesh of 3 hosts): the matrices are
// those of TestLab, and all the while the hosts' uplinks carry no packet
// between two workloads in clear, while their devices carry traffic to and
// from every peer.
func TestLabWireguard(t *testing.T) {
	c, m := cluster(t)
	pool := c.(*LabCluster).pool
	// The kernel passes a packet socket on each uplink only the packets
	// between two workload addresses: any at all is traffic in clear.
	var clear sync.Map // host → the first such packet
	for _, h := range c.Hosts() {
		testenv.WatchFrames(t, h.NetNS().Path(), h.Uplink, testenv.IPv4Between(pool), func(f []byte) {
			if p, ok := testenv.ParseIPv4(f); ok {
				clear.LoadOrStore(h.Name, fmt.Sprintf("%s → %s (protocol %d)", netip.AddrFrom4(p.Src), netip.AddrFrom4(p.Dst), p.Proto))
			}
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
	t.Run("NetworkPolicy between server and client", func(t *testing.T) {
		for _, sc := range serverClientScenarios {
			t.Run(sc.name, sc.run)
		}
	})
	checkWire("after the scenarios")
}
