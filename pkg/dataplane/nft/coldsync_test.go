package nft

import (
	"context"
	"fmt"
	"io"
	"testing"

	"sigs.k8s.io/knftables"

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
	n, err := io.WriteString(io.Discard, tx.String())
	r.bytes += n
	return err
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
