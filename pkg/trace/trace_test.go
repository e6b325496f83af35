package trace

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
)

// shop is a small cluster: a client and a web server in namespace shop on
// two nodes, a pod with two endpoints, a host endpoint, a security tier in
// front of the default tier, and two staged policies.
const shop = `
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.shop}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {projectcalico.org/name: shop}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: shop, name: n1-k8s-client-eth0, labels: {role: client, projectcalico.org/orchestrator: k8s}}
spec: {node: n1, orchestrator: k8s, pod: client, endpoint: eth0, interfaceName: cali1, ipNetworks: [10.1.0.1/32, "fd00::1/128"], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: shop, name: n2-k8s-web-eth0, labels: {role: web, projectcalico.org/orchestrator: k8s}}
spec: {node: n2, orchestrator: k8s, pod: web, endpoint: eth0, interfaceName: cali2, ipNetworks: [10.1.0.2/32, "fd00::2/128"], profiles: [kns.shop],
  ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: shop, name: n2-k8s-multi-net1, labels: {role: multi}}
spec: {node: n2, orchestrator: k8s, pod: multi, endpoint: net1, interfaceName: cali3, ipNetworks: [10.1.0.3/32], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: shop, name: n2-k8s-multi-net2, labels: {role: multi}}
spec: {node: n2, orchestrator: k8s, pod: multi, endpoint: net2, interfaceName: cali4, ipNetworks: [10.1.0.4/32], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n1-eth0, labels: {host: n1}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [192.168.1.1]}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.quarantine}
spec:
  tier: security
  order: 10
  selector: has(role)
  types: [Ingress, Egress]
  ingress:
  - {action: Deny, source: {nets: [10.9.0.0/16]}}
  - {action: Pass}
  egress:
  - {action: Pass}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: shop, name: web-ingress}
spec:
  selector: role == 'web'
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: role == 'client'}, destination: {ports: [http]}}
  - {action: Allow, protocol: ICMP, icmp: {type: 8}}
  - {action: Allow, protocol: UDP, source: {notNets: [10.1.0.1/32]}, destination: {ports: ["5000:5010"]}}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {namespace: shop, name: web-ingress}
spec:
  stagedAction: Delete
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {namespace: shop, name: no-ping}
spec:
  order: 1
  selector: role == 'web'
  ingress:
  - {action: Deny, protocol: ICMP}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {namespace: shop, name: learn-only}
spec:
  stagedAction: Learn
  selector: role == 'web'
  ingress:
  - {action: Deny}
`

func resources(t *testing.T, docs string) []v3.Resource {
	t.Helper()
	var out []v3.Resource
	for _, d := range strings.Split(docs, "\n---\n") {
		r, err := v3.Decode([]byte(d))
		if err != nil {
			t.Fatalf("%v\n%s", err, d)
		}
		v3.SetDefaults(r)
		if err := v3.Validate(r); err != nil {
			t.Fatalf("%v\n%s", err, d)
		}
		out = append(out, r)
	}
	return out
}

