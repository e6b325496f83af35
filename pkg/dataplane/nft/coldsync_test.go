package nft

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
)

// renderNFT renders each transaction as nft would be given it and throws
// the text away: a first sync's whole cost but the kernel's. It is not
// knftables' fake, so the driver lists many elements per statement, as it
// does for the real nft.
type renderNFT struct {
	*knftables.Fake
	bytes int
}

func (r *renderNFT) Run(_ context.Context, tx *knftables.Transaction) error {
	r.bytes += len(tx.String())
	return nil
}

// coldScenario is bench/policy's 100,000-endpoint shape as the driver sees
// it: 100 address sets of 1,000 remote addresses each, referenced by one
// local endpoint's policies.
func coldScenario() *scenario {
	s := newScenario()
	var pols []*calc.Policy
	for k := range 100 {
		id := fmt.Sprintf("s:sel-%d", k)
		var ms []calc.Member
		for i := range 1000 {
			ms = append(ms, member(fmt.Sprintf("10.%d.%d.%d/32", k, i/250, 2+i%250)))
		}
		s.set(id, calc.AddressSet, ms...)
		p := gpol(fmt.Sprintf("pol-%d", k), "default", []calc.Rule{rule(fmt.Sprintf("pol-%d I0", k), calc.Allow, func(r *calc.Rule) {
			r.Protocol = calc.ProtoTCP
			r.Dst.Ports = ports(uint16(8000+k), uint16(8000+k))
			r.Src.IPSet = id
		})}, nil)
		s.pol(p)
		pols = append(pols, p)
	}
	ep := wl("server", "caliserver", "10.65.0.3/32")
	ep.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, pols...)}
	s.ep(ep)
	return s
}

// BenchmarkColdSync100k is a new driver's first sync of 100,000 set
// elements, rendered as the nft script it writes (the kernel left out):
// what the agent's first apply allocates at bench/policy's 100,000
// endpoints, besides the graph.
func BenchmarkColdSync100k(b *testing.B) {
	s := coldScenario()
	c := changesOf(s.state)
	var out int
	for b.Loop() {
		r := &renderNFT{Fake: newFake()}
		d := New(r, Config{})
		if err := d.Apply(b.Context(), c); err != nil {
			b.Fatal(err)
		}
		out = r.bytes
	}
	b.ReportMetric(float64(out)/1e6, "MB-script")
}

// failingNFT fails a transaction when fail is set, writing nothing, as a
// refused nft transaction does.
type failingNFT struct {
	*knftables.Fake
	fail bool
}

func (f *failingNFT) Unwrap() knftables.Interface { return f.Fake }
func (f *failingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.fail {
		return errors.New("refused (test)")
	}
	return f.Fake.Run(ctx, tx)
}

// TestSetElementsAfterChurn: what the driver remembers of the kernel's
// sets (after a sync, a view of what it wanted, and what each changed
// element was) always gives the right difference. Random member changes,
// sets removed and made again, and refused transactions (after which the
// driver lists the kernel again) are applied to knftables' fake, and after
// each its sets must hold what a new driver writes for the same state.
func TestSetElementsAfterChurn(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			s := newScenario()
			ids := []string{"s:a", "s:b", "s:c"}
			randMember := func() calc.Member {
				if rng.IntN(8) == 0 {
					return member(fmt.Sprintf("10.9.%d.%d/28", rng.IntN(2), 16*rng.IntN(4)))
				}
				return member(fmt.Sprintf("10.9.%d.%d/32", rng.IntN(2), rng.IntN(64)))
			}
			for _, id := range ids {
				s.set(id, calc.AddressSet, randMember(), randMember())
			}
			p := gpol("p", "default", []calc.Rule{rule("p I0", calc.Allow, func(r *calc.Rule) { r.Src.IPSet = "s:a" })},
				[]calc.Rule{rule("p E0", calc.Allow, func(r *calc.Rule) { r.Dst.IPSet = "s:b" })})
			s.pol(p)
			ep := wl("server", "caliserver", "10.65.0.3/32")
			ep.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, p)}
			ep.Egress = []calc.TierPolicies{tierOf("default", calc.Deny, p)}
			s.ep(ep)

			f := &failingNFT{Fake: newFake()}
			d := New(f, Config{})
			if err := d.Apply(t.Context(), changesOf(s.state)); err != nil {
				t.Fatal(err)
			}
			for step := range 60 {
				// Up to three changes, applied to the state; d gets them
				// in one Apply below, but for the set removed with a last
				// change, which d gets as it is.
				for range 1 + rng.IntN(3) {
					id := ids[rng.IntN(len(ids))]
					_, exists := s.state.IPSets[id]
					c := &calc.Changes{InSync: true}
					switch {
					case !exists:
						c.IPSetUpdates = []calc.IPSetUpdate{{Set: &calc.IPSet{ID: id, Kind: calc.AddressSet, Selector: id},
							Members: []calc.Member{randMember(), randMember()}}}
					case id == "s:c" && rng.IntN(6) == 0:
						c.IPSetRemoves = []string{id}
					case id == "s:c" && rng.IntN(6) == 0:
						// Members change and the set goes in one Apply:
						// the set's last elements never reach the kernel.
						// Made again later, it is compared with what the
						// kernel kept.
						delta := calc.MemberDelta{SetID: id}
						if m := randMember(); !hasMember(s.state, id, m) {
							delta.Added = []calc.Member{m}
						}
						for m := range s.state.Members[id] {
							delta.Removed = []calc.Member{m}
							break
						}
						c.MemberDeltas = []calc.MemberDelta{delta}
						c.IPSetRemoves = []string{id}
						if err := d.Apply(t.Context(), c); err != nil {
							t.Fatalf("step %d: %v", step, err)
						}
					default:
						delta := calc.MemberDelta{SetID: id}
						for m := range s.state.Members[id] {
							if rng.IntN(4) == 0 {
								delta.Removed = append(delta.Removed, m)
							}
						}
						for range rng.IntN(4) {
							m := randMember()
							if !hasMember(s.state, id, m) && !slices.Contains(delta.Added, m) {
								delta.Added = append(delta.Added, m)
							}
						}
						c.MemberDeltas = []calc.MemberDelta{delta}
					}
					s.state.Apply(c)
				}
				// d gets the step's changes in one Apply; one in five is
				// refused (if it writes anything).
				f.fail = rng.IntN(5) == 0
				err := d.Apply(t.Context(), changesBetween(t, d, s.state))
				if err != nil && !f.fail {
					t.Fatalf("step %d: %v", step, err)
				}
				f.fail = false
				if err != nil {
					continue
				}
				want := newFake()
				if err := New(want, Config{}).Apply(t.Context(), changesOf(s.state)); err != nil {
					t.Fatal(err)
				}
				for _, id := range slices.Sorted(maps.Keys(s.state.IPSets)) {
					for _, fam := range []int{4, 6} {
						name := ipSetName(id, calc.AddressSet, fam)
						if got, exp := setDump(t, f.Fake, name), setDump(t, want, name); got != exp {
							t.Fatalf("step %d: set %s (%s) holds\n%s\nwant\n%s", step, name, id, got, exp)
						}
					}
				}
			}
		})
	}
}

