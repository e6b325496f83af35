package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/tortie/tortie/pkg/calc"
)

// The IP sets: calc's IP sets as kernel sets, one per family, and their
// members as elements (the cover of the members, for address sets).

func (d *Driver) kernelSets(s *calc.IPSet) (v4, v6 string) {
	return ipSetName(s.ID, s.Kind, 4), ipSetName(s.ID, s.Kind, 6)
}

func (d *Driver) updateIPSet(s *calc.IPSet, members []calc.Member) {
	old := d.ipsets[s.ID]
	d.ipsets[s.ID] = s
	v4, v6 := d.kernelSets(s)
	n6 := 0
	for _, m := range members {
		if is6(m.Prefix) {
			n6++
		}
	}
	for i, name := range []string{v4, v6} {
		typ, n := "ipv4_addr", len(members)-n6
		if i == 1 {
			typ, n = "ipv6_addr", n6
		}
		var set *setT
		if s.Kind == calc.NamedPortSet {
			set = d.ensureSet(name, setShape{typ: typ + " . inet_proto . inet_service"},
				fmt.Sprintf("named port %s/%s of %s", protoName(s.Protocol), s.PortName, s.Selector))
		} else {
			set = d.ensureSet(name, setShape{typ: typ, interval: true}, "selector "+s.Selector)
		}
		if old == nil && len(set.elems) == 0 && n > 0 {
			// A new set: room for its members at once, not grown to them.
			set.elems = make(map[string]elemT, n)
			if s.Kind == calc.AddressSet {
				d.cover.reserve(name, n)
			}
		}
	}
	if old == nil {
		added := slices.Clone(members)
		slices.SortFunc(added, calc.CompareMembers)
		d.changeMembers(s, slices.Compact(added), nil)
		return
	}
	// Replace the members by the difference from what the set has.
	want := make(map[calc.Member]struct{}, len(members))
	for _, m := range members {
		want[m] = struct{}{}
	}
	var removed []calc.Member
	for _, m := range d.currentMembers(s) {
		if _, ok := want[m]; !ok {
			removed = append(removed, m)
		} else {
			delete(want, m)
		}
	}
	added := make([]calc.Member, 0, len(want))
	for m := range want {
		added = append(added, m)
	}
	slices.SortFunc(added, calc.CompareMembers)
	d.changeMembers(s, added, removed)
}

// currentMembers lists what s has in the kernel model.
func (d *Driver) currentMembers(s *calc.IPSet) []calc.Member {
	v4, v6 := d.kernelSets(s)
	var out []calc.Member
	for _, name := range []string{v4, v6} {
		if s.Kind == calc.NamedPortSet {
			for _, e := range d.want.sets[name].elems {
				if m, ok := parseNamedPortElem(e.key); ok {
					out = append(out, m)
				}
			}
			continue
		}
		for p := range d.cover.of(name) {
			out = append(out, calc.Member{Prefix: p})
		}
	}
	return out
}

func parseNamedPortElem(key []string) (calc.Member, bool) {
	if len(key) != 3 {
		return calc.Member{}, false
	}
	a, err := netip.ParseAddr(key[0])
	port, err2 := strconv.Atoi(key[2])
	if err != nil || err2 != nil {
		return calc.Member{}, false
	}
	var proto uint8
	for p := 0; p < 256; p++ {
		if protoName(uint8(p)) == key[1] {
			proto = uint8(p)
			break
		}
	}
	return calc.Member{Prefix: netip.PrefixFrom(a, a.BitLen()), Protocol: proto, Port: uint16(port)}, true
}

// changeMembers turns member changes into element adds and deletes: of
// the members for a named-port set, of their cover (setCover) for an
// address set.
func (d *Driver) changeMembers(s *calc.IPSet, added, removed []calc.Member) {
	v4, v6 := d.kernelSets(s)
	for _, m := range removed {
		name := v4
		if is6(m.Prefix) {
			name = v6
		}
		if s.Kind == calc.NamedPortSet {
			d.delElem(name, namedPortKey(m))
			continue
		}
		d.applyCover(name, d.cover.remove(name, m.Prefix.Masked()))
	}
	for _, m := range added {
		name := v4
		if is6(m.Prefix) {
			name = v6
		}
		if s.Kind == calc.NamedPortSet {
			d.setElem(name, namedPortKey(m), nil)
			continue
		}
		d.applyCover(name, d.cover.add(name, m.Prefix.Masked()))
	}
}

func namedPortKey(m calc.Member) []string {
	return []string{m.Prefix.Addr().String(), protoName(m.Protocol), strconv.Itoa(int(m.Port))}
}

func (d *Driver) removeIPSet(id string) {
	s := d.ipsets[id]
	if s == nil {
		return
	}
	delete(d.ipsets, id)
	v4, v6 := d.kernelSets(s)
	for _, n := range []string{v4, v6} {
		d.delSet(n)
		d.cover.drop(n)
	}
}

// applyCover puts a change of a kernel set's cover in want.
func (d *Driver) applyCover(set string, ch coverChange) {
	for _, p := range ch.del {
		d.delElem(set, []string{prefixString(p)})
	}
	for _, p := range ch.add {
		d.setElem(set, []string{prefixString(p)}, nil)
	}
}
