package calc

type ipsetState struct {
	set     *IPSet
	entry   *selEntry
	refs    int
	members map[Member]int
	// fresh sets (created since the last Flush) are sent whole; the others
	// as the net member changes in pending (+1 added, -1 removed).
	fresh   bool
	pending map[Member]int8
}

func (g *Graph) acquireSet(r setRef) {
	st := g.ipsets[r.id]
	if st != nil {
		st.refs++
		return
	}
	st = &ipsetState{set: r.model(), refs: 1, members: map[Member]int{}, fresh: true}
	g.ipsets[r.id] = st
	g.dirtySets[r.id] = struct{}{}
	st.entry = g.setIdx.acquire(r.sel)
	if st.entry.sets == nil {
		st.entry.sets = map[*ipsetState]struct{}{}
	}
	st.entry.sets[st] = struct{}{}
	for it := range st.entry.matches {
		g.contribute(st, it, +1)
	}
}

func (g *Graph) releaseSet(id string) {
	st := g.ipsets[id]
	st.refs--
	if st.refs > 0 {
		return
	}
	delete(st.entry.sets, st)
	g.setIdx.release(st.entry)
	delete(g.ipsets, id)
	g.dirtySets[id] = struct{}{}
}

func (g *Graph) onSetMatch(e *selEntry, it *item, change matchChange) {
	d := -1
	if change == matchStarted {
		d = +1
	}
	for st := range e.sets {
		g.contribute(st, it, d)
	}
}

// contribute adds (d=+1) or removes (d=-1) the members it gives st.
// Members are counted, because two things can give the same member (an
// endpoint address inside a network set's CIDR list, say).
func (g *Graph) contribute(st *ipsetState, it *item, d int) {
	switch st.set.Kind {
	case AddressSet:
		for _, a := range it.addrs {
			g.count(st, Member{Prefix: a}, d)
		}
	case NamedPortSet:
		for _, p := range it.ports {
			if p.name != st.set.PortName || p.proto != st.set.Protocol {
				continue
			}
			for _, a := range it.addrs {
				g.count(st, Member{Prefix: a, Protocol: p.proto, Port: p.port}, d)
			}
		}
	}
}

func (g *Graph) count(st *ipsetState, m Member, d int) {
	n := st.members[m] + d
	if n > 0 {
		st.members[m] = n
	} else {
		delete(st.members, m)
	}
	if (d > 0 && n != 1) || (d < 0 && n != 0) || st.fresh {
		return
	}
	g.dirtySets[st.set.ID] = struct{}{}
	if st.pending == nil {
		st.pending = map[Member]int8{}
	}
	// An add undoes a pending remove and vice versa.
	if st.pending[m] == -int8(d) {
		delete(st.pending, m)
	} else {
		st.pending[m] = int8(d)
	}
}
