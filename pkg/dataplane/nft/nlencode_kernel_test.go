package nft

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/internal/testenv"
)

// The netlink encoder against the kernel: what it sends must be what nft
// sends for the same text, as the kernel dumps it.

// nlencNS is a network namespace with a lasting netlink connection in it.
type nlencNS struct {
	name string
	fd   int
	conn *nftables.Conn
	tbl  *nftables.Table
}

func newNLEncNS(t *testing.T) *nlencNS {
	testenv.RequireRoot(t)
	name := fmt.Sprintf("tortie-nlenc-%d-%d", os.Getpid(), rand.Uint32())
	nlencRun(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	n, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	conn, err := nftables.New(nftables.WithNetNSFd(int(n.Fd())), nftables.AsLasting(), nftables.WithSockOptions(bigBuffers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.CloseLasting() })
	return &nlencNS{name: name, fd: int(n.Fd()), conn: conn,
		tbl: &nftables.Table{Name: "tortie", Family: nftables.TableFamilyINet}}
}

// nlencRun runs a command (in namespace ns unless "") with stdin in.
func nlencRun(t *testing.T, ns string, args ...string) string {
	t.Helper()
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (x *nlencNS) nft(t *testing.T, args ...string) string {
	t.Helper()
	return nlencRun(t, x.name, append([]string{"nft"}, args...)...)
}

// load replaces the ruleset with an nft script.
func (x *nlencNS) load(t *testing.T, script string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "script.nft")
	if err := os.WriteFile(f, []byte("flush ruleset\n"+script), 0o600); err != nil {
		t.Fatal(err)
	}
	x.nft(t, "-f", f)
}

// listed is `nft list` of a chain, set or map with its name replaced and,
// for chains, the base chain line dropped.
func (x *nlencNS) listed(t *testing.T, kind, name string) string {
	out := x.nft(t, "list", kind, "inet", "tortie", name)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "type filter hook") || strings.HasPrefix(strings.TrimSpace(l), "type nat hook") {
			continue
		}
		lines = append(lines, strings.Replace(l, kind+" "+name+" {", kind+" NAME {", 1))
	}
	return strings.Join(lines, "\n")
}

// dumpedRules are the rules of a chain as the kernel dumps them: each
// expression's name and attributes in hex (anonymous set names and set IDs
// left out of lookups), and the user data.
func (x *nlencNS) dumpedRules(t *testing.T, chain string) []string {
	t.Helper()
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: x.fd})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msgs := nlencDump(t, c, unix.NFT_MSG_GETRULE, unix.NFTA_RULE_TABLE, unix.NFTA_RULE_CHAIN, chain)
	var out []string
	for _, m := range msgs {
		var b strings.Builder
		as, err := netlink.UnmarshalAttributes(m.Data[4:])
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			switch a.Type &^ unix.NLA_F_NESTED {
			case unix.NFTA_RULE_USERDATA:
				fmt.Fprintf(&b, "userdata %x\n", a.Data)
			case unix.NFTA_RULE_EXPRESSIONS:
				list, _ := netlink.UnmarshalAttributes(a.Data)
				for _, e := range list {
					ea, _ := netlink.UnmarshalAttributes(e.Data)
					var name string
					var data []byte
					for _, f := range ea {
						switch f.Type &^ unix.NLA_F_NESTED {
						case unix.NFTA_EXPR_NAME:
							name = strings.TrimRight(string(f.Data), "\x00")
						case unix.NFTA_EXPR_DATA:
							data = f.Data
						}
					}
					anon := ""
					if name == "lookup" {
						da, _ := netlink.UnmarshalAttributes(data)
						da = slices.DeleteFunc(da, func(f netlink.Attribute) bool {
							if f.Type == unix.NFTA_LOOKUP_SET && bytes.HasPrefix(f.Data, []byte("__set")) {
								anon = x.dumpedAnonSet(t, c, string(f.Data))
								return true
							}
							return f.Type == unix.NFTA_LOOKUP_SET_ID
						})
						data, _ = netlink.MarshalAttributes(da)
					}
					fmt.Fprintf(&b, "  %s %s\n%s", name, hex.EncodeToString(data), anon)
				}
			}
		}
		out = append(out, b.String())
	}
	return out
}

