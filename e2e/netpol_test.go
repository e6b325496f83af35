package e2e

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	netv1 "k8s.io/api/networking/v1"
)

// The upstream Kubernetes network policy e2e scenarios
// (test/e2e/network/netpol; the checklist is
// testdata/shared/testdata/k8s-netpol-e2e-scenarios.txt at the repository
// root), on the upstream model: namespaces x, y, z with pods a, b, c.
// Upstream probes each scenario on one or two port/protocol pairs; here every
// scenario is checked on the full matrix (ports 80 and 81, TCP and UDP), so
// each expectation below states what a cluster must do for all four. Pod
// to itself is never probed (loopback does not leave the pod; upstream
// ignores it too).

func TestNetpol(t *testing.T) {
	t.Run("NetworkPolicy between server and client", func(t *testing.T) {
		for _, sc := range serverClientScenarios {
			t.Run(sc.name, sc.run)
		}
	})
}

func TestNetpolUDP(t *testing.T) {
	t.Run("NetworkPolicy between server and client using UDP", func(t *testing.T) {
		for _, sc := range udpScenarios {
			t.Run(sc.name, sc.run)
		}
	})
}

type scenarioT struct {
	name string
	run  func(t *testing.T)
}

// only allows to reach dst from the sources for which ok holds (ingress
// isolation of dst); everything else as before.
func onlyFrom(m *Model, dst *Pod, ok func(from *Pod, c Case) bool) Expectation {
	return func(f, to *Pod, c Case) bool {
		if to == dst {
			return ok(f, c)
		}
		return true
	}
}

