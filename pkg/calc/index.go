package calc

import (
	"slices"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/selector"
)

// The label index answers, incrementally, "which labelled items does each
// selector in use match". Evaluating every selector against every item is
// what must never happen on an update: with 100k endpoints and thousands of
// selectors that is hundreds of millions of evaluations. Instead each
// selector is reduced to a hint, a set of label terms one of which an item
// must carry for the selector to possibly match (`a == "x" && b != "y"`
// needs a=x; `a in {x, y} || has(b)` needs a=x, a=y or b=anything). Hinted
// selectors are filed under their terms, so a changed item is evaluated only
// against the selectors filed under its own labels plus the few selectors
// that have no hint (`!has(x)`, `all()`). The other way round, items are
// filed by value under every label key some hint uses, so a new selector is
// evaluated only against the items that carry one of its terms. The
// per-key item index is built when the first hint needs the key and dropped
// with the last, so labels no selector looks at cost nothing.

// term is one way an item can satisfy a hint: it carries label key, with one
// of values (any value when values is nil).
type term struct {
	key    string
	values []string
}

// hintOf returns the terms one of which every item matching e carries, and
// false when there is no such finite list. Of the operands of an &&, it
// files the selector under the one that the fewest items satisfy now.
func (ix *index) hintOf(e selector.Expr) ([]term, bool) {
	switch e.Op {
	case selector.OpEqual, selector.OpIn:
		return []term{{key: e.Label, values: e.Values}}, true
	case selector.OpHas, selector.OpContains, selector.OpStartsWith, selector.OpEndsWith:
		return []term{{key: e.Label}}, true
	case selector.OpAnd:
		var best []term
		found := false
		bestCost := 0
		for _, a := range e.Args {
			h, ok := ix.hintOf(a)
			if !ok {
				continue
			}
			if c := ix.hintCost(h); !found || c < bestCost {
				best, bestCost, found = h, c, true
			}
		}
		return best, found
	case selector.OpOr:
		var all []term
		for _, a := range e.Args {
			h, ok := ix.hintOf(a)
			if !ok {
				return nil, false
			}
			all = append(all, h...)
		}
		return all, true
	}
	return nil, false
}

// hintCost is how many items a hint admits, counted exactly, times a
// small factor that breaks ties against labels every namespaced thing
// carries (namespace, inherited namespace and service account labels):
// those are poor hints whenever the counts do not say otherwise yet.
func (ix *index) hintCost(h []term) int {
	c := 0
	for _, t := range h {
		n := 0
		if t.values == nil {
			n = ix.keyCount[t.key]
		} else {
			for _, v := range t.values {
				n += ix.valueCount[t.key][v]
			}
		}
		w := 2
		if coarseLabel(t.key) {
			w = 3
		}
		c += (2*n + 1) * w
	}
	return c
}

func coarseLabel(key string) bool {
	return key == LabelNamespace || key == LabelServiceAccount || key == v3.LabelOrchestrator ||
		strings.HasPrefix(key, NamespaceLabelPrefix) || strings.HasPrefix(key, ServiceAccountPrefix)
}

type itemSet map[*item]struct{}

type selSet map[*selEntry]struct{}

// selEntry is one distinct selector (by canonical form) in use in an index.
type selEntry struct {
	id      string
	sel     selector.Selector
	hint    []term
	hinted  bool
	refs    int
	matches itemSet

	// Owners, notified of matches. Policies own entries of the policy index,
	// IP sets entries of the IP set index.
	policies map[*policyState]struct{}
	sets     map[*ipsetState]struct{}
}

// keyIndex files items by the value of one label key.
type keyIndex struct {
	refs    int
	byValue map[string]itemSet
}

// matchChange says whether a selector started or stopped matching an item.
type matchChange uint8

const (
	matchStarted matchChange = iota
	matchEnded
)

// matchFunc is told of every match that starts or ends in an index.
type matchFunc func(e *selEntry, it *item, change matchChange)

// index is a label index over one universe of items: the IP set index
// holds every labelled thing in the cluster, the policy index only the
// endpoints of this host.
type index struct {
	slot int // which of item.matches belongs to this index

	items    itemSet
	sels     map[string]*selEntry
	keys     map[string]*keyIndex
	selByKV  map[string]map[string]selSet
	selByKey map[string]selSet
	unhinted selSet
	// How many items carry each label key and key=value: what picking the
	// most selective hint of a new selector needs, for much less memory
	// than filing every item under every label.
	keyCount   map[string]int
	valueCount map[string]map[string]int
	onMatch    matchFunc
	scratch    selSet
	evalCount  int // selector evaluations, for tests of incrementality
}