func hasMember(st *calc.State, id string, m calc.Member) bool {
	_, ok := st.Members[id][m]
	return ok
}

// changesBetween is what takes d's IP sets to st's (d had every set st
// had before; members compared with what d holds).
func changesBetween(t *testing.T, d *Driver, st *calc.State) *calc.Changes {
	t.Helper()
	c := &calc.Changes{InSync: true}
	for id := range d.ipsets {
		if _, ok := st.IPSets[id]; !ok {
			c.IPSetRemoves = append(c.IPSetRemoves, id)
		}
	}
	slices.Sort(c.IPSetRemoves)
	for _, id := range slices.Sorted(maps.Keys(st.IPSets)) {
		set := st.IPSets[id]
		if _, ok := d.ipsets[id]; !ok {
			c.IPSetUpdates = append(c.IPSetUpdates, calc.IPSetUpdate{Set: set, Members: slices.Collect(maps.Keys(st.Members[id]))})
			continue
		}
		have := map[calc.Member]bool{}
		for _, m := range d.currentMembers(set) {
			have[m] = true
		}
		delta := calc.MemberDelta{SetID: id}
		for m := range st.Members[id] {
			if !have[m] {
				delta.Added = append(delta.Added, m)
			}
			delete(have, m)
		}
		for m := range have {
			delta.Removed = append(delta.Removed, m)
		}
		if len(delta.Added)+len(delta.Removed) > 0 {
			c.MemberDeltas = append(c.MemberDeltas, delta)
		}
	}
	return c
}

// setDump is a set's elements in f, sorted, one per line.
func setDump(t *testing.T, f *knftables.Fake, name string) string {
	t.Helper()
	els, err := f.ListElements(t.Context(), "set", name)
	if err != nil {
		t.Fatalf("listing %s: %v", name, err)
	}
	var lines []string
	for _, e := range els {
		lines = append(lines, strings.Join(e.Key, " . "))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// BenchmarkKernelColdSync100k is BenchmarkColdSync100k against the real
// kernel in a network namespace (root only): a new driver's first sync of
// the 100,000 elements into an empty namespace, the table deleted after
// each, written through nft and, with a Netlink, over netlink.
func BenchmarkKernelColdSync100k(b *testing.B) {
	testenv.RequireRoot(b)
	c := changesOf(coldScenario().state)
	for _, path := range []string{"nft", "netlink"} {
		b.Run(path, func(b *testing.B) {
			n, name := testenv.NewNS(b)
			var count *nlCount
			for b.Loop() {
				d := New(newNSNFT(b, n), Config{})
				if path == "netlink" {
					var nl *Netlink
					nl, count = newNSNetlink(b, n)
					d.SetNetlink(nl)
				}
				if err := d.Apply(b.Context(), c); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				testenv.Sh(b, "ip", "netns", "exec", name, "nft", "delete", "table", "inet", "tortie")
				b.StartTimer()
			}
			if count != nil {
				b.ReportMetric(float64(count.runs), "netlink-txns")
				b.ReportMetric(float64(count.fallbacks), "fallbacks")
			}
		})
	}
}
