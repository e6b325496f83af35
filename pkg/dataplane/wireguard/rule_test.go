package wireguard

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tortie/tortie/internal/testenv"
)

func TestRules(t *testing.T) {
	x := newWGHost(t, "192.0.2.1", "10.99.0.1")
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rules := func() string {
		out := ipIn(t, x.name, "rule", "show")
		var ours []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.Contains(l, "lookup 1 ") || strings.HasSuffix(l, "lookup 1") {
				ours = append(ours, strings.Join(strings.Fields(l), " "))
			}
		}
		return strings.Join(ours, "; ")
	}
	r := Rule{Priority: 99, Table: 1, Mark: 0x100000}
	if changed, err := EnsureRule(x.h, r, netlink.FAMILY_V4, log); err != nil || !changed {
		t.Fatalf("first: changed %v, %v", changed, err)
	}
	const want = "99: not from all fwmark 0x100000/0x100000 lookup 1"
	if got := rules(); got != want {
		t.Fatalf("rules %q, want %q", got, want)
	}
	if changed, err := EnsureRule(x.h, r, netlink.FAMILY_V4, log); err != nil || changed {
		t.Fatalf("again: changed %v, %v", changed, err)
	}
	// A rule of someone else's for the same table stays.
	ipIn(t, x.name, "rule", "add", "from", "10.1.0.0/16", "lookup", "1", "priority", "50")
	// A new priority moves the rule.
	r.Priority = 98
	if changed, err := EnsureRule(x.h, r, netlink.FAMILY_V4, log); err != nil || !changed {
		t.Fatalf("new priority: changed %v, %v", changed, err)
	}
	if got := rules(); got != "50: from 10.1.0.0/16 lookup 1; 98: not from all fwmark 0x100000/0x100000 lookup 1" {
		t.Fatalf("after the priority changed: %q", got)
	}
	if n, err := RemoveRules(x.h, 1, 0x100000, netlink.FAMILY_V4, log); err != nil || n != 1 {
		t.Fatalf("remove: %d, %v", n, err)
	}
	if got := rules(); got != "50: from 10.1.0.0/16 lookup 1" {
		t.Fatalf("after removal: %q", got)
	}
}

func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return testenv.Sh(t, append([]string{"ip", "-n", ns}, args...)...)
}
