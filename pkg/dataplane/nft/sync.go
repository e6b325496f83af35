package nft

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"sigs.k8s.io/knftables"
)

// sync writes the difference between want and have, restricted to the
// dirty objects (everything, for a full sync, after listing the kernel into
// have), as one transaction. The order inside it is what makes each step
// valid: sets and chains exist before rules and elements refer to them, and
// objects are deleted only a sync after the last reference to them went.
// A ctx done before the write returns ctx.Err() and writes nothing.
func (d *Driver) sync(ctx context.Context, scope syncScope) error {
	full := scope == syncFull
	d.renderStatic()
	d.progs.gc()
	if err := ctx.Err(); err != nil {
		d.synced = false
		return err
	}
	if full {
		have, err := d.listKernel(ctx)
		if err != nil {
			d.synced = false
			return fmt.Errorf("listing table %s: %w", d.cfg.TableName, err)
		}
		d.have = have
		for n := range d.want.chains {
			d.dirty.chains[n] = struct{}{}
		}
		for n := range have.chains {
			d.dirty.chains[n] = struct{}{}
		}
		for n := range d.want.sets {
			d.dirty.sets[n] = struct{}{}
		}
		for n := range have.sets {
			d.dirty.sets[n] = struct{}{}
		}
		// Kernel objects nobody wants become pending deletion at once:
		// they are deleted by the next sync.
	}

	chains := slices.Sorted(maps.Keys(d.dirty.chains))
	sets := slices.Sorted(maps.Keys(d.dirty.sets))
	elemSets := slices.Sorted(maps.Keys(d.dirty.elems))

	tx := &txn{ops: make([]op, 0, d.opsEstimate(chains, sets, elemSets))}
	tx.add(op{kind: opAddTable})

	// 1. New sets and maps, 2. new chains (empty).
	for _, n := range sets {
		w, h := d.want.sets[n], d.have.sets[n]
		if w == nil || h != nil {
			continue
		}
		tx.add(op{kind: opAddSet, name: n, set: w})
	}
	for _, n := range chains {
		w, h := d.want.chains[n], d.have.chains[n]
		if w == nil || h != nil {
			continue
		}
		tx.add(op{kind: opAddChain, name: n, chain: w})
	}
	// 3. Elements of plain sets (rules may need them), 4. chain contents,
	// 5. elements of verdict maps (they point at chains that now have
	// their rules).
	writeElems := func(pass elemPass) {
		for _, n := range sets {
			w, h := d.want.sets[n], d.have.sets[n]
			if w == nil || w.isMap != bool(pass) {
				continue
			}
			if h == nil {
				for _, k := range slices.Sorted(maps.Keys(w.elems)) {
					addElem(tx, w, n, w.elems[k])
				}
				continue
			}
			if h.opaque {
				// Listed elements that cannot be compared: compare the
				// count and, for a program's class map, the digest its
				// entry chain carries (programs change in place).
				prog := classMapProgram(n)
				if h.listedCount != len(w.elems) || programDigest(d.have, prog) != programDigest(d.want, prog) {
					tx.add(op{kind: opFlushSet, name: n, set: w})
					for _, k := range slices.Sorted(maps.Keys(w.elems)) {
						addElem(tx, w, n, w.elems[k])
					}
				}
				continue
			}
			keys := map[string]struct{}{}
			for k := range w.elems {
				keys[k] = struct{}{}
			}
			h.keys(func(k string) { keys[k] = struct{}{} })
			diffElems(tx, n, w, h, slices.Sorted(maps.Keys(keys)))
		}
		for _, n := range elemSets {
			if _, whole := d.dirty.sets[n]; whole {
				continue
			}
			w, h := d.want.sets[n], d.have.sets[n]
			if w == nil || h == nil || w.isMap != bool(pass) {
				continue
			}
			diffElems(tx, n, w, h, slices.Sorted(maps.Keys(d.dirty.elems[n])))
		}
	}
	writeElems(setElems)
	for _, n := range chains {
		w, h := d.want.chains[n], d.have.chains[n]
		if w == nil || (h != nil && sameRules(w, h)) {
			continue
		}
		if h != nil && len(h.rules) > 0 {
			tx.add(op{kind: opFlushChain, name: n})
		}
		for _, rl := range w.rules {
			tx.add(op{kind: opAddRule, name: n, rule: rl})
		}
	}
	writeElems(mapElems)

	// 6. Objects that went out of want in an earlier sync, last: only now
	// has every kept chain its new rules and every kept map its new
	// elements, so nothing refers to them any more but each other (a
	// program deleted and wanted again under the same name, as a policy
	// deleted and re-created is, still pointed at its old class chains
	// until its rules were rewritten above). Flush chains, then drop maps
	// (which hold gotos), chains, sets.
	var delChains, delSets []string
	for n, isChain := range d.pending {
		if isChain {
			if _, ok := d.want.chains[n]; !ok && d.have.chains[n] != nil {
				delChains = append(delChains, n)
			}
		} else if _, ok := d.want.sets[n]; !ok && d.have.sets[n] != nil {
			delSets = append(delSets, n)
		}
	}
	slices.Sort(delChains)
	slices.Sort(delSets)
	for _, n := range delChains {
		tx.add(op{kind: opFlushChain, name: n})
	}
	for _, n := range delSets {
		if h := d.have.sets[n]; h.isMap {
			tx.add(op{kind: opDelSet, name: n, set: h})
		}
	}
	for _, n := range delChains {
		tx.add(op{kind: opDelChain, name: n})
	}
	for _, n := range delSets {
		if h := d.have.sets[n]; !h.isMap {
			tx.add(op{kind: opDelSet, name: n, set: h})
		}
	}

	if len(tx.ops) > 1 || !d.synced {
		if err := d.run(ctx, tx, scope); err != nil {
			d.synced = false
			return err
		}
	}

	// The kernel now has want for every dirty object; what left want is
	// pending deletion.
	for _, n := range delChains {
		delete(d.have.chains, n)
		delete(d.pending, n)
	}
	for _, n := range delSets {
		delete(d.have.sets, n)
		delete(d.pending, n)
	}
	for _, n := range chains {
		if w := d.want.chains[n]; w != nil {
			d.have.chains[n] = w
			delete(d.pending, n)
		} else if d.have.chains[n] != nil {
			d.pending[n] = true
		}
	}
	for _, n := range sets {
		if w := d.want.sets[n]; w != nil {
			d.have.sets[n] = w.shadow()
			delete(d.pending, n)
		} else if d.have.sets[n] != nil {
			d.pending[n] = false
		}
	}
	for _, n := range elemSets {
		w, h := d.want.sets[n], d.have.sets[n]
		if _, whole := d.dirty.sets[n]; whole || w == nil || h == nil {
			continue
		}
		if h.of == w {
			h.was = nil // the kernel has w again
			continue
		}
		for k := range d.dirty.elems[n] {
			if e, ok := w.elems[k]; ok {
				h.elems[k] = e
			} else {
				delete(h.elems, k)
			}
		}
	}
	d.dirty = newDirty()
	d.synced = true
	return nil
}

