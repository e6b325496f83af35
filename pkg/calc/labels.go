package calc

import "maps"

// labelSets interns the label maps items hold: items with equal labels (the
// pods of one Deployment, say) share one map instead of each holding a copy.
// At 100,000 endpoints the copies, two per endpoint (its own labels, and
// those with its profiles'), were the largest part of the agent's heap. A
// map that has been interned is never written to: buildItem and
// effectiveLabels make new maps, and nothing else writes labels.
type labelSets struct {
	byHash map[uint64]*labelSet
}

// labelSet is one shared map; next chains maps whose hashes collide.
type labelSet struct {
	m    map[string]string
	refs int
	next *labelSet
}

func newLabelSets() *labelSets { return &labelSets{byHash: map[uint64]*labelSet{}} }

// intern returns the shared map equal to m (m itself the first time), and
// counts a holder of it. nil stays nil.
func (t *labelSets) intern(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	h := hashLabels(m)
	first := t.byHash[h]
	for s := first; s != nil; s = s.next {
		if maps.Equal(s.m, m) {
			s.refs++
			return s.m
		}
	}
	t.byHash[h] = &labelSet{m: m, refs: 1, next: first}
	return m
}

// release drops one holder of an interned map; the last one forgets it.
func (t *labelSets) release(m map[string]string) {
	if m == nil {
		return
	}
	h := hashLabels(m)
	var prev *labelSet
	for s := t.byHash[h]; s != nil; prev, s = s, s.next {
		if !maps.Equal(s.m, m) {
			continue
		}
		if s.refs--; s.refs > 0 {
			return
		}
		switch {
		case prev != nil:
			prev.next = s.next
		case s.next != nil:
			t.byHash[h] = s.next
		default:
			delete(t.byHash, h)
		}
		return
	}
}

// len is how many distinct label maps are held.
func (t *labelSets) len() int {
	n := 0
	for _, s := range t.byHash {
		for ; s != nil; s = s.next {
			n++
		}
	}
	return n
}

// hashLabels hashes a map whatever its iteration order: the sum of each
// pair's FNV-1a hash.
func hashLabels(m map[string]string) uint64 {
	var sum uint64
	for k, v := range m {
		h := uint64(14695981039346656037)
		for i := 0; i < len(k); i++ {
			h = (h ^ uint64(k[i])) * 1099511628211
		}
		h = (h ^ 0xff) * 1099511628211 // between key and value: "ab"="c" is not "a"="bc"
		for i := 0; i < len(v); i++ {
			h = (h ^ uint64(v[i])) * 1099511628211
		}
		sum += h
	}
	return sum + uint64(len(m))
}