func newIndex(slot int, onMatch matchFunc) *index {
	return &index{
		slot:       slot,
		items:      itemSet{},
		sels:       map[string]*selEntry{},
		keys:       map[string]*keyIndex{},
		selByKV:    map[string]map[string]selSet{},
		selByKey:   map[string]selSet{},
		unhinted:   selSet{},
		keyCount:   map[string]int{},
		valueCount: map[string]map[string]int{},
		onMatch:    onMatch,
		scratch:    selSet{},
	}
}

func (ix *index) eval(e *selEntry, it *item) bool {
	ix.evalCount++
	return e.sel.Evaluate(it.labels)
}

// acquire returns the entry for sel, creating it (and finding its matches)
// when sel is new. Owners attach to the entry and then read its matches; no
// callback is made for matches found here.
func (ix *index) acquire(sel selector.Selector) *selEntry {
	id := sel.UniqueID()
	if e := ix.sels[id]; e != nil {
		e.refs++
		return e
	}
	e := &selEntry{id: id, sel: sel, refs: 1, matches: itemSet{}}
	e.hint, e.hinted = ix.hintOf(selector.Tree(sel))
	ix.sels[id] = e
	if !e.hinted {
		ix.unhinted[e] = struct{}{}
		for it := range ix.items {
			if ix.eval(e, it) {
				ix.link(e, it)
			}
		}
		return e
	}
	for _, t := range e.hint {
		ki := ix.refKey(t.key)
		if t.values == nil {
			addSel(ix.selByKey, t.key, e)
			for _, items := range ki.byValue {
				ix.evalAll(e, items)
			}
			continue
		}
		m := ix.selByKV[t.key]
		if m == nil {
			m = map[string]selSet{}
			ix.selByKV[t.key] = m
		}
		for _, v := range t.values {
			addSel(m, v, e)
			ix.evalAll(e, ki.byValue[v])
		}
	}
	return e
}

func (ix *index) evalAll(e *selEntry, items itemSet) {
	for it := range items {
		if _, done := e.matches[it]; !done && ix.eval(e, it) {
			ix.link(e, it)
		}
	}
}

// link records that e matches it; it must not be linked to e already (the
// callers check e.matches first).
func (ix *index) link(e *selEntry, it *item) {
	e.matches[it] = struct{}{}
	it.matches[ix.slot] = append(it.matches[ix.slot], e)
}

func (ix *index) unlink(e *selEntry, it *item) {
	delete(e.matches, it)
	it.matches[ix.slot].remove(e)
}

// selList is the selectors one item matches in one index. An item matches
// few as a rule, so it is a slice: a map per item was 17 MB at 100,000
// endpoints. Removing is linear in its length.
type selList []*selEntry

func (l *selList) remove(e *selEntry) {
	s := *l
	i := slices.Index(s, e)
	if i < 0 {
		return
	}
	last := len(s) - 1
	s[i], s[last] = s[last], nil
	if *l = s[:last]; last == 0 {
		*l = nil
	}
}

func addSel(m map[string]selSet, k string, e *selEntry) {
	s := m[k]
	if s == nil {
		s = selSet{}
		m[k] = s
	}
	s[e] = struct{}{}
}

