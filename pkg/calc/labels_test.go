package calc

import (
	"fmt"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// TestLabelsShared: endpoints with equal labels hold one map between them,
// through adds, changes, a profile's labels changing and deletes; the last
// holder gone, the map is forgotten.
func TestLabelsShared(t *testing.T) {
	g := New(Config{NodeName: node})
	profile := func(team string) Update {
		return upd(&v3.Profile{ObjectMeta: meta("", "kns.ns1", nil), Spec: v3.ProfileSpec{LabelsToApply: map[string]string{"team": team}}})
	}
	g.OnUpdate(profile("a"))
	const n = 300
	for i := range n {
		g.OnUpdate(upd(wep("ns1", fmt.Sprintf("p%d", i), "h2", map[string]string{"app": fmt.Sprintf("a%d", i%3)}, []string{fmt.Sprintf("10.0.%d.%d/32", i/250, i%250)}, "kns.ns1")))
	}
	// Three label sets, each as own labels and with the profile's.
	if got := g.labels.len(); got != 6 {
		t.Fatalf("%d label maps held for %d endpoints of 3 label sets, want 6", got, n)
	}
	a, b := g.items[itemKey{kindWorkload, "ns1", "p0"}], g.items[itemKey{kindWorkload, "ns1", "p3"}]
	if fmt.Sprintf("%p", a.labels) != fmt.Sprintf("%p", b.labels) || a.labels["team"] != "a" {
		t.Errorf("p0 and p3 do not share their labels: %v %v", a.labels, b.labels)
	}
	// A changed endpoint moves to another set; a profile change moves all.
	g.OnUpdate(upd(wep("ns1", "p0", "h2", map[string]string{"app": "other"}, []string{"10.0.0.0/32"}, "kns.ns1")))
	if got := g.labels.len(); got != 8 {
		t.Errorf("after one endpoint's labels changed: %d maps, want 8", got)
	}
	g.OnUpdate(profile("b"))
	if got := g.labels.len(); got != 8 || b.labels["team"] != "b" || b.labels["app"] != "a0" {
		t.Errorf("after the profile changed: %d maps, want 8; p3's labels %v", got, b.labels)
	}
	for i := range n {
		g.OnUpdate(del(v3.KindWorkloadEndpoint, "ns1", fmt.Sprintf("p%d", i)))
	}
	if got := g.labels.len(); got != 0 {
		t.Errorf("%d label maps held after every endpoint was deleted", got)
	}
}
