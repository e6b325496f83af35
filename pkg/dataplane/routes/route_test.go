package routes

import (
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestNormalise(t *testing.T) {
	tests := []struct {
		in      Route
		want    string // Route.String of the normalised route
		wantErr bool
	}{
		{in: WorkloadRoute(mustAddr("10.1.0.5"), "cali0123456789a"), want: "10.1.0.5/32 dev cali0123456789a scope link"},
		{in: WorkloadRoute(mustAddr("::ffff:10.1.0.5"), "cali0123456789a"), want: "10.1.0.5/32 dev cali0123456789a scope link"},
		{in: WorkloadRoute(mustAddr("fd00::5"), "cali0123456789a"), want: "fd00::5/128 dev cali0123456789a scope global"},
		{in: Route{Dst: mustPrefix("10.1.0.7/24"), Dev: "eth0"}, want: "10.1.0.0/24 dev eth0 scope link"},
		{in: Route{Dst: mustPrefix("::ffff:10.1.0.0/120"), Dev: "eth0"}, want: "10.1.0.0/24 dev eth0 scope link"},
		{in: Route{Dst: mustPrefix("0.0.0.0/0"), Gateway: mustAddr("10.0.0.1")}, want: "0.0.0.0/0 via 10.0.0.1 scope global"},
		{in: BlackholeRoute(mustPrefix("10.65.0.64/26")), want: "blackhole 10.65.0.64/26 scope global"},
		{in: BlackholeRoute(mustPrefix("fd00::/122")), want: "blackhole fd00::/122 scope global"},
		{in: Route{Dst: mustPrefix("10.65.0.128/26"), Type: Throw}, want: "throw 10.65.0.128/26 scope global"},
		{in: Route{Dst: mustPrefix("10.65.0.128/26"), Type: Throw, Dev: "eth0"}, wantErr: true},
		{in: TunnelRoute(mustPrefix("10.65.1.0/26"), VXLANDeviceName, mustAddr("10.65.1.0")), want: "10.65.1.0/26 via 10.65.1.0 dev vxlan.calico scope global onlink"},
		{in: Route{Dst: mustPrefix("10.2.0.0/24"), Dev: "eth0", Scope: ScopeLink, Src: mustAddr("10.0.0.1")}, want: "10.2.0.0/24 dev eth0 scope link src 10.0.0.1"},
		{in: Route{Dst: mustPrefix("fd00:1::/64"), Dev: "eth0", Scope: ScopeLink}, want: "fd00:1::/64 dev eth0 scope global"},

		{in: Route{Dev: "eth0"}, wantErr: true},
		{in: Route{Dst: mustPrefix("10.1.0.0/24")}, wantErr: true},
		{in: Route{Dst: mustPrefix("10.1.0.0/24"), Type: Blackhole, Dev: "eth0"}, wantErr: true},
		{in: Route{Dst: mustPrefix("10.1.0.0/24"), Type: Blackhole, Gateway: mustAddr("10.0.0.1")}, wantErr: true},
		{in: Route{Dst: mustPrefix("10.1.0.0/24"), Type: 9, Dev: "eth0"}, wantErr: true},
		{in: Route{Dst: mustPrefix("10.1.0.0/24"), Dev: "eth0", Gateway: mustAddr("fd00::1")}, wantErr: true},
		{in: Route{Dst: mustPrefix("10.1.0.0/24"), Dev: "eth0", Src: mustAddr("fd00::1")}, wantErr: true},
		{in: Route{Dst: mustPrefix("10.1.0.0/24"), Dev: "eth0", OnLink: true}, wantErr: true},
		{in: Route{Dst: mustPrefix("10.1.0.0/24"), Dev: "a-name-that-is-far-too-long"}, wantErr: true},
		{in: Route{Dst: mustPrefix("::ffff:0.0.0.0/80"), Dev: "eth0"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := tt.in.normalise()
		if tt.wantErr {
			if !errors.Is(err, errInvalidRoute) {
				t.Errorf("%v: got %v, %v; want an invalid-route error", tt.in, got, err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("%v: got %q, %v; want %q", tt.in, got.String(), err, tt.want)
		}
	}
}

func TestMatches(t *testing.T) {
	r, err := TunnelRoute(mustPrefix("10.65.1.0/26"), VXLANDeviceName, mustAddr("10.65.1.0")).normalise()
	if err != nil {
		t.Fatal(err)
	}
	k := *r.toNetlink(7, unix.RT_TABLE_MAIN, ProtocolTortie)
	// What the kernel adds on its own must not count as a difference.
	k.Priority, k.Flags = 0, k.Flags|unix.RTNH_F_LINKDOWN
	if !r.matches(7, &k) {
		t.Errorf("%v does not match its own kernel form %v", r, k)
	}
	for name, mutate := range map[string]func(*netlink.Route){
		"device":    func(k *netlink.Route) { k.LinkIndex = 8 },
		"gateway":   func(k *netlink.Route) { k.Gw = net.ParseIP("10.65.1.1") },
		"no onlink": func(k *netlink.Route) { k.Flags &^= unix.RTNH_F_ONLINK },
		"scope":     func(k *netlink.Route) { k.Scope = netlink.SCOPE_LINK },
		"type":      func(k *netlink.Route) { k.Type = unix.RTN_BLACKHOLE },
		"src":       func(k *netlink.Route) { k.Src = net.ParseIP("10.0.0.1") },
		"multipath": func(k *netlink.Route) { k.MultiPath = []*netlink.NexthopInfo{{LinkIndex: 7}} },
	} {
		k2 := k
		mutate(&k2)
		if r.matches(7, &k2) {
			t.Errorf("%s differs but matches", name)
		}
	}

	// IPv6 blackholes come back on lo.
	b, _ := BlackholeRoute(mustPrefix("fd00::/122")).normalise()
	kb := *b.toNetlink(0, unix.RT_TABLE_MAIN, ProtocolTortie)
	kb.LinkIndex = 1
	if !b.matches(0, &kb) {
		t.Errorf("IPv6 blackhole on lo does not match")
	}
}

func TestKernelDst(t *testing.T) {
	for _, tt := range []struct {
		k    netlink.Route
		want string
	}{
		{netlink.Route{Family: netlink.FAMILY_V4}, "0.0.0.0/0"},
		{netlink.Route{Family: netlink.FAMILY_V6}, "::/0"},
		{netlink.Route{Dst: prefixToIPNet(mustPrefix("10.1.0.0/24"))}, "10.1.0.0/24"},
		{netlink.Route{Dst: &net.IPNet{IP: net.ParseIP("10.1.0.0"), Mask: net.CIDRMask(24, 32)}}, "10.1.0.0/24"},
		{netlink.Route{Dst: prefixToIPNet(mustPrefix("fd00::/64"))}, "fd00::/64"},
	} {
		got, ok := kernelDst(&tt.k)
		if !ok || got.String() != tt.want {
			t.Errorf("kernelDst(%v) = %v, %v; want %s", tt.k.Dst, got, ok, tt.want)
		}
	}
}

func TestSetKeysByDestination(t *testing.T) {
	r := NewReconciler(nil, Options{})
	r.Set([]Route{
		WorkloadRoute(mustAddr("10.1.0.5"), "cali1"),
		WorkloadRoute(mustAddr("::ffff:10.1.0.5"), "cali2"), // same destination: the later wins
		BlackholeRoute(mustPrefix("10.65.0.64/26")),
	})
	if len(r.desired) != 2 || r.desired[mustPrefix("10.1.0.5/32")].Dev != "cali2" {
		t.Errorf("desired = %v", r.desired)
	}
}
