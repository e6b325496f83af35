package routes

import (
	"net/netip"
	"testing"
)

const benchRoutes = 10_000

// benchHost is a namespace with a device d0 and 10,000 desired workload
// routes through it (10.128.0.0/32 upwards), the shape of a busy host.
func benchHost(b *testing.B) (*testNS, *Reconciler, []Route) {
	n := newTestNS(b)
	n.veth(b, "d0", "d0p")
	r := NewReconciler(n.h, Options{Logger: testLogger(b)})
	routes := make([]Route, benchRoutes)
	base := netip.MustParseAddr("10.128.0.0").As4()
	for i := range routes {
		a := base
		a[2], a[3] = byte(i>>8), byte(i)
		routes[i] = WorkloadRoute(netip.AddrFrom4(a), "d0")
	}
	return n, r, routes
}

func benchApply(b *testing.B, r *Reconciler) Stats {
	st, err := r.Apply()
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkApplyCold10k programs 10,000 routes into an empty table.
func BenchmarkApplyCold10k(b *testing.B) {
	_, r, routes := benchHost(b)
	for b.Loop() {
		b.StopTimer()
		r.Set(nil)
		benchApply(b, r)
		r.Set(routes)
		b.StartTimer()
		if st := benchApply(b, r); st.Added != benchRoutes {
			b.Fatalf("%+v", st)
		}
	}
}

// BenchmarkApplyOneOf10k changes one route of 10,000 per Apply (a workload
// route becomes a blackhole and back): the steady state of an agent as
// workloads come and go. Set is inside the timed loop.
func BenchmarkApplyOneOf10k(b *testing.B) {
	_, r, routes := benchHost(b)
	changed := make([]Route, len(routes))
	copy(changed, routes)
	changed[benchRoutes/2] = BlackholeRoute(routes[benchRoutes/2].Dst)
	sets := [2][]Route{changed, routes}
	r.Set(routes)
	benchApply(b, r)
	i := 0
	for b.Loop() {
		r.Set(sets[i%2])
		i++
		if st := benchApply(b, r); st.Changes() != 1 {
			b.Fatalf("%+v", st)
		}
	}
}

// BenchmarkApplyNoop10k is the periodic resync of a table that has not
// drifted: one dump and a comparison.
func BenchmarkApplyNoop10k(b *testing.B) {
	_, r, routes := benchHost(b)
	r.Set(routes)
	benchApply(b, r)
	for b.Loop() {
		if st := benchApply(b, r); st.Changes() != 0 {
			b.Fatalf("%+v", st)
		}
	}
}
