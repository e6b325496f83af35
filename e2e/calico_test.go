package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Calico-specific scenarios, with projectcalico.org/v3 resources, on the
// same model (x, y, z × a, b, c).

// nsSel is a selector on namespace labels naming one model namespace.
func nsSel(m *Model, key string) string {
	return fmt.Sprintf("projectcalico.org/name == '%s'", m.NS[key])
}

func ip32(p *Pod) string { return netip.PrefixFrom(p.IP, 32).String() }

func TestCalico(t *testing.T) {
	t.Run("tiers with Pass and tier default actions", func(t *testing.T) {
		c, m := start(t)
		tier := "sec-" + c.ID()
		tierManifest := func(defaultAction string) string {
			return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: %s}
spec: {order: 100, defaultAction: %s}
`, tier, defaultAction)
		}
		// Tier sec: traffic into x from y is passed on to the default tier,
		// from z allowed outright, anything else ends at the tier's
		// default action. Tier default: into x only pods "b" (any
		// namespace).
		c.Apply(t, tierManifest("Deny")+fmt.Sprintf(`---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: guard-x}
spec:
  tier: %s
  order: 10
  namespaceSelector: "%s"
  selector: all()
  types: [Ingress]
  ingress:
  - action: Pass
    source: {namespaceSelector: "%s"}
  - action: Allow
    source: {namespaceSelector: "%s"}
`, tier, nsSel(m, "x"), nsSel(m, "y"), nsSel(m, "z"))+"---\n"+
			netpol(m.NS["x"], "only-b", nil, ingress(from(bothPeer(labels(), labels("pod", "b"))))))
		expect(t, c, m, "into x: y passed to default (b only), z allowed by tier sec, x denied at the end of sec",
			func(f, to *Pod, _ Case) bool {
				switch {
				case !m.In(to, "x"):
					return true
				case m.In(f, "y"):
					return f.Name == "b"
				case m.In(f, "z"):
					return true
				}
				return false
			})
		c.Apply(t, tierManifest("Pass"))
		expect(t, c, m, "tier sec defaultAction Pass: x now reaches the default tier too",
			func(f, to *Pod, _ Case) bool {
				switch {
				case !m.In(to, "x"):
					return true
				case m.In(f, "z"):
					return true
				}
				return f.Name == "b"
			})
	})

	t.Run("Deny before Allow by order", func(t *testing.T) {
		c, m := start(t)
		gnp := func(name string, order int, rules string) string {
			return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: %s}
spec:
  order: %d
  namespaceSelector: "%s"
  selector: all()
  types: [Ingress]
  ingress:
%s
`, name, order, nsSel(m, "x"), rules)
		}
		denyY := fmt.Sprintf("  - action: Deny\n    source: {namespaceSelector: \"%s\"}", nsSel(m, "y"))
		c.Apply(t, gnp("deny-y", 10, denyY)+"---\n"+gnp("allow-all", 20, "  - action: Allow"))
		expect(t, c, m, "deny (order 10) before allow (order 20): y shut out of x",
			func(f, to *Pod, _ Case) bool { return !m.In(to, "x") || !m.In(f, "y") })
		c.Apply(t, gnp("deny-y", 30, denyY))
		expect(t, c, m, "deny moved to order 30, after the allow: everything", AllowAll)
		// Within one policy, rules in order: the first match decides.
		c.Delete(t, gnp("deny-y", 30, denyY))
		c.Apply(t, gnp("allow-all", 20, fmt.Sprintf(
			"  - action: Allow\n    source: {namespaceSelector: \"%s\", selector: \"pod == 'a'\"}\n%s\n  - action: Allow",
			nsSel(m, "y"), denyY)))
		expect(t, c, m, "rules [allow y/a, deny y, allow]: of y only y/a reaches x",
			func(f, to *Pod, _ Case) bool { return !m.In(to, "x") || !m.In(f, "y") || f.Name == "a" })
	})

	t.Run("Log", func(t *testing.T) {
		c, m := start(t)
		host := c.Hosts()[0]
		logs, err := SubscribeNFLOG(host.NetNS(), 1)
		if err != nil {
			t.Fatalf("NFLOG group 1 in the host namespace: %v", err)
		}
		defer logs.Close()
		xa, zc, yc := m.P("x/a"), m.P("z/c"), m.P("y/c")
		c.Apply(t, fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: log-x-a}
spec:
  order: 10
  namespaceSelector: "%s"
  selector: "pod == 'a'"
  types: [Ingress]
  ingress:
  - action: Log
    protocol: TCP
    source: {namespaceSelector: "%s", selector: "pod == 'c'"}
  - action: Allow
`, nsSel(m, "x"), nsSel(m, "z")))
		seen := func(from *Pod) []NFLogPacket {
			pkts, _ := logs.Packets()
			var out []NFLogPacket
			for _, p := range pkts {
				if p.Src == from.IP && p.Dst == xa.IP {
					out = append(out, p)
				}
			}
			return out
		}
		// Log continues with the next rule: z/c still connects, and its
		// connection is logged; y/c's is not.
		Eventually(t, c, "z/c -> x/a logged", ConvergeWithin, func() (bool, string) {
			ok := c.Probe(zc, xa, 80, "tcp", PollTimeout)
			pkts, err := logs.Packets()
			return ok && len(seen(zc)) > 0, fmt.Sprintf("z/c -> x/a:80 %s; %d NFLOG packets (err %v): %v", yes(ok), len(pkts), err, pkts)
		})
		if !c.Probe(yc, xa, 80, "tcp", ConfirmTimeout) {
			t.Errorf("y/c -> x/a:80 blocked; the policy allows it")
		}
		if !c.Probe(zc, xa, 81, "udp", ConfirmTimeout) {
			t.Errorf("z/c -> x/a udp/81 blocked; the policy allows it")
		}
		time.Sleep(100 * time.Millisecond)
		if p := seen(yc); len(p) > 0 {
			t.Errorf("y/c's connection was logged, the Log rule matches z/c only: %v", p)
		}
		for _, p := range seen(zc) {
			if !strings.Contains(p.Prefix, "log-x-a") {
				t.Errorf("NFLOG prefix %q does not name the policy log-x-a", p.Prefix)
			}
			if !strings.Contains(p.Prefix, "default") {
				t.Errorf("NFLOG prefix %q does not name the tier", p.Prefix)
			}
		}
		pkts := seen(zc)
		t.Logf("%d NFLOG packets for z/c -> x/a, e.g. prefix %q", len(pkts), pkts[0].Prefix)
		// One more connection is one more log line: its first packet
		// meets the rule, the rest pass as established.
		before := len(pkts)
		if !c.Probe(zc, xa, 80, "tcp", ConfirmTimeout) {
			t.Fatalf("z/c -> x/a:80 blocked")
		}
		time.Sleep(200 * time.Millisecond)
		if after := len(seen(zc)); after != before+1 {
			t.Errorf("one connection z/c -> x/a:80 logged %d packets, want 1 (its SYN)", after-before)
		}
	})

	t.Run("GlobalNetworkSet and notNets", func(t *testing.T) {
		c, m := start(t)
		set := "ys-" + c.ID()
		netset := func(nets ...string) string {
			return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: %s, labels: {netset: %s}}
spec: {nets: [%s]}
`, set, set, strings.Join(nets, ", "))
		}
		c.Apply(t, netset(ip32(m.P("y/a")), ip32(m.P("y/b")))+fmt.Sprintf(`---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: netsets}
spec:
  namespaceSelector: "%s"
  selector: "pod == 'a'"
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: "netset == '%s'"}
  - action: Allow
    source: {notNets: [%s]}
`, nsSel(m, "x"), set, ip32(m.P("z/a"))))
		expect(t, c, m, "x/a: y/a, y/b denied by the set, z/a left out by notNets",
			onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool {
				return f != m.P("y/a") && f != m.P("y/b") && f != m.P("z/a")
			}))
		c.Apply(t, netset(ip32(m.P("y/c"))))
		expect(t, c, m, "set now holds y/c only",
			onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return f != m.P("y/c") && f != m.P("z/a") }))
	})

	t.Run("named ports", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: named, namespace: %s}