func nlencDump(t *testing.T, c *netlink.Conn, typ uint16, tableAttr, nameAttr uint16, name string) []netlink.Message {
	t.Helper()
	attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: tableAttr, Data: []byte("tortie\x00")},
		{Type: nameAttr, Data: []byte(name + "\x00")},
	})
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | int(typ)), Flags: netlink.Request | netlink.Dump},
		Data:   append([]byte{unix.NFPROTO_INET, 0, 0, 0}, attrs...),
	})
	if err != nil {
		t.Fatalf("dump %s: %v", name, err)
	}
	return msgs
}

// dumpedAnonSet is an anonymous set as the kernel dumps it: flags, key and
// data types and lengths, and the elements (without user data, which nft
// and google/nftables fill differently), sorted.
func (x *nlencNS) dumpedAnonSet(t *testing.T, c *netlink.Conn, name string) string {
	name = strings.TrimRight(name, "\x00")
	var b strings.Builder
	for _, m := range nlencDump(t, c, unix.NFT_MSG_GETSET, unix.NFTA_SET_TABLE, unix.NFTA_SET_NAME, name) {
		as, _ := netlink.UnmarshalAttributes(m.Data[4:])
		if !slices.ContainsFunc(as, func(a netlink.Attribute) bool {
			return a.Type == unix.NFTA_SET_NAME && string(a.Data) == name+"\x00"
		}) {
			continue // a dump lists every set of the table
		}
		for _, a := range as {
			switch a.Type {
			case unix.NFTA_SET_FLAGS, unix.NFTA_SET_KEY_TYPE, unix.NFTA_SET_KEY_LEN, unix.NFTA_SET_DATA_TYPE, unix.NFTA_SET_DATA_LEN:
				fmt.Fprintf(&b, "    set attr %d %x\n", a.Type, a.Data)
			}
		}
	}
	var elems []string
	for _, m := range nlencDump(t, c, unix.NFT_MSG_GETSETELEM, unix.NFTA_SET_ELEM_LIST_TABLE, unix.NFTA_SET_ELEM_LIST_SET, name) {
		as, _ := netlink.UnmarshalAttributes(m.Data[4:])
		for _, a := range as {
			if a.Type&^unix.NLA_F_NESTED != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			list, _ := netlink.UnmarshalAttributes(a.Data)
			for _, e := range list {
				ea, _ := netlink.UnmarshalAttributes(e.Data)
				var s strings.Builder
				for _, f := range ea {
					if f.Type != unix.NFTA_SET_ELEM_USERDATA {
						fmt.Fprintf(&s, " %d:%x", f.Type&^unix.NLA_F_NESTED, f.Data)
					}
				}
				elems = append(elems, "    elem"+s.String()+"\n")
			}
		}
	}
	slices.Sort(elems)
	b.WriteString(strings.Join(elems, ""))
	return b.String()
}

type goldenRule struct{ text, comment string }

// parseScript finds the rules by chain (in order) and the sets with their
// declarations and elements of an nft script as the driver writes it.
func parseScript(t *testing.T, script string) (chains []string, rules map[string][]goldenRule, sets []*goldenSet) {
	rules = map[string][]goldenRule{}
	byName := map[string]*goldenSet{}
	for _, l := range strings.Split(script, "\n") {
		switch {
		case strings.HasPrefix(l, "add rule inet tortie "):
			chain, rest, _ := strings.Cut(strings.TrimPrefix(l, "add rule inet tortie "), " ")
			text, comment := rest, ""
			if i := strings.LastIndex(rest, ` comment "`); i >= 0 {
				text, comment = rest[:i], strings.TrimSuffix(rest[i+len(` comment "`):], `"`)
			}
			if _, ok := rules[chain]; !ok {
				chains = append(chains, chain)
			}
			rules[chain] = append(rules[chain], goldenRule{text, comment})
		case strings.HasPrefix(l, "add set inet tortie "), strings.HasPrefix(l, "add map inet tortie "):
			f := strings.Fields(l)
			decl := l[strings.Index(l, "{"):]
			typ, _, _ := strings.Cut(strings.TrimPrefix(decl, "{ type "), " ;")
			s := &goldenSet{name: f[4], decl: decl,
				setShape: setShape{typ: typ, interval: strings.Contains(decl, "flags interval"), isMap: f[1] == "map"}}
			byName[s.name] = s
			sets = append(sets, s)
		case strings.HasPrefix(l, "add element inet tortie "):
			name, rest, _ := strings.Cut(strings.TrimPrefix(l, "add element inet tortie "), " ")
			s := byName[name]
			if s == nil {
				t.Fatalf("element of undeclared set: %s", l)
			}
			s.elems = append(s.elems, parseElem(strings.TrimSuffix(strings.TrimPrefix(rest, "{ "), " }")))
		}
	}
	return chains, rules, sets
}

