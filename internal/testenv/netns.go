package testenv

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Sh runs a command and fails the test with its output when it fails.
func Sh(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ShOut runs a command and returns its output and error, for commands
// expected to fail sometimes.
func ShOut(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// NewNS makes a network namespace unique to the run, removed when the test
// ends, and returns it with its name (for `ip -n`).
func NewNS(tb testing.TB) (ns.NetNS, string) {
	tb.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = n.Close(); _ = testutils.UnmountNS(n) })
	return n, filepath.Base(n.Path())
}

// PlumbHost prepares host namespace hn for workloads plumbed as Calico
// does (PlumbWorkload): proxy ARP answers for 169.254.1.1 only when the
// host has a route to it through another device, so it gets one.
func PlumbHost(tb testing.TB, hn string) {
	tb.Helper()
	Sh(tb, "ip", "-n", hn, "link", "add", "dummyhost", "type", "veth", "peer", "name", "dummypeer")
	Sh(tb, "ip", "-n", hn, "link", "set", "dummyhost", "up")
	Sh(tb, "ip", "-n", hn, "link", "set", "dummypeer", "up")
	Sh(tb, "ip", "-n", hn, "route", "add", "169.254.1.1/32", "dev", "dummyhost")
}

// PlumbWorkload makes a workload namespace with address addr behind host
// interface iface in host namespace hn, as Calico's CNI plugin does: a veth
// whose host end answers ARP for the workload's gateway 169.254.1.1, and a
// /32 route to the workload.
func PlumbWorkload(tb testing.TB, hn, iface, addr string) ns.NetNS {
	tb.Helper()
	w, wn := NewNS(tb)
	Sh(tb, "ip", "-n", hn, "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", wn)
	Sh(tb, "ip", "-n", hn, "link", "set", iface, "address", "ee:ee:ee:ee:ee:ee", "up")
	Sh(tb, "ip", "netns", "exec", hn, "sysctl", "-qw", "net.ipv4.conf."+iface+".proxy_arp=1")
	Sh(tb, "ip", "netns", "exec", hn, "sysctl", "-qw", "net.ipv4.neigh."+iface+".proxy_delay=0")
	Sh(tb, "ip", "-n", hn, "route", "add", addr+"/32", "dev", iface, "scope", "link")
	Sh(tb, "ip", "-n", wn, "link", "set", "lo", "up")
	Sh(tb, "ip", "-n", wn, "link", "set", "eth0", "up")
	Sh(tb, "ip", "-n", wn, "addr", "add", addr+"/32", "dev", "eth0")
	Sh(tb, "ip", "-n", wn, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
	Sh(tb, "ip", "-n", wn, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")
	return w
}

// NetlinkIn opens a netlink handle in the namespace at path, closed when the
// test ends.
func NetlinkIn(tb testing.TB, path string) *netlink.Handle {
	tb.Helper()
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		tb.Fatalf("opening namespace %s: %v", path, err)
	}
	h, err := netlink.NewHandleAt(nsh)
	_ = nsh.Close()
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", path, err)
	}
	tb.Cleanup(h.Close)
	return h
}
