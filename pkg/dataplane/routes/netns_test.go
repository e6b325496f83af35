package routes

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/internal/testenv"
)

// testNS is a network namespace made for one test: a bind mount under
// /var/run/netns with a random name (so `ip -n` can inspect it), and a netlink
// handle opened in it. Both are removed when the test ends.
type testNS struct {
	ns   ns.NetNS
	name string
	h    *netlink.Handle
}

func newTestNS(tb testing.TB) *testNS {
	tb.Helper()
	testenv.RequireRoot(tb)
	n, err := testutils.NewNS()
	if err != nil {
		tb.Fatalf("creating netns: %v", err)
	}
	tb.Cleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	nsh, err := netns.GetFromPath(n.Path())
	if err != nil {
		tb.Fatalf("opening netns %s: %v", n.Path(), err)
	}
	h, err := netlink.NewHandleAt(nsh)
	_ = nsh.Close()
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", n.Path(), err)
	}
	tb.Cleanup(h.Close)
	t := &testNS{ns: n, name: filepath.Base(n.Path()), h: h}
	t.linkUp(tb, "lo")
	return t
}

func (n *testNS) linkUp(tb testing.TB, name string) {
	tb.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	if err := n.h.LinkSetUp(l); err != nil {
		tb.Fatalf("setting %s up: %v", name, err)
	}
}

// veth adds a veth pair with both ends in n, both up (a device with carrier:
// the closest thing to a dummy, which this kernel lacks).
func (n *testNS) veth(tb testing.TB, name, peer string) {
	tb.Helper()
	if err := n.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		tb.Fatalf("adding veth %s: %v", name, err)
	}
	n.linkUp(tb, name)
	n.linkUp(tb, peer)
}

// addr adds an address, given as a prefix, to a device.
func (n *testNS) addr(tb testing.TB, dev, prefix string) {
	tb.Helper()
	l, err := n.h.LinkByName(dev)
	if err != nil {
		tb.Fatalf("%s: %v", dev, err)
	}
	p := netip.MustParsePrefix(prefix)
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD // usable at once
	}
	if err := n.h.AddrAdd(l, a); err != nil {
		tb.Fatalf("adding %s to %s: %v", prefix, dev, err)
	}
}

// ip runs the ip command in n; an independent client is the best witness of
// what the kernel holds.
func (n *testNS) ip(tb testing.TB, args ...string) string {
	tb.Helper()
	return n.run(tb, "ip", append([]string{"-n", n.name}, args...)...)
}

func (n *testNS) run(tb testing.TB, cmd string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(cmd, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", cmd, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ipRoutes lists, as `ip` reports them, the routes of a table with a given
// protocol, rendered like Route.String on a normalised route, sorted.
func (n *testNS) ipRoutes(tb testing.TB, table, proto string) []string {
	tb.Helper()
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		args := []string{"-n", n.name, fam, "-d", "-j", "route", "show", "table", table, "proto", proto}
		raw, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil && strings.Contains(string(raw), "FIB table does not exist") {
			continue // an IPv6 table comes into being with its first route
		}
		if err != nil {
			tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, raw)
		}
		js := string(raw)
		var rs []struct {
			Type    string   `json:"type"`
			Dst     string   `json:"dst"`
			Gateway string   `json:"gateway"`
			Dev     string   `json:"dev"`
			Scope   string   `json:"scope"`
			Prefsrc string   `json:"prefsrc"`
			Flags   []string `json:"flags"`
		}
		if err := json.Unmarshal([]byte(js), &rs); err != nil {
			tb.Fatalf("parsing %q: %v", js, err)
		}
		for _, r := range rs {
			var b strings.Builder
			if r.Type != "unicast" {
				b.WriteString(r.Type + " ")
			}
			dst := r.Dst
			if dst == "default" {
				dst = map[string]string{"-4": "0.0.0.0/0", "-6": "::/0"}[fam]
			} else if !strings.Contains(dst, "/") {
				dst = netip.PrefixFrom(netip.MustParseAddr(dst), netip.MustParseAddr(dst).BitLen()).String()
			}
			b.WriteString(dst)
			if r.Gateway != "" {
				b.WriteString(" via " + r.Gateway)
			}
			if r.Dev != "" && r.Type != "blackhole" {
				b.WriteString(" dev " + r.Dev)
			}
			b.WriteString(" scope " + r.Scope)
			if r.Prefsrc != "" {
				b.WriteString(" src " + r.Prefsrc)
			}
			if slices.Contains(r.Flags, "onlink") {
				b.WriteString(" onlink")
			}
			out = append(out, b.String())
		}
	}
	slices.Sort(out)
	return out
}

