package cni_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// BenchmarkAddDel measures ADD and DEL latency of the built plugin, as a
// runtime sees it (libcni exec, embedded etcd over a veth), one at a time
// and 10 at once. Each op is one ADD and one DEL; the p50/p99 metrics are
// per command. Run with e.g. -benchtime 300x so that p99 means something:
//
//	go test -run '^$' -bench AddDel -benchtime 300x ./pkg/cni/
func BenchmarkAddDel(b *testing.B) {
	e := newEnv(b)
	list := confList(b, e.netConf("bench", "1.1.0", nil))
	for _, par := range []int{1, 10} {
		b.Run(fmt.Sprintf("concurrent=%d", par), func(b *testing.B) {
			rts := make([]*libcni.RuntimeConf, b.N)
			for i := range rts {
				rts[i] = &libcni.RuntimeConf{ContainerID: fmt.Sprintf("b%d-%d-%s", par, i, randHex(3)), NetNS: e.workloadNS(), IfName: "eth0",
					Args: [][2]string{{"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", fmt.Sprintf("p%d-%d-%s", par, i, randHex(2))}}}
			}
			var mu sync.Mutex
			var adds, dels []time.Duration
			each := func(f func(*libcni.RuntimeConf) error, out *[]time.Duration) {
				var wg sync.WaitGroup
				sem := make(chan struct{}, par)
				for _, rt := range rts {
					wg.Add(1)
					sem <- struct{}{}
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						start := time.Now()
						if err := f(rt); err != nil {
							b.Error(err)
							return
						}
						d := time.Since(start)
						mu.Lock()
						*out = append(*out, d)
						mu.Unlock()
					}()
				}
				wg.Wait()
			}
			b.ResetTimer()
			each(func(rt *libcni.RuntimeConf) error { _, err := e.add(list, rt); return err }, &adds)
			each(func(rt *libcni.RuntimeConf) error { return e.del(list, rt) }, &dels)
			b.StopTimer()
			report(b, "add", adds)
			report(b, "del", dels)
		})
	}
	e.assertClean(b)
}

func report(b *testing.B, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	pct := func(p float64) float64 {
		i := int(p * float64(len(ds)-1))
		return float64(ds[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), what+"-p50-ms")
	b.ReportMetric(pct(0.99), what+"-p99-ms")
}
