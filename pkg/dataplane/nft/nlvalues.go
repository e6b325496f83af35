package nft

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Values for the netlink encoder (nlencode.go): the constants of rule
// texts and set elements (addresses, prefixes, ports, protocols, interface
// names) as the bytes nft compares.

type valKind int

const (
	vIPv4 valKind = iota
	vIPv6
	vPort
	vICMP // an ICMP or ICMPv6 type or code
	vProto
	vNFProto
	vIfname
)

// value is one parsed value: a point (lo == hi), a range, or a prefix
// (bits >= 0), as big-endian bytes of the selector's length.
type value struct {
	lo, hi []byte
	bits   int
	// span: written as a range ("80-80" is a range for nft, not a point).
	span bool
}

func (v value) point() bool { return v.bits < 0 && !v.span && bytes.Equal(v.lo, v.hi) }

var protoNumbers = map[string]byte{"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "sctp": 132, "udplite": 136}

// number parses a decimal without sign, leading zeros or other bases.
func number(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n <= max
}

// numRange parses "n" or "a-b" (a <= b) as big-endian values of size bytes.
func numRange(s string, size int, max uint64) (value, bool) {
	a, b, isRange := strings.Cut(s, "-")
	lo, ok := number(a, max)
	hi := lo
	if isRange {
		var ok2 bool
		hi, ok2 = number(b, max)
		ok = ok && ok2 && lo <= hi
	}
	be := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n)[8-size:] }
	return value{lo: be(lo), hi: be(hi), bits: -1, span: isRange}, ok
}

// addrValue parses an address or a masked prefix shorter than the address
// (nft treats "/32" differently from a bare address: not encodable).
func addrValue(s string, v6 bool) (value, bool) {
	ok := func(a netip.Addr) bool {
		if v6 {
			return a.Is6() && !a.Is4In6() && a.Zone() == ""
		}
		return a.Is4()
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || !ok(a) {
			return value{}, false
		}
		return value{lo: a.AsSlice(), hi: a.AsSlice(), bits: -1}, true
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !ok(p.Addr()) || p != p.Masked() || p.Bits() == p.Addr().BitLen() {
		return value{}, false
	}
	lo := p.Addr().AsSlice()
	hi := slices.Clone(lo)
	for i := p.Bits(); i < len(hi)*8; i++ {
		hi[i/8] |= 0x80 >> (i % 8)
	}
	return value{lo: lo, hi: hi, bits: p.Bits()}, true
}

// ifnameForm says whether an interface name may end in "*" (a rule's
// prefix match) or is always a whole name (a set element).
type ifnameForm uint8

const (
	wholeIfname ifnameForm = iota
	wildcardIfname
)

// ifnameBytes is an interface name as nft compares it: the whole name with
// its NUL padding, or (wildcardIfname) only the prefix before a final "*".
func ifnameBytes(s string, form ifnameForm) ([]byte, bool) {
	if len(s) == 0 || len(s) > 15 || strings.ContainsAny(s, `"\$ `) {
		return nil, false
	}
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e {
			return nil, false
		}
	}
	if p, ok := strings.CutSuffix(s, "*"); ok && form == wildcardIfname {
		if p == "" || strings.Contains(p, "*") {
			return nil, false
		}
		return []byte(p), true
	}
	if strings.Contains(s, "*") {
		return nil, false
	}
	b := make([]byte, 16)
	copy(b, s)
	return b, true
}

func parseValue(k valKind, tok string) (value, bool) {
	switch k {
	case vIPv4, vIPv6:
		return addrValue(tok, k == vIPv6)
	case vPort:
		return numRange(tok, 2, 65535)
	case vICMP:
		return numRange(tok, 1, 255)
	case vProto:
		if n, ok := protoNumbers[tok]; ok {
			return value{lo: []byte{n}, hi: []byte{n}, bits: -1}, true
		}
		if n, ok := number(tok, 255); ok {
			return value{lo: []byte{byte(n)}, hi: []byte{byte(n)}, bits: -1}, true
		}
	case vNFProto:
		if n, ok := map[string]byte{"ipv4": nfIPv4, "ipv6": nfIPv6}[tok]; ok {
			return value{lo: []byte{n}, hi: []byte{n}, bits: -1}, true
		}
	case vIfname:
		if s, ok := unquote(tok); ok {
			if b, ok := ifnameBytes(s, wildcardIfname); ok {
				return value{lo: b, hi: b, bits: -1}, true
			}
		}
	}
	return value{}, false
}

func unquote(tok string) (string, bool) {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return "", false
	}
	return tok[1 : len(tok)-1], true
}
