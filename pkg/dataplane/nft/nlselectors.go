package nft

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Selectors for the netlink encoder (nlencode.go): what a match loads
// (payload fields and meta keys) and the registers it loads them to.

const (
	nfIPv4 = 2  // NFPROTO_IPV4
	nfIPv6 = 10 // NFPROTO_IPV6
)

// selector is what a match loads: a payload field or a meta key, its
// length, how its values are written, its set datatype, and the
// dependencies nft gives it.
type selector struct {
	payload bool
	base    expr.PayloadBase
	off     uint32
	meta    expr.MetaKey
	len     uint32
	kind    valKind
	dt      nftables.SetDatatype
	nf      byte // needs meta nfproto nf
	l4      byte // needs meta l4proto l4
}

func pl(base expr.PayloadBase, off, n uint32, k valKind, dt nftables.SetDatatype, nf, l4 byte) selector {
	return selector{payload: true, base: base, off: off, len: n, kind: k, dt: dt, nf: nf, l4: l4}
}

func mt(key expr.MetaKey, n uint32, k valKind, dt nftables.SetDatatype) selector {
	return selector{meta: key, len: n, kind: k, dt: dt}
}

const (
	nh = expr.PayloadBaseNetworkHeader
	th = expr.PayloadBaseTransportHeader
)

var selectors = map[string]selector{
	"ip saddr":     pl(nh, 12, 4, vIPv4, nftables.TypeIPAddr, nfIPv4, 0),
	"ip daddr":     pl(nh, 16, 4, vIPv4, nftables.TypeIPAddr, nfIPv4, 0),
	"ip6 saddr":    pl(nh, 8, 16, vIPv6, nftables.TypeIP6Addr, nfIPv6, 0),
	"ip6 daddr":    pl(nh, 24, 16, vIPv6, nftables.TypeIP6Addr, nfIPv6, 0),
	"th sport":     pl(th, 0, 2, vPort, nftables.TypeInetService, 0, 0),
	"th dport":     pl(th, 2, 2, vPort, nftables.TypeInetService, 0, 0),
	"icmp type":    pl(th, 0, 1, vICMP, nftables.TypeICMPType, nfIPv4, 1),
	"icmp code":    pl(th, 1, 1, vICMP, nftables.TypeICMPCode, nfIPv4, 1),
	"icmpv6 type":  pl(th, 0, 1, vICMP, nftables.TypeICMP6Type, nfIPv6, 58),
	"icmpv6 code":  pl(th, 1, 1, vICMP, nftables.TypeICMPV6Code, nfIPv6, 58),
	"meta l4proto": mt(expr.MetaKeyL4PROTO, 1, vProto, nftables.TypeInetProto),
	"meta nfproto": mt(expr.MetaKeyNFPROTO, 1, vNFProto, nftables.TypeNFProto),
	"iifname":      mt(expr.MetaKeyIIFNAME, 16, vIfname, nftables.TypeIFName),
	"oifname":      mt(expr.MetaKeyOIFNAME, 16, vIfname, nftables.TypeIFName),
}

func (s selector) load(reg uint32) expr.Any {
	if s.payload {
		return &expr.Payload{DestRegister: reg, Base: s.base, Offset: s.off, Len: s.len}
	}
	return &expr.Meta{Key: s.meta, Register: reg}
}

// Named-set lookups whose shape is known. A concatenation's expressions
// depend on whether the set is an interval set, which the text does not
// say: only the driver's concatenations are accepted, with what the driver
// declares them as (the port class maps are interval maps).
// lookupKey says how nft loads the key of a lookup: as it is, or, for an
// interval map, with its host-order fields in network order.
type lookupKey uint8

const (
	plainKey lookupKey = iota
	intervalKey
)

var namedLookups = map[string]struct {
	vmap bool
	key  lookupKey
}{
	"ip saddr": {}, "ip daddr": {}, "ip6 saddr": {}, "ip6 daddr": {},
	"iifname": {}, "oifname": {},
	"iifname vmap": {vmap: true}, "oifname vmap": {vmap: true},
	"meta l4proto . th dport":             {},
	"th dport . meta l4proto vmap":        {vmap: true, key: intervalKey},
	"ip saddr . meta l4proto . th dport":  {},
	"ip saddr . meta l4proto . th sport":  {},
	"ip daddr . meta l4proto . th dport":  {},
	"ip daddr . meta l4proto . th sport":  {},
	"ip6 saddr . meta l4proto . th dport": {},
	"ip6 saddr . meta l4proto . th sport": {},
	"ip6 daddr . meta l4proto . th dport": {},
	"ip6 daddr . meta l4proto . th sport": {},
}

// reg32 is the register nft names for 32-bit register offset i of a
// concatenation: the 128-bit register when aligned (NFT_REG_1 + i/4),
// NFT_REG32_00 + i otherwise.
func reg32(i uint32) uint32 {
	if i%4 == 0 {
		return 1 + i/4
	}
	return 8 + i
}

func pad4(n uint32) uint32 { return (n + 3) / 4 * 4 }
