package wireguard

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestEncodeConfig(t *testing.T) {
	key := testKey(0xab)
	port, mark := 51820, 0x100000
	ka := 25 * time.Second
	zero := time.Duration(0)
	for _, tc := range []struct {
		name string
		c    wgtypes.Config
		want string
	}{
		{"empty", wgtypes.Config{}, ""},
		{"device", wgtypes.Config{PrivateKey: &key, ListenPort: &port, FirewallMark: &mark},
			"private_key=ab00000000000000000000000000000000000000000000000000000000000000\nlisten_port=51820\nfwmark=1048576\n"},
		{"peers", wgtypes.Config{Peers: []wgtypes.PeerConfig{
			{PublicKey: testKey(1), Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.2:51820")),
				PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true, AllowedIPs: ipNets("10.65.1.0/26", "fd00::/120")},
			{PublicKey: testKey(2), Remove: true, Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.3:1"))},
			{PublicKey: testKey(3), UpdateOnly: true, PersistentKeepaliveInterval: &zero,
				Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:51821"))},
		}}, "public_key=0100000000000000000000000000000000000000000000000000000000000000\n" +
			"endpoint=192.0.2.2:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n" +
			"allowed_ip=10.65.1.0/26\nallowed_ip=fd00::/120\n" +
			"public_key=0200000000000000000000000000000000000000000000000000000000000000\nremove=true\n" +
			"public_key=0300000000000000000000000000000000000000000000000000000000000000\nupdate_only=true\n" +
			"endpoint=[2001:db8::1]:51821\npersistent_keepalive_interval=0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := encodeConfig(tc.c); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestParseDevice(t *testing.T) {
	priv := testKey(0xab)
	body := "private_key=ab00000000000000000000000000000000000000000000000000000000000000\n" +
		"listen_port=51820\nfwmark=1048576\n" +
		"public_key=0100000000000000000000000000000000000000000000000000000000000000\n" +
		"preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n" +
		"protocol_version=1\nendpoint=192.0.2.2:51820\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n" +
		"tx_bytes=1000\nrx_bytes=2000\npersistent_keepalive_interval=0\n" +
		"allowed_ip=10.65.1.0/26\nallowed_ip=fd00::/120\n" +
		"public_key=0200000000000000000000000000000000000000000000000000000000000000\n" +
		"last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n" +
		"errno=0\n\n"
	d, err := parseDevice("wg0", body)
	if err != nil {
		t.Fatal(err)
	}
	if d.PrivateKey != priv || d.PublicKey != priv.PublicKey() || d.ListenPort != 51820 || d.FirewallMark != 0x100000 || d.Type != wgtypes.Userspace {
		t.Errorf("device fields: %+v", d)
	}
	if len(d.Peers) != 2 {
		t.Fatalf("%d peers, want 2", len(d.Peers))
	}
	p := d.Peers[0]
	if p.PublicKey != testKey(1) || p.Endpoint.String() != "192.0.2.2:51820" || p.ProtocolVersion != 1 ||
		p.TransmitBytes != 1000 || p.ReceiveBytes != 2000 || !p.LastHandshakeTime.Equal(time.Unix(1700000000, 5)) {
		t.Errorf("peer 1: %+v", p)
	}
	if got := IPNetPrefix(p.AllowedIPs[0]).String() + " " + IPNetPrefix(p.AllowedIPs[1]).String(); got != "10.65.1.0/26 fd00::/120" {
		t.Errorf("allowed IPs %s", got)
	}
	if !d.Peers[1].LastHandshakeTime.IsZero() || d.Peers[1].Endpoint != nil {
		t.Errorf("peer 2 without a handshake: %+v", d.Peers[1])
	}

	for _, bad := range []string{"errno=22\n", "listen_port=x\n", "nonsense\n", "public_key=zz\n", "public_key=0102\n"} {
		if _, err := parseDevice("wg0", bad); err == nil || !strings.Contains(err.Error(), "wg0") {
			t.Errorf("%q: err %v, want one naming the device", bad, err)
		}
	}
}
