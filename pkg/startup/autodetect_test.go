package startup

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

func ifc(name string, addrs ...string) Interface {
	i := Interface{Name: name, Up: true}
	for _, a := range addrs {
		i.Addrs = append(i.Addrs, netip.MustParsePrefix(a))
	}
	return i
}

var hostIfs = []Interface{
	ifc("lo", "127.0.0.1/8", "::1/128"),
	ifc("docker0", "172.17.0.1/16"),
	ifc("cali1234567890a", "169.254.1.1/32"),
	ifc("veth9", "192.168.99.1/24"),
	ifc("eth0", "fe80::1/64", "10.0.0.5/24", "2001:db8::5/64"),
	ifc("eth1", "192.168.1.7/24", "fd00:1::7/64"),
	ifc("ens3", "172.31.4.9/20"),
	ifc("vxlan.calico", "10.244.0.1/32"),
}

func TestAutodetect(t *testing.T) {
	tests := []struct {
		method string
		v6     bool
		want   string
		iface  string
		err    bool
	}{
		{method: "", want: "10.0.0.5/24", iface: "eth0"},
		{method: "first-found", want: "10.0.0.5/24", iface: "eth0"},
		{method: "first-found", v6: true, want: "2001:db8::5/64", iface: "eth0"}, // link-local skipped
		{method: "interface=eth1", want: "192.168.1.7/24", iface: "eth1"},
		{method: "interface=ens.*,eth1", want: "192.168.1.7/24", iface: "eth1"}, // first interface in host order
		{method: "interface=ens.*", want: "172.31.4.9/20", iface: "ens3"},
		{method: "interface=docker0", want: "172.17.0.1/16", iface: "docker0"}, // asked for by name: allowed
		{method: "interface=wlan.*", err: true},
		{method: "interface=eth1", v6: true, want: "fd00:1::7/64", iface: "eth1"},
		{method: "skip-interface=eth0", want: "192.168.1.7/24", iface: "eth1"},
		{method: "skip-interface=eth.*", want: "172.31.4.9/20", iface: "ens3"},
		{method: "cidr=172.16.0.0/12", want: "172.31.4.9/20", iface: "ens3"}, // docker0 is excluded by default
		{method: "cidr=10.9.0.0/16, 192.168.0.0/16", want: "192.168.1.7/24", iface: "eth1"},
		{method: "cidr=fd00::/8", v6: true, want: "fd00:1::7/64", iface: "eth1"},
		{method: "cidr=10.244.0.0/16", err: true}, // only on the tunnel device
		{method: "cidr=bogus", err: true},
		{method: "interface=(", err: true},
		{method: "kubernetes-internal-ip", err: true},
	}
	for _, tc := range tests {
		name := tc.method
		if tc.v6 {
			name += "/v6"
		}
		t.Run(name, func(t *testing.T) {
			got, iface, err := Autodetect(hostIfs, tc.method, tc.v6)
			if tc.err {
				if err == nil {
					t.Errorf("got %s on %s, want an error", got, iface)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want || iface != tc.iface {
				t.Errorf("got %s on %s, want %s on %s", got, iface, tc.want, tc.iface)
			}
		})
	}
	if _, _, err := Autodetect(nil, "first-found", false); !errors.Is(err, ErrNoAddress) {
		t.Errorf("no interfaces: %v", err)
	}
}

func TestCanReach(t *testing.T) {
	d := Detector{
		Interfaces: func() ([]Interface, error) { return hostIfs, nil },
		SourceFor: func(_ context.Context, dest string, v6 bool) (netip.Addr, error) {
			if dest == "8.8.8.8" {
				return netip.MustParseAddr("172.31.4.9"), nil
			}
			return netip.MustParseAddr("198.51.100.1"), nil
		},
	}
	got, iface, err := d.Detect(context.Background(), "can-reach=8.8.8.8", false)
	if err != nil || got.String() != "172.31.4.9/20" || iface != "ens3" {
		t.Errorf("can-reach: %s %s %v", got, iface, err)
	}
	if _, _, err := d.Detect(context.Background(), "can-reach=example.net", false); !errors.Is(err, ErrNoAddress) {
		t.Errorf("source on no interface: %v", err)
	}
	// The real kernel: loopback is always reachable from loopback.
	a, err := udpSource(context.Background(), "127.0.0.1", false)
	if err != nil || !a.IsLoopback() {
		t.Errorf("udpSource(127.0.0.1) = %s, %v", a, err)
	}
}

func TestResolveAddr(t *testing.T) {
	d := Detector{Interfaces: func() ([]Interface, error) { return hostIfs, nil }}
	ctx := context.Background()
	for _, tc := range []struct {
		setting, def string
		v6           bool
		want         string
		err          bool
	}{
		{setting: "", def: AddrAutodetect, want: "10.0.0.5/24"},
		{setting: "none", def: AddrAutodetect, want: "invalid Prefix"},
		{setting: "", def: AddrNone, v6: true, want: "invalid Prefix"},
		{setting: "192.168.1.7", want: "192.168.1.7/24"}, // prefix length from its interface
		{setting: "203.0.113.9", want: "203.0.113.9/32"},
		{setting: "203.0.113.9/28", want: "203.0.113.9/28"},
		{setting: "10.0.0.5", v6: true, err: true},
		{setting: "garbage", err: true},
	} {
		got, _, err := resolveAddr(ctx, d, tc.setting, tc.def, "", tc.v6)
		if tc.err != (err != nil) || (!tc.err && got.String() != tc.want) {
			t.Errorf("resolveAddr(%q) = %s, %v; want %s (err %v)", tc.setting, got, err, tc.want, tc.err)
		}
	}
}