// opsEstimate is about how many operations a sync of these dirty objects
// writes when it has to write them out: every element of a new set, the
// rules of every chain, each changed element. A first sync writes 100,000
// elements or more, and a slice grown one append at a time to that size
// allocates about five times its final size on the way.
func (d *Driver) opsEstimate(chains, sets, elemSets []string) int {
	n := 1 + len(chains) + len(sets)
	for _, c := range chains {
		if w := d.want.chains[c]; w != nil {
			n += len(w.rules)
		}
	}
	for _, s := range sets {
		if w := d.want.sets[s]; w != nil && d.have.sets[s] == nil {
			n += len(w.elems)
		}
	}
	for _, s := range elemSets {
		n += len(d.dirty.elems[s])
	}
	return n
}

// syncScope says what a sync compares: the dirty objects with what the
// driver remembers of the kernel, or the whole table with a fresh listing.
type syncScope uint8

const (
	syncDirty syncScope = iota
	syncFull
)

// elemPass says which elements a pass of sync writes: those of plain sets
// (before chain contents, which may refer to them) or those of maps (after,
// as they point at chains).
type elemPass bool

const (
	setElems elemPass = false
	mapElems elemPass = true
)

func addElem(tx *txn, set *setT, name string, e elemT) {
	tx.add(op{kind: opAddElem, name: name, set: set, elem: e})
}

func delElem(tx *txn, set *setT, name string, e elemT) {
	tx.add(op{kind: opDelElem, name: name, set: set, elem: e})
}

// diffElems writes the element operations for keys: every delete first,
// then the adds. A map element whose value changes is deleted and added
// again (the kernel refuses to add a key that exists with other data), and
// in an interval map a new element may overlap one that goes: deleted
// first, the two never coexist.
func diffElems(tx *txn, set string, w, h *setT, keys []string) {
	for _, k := range keys {
		we, inW := w.elems[k]
		he, inH := h.elem(k)
		if inH && (!inW || !slices.Equal(we.value, he.value)) {
			delElem(tx, w, set, he)
		}
	}
	for _, k := range keys {
		we, inW := w.elems[k]
		he, inH := h.elem(k)
		if inW && (!inH || !slices.Equal(we.value, he.value)) {
			addElem(tx, w, set, we)
		}
	}
}

// listKernel reads the table into a model: chain names with their rules'
// comments (the kernel gives no rule text), set and map elements.
func (d *Driver) listKernel(ctx context.Context) (*tableModel, error) {
	m := newTableModel()
	all, err := d.nft.ListAll(ctx)
	if knftables.IsNotFound(err) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	for _, n := range all["chain"] {
		m.chains[n] = &chainT{listed: true}
	}
	if len(all["chain"]) > 0 {
		rules, err := d.nft.ListRules(ctx, "")
		if err != nil {
			return nil, err
		}
		for _, rl := range rules {
			c := m.chains[rl.Chain]
			if c == nil {
				c = &chainT{listed: true}
				m.chains[rl.Chain] = c
			}
			comment := ""
			if rl.Comment != nil {
				comment = *rl.Comment
			}
			c.rules = append(c.rules, ruleT{comment: comment})
		}
	}
	for _, kind := range []string{"set", "map"} {
		for _, n := range all[kind] {
			s := &setT{setShape: setShape{isMap: kind == "map"}, elems: map[string]elemT{}}
			els, err := d.nft.ListElements(ctx, kind, n)
			if err != nil {
				return nil, err
			}
			s.listedCount = len(els)
			for _, e := range els {
				if slices.Contains(e.Key, "") {
					// knftables cannot parse interval concatenations
					// back; such a map is compared by size.
					s.opaque = true
				}
				s.elems[elemKey(e.Key)] = elemT{key: e.Key, value: e.Value}
			}
			m.sets[n] = s
		}
	}
	return m, nil
}
