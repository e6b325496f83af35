package trace

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
)

// Kinds are the resource kinds a trace reads: what the calculation graph
// consumes, and the staged policies.
var Kinds = []string{
	v3.KindWorkloadEndpoint, v3.KindHostEndpoint, v3.KindNetworkSet, v3.KindGlobalNetworkSet,
	v3.KindProfile, v3.KindTier, v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy,
	v3.KindStagedNetworkPolicy, v3.KindStagedGlobalNetworkPolicy, v3.KindStagedKubernetesNetworkPolicy,
}

// Query is what to trace: two ends and the packet's protocol and ports.
type Query struct {
	// Src and Dst are each NAMESPACE/NAME (a workload endpoint by name,
	// or by the pod or workload it belongs to), hep/NAME (a host
	// endpoint), or an IP address (the endpoint with that address, or
	// an address outside the cluster's endpoints).
	Src, Dst string
	Protocol uint8
	SrcPort  uint16
	DstPort  uint16
	ICMPType uint8
	ICMPCode uint8
	// IPVersion picks the family when both ends are endpoints with
	// addresses of both (0: IPv4 when both have one).
	IPVersion int
}

// end is one end of a traced path.
type end struct {
	// desc says what the end is, name names it in errors.
	desc, name string
	// ep is set for an endpoint, with its node and addresses.
	ep    *calc.EndpointID
	node  string
	addrs []netip.Addr
}

// Run traces q through the policy that rs (a snapshot of the datastore)
// resolves to, and, when there are staged policies, through the policy
// they would make.
func Run(rs []v3.Resource, q Query) (*Result, error) {
	src, err := resolve(rs, q.Src)
	if err != nil {
		return nil, fmt.Errorf("source %q: %w", q.Src, err)
	}
	dst, err := resolve(rs, q.Dst)
	if err != nil {
		return nil, fmt.Errorf("destination %q: %w", q.Dst, err)
	}
	p, err := packetFor(q, src, dst)
	if err != nil {
		return nil, err
	}
	res := path(rs, p, src, dst, Options{})
	with, staged, n, problems := WithStaged(rs)
	if n > 0 {
		res.Staged = path(with, p, src, dst, Options{Staged: staged})
	}
	for _, e := range problems {
		res.StagedProblems = append(res.StagedProblems, e.Error())
	}
	return res, nil
}

// path evaluates p from src to dst in the state each end's node resolves
// rs to.
func path(rs []v3.Resource, p Packet, src, dst *end, o Options) *Result {
	states := map[string]*calc.State{}
	stateOf := func(node string) *calc.State {
		if st, ok := states[node]; ok {
			return st
		}
		g := calc.New(calc.Config{NodeName: node})
		for _, r := range rs {
			g.OnUpdate(calc.Update{Kind: kindOf(r), Namespace: r.GetNamespace(), Name: r.GetName(), Resource: r})
		}
		g.OnInSync()
		st := g.State()
		states[node] = st
		return st
	}
	side := func(e *end, dir calc.Direction) *Side {
		if e.ep == nil {
			return nil
		}
		st := stateOf(e.node)
		ep := st.Endpoints[*e.ep]
		if ep == nil {
			return nil // not possible for an endpoint of e.node
		}
		return Evaluate(st, ep, dir, p, o)
	}
	eg := side(src, calc.Egress)
	var in *Side
	if eg == nil || eg.Verdict == calc.Allow {
		in = side(dst, calc.Ingress)
	} else if dst.ep != nil {
		r := Combine(p, src.desc, dst.desc, eg, nil)
		r.IngressNotReached = true
		return r
	}
	return Combine(p, src.desc, dst.desc, eg, in)
}

