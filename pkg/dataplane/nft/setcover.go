package nft

import "net/netip"

// setCover keeps the members of every address set's kernel sets (one per
// family) and says which of them the kernel holds. Interval sets must not
// hold overlapping elements, and an endpoint's /32 may lie inside a network
// set's CIDR, so the kernel holds the cover of the members (those not
// inside another member); members move in and out of the cover as
// containing prefixes come and go.
type setCover struct {
	sets map[string]*coverSet // by kernel set
	// one backs a change that adds one prefix and deletes none, the
	// common case: a change is used before the next call (applyCover).
	one [1]netip.Prefix
}

// coverSet is one kernel set's members, and how many of them are networks
// (not single addresses): with none, no member contains another, and
// nothing has to be looked for.
type coverSet struct {
	members map[netip.Prefix]struct{}
	nets    int
}

func newSetCover() setCover {
	return setCover{sets: map[string]*coverSet{}}
}

// coverChange is what a member change does to a kernel set's elements:
// del goes out, then add comes in. It is valid until the setCover's next
// add or remove.
type coverChange struct {
	add, del []netip.Prefix
}

// reserve makes room for n members of set, when it has none yet.
func (c *setCover) reserve(set string, n int) {
	if cs := c.sets[set]; cs == nil || len(cs.members) == 0 {
		c.sets[set] = &coverSet{members: make(map[netip.Prefix]struct{}, n)}
	}
}

// add makes p (masked) a member of set. It enters the cover unless a
// member contains it, and the members it contains leave.
func (c *setCover) add(set string, p netip.Prefix) coverChange {
	cs := c.sets[set]
	if cs == nil {
		cs = &coverSet{members: map[netip.Prefix]struct{}{}}
		c.sets[set] = cs
	}
	ms := cs.members
	if _, ok := ms[p]; ok {
		return coverChange{}
	}
	ms[p] = struct{}{}
	if !p.IsSingleIP() {
		cs.nets++
	}
	if cs.hasAncestor(p) {
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
	if ch.del == nil {
		c.one[0] = p
		ch.add = c.one[:]
		return ch
	}
	ch.add = append(ch.add, p)
	return ch
}

// remove takes p (masked) out of set's members. If it was in the cover,
// it leaves, and the members it contained that no other member contains
// enter.
func (c *setCover) remove(set string, p netip.Prefix) coverChange {
	cs := c.sets[set]
	if cs == nil {
		return coverChange{}
	}
	ms := cs.members
	if _, ok := ms[p]; !ok {
		return coverChange{}
	}
	delete(ms, p)
	if !p.IsSingleIP() {
		cs.nets--
	}
	if cs.hasAncestor(p) {
		return coverChange{}
	}
	c.one[0] = p
	ch := coverChange{del: c.one[:]}
	if !p.IsSingleIP() {
		for q := range ms {
			if q.Bits() > p.Bits() && p.Contains(q.Addr()) && !cs.hasAncestor(q) {
				ch.add = append(ch.add, q)
			}
		}
	}
	return ch
}

// of is the members of set.
func (c *setCover) of(set string) map[netip.Prefix]struct{} {
	if cs := c.sets[set]; cs != nil {
		return cs.members
	}
	return nil
}

// drop forgets set.
func (c *setCover) drop(set string) { delete(c.sets, set) }

// hasAncestor reports whether a member of the set contains p (p itself
// aside). Only a network contains another prefix: with none among the
// members, there is nothing to look up.
func (cs *coverSet) hasAncestor(p netip.Prefix) bool {
	if cs.nets == 0 {
		return false
	}
	for b := 0; b < p.Bits(); b++ {
		if _, ok := cs.members[netip.PrefixFrom(p.Addr(), b).Masked()]; ok {
			return true
		}
	}
	return false
}
