package nft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/dataplane/nflog"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/trace"
)

// TestKernelAgreesWithTrace sends real TCP and UDP between two workloads
// in network namespaces under random policy (the property test's
// generator: tiers, Pass, selectors, nets, ports, named ports, profiles)
// and compares what got through with what pkg/trace, the engine of
// `tortie policy trace`, says of the same packet, source port included.
// Each seed is a fresh state written by a new driver (a restart over the
// previous table), then changed three times in place. Flow logs are on in
// three seeds of four: the packets the kernel logs over NFLOG must name, side
// by side, the decisions the trace comes to.
func TestKernelAgreesWithTrace(t *testing.T) {
	testenv.RequireRoot(t)
	tp := newTopology(t, map[string]string{"calia": "10.0.0.2", "calib": "10.0.0.3"})
	nft := newNSNFT(t, tp.host)
	var logs *nflog.Conn
	err := tp.host.Do(func(ns.NetNS) (err error) {
		logs, err = nflog.Open(DefaultFlowLogGroup, 128)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	flowLogs := collectFlowLogs(logs)
	ends := map[string]struct {
		n    ns.NetNS
		addr netip.Addr
	}{"calia": {tp.wls["calia"], netip.MustParseAddr("10.0.0.2")}, "calib": {tp.wls["calib"], netip.MustParseAddr("10.0.0.3")}}
	ports := []uint16{22, 53, 80, 81, 443, 1024, 8080, 65535}
	for _, e := range ends {
		for _, p := range ports {
			listen(t, e.n, "tcp", netip.AddrPortFrom(e.addr, p).String())
			listen(t, e.n, "udp", netip.AddrPortFrom(e.addr, p).String())
		}
	}
	nextSrcPort := uint16(20000)
	probes, allowed, logged, oneMessage := 0, 0, 0, 0
	kinds := map[string]int{}
	for seed := uint64(1); seed <= 12; seed++ {
		g := propGen{r: rand.New(rand.NewPCG(seed, seed*7919))}
		w := g.world()
		if _, ok := w.st.Endpoints[calc.EndpointID{Kind: "WorkloadEndpoint", Namespace: "ns", Name: "b"}]; !ok {
			b := wl("b", "calib", "10.0.0.3/32")
			g.endpointPolicy(w, b)
			w.st.Endpoints[b.ID] = b
		}
		cfg := Config{}
		if seed%4 != 1 {
			cfg.FlowLogGroup = DefaultFlowLogGroup
		}
		if seed%2 == 0 {
			// Workload egress decisions numbered in the mark: a
			// connection between the two workloads is one message.
			cfg.FlowMarks, _ = flowlog.NewMarks(flowlog.DefaultMarkMask)
		}
		d := New(nft, cfg)
		if err := d.Apply(t.Context(), changesOf(w.st)); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for step := 0; step < 4; step++ {
			what := "first render"
			if step > 0 {
				var c *calc.Changes
				what, c = g.mutate(w)
				if err := d.Apply(t.Context(), c); err != nil {
					t.Fatalf("seed %d, %s: %v", seed, what, err)
				}
			}
			type result struct {
				desc      string
				got, want bool
				decidedBy string
				key       flowKey
				res       *trace.Result
			}
			var mu sync.Mutex
			var results []result
			var wg sync.WaitGroup
			for _, from := range []string{"calia", "calib"} {
				to := map[string]string{"calia": "calib", "calib": "calia"}[from]
				for _, proto := range []string{"tcp", "udp"} {
					for _, port := range ports {
						sport := nextSrcPort
						nextSrcPort++
						if nextSrcPort > 60000 {
							nextSrcPort = 20000
						}
						p := packet{iif: from, oif: to, src: ends[from].addr, dst: ends[to].addr,
							proto: map[string]uint8{"tcp": calc.ProtoTCP, "udp": calc.ProtoUDP}[proto], sport: sport, dport: port}
						want, why, res := tracePath(w.st, "forward", &p)
						wg.Add(1)
						go func() {
							defer wg.Done()
							got := probeFrom(ends[from].n, proto, netip.AddrPortFrom(ends[from].addr, sport), netip.AddrPortFrom(ends[to].addr, port))
							mu.Lock()
							results = append(results, result{fmt.Sprintf("%s %s:%d -> %s:%d", proto, p.src, sport, p.dst, port), got, want, why,
								flowKey{p.proto, netip.AddrPortFrom(p.src, sport), netip.AddrPortFrom(p.dst, port)}, res})
							mu.Unlock()
						}()
					}
				}
			}
			wg.Wait()
			got := flowLogs(cfg.FlowLogGroup != 0)
			ix := flowIndex(w.st)
			for _, r := range results {
				if cfg.FlowLogGroup != 0 {
					var ids []string
					for _, m := range got[r.key] {
						var ok bool
						if ids, ok = cfg.FlowMarks.Decisions(m.prefix, m.mark, ids); !ok {
							t.Errorf("seed %d, %s: %s: logged %q with mark %#x names no decision", seed, what, r.desc, m.prefix, m.mark)
						}
					}
					if problem := checkFlowLogs(ix, ids, r.res); problem != "" {
						t.Errorf("seed %d, %s: %s: %s (messages %v)", seed, what, r.desc, problem, got[r.key])
					}
					logged += len(got[r.key])
					if len(got[r.key]) < len(ids) {
						oneMessage++
					}
					for _, s := range []*trace.Side{r.res.Egress, r.res.Ingress} {
						if s != nil {
							kinds[s.Decision.Kind]++
						}
					}
				} else if len(got[r.key]) > 0 {
					t.Errorf("seed %d, %s: %s: flow logs off, yet the kernel logged %v", seed, what, r.desc, got[r.key])
				}
				probes++
				if r.got {
					allowed++
				}
				if r.got != r.want {
					t.Errorf("seed %d, %s: %s: the kernel let it through: %v; trace says %v (%s)", seed, what, r.desc, r.got, r.want, r.decidedBy)
				}
			}
			if t.Failed() {
				t.Fatalf("seed %d: policy was:\n%s", seed, describeState(w.st))
			}
		}
	}
	t.Logf("%d probes, %d allowed, all as the trace said; %d flow logs, each naming the decisions the trace came to: %v; %d connections with both decisions in one message",
		probes, allowed, logged, kinds, oneMessage)
	if oneMessage == 0 {
		t.Errorf("no message carried an egress decision in its mark")
	}
	for _, k := range []string{"rule", "tier default", "profile rule", "missing profile", "nothing allowed"} {
		if kinds[k] == 0 {
			t.Errorf("no flow log decided by %q: the generator does not reach it", k)
		}
	}
	if allowed == 0 || allowed == probes {
		t.Errorf("every probe had the same outcome (%d of %d allowed): the generator does not exercise both verdicts", allowed, probes)
	}
}

// probeFrom reports whether a TCP connect or a UDP round trip from n
// works, from a fixed source address and port when from is valid.
func probeFrom(n ns.NetNS, proto string, from, to netip.AddrPort) bool {
	ok := false
	_ = n.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		switch {
		case !from.IsValid():
		case proto == "tcp":
			d.LocalAddr = net.TCPAddrFromAddrPort(from)
		default:
			d.LocalAddr = net.UDPAddrFromAddrPort(from)
		}
		c, err := d.Dial(proto, to.String())
		if err != nil {
			return nil
		}
		defer c.Close()
		if proto == "tcp" {
			ok = true
			return nil
		}
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write([]byte("x")); err != nil {
			return nil
		}
		buf := make([]byte, 8)
		_, err = c.Read(buf)
		ok = err == nil
		return nil
	})
	return ok
}

