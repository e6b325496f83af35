// Package testenv holds the one rule every test that needs the machine
// follows: without what it needs it skips, unless CI is set, when it fails,
// because CI must run every test. For tests only.
package testenv

import (
	"os"
	"testing"
)

// RequireRoot skips a test that needs root (network namespaces, nftables,
// netlink) when not root, and fails it instead under CI.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	Missing(tb, "root (network namespaces, nftables, netlink)")
}

// Missing reports that a test cannot run for want of what; it skips, or
// fails under CI.
func Missing(tb testing.TB, what string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("needs %s; CI is set, so this is a failure, not a skip", what)
	}
	tb.Skipf("needs %s", what)
}
