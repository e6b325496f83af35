package nft

import (
	"maps"
	"slices"
)

// Keeping a partition. When a change moves a rule's ports, the partition
// of the new rules differs from the last one: a class splits or two merge,
// and at least one class map element must point somewhere else. The kernel
// pays about 10 ms for deleting one element of a 10,000-element interval
// map (and a merged rule changes its ports whenever a rule joins or leaves
// its group: an Allow turned Deny leaves the Allow run). So a program
// compiled again keeps its old partition where it can: each old class gets
// the rules that can match any of its ports, and a rule that matches only
// some of them keeps its port condition in the class's chain (a partial
// member). The class map and its elements stay as they are; only the
// chains of classes whose rules changed are rewritten.
//
// It applies when every protocol with port-specific rules is the same as
// before (the classes of a protocol cover its whole port space), no class
// changes its target (a class map element would change anyway), and the
// partial members stay few (maxPartial): past that, a packet would meet
// more rules than the classes were made to spare it, and the program is
// partitioned afresh. A restarted driver partitions afresh too (its digest
// then differs and it rewrites what changed).

// maxPartial bounds the partial members of a kept partition, over all its
// classes.
const maxPartial = 32

// stick compiles the program again on old's partition (see above), nil
// when that does not apply.
func stick(b *programBuilder, memo *classMemo, old *program) *program {
	om := old.memo
	if om.classes == nil || len(om.classes) < 2 {
		return nil
	}
	oldProtos := map[uint8]bool{}
	for _, c := range om.classes[1:] {
		oldProtos[c.proto] = true
	}
	newProtos := map[uint8]bool{}
	for _, a := range memo.adms {
		if a.ranges != nil {
			newProtos[a.proto] = true
		}
	}
	if !maps.Equal(oldProtos, newProtos) {
		return nil
	}
	// The ports of each class, and where each protocol's spans are.
	size := make([]int, len(om.classes))
	for _, s := range om.spans {
		size[s.class] += s.last - s.first + 1
	}
	spansOf := map[uint8][]span{} // a protocol's spans are consecutive, in port order
	for i := 0; i < len(om.spans); {
		j := i
		for j < len(om.spans) && om.spans[j].proto == om.spans[i].proto {
			j++
		}
		spansOf[om.spans[i].proto] = om.spans[i:j]
		i = j
	}
	classes := make([]portClass, len(om.classes))
	for ci, c := range om.classes {
		classes[ci] = portClass{proto: c.proto, first: c.first}
	}
	partials := 0
	add := func(ci, i int, partial bool) {
		c := &classes[ci]
		if partial && c.partial == nil {
			c.partial = make([]bool, len(c.members))
		}
		c.members = append(c.members, i)
		if c.partial != nil {
			c.partial = append(c.partial, partial)
		}
		if partial {
			partials++
		}
	}
	overlap := map[int]int{}
	for i, a := range memo.adms {
		switch {
		case a.all:
			for ci := range classes {
				add(ci, i, false)
			}
		case !newProtos[a.proto]:
			add(0, i, false)
		case a.ranges == nil:
			for ci := 1; ci < len(classes); ci++ {
				if classes[ci].proto == a.proto {
					add(ci, i, false)
				}
			}
		default:
			clear(overlap)
			spans := spansOf[a.proto]
			for _, r := range a.ranges {
				k, _ := slices.BinarySearchFunc(spans, int(r.First), func(s span, port int) int { return s.last - port })
				for ; k < len(spans) && spans[k].first <= int(r.Last); k++ {
					s := spans[k]
					overlap[s.class] += min(s.last, int(r.Last)) - max(s.first, int(r.First)) + 1
				}
			}
			for _, ci := range slices.Sorted(maps.Keys(overlap)) {
				add(ci, i, overlap[ci] < size[ci])
			}
		}
		if partials > maxPartial {
			return nil
		}
	}
	memo.classes, memo.spans = classes, om.spans
	memo.keys = make([]string, len(classes))
	memo.results = make([]classResult, len(classes))
	memo.targets = make([]string, len(classes))
	prog := &program{name: old.name, chains: maps.Clone(old.chains), memo: memo, from: old}
	for ci, c := range classes {
		key := b.memoKey(c)
		memo.keys[ci] = key
		if key == om.keys[ci] {
			memo.results[ci], memo.targets[ci] = om.results[ci], om.targets[ci]
			continue
		}
		was, res := om.results[ci], b.compileClass(c)
		if res.target != om.targets[ci] {
			// A class map element would change anyway (a class with a
			// constant verdict before needs a chain now, or the other
			// way): the partition made afresh is as cheap, and better.
			return nil
		}
		memo.results[ci], memo.targets[ci] = res, res.target
		prog.replaceClass(was, res)
	}
	prog.finishDispatch(memo, om, false)
	return prog
}
