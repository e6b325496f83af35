package main

import (
	"context"
	"fmt"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
)

const benchNS = "bench"

// baseResources are the two workloads, their namespace's profile and 200
// remote endpoints that the rule selectors match (so their IP sets are not
// empty), all written before the agent starts.
func baseResources(l *lab) []string {
	docs := []string{
		fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: Profile, metadata: {name: kns.%s},
spec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {projectcalico.org/name: %s}}}`, benchNS, benchNS),
		wep(benchNS, "host1", "client", l.clientIf, clientIP.String(), "role: client, app: client"),
		wep(benchNS, "host1", "server", l.serverIf, serverIP.String(), "role: server, app: web"),
		wep(benchNS, "host1", "plain", l.plainIf, plainIP.String(), "role: plain, app: web"),
		wep(benchNS, "host9", "remote-client", "cali0remote", remoteIP.String(), "role: client, app: remote"),
	}
	for i := range 200 {
		docs = append(docs, wep(benchNS, fmt.Sprintf("host%d", 2+i%4), fmt.Sprintf("svc-%d", i),
			fmt.Sprintf("cali%011x", i), fmt.Sprintf("10.66.%d.%d", i/250, 2+i%250),
			fmt.Sprintf("role: backend, app: svc-%d", i%100)))
	}
	return docs
}

func wep(namespace, node, pod, iface, ip, labels string) string {
	return fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: WorkloadEndpoint,
metadata: {namespace: %s, labels: {%s}},
spec: {node: %s, orchestrator: k8s, pod: %s, endpoint: eth0, interfaceName: %s, ipNetworks: [%s/32], profiles: [kns.%s]}}`,
		namespace, labels, node, pod, iface, ip, namespace)
}

// allowKey is where allowPolicy is stored in the datastore.
var allowKey = func() string {
	k, _ := v3.KindByKind(v3.KindNetworkPolicy)
	return client.Key(k, benchNS, "allow-client")
}()

// allowPolicy is the one policy that decides the measured flow (client ->
// server:80), after the 100 others (order 1000 against 100..199).
func allowPolicy(action string) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: %s, name: allow-client}
spec:
  order: 1000
  selector: "role == 'server'"
  types: [Ingress]
  ingress:
    - {action: %s, protocol: TCP, source: {selector: "role == 'client'"}, destination: {ports: [80]}}
`, benchNS, action)
}

// rulePolicies is 100 NetworkPolicies of 100 ingress rules selecting the
// server, none of which matches the measured flow (client 10.65.0.2,
// app=client -> server:80). Each rule allows TCP to its own port
// (20000-29999) from either a selector (app == 'svc-N', 100 distinct ones,
// each matching two remote endpoints) or a /24 out of 172.16.0.0/12.
//
// On port 80 (stress variant) one rule in ten (1,000 in all) targets the
// measured port instead, from sources that still do not match: these cannot
// be sorted away by port and are what a real cluster's "allow web from X"
// rules look like.
//
// The last rule of policy i allows the client to port sentinel+i (not the
// measured flow): when all 100 connect, the whole manifest is enforced (the
// agent may program one etcd transaction in several pieces).
func rulePolicies(on80 bool, sentinel int) string {
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: %s, name: svc-%03d}
spec:
  order: %d
  selector: "role == 'server'"
  types: [Ingress]
  ingress:
`, benchNS, i, 100+i)
		for j := range 100 {
			port := fmt.Sprint(20000 + 100*i + j)
			if on80 && j%10 == 9 {
				port = "80"
			}
			var src string
			if j%2 == 0 {
				src = fmt.Sprintf(`selector: "app == 'svc-%d'"`, (i+j)%100)
			} else {
				src = fmt.Sprintf("nets: [172.%d.%d.0/24]", 16+i%16, j)
			}
			if j == 99 {
				src, port = `selector: "role == 'client'"`, fmt.Sprint(sentinel+i)
			}
			fmt.Fprintf(&b, "    - {action: Allow, protocol: TCP, source: {%s}, destination: {ports: [%s]}}\n", src, port)
		}
	}
	return b.String()
}

// coldStartResources is the cold-start datastore: nss namespaces (a profile
// each, with labels), eps endpoints spread evenly over them, one per
// namespace on this node (host1) and the rest on 50 other nodes, and pols
// NetworkPolicies spread over the namespaces, each with two ingress rules
// (a selector source with ports, a net source) and one egress rule
// (selector destination, DNS).
func coldStartResources(nss, eps, pols int) []string {
	var docs []string
	for n := range nss {
		docs = append(docs, fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: Profile, metadata: {name: kns.ns%d},
spec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {projectcalico.org/name: ns%d, team: t%d}}}`, n, n, n%7))
	}
	perNS := eps / nss
	for n := range nss {
		for i := range perNS {
			docs = append(docs, coldEndpoint(n, i, perNS, coldAddr(n, i, false)))
		}
	}
	perNSPol := pols / nss
	for n := range nss {
		for k := range perNSPol {
			docs = append(docs, fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: NetworkPolicy, metadata: {namespace: ns%d, name: pol%d},
spec: {order: %d, selector: "app == 'app%d'", types: [Ingress, Egress],
  ingress: [{action: Allow, protocol: TCP, source: {selector: "tier == 't%d'"}, destination: {ports: [%d, 8443]}},
            {action: Allow, protocol: TCP, source: {nets: [10.%d.0.0/16]}, destination: {ports: ["9000:9099"]}}],
  egress: [{action: Allow, protocol: UDP, destination: {selector: "app == 'app%d'", ports: [53]}}]}}`,
				n, k, 100+k, k%10, k%3, 8000+k, 200+n%50, (k+1)%10))
		}
	}
	return docs
}

// coldEndpoint is endpoint i of namespace n (perNS to a namespace) of the
// cold-start data, at address ip: the first of each namespace on this node
// (host1), the others on 50 other nodes.
func coldEndpoint(n, i, perNS int, ip string) string {
	node := fmt.Sprintf("host%d", 2+(n*perNS+i)%50)
	if i == 0 {
		node = "host1"
	}
	return wep(fmt.Sprintf("ns%d", n), node, fmt.Sprintf("p%d", i), fmt.Sprintf("cali%05x%06x", n, i), ip,
		fmt.Sprintf("app: app%d, tier: t%d, version: v%d", i%10, i%3, i%2))
}

// coldAddr is endpoint i of namespace n's address in the cold-start data,
// or, moved, the other address the churn gives it.
func coldAddr(n, i int, moved bool) string {
	base := 100
	if moved {
		base = 150
	}
	return fmt.Sprintf("10.%d.%d.%d", base+n/100, n%100, 2+i%250)
}

// write applies docs with the library client (setup, not measured).
func write(ctx context.Context, cl *client.Client, docs []string) error {
	rs := make([]v3.Resource, 0, len(docs))
	for _, d := range docs {
		r, err := v3.Decode([]byte(d))
		if err != nil {
			return fmt.Errorf("decode %s: %w", d, err)
		}
		rs = append(rs, r)
	}
	for start := 0; start < len(rs); start += 5000 {
		if _, err := cl.Batch(ctx, client.OpApply, rs[start:min(start+5000, len(rs))]); err != nil {
			return err
		}
	}
	return nil
}
