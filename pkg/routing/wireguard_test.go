package routing

import (
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

func withWG(key, addr string) nodeOpt {
	return func(n *v3.Node) {
		n.Status.WireguardPublicKey = key
		if addr != "" {
			n.Spec.Wireguard = &v3.NodeWireguardSpec{InterfaceIPv4Address: addr}
		}
	}
}

func TestDesiredWireguard(t *testing.T) {
	key := func() string { k, _ := wgtypes.GeneratePrivateKey(); return k.PublicKey().String() }
	keyA, keyB, keyD, shared := key(), key(), key(), key()
	opts := WireguardOptions{Device: "wireguard.cali", Port: 51820, Keepalive: 25 * time.Second}
	type peer struct {
		node, endpoint string
		allowed        []string
	}
	tests := []struct {
		name        string
		s           *Snapshot
		addr        string
		peers       []peer
		routes      []string
		unencrypted []string
	}{
		{
			name: "peers by key; blocks and borrowed addresses to their holders",
			// a is this node. b has a key; c has none. a's block lends .5 to
			// b; b's block lends .70 to a and .71 to c; c's block lends .140
			// to b.
			s: snap(
				mkNode("a", "10.0.0.1/24", withWG(keyA, "10.244.0.1")),
				mkNode("b", "10.0.0.2/24", withWG(keyB, "10.244.0.65")),
				mkNode("c", "10.0.0.3/24"),
			).block("10.244.0.0/26", "a", "10.244.0.5", "b").
				block("10.244.0.64/26", "b", "10.244.0.70", "a", "10.244.0.71", "c").
				block("10.244.0.128/26", "c", "10.244.0.140", "b").
				block("fd00:244::/122", "b"),
			addr:  "10.244.0.1",
			peers: []peer{{"b", "10.0.0.2:51820", []string{"10.244.0.65/32", "10.244.0.5/32", "10.244.0.64/26", "10.244.0.140/32"}}},
			routes: []string{
				"10.244.0.65/32 dev wireguard.cali",
				"10.244.0.5/32 dev wireguard.cali",
				"10.244.0.64/26 dev wireguard.cali",
				"throw 10.244.0.70/32",
				"throw 10.244.0.71/32",
				"10.244.0.140/32 dev wireguard.cali",
			},
			unencrypted: []string{"c: no WireGuard public key; its workloads are reached unencrypted"},
		},
		{
			name: "keys that cannot be used",
			s: snap(
				mkNode("a", "10.0.0.1/24", withWG(keyA, "")),
				mkNode("d", "", withWG(keyD, "")),              // no address
				mkNode("e", "10.0.0.5/24", withWG(shared, "")), // e and f share a key
				mkNode("f", "10.0.0.6/24", withWG(shared, "")),
				mkNode("g", "10.0.0.7/24", withWG(keyA, "")),        // a's key
				mkNode("h", "10.0.0.8/24", withWG("not-a-key", "")), // invalid
			).block("10.244.1.0/26", "d").block("10.244.2.0/26", "e").block("10.244.3.0/26", "f").
				block("10.244.4.0/26", "g").block("10.244.5.0/26", "h"),
			unencrypted: []string{
				"d: no IPv4 address (spec.bgp.ipv4Address); its workloads are reached unencrypted",
				"e: nodes [e f] publish the same WireGuard public key; its workloads are reached unencrypted",
				"f: nodes [e f] publish the same WireGuard public key; its workloads are reached unencrypted",
				"g: it publishes this node's WireGuard public key; its workloads are reached unencrypted",
				"h: its WireGuard public key is not valid; its workloads are reached unencrypted",
			},
		},
		{
			name: "a block of a departed node",
			s: snap(mkNode("a", "10.0.0.1/24", withWG(keyA, "")), mkNode("b", "10.0.0.2/24", withWG(keyB, ""))).
				block("10.244.0.0/26", "gone", "10.244.0.9", "b"),
			peers:       []peer{{"b", "10.0.0.2:51820", []string{"10.244.0.9/32"}}},
			routes:      []string{"10.244.0.9/32 dev wireguard.cali"},
			unencrypted: []string{"gone: no Node resource; its workloads are reached unencrypted"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := DesiredWireguard(tt.s, "a", opts)
			if got := ws.Addr.String(); tt.addr != "" && got != tt.addr || tt.addr == "" && ws.Addr.IsValid() {
				t.Errorf("addr %s, want %q", got, tt.addr)
			}
			var peers []peer
			for i, p := range ws.Peers {
				var allowed []string
				for _, a := range p.AllowedIPs {
					allowed = append(allowed, a.String())
				}
				peers = append(peers, peer{ws.PeerNodes[i], p.Endpoint.String(), allowed})
				if p.Keepalive != opts.Keepalive || p.PublicKey.String() != tt.s.Nodes[ws.PeerNodes[i]].Status.WireguardPublicKey {
					t.Errorf("peer %s: %+v", ws.PeerNodes[i], p)
				}
			}
			if !slices.EqualFunc(peers, tt.peers, func(a, b peer) bool {
				return a.node == b.node && a.endpoint == b.endpoint && slices.Equal(a.allowed, b.allowed)
			}) {
				t.Errorf("peers\n got %+v\nwant %+v", peers, tt.peers)
			}
			var rs []string
			for _, r := range ws.Routes {
				rs = append(rs, r.String())
			}
			if !slices.Equal(rs, tt.routes) {
				t.Errorf("routes\n got %s\nwant %s", strings.Join(rs, "; "), strings.Join(tt.routes, "; "))
			}
			if !slices.Equal(ws.Unencrypted, tt.unencrypted) {
				t.Errorf("unencrypted\n got %q\nwant %q", ws.Unencrypted, tt.unencrypted)
			}
		})
	}
}