// describeState prints a state's endpoints and policies for a failure.
func describeState(st *calc.State) string {
	var b strings.Builder
	for _, ep := range propEndpoints(st) {
		fmt.Fprintf(&b, "endpoint %s %v ingress %+v egress %+v profiles %+v\n", ep.InterfaceName, ep.Addresses, ep.Ingress, ep.Egress, ep.Profiles)
	}
	for _, p := range propPolicies(st) {
		fmt.Fprintf(&b, "policy %s: ingress %+v egress %+v\n", p.ID, p.Ingress, p.Egress)
	}
	for id, ms := range st.Members {
		fmt.Fprintf(&b, "set %s: %v\n", id, ms)
	}
	return b.String()
}

// flowKey is a connection as a logged packet shows it.
type flowKey struct {
	proto    uint8
	src, dst netip.AddrPort
}

// loggedMsg is what a flow log message says of the decisions.
type loggedMsg struct {
	prefix string
	mark   uint32
}

// collectFlowLogs reads the group in the background; the function it
// returns hands out (and forgets) what came so far, by connection, each
// connection's messages in the order the kernel logged them. With wait,
// it first waits until nothing came for 300 ms.
func collectFlowLogs(c *nflog.Conn) func(wait bool) map[flowKey][]loggedMsg {
	var mu sync.Mutex
	byConn := map[flowKey][]loggedMsg{}
	lastAt := time.Now()
	go func() {
		for {
			msgs, err := c.Receive()
			if err != nil && !errors.Is(err, nflog.ErrOverrun) {
				return
			}
			mu.Lock()
			for _, m := range msgs {
				p, err := flowlog.ParsePacket(m.Payload)
				if err != nil {
					continue
				}
				k := flowKey{p.Protocol, netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort)}
				byConn[k] = append(byConn[k], loggedMsg{m.Prefix, m.Mark})
			}
			lastAt = time.Now()
			mu.Unlock()
		}
	}()
	return func(wait bool) map[flowKey][]loggedMsg {
		for wait {
			mu.Lock()
			quiet := time.Since(lastAt) > 300*time.Millisecond
			mu.Unlock()
			if quiet {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		out := byConn
		byConn = map[flowKey][]loggedMsg{}
		return out
	}
}
