package nft

import (
	"net/netip"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
)

// featureScenario has every rule feature of Calico's model on two
// workloads, host endpoints with every kind of host policy, and pools.
func featureScenario() *scenario {
	s := newScenario()
	s.set("s:front", calc.AddressSet, member("10.0.1.1/32"), member("10.0.1.0/24"), member("fd00::1/128"))
	s.set("s:bad", calc.AddressSet, member("10.0.1.66/32"))
	s.set("n:http", calc.NamedPortSet, npMember("10.0.0.2/32", 8080), npMember("fd00::2/128", 8080))

	sec := gpol("sec", "security", []calc.Rule{
		rule("security sec I0", calc.Log, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(23, 23) }),
		rule("security sec I1", calc.Deny, func(r *calc.Rule) {
			r.Src.Nets = []netip.Prefix{pfx("10.66.0.0/16"), pfx("2001:db8:66::/48"), pfx("10.66.1.0/24")}
		}),
		rule("security sec I2", calc.Pass, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(22, 22, 80, 80) }),
		rule("security sec I3", calc.Allow, func(r *calc.Rule) {
			r.Protocol = calc.ProtoICMP
			r.ICMP = &calc.ICMPMatch{Type: 8, Code: 0, HasCode: true}
		}),
		rule("security sec I4", calc.Allow, func(r *calc.Rule) {
			r.Protocol = calc.ProtoICMPv6
			r.ICMP = &calc.ICMPMatch{Type: 128}
		}),
		rule("security sec I5", calc.Deny, func(r *calc.Rule) {
			r.Protocol = calc.ProtoICMP
			r.NotICMP = &calc.ICMPMatch{Type: 0, Code: 0, HasCode: true}
		}),
		rule("security sec I6", calc.Deny, func(r *calc.Rule) { r.Src.NotIPSet = "s:front"; r.Src.IPSet = "s:bad" }),
	}, nil)
	sec.ID.Name = "security.sec"
	web := gpol("web", "default", []calc.Rule{
		rule("default web I0", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(80, 80); r.Src.IPSet = "s:front" }),
		rule("default web I1", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.NamedPortSets = []string{"n:http"} }),
		rule("default web I2", calc.Allow, func(r *calc.Rule) {
			r.Protocol = calc.ProtoUDP
			r.Dst.Ports = ports(5000, 5999)
			r.Dst.NotPorts = ports(5500, 5500)
		}),
		rule("default web I3", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoSCTP; r.Dst.Ports = ports(9000, 9000) }),
		rule("default web I4", calc.Allow, func(r *calc.Rule) { r.Protocol = 47 }),
		rule("default web I5", calc.Allow, func(r *calc.Rule) { r.IPVersion = 6; r.Protocol = calc.ProtoUDP }),
		rule("default web I6", calc.Allow, func(r *calc.Rule) {
			r.Protocol = calc.ProtoTCP
			r.Dst.Ports = ports(8000, 8100)
			r.Src.Nets = []netip.Prefix{pfx("192.168.0.0/16")}
			r.Src.NotNets = []netip.Prefix{pfx("192.168.9.0/24")}
			r.Src.Ports = ports(1024, 65535)
		}),
		rule("default web I7", calc.Allow, func(r *calc.Rule) {
			r.NotProtocol = calc.ProtoUDP
			r.Dst.Nets = []netip.Prefix{pfx("10.0.0.2/32")}
			r.Protocol = calc.ProtoTCP
			r.Dst.Ports = ports(7000, 7000)
		}),
	}, nil)
	s.pol(sec)
	s.pol(web)
	s.prof(&calc.Profile{Name: "kns.ns",
		Ingress: []calc.Rule{rule("profile kns.ns I0", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(443, 443) })},
		Egress:  []calc.Rule{rule("profile kns.ns E0", calc.Allow, nil)}})

	e := wl("web", "caliweb", "10.0.0.2/32", "fd00::2/128")
	e.Ingress = []calc.TierPolicies{tierOf("security", calc.Pass, sec), tierOf("default", calc.Deny, web)}
	e.Profiles = []calc.ProfileRef{{Name: "kns.ns"}}
	s.ep(e)
	db := wl("db", "calidb", "10.0.0.3/32")
	db.Profiles = []calc.ProfileRef{{Name: "gone", Missing: true}}
	s.ep(db)
	return s
}

