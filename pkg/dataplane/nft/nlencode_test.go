package nft

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// TestEncodeElemLeftToNft: a map element without a verdict is an error,
// and an interval that ends at the last address
// has no end element, and nft marks it in user data google/nftables cannot
// send: such elements are left to nft.
func TestEncodeElemLeftToNft(t *testing.T) {
	if _, err := encodeElem(setShape{typ: "ifname : verdict", isMap: true}, elemT{key: []string{"cali1"}, value: []string{""}}); !errors.Is(err, errNotEncodable) {
		t.Errorf("empty verdict: %v", err)
	}
	for _, k := range []string{"0.0.0.0/0", "255.255.255.255", "128.0.0.0/1", "::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		typ := "ipv4_addr"
		if strings.Contains(k, ":") {
			typ = "ipv6_addr"
		}
		if _, err := encodeElem(setShape{typ: typ, interval: true}, elemT{key: []string{k}}); !errors.Is(err, errNotEncodable) {
			t.Errorf("%s: %v, want errNotEncodable", k, err)
		}
	}
}

func TestEncodeRuleNotEncodable(t *testing.T) {
	tbl := &nftables.Table{Name: "tortie", Family: nftables.TableFamilyINet}
	for _, text := range []string{
		"", "counter accept", "tcp dport 80 accept", "ip saddr 10.0.0.1/32 drop", "ip saddr 10.0.0.1/24 drop",
		"ip saddr fd00::1 drop", "ip6 saddr 10.0.0.1 drop", "ip6 saddr ::ffff:10.0.0.1 drop",
		"meta nfproto ipv6 ip saddr 10.0.0.1 drop", "meta l4proto tcp icmp type 8 drop",
		"meta l4proto icmp icmp type 8 drop", "th dport 90-80 accept", "th dport 080 accept",
		"th dport 65536 accept", "th dport { 80, 80 } accept", "th dport { 80 accept", "goto accept", "goto",
		"jump foo", "accept drop", "accept th dport 80", "log prefix \"a$b\" group 1", "log prefix \"x\" group 65536",
		"log prefix \"a\\b\" group 1", "log prefix x group 1", "iifname \"*\" drop", "iifname \"abcdefghijklmnop\" drop",
		"iifname \"a*b\" drop", "ct state bogus accept", "ct state established,established accept",
		"meta mark & 0x0 != 0 accept", "meta mark & 0x100000 == 0 accept", "meta mark set meta mark | 0x0 notrack accept",
		"meta mark set meta mark accept", "meta mark set meta mark & 0xff | 0x1 accept", "meta mark set meta mark | 0x1 & 0x2 accept",
		"ip saddr @nat-pools-v4 . th dport @x-y", "th sport . meta l4proto vmap @p-x-cls", "iifname . oifname @x-y",
		"th dport vmap @x-y", "meta l4proto { tcp, udp } accept", "ip saddr @pools accept", "ip saddr @1-x accept",
		"icmp type . icmp code { 1-2 . 3 } drop", "drop\taccept", "meta nfproto ipv4 meta nfproto ipv6 drop",
	} {
		if r, err := encodeRule(tbl, text); !errors.Is(err, errNotEncodable) {
			t.Errorf("encodeRule(%q) = %v, %v; want errNotEncodable", text, r, err)
		}
	}
	for _, c := range []struct {
		shape setShape
		key   []string
		value []string
	}{
		{setShape{typ: "ipv4_addr"}, []string{"10.0.0.0/8"}, nil},
		{setShape{typ: "ipv4_addr", interval: true}, []string{"10.0.0.1/32"}, nil},
		{setShape{typ: "ipv4_addr", interval: true}, []string{"fd00::1"}, nil},
		{setShape{typ: "ipv4_addr", interval: true}, []string{"10.0.0.1", "x"}, nil},
		{setShape{typ: "ifname"}, []string{"cali*"}, nil},
		{setShape{typ: "ifname : verdict", isMap: true}, []string{"cali1"}, []string{"goto"}},
		{setShape{typ: "ifname : verdict", isMap: true}, []string{"cali1"}, []string{"continue"}},
		{setShape{typ: "ifname : verdict", isMap: true}, []string{"cali1"}, nil},
		{setShape{typ: "ifname"}, []string{"cali1"}, []string{"accept"}},
		{setShape{typ: "inet_proto . inet_service"}, []string{"tcp", "1-2"}, nil},
		{classMapShape, []string{"1-2", "tcp"}, []string{"drop", "accept"}},
		{setShape{typ: "ether_addr"}, []string{"00:00:00:00:00:00"}, nil},
	} {
		if els, err := encodeElem(c.shape, elemT{key: c.key, value: c.value}); !errors.Is(err, errNotEncodable) {
			t.Errorf("encodeElem(%q, %v) = %v, %v; want errNotEncodable", c.shape.typ, c.key, els, err)
		}
	}
}

// FuzzEncode: the encoders never panic, whatever the text: anything they
// cannot read is errNotEncodable (and goes to nft).
func FuzzEncode(f *testing.F) {
	for _, r := range nlencExtraRules {
		f.Add(r)
	}
	f.Add("goto p-x-tcp-80")
	tbl := &nftables.Table{Name: "tortie", Family: nftables.TableFamilyINet}
	f.Fuzz(func(t *testing.T, text string) {
		if _, err := encodeRule(tbl, text); err != nil && !errors.Is(err, errNotEncodable) {
			t.Errorf("%q: %v", text, err)
		}
		for _, typ := range []string{"ipv4_addr", "inet_service . inet_proto", "ifname", "ipv4_addr . inet_proto . inet_service"} {
			e := elemT{key: strings.Split(text, " . ")}
			if _, err := encodeElem(setShape{typ: typ, interval: typ != "ifname"}, e); err != nil && !errors.Is(err, errNotEncodable) {
				t.Errorf("%q as %s: %v", text, typ, err)
			}
			e.value = []string{text}
			if _, err := encodeElem(setShape{typ: typ, interval: typ == "inet_service . inet_proto", isMap: true}, e); err != nil && !errors.Is(err, errNotEncodable) {
				t.Errorf("%q as a %s map element: %v", text, typ, err)
			}
		}
	})
}