func parseElem(s string) elemT {
	k, v, isMap := strings.Cut(s, " : ")
	e := elemT{key: strings.Split(k, " . ")}
	if isMap {
		e.value = []string{v}
	}
	return e
}

func elemText(e elemT) string {
	s := strings.Join(e.key, " . ")
	if e.value != nil {
		s += " : " + e.value[0]
	}
	return s
}

// nlencExtraRules are rule texts rules.go and driver.go can produce that
// the golden files lack, with the objects they refer to.
const nlencExtraDecls = `add table inet tortie
add chain inet tortie x-target
add set inet tortie x-s4 { type ipv4_addr ; flags interval ; }
add set inet tortie x-s6 { type ipv6_addr ; flags interval ; }
add set inet tortie x-np4 { type ipv4_addr . inet_proto . inet_service ; }
add set inet tortie x-np6 { type ipv6_addr . inet_proto . inet_service ; }
add map inet tortie x-cls { type inet_service . inet_proto : verdict ; flags interval ; }
add map inet tortie x-if { type ifname : verdict ; }
add set inet tortie x-ifs { type ifname ; }
add set inet tortie x-fs { type inet_proto . inet_service ; }
`

var nlencExtraRules = []string{
	"meta nfproto ipv4 ip saddr 10.0.0.1 drop",
	"meta nfproto ipv4 ip saddr 10.0.0.0/8 drop",
	"meta nfproto ipv4 ip daddr 10.0.0.0/9 drop",
	"meta nfproto ipv4 ip saddr 10.0.0.0/31 drop",
	"meta nfproto ipv4 ip saddr 0.0.0.0/0 drop",
	"meta nfproto ipv4 ip daddr != 0.0.0.0/0 drop",
	"meta nfproto ipv4 ip saddr 255.255.255.255 drop",
	"meta nfproto ipv4 ip saddr != 10.0.0.0/20 drop",
	"meta nfproto ipv4 ip saddr != 10.0.0.0/24 drop",
	"meta nfproto ipv4 ip saddr { 10.0.0.1, 10.1.0.0/16 } drop",
	"meta nfproto ipv4 ip daddr != { 10.0.0.1, 10.1.0.0/16 } drop",
	"meta nfproto ipv4 ip saddr { 0.0.0.0/1, 128.0.0.0/1 } drop",
	"meta nfproto ipv4 ip saddr { 10.0.0.0/24, 10.0.1.0/24, 10.0.3.0/24 } drop",
	"meta nfproto ipv4 ip saddr { 10.0.0.1, 255.255.255.255 } drop",
	"meta nfproto ipv4 ip saddr { 10.0.0.0/8, 255.255.255.255 } drop",
	"meta nfproto ipv4 ip saddr { 0.0.0.0/0, 10.0.0.1 } drop",
	"meta nfproto ipv6 ip6 saddr ::/0 drop",
	"meta nfproto ipv6 ip6 saddr fd00::1 drop",
	"meta nfproto ipv6 ip6 saddr fd00::/65 drop",
	"meta nfproto ipv6 ip6 daddr != fd00::/64 drop",
	"meta nfproto ipv6 ip6 saddr { fd00::1, fd01::/64 } drop",
	"meta nfproto ipv6 ip6 daddr != { fd00::1, ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff } drop",
	"meta nfproto ipv6 ip6 saddr { ::/1, fd00::1 } drop",
	"meta nfproto ipv4 ip saddr 10.0.0.1 ip daddr 10.0.0.2 drop",
	"meta nfproto ipv4 ip saddr 10.0.0.1 ip daddr 10.0.0.0/8 drop",
	"meta nfproto ipv6 ip6 saddr fd00::1 ip6 daddr fd00::/16 drop",
	"meta nfproto ipv4 ip saddr @x-s4 ip daddr != @x-s4 return",
	"meta nfproto ipv6 ip6 saddr != @x-s6 ip6 daddr @x-s6 return",
	"ip saddr 10.0.0.1 accept",
	"ip6 daddr @x-s6 accept",
	"th dport 80 accept",
	"th dport 80-90 accept",
	"th dport != 80-90 accept",
	"th sport 0-1023 accept",
	"th dport 0-65535 accept",
	"th dport { 80, 443 } accept",
	"th dport { 80, 443-445 } accept",
	"th dport != { 80, 443-445 } accept",
	"th dport != { 80, 443 } accept",
	"th sport { 0-1023, 65535 } accept",
	"th sport { 80-89, 90-99 } accept",
	"th sport 53 th dport 80 accept",
	"th sport != 53 th dport != 80 accept",
	"th sport 53 th dport 80-90 accept",
	"meta l4proto tcp th sport 1024-65535 th dport 80 accept",
	"meta nfproto ipv4 th sport 53 ip daddr 10.0.0.0/9 th dport 80 return",
	"meta nfproto ipv4 ip saddr 10.0.0.1 th sport 53 ip daddr != 10.0.0.2 th dport != 80 return",
	"meta nfproto ipv4 icmp type 8 return",
	"meta nfproto ipv4 icmp type 8 icmp code 3 return",
	"meta nfproto ipv4 icmp type != 8 return",
	"meta nfproto ipv4 meta l4proto icmp icmp type 8 icmp code 0 th dport 80 return",
	"meta nfproto ipv4 meta l4proto icmp icmp type 8 icmp code 0 th sport 80 return",
	"meta nfproto ipv4 icmp type . icmp code != { 3 . 1 } return",
	"meta nfproto ipv4 icmp type 8 icmp code 0 icmp type . icmp code != { 3 . 1 } return",
	"meta nfproto ipv4 meta l4proto != tcp icmp type 8 return",
	"meta nfproto ipv6 icmpv6 type 128 return",
	"meta nfproto ipv6 icmpv6 type 128 icmpv6 code 0 return",
	"meta nfproto ipv6 icmpv6 type != 128 return",
	"meta nfproto ipv6 icmpv6 type . icmpv6 code != { 1 . 3 } return",
	"meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type . icmpv6 code != { 1 . 3, 2 . 0 } return",
	"icmp type 8 accept",
	"oifname \"cali*\" icmpv6 type { 130-136 } accept",
	"icmpv6 type != { 130-136 } accept",
	"meta nfproto ipv4 ip saddr . meta l4proto . th sport @x-np4 return",
	"meta nfproto ipv4 ip daddr . meta l4proto . th dport != @x-np4 return",
	"meta nfproto ipv6 ip6 saddr . meta l4proto . th sport != @x-np6 return",
	"meta nfproto ipv6 ip6 daddr . meta l4proto . th dport @x-np6 return",
	"ip saddr . meta l4proto . th dport @x-np4 return",
	"meta l4proto . th dport @x-fs accept",
	"th dport . meta l4proto vmap @x-cls",
	"iifname vmap @x-if",
	"oifname \"cali*\" oifname != @x-ifs drop",
	"iifname @x-ifs accept",
	"meta l4proto sctp return", "meta l4proto udplite return", "meta l4proto 0 return", "meta l4proto 255 return",
	"meta l4proto != ipv6-icmp return", "meta l4proto 47 return",
	"meta nfproto ipv4 meta nfproto ipv4 ip saddr 10.0.0.1 accept",
	"log prefix \"a b:c'd%e\" group 1", "log prefix \"\" group 0", "log prefix \"x\" group 65535",
	"jump x-target", "goto x-target",
	"meta mark set meta mark | 0x1 notrack accept",
	"meta mark set meta mark | 0x80000000 notrack accept",
	"meta mark & 0x80000000 != 0 accept",
	"meta nfproto ipv4 ip saddr 10.0.0.1 meta mark set meta mark & 0x1fffff | 0x200000 return",
	"meta mark set meta mark & 0x1fffff | 0xffe00000 return",
	"meta mark & 0xffe00000 != 0 oifname != @x-ifs log prefix \"tf:egress-mark\" group 30 snaplen 64 meta mark set meta mark & 0x1fffff",
	"meta l4proto udp th sport 4789 meta mark set meta mark | 0x100000 notrack accept",
	"ct state new accept", "ct state established,related,new,untracked,invalid accept",
	"iifname \"x*\" drop", "iifname \"abcdefghijklmno\" drop", "iifname \"abcdefghijklmn*\" drop",
	"oifname != \"lo\" oifname != \"cali*\" oifname != \"tap*\" jump x-target",
	"ip saddr @x-s4 ip daddr != @x-s4 masquerade",
	// A one-port range is a range for nft, never merged with its neighbour
	// (rules.go writes single notPorts this way).
	"th dport 80-80 accept", "th sport != 53-53 th dport != 80-80 accept", "th dport != { 80-80, 90 } accept",
}

