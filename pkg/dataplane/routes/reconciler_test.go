package routes

import (
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// testLogger logs everything with -v and nothing otherwise: tests provoke
// warnings on purpose.
func testLogger(tb testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hostNS is a namespace with a device d0 (10.0.0.1/24, 2001:db8::1/64) and a
// spare d1, both up.
func hostNS(t *testing.T) *testNS {
	n := newTestNS(t)
	n.veth(t, "d0", "d0p")
	n.veth(t, "d1", "d1p")
	n.addr(t, "d0", "10.0.0.1/24")
	n.addr(t, "d0", "2001:db8::1/64")
	return n
}

// mixedRoutes covers every kind of route, both families, and what `ip`
// should show for them.
func mixedRoutes() ([]Route, []string) {
	routes := []Route{
		WorkloadRoute(mustAddr("10.1.0.5"), "d0"),
		{Dst: mustPrefix("10.2.0.0/24"), Dev: "d0", Gateway: mustAddr("10.0.0.2")},
		TunnelRoute(mustPrefix("10.3.0.0/26"), "d0", mustAddr("192.0.2.1")),
		BlackholeRoute(mustPrefix("10.4.0.0/26")),
		{Dst: mustPrefix("10.5.0.0/24"), Dev: "d0", Src: mustAddr("10.0.0.1")},
		WorkloadRoute(mustAddr("2001:db8:1::5"), "d0"),
		{Dst: mustPrefix("2001:db8:2::/64"), Dev: "d0", Gateway: mustAddr("2001:db8::2")},
		TunnelRoute(mustPrefix("2001:db8:3::/64"), "d0", mustAddr("2001:db8:ff::1")),
		BlackholeRoute(mustPrefix("2001:db8:4::/122")),
	}
	want := sorted([]string{
		"10.1.0.5/32 dev d0 scope link",
		"10.2.0.0/24 via 10.0.0.2 dev d0 scope global",
		"10.3.0.0/26 via 192.0.2.1 dev d0 scope global onlink",
		"blackhole 10.4.0.0/26 scope global",
		"10.5.0.0/24 dev d0 scope link src 10.0.0.1",
		"2001:db8:1::5/128 dev d0 scope global",
		"2001:db8:2::/64 via 2001:db8::2 dev d0 scope global",
		"2001:db8:3::/64 via 2001:db8:ff::1 dev d0 scope global onlink",
		"blackhole 2001:db8:4::/122 scope global",
	})
	return routes, want
}

func apply(t *testing.T, r *Reconciler) Stats {
	t.Helper()
	st, err := r.Apply()
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return st
}

func checkRoutes(t *testing.T, n *testNS, want []string) {
	t.Helper()
	if got := n.ipRoutes(t, "main", "116"); !slices.Equal(got, want) {
		t.Fatalf("routes with protocol 116:\n got %q\nwant %q", got, want)
	}
}

func TestReconcilerAddsAndIsIdempotent(t *testing.T) {
	n := hostNS(t)
	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	routes, want := mixedRoutes()
	r.Set(routes)

	if st := apply(t, r); st.Added != len(routes) || st.Changes() != len(routes) {
		t.Errorf("first Apply: %+v, want %d added", st, len(routes))
	}
	checkRoutes(t, n, want)

	stop := n.watch(t, "")
	if st := apply(t, r); st.Changes() != 0 || st.Unchanged != len(routes) {
		t.Errorf("second Apply: %+v, want no changes", st)
	}
	// A new reconciler (an agent restart) adopts the routes in place.
	r2 := NewReconciler(n.h, Options{Logger: testLogger(t)})
	r2.Set(routes)
	if st := apply(t, r2); st.Changes() != 0 {
		t.Errorf("Apply after restart: %+v, want no changes", st)
	}
	if ev := stop(); len(ev) != 0 {
		t.Errorf("Apply with nothing to do wrote to the kernel:\n%s", strings.Join(ev, "\n"))
	}
	checkRoutes(t, n, want)
}

func TestReconcilerRepairsDrift(t *testing.T) {
	n := hostNS(t)
	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	routes, want := mixedRoutes()
	r.Set(routes)
	apply(t, r)

	// Deleted by hand, with ip and with netlink.
	n.ip(t, "route", "del", "10.1.0.5/32", "dev", "d0")
	n.ip(t, "route", "add", "10.1.0.5/32", "dev", "d1", "proto", "116", "metric", "50") // and back elsewhere
	n.ip(t, "-6", "route", "del", "blackhole", "2001:db8:4::/122")
	if err := n.h.RouteDel(&netlink.Route{Dst: prefixToIPNet(mustPrefix("10.3.0.0/26")), Protocol: ProtocolTortie}); err != nil {
		t.Fatal(err)
	}
	// Changed by hand, keeping our protocol.
	n.ip(t, "route", "replace", "10.2.0.0/24", "via", "10.0.0.3", "dev", "d0", "proto", "116")
	// Added by hand with our protocol: ours, and not desired.
	n.ip(t, "route", "add", "10.9.0.0/24", "dev", "d0", "proto", "116")

	stop := n.watch(t, "")
	st := apply(t, r)
	if st.Added != 3 || st.Replaced != 1 || st.Deleted != 2 {
		t.Errorf("repair: %+v, want 3 added, 1 replaced, 2 deleted", st)
	}
	// The watcher sees writes (so its silence elsewhere means something).
	if ev := stop(); len(ev) != 6 {
		t.Errorf("repair: %d route events, want 6:\n%s", len(ev), strings.Join(ev, "\n"))
	}
	checkRoutes(t, n, want)
}

func TestReconcilerWaitsForFirstSet(t *testing.T) {
	n := hostNS(t)
	routes, want := mixedRoutes()
	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	r.Set(routes)
	apply(t, r)

	// The agent restarts; its periodic Apply runs before the first sync.
	r = NewReconciler(n.h, Options{Logger: testLogger(t)})
	if st := apply(t, r); st != (Stats{}) {
		t.Errorf("Apply before Set: %+v, want nothing done", st)
	}
	checkRoutes(t, n, want)
	r.Set(nil) // an explicit empty set is a desired state
	if st := apply(t, r); st.Deleted != len(routes) {
		t.Errorf("Apply after Set(nil): %+v, want all deleted", st)
	}
	checkRoutes(t, n, nil)
}

func TestReconcilerNeverTouchesOtherRoutes(t *testing.T) {
	n := hostNS(t)
	n.ip(t, "route", "add", "10.6.0.0/24", "via", "10.0.0.9", "dev", "d0", "proto", "static")
	n.ip(t, "route", "add", "blackhole", "10.7.0.0/24")
	n.ip(t, "-6", "route", "add", "2001:db8:6::/64", "dev", "d0", "proto", "bgp")
	// In the way of a desired route.
	n.ip(t, "route", "add", "10.8.0.0/24", "dev", "d0", "proto", "static")
	n.ip(t, "-6", "route", "add", "2001:db8:8::/64", "dev", "d0", "proto", "bird")
	before := n.otherRoutes(t)

	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	r.Set([]Route{
		WorkloadRoute(mustAddr("10.1.0.5"), "d0"),
		{Dst: mustPrefix("10.8.0.0/24"), Dev: "d0", Gateway: mustAddr("10.0.0.2")},
		BlackholeRoute(mustPrefix("2001:db8:8::/64")),
	})
	st, err := r.Apply()
	if st.Added != 1 || st.Failed != 2 {
		t.Errorf("Apply: %+v, want 1 added, 2 failed", st)
	}
	var re *RouteError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &re) {
		t.Errorf("Apply error %v, want a *RouteError wrapping ErrConflict", err)
	}
	checkRoutes(t, n, []string{"10.1.0.5/32 dev d0 scope link"})
	if after := n.otherRoutes(t); after != before {
		t.Errorf("routes of other protocols changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// The conflict persists and is reported on every Apply; the route of the
	// other protocol stays.
	if st, err := r.Apply(); st.Failed != 2 || !errors.Is(err, ErrConflict) || st.Changes() != 0 {
		t.Errorf("second Apply: %+v %v", st, err)
	}

	r.Set(nil)
	if st := apply(t, r); st.Deleted != 1 {
		t.Errorf("removing all: %+v, want 1 deleted", st)
	}
	checkRoutes(t, n, nil)
	if after := n.otherRoutes(t); after != before {
		t.Errorf("routes of other protocols changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestReconcilerReplacesChangedRoutes(t *testing.T) {
	n := hostNS(t)
	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	routes, _ := mixedRoutes()
	r.Set(routes)
	apply(t, r)

	changed := slices.Clone(routes)
	changed[0] = WorkloadRoute(mustAddr("10.1.0.5"), "d1")                                       // workload moved
	changed[1].Gateway = mustAddr("10.0.0.3")                                                    // new next hop
	changed[3] = Route{Dst: mustPrefix("10.4.0.0/26"), Dev: "d0", Gateway: mustAddr("10.0.0.4")} // block moved away
	changed[4].Src = Route{}.Src                                                                 // no preferred source
	changed[6].Gateway = mustAddr("2001:db8::3")
	changed[8] = Route{Dst: mustPrefix("2001:db8:4::/122"), Dev: "d0"} // blackhole to unicast
	r.Set(changed)

	st := apply(t, r)
	if st.Replaced != 6 || st.Added != 0 || st.Deleted != 0 || st.Unchanged != 3 {
		t.Errorf("Apply: %+v, want 6 replaced, 3 unchanged", st)
	}
	checkRoutes(t, n, sorted([]string{
		"10.1.0.5/32 dev d1 scope link",
		"10.2.0.0/24 via 10.0.0.3 dev d0 scope global",
		"10.3.0.0/26 via 192.0.2.1 dev d0 scope global onlink",
		"10.4.0.0/26 via 10.0.0.4 dev d0 scope global",
		"10.5.0.0/24 dev d0 scope link",
		"2001:db8:1::5/128 dev d0 scope global",
		"2001:db8:2::/64 via 2001:db8::3 dev d0 scope global",
		"2001:db8:3::/64 via 2001:db8:ff::1 dev d0 scope global onlink",
		"2001:db8:4::/122 dev d0 scope global",
	}))
	if st := apply(t, r); st.Changes() != 0 {
		t.Errorf("Apply after replace: %+v, want no changes", st)
	}
}

func TestReconcilerRemovesRoutes(t *testing.T) {
	n := hostNS(t)
	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	routes, want := mixedRoutes()
	r.Set(routes)
	apply(t, r)

	r.Set(routes[:4]) // 10.1, 10.2, 10.3, 10.4
	if st := apply(t, r); st.Deleted != 5 || st.Unchanged != 4 {
		t.Errorf("Apply: %+v, want 5 deleted, 4 unchanged", st)
	}
	checkRoutes(t, n, sorted(slices.DeleteFunc(slices.Clone(want), func(s string) bool {
		return s == "10.5.0.0/24 dev d0 scope link src 10.0.0.1" || s[0] == '2' || s == "blackhole 2001:db8:4::/122 scope global"
	})))

	r.Set(nil)
	if st := apply(t, r); st.Deleted != 4 {
		t.Errorf("Apply: %+v, want 4 deleted", st)
	}
	checkRoutes(t, n, nil)
}

func TestReconcilerWaitsForMissingDevice(t *testing.T) {
	n := hostNS(t)
	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	const dev = "cali0123456789a"
	routes, want := mixedRoutes()
	routes = append(routes, WorkloadRoute(mustAddr("10.1.0.6"), dev), WorkloadRoute(mustAddr("2001:db8:1::6"), dev))
	r.Set(routes)

	st, err := r.Apply()
	if err != nil || st.Pending != 2 || st.Added != len(routes)-2 {
		t.Fatalf("Apply without %s: %+v %v, want the others added and 2 pending", dev, st, err)
	}
	checkRoutes(t, n, want)
	stop := n.watch(t, "")
	if st := apply(t, r); st.Pending != 2 || st.Changes() != 0 {
		t.Errorf("Apply again: %+v, want 2 pending and no changes", st)
	}
	if ev := stop(); len(ev) != 0 {
		t.Errorf("Apply with nothing to do wrote to the kernel:\n%s", strings.Join(ev, "\n"))
	}

	// Created but down (the CNI plugin has not finished): still pending.
	if err := n.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev}, PeerName: "wl0"}); err != nil {
		t.Fatal(err)
	}
	if st := apply(t, r); st.Pending != 2 || st.Changes() != 0 {
		t.Errorf("Apply with %s down: %+v, want 2 pending", dev, st)
	}

	n.linkUp(t, dev)
	if st := apply(t, r); st.Pending != 0 || st.Added != 2 {
		t.Errorf("Apply with %s up: %+v, want 2 added", dev, st)
	}
	withDev := sorted(append(slices.Clone(want), "10.1.0.6/32 dev "+dev+" scope link", "2001:db8:1::6/128 dev "+dev+" scope global"))
	checkRoutes(t, n, withDev)

	// The workload goes away before its endpoint does: the kernel drops the
	// routes and they become pending again, without error.
	l, _ := n.h.LinkByName(dev)
	if err := n.h.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if st := apply(t, r); st.Pending != 2 || st.Changes() != 0 {
		t.Errorf("Apply after %s deleted: %+v, want 2 pending", dev, st)
	}
	checkRoutes(t, n, want)
}

func TestReconcilerReportsInvalidRoutes(t *testing.T) {
	n := hostNS(t)
	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	r.Set([]Route{
		WorkloadRoute(mustAddr("10.1.0.5"), "d0"),
		{Dst: mustPrefix("10.2.0.0/24"), Type: Blackhole, Dev: "d0"},                        // invalid
		{Dst: mustPrefix("10.2.1.0/24"), Type: Throw, Gateway: mustAddr("10.0.0.2")},        // invalid
		{Dst: mustPrefix("10.3.0.0/24"), Dev: "d0", Src: mustAddr("10.99.99.99")},           // kernel: not a local address
		{Dst: mustPrefix("10.4.0.0/24"), Dev: "d0", Gateway: mustAddr("2001:db8::1")},       // family mismatch
		{Dst: mustPrefix("2001:db8:2::/64"), Dev: "d0", Gateway: mustAddr("2001:db8:9::1")}, // unreachable gateway
	})
	st, err := r.Apply()
	if st.Added != 1 || st.Failed != 5 {
		t.Errorf("Apply: %+v, want 1 added, 5 failed", st)
	}
	if err == nil {
		t.Fatal("Apply: no error")
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("Apply error %v does not carry the kernel's errno", err)
	}
	checkRoutes(t, n, []string{"10.1.0.5/32 dev d0 scope link"})
}

func TestReconcilerOwnTableAndProtocol(t *testing.T) {
	n := hostNS(t)
	main := NewReconciler(n.h, Options{Logger: testLogger(t)})
	other := NewReconciler(n.h, Options{Table: 100, Protocol: 117, Logger: testLogger(t)})
	main.Set([]Route{BlackholeRoute(mustPrefix("10.4.0.0/26"))})
	other.Set([]Route{BlackholeRoute(mustPrefix("10.4.0.0/26")), WorkloadRoute(mustAddr("10.1.0.5"), "d0"),
		{Dst: mustPrefix("10.6.0.0/26"), Type: Throw}})
	apply(t, main)
	apply(t, other)
	if st := apply(t, other); st.Changes() != 0 || st.Unchanged != 3 {
		t.Errorf("second Apply: %+v, want 3 unchanged", st)
	}
	if got := n.ipRoutes(t, "100", "117"); !slices.Equal(got, []string{"10.1.0.5/32 dev d0 scope link", "blackhole 10.4.0.0/26 scope global",
		"throw 10.6.0.0/26 scope global"}) {
		t.Errorf("table 100: %q", got)
	}
	checkRoutes(t, n, []string{"blackhole 10.4.0.0/26 scope global"})

	other.Set(nil)
	if st := apply(t, other); st.Deleted != 3 {
		t.Errorf("Apply: %+v, want 3 deleted", st)
	}
	if st := apply(t, main); st.Changes() != 0 || st.Unchanged != 1 {
		t.Errorf("main after other emptied: %+v", st)
	}
	checkRoutes(t, n, []string{"blackhole 10.4.0.0/26 scope global"})
}

// TestReconcilerAcceptsIdenticalForeignRoute: a route another owner already
// programmed exactly as desired (the CNI plugin's workload host route) is
// the desired state, not a conflict.
func TestReconcilerAcceptsIdenticalForeignRoute(t *testing.T) {
	n := hostNS(t)
	n.ip(t, "route", "add", "10.1.0.9/32", "dev", "d0", "scope", "link", "proto", "boot")
	before := n.otherRoutes(t)
	r := NewReconciler(n.h, Options{Logger: testLogger(t)})
	r.Set([]Route{WorkloadRoute(mustAddr("10.1.0.9"), "d0")})
	for i := range 2 {
		st, err := r.Apply()
		if err != nil || st.Unchanged != 1 || st.Changes() != 0 {
			t.Errorf("Apply %d: %+v %v, want 1 unchanged and no error", i, st, err)
		}
	}
	if after := n.otherRoutes(t); after != before {
		t.Errorf("the other owner's route changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
