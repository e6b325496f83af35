package calc

import (
	"fmt"
	"runtime"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

// cluster is a synthetic cluster: endpoints spread over namespaces (one in
// localEvery on this node), namespace profiles with labels, and namespaced
// policies whose rules select by label, by namespace and by named port.
type cluster struct {
	namespaces, endpoints, policies, localEvery int
	// podLabelless leaves out the label unique to each endpoint ("pod"):
	// endpoints then share label sets, as the pods of a Deployment do.
	podLabelless bool
}

func (c cluster) endpoint(i int, extra string) *v3.WorkloadEndpoint {
	ns := fmt.Sprintf("ns%d", i%c.namespaces)
	nodeName := fmt.Sprintf("node%d", i%97)
	if i%c.localEvery == 0 {
		nodeName = node
	}
	labels := map[string]string{
		"app":  fmt.Sprintf("app%d", i%10),
		"role": fmt.Sprintf("r%d", i%7),
	}
	if !c.podLabelless {
		labels["pod"] = fmt.Sprintf("pod%d", i)
	}
	if extra != "" {
		labels["extra"] = extra
	}
	w := wep(ns, fmt.Sprintf("w%d", i), nodeName, labels,
		[]string{fmt.Sprintf("10.%d.%d.%d/32", i>>16&255, i>>8&255, i&255)}, "kns."+ns)
	w.Spec.Ports = []v3.WorkloadEndpointPort{{Name: "http", Protocol: numorstring.ProtocolFromString("TCP"), Port: 8080}}
	return w
}

func (c cluster) policy(i int, variant int) *v3.NetworkPolicy {
	ns := fmt.Sprintf("ns%d", i%c.namespaces)
	return np(ns, fmt.Sprintf("p%d", i), v3.NetworkPolicySpec{
		Order:    f64(float64(i % 5)),
		Selector: fmt.Sprintf("app == 'app%d'", i%10),
		Ingress: []v3.Rule{
			{Action: v3.Allow, Protocol: tcp(), Source: v3.EntityRule{Selector: fmt.Sprintf("role == 'r%d'", (i+variant)%7)},
				Destination: v3.EntityRule{Ports: []numorstring.Port{port("http"), port("443")}}},
			{Action: v3.Allow, Source: v3.EntityRule{NamespaceSelector: fmt.Sprintf("team == 't%d'", i%4), Selector: "has(app)"}},
		},
		Egress: []v3.Rule{{Action: v3.Allow, Destination: v3.EntityRule{Nets: []string{"0.0.0.0/0"}}}},
	})
}

func (c cluster) load(tb testing.TB) *Graph {
	g := New(Config{NodeName: node})
	for i := range c.namespaces {
		g.OnUpdate(upd(nsProfile(fmt.Sprintf("ns%d", i), lbl("team", fmt.Sprintf("t%d", i%4)))))
	}
	for i := range c.endpoints {
		g.OnUpdate(upd(c.endpoint(i, "")))
	}
	for i := range c.policies {
		g.OnUpdate(upd(c.policy(i, 0)))
	}
	g.OnInSync()
	if ch := g.Flush(); len(ch.EndpointUpdates) == 0 || len(ch.IPSetUpdates) == 0 {
		tb.Fatalf("synthetic cluster programs nothing")
	}
	return g
}

var benchCluster = cluster{namespaces: 100, endpoints: 10_000, policies: 1_000, localEvery: 99}

// BenchmarkEndpointUpdate relabels one remote endpoint (moving it in and out
// of IP sets) and flushes.
func BenchmarkEndpointUpdate(b *testing.B) {
	g := benchCluster.load(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := benchCluster.endpoint(1+(i%50)*2, fmt.Sprint(i%2))
		e.Labels["role"] = fmt.Sprintf("r%d", i%7)
		g.OnUpdate(upd(e))
		g.Flush()
	}
}

// BenchmarkLocalEndpointUpdate relabels an endpoint of this host, which also
// changes the policies that apply to it.
func BenchmarkLocalEndpointUpdate(b *testing.B) {
	g := benchCluster.load(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := benchCluster.endpoint(0, "")
		e.Labels["app"] = fmt.Sprintf("app%d", i%10)
		g.OnUpdate(upd(e))
		g.Flush()
	}
}

// BenchmarkPolicyUpdate changes one rule selector of one policy and flushes.
func BenchmarkPolicyUpdate(b *testing.B) {
	g := benchCluster.load(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g.OnUpdate(upd(benchCluster.policy(0, i%7)))
		g.Flush()
	}
}

// BenchmarkColdLoad feeds the whole cluster into a new graph and takes the
// first Flush; heap-MB is the live heap of the loaded graph.
func BenchmarkColdLoad(b *testing.B) {
	benchColdLoad(b, benchCluster)
}

// BenchmarkColdLoad100k is the design target's scale (100k endpoints, 2k
// policies); run it explicitly with -bench ColdLoad100k.
func BenchmarkColdLoad100k(b *testing.B) {
	if testing.Short() {
		b.Skip("large")
	}
	benchColdLoad(b, cluster{namespaces: 1000, endpoints: 100_000, policies: 2_000, localEvery: 999})
}

// BenchmarkColdLoad100kShared is BenchmarkColdLoad100k with endpoints that
// share their label sets (70 per namespace), as Deployments' pods do.
func BenchmarkColdLoad100kShared(b *testing.B) {
	if testing.Short() {
		b.Skip("large")
	}
	benchColdLoad(b, cluster{namespaces: 1000, endpoints: 100_000, policies: 2_000, localEvery: 999, podLabelless: true})
}

func benchColdLoad(b *testing.B, c cluster) {
	b.ReportAllocs()
	var g *Graph
	for i := 0; i < b.N; i++ {
		g = nil
		g = c.load(b)
	}
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MB")
	runtime.KeepAlive(g)
}