func nlencScripts(t *testing.T) map[string]string {
	files, err := filepath.Glob("testdata/*.golden")
	if err != nil || len(files) == 0 {
		t.Fatalf("golden files: %v", err)
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = string(b)
	}
	var b strings.Builder
	b.WriteString(nlencExtraDecls)
	b.WriteString("add chain inet tortie x-rules\n")
	// A merged rule's pair set of more elements than one message holds.
	pairs := manyElems(600, func(i int) string { return fmt.Sprintf("10.%d.%d.0/24 . %d-%d", i/250, i%250, 1000+i, 1100+i) })
	big := "meta nfproto ipv4 ip saddr . th dport { " + strings.Join(pairs, ", ") + " } return"
	for _, r := range append(slices.Clone(nlencExtraRules), big) {
		fmt.Fprintf(&b, "add rule inet tortie x-rules %s comment \"extra\"\n", r)
	}
	out["extra"] = b.String()
	return out
}

// TestNLEncodeRules loads each golden file (and the extra rules) with nft,
// copies every chain's rules into a twin chain over netlink with
// encodeRule, and compares the two as nft lists them and as the kernel
// dumps them.
func TestNLEncodeRules(t *testing.T) {
	x := newNLEncNS(t)
	for name, script := range nlencScripts(t) {
		t.Run(name, func(t *testing.T) {
			x.load(t, script)
			chains, rules, _ := parseScript(t, script)
			var twins []string
			encoded := 0
			for i, chain := range chains {
				twin := &nftables.Chain{Name: fmt.Sprintf("nl-%d", i), Table: x.tbl}
				x.conn.AddChain(twin)
				twins = append(twins, twin.Name)
				for _, r := range rules[chain] {
					nr, err := encodeRule(x.tbl, r.text)
					if err != nil {
						t.Errorf("chain %s: %v", chain, err)
						continue
					}
					if err := addAnonSets(x.conn, nr); err != nil {
						t.Fatal(err)
					}
					x.conn.AddRule(&nftables.Rule{Table: x.tbl, Chain: twin, Exprs: nr.exprs, UserData: ruleUserData(r.comment)})
					encoded++
				}
			}
			if err := x.conn.Flush(); err != nil {
				t.Fatalf("flush: %v", err)
			}
			for i, chain := range chains {
				if want, got := x.listed(t, "chain", chain), x.listed(t, "chain", twins[i]); want != got {
					t.Errorf("chain %s: nft lists\n%s\nthe netlink twin\n%s", chain, want, got)
				}
				want, got := x.dumpedRules(t, chain), x.dumpedRules(t, twins[i])
				if len(want) != len(got) {
					t.Errorf("chain %s: %d rules, twin %d", chain, len(want), len(got))
					continue
				}
				for j := range want {
					if want[j] != got[j] {
						t.Errorf("chain %s rule %q: kernel has from nft\n%sfrom netlink\n%s", chain, rules[chain][j].text, want[j], got[j])
					}
				}
			}
			t.Logf("%d chains, %d rules encoded and identical", len(chains), encoded)
		})
	}
}

