package wireguard

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testKey(b byte) wgtypes.Key {
	var k wgtypes.Key
	k[0] = b
	return k
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func ipNets(s ...string) []net.IPNet {
	var out []net.IPNet
	for _, p := range s {
		_, n, err := net.ParseCIDR(p)
		if err != nil {
			panic(err)
		}
		out = append(out, *n)
	}
	return out
}

func TestPeerChanges(t *testing.T) {
	ep := netip.MustParseAddrPort("192.0.2.2:51820")
	devPeer := func(k byte, endpoint string, ka time.Duration, allowed ...string) wgtypes.Peer {
		p := wgtypes.Peer{PublicKey: testKey(k), PersistentKeepaliveInterval: ka, AllowedIPs: ipNets(allowed...)}
		if endpoint != "" {
			// As a device reports it: IPv4 in 16 bytes.
			p.Endpoint = &net.UDPAddr{IP: net.ParseIP(netip.MustParseAddrPort(endpoint).Addr().String()), Port: int(netip.MustParseAddrPort(endpoint).Port())}
		}
		return p
	}
	for _, tc := range []struct {
		name string
		cur  []wgtypes.Peer
		want []Peer
		// Expected: keys written (added or changed) and keys removed.
		written, removed []byte
	}{
		{name: "nothing", written: nil},
		{name: "new peer",
			want:    []Peer{{PublicKey: testKey(1), Endpoint: ep, AllowedIPs: prefixes("10.65.1.0/26")}},
			written: []byte{1}},
		{name: "same peer, allowed IPs in another order and unmasked",
			cur:  []wgtypes.Peer{devPeer(1, "192.0.2.2:51820", 0, "10.65.1.0/26", "10.65.9.1/32")},
			want: []Peer{{PublicKey: testKey(1), Endpoint: ep, AllowedIPs: prefixes("10.65.9.1/32", "10.65.1.5/26")}}},
		{name: "endpoint moved",
			cur:     []wgtypes.Peer{devPeer(1, "192.0.2.3:51820", 0, "10.65.1.0/26")},
			want:    []Peer{{PublicKey: testKey(1), Endpoint: ep, AllowedIPs: prefixes("10.65.1.0/26")}},
			written: []byte{1}},
		{name: "endpoint unknown to the device (no handshake from it yet)",
			cur:     []wgtypes.Peer{devPeer(1, "", 0, "10.65.1.0/26")},
			want:    []Peer{{PublicKey: testKey(1), Endpoint: ep, AllowedIPs: prefixes("10.65.1.0/26")}},
			written: []byte{1}},
		{name: "a block added",
			cur:     []wgtypes.Peer{devPeer(1, "192.0.2.2:51820", 0, "10.65.1.0/26")},
			want:    []Peer{{PublicKey: testKey(1), Endpoint: ep, AllowedIPs: prefixes("10.65.1.0/26", "10.65.1.64/26")}},
			written: []byte{1}},
		{name: "keepalive turned on",
			cur:     []wgtypes.Peer{devPeer(1, "192.0.2.2:51820", 0, "10.65.1.0/26")},
			want:    []Peer{{PublicKey: testKey(1), Endpoint: ep, AllowedIPs: prefixes("10.65.1.0/26"), Keepalive: 25 * time.Second}},
			written: []byte{1}},
		{name: "key rotated: old removed, new added, others kept",
			cur: []wgtypes.Peer{devPeer(1, "192.0.2.2:51820", 0, "10.65.1.0/26"), devPeer(2, "192.0.2.9:51820", 0, "10.65.2.0/26")},
			want: []Peer{{PublicKey: testKey(3), Endpoint: ep, AllowedIPs: prefixes("10.65.1.0/26")},
				{PublicKey: testKey(2), Endpoint: netip.MustParseAddrPort("192.0.2.9:51820"), AllowedIPs: prefixes("10.65.2.0/26")}},
			written: []byte{3}, removed: []byte{1}},
		{name: "all removed",
			cur:     []wgtypes.Peer{devPeer(1, "192.0.2.2:51820", 0), devPeer(2, "192.0.2.9:51820", 0)},
			removed: []byte{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := peerChanges(tc.cur, tc.want)
			var written, removed []byte
			for _, c := range got {
				if c.Remove {
					removed = append(removed, c.PublicKey[0])
					continue
				}
				written = append(written, c.PublicKey[0])
				if !c.ReplaceAllowedIPs || c.Endpoint == nil || c.PersistentKeepaliveInterval == nil {
					t.Errorf("peer %d: written without replacing allowed IPs, endpoint and keepalive: %+v", c.PublicKey[0], c)
				}
			}
			if string(written) != string(tc.written) || string(removed) != string(tc.removed) {
				t.Errorf("written %v removed %v, want %v and %v", written, removed, tc.written, tc.removed)
			}
			// Applying the changes to cur gives want: a second pass is empty.
			if again := peerChanges(apply(tc.cur, got), tc.want); len(again) != 0 {
				t.Errorf("after applying, still %d changes: %+v", len(again), again)
			}
		})
	}
}

// apply is what a device does with peer changes, for the test above.
func apply(cur []wgtypes.Peer, changes []wgtypes.PeerConfig) []wgtypes.Peer {
	m := map[wgtypes.Key]wgtypes.Peer{}
	var order []wgtypes.Key
	for _, p := range cur {
		m[p.PublicKey] = p
		order = append(order, p.PublicKey)
	}
	for _, c := range changes {
		if c.Remove {
			delete(m, c.PublicKey)
			continue
		}
		if _, ok := m[c.PublicKey]; !ok {
			order = append(order, c.PublicKey)
		}
		m[c.PublicKey] = wgtypes.Peer{PublicKey: c.PublicKey, Endpoint: c.Endpoint,
			PersistentKeepaliveInterval: *c.PersistentKeepaliveInterval, AllowedIPs: c.AllowedIPs}
	}
	var out []wgtypes.Peer
	for _, k := range order {
		if p, ok := m[k]; ok {
			out = append(out, p)
		}
	}
	return out
}

func TestValidatePeers(t *testing.T) {
	ep := netip.MustParseAddrPort("192.0.2.2:51820")
	for _, tc := range []struct {
		name  string
		peers []Peer
		want  string
	}{
		{"fine", []Peer{{PublicKey: testKey(1), Endpoint: ep, AllowedIPs: prefixes("10.65.1.0/26")},
			{PublicKey: testKey(2), Endpoint: ep, AllowedIPs: prefixes("10.65.1.64/26")}}, ""},
		{"key twice", []Peer{{PublicKey: testKey(1), Endpoint: ep}, {PublicKey: testKey(1), Endpoint: ep}}, "listed twice"},
		{"no endpoint", []Peer{{PublicKey: testKey(1)}}, "no endpoint"},
		{"a block to two peers", []Peer{{PublicKey: testKey(1), Endpoint: ep, AllowedIPs: prefixes("10.65.1.0/26")},
			{PublicKey: testKey(2), Endpoint: ep, AllowedIPs: prefixes("10.65.1.1/26")}}, "given to two peers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validatePeers(tc.peers)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}