var serverClientScenarios = []scenarioT{
	{"should support a 'default-deny-ingress' policy", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-ingress", nil, ingress()))
		expect(t, c, m, "nothing enters x", func(f, to *Pod, _ Case) bool { return !m.In(to, "x") })
	}},
	{"should support a 'default-deny-all' policy", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-all", nil, ingress(), egress()))
		expect(t, c, m, "nothing enters or leaves x", func(f, to *Pod, _ Case) bool {
			return !m.In(to, "x") && !m.In(f, "x")
		})
	}},
	{"should enforce policy to allow traffic from pods within server namespace based on PodSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "x-a-allows-x-b", map[string]string{"pod": "a"}, ingress(from(podPeer(labels("pod", "b"))))))
		expect(t, c, m, "only x/b reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return f == m.P("x/b") }))
	}},
	{"should enforce policy to allow ingress traffic for a target", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-all", nil, ingress()))
		c.Apply(t, netpol(m.NS["x"], "allow-all-to-a", map[string]string{"pod": "a"},
			ingress(from(bothPeer(labels(), labels())))))
		expect(t, c, m, "x/a open, x/b and x/c closed", func(f, to *Pod, _ Case) bool {
			return !m.In(to, "x") || to == m.P("x/a")
		})
	}},
	{"should enforce policy to allow ingress traffic from pods in all namespaces", func(t *testing.T) {
		c, m := start(t)
		// Upstream's matrix for this one is all-allowed, so it could not
		// tell an ignored policy from an enforced one. What makes it
		// observable: the rule admits pods of every namespace and nothing
		// else, so the outside (not a pod) is shut out of x/a while it
		// still reaches x/b.
		srv := &Servers{}
		defer srv.Close()
		c.Apply(t, netpol(m.NS["x"], "allow-from-another-ns", map[string]string{"pod": "a"}, ingress(from(nsPeer(labels())))))
		expect(t, c, m, "every pod reaches x/a", AllowAll)
		out := c.Outside()
		Eventually(t, c, "outside shut out of x/a, not x/b", ConvergeWithin, func() (bool, string) {
			a := c.Probe(out, m.P("x/a"), 80, "tcp", PollTimeout)
			b := c.Probe(out, m.P("x/b"), 80, "tcp", PollTimeout)
			return !a && b, "outside -> x/a:80 " + yes(a) + ", outside -> x/b:80 " + yes(b)
		})
	}},
	{"should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-ns-selector", map[string]string{"pod": "a"},
			ingress(from(nsPeer(labels(nsNameLabel, m.NS["y"]))))))
		expect(t, c, m, "only y reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return m.In(f, "y") }))
	}},
	{"should enforce policy based on PodSelector with MatchExpressions", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "x-a-allows-x-b", map[string]string{"pod": "a"},
			ingress(from(podPeer(expr("pod", opIn, "b"))))))
		expect(t, c, m, "only x/b reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return f == m.P("x/b") }))
	}},
	{"should enforce policy based on NamespaceSelector with MatchExpressions", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ns-y-match-selector", map[string]string{"pod": "a"},
			ingress(from(nsPeer(expr(nsNameLabel, opIn, m.NS["y"]))))))
		expect(t, c, m, "only y reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return m.In(f, "y") }))
	}},
	{"should enforce policy based on PodSelector or NamespaceSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ns-y-match-selector", map[string]string{"pod": "a"},
			ingress(from(nsPeer(expr(nsNameLabel, opNotIn, m.NS["x"])), podPeer(labels("pod", "b"))))))
		expect(t, c, m, "x/a reached from y, z and x/b", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool {
			return !m.In(f, "x") || f == m.P("x/b")
		}))
	}},
	{"should enforce policy based on PodSelector and NamespaceSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ns-y-podselector-and-nsselector", map[string]string{"pod": "a"},
			ingress(from(bothPeer(expr(nsNameLabel, opNotIn, m.NS["x"]), labels("pod", "b"))))))
		expect(t, c, m, "x/a reached from y/b and z/b", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool {
			return f == m.P("y/b") || f == m.P("z/b")
		}))
	}},
	{"should enforce policy based on Multiple PodSelectors and NamespaceSelectors", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ns-y-z-pod-b-c", map[string]string{"pod": "a"},
			ingress(from(bothPeer(expr(nsNameLabel, opNotIn, m.NS["x"]), expr("pod", opIn, "b", "c"))))))
		expect(t, c, m, "x/a reached from {y,z}/{b,c}", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool {
			return !m.In(f, "x") && f.Name != "a"
		}))
	}},
	{"should enforce policy based on any PodSelectors", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ns-x-pod-b-c", map[string]string{"pod": "a"},
			ingress(from(podPeer(labels("pod", "b")), podPeer(labels("pod", "c"))))))
		expect(t, c, m, "x/a reached from x/b and x/c", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool {
			return m.In(f, "x")
		}))
	}},
	{"should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ns-y-pod-a-via-namespace-pod-selector", map[string]string{"pod": "a"},
			ingress(from(bothPeer(labels(nsNameLabel, m.NS["y"]), labels("pod", "a"))))))
		expect(t, c, m, "only y/a reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return f == m.P("y/a") }))
	}},
	{"should enforce policy based on Ports", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-ns-selector", map[string]string{"pod": "a"},
			ingress(inPorts(from(nsPeer(labels(nsNameLabel, m.NS["y"]))), port(81, TCP)))))
		expect(t, c, m, "x/a: only y on tcp/81", onlyFrom(m, m.P("x/a"), func(f *Pod, c Case) bool {
			return m.In(f, "y") && c == Case{81, "tcp"}
		}))
	}},
	{"should enforce multiple, stacked policies with overlapping podSelectors", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-ns-selector", map[string]string{"pod": "a"},
			ingress(inPorts(from(nsPeer(labels(nsNameLabel, m.NS["y"]))), port(81, TCP)))))
		expect(t, c, m, "x/a: only y on tcp/81", onlyFrom(m, m.P("x/a"), func(f *Pod, c Case) bool {
			return m.In(f, "y") && c == Case{81, "tcp"}
		}))
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-ns-selector-80", map[string]string{"pod": "a"},
			ingress(inPorts(from(nsPeer(labels(nsNameLabel, m.NS["y"]))), port(80, TCP)))))
		expect(t, c, m, "x/a: only y, on tcp/80 and tcp/81", onlyFrom(m, m.P("x/a"), func(f *Pod, c Case) bool {
			return m.In(f, "y") && c.Proto == "tcp"
		}))
	}},
	{"should support allow-all policy", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-all", nil, ingress(netv1.NetworkPolicyIngressRule{})))
		expect(t, c, m, "everything allowed", AllowAll)
		// Observable difference from no policy at all: ingress [{}]
		// admits every source, also ones that are not pods.
		Eventually(t, c, "outside reaches x/a", ConvergeWithin, func() (bool, string) {
			ok := c.Probe(c.Outside(), m.P("x/a"), 80, "tcp", PollTimeout)
			return ok, "outside -> x/a:80 " + yes(ok)
		})
	}},
	{"should allow ingress access on one named port", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-all", nil, ingress(inPorts(netv1.NetworkPolicyIngressRule{}, namedPort("serve-81-tcp", "")))))
		expect(t, c, m, "x: only tcp/81 (serve-81-tcp)", func(f, to *Pod, c Case) bool {
			return !m.In(to, "x") || c == Case{81, "tcp"}
		})
	}},
	{"should allow ingress access from namespace on one named port", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-ns-selector-80", map[string]string{"pod": "a"},
			ingress(inPorts(from(nsPeer(labels(nsNameLabel, m.NS["y"]))), namedPort("serve-80-tcp", TCP)))))
		expect(t, c, m, "x/a: only y on tcp/80 (serve-80-tcp)", onlyFrom(m, m.P("x/a"), func(f *Pod, c Case) bool {
			return m.In(f, "y") && c == Case{80, "tcp"}
		}))
	}},
	{"should allow egress access on one named port", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-egress", nil, egress(outPorts(netv1.NetworkPolicyEgressRule{}, namedPort("serve-80-tcp", "")))))
		expect(t, c, m, "x sends only tcp/80 (serve-80-tcp)", func(f, to *Pod, c Case) bool {
			return !m.In(f, "x") || c == Case{80, "tcp"}
		})
	}},
	{"should enforce updated policy", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-all-mutate-to-deny-all", nil, ingress(netv1.NetworkPolicyIngressRule{})))
		expect(t, c, m, "allow all", AllowAll)
		c.Apply(t, netpol(m.NS["x"], "allow-all-mutate-to-deny-all", nil, ingress()))
		expect(t, c, m, "updated to deny all into x", func(f, to *Pod, _ Case) bool { return !m.In(to, "x") })
	}},
	{"should allow ingress access from updated namespace", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-ns-selector", map[string]string{"pod": "a"},
			ingress(from(nsPeer(labels("ns2", "updated"))))))
		expect(t, c, m, "x/a closed", onlyFrom(m, m.P("x/a"), func(*Pod, Case) bool { return false }))
		c.Apply(t, m.NamespaceManifest("y", map[string]string{"ns2": "updated"}))
		expect(t, c, m, "y labelled: y reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return m.In(f, "y") }))
	}},
	{"should allow ingress access from updated pod", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-pod-selector", map[string]string{"pod": "a"},
			ingress(from(podPeer(labels("pod", "b", "pod2", "updated"))))))
		expect(t, c, m, "x/a closed", onlyFrom(m, m.P("x/a"), func(*Pod, Case) bool { return false }))
		c.SetPodLabels(t, m.P("x/b"), map[string]string{"pod": "b", "pod2": "updated"})
		expect(t, c, m, "x/b relabelled: x/b reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return f == m.P("x/b") }))
	}},
	{"should deny ingress from pods on other namespaces", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-empty-policy", nil, ingress(from(podPeer(labels())))))
		expect(t, c, m, "x reached from x only", func(f, to *Pod, _ Case) bool { return !m.In(to, "x") || m.In(f, "x") })
	}},
	{"should deny ingress access to updated pod", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-ingress-via-label-selector", map[string]string{"target": "isolated"}, ingress()))
		expect(t, c, m, "nothing selected yet", AllowAll)
		c.SetPodLabels(t, m.P("x/a"), map[string]string{"pod": "a", "target": "isolated"})
		expect(t, c, m, "x/a relabelled: x/a closed", onlyFrom(m, m.P("x/a"), func(*Pod, Case) bool { return false }))
	}},
	{"should deny egress from pods based on PodSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-egress-pod-a", map[string]string{"pod": "a"}, egress()))
		expect(t, c, m, "x/a sends nothing", func(f, _ *Pod, _ Case) bool { return f != m.P("x/a") })
	}},
	{"should deny egress from all pods in a namespace", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-egress-ns-x", nil, egress()))
		expect(t, c, m, "x sends nothing", func(f, _ *Pod, _ Case) bool { return !m.In(f, "x") })
	}},
	{"should work with Ingress, Egress specified together", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-pod-selector", map[string]string{"pod": "a"},
			ingress(from(podPeer(labels("pod", "b")))),
			egress(outPorts(netv1.NetworkPolicyEgressRule{}, port(80, "")))))
		xa, xb := m.P("x/a"), m.P("x/b")
		expect(t, c, m, "x/a: in from x/b only, out tcp/80 only", func(f, to *Pod, c Case) bool {
			if to == xa && f != xb {
				return false
			}
			if f == xa && c != (Case{80, "tcp"}) {
				return false
			}
			return true
		})
	}},
	{"should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", func(t *testing.T) {
		c, m := start(t)
		xa := labels("pod", "a")
		c.Apply(t, netpol(m.NS["x"], "allow-to-ns-y-pod-a", map[string]string{"pod": "a"},
			egress(to(bothPeer(labels(nsNameLabel, m.NS["y"]), xa)))))
		fromXA := ingress(from(bothPeer(labels(nsNameLabel, m.NS["x"]), xa)))
		c.Apply(t, netpol(m.NS["y"], "allow-from-xa-on-ya-match-selector", map[string]string{"pod": "a"}, fromXA))
		c.Apply(t, netpol(m.NS["y"], "allow-from-xa-on-yb-match-selector", map[string]string{"pod": "b"}, fromXA))
		expect(t, c, m, "x/a -> y/a only; y/b closed by x/a's egress", func(f, to *Pod, _ Case) bool {
			if f == m.P("x/a") {
				return to == m.P("y/a")
			}
			return to != m.P("y/a") && to != m.P("y/b")
		})
	}},
	{"should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-to-ns-y-pod-a", map[string]string{"pod": "a"},
			egress(to(bothPeer(labels(nsNameLabel, m.NS["y"]), labels("pod", "a"))))))
		expect(t, c, m, "x/a sends to y/a only", func(f, to *Pod, _ Case) bool { return f != m.P("x/a") || to == m.P("y/a") })
	}},
	{"should enforce ingress policy allowing any port traffic to a server on a specific protocol", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ingress-by-proto", map[string]string{"pod": "a"},
			ingress(inPorts(netv1.NetworkPolicyIngressRule{}, protoOnly(TCP)))))
		expect(t, c, m, "x/a: TCP on any port only", onlyFrom(m, m.P("x/a"), func(_ *Pod, c Case) bool { return c.Proto == "tcp" }))
	}},
	{"should enforce multiple ingress policies with ingress allow-all policy taking precedence", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ingress-port-80", nil, ingress(inPorts(netv1.NetworkPolicyIngressRule{}, port(80, "")))))
		expect(t, c, m, "x: tcp/80 only", func(f, to *Pod, c Case) bool { return !m.In(to, "x") || c == Case{80, "tcp"} })
		c.Apply(t, netpol(m.NS["x"], "allow-ingress", nil, ingress(netv1.NetworkPolicyIngressRule{})))
		expect(t, c, m, "allow-all added: everything", AllowAll)
	}},
	{"should enforce multiple egress policies with egress allow-all policy taking precedence", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-egress-port-80", nil, egress(outPorts(netv1.NetworkPolicyEgressRule{}, port(80, "")))))
		expect(t, c, m, "x sends tcp/80 only", func(f, _ *Pod, c Case) bool { return !m.In(f, "x") || c == Case{80, "tcp"} })
		c.Apply(t, netpol(m.NS["x"], "allow-egress", nil, egress(netv1.NetworkPolicyEgressRule{})))
		expect(t, c, m, "allow-all added: everything", AllowAll)
	}},
	{"should stop enforcing policies after they are deleted", func(t *testing.T) {
		c, m := start(t)
		pol := netpol(m.NS["x"], "deny-all", nil, ingress(), egress())
		c.Apply(t, pol)
		expect(t, c, m, "x cut off", func(f, to *Pod, _ Case) bool { return !m.In(to, "x") && !m.In(f, "x") })
		c.Delete(t, pol)
		expect(t, c, m, "deleted: everything", AllowAll)
	}},
	{"should allow egress access to server in CIDR block", func(t *testing.T) {
		c, m := start(t)
		yb := m.P("y/b")
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-cidr-egress-rule", map[string]string{"pod": "a"},
			egress(to(ipBlock(netip.PrefixFrom(yb.IP, 32).String())))))
		expect(t, c, m, "x/a sends to y/b only", func(f, to *Pod, _ Case) bool { return f != m.P("x/a") || to == yb })
	}},
	{"should enforce except clause while egress access to server in CIDR block", func(t *testing.T) {
		c, m := start(t)
		xb := m.P("x/b")
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-cidr-egress-rule", map[string]string{"pod": "a"},
			egress(to(ipBlock(largeCIDR(xb.IP), netip.PrefixFrom(xb.IP, 32).String())))))
		expect(t, c, m, "x/a sends anywhere but x/b", func(f, to *Pod, _ Case) bool { return f != m.P("x/a") || to != xb })
	}},
	{"should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", func(t *testing.T) {
		c, m := start(t)
		xb := m.P("x/b")
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-cidr-egress-rule", map[string]string{"pod": "a"},
			egress(to(ipBlock(largeCIDR(xb.IP), netip.PrefixFrom(xb.IP, 32).String())))))
		expect(t, c, m, "x/a sends anywhere but x/b", func(f, to *Pod, _ Case) bool { return f != m.P("x/a") || to != xb })
		// The same policy, updated to allow exactly the excepted address.
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-cidr-egress-rule", map[string]string{"pod": "a"},
			egress(to(ipBlock(netip.PrefixFrom(xb.IP, 32).String())))))
		expect(t, c, m, "x/a sends to x/b only", func(f, to *Pod, _ Case) bool { return f != m.P("x/a") || to == xb })
	}},
	{"should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-egress-for-target", map[string]string{"pod": "a"}, egress(netv1.NetworkPolicyEgressRule{})))
		expect(t, c, m, "egress allow-all on x/a: everything", AllowAll)
		c.Apply(t, netpol(m.NS["x"], "deny-ingress-via-label-selector", map[string]string{"pod": "a"}, ingress()))
		expect(t, c, m, "x/a closed for ingress, still sends", onlyFrom(m, m.P("x/a"), func(*Pod, Case) bool { return false }))
	}},
	{"should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-ingress", nil, ingress()))
		c.Apply(t, netpol(m.NS["x"], "allow-only-sctp-ingress-on-port-81", map[string]string{"pod": "a"},
			ingress(inPorts(netv1.NetworkPolicyIngressRule{}, port(81, SCTP)))))
		expect(t, c, m, "x closed for TCP and UDP", func(f, to *Pod, _ Case) bool { return !m.In(to, "x") })
		requireSCTPRendered(t, c, 81)
	}},
	{"should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-only-sctp-ingress-on-port-80", map[string]string{"pod": "a"},
			ingress(inPorts(netv1.NetworkPolicyIngressRule{}, port(80, SCTP)))))
		expect(t, c, m, "x/a closed for TCP and UDP", onlyFrom(m, m.P("x/a"), func(*Pod, Case) bool { return false }))
		requireSCTPRendered(t, c, 80)
	}},
	{"should not allow access by TCP when a policy specifies only UDP", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-only-udp-ingress-on-port-81", map[string]string{"pod": "a"},
			ingress(inPorts(netv1.NetworkPolicyIngressRule{}, port(81, UDP)))))
		expect(t, c, m, "x/a: udp/81 only", onlyFrom(m, m.P("x/a"), func(_ *Pod, c Case) bool { return c == Case{81, "udp"} }))
	}},
	{"should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-client-a-via-ns-selector-for-immutable-ns-label", map[string]string{"pod": "a"},
			ingress(from(nsPeer(labels(nsNameLabel, m.NS["y"]))))))
		expect(t, c, m, "only y reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return m.In(f, "y") }))
	}},
	{"should enforce policy based on NamespaceSelector with MatchExpressions using default ns label", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ns-y-match-selector-for-immutable-ns-label", map[string]string{"pod": "a"},
			egress(to(nsPeer(expr(nsNameLabel, opNotIn, m.NS["y"]))))))
		expect(t, c, m, "x/a sends anywhere but y", func(f, to *Pod, _ Case) bool { return f != m.P("x/a") || !m.In(to, "y") })
	}},
}