// goldenSet is a set declaration with elements to add, and some of them to
// delete afterwards.
type goldenSet struct {
	name, decl string
	setShape
	elems   []elemT
	deletes []elemT
}

func nlencExtraSets() []*goldenSet {
	set := func(shape setShape, elems []string, deletes ...string) *goldenSet {
		s := &goldenSet{setShape: shape}
		for _, e := range elems {
			s.elems = append(s.elems, parseElem(e))
		}
		for _, d := range deletes { // the element as added, value included
			i := slices.IndexFunc(s.elems, func(e elemT) bool { return strings.Join(e.key, " . ") == d })
			s.deletes = append(s.deletes, s.elems[i])
		}
		return s
	}
	return []*goldenSet{
		// Intervals that end at the last address are nft's (see
		// TestEncodeElemLeftToNft).
		set(setShape{typ: "ipv4_addr", interval: true}, []string{"10.0.1.66", "10.0.1.67", "10.0.2.0/24", "10.0.3.0/25", "192.168.0.0/16",
			"1.2.3.4", "255.255.255.254", "255.255.255.0/31"}, "10.0.1.67", "10.0.3.0/25", "255.255.255.254"),
		set(setShape{typ: "ipv4_addr", interval: true}, []string{"0.0.0.0/1", "128.0.0.0/2"}, "0.0.0.0/1"),
		set(setShape{typ: "ipv4_addr", interval: true}, []string{"0.0.0.0", "10.0.0.0/8"}, "0.0.0.0"),
		set(setShape{typ: "ipv6_addr", interval: true}, []string{"fd00::1", "fd00:1::/64", "2001:db8::/32", "::1",
			"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "fe80::/10"}, "fd00:1::/64", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
		set(setShape{typ: "ipv4_addr . inet_proto . inet_service"}, []string{"10.0.0.2 . tcp . 8080",
			"10.0.0.3 . udp . 53", "10.0.0.4 . sctp . 9", "10.0.0.5 . 47 . 0", "255.255.255.255 . udplite . 65535"},
			"10.0.0.3 . udp . 53"),
		set(setShape{typ: "ipv6_addr . inet_proto . inet_service"}, []string{"fd00::2 . tcp . 8080",
			"fd00::3 . udp . 53", "::1 . 255 . 1"}, "fd00::2 . tcp . 8080"),
		set(classMapShape, []string{"0-21 . tcp : goto x-target",
			"22 . tcp : jump x-target", "23 . tcp : return", "24-79 . tcp : drop", "80 . tcp : accept",
			"0-65535 . icmp : drop", "100 . 47 : drop", "5000-5999 . udp : goto x-target", "65535 . udp : accept"},
			"22 . tcp", "24-79 . tcp", "0-65535 . icmp", "65535 . udp"),
		set(setShape{typ: "ifname : verdict", isMap: true}, []string{"cali1234 : jump x-target", "abcdefghijklmno : goto x-target",
			"eth0 : return", "lo : drop", "x : accept"}, "cali1234", "lo"),
		set(setShape{typ: "ifname"}, []string{"caliabc", "lo", "abcdefghijklmno"}, "lo"),
		set(setShape{typ: "inet_proto . inet_service"}, []string{"tcp . 22", "udp . 68", "sctp . 0", "0 . 65535"}, "udp . 68"),
		// More elements than one message holds (elemsPerMessage), added
		// and deleted.
		set(setShape{typ: "ipv4_addr", interval: true}, manyElems(1000, func(i int) string { return fmt.Sprintf("10.%d.%d.0/24", i/250, i%250) }),
			manyElems(300, func(i int) string { return fmt.Sprintf("10.%d.%d.0/24", i/250, i%250) })...),
		set(classMapShape, manyElems(700, func(i int) string { return fmt.Sprintf("%d . tcp : goto x-target", 20000+2*i) }),
			manyElems(300, func(i int) string { return fmt.Sprintf("%d . tcp", 20000+2*i) })...),
	}
}

// manyElems is n elements, the ith f(i).
func manyElems(n int, f func(int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// elemDump is the element lines of `nft --debug=netlink list set` for a
// set, sorted, without the two things nft adds that google/nftables
// cannot send: the end element at zero of an interval set nft first adds
// to, and the "open interval" flag in the user data of an element without
// end.
func (x *nlencNS) elemDump(t *testing.T, kind, name string) string {
	out := x.nft(t, "--debug=netlink", "list", kind, "inet", "tortie", name)
	var lines []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "inet tortie @"):
			in = l == "inet tortie @"+name
		case in && strings.HasPrefix(l, "\telement "):
			l, _, _ = strings.Cut(l, "  userdata = ")
			if strings.Trim(strings.TrimPrefix(l, "\telement "), "0 ") == ": 1 [end]" {
				continue
			}
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestNLEncodeElems adds the elements of every set of the golden files,
// and more, to a set through nft and to its twin through netlink with
// kernelSet and encodeElem, compares them, deletes some from both, and
// compares again.
func TestNLEncodeElems(t *testing.T) {
	x := newNLEncNS(t)
	var cases []*goldenSet
	for name, script := range nlencScripts(t) {
		if name == "extra" {
			continue
		}
		_, _, sets := parseScript(t, script)
		for _, s := range sets {
			if len(s.elems) > 0 {
				if len(s.elems) > 1 {
					s.deletes = s.elems[:1]
				}
				cases = append(cases, s)
			}
		}
	}
	cases = append(cases, nlencExtraSets()...)
	var b strings.Builder
	b.WriteString("add table inet tortie\n")
	targets := map[string]bool{}
	for _, c := range cases {
		for _, e := range c.elems {
			if f := strings.Fields(strings.Join(e.value, "")); len(f) == 2 && !targets[f[1]] {
				targets[f[1]] = true
				fmt.Fprintf(&b, "add chain inet tortie %s\n", f[1])
			}
		}
	}
	kinds := make([]string, len(cases))
	for i, c := range cases {
		kinds[i] = "set"
		if c.isMap {
			kinds[i] = "map"
		}
		flags := ""
		if c.interval {
			flags = " flags interval ;"
		}
		fmt.Fprintf(&b, "add %s inet tortie e%d-nft { type %s ;%s comment \"set %d\" ; }\n", kinds[i], i, c.typ, flags, i)
	}
	x.load(t, b.String())
	// The twins are created over netlink, as the driver creates sets.
	for i, c := range cases {
		ks, err := kernelSet(x.tbl, fmt.Sprintf("e%d-nl", i), c.setShape)
		if err != nil {
			t.Fatal(err)
		}
		ks.Comment = fmt.Sprintf("set %d", i)
		if err := x.conn.AddSet(ks, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.conn.Flush(); err != nil {
		t.Fatalf("creating the twins: %v", err)
	}
	check := func(step string) {
		t.Helper()
		for i, c := range cases {
			n := fmt.Sprintf("e%d-", i)
			if want, got := x.listed(t, kinds[i], n+"nft"), x.listed(t, kinds[i], n+"nl"); want != got {
				t.Errorf("%s: %s %q (from %s): nft lists\n%s\nthe netlink twin\n%s", step, kinds[i], c.typ, c.name, want, got)
			}
			if want, got := x.elemDump(t, kinds[i], n+"nft"), x.elemDump(t, kinds[i], n+"nl"); want != got {
				t.Errorf("%s: %s %q (from %s): kernel has from nft\n%s\nfrom netlink\n%s", step, kinds[i], c.typ, c.name, want, got)
			}
		}
	}
	apply := func(kind opKind) { // opAddElem or opDelElem
		t.Helper()
		del := kind == opDelElem
		verb := "add"
		for i, c := range cases {
			es := c.elems
			if del {
				verb, es = "delete", c.deletes
			}
			if len(es) == 0 {
				continue
			}
			texts := make([]string, len(es))
			var nl []nftables.SetElement
			for j, e := range es {
				texts[j] = elemText(e)
				if del {
					texts[j] = strings.Join(e.key, " . ")
				}
				els, err := encodeElem(c.setShape, e)
				if err != nil {
					t.Fatalf("%s: %v", c.typ, err)
				}
				nl = append(nl, els...)
			}
			x.nft(t, verb, "element", "inet", "tortie", fmt.Sprintf("e%d-nft", i), "{ "+strings.Join(texts, ", ")+" }")
			s, err := kernelSet(x.tbl, fmt.Sprintf("e%d-nl", i), c.setShape)
			if err != nil {
				t.Fatal(err)
			}
			if del {
				err = inChunks(nl, func(es []nftables.SetElement) error { return x.conn.SetDeleteElements(s, es) })
			} else {
				err = inChunks(nl, func(es []nftables.SetElement) error { return x.conn.SetAddElements(s, es) })
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := x.conn.Flush(); err != nil {
			t.Fatalf("%s: flush: %v", verb, err)
		}
	}
	apply(opAddElem)
	check("add")
	apply(opDelElem)
	check("delete")
	t.Logf("%d sets compared after adds and deletes", len(cases))
}
