package nft

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// TestSetCover: after any sequence of adds and removes, the elements the
// changes leave are the cover of the members (coverPrefixes), and no
// change adds an element that is there.
func TestSetCover(t *testing.T) {
	pool := []netip.Prefix{
		pfx("10.0.0.0/8"), pfx("10.1.0.0/16"), pfx("10.1.2.0/24"), pfx("10.1.2.3/32"), pfx("10.1.2.4/32"),
		pfx("10.2.0.0/16"), pfx("10.2.0.1/32"), pfx("192.168.0.0/16"), pfx("192.168.1.1/32"), pfx("0.0.0.0/0"),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	c := newSetCover()
	elems := map[netip.Prefix]bool{}
	members := map[netip.Prefix]bool{}
	for step := range 2000 {
		p := pool[rng.IntN(len(pool))]
		var ch coverChange
		if rng.IntN(2) == 0 {
			ch, members[p] = c.add("s", p), true
		} else {
			ch = c.remove("s", p)
			delete(members, p)
		}
		for _, q := range ch.del {
			delete(elems, q)
		}
		for _, q := range ch.add {
			if elems[q] {
				t.Fatalf("step %d: %v added twice", step, q)
			}
			elems[q] = true
		}
		want := map[netip.Prefix]bool{}
		for _, q := range coverPrefixes(slices.Collect(maps.Keys(members))) {
			want[q] = true
		}
		if !maps.Equal(elems, want) {
			t.Fatalf("step %d (%v): elements %v, want the cover %v", step, p, elems, want)
		}
	}
}
