package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/pkg/flowlog"
)

// The static objects: base chains, dispatch maps and configuration sets,
// the same whatever the policy (but for the configuration and the
// dispatch of host endpoints with interface "*").

// renderStatic puts the base chains, dispatch maps and configuration sets
// in want.
func (d *Driver) renderStatic() {
	for _, m := range []string{MapWorkloadFrom, MapWorkloadTo, MapHostIn, MapHostOut, MapHostForwardIn,
		MapHostForwardOut, MapHostPreDNATIn, MapHostUntrackedIn, MapHostUntrackOut} {
		d.ensureSet(m, setShape{typ: "ifname : verdict", isMap: true}, "dispatch by interface to the endpoint's program")
	}
	d.ensureSet(SetWorkloadIfaces, setShape{typ: "ifname"}, "known workload interfaces")
	for i, name := range []string{SetFailsafeIn, SetFailsafeOut} {
		d.ensureSet(name, setShape{typ: "inet_proto . inet_service"}, "failsafe ports: host endpoint policy never blocks these")
		pps := d.cfg.FailsafeInbound
		if i == 1 {
			pps = d.cfg.FailsafeOutbound
		}
		want := map[string][]string{}
		for _, pp := range pps {
			k := []string{protoName(pp.Protocol), strconv.Itoa(int(pp.Port))}
			want[elemKey(k)] = k
		}
		d.syncElems(name, want)
	}
	for _, f := range []struct {
		name, typ string
		nat, v6   bool
	}{{name: SetPoolsV4, typ: "ipv4_addr"}, {name: SetPoolsV6, typ: "ipv6_addr", v6: true},
		{name: SetNATPoolsV4, typ: "ipv4_addr", nat: true}, {name: SetNATPoolsV6, typ: "ipv6_addr", nat: true, v6: true}} {
		comment := "IP pools"
		if f.nat {
			comment = "IP pools with natOutgoing"
		}
		d.ensureSet(f.name, setShape{typ: f.typ, interval: true}, comment)
		var ps []netip.Prefix
		for _, p := range d.pools {
			if is6(p.CIDR) == f.v6 && (!f.nat || p.NATOutgoing) {
				ps = append(ps, p.CIDR)
			}
		}
		want := map[string][]string{}
		for _, p := range coverPrefixes(ps) {
			k := []string{prefixString(p)}
			want[elemKey(k)] = k
		}
		d.syncElems(f.name, want)
	}
	for name, c := range d.baseChains() {
		if old := d.want.chains[name]; old == nil || !slices.Equal(old.rules, c.rules) {
			d.setChain(name, c)
		}
	}
}

// syncElems makes a small set hold exactly want.
func (d *Driver) syncElems(set string, want map[string][]string) {
	s := d.want.sets[set]
	for k, e := range s.elems {
		if _, ok := want[k]; !ok {
			d.delElem(set, e.key)
		}
	}
	for _, key := range want {
		d.setElem(set, key, nil)
	}
}

// newRule is a rule with its comment.
func newRule(text, comment string) ruleT { return ruleT{text: text, comment: comment} }

// wildcardRule is the dispatch of a host endpoint with interface "*": it
// applies to every interface that is not a workload's or the loopback.
func (d *Driver) wildcardRule(mapName, dir string) []ruleT {
	id, prog, ok := d.eps.firstWildcard(mapName)
	if !ok {
		return nil
	}
	cond := []string{dir + `ifname != "lo"`}
	for _, p := range d.cfg.InterfacePrefixes {
		cond = append(cond, fmt.Sprintf(`%sifname != "%s*"`, dir, p))
	}
	return []ruleT{newRule(strings.Join(cond, " ")+" jump "+prog, "host endpoint "+id.Name+" (all interfaces)")}
}

