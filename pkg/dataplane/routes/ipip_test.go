package routes

import (
	"errors"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// kernelIPIP asks the ip command, in a namespace of its own, whether this
// kernel can make IP-in-IP devices: the witness the tests below are checked
// against, independent of the code under test. why is what ip said when it
// cannot.
func kernelIPIP(t *testing.T) (ok bool, why string) {
	t.Helper()
	probe := newTestNS(t)
	if _, err := probe.h.LinkByName(IPIPDeviceName); err == nil {
		return true, "" // the module is loaded: the fallback device is there
	}
	out, err := exec.Command("ip", "-n", probe.name, "link", "add", IPIPDeviceName, "type", "ipip").CombinedOutput()
	switch {
	case err == nil:
		return true, ""
	case strings.Contains(string(out), "Unknown device type"):
		return false, strings.TrimSpace(string(out))
	}
	if _, lerr := probe.h.LinkByName(IPIPDeviceName); lerr == nil {
		return true, "" // the add loaded the module, whose fallback device took the name
	}
	t.Fatalf("ip link add %s type ipip: %v\n%s", IPIPDeviceName, err, out)
	return false, ""
}

// requireIPIP skips a test that needs the kernel's IP-in-IP. It skips even
// under CI: a kernel module is not something scripts/install-deps.sh can
// install, and TestIPIPSupported checks what such a kernel must be told.
func requireIPIP(t *testing.T) {
	t.Helper()
	if ok, why := kernelIPIP(t); !ok {
		t.Skipf("this kernel has no IP-in-IP support (ip link add %s type ipip: %q): the ipip module is neither built in nor loadable here", IPIPDeviceName, why)
	}
}

func TestIPIPSupported(t *testing.T) {
	has, why := kernelIPIP(t)
	n := newTestNS(t)
	err := IPIPSupported(n.h)
	if !has {
		t.Logf("kernel without ipip (ip says %q); IPIPSupported says: %v", why, err)
		if !errors.Is(err, ErrNoIPIP) {
			t.Fatalf("IPIPSupported = %v, want an error wrapping ErrNoIPIP", err)
		}
		for _, want := range []string{"no IP-in-IP support", "no ipip module", "creating tunl0"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if _, err := n.h.LinkByName(IPIPDeviceName); err == nil {
			t.Error("a tunl0 device exists after a failed probe")
		}
		return
	}
	if err != nil {
		t.Fatalf("kernel with ipip, but IPIPSupported = %v", err)
	}
	if l, err := n.h.LinkByName(IPIPDeviceName); err != nil || l.Type() != "ipip" {
		t.Fatalf("after the probe: %v %v, want an ipip tunl0", l, err)
	}
}

// A device called tunl0 that is not an IP-in-IP tunnel is not taken for one
// (on any kernel: with the ipip module loaded the name is the fallback
// device's, so the test makes its own namespace's tunl0 a veth only where
// the name is free).
func TestIPIPSupportedWrongDevice(t *testing.T) {
	n := newTestNS(t)
	if _, err := n.h.LinkByName(IPIPDeviceName); err == nil {
		t.Skip("the kernel made the fallback tunl0 in every namespace; the name is not free for a veth")
	}
	n.veth(t, IPIPDeviceName, "tunl0peer")
	err := IPIPSupported(n.h)
	if err == nil || errors.Is(err, ErrNoIPIP) || !strings.Contains(err.Error(), "of type veth, not ipip") {
		t.Fatalf("IPIPSupported = %v, want: exists but is of type veth, not ipip", err)
	}
	if err := EnsureIPIP(n.h, IPIPConfig{Name: IPIPDeviceName, MTU: 1440}); err == nil || !strings.Contains(err.Error(), "not ipip") {
		t.Fatalf("EnsureIPIP on a veth = %v", err)
	}
}

func TestEnsureIPIP(t *testing.T) {
	requireIPIP(t)
	n := newTestNS(t)
	cfg := IPIPConfig{Name: IPIPDeviceName, MTU: 1440, TunnelAddr: mustAddr("10.244.1.0"), Logger: testLogger(t)}
	changes, err := ensureIPIP(n.h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first ensure: %q", changes)
	link := n.ip(t, "-d", "link", "show", IPIPDeviceName)
	for _, want := range []string{"mtu 1440", ",UP", "ipip any remote any local any"} {
		if !strings.Contains(link, want) {
			t.Errorf("tunl0 lacks %q:\n%s", want, link)
		}
	}
	if a := n.ip(t, "-4", "addr", "show", "dev", IPIPDeviceName); !strings.Contains(a, "inet 10.244.1.0/32") {
		t.Errorf("tunl0 addresses:\n%s", a)
	}

	// Nothing to do the second time.
	if changes, err := ensureIPIP(n.h, cfg); err != nil || len(changes) != 0 {
		t.Errorf("second ensure: %q %v", changes, err)
	}

	// Changed by hand: down, another MTU, a stray address. Repaired in place.
	n.ip(t, "link", "set", IPIPDeviceName, "down", "mtu", "1400")
	n.ip(t, "addr", "add", "10.9.9.9/24", "dev", IPIPDeviceName)
	changes, err = ensureIPIP(n.h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"MTU set", "set up", "address removed 10.9.9.9/24"} {
		if !slices.Contains(changes, want) {
			t.Errorf("repair: %q lacks %q", changes, want)
		}
	}
	if link := n.ip(t, "link", "show", IPIPDeviceName); !strings.Contains(link, "mtu 1440") || !strings.Contains(link, ",UP") {
		t.Errorf("after repair:\n%s", link)
	}
}

// Two hosts joined by an underlay, each with a block: routes
// "<block> via <host> dev tunl0 onlink" carry workload traffic both ways,
// through the tunnel.
func TestIPIPConnectsTwoHosts(t *testing.T) {
	requireIPIP(t)
	// twoHosts also gives each a VXLAN device, which no route here uses.
	a, b := twoHosts(t)
	for _, h := range []*vxlanHost{a, b} {
		if err := EnsureIPIP(h.h, IPIPConfig{Name: IPIPDeviceName, MTU: 1480, Logger: testLogger(t)}); err != nil {
			t.Fatalf("EnsureIPIP in %s: %v", h.name, err)
		}
	}
	srv := b.tcpEcho(t, b.workload)
	if err := a.dialTimeout(a.workload, srv, 300*time.Millisecond); err == nil {
		t.Fatal("connected before any route was programmed")
	}
	for _, p := range [][2]*vxlanHost{{a, b}, {b, a}} {
		h, o := p[0], p[1]
		h.routes.Set([]Route{BlackholeRoute(h.block), TunnelRoute(o.block, IPIPDeviceName, o.underlay)})
		if _, err := h.routes.Apply(); err != nil {
			t.Fatalf("routes in %s: %v", h.name, err)
		}
	}
	if r := a.ip(t, "route", "show", mustPrefix("10.244.2.0/26").String()); !strings.Contains(r, "via 192.168.50.2 dev tunl0") || !strings.Contains(r, "onlink") {
		t.Errorf("route in A: %s", r)
	}
	txBefore := txOf(t, a.h, IPIPDeviceName)
	if err := a.dial(a.workload, srv); err != nil {
		t.Fatalf("workload %s → %s through tunl0: %v", a.workload, srv, err)
	}
	if txOf(t, a.h, IPIPDeviceName) == txBefore {
		t.Error("the connection did not go through tunl0")
	}
	srvA := a.tcpEcho(t, a.workload)
	if err := b.dial(b.workload, srvA); err != nil {
		t.Fatalf("workload %s → %s through tunl0: %v", b.workload, srvA, err)
	}
}

func txOf(t *testing.T, h *netlink.Handle, dev string) uint64 {
	t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.TxPackets
}

func TestIPIPConfigValidate(t *testing.T) {
	for _, c := range []IPIPConfig{
		{Name: ""},
		{Name: "a-name-far-too-long"},
		{Name: IPIPDeviceName, MTU: -1},
		{Name: IPIPDeviceName, TunnelAddr: netip.MustParseAddr("fd00::1")},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