// mergedScenario has runs of rules that programs merge (merge.go): nets
// with ports of both families, nested nets with overlapping ports, the
// destination side, a selector on several ports, a run cut by a Log rule,
// and a Deny run.
func mergedScenario() *scenario {
	s := newScenario()
	s.set("s:front", calc.AddressSet, member("10.0.1.1/32"), member("fd00::1/128"))
	nets := func(prefix string, a calc.Action, p uint8, side string, pr []calc.PortRange, ns ...string) calc.Rule {
		return rule(prefix, a, func(r *calc.Rule) {
			r.Protocol, r.Dst.Ports = p, pr
			e := &r.Src
			if side == "dst" {
				e = &r.Dst
			}
			for _, n := range ns {
				e.Nets = append(e.Nets, pfx(n))
			}
		})
	}
	front := func(prefix string, pr []calc.PortRange) calc.Rule {
		return rule(prefix, calc.Allow, func(r *calc.Rule) { r.Protocol, r.Dst.Ports, r.Src.IPSet = calc.ProtoTCP, pr, "s:front" })
	}
	web := gpol("web", "default", []calc.Rule{
		nets("default web I0", calc.Allow, calc.ProtoTCP, "src", ports(80, 90), "10.1.0.0/16", "fd00:1::/64"),
		front("default web I1", ports(443, 443)),
		nets("default web I2", calc.Allow, calc.ProtoTCP, "src", ports(85, 100, 8080, 8080), "10.1.2.0/24"),
		front("default web I3", ports(8000, 8100)),
		nets("default web I4", calc.Allow, calc.ProtoTCP, "src", ports(22, 22), "192.0.2.7/32", "2001:db8::/32"),
		nets("default web I5", calc.Allow, calc.ProtoTCP, "dst", ports(5432, 5432), "10.0.0.2/32"),
		nets("default web I6", calc.Allow, calc.ProtoTCP, "dst", ports(6379, 6379), "10.0.0.0/24"),
		nets("default web I7", calc.Allow, calc.ProtoUDP, "src", ports(53, 53), "10.1.0.0/16"),
		rule("default web I8", calc.Log, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP }),
		front("default web I9", ports(9000, 9000)),
		nets("default web I10", calc.Deny, calc.ProtoTCP, "src", ports(1, 1024), "198.51.100.0/24"),
		nets("default web I11", calc.Deny, calc.ProtoTCP, "src", ports(2000, 3000), "203.0.113.0/24"),
	}, nil)
	s.pol(web)
	e := wl("web", "caliweb", "10.0.0.2/32", "fd00::2/128")
	e.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, web)}
	s.ep(e)
	return s
}

func hostScenario() *scenario {
	s := newScenario()
	s.pools = []Pool{{CIDR: pfx("10.0.0.0/16"), NATOutgoing: true}, {CIDR: pfx("10.1.0.0/16")}, {CIDR: pfx("fd00::/48"), NATOutgoing: true}}
	ssh := gpol("allow-web", "default", []calc.Rule{
		rule("default allow-web I0", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(80, 80) }),
	}, []calc.Rule{rule("default allow-web E0", calc.Allow, nil)})
	fwd := gpol("fwd", "default", []calc.Rule{
		rule("default fwd I0", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoTCP; r.Dst.Ports = ports(8080, 8080) }),
	}, nil)
	fwd.ApplyOnForward = true
	pre := gpol("pre", "default", []calc.Rule{
		rule("default pre I0", calc.Deny, func(r *calc.Rule) { r.Src.Nets = []netip.Prefix{pfx("203.0.113.0/24")} }),
	}, nil)
	pre.ApplyOnForward, pre.PreDNAT = true, true
	untr := gpol("untracked", "default", []calc.Rule{
		rule("default untracked I0", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoUDP; r.Dst.Ports = ports(4789, 4789) }),
	}, []calc.Rule{rule("default untracked E0", calc.Allow, func(r *calc.Rule) { r.Protocol = calc.ProtoUDP; r.Src.Ports = ports(4789, 4789) })})
	untr.ApplyOnForward, untr.DoNotTrack = true, true
	for _, p := range []*calc.Policy{ssh, fwd, pre, untr} {
		s.pol(p)
	}
	h := &calc.Endpoint{ID: calc.EndpointID{Kind: v3.KindHostEndpoint, Name: "eth0"}, InterfaceName: "eth0",
		Addresses: []netip.Prefix{pfx("192.0.2.10/32")}}
	h.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, ssh, fwd)}
	h.Egress = []calc.TierPolicies{tierOf("default", calc.Deny, ssh)}
	h.Host = &calc.HostPolicies{
		ForwardIngress:   []calc.TierPolicies{tierOf("default", calc.Deny, fwd)},
		PreDNATIngress:   []calc.TierPolicies{tierOf("default", calc.Deny, pre)},
		UntrackedIngress: []calc.TierPolicies{tierOf("default", calc.Deny, untr)},
		UntrackedEgress:  []calc.TierPolicies{tierOf("default", calc.Deny, untr)},
	}
	s.ep(h)
	all := &calc.Endpoint{ID: calc.EndpointID{Kind: v3.KindHostEndpoint, Name: "all"}, InterfaceName: "*", Host: &calc.HostPolicies{}}
	all.Ingress = []calc.TierPolicies{tierOf("default", calc.Deny, ssh)}
	s.ep(all)
	return s
}

func testMarks(t *testing.T) *flowlog.Marks {
	m, err := flowlog.NewMarks(flowlog.DefaultMarkMask)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGolden(t *testing.T) {
	for name, c := range map[string]struct {
		s   *scenario
		cfg Config
	}{
		"empty":    {s: newScenario()},
		"features": {s: featureScenario()},
		"host":     {s: hostScenario()},
		"merged":   {s: mergedScenario()},
		// Every deciding rule logs to the flow log group first.
		"flowlogs": {s: featureScenario(), cfg: Config{FlowLogGroup: 30}},
		// Workload egress Allow rules write their number into the mark
		// instead; the base chains log what leaves for elsewhere.
		"flowmarks": {s: featureScenario(), cfg: Config{FlowLogGroup: 30, FlowMarks: testMarks(t)}},
	} {
		t.Run(name, func(t *testing.T) {
			f, _ := renderWith(t, c.s, c.cfg)
			checkGolden(t, name, sortedDump(f))
		})
	}
}