func (d *Driver) baseChains() map[string]*chainT {
	cfg := &d.cfg
	// natOutgoing rewrites the source to the outgoing interface's address,
	// or to Config.NATOutgoingAddress (FelixConfiguration natOutgoingAddress).
	natV4 := "masquerade"
	if cfg.NATOutgoingAddress.IsValid() {
		natV4 = "snat ip to " + cfg.NATOutgoingAddress.String()
	}
	fast := []ruleT{
		newRule("ct state established,related accept", "fast path: only the first packet of a connection meets policy"),
		newRule("ct state invalid drop", "conntrack says invalid"),
		newRule(fmt.Sprintf("meta mark & %#x != 0 accept", cfg.UntrackedMark), "allowed by untracked (doNotTrack) policy"),
	}
	unknown := func(dir string) []ruleT {
		var out []ruleT
		for _, p := range cfg.InterfacePrefixes {
			out = append(out, newRule(fmt.Sprintf(`%sifname "%s*" %sifname != @%s drop`, dir, p, dir, SetWorkloadIfaces),
				"unknown workload interface: fail closed"))
		}
		return out
	}
	nd := func(dir string) []ruleT {
		var out []ruleT
		for _, p := range cfg.InterfacePrefixes {
			out = append(out, newRule(fmt.Sprintf(`%sifname "%s*" icmpv6 type { 130-136 } accept`, dir, p),
				"IPv6 neighbour and router discovery between host and workloads"))
		}
		return out
	}
	base := func(hook knftables.BaseChainHook, prio knftables.BaseChainPriority, typ knftables.BaseChainType, rules ...[]ruleT) *chainT {
		c := &chainT{base: &baseSpec{typ: typ, hook: hook, prio: prio}}
		for _, rs := range rules {
			c.rules = append(c.rules, rs...)
		}
		return c
	}
	var toHost []ruleT
	for _, p := range cfg.InterfacePrefixes {
		switch cfg.EndpointToHost {
		case EndpointToHostDrop:
			toHost = append(toHost, newRule(fmt.Sprintf(`iifname "%s*" drop`, p), "workload to host: endpoint-to-host action Drop"))
		case EndpointToHostAccept:
			toHost = append(toHost, newRule(fmt.Sprintf(`iifname "%s*" accept`, p), "workload to host: endpoint-to-host action Accept"))
		}
	}
	var hostToWl []ruleT
	for _, p := range cfg.InterfacePrefixes {
		hostToWl = append(hostToWl, newRule(fmt.Sprintf(`oifname "%s*" accept`, p), "host to workload: allowed by the workload's ingress policy"))
	}
	failIn := []ruleT{newRule("meta l4proto . th dport @"+SetFailsafeIn+" accept", "failsafe inbound port")}
	failOut := []ruleT{newRule("meta l4proto . th dport @"+SetFailsafeOut+" accept", "failsafe outbound port")}
	vm := func(dir, m, why string) []ruleT {
		return append([]ruleT{newRule(dir+"ifname vmap @"+m, why)}, d.wildcardRule(m, dir)...)
	}
	// With flow marks, a packet a workload's egress allowed carries the
	// deciding rule's number in the mark. Going to a local workload, that
	// workload's ingress rule logs it; going elsewhere, this rule does.
	// Either way the field is then clear.
	egressLog := func(toWorkloads bool) []ruleT {
		if !cfg.flowMarked() {
			return nil
		}
		mask := cfg.FlowMarks.Mask()
		cond := fmt.Sprintf("meta mark & %#x != 0 ", mask)
		if toWorkloads {
			cond += "oifname != @" + SetWorkloadIfaces + " "
		}
		return []ruleT{newRule(fmt.Sprintf("%slog prefix %s group %d snaplen %d %s", cond, quote(flowlog.MarkedEgressID),
			cfg.FlowLogGroup, cfg.FlowLogSnaplen, markSet(mask, 0)), "flow log: the workload egress decision in the mark")}
	}
	return map[string]*chainT{
		ChainForward: base(knftables.ForwardHook, knftables.FilterPriority, knftables.FilterType,
			fast, unknown("i"), unknown("o"),
			vm("i", MapWorkloadFrom, "workload egress policy"), egressLog(true),
			vm("o", MapWorkloadTo, "workload ingress policy"),
			vm("i", MapHostForwardIn, "host endpoint applyOnForward ingress policy"),
			vm("o", MapHostForwardOut, "host endpoint applyOnForward egress policy")),
		ChainInput: base(knftables.InputHook, knftables.FilterPriority, knftables.FilterType,
			fast, unknown("i"), nd("i"),
			vm("i", MapWorkloadFrom, "workload egress policy"), egressLog(false), toHost, failIn,
			vm("i", MapHostIn, "host endpoint ingress policy")),
		ChainOutput: base(knftables.OutputHook, knftables.FilterPriority, knftables.FilterType,
			fast, unknown("o"), nd("o"),
			vm("o", MapWorkloadTo, "workload ingress policy"), hostToWl, failOut,
			vm("o", MapHostOut, "host endpoint egress policy")),
		ChainPreDNAT: base(knftables.PreroutingHook, knftables.ManglePriority, knftables.FilterType,
			fast[:1], failIn, vm("i", MapHostPreDNATIn, "host endpoint preDNAT policy")),
		ChainRawPrerouting: base(knftables.PreroutingHook, knftables.RawPriority, knftables.FilterType,
			failIn, vm("i", MapHostUntrackedIn, "host endpoint untracked ingress policy")),
		ChainRawOutput: base(knftables.OutputHook, knftables.RawPriority, knftables.FilterType,
			failOut, vm("o", MapHostUntrackOut, "host endpoint untracked egress policy")),
		ChainNATPostrouting: base(knftables.PostroutingHook, knftables.SNATPriority, knftables.NATType,
			[]ruleT{
				newRule(fmt.Sprintf("ip saddr @%s ip daddr != @%s %s", SetNATPoolsV4, SetPoolsV4, natV4), "natOutgoing: from a NAT pool to outside every pool"),
				newRule(fmt.Sprintf("ip6 saddr @%s ip6 daddr != @%s masquerade", SetNATPoolsV6, SetPoolsV6), "natOutgoing: from a NAT pool to outside every pool"),
			}),
	}
}