// resolve finds what an end names.
func resolve(rs []v3.Resource, spec string) (*end, error) {
	if a, err := netip.ParseAddr(spec); err == nil {
		a = a.Unmap()
		for _, r := range rs {
			for _, ea := range addrsOf(r) {
				if ea == a {
					e := endpointEnd(r)
					e.addrs = []netip.Addr{a}
					return e, nil
				}
			}
		}
		return &end{desc: fmt.Sprintf("address %s (not an endpoint: no policy applies on this side)", a), name: a.String(), addrs: []netip.Addr{a}}, nil
	}
	kind, rest, ok := strings.Cut(spec, "/")
	if !ok || rest == "" || kind == "" {
		return nil, fmt.Errorf("want NAMESPACE/WORKLOAD, hep/NAME or an IP address")
	}
	if kind == "hep" || kind == "hostendpoint" {
		for _, r := range rs {
			if h, ok := r.(*v3.HostEndpoint); ok && h.Name == rest {
				return endpointEnd(h), nil
			}
		}
		return nil, fmt.Errorf("no HostEndpoint named %q", rest)
	}
	ns, name := kind, rest
	var byName, byOwner []*v3.WorkloadEndpoint
	for _, r := range rs {
		w, ok := r.(*v3.WorkloadEndpoint)
		if !ok || w.Namespace != ns {
			continue
		}
		if w.Name == name {
			byName = append(byName, w)
		} else if w.Spec.Pod == name || w.Spec.Workload == name {
			byOwner = append(byOwner, w)
		}
	}
	switch {
	case len(byName) == 1:
		return endpointEnd(byName[0]), nil
	case len(byOwner) == 1:
		return endpointEnd(byOwner[0]), nil
	case len(byOwner) > 1:
		var names []string
		for _, w := range byOwner {
			if w.Spec.Endpoint == "eth0" {
				return endpointEnd(w), nil
			}
			names = append(names, w.Name)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("%d workload endpoints belong to %s in namespace %s (%s): name one", len(byOwner), name, ns, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("no WorkloadEndpoint in namespace %q named %q or of a pod or workload %q", ns, name, name)
}

// endpointEnd is the end of a workload or host endpoint.
func endpointEnd(r v3.Resource) *end {
	e := &end{addrs: addrsOf(r)}
	switch x := r.(type) {
	case *v3.WorkloadEndpoint:
		e.ep = &calc.EndpointID{Kind: v3.KindWorkloadEndpoint, Namespace: x.Namespace, Name: x.Name}
		e.node = x.Spec.Node
	case *v3.HostEndpoint:
		e.ep = &calc.EndpointID{Kind: v3.KindHostEndpoint, Name: x.Name}
		e.node = x.Spec.Node
	}
	e.desc = fmt.Sprintf("%s on node %s", e.ep, e.node)
	e.name = e.ep.String()
	return e
}

// addrsOf are a workload endpoint's or a host endpoint's addresses.
func addrsOf(r v3.Resource) []netip.Addr {
	var ss []string
	switch x := r.(type) {
	case *v3.WorkloadEndpoint:
		ss = x.Spec.IPNetworks
	case *v3.HostEndpoint:
		ss = x.Spec.ExpectedIPs
	default:
		return nil
	}
	var out []netip.Addr
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Addr().Unmap())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// packetFor picks the packet's addresses (one family for both ends) and
// fills in the rest from q.
func packetFor(q Query, src, dst *end) (Packet, error) {
	p := Packet{Protocol: q.Protocol, SrcPort: q.SrcPort, DstPort: q.DstPort, ICMPType: q.ICMPType, ICMPCode: q.ICMPCode}
	families := []int{4, 6}
	switch {
	case q.IPVersion != 0:
		families = []int{q.IPVersion}
	case q.Protocol == calc.ProtoICMPv6:
		families = []int{6}
	}
	pick := func(e *end, f int) (netip.Addr, bool) {
		for _, a := range e.addrs {
			if a.Is4() == (f == 4) {
				return a, true
			}
		}
		return netip.Addr{}, false
	}
	for _, f := range families {
		s, ok1 := pick(src, f)
		d, ok2 := pick(dst, f)
		if ok1 && ok2 {
			p.Src, p.Dst = s, d
			return p, p.Check()
		}
	}
	if len(src.addrs) == 0 {
		return p, fmt.Errorf("source %s has no address", src.name)
	}
	if len(dst.addrs) == 0 {
		return p, fmt.Errorf("destination %s has no address", dst.name)
	}
	if src.ep == nil && dst.ep == nil {
		return p, fmt.Errorf("source %s and destination %s are of different IP versions", src.name, dst.name)
	}
	return p, fmt.Errorf("source %s and destination %s have no addresses of the same IP version%s", src.name, dst.name, versionNote(q))
}

func versionNote(q Query) string {
	if q.IPVersion != 0 {
		return fmt.Sprintf(" (IPv%d asked for)", q.IPVersion)
	}
	return ""
}

// SetPorts checks and sets the ports: a protocol with ports needs a
// destination port (portGiven), one without takes none.
func (q *Query) SetPorts(port, srcPort int, portGiven bool) error {
	if !calc.HasPorts(q.Protocol) {
		if portGiven {
			return fmt.Errorf("--port: protocol %s has no ports", ProtocolName(q.Protocol))
		}
		return nil
	}
	if !portGiven {
		return fmt.Errorf("--port is required for protocol %s", ProtocolName(q.Protocol))
	}
	for _, x := range []struct {
		flag string
		v    int
	}{{"--port", port}, {"--src-port", srcPort}} {
		if x.v < 1 || x.v > 65535 {
			return fmt.Errorf("%s %d: want 1-65535", x.flag, x.v)
		}
	}
	q.DstPort, q.SrcPort = uint16(port), uint16(srcPort)
	return nil
}
