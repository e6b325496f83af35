package nft

import "net/netip"

// setCover keeps the members of every address set's kernel sets (one per
// family) and says which of them the kernel holds. Interval sets must not
// hold overlapping elements, and an endpoint's /32 may lie inside a network
// set's CIDR, so the kernel holds the cover of the members (those not
// inside another member); members move in and out of the cover as
// containing prefixes come and go.
type setCover struct {
	members map[string]map[netip.Prefix]struct{} // by kernel set
}

func newSetCover() setCover {
	return setCover{members: map[string]map[netip.Prefix]struct{}{}}
}

// coverChange is what a member change does to a kernel set's elements:
// del goes out, then add comes in.
type coverChange struct {
	add, del []netip.Prefix
}

// add makes p (masked) a member of set. It enters the cover unless a
// member contains it, and the members it contains leave.
func (c *setCover) add(set string, p netip.Prefix) coverChange {
	ms := c.members[set]
	if ms == nil {
		ms = map[netip.Prefix]struct{}{}
		c.members[set] = ms
	}
	if _, ok := ms[p]; ok {
		return coverChange{}
	}
	ms[p] = struct{}{}
	if hasAncestor(ms, p) {
		return coverChange{}
	}
	var ch coverChange
	if !p.IsSingleIP() {
		for q := range ms {
			if q != p && q.Bits() > p.Bits() && p.Contains(q.Addr()) {
				ch.del = append(ch.del, q)
			}
		}
	}
	ch.add = append(ch.add, p)
	return ch
}

// remove takes p (masked) out of set's members. If it was in the cover,
// it leaves, and the members it contained that no other member contains
// enter.
func (c *setCover) remove(set string, p netip.Prefix) coverChange {
	ms := c.members[set]
	if _, ok := ms[p]; !ok {
		return coverChange{}
	}
	delete(ms, p)
	if hasAncestor(ms, p) {
		return coverChange{}
	}
	ch := coverChange{del: []netip.Prefix{p}}
	if !p.IsSingleIP() {
		for q := range ms {
			if q.Bits() > p.Bits() && p.Contains(q.Addr()) && !hasAncestor(ms, q) {
				ch.add = append(ch.add, q)
			}
		}
	}
	return ch
}

// of is the members of set.
func (c *setCover) of(set string) map[netip.Prefix]struct{} { return c.members[set] }

// drop forgets set.
func (c *setCover) drop(set string) { delete(c.members, set) }

// hasAncestor reports whether a member of ms contains p.
func hasAncestor(ms map[netip.Prefix]struct{}, p netip.Prefix) bool {
	for b := 0; b < p.Bits(); b++ {
		if _, ok := ms[netip.PrefixFrom(p.Addr(), b).Masked()]; ok {
			return true
		}
	}
	return false
}
