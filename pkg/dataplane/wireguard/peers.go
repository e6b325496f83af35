package wireguard

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is one other host this host encrypts to: its public key, the
// address and port its WireGuard device listens on, and the destinations
// (its workload blocks and tunnel address) whose traffic goes to it.
type Peer struct {
	PublicKey  wgtypes.Key
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive interval; zero is off, the
	// default (FelixConfiguration wireguardKeepAlive).
	Keepalive time.Duration
}

// validatePeers refuses a peer list the device could not hold as meant: a
// key twice, or one destination routed to two peers (WireGuard would
// silently move it to the last one).
func validatePeers(peers []Peer) error {
	keys := make(map[wgtypes.Key]bool, len(peers))
	owner := make(map[netip.Prefix]wgtypes.Key)
	for _, p := range peers {
		if keys[p.PublicKey] {
			return fmt.Errorf("peer %s listed twice", p.PublicKey)
		}
		keys[p.PublicKey] = true
		if !p.Endpoint.IsValid() {
			return fmt.Errorf("peer %s: no endpoint", p.PublicKey)
		}
		for _, n := range p.AllowedIPs {
			n = n.Masked()
			if o, ok := owner[n]; ok {
				return fmt.Errorf("destination %s given to two peers, %s and %s", n, o, p.PublicKey)
			}
			owner[n] = p.PublicKey
		}
	}
	return nil
}

// peerChanges returns the peer configurations that turn the device's peers
// cur into want: removals for peers not wanted, and a full description
// (endpoint, keepalive, allowed IPs replaced) for each peer that is new or
// differs. A peer that already matches is left out, so its session and
// counters are kept. Nil means nothing to do.
func peerChanges(cur []wgtypes.Peer, want []Peer) []wgtypes.PeerConfig {
	have := make(map[wgtypes.Key]*wgtypes.Peer, len(cur))
	for i := range cur {
		have[cur[i].PublicKey] = &cur[i]
	}
	var out []wgtypes.PeerConfig
	wanted := make(map[wgtypes.Key]bool, len(want))
	for _, p := range want {
		wanted[p.PublicKey] = true
		if c := have[p.PublicKey]; c != nil && peerMatches(c, p) {
			continue
		}
		ka := p.Keepalive
		pc := wgtypes.PeerConfig{
			PublicKey:                   p.PublicKey,
			Endpoint:                    net.UDPAddrFromAddrPort(p.Endpoint),
			PersistentKeepaliveInterval: &ka,
			ReplaceAllowedIPs:           true,
		}
		for _, n := range sortedPrefixes(p.AllowedIPs) {
			pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: n.Addr().AsSlice(), Mask: net.CIDRMask(n.Bits(), n.Addr().BitLen())})
		}
		out = append(out, pc)
	}
	for _, c := range cur {
		if !wanted[c.PublicKey] {
			out = append(out, wgtypes.PeerConfig{PublicKey: c.PublicKey, Remove: true})
		}
	}
	return out
}

func peerMatches(c *wgtypes.Peer, p Peer) bool {
	if c.Endpoint == nil || unmap(c.Endpoint.AddrPort()) != unmap(p.Endpoint) {
		return false
	}
	if c.PersistentKeepaliveInterval != p.Keepalive {
		return false
	}
	got := make([]netip.Prefix, 0, len(c.AllowedIPs))
	for _, n := range c.AllowedIPs {
		got = append(got, IPNetPrefix(n))
	}
	return slices.Equal(sortedPrefixes(got), sortedPrefixes(p.AllowedIPs))
}

func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// IPNetPrefix converts an allowed IP as wgtypes reports it, a net.IPNet
// whose IPv4 address may be in 16 bytes, to a masked netip.Prefix.
func IPNetPrefix(n net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	if a.Is4() && ones > 32 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones).Masked()
}

// sortedPrefixes returns ps masked, sorted and without duplicates, in a new
// slice.
func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	return slices.Compact(out)
}
