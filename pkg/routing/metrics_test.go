package routing

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
)

// TestWireguardMetrics: the component's WireGuard metrics are its device's
// peers, by node; none while WireGuard is off.
func TestWireguardMetrics(t *testing.T) {
	testenv.RequireRoot(t)
	n, _ := testenv.NewNS(t)
	h := testenv.NetlinkIn(t, n.Path())
	c, err := New(Config{NodeName: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	gather := func() map[string]string {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, mf := range mfs {
			var parts []string
			for _, m := range mf.GetMetric() {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+"="+l.GetValue())
				}
				parts = append(parts, strings.Join(ls, ","))
			}
			out[mf.GetName()] = strings.Join(parts, ";")
		}
		return out
	}
	if got := gather(); len(got) != 0 {
		t.Fatalf("metrics with WireGuard off: %v", got)
	}

	key, _ := wgtypes.GeneratePrivateKey()
	peer, _ := wgtypes.GeneratePrivateKey()
	dev, err := wireguard.Ensure(h, wireguard.Config{Name: "wgm", ListenPort: wireguard.DefaultPort, PrivateKey: key,
		Mode: wireguard.ModeUserspace, NetnsPath: n.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { dev.Close(); _ = wireguard.Remove(h, "wgm", nil) }()
	if _, err := dev.SetPeers([]wireguard.Peer{{PublicKey: peer.PublicKey(), Endpoint: netip.MustParseAddrPort("192.0.2.2:51820"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.65.1.0/26")}}}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.wg, c.wgNodes = dev, map[wgtypes.Key]string{peer.PublicKey(): "h2"}
	c.mu.Unlock()
	got := gather()
	peerLabels := "hostname=h1,peer_endpoint=192.0.2.2:51820,peer_key=" + peer.PublicKey().String() + ",peer_node=h2,public_key=" + key.PublicKey().String()
	want := map[string]string{
		"wireguard_meta":                     "hostname=h1,iface=wgm,kind=userspace,listen_port=51820,public_key=" + key.PublicKey().String(),
		"wireguard_bytes_rcvd":               peerLabels,
		"wireguard_bytes_sent":               peerLabels,
		"wireguard_latest_handshake_seconds": peerLabels,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("metrics %v", got)
	}
}
