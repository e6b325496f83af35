package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/node"
)

// BenchmarkColdStart measures an agent's start to ready (in sync and
// programmed, into knftables' fake) with 10,000 endpoints in 100 namespaces
// (100 of them on this node) and 1,000 policies in the datastore. It
// measures the syncer, the graph and rendering; the kernel's own share is in
// the root end-to-end test.
func BenchmarkColdStart(b *testing.B) { benchColdStart(b, 100, 10) }

// BenchmarkColdStart100k is the same at issue 18's size: 100,000 endpoints
// (1,000 per namespace, 100 on this node) and 5,000 policies.
func BenchmarkColdStart100k(b *testing.B) { benchColdStart(b, 1000, 50) }

// benchColdStart writes 100 namespaces of perNS endpoints (the first of
// each on this node, h1, the rest over 50 other nodes) and policiesPerNS
// policies each, then starts agents until b is done.
func benchColdStart(b *testing.B, perNS, policiesPerNS int) {
	srv := etcdtest.Start(b)
	be := etcdtest.NewClient(b, srv)
	cl := client.New(be)
	ctx := context.Background()
	if err := cl.EnsureInitialized(ctx); err != nil {
		b.Fatal(err)
	}
	var rs []v3.Resource
	add := func(doc string) {
		r, err := v3.Decode([]byte(doc))
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	for ns := range 100 {
		add(fmt.Sprintf("{apiVersion: projectcalico.org/v3, kind: Profile, metadata: {name: kns.ns%d}, spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}}", ns))
		for i := range perNS {
			nodeName := fmt.Sprintf("h%d", 2+i%50)
			if i == 0 {
				nodeName = "h1"
			}
			add(fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: WorkloadEndpoint,
metadata: {namespace: ns%d, labels: {app: app%d, tier: t%d}},
spec: {node: %s, orchestrator: k8s, pod: p%d, endpoint: eth0, interfaceName: cali%d-%d, ipNetworks: [10.%d.%d.%d/32], profiles: [kns.ns%d]}}`,
				ns, i%10, i%3, nodeName, i, ns, i, ns, i/250, 2+i%250, ns))
		}
		for i := range policiesPerNS {
			add(fmt.Sprintf(`{apiVersion: projectcalico.org/v3, kind: NetworkPolicy, metadata: {namespace: ns%d, name: pol%d},
spec: {selector: "app == 'app%d'", ingress: [{action: Allow, protocol: TCP, source: {selector: "tier == 't%d'"}, destination: {ports: [%d]}}]}}`,
				ns, i, i%10, i%3, 8000+i))
		}
	}
	// The node test's nodes: h1 has one endpoint per namespace.
	for start := 0; start < len(rs); start += 5000 {
		if _, err := cl.Batch(ctx, client.OpApply, rs[start:min(start+5000, len(rs))]); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		fake := newLockedFake()
		pol, err := node.NewPolicy(node.PolicyConfig{NodeName: "h1", NFT: fake})
		if err != nil {
			b.Fatal(err)
		}
		a, err := node.New(node.Config{NodeName: "h1", ResyncInterval: time.Hour}, be, pol)
		if err != nil {
			b.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx) }()
		for ok := false; !ok; ok, _ = a.Ready() {
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
	}
}