// otherRoutes is every route of the main table whose protocol is not ours,
// in ip's own words, for checking that they are never touched.
func (n *testNS) otherRoutes(tb testing.TB) string {
	tb.Helper()
	var keep []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(n.ip(tb, fam, "route", "show", "table", "main"), "\n") {
			if l != "" && !strings.Contains(l, "proto 116") {
				keep = append(keep, l)
			}
		}
	}
	return strings.Join(keep, "\n")
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

// watch records the kernel's own notifications about the objects tortie owns
// in n: routes with protocol 116 and, if dev is given, that device's link,
// IPv4 address and permanent neighbour/FDB changes. The returned function
// stops recording and lists what was seen. It is the witness that an Apply
// which claims to change nothing really wrote nothing.
func (n *testNS) watch(tb testing.TB, dev string) func() []string {
	tb.Helper()
	nsh, err := netns.GetFromPath(n.ns.Path())
	if err != nil {
		tb.Fatal(err)
	}
	defer nsh.Close()
	idx := -1
	if dev != "" {
		l, err := n.h.LinkByName(dev)
		if err != nil {
			tb.Fatal(err)
		}
		idx = l.Attrs().Index
	}
	done := make(chan struct{})
	routes := make(chan netlink.RouteUpdate, 1024)
	links := make(chan netlink.LinkUpdate, 1024)
	addrs := make(chan netlink.AddrUpdate, 1024)
	neighs := make(chan netlink.NeighUpdate, 1024)
	// Receive errors after done is closed are the subscriptions shutting
	// down; before, they mean notifications may have been lost.
	var stopping atomic.Bool
	onErr := func(err error) {
		if !stopping.Load() {
			tb.Errorf("watch: %v", err)
		}
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &nsh, ErrorCallback: onErr}); err != nil {
		tb.Fatal(err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &nsh, ErrorCallback: onErr}); err != nil {
		tb.Fatal(err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &nsh, ErrorCallback: onErr}); err != nil {
		tb.Fatal(err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &nsh, ErrorCallback: onErr}); err != nil {
		tb.Fatal(err)
	}
	return func() []string {
		time.Sleep(50 * time.Millisecond) // let notifications in flight arrive
		stopping.Store(true)
		close(done)
		// The subscriptions close their channels once done is closed; a
		// closed channel is set to nil so that it no longer wins the select.
		var seen []string
		for routes != nil || links != nil || addrs != nil || neighs != nil {
			select {
			case u, ok := <-routes:
				if !ok {
					routes = nil
				} else if u.Protocol == ProtocolTortie {
					seen = append(seen, fmt.Sprintf("route event %d: %s", u.Type, u.Route))
				}
			case u, ok := <-links:
				if !ok {
					links = nil
				} else if int(u.Index) == idx {
					seen = append(seen, fmt.Sprintf("link event %d: %s", u.Header.Type, u.Attrs().Name))
				}
			case u, ok := <-addrs:
				if !ok {
					addrs = nil
				} else if u.LinkIndex == idx && u.LinkAddress.IP.To4() != nil {
					seen = append(seen, fmt.Sprintf("address event new=%v: %s", u.NewAddr, u.LinkAddress.String()))
				}
			case u, ok := <-neighs:
				if !ok {
					neighs = nil
				} else if u.LinkIndex == idx && u.State&netlink.NUD_PERMANENT != 0 {
					seen = append(seen, fmt.Sprintf("neighbour event %d: %s", u.Type, u.Neigh.String()))
				}
			case <-time.After(time.Second):
				tb.Log("watch: subscriptions did not close")
				return seen
			}
		}
		return seen
	}
}