func delSel(m map[string]selSet, k string, e *selEntry) {
	if s := m[k]; s != nil {
		delete(s, e)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

// release drops one reference to e; the last one forgets the selector. The
// owners must have detached (and undone their use of the matches) already.
func (ix *index) release(e *selEntry) {
	e.refs--
	if e.refs > 0 {
		return
	}
	for it := range e.matches {
		ix.unlink(e, it)
	}
	delete(ix.sels, e.id)
	if !e.hinted {
		delete(ix.unhinted, e)
		return
	}
	for _, t := range e.hint {
		if t.values == nil {
			delSel(ix.selByKey, t.key, e)
		} else if m := ix.selByKV[t.key]; m != nil {
			for _, v := range t.values {
				delSel(m, v, e)
			}
			if len(m) == 0 {
				delete(ix.selByKV, t.key)
			}
		}
		ix.unrefKey(t.key)
	}
}

// refKey returns the item index of key, building it on first use.
func (ix *index) refKey(key string) *keyIndex {
	ki := ix.keys[key]
	if ki == nil {
		ki = &keyIndex{byValue: map[string]itemSet{}}
		for it := range ix.items {
			if v, ok := it.labels[key]; ok {
				fileItem(ki, v, it)
			}
		}
		ix.keys[key] = ki
	}
	ki.refs++
	return ki
}

func (ix *index) unrefKey(key string) {
	ki := ix.keys[key]
	ki.refs--
	if ki.refs == 0 {
		delete(ix.keys, key)
	}
}

func (ix *index) countLabel(k, v string, d int) {
	ix.keyCount[k] += d
	if ix.keyCount[k] == 0 {
		delete(ix.keyCount, k)
	}
	m := ix.valueCount[k]
	if m == nil {
		m = map[string]int{}
		ix.valueCount[k] = m
	}
	m[v] += d
	if m[v] == 0 {
		delete(m, v)
		if len(m) == 0 {
			delete(ix.valueCount, k)
		}
	}
}

func fileItem(ki *keyIndex, v string, it *item) {
	s := ki.byValue[v]
	if s == nil {
		s = itemSet{}
		ki.byValue[v] = s
	}
	s[it] = struct{}{}
}

func unfileItem(ki *keyIndex, v string, it *item) {
	if s := ki.byValue[v]; s != nil {
		delete(s, it)
		if len(s) == 0 {
			delete(ki.byValue, v)
		}
	}
}

// candidates collects into ix.scratch the selectors that may match labels.
func (ix *index) candidates(labels map[string]string) selSet {
	c := ix.scratch
	clear(c)
	for e := range ix.unhinted {
		c[e] = struct{}{}
	}
	for k, v := range labels {
		for e := range ix.selByKey[k] {
			c[e] = struct{}{}
		}
		if m := ix.selByKV[k]; m != nil {
			for e := range m[v] {
				c[e] = struct{}{}
			}
		}
	}
	return c
}

// add puts it (with its current labels) into the index.
func (ix *index) add(it *item) {
	ix.items[it] = struct{}{}
	for k, v := range it.labels {
		ix.countLabel(k, v, +1)
		if ki := ix.keys[k]; ki != nil {
			fileItem(ki, v, it)
		}
	}
	var started []*selEntry
	for e := range ix.candidates(it.labels) {
		if ix.eval(e, it) {
			started = append(started, e)
		}
	}
	for _, e := range started {
		ix.link(e, it)
		ix.onMatch(e, it, matchStarted)
	}
}

// remove takes it out of the index, reporting the end of every match.
func (ix *index) remove(it *item) {
	matched := it.matches[ix.slot]
	it.matches[ix.slot] = nil
	for _, e := range matched {
		delete(e.matches, it)
		ix.onMatch(e, it, matchEnded)
	}
	for k, v := range it.labels {
		ix.countLabel(k, v, -1)
		if ki := ix.keys[k]; ki != nil {
			unfileItem(ki, v, it)
		}
	}
	delete(ix.items, it)
}

// relabel re-files it, whose labels changed from old to it.labels, and
// reports the matches that started and ended.
func (ix *index) relabel(it *item, old map[string]string) {
	for k, v := range old {
		if nv, ok := it.labels[k]; !ok || nv != v {
			ix.countLabel(k, v, -1)
			if ki := ix.keys[k]; ki != nil {
				unfileItem(ki, v, it)
			}
		}
	}
	for k, v := range it.labels {
		if ov, ok := old[k]; !ok || ov != v {
			ix.countLabel(k, v, +1)
			if ki := ix.keys[k]; ki != nil {
				fileItem(ki, v, it)
			}
		}
	}
	cand := ix.candidates(it.labels)
	// Current matches that are not candidates any more no longer match.
	var ended []*selEntry
	for _, e := range it.matches[ix.slot] {
		if _, ok := cand[e]; !ok || !ix.eval(e, it) {
			ended = append(ended, e)
		}
		delete(cand, e) // still matching (or just handled)
	}
	var started []*selEntry
	for e := range cand {
		if ix.eval(e, it) {
			started = append(started, e)
		}
	}
	// Starts before ends, so an owner that sees the item move from one of
	// its selectors to another never drops to zero in between.
	for _, e := range started {
		ix.link(e, it)
		ix.onMatch(e, it, matchStarted)
	}
	for _, e := range ended {
		ix.unlink(e, it)
		ix.onMatch(e, it, matchEnded)
	}
}
