package nft

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
)

// benchPolicies are bench/policy's 100 policies of 100 ingress rules (as
// rulePolicies there): rule j of policy i allows TCP to its own port from a
// selector or a /24; with on80, one rule in ten is on port 80 instead; the
// last rule of policy i allows the client to port sentinel+i. A rule's ID
// is its place and content, as the graph's.
func benchPolicies(on80 bool, sentinel int) []*calc.Policy {
	var pols []*calc.Policy
	for i := range 100 {
		var rules []calc.Rule
		for j := range 100 {
			port := uint16(20000 + 100*i + j)
			if on80 && j%10 == 9 {
				port = 80
			}
			rules = append(rules, rule(fmt.Sprintf("bench svc-%03d I%d", i, j), calc.Allow, func(r *calc.Rule) {
				r.Protocol = calc.ProtoTCP
				if j%2 == 0 {
					r.Src.IPSet = fmt.Sprintf("s:svc-%d", (i+j)%100)
				} else {
					r.Src.Nets = []netip.Prefix{pfx(fmt.Sprintf("172.%d.%d.0/24", 16+i%16, j))}
				}
				if j == 99 {
					r.Src.Nets, r.Src.IPSet = nil, "s:client"
					port = uint16(sentinel + i)
				}
				r.Dst.Ports = ports(port, port)
				r.ID = fmt.Sprintf("%s %d %s %v", r.ID, port, r.Src.IPSet, r.Src.Nets)
			}))
		}
		pols = append(pols, gpol(fmt.Sprintf("svc-%03d", i), "default", rules, nil))
	}
	return pols
}

// stressState is bench/policy's server with only the allowing policy: the
// starting point of its "100 × 100 created" step.
func stressState() (*scenario, *calc.Endpoint, *calc.Policy) {
	s := newScenario()
	for k := range 100 {
		s.set(fmt.Sprintf("s:svc-%d", k), calc.AddressSet, member(fmt.Sprintf("10.66.%d.%d/32", k/250, 2+k%250)))
	}
	s.set("s:client", calc.AddressSet, member("10.65.0.2/32"))
	allow := gpol("allow-client", "default", []calc.Rule{allowClient(calc.Allow)}, nil)
	s.pol(allow)
	ep := wl("server", "caliserver", "10.65.0.3/32")
	ep.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, allow)}
	ep.Profiles = []calc.ProfileRef{{Name: "open"}}
	s.prof(&calc.Profile{Name: "open", Ingress: []calc.Rule{rule("profile open I0", calc.Allow, nil)}, Egress: []calc.Rule{rule("profile open E0", calc.Allow, nil)}})
	s.ep(ep)
	return s, ep, allow
}

// timedNFT times each nft run.
type timedNFT struct {
	knftables.Interface
	runs []time.Duration
	ops  []int
}

// Unwrap implements Unwrapper.
func (x *timedNFT) Unwrap() knftables.Interface { return x.Interface }

func (x *timedNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	t0 := time.Now()
	err := x.Interface.Run(ctx, tx)
	x.runs = append(x.runs, time.Since(t0))
	x.ops = append(x.ops, tx.NumOperations())
	return err
}

// BenchmarkKernelBigChange is bench/policy's two big applies against the
// kernel (root only): the 100 × 100 rules created in front of the allowing
// policy ("create"), and replaced by the stress variant ("stress"), each
// as the agent gets them from the graph (policy updates and the
// endpoint's new tier), followed by the next (empty) apply that deletes
// what went. Each iteration goes back to the state before (not timed).
func BenchmarkKernelBigChange(b *testing.B) {
	testenv.RequireRoot(b)
	for _, step := range []string{"create", "stress"} {
		b.Run(step, func(b *testing.B) {
			n, _ := testenv.NewNS(b)
			tn := &timedNFT{Interface: newNSNFT(b, n)}
			d := New(tn, Config{})
			nl, count := newNSNetlink(b, n)
			d.SetNetlink(nl)
			s, ep, allow := stressState()
			if err := d.Apply(b.Context(), changesOf(s.state)); err != nil {
				b.Fatal(err)
			}
			apply := func(c *calc.Changes) time.Duration {
				b.Helper()
				c.InSync = true
				t0 := time.Now()
				if err := d.Apply(b.Context(), c); err != nil {
					b.Fatal(err)
				}
				return time.Since(t0)
			}
			// to is the change to a set of 100 policies (nil: none).
			var cur []*calc.Policy
			to := func(pols []*calc.Policy) *calc.Changes {
				e := *ep
				tier := tierOf("default", calc.Deny, append(append([]*calc.Policy(nil), pols...), allow)...)
				e.Ingress = []calc.TierPolicies{tier}
				c := &calc.Changes{PolicyUpdates: pols, EndpointUpdates: []*calc.Endpoint{&e}}
				for _, p := range cur {
					if pols == nil {
						c.PolicyRemoves = append(c.PolicyRemoves, p.ID)
					}
				}
				cur = pols
				return c
			}
			var main, after, nftTime, nlTime time.Duration
			var nftOps, nftRuns, nlRuns int
			for b.Loop() {
				b.StopTimer()
				if step == "create" {
					apply(to(nil))
				} else {
					apply(to(benchPolicies(false, 30000)))
				}
				apply(&calc.Changes{})
				runs0, nl0, nlTook0 := len(tn.runs), count.runs, count.took
				b.StartTimer()
				if step == "create" {
					main += apply(to(benchPolicies(false, 30000)))
				} else {
					main += apply(to(benchPolicies(true, 31000)))
				}
				after += apply(&calc.Changes{})
				b.StopTimer()
				for k := runs0; k < len(tn.runs); k++ {
					nftTime += tn.runs[k]
					nftOps += tn.ops[k]
					nftRuns++
				}
				nlRuns += count.runs - nl0
				nlTime += count.took - nlTook0
				b.StartTimer()
			}
			it := float64(b.N)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / it }
			b.ReportMetric(ms(main), "ms/apply")
			b.ReportMetric(ms(after), "ms/next-apply")
			b.ReportMetric(ms(nftTime), "ms/nft-runs")
			b.ReportMetric(float64(nftRuns)/it, "nft-runs/op")
			b.ReportMetric(float64(nftOps)/it, "nft-ops/op")
			b.ReportMetric(ms(nlTime), "ms/netlink-runs")
			b.ReportMetric(float64(nlRuns)/it, "netlink-runs/op")
			if count.last != nil {
				b.Logf("last fallback: %s", strings.SplitN(count.last.Error(), "\n", 2)[0])
			}
		})
	}
}