var udpScenarios = []scenarioT{
	{"should support a 'default-deny-ingress' policy", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "deny-all", nil, ingress()))
		expect(t, c, m, "nothing enters x (UDP included)", func(f, to *Pod, _ Case) bool { return !m.In(to, "x") })
	}},
	{"should enforce policy based on Ports", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ingress-on-port-81-ns-x", map[string]string{"pod": "a"},
			ingress(inPorts(from(nsPeer(labels(nsNameLabel, m.NS["y"]))), port(81, UDP)))))
		expect(t, c, m, "x/a: only y on udp/81", onlyFrom(m, m.P("x/a"), func(f *Pod, c Case) bool {
			return m.In(f, "y") && c == Case{81, "udp"}
		}))
	}},
	{"should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", func(t *testing.T) {
		c, m := start(t)
		c.Apply(t, netpol(m.NS["x"], "allow-ns-y-pod-a-via-namespace-pod-selector", map[string]string{"pod": "a"},
			ingress(from(bothPeer(labels(nsNameLabel, m.NS["y"]), labels("pod", "a"))))))
		expect(t, c, m, "only y/a reaches x/a (UDP included)", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return f == m.P("y/a") }))
	}},
}

// largeCIDR is a wide block around ip (a /4), as upstream builds for the
// except tests: every pod address is inside it.
func largeCIDR(ip netip.Addr) string {
	p, _ := ip.Prefix(4)
	return p.String()
}