spec:
  selector: all()
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [serve-80-tcp]}
  - action: Allow
    protocol: UDP
    destination: {ports: [serve-81-udp]}
`, m.NS["x"]))
		expect(t, c, m, "into x: serve-80-tcp and serve-81-udp only", func(f, to *Pod, c Case) bool {
			return !m.In(to, "x") || c == Case{80, "tcp"} || c == Case{81, "udp"}
		})
		// Named ports resolve per endpoint: on x/b, serve-80-tcp is 81.
		xb := m.P("x/b")
		c.SetPodPorts(t, xb, []Port{{"serve-80-tcp", "TCP", 81}, {"serve-81-tcp", "TCP", 80},
			{"serve-80-udp", "UDP", 80}, {"serve-81-udp", "UDP", 81}})
		expect(t, c, m, "x/b declares serve-80-tcp as 81", func(f, to *Pod, c Case) bool {
			switch {
			case !m.In(to, "x"):
				return true
			case to == xb:
				return c == Case{81, "tcp"} || c == Case{81, "udp"}
			}
			return c == Case{80, "tcp"} || c == Case{81, "udp"}
		})
	})

	t.Run("ICMP type and code", func(t *testing.T) {
		c, m := start(t)
		xa := m.P("x/a")
		sources := []*Pod{m.P("x/b"), m.P("y/a"), m.P("z/c")}
		pings := func(want bool) func() (bool, string) {
			return func() (bool, string) {
				var bad []string
				for _, s := range sources {
					if c.Probe(s, xa, 0, "icmp", PollTimeout) != want {
						bad = append(bad, s.String())
					}
				}
				return len(bad) == 0, fmt.Sprintf("ping to x/a from %v: want %s", bad, yes(want))
			}
		}
		Eventually(t, c, "ping x/a without policy", ConvergeWithin, pings(true))
		icmpPolicy := func(match string) string {
			return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: icmp-x-a}
spec:
  namespaceSelector: "%s"
  selector: "pod == 'a'"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: ICMP
    %s
`, nsSel(m, "x"), match)
		}
		c.Apply(t, icmpPolicy("icmp: {type: 8, code: 0}"))
		expect(t, c, m, "x/a: echo request only, no TCP/UDP", onlyFrom(m, xa, func(*Pod, Case) bool { return false }))
		Eventually(t, c, "echo request (8/0) allowed", ConvergeWithin, pings(true))
		c.Apply(t, icmpPolicy("icmp: {type: 8, code: 1}"))
		Eventually(t, c, "only type 8 code 1 allowed: echo (code 0) dropped", ConvergeWithin, pings(false))
		c.Apply(t, icmpPolicy("notICMP: {type: 8}"))
		Eventually(t, c, "ICMP but type 8 allowed: echo dropped", ConvergeWithin, pings(false))
		c.Apply(t, icmpPolicy("notICMP: {type: 13}"))
		Eventually(t, c, "ICMP but type 13 allowed: echo passes", ConvergeWithin, pings(true))
	})

	t.Run("profiles and labelsToApply", func(t *testing.T) {
		c, m := start(t)
		tag := "tagged-" + c.ID()
		profile := func(color string) string {
			return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: %s}
spec:
  labelsToApply: {color: %s}
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
`, tag, color)
		}
		c.Apply(t, profile("blue")+fmt.Sprintf(`---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: blue-only, namespace: %s}
spec:
  selector: "pod == 'b'"
  types: [Ingress]
  ingress:
  - action: Allow
    source: {selector: "color == 'blue'", namespaceSelector: all()}
`, m.NS["y"]))
		xa, yb := m.P("x/a"), m.P("y/b")
		expect(t, c, m, "nobody is blue yet: y/b closed", onlyFrom(m, yb, func(*Pod, Case) bool { return false }))
		c.SetPodProfiles(t, xa, []string{"kns." + xa.Namespace, tag})
		expect(t, c, m, "x/a inherits color=blue from its profile: x/a reaches y/b",
			onlyFrom(m, yb, func(f *Pod, _ Case) bool { return f == xa }))
		c.Apply(t, profile("red"))
		expect(t, c, m, "profile now applies color=red: y/b closed again",
			onlyFrom(m, yb, func(*Pod, Case) bool { return false }))
		// A profile's own rules, in the endpoint's profile order: a
		// denying profile before the namespace's allow-all closes x/c.
		deny := "deny-" + c.ID()
		c.Apply(t, fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: %s}
spec:
  ingress: [{action: Deny}]
  egress: [{action: Allow}]
`, deny))
		xc := m.P("x/c")
		c.SetPodProfiles(t, xc, []string{deny, "kns." + xc.Namespace})
		expect(t, c, m, "x/c: profile [deny, kns] closes it; y/b still closed", func(f, to *Pod, _ Case) bool {
			return to != xc && to != yb
		})
	})

	t.Run("HostEndpoint with failsafe ports", func(t *testing.T) {
		c, m := start(t)
		host, out := c.Hosts()[0], c.Outside()
		srv := &Servers{}
		defer srv.Close()
		for _, p := range []int{22, 8022} {
			if err := srv.ServeTCP(host.NetNS(), p); err != nil {
				t.Fatal(err)
			}
		}
		if err := srv.ServeTCP(out.NetNS(), 8080); err != nil {
			t.Fatal(err)
		}
		reach := func(want22, want8022, wantFwd bool) func() (bool, string) {
			return func() (bool, string) {
				a := c.Probe(out, host, 22, "tcp", PollTimeout)
				b := c.Probe(out, host, 8022, "tcp", PollTimeout)
				f := c.Probe(m.P("x/a"), out, 8080, "tcp", PollTimeout)
				return a == want22 && b == want8022 && f == wantFwd,
					fmt.Sprintf("outside -> host:22 %s, outside -> host:8022 %s, x/a -> outside:8080 %s", yes(a), yes(b), yes(f))
			}
		}
		Eventually(t, c, "no host endpoint: host open", ConvergeWithin, reach(true, true, true))
		hep := fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: uplink-%s, labels: {hep: uplink}}
spec: {node: %s, interfaceName: %s, expectedIPs: [%s]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: hep-deny-all}
spec:
  selector: "hep == 'uplink'"
  types: [Ingress, Egress]
`, c.ID(), host.Node, host.Uplink, host.IP)
		c.Apply(t, hep)
		// Deny-all on the uplink: only the failsafe port 22 stays open;
		// forwarded traffic (no applyOnForward) is not the host's.
		Eventually(t, c, "deny-all on the uplink: failsafe 22 only", ConvergeWithin, reach(true, false, true))
		c.Apply(t, fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: hep-allow-8022}
spec:
  order: 10
  selector: "hep == 'uplink'"
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [8022]}}]
`))
		Eventually(t, c, "policy allows 8022", ConvergeWithin, reach(true, true, true))
		c.Delete(t, hep)
		Eventually(t, c, "host endpoint deleted", ConvergeWithin, reach(true, true, true))
	})

	t.Run("natOutgoing", func(t *testing.T) {
		c, m := start(t)
		host, out := c.Hosts()[0], c.Outside()
		srv := &Servers{}
		defer srv.Close()
		xa, ya := m.P("x/a"), m.P("y/a")
		if err := srv.ServeWhoami(out.NetNS(), 8080); err != nil {
			t.Fatal(err)
		}
		if err := srv.ServeWhoami(ya.NetNS(), 8080); err != nil {
			t.Fatal(err)
		}
		seenAs := func(to Target, want netip.Addr) func() (bool, string) {
			return func() (bool, string) {
				got, err := Whoami(xa, to, 8080, PollTimeout)
				return err == nil && got == want, fmt.Sprintf("x/a -> %s seen from %v (err %v), want %v", to, got, err, want)
			}
		}
		Eventually(t, c, "pool without natOutgoing: outside sees the pod", ConvergeWithin, seenAs(out, xa.IP))
		if _, ok := c.Get(t, "ippool", "", c.PoolName()); !ok {
			t.Fatalf("no pool %s", c.PoolName())
		}
		c.Patch(t, "ippool", "", c.PoolName(), `{"spec":{"natOutgoing":true}}`)
		Eventually(t, c, "natOutgoing: outside sees the host's uplink address", ConvergeWithin, seenAs(out, host.IP))
		Eventually(t, c, "natOutgoing: pod to pod keeps the pod's address", ConvergeWithin, seenAs(ya, xa.IP))
		c.Patch(t, "ippool", "", c.PoolName(), `{"spec":{"natOutgoing":false}}`)
		Eventually(t, c, "natOutgoing off again: outside sees the pod", ConvergeWithin, seenAs(out, xa.IP))
	})
}