func TestRun(t *testing.T) {
	rs := resources(t, shop)
	icmp8 := Query{Protocol: calc.ProtoICMP, ICMPType: 8}
	cases := []struct {
		name string
		q    Query
		// verdict and decidedBy of the enforced policy, then with the
		// staged ones ("" when unchanged).
		verdict, stagedVerdict calc.Action
		decidedBy, stagedBy    string
	}{
		{name: "allowed by a named port rule", q: Query{Src: "shop/client", Dst: "shop/web", Protocol: calc.ProtoTCP, SrcPort: 40000, DstPort: 8080},
			verdict: calc.Allow, decidedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: tier default, policy shop/web-ingress, rule 0",
			stagedVerdict: calc.Deny, stagedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: end of tier default (no policy in it decided)"},
		{name: "end of tier", q: Query{Src: "shop/client", Dst: "shop/web", Protocol: calc.ProtoTCP, SrcPort: 40000, DstPort: 81},
			verdict: calc.Deny, decidedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: end of tier default (no policy in it decided)"},
		{name: "denied by a net in the first tier, from outside", q: Query{Src: "10.9.3.4", Dst: "10.1.0.2", Protocol: calc.ProtoTCP, SrcPort: 1234, DstPort: 8080},
			verdict: calc.Deny, decidedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: tier security, policy security.quarantine, rule 0"},
		{name: "icmp rule, staged deny", q: func() Query { q := icmp8; q.Src, q.Dst = "shop/client", "shop/web"; return q }(),
			verdict: calc.Allow, decidedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: tier default, policy shop/web-ingress, rule 1",
			stagedVerdict: calc.Deny, stagedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: tier default, staged policy shop/no-ping, rule 0"},
		{name: "profiles after a pass", q: Query{Src: "shop/web", Dst: "shop/client", Protocol: calc.ProtoTCP, SrcPort: 40000, DstPort: 80},
			verdict: calc.Allow, decidedBy: "ingress of WorkloadEndpoint:shop/n1-k8s-client-eth0: profile kns.shop, rule 0"},
		{name: "notNets", q: Query{Src: "shop/client", Dst: "shop/web", Protocol: calc.ProtoUDP, SrcPort: 40000, DstPort: 5005},
			verdict: calc.Deny, decidedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: end of tier default (no policy in it decided)"},
		{name: "a pod's endpoint by name", q: Query{Src: "shop/n2-k8s-multi-net2", Dst: "shop/web", Protocol: calc.ProtoUDP, SrcPort: 40000, DstPort: 5010},
			verdict: calc.Allow, decidedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: tier default, policy shop/web-ingress, rule 2",
			stagedVerdict: calc.Deny, stagedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: end of tier default (no policy in it decided)"},
		{name: "IPv6 when asked", q: Query{Src: "shop/client", Dst: "shop/web", Protocol: calc.ProtoTCP, SrcPort: 40000, DstPort: 8080, IPVersion: 6},
			verdict: calc.Allow, decidedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: tier default, policy shop/web-ingress, rule 0",
			stagedVerdict: calc.Deny, stagedBy: "ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: end of tier default (no policy in it decided)"},
		{name: "host endpoint with no policy denies", q: Query{Src: "shop/client", Dst: "hep/n1-eth0", Protocol: calc.ProtoTCP, SrcPort: 40000, DstPort: 22},
			verdict: calc.Deny, decidedBy: "ingress of HostEndpoint:n1-eth0: no tier decided and no profile allowed"},
		{name: "neither end an endpoint", q: Query{Src: "192.0.2.1", Dst: "192.0.2.2", Protocol: calc.ProtoTCP, SrcPort: 1, DstPort: 2},
			verdict: calc.Allow, decidedBy: "no policy applies: neither end is an endpoint"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := Run(rs, c.q)
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			if err := Write(&text, res); err != nil {
				t.Fatal(err)
			}
			if res.Verdict != c.verdict || res.DecidedBy != c.decidedBy {
				t.Errorf("got %s by %q, want %s by %q\n%s", res.Verdict, res.DecidedBy, c.verdict, c.decidedBy, text.String())
			}
			if res.Staged == nil {
				t.Fatalf("no staged result, but there are staged policies")
			}
			sv, sb := c.stagedVerdict, c.stagedBy
			if sv == "" {
				sv, sb = c.verdict, c.decidedBy
			}
			if res.Staged.Verdict != sv || res.Staged.DecidedBy != sb {
				t.Errorf("staged: got %s by %q, want %s by %q\n%s", res.Staged.Verdict, res.Staged.DecidedBy, sv, sb, text.String())
			}
			if _, err := json.Marshal(res); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRunExplains checks the words of a whole trace: every rule considered
// with why it did not match.
func TestRunExplains(t *testing.T) {
	res, err := Run(resources(t, shop), Query{Src: "10.1.0.1", Dst: "shop/web", Protocol: calc.ProtoTCP, SrcPort: 40000, DstPort: 81})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Packet:       TCP 10.1.0.1:40000 -> 10.1.0.2:81",
		"Source:       WorkloadEndpoint:shop/n1-k8s-client-eth0 on node n1",
		"Egress of WorkloadEndpoint:shop/n1-k8s-client-eth0",
		"rule 0 Pass  MATCH:   matches every packet",
		"-> Pass: next tier",
		"rule 0 Deny  no match: source 10.1.0.1 is not in nets [10.9.0.0/16]",
		`rule 0 Allow no match: destination port 81 is not in named port "http" (TCP) of`,
		"rule 1 Allow no match: protocol ICMP, the packet is TCP",
		"-> no rule decided: default action Deny",
		"=> Deny: end of tier default (no policy in it decided)",
		"Verdict: Deny",
		"With the staged policies in force: no change (Deny)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in:\n%s", want, b.String())
		}
	}
	res, err = Run(resources(t, shop), Query{Src: "10.1.0.1", Dst: "shop/web", Protocol: calc.ProtoTCP, SrcPort: 40000, DstPort: 8080})
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := Write(&b, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Verdict: Allow",
		"With the staged policies in force:\n",
		"policy shop/no-ping (staged)\n      rule 0 Deny  no match: protocol ICMP, the packet is TCP",
		"Staged verdict: Deny\n  by ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: end of tier default",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in:\n%s", want, b.String())
		}
	}
}

func TestRunErrors(t *testing.T) {
	rs := resources(t, shop)
	tcp := func(src, dst string) Query {
		return Query{Src: src, Dst: dst, Protocol: calc.ProtoTCP, SrcPort: 1, DstPort: 80}
	}
	for _, c := range []struct {
		q    Query
		want string
	}{
		{tcp("shop/nobody", "shop/web"), `source "shop/nobody": no WorkloadEndpoint in namespace "shop" named "nobody"`},
		{tcp("shop/multi", "shop/web"), `source "shop/multi": 2 workload endpoints belong to multi in namespace shop (n2-k8s-multi-net1, n2-k8s-multi-net2): name one`},
		{tcp("shop/web", "hep/none"), `destination "hep/none": no HostEndpoint named "none"`},
		{tcp("web", "shop/web"), `source "web": want NAMESPACE/WORKLOAD, hep/NAME or an IP address`},
		{tcp("192.0.2.1", "fd00::9"), "source 192.0.2.1 and destination fd00::9 are of different IP versions"},
		{tcp("shop/multi-net1", "shop/web"), `no WorkloadEndpoint in namespace "shop" named "multi-net1"`},
		{Query{Src: "shop/n2-k8s-multi-net1", Dst: "shop/web", Protocol: calc.ProtoTCP, DstPort: 80, IPVersion: 6},
			"have no addresses of the same IP version (IPv6 asked for)"},
		{Query{Src: "fd00::1", Dst: "fd00::2", Protocol: calc.ProtoICMP}, "protocol ICMP is IPv4 only"},
	} {
		_, err := Run(rs, c.q)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got error %v, want %q", c.q, err, c.want)
		}
	}
}

func TestMatches(t *testing.T) {
	st := calc.NewState()
	st.IPSets["s:web"] = &calc.IPSet{ID: "s:web", Kind: calc.AddressSet, Selector: "role == 'web'"}
	st.Members["s:web"] = map[calc.Member]struct{}{{Prefix: netip.MustParsePrefix("10.0.0.2/32")}: {}}
	st.IPSets["n:http"] = &calc.IPSet{ID: "n:http", Kind: calc.NamedPortSet, Selector: "has(app)", Protocol: calc.ProtoTCP, PortName: "http"}
	st.Members["n:http"] = map[calc.Member]struct{}{{Prefix: netip.MustParsePrefix("10.0.0.2/32"), Protocol: calc.ProtoTCP, Port: 8080}: {}}
	pkt := Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: calc.ProtoTCP, SrcPort: 40000, DstPort: 8080}
	icmp := Packet{Src: pkt.Src, Dst: pkt.Dst, Protocol: calc.ProtoICMP, ICMPType: 3, ICMPCode: 4}
	rng := func(a, b uint16) []calc.PortRange { return []calc.PortRange{{First: a, Last: b}} }
	for _, c := range []struct {
		name string
		r    calc.Rule
		p    Packet
		ok   bool
		why  string
	}{
		{"empty", calc.Rule{}, pkt, true, "matches every packet"},
		{"ip version", calc.Rule{IPVersion: 6}, pkt, false, "ipVersion 6, the packet is IPv4"},
		{"protocol", calc.Rule{Protocol: calc.ProtoUDP}, pkt, false, "protocol UDP, the packet is TCP"},
		{"not protocol", calc.Rule{NotProtocol: calc.ProtoTCP}, pkt, false, "notProtocol TCP"},
		{"icmp type", calc.Rule{ICMP: &calc.ICMPMatch{Type: 8}}, icmp, false, "icmp type 8, the packet's is 3"},
		{"icmp code", calc.Rule{ICMP: &calc.ICMPMatch{Type: 3, Code: 1, HasCode: true}}, icmp, false, "icmp code 1, the packet's is 4"},
		{"icmp on tcp", calc.Rule{ICMP: &calc.ICMPMatch{Type: 3}}, pkt, false, "an ICMP type is required, the packet is TCP"},
		{"not icmp", calc.Rule{NotICMP: &calc.ICMPMatch{Type: 3, Code: 4, HasCode: true}}, icmp, false, "notICMP type 3 code 4"},
		{"not icmp other", calc.Rule{NotICMP: &calc.ICMPMatch{Type: 8}}, icmp, true, "matches every packet"},
		{"net", calc.Rule{Src: calc.EntityMatch{Nets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}}, pkt, false,
			"source 10.0.0.1 is not in nets [10.1.0.0/16]"},
		{"not net", calc.Rule{Src: calc.EntityMatch{NotNets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}}, pkt, false,
			"source 10.0.0.1 is in notNets 10.0.0.0/24"},
		{"selector", calc.Rule{Src: calc.EntityMatch{IPSet: "s:web"}}, pkt, false, "source 10.0.0.1 is not selected by selector role == 'web'"},
		{"selector holds", calc.Rule{Protocol: calc.ProtoTCP, Dst: calc.EntityMatch{IPSet: "s:web", Ports: rng(8000, 9000)}}, pkt, true,
			"protocol TCP, destination selected by selector role == 'web', destination port 8080 in [8000:9000]"},
		{"not selector", calc.Rule{Dst: calc.EntityMatch{NotIPSet: "s:web"}}, pkt, false, "destination 10.0.0.2 is selected by notSelector selector role == 'web'"},
		{"ports", calc.Rule{Dst: calc.EntityMatch{Ports: rng(80, 80)}}, pkt, false, "destination port 8080 is not in [80]"},
		{"not ports", calc.Rule{Src: calc.EntityMatch{NotPorts: rng(40000, 40010)}}, pkt, false, "source port 40000 is in notPorts [40000:40010]"},
		{"ports on icmp", calc.Rule{Dst: calc.EntityMatch{Ports: rng(80, 80)}}, icmp, false, "destination ports [80] need a protocol with ports, the packet is ICMP"},
		{"named port", calc.Rule{Dst: calc.EntityMatch{Ports: rng(80, 80), NamedPortSets: []string{"n:http"}}}, pkt, true,
			`destination 10.0.0.2:8080 is named port "http" (TCP) of has(app)`},
		{"not named port", calc.Rule{Dst: calc.EntityMatch{NotNamedPortSets: []string{"n:http"}}}, pkt, false,
			`destination 10.0.0.2:8080 is named port "http" (TCP) of has(app) in notPorts`},
	} {
		ok, why := Matches(st, &c.r, c.p)
		if ok != c.ok || why != c.why {
			t.Errorf("%s: got %v %q, want %v %q", c.name, ok, why, c.ok, c.why)
		}
	}
}

func TestWithStaged(t *testing.T) {
	rs := resources(t, shop)
	out, staged, n, problems := WithStaged(rs)
	if len(problems) > 0 {
		t.Errorf("problems: %v", problems)
	}
	if n != 2 {
		t.Errorf("%d staged policies counted, want 2 (Learn changes nothing)", n)
	}
	var names []string
	for _, r := range out {
		switch r.(type) {
		case *v3.StagedNetworkPolicy, *v3.StagedGlobalNetworkPolicy:
			t.Errorf("staged resource %s left in", r.GetName())
		case *v3.NetworkPolicy:
			names = append(names, r.GetNamespace()+"/"+r.GetName())
		}
	}
	if strings.Join(names, " ") != "shop/no-ping" {
		t.Errorf("network policies with the staged ones in force: %v, want [shop/no-ping] (web-ingress deleted)", names)
	}
	if !staged[calc.PolicyID{Kind: v3.KindNetworkPolicy, Namespace: "shop", Name: "no-ping"}] || len(staged) != 1 {
		t.Errorf("staged IDs %v", staged)
	}
	if len(rs) != 12 {
		t.Errorf("the input changed: %d resources", len(rs))
	}
}

func TestParseProtocol(t *testing.T) {
	for in, want := range map[string]uint8{"tcp": 6, "UDP": 17, "icmpv6": 58, "132": 132, "sctp": 132} {
		if got, err := ParseProtocol(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "256", "tcpx", ""} {
		if _, err := ParseProtocol(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// TestWithStagedKubernetes: a StagedKubernetesNetworkPolicy stands for the
// NetworkPolicy knp.default.<name> it converts to, as Calico converts it; a
// Delete removes that one; one the API server would refuse is left out,
// named.
func TestWithStagedKubernetes(t *testing.T) {
	rs := resources(t, shop+`
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: shop, name: knp.default.old}
spec:
  order: 1000
  selector: projectcalico.org/orchestrator == 'k8s' && role == 'web'
  ingress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {namespace: shop, name: web-allow}
spec:
  podSelector: {matchLabels: {role: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{protocol: TCP, port: 8080}]
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {namespace: shop, name: old}
spec:
  stagedAction: Delete
  podSelector: {}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {namespace: shop, name: bad}
spec:
  podSelector: {}
  ingress:
  - ports: [{protocol: TCP, port: 0}]
`)
	out, staged, n, problems := WithStaged(rs)
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), "StagedKubernetesNetworkPolicy shop/bad left out") {
		t.Errorf("problems %v, want the bad one named", problems)
	}
	if n != 4 { // no-ping, web-ingress (Delete), web-allow, old (Delete)
		t.Errorf("%d staged policies that change something, want 4", n)
	}
	var names []string
	for _, r := range out {
		if np, ok := r.(*v3.NetworkPolicy); ok {
			names = append(names, np.Namespace+"/"+np.Name)
		}
	}
	if got := strings.Join(names, " "); got != "shop/no-ping shop/knp.default.web-allow" {
		t.Errorf("policies with the staged ones in force: %s", got)
	}
	if !staged[calc.PolicyID{Kind: v3.KindNetworkPolicy, Namespace: "shop", Name: "knp.default.web-allow"}] {
		t.Errorf("staged IDs %v", staged)
	}
	res, err := Run(rs, Query{Src: "shop/client", Dst: "shop/web", Protocol: calc.ProtoTCP, SrcPort: 1, DstPort: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if res.Staged.Verdict != calc.Allow || res.Staged.Ingress.Decision.Policy != "shop/knp.default.web-allow" || len(res.StagedProblems) != 1 {
		t.Errorf("staged: %s by %s; problems %v", res.Staged.Verdict, res.Staged.DecidedBy, res.StagedProblems)
	}
}
