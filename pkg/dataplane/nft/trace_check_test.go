package nft

import (
	"strings"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/trace"
)

// tracePath is refPath answered by pkg/trace (what `tortie policy trace`
// runs), so the property test holds three answers to one question against
// each other: the compiled table's, the reference evaluator's and the
// trace's.
func tracePath(st *calc.State, path string, p *packet) (allow bool, decided string) {
	if path == "output" && p.proto == calc.ProtoICMPv6 && p.icmpType >= 130 && p.icmpType <= 136 && strings.HasPrefix(p.oif, "cali") {
		return true, "base chain"
	}
	byIface := func(ifc string) *calc.Endpoint {
		for _, ep := range st.Endpoints {
			if ep.InterfaceName == ifc {
				return ep
			}
		}
		return nil
	}
	tp := trace.Packet{Src: p.src, Dst: p.dst, Protocol: p.proto, SrcPort: p.sport, DstPort: p.dport, ICMPType: p.icmpType, ICMPCode: p.icmpCode}
	var eg, in *trace.Side
	if ep := byIface(p.iif); ep != nil && path == "forward" {
		eg = trace.Evaluate(st, ep, calc.Egress, tp, trace.Options{})
	}
	if ep := byIface(p.oif); ep != nil && (eg == nil || eg.Verdict == calc.Allow) {
		in = trace.Evaluate(st, ep, calc.Ingress, tp, trace.Options{})
	}
	r := trace.Combine(tp, "", "", eg, in)
	return r.Verdict == calc.Allow, r.DecidedBy
}
