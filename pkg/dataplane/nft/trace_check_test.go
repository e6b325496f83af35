package nft

import (
	"fmt"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/trace"
)

// tracePath is refPath answered by pkg/trace (what `tortie policy trace`
// runs), so the property test holds three answers to one question against
// each other: the compiled table's, the reference evaluator's and the
// trace's. res is nil when a base chain decided before any policy.
func tracePath(st *calc.State, path string, p *packet) (allow bool, decided string, res *trace.Result) {
	if path == "output" && p.proto == calc.ProtoICMPv6 && p.icmpType >= 130 && p.icmpType <= 136 && strings.HasPrefix(p.oif, "cali") {
		return true, "base chain", nil
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
	return r.Verdict == calc.Allow, r.DecidedBy, r
}

// flowIndex is what the agent's flow collector would know of st.
func flowIndex(st *calc.State) *flowlog.Index {
	ix := flowlog.NewIndex()
	for _, p := range st.Policies {
		ix.SetPolicy(p)
	}
	for _, p := range st.Profiles {
		ix.SetProfile(p)
	}
	for _, ep := range st.Endpoints {
		ix.SetEndpoint(ep)
	}
	return ix
}

// checkFlowLogs compares the flow log identifiers a packet met in the
// table (in order: the source's egress, then the destination's ingress)
// with the decisions the trace says each side came to: "" when they agree.
func checkFlowLogs(ix *flowlog.Index, got []string, want *trace.Result) string {
	var sides []*trace.Side
	if want != nil {
		for _, s := range []*trace.Side{want.Egress, want.Ingress} {
			if s != nil {
				sides = append(sides, s)
			}
		}
	}
	if len(got) != len(sides) {
		return fmt.Sprintf("%d flow logs %q, want one per side evaluated (%d)", len(got), got, len(sides))
	}
	for i, s := range sides {
		ref, ok := ix.Lookup(got[i])
		if !ok {
			return fmt.Sprintf("flow log %q is not in the index (want %s: %s)", got[i], s.Direction, s.Decision)
		}
		if ref.Direction != s.Direction || ref.Action != s.Verdict || ref.Decision != s.Decision {
			return fmt.Sprintf("flow log %q stands for %s %s by %s, the trace says %s %s by %s",
				got[i], ref.Direction, ref.Action, ref.Decision, s.Direction, s.Verdict, s.Decision)
		}
	}
	return ""
}