func yes(b bool) string {
	if b {
		return "connects"
	}
	return "blocked"
}

// requireSCTPRendered checks that an SCTP port rule reached the kernel:
// SCTP cannot be probed here (the kernel has no SCTP sockets), so the
// ruleset must show SCTP (protocol 132) with the port, and TCP must not
// be what it was turned into (the matrix checks that).
func requireSCTPRendered(t *testing.T, c Cluster, port int) {
	t.Helper()
	rs := c.Ruleset(t)
	found := false
	for _, line := range strings.Split(rs, "\n") {
		if (strings.Contains(line, "sctp") || strings.Contains(line, "132")) && strings.Contains(line, strconv.Itoa(port)) {
			t.Logf("SCTP port %d in the ruleset: %s", port, strings.TrimSpace(line))
			found = true
			break
		}
	}
	if !found {
		t.Errorf("no SCTP rule or class for port %d in the ruleset:\n%s", port, rs)
	}
}

// SCTP: the kernel here has no SCTP sockets, so nothing can be probed over
// SCTP. Each upstream SCTP scenario runs with its SCTP policy and checks
// what can be checked: the isolation the policy causes over TCP and UDP
// (an SCTP rule must open neither), and that the SCTP rule itself reached
// the kernel (ruleset).
func TestNetpolSCTP(t *testing.T) {
	t.Run("NetworkPolicy between server and client using SCTP", func(t *testing.T) {
		t.Run("should support a 'default-deny-ingress' policy", func(t *testing.T) {
			// The policy has no protocol in it: SCTP traffic meets the same
			// rule as the TCP and UDP probed here.
			c, m := start(t)
			c.Apply(t, netpol(m.NS["x"], "deny-all", nil, ingress()))
			expect(t, c, m, "nothing enters x", func(f, to *Pod, _ Case) bool { return !m.In(to, "x") })
		})
		t.Run("should enforce policy based on Ports", func(t *testing.T) {
			c, m := start(t)
			c.Apply(t, netpol(m.NS["x"], "allow-ingress-on-port-81-ns-x", map[string]string{"pod": "a"},
				ingress(inPorts(from(nsPeer(labels(nsNameLabel, m.NS["y"]))), port(81, SCTP)))))
			expect(t, c, m, "x/a isolated; sctp/81 from y opens no TCP/UDP", onlyFrom(m, m.P("x/a"), func(*Pod, Case) bool { return false }))
			requireSCTPRendered(t, c, 81)
		})
		t.Run("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", func(t *testing.T) {
			// No ports in the policy: the peer selection is protocol
			// independent, and probed over TCP and UDP.
			c, m := start(t)
			c.Apply(t, netpol(m.NS["x"], "allow-ns-y-pod-a-via-namespace-pod-selector", map[string]string{"pod": "a"},
				ingress(from(bothPeer(labels(nsNameLabel, m.NS["y"]), labels("pod", "a"))))))
			expect(t, c, m, "only y/a reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return f == m.P("y/a") }))
		})
	})
}

// Netpol API: upstream exercises the API server (create, get, list,
// update, patch, delete, watch). tortie has no API server; the nearest real
// equivalent is the path a manifest takes here: `tortie apply`, `get` and
// `delete` of networking.k8s.io/v1 objects, stored as the converted v3
// policy, with enforcement following every step.
func TestNetpolAPI(t *testing.T) {
	t.Run("should support creating NetworkPolicy API operations", func(t *testing.T) {
		c, m := start(t)
		nsX := m.NS["x"]
		stored := "knp.default.api-test"
		if _, ok := c.Get(t, "networkpolicy", nsX, stored); ok {
			t.Fatalf("%s exists before it was created", stored)
		}
		create := netpol(nsX, "api-test", map[string]string{"pod": "a"}, ingress(from(nsPeer(labels(nsNameLabel, m.NS["y"])))))
		c.Apply(t, create)
		got, ok := c.Get(t, "networkpolicy", nsX, stored)
		if !ok || !strings.Contains(got, m.NS["y"]) || !strings.Contains(got, "tier: default") {
			t.Fatalf("after create, get %s:\n%s", stored, got)
		}
		expect(t, c, m, "created: only y reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return m.In(f, "y") }))
		c.Apply(t, netpol(nsX, "api-test", map[string]string{"pod": "a"}, ingress(from(nsPeer(labels(nsNameLabel, m.NS["z"]))))))
		got, _ = c.Get(t, "networkpolicy", nsX, stored)
		if !strings.Contains(got, m.NS["z"]) || strings.Contains(got, m.NS["y"]) {
			t.Fatalf("after update, get %s:\n%s", stored, got)
		}
		expect(t, c, m, "updated: only z reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return m.In(f, "z") }))
		c.Delete(t, create)
		if got, ok := c.Get(t, "networkpolicy", nsX, stored); ok {
			t.Fatalf("after delete, get %s still finds:\n%s", stored, got)
		}
		expect(t, c, m, "deleted: everything", AllowAll)
	})
	t.Run("should support creating NetworkPolicy API with endport field", func(t *testing.T) {
		c, m := start(t)
		nsX := m.NS["x"]
		c.Apply(t, netpol(nsX, "endport", map[string]string{"pod": "a"}, ingress(inPorts(netv1.NetworkPolicyIngressRule{}, portRange(80, 81, TCP)))))
		if got, _ := c.Get(t, "networkpolicy", nsX, "knp.default.endport"); !strings.Contains(got, "80:81") {
			t.Errorf("stored policy has no port range 80:81:\n%s", got)
		}
		expect(t, c, m, "x/a: tcp 80-81", onlyFrom(m, m.P("x/a"), func(_ *Pod, c Case) bool { return c.Proto == "tcp" }))
		c.Apply(t, netpol(nsX, "endport", map[string]string{"pod": "a"}, ingress(inPorts(netv1.NetworkPolicyIngressRule{}, portRange(81, 90, TCP)))))
		expect(t, c, m, "x/a: tcp 81-90", onlyFrom(m, m.P("x/a"), func(_ *Pod, c Case) bool { return c == Case{81, "tcp"} }))
	})
}

// TestPolicyRecreatedSameName: a policy deleted and created again under the
// same name with other rules is enforced with the new rules. (Upstream's
// scenarios reuse names across tests; on a shared cluster that is exactly
// this sequence, which once left the old rules in force.)
func TestPolicyRecreatedSameName(t *testing.T) {
	c, m := start(t)
	v1 := netpol(m.NS["x"], "same-name", map[string]string{"pod": "a"}, ingress(from(nsPeer(labels(nsNameLabel, m.NS["y"])))))
	c.Apply(t, v1)
	expect(t, c, m, "v1: only y reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return m.In(f, "y") }))
	c.Delete(t, v1)
	expect(t, c, m, "deleted: everything", AllowAll)
	c.Apply(t, netpol(m.NS["x"], "same-name", map[string]string{"pod": "a"}, ingress(from(podPeer(labels("pod", "b"))))))
	expect(t, c, m, "v2 under the same name: only x/b reaches x/a", onlyFrom(m, m.P("x/a"), func(f *Pod, _ Case) bool { return f == m.P("x/b") }))
}
