package routing

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tortie/tortie/pkg/dataplane/routes"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
)

// WireguardOptions configure DesiredWireguard.
type WireguardOptions struct {
	// Device is the WireGuard device routes go through.
	Device string
	// Port is every node's listening port (FelixConfiguration
	// wireguardListeningPort, which Calico takes to be the same on all).
	Port int
	// Keepalive of every peer (wireguardKeepAlive); 0 is off.
	Keepalive time.Duration
}

// WireguardSet is what DesiredWireguard computes for one node.
type WireguardSet struct {
	// Addr is this node's device address (spec.wireguard.interfaceIPv4Address).
	Addr netip.Addr
	// Peers are the other nodes that have a usable public key and an IPv4
	// address, each with the destinations whose traffic is encrypted to it.
	Peers []wireguard.Peer
	// PeerNodes names the node of each peer, in Peers' order.
	PeerNodes []string
	// Routes are the WireGuard routing table: through the device for the
	// peers' blocks, borrowed addresses and device addresses; thrown back to
	// the main table for addresses inside a peer's block that are this
	// node's own or held by a node without a key.
	Routes []routes.Route
	// Unencrypted says, for each other node with workloads that is not a
	// peer, why: its traffic goes unencrypted, by the main table, until it
	// is (as in Calico: a node is reached in clear until its key appears).
	Unencrypted []string
}

// DesiredWireguard computes node's WireGuard peers and routing table from
// the Nodes' published keys and addresses and the IPAM blocks. IPv4 only.
//
// A destination is encrypted to the node that holds it: a block to its
// affine node, a borrowed address to the node that borrowed it. WireGuard
// picks the peer by the longest allowed IP, as the kernel picks the route,
// so a borrowed /32 inside another peer's block goes to its holder. Two
// nodes that publish the same key are both left out (WireGuard cannot tell
// them apart), and so is a node that publishes this node's key.
func DesiredWireguard(s *Snapshot, node string, opts WireguardOptions) WireguardSet {
	var ws WireguardSet
	self := s.Nodes[node]
	selfKey := ""
	if self != nil {
		selfKey = self.Status.WireguardPublicKey
		if w := self.Spec.Wireguard; w != nil {
			if a, err := netip.ParseAddr(w.InterfaceIPv4Address); err == nil && a.Is4() {
				ws.Addr = a
			}
		}
	}
	// Who publishes which key.
	byKey := map[string][]string{}
	for _, name := range sortedKeys(s.Nodes) {
		if k := s.Nodes[name].Status.WireguardPublicKey; k != "" {
			byKey[k] = append(byKey[k], name)
		}
	}
	peers := map[string]*wireguard.Peer{}
	why := map[string]string{}
	for _, name := range sortedKeys(s.Nodes) {
		if name == node {
			continue
		}
		n := s.Nodes[name]
		ni := parseNode(n)
		k := n.Status.WireguardPublicKey
		key, err := wgtypes.ParseKey(k)
		switch {
		case k == "":
			why[name] = "no WireGuard public key"
			continue
		case err != nil:
			why[name] = "its WireGuard public key is not valid"
			continue
		case k == selfKey:
			why[name] = "it publishes this node's WireGuard public key"
			continue
		case len(byKey[k]) > 1:
			why[name] = fmt.Sprintf("nodes %v publish the same WireGuard public key", byKey[k])
			continue
		case !ni.v4.IsValid():
			why[name] = "no IPv4 address (spec.bgp.ipv4Address)"
			continue
		}
		p := &wireguard.Peer{PublicKey: key, Endpoint: netip.AddrPortFrom(ni.v4.Addr(), uint16(opts.Port)), Keepalive: opts.Keepalive}
		if w := n.Spec.Wireguard; w != nil {
			if a, err := netip.ParseAddr(w.InterfaceIPv4Address); err == nil && a.Is4() {
				p.AllowedIPs = append(p.AllowedIPs, netip.PrefixFrom(a, 32))
				ws.Routes = append(ws.Routes, routes.Route{Dst: netip.PrefixFrom(a, 32), Dev: opts.Device})
			}
		}
		peers[name] = p
	}

	through := func(p netip.Prefix, holder string) {
		peers[holder].AllowedIPs = append(peers[holder].AllowedIPs, p)
		ws.Routes = append(ws.Routes, routes.Route{Dst: p, Dev: opts.Device})
	}
	unencrypted := map[string]bool{}
	for _, b := range sortedBlocks(s) {
		if !b.CIDR.Addr().Is4() {
			continue
		}
		owner := peers[b.Affinity] != nil
		switch {
		case owner:
			through(b.CIDR, b.Affinity)
		case b.Affinity != "" && b.Affinity != node:
			unencrypted[b.Affinity] = true
		}
		for _, a := range sortedAddrs(b.Borrowed) {
			holder, host := b.Borrowed[a], netip.PrefixFrom(a, 32)
			switch {
			case peers[holder] != nil:
				through(host, holder)
			case owner:
				// Inside a peer's block but held here or by a node
				// without a key: back to the main table.
				ws.Routes = append(ws.Routes, routes.Route{Dst: host, Type: routes.Throw})
			}
			if peers[holder] == nil && holder != node {
				unencrypted[holder] = true
			}
		}
	}
	for _, name := range sortedKeys(s.Nodes) {
		if p := peers[name]; p != nil {
			ws.Peers = append(ws.Peers, *p)
			ws.PeerNodes = append(ws.PeerNodes, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(unencrypted)) {
		reason := why[name]
		if reason == "" {
			reason = "no Node resource"
		}
		ws.Unencrypted = append(ws.Unencrypted, fmt.Sprintf("%s: %s; its workloads are reached unencrypted", name, reason))
	}
	return ws
}
