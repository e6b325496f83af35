package nft

import (
	"slices"
	"strings"

	"sigs.k8s.io/knftables"
)

// The driver keeps two models of its table: want, what the desired state
// renders to, and have, what the kernel holds as far as the driver knows
// (after a successful transaction, or as listed by a full sync). A sync is
// the diff of the two over the objects marked dirty, in one transaction.

type ruleT struct {
	text, comment string
}

type elemT struct {
	key, value []string
}

// baseSpec makes a chain a base chain.
type baseSpec struct {
	typ  knftables.BaseChainType
	hook knftables.BaseChainHook
	prio knftables.BaseChainPriority
}

type chainT struct {
	base  *baseSpec
	rules []ruleT
	// listed: the rules came from listing the kernel, which gives comments
	// but not rule text; compare comments only.
	listed bool
}

// setShape is what a set or map is, as the kernel declares it: its type
// (e.g. "ipv4_addr", "ifname : verdict"), whether it holds intervals
// (flags interval) and whether it is a map.
type setShape struct {
	typ             string
	interval, isMap bool
}

// classMapShape is the shape of a program's port class map.
var classMapShape = setShape{typ: "inet_service . inet_proto : verdict", interval: true, isMap: true}

// flags are the set's flags as knftables writes them.
func (s setShape) flags() []knftables.SetFlag {
	if s.interval {
		return []knftables.SetFlag{knftables.IntervalFlag}
	}
	return nil
}

type setT struct {
	setShape
	comment string
	elems   map[string]elemT
	// opaque: listed from the kernel in a form that cannot be compared
	// element by element; compare sizes.
	opaque      bool
	listedCount int

	// of and was make a set of have a view of a set of want (shadow), not
	// a copy: what the kernel holds is of's elements (the very map, elems)
	// as they were at the last sync, and was keeps, for each element want
	// changed since, what it was then. A first sync of 100,000 elements
	// would otherwise keep them twice.
	of  *setT
	was map[string]wasT
}

// wasT is an element as the kernel has it, ok false if it has none.
type wasT struct {
	e  elemT
	ok bool
}

// shadow is a set of have that is what w holds now.
func (w *setT) shadow() *setT {
	return &setT{setShape: w.setShape, comment: w.comment, elems: w.elems, of: w}
}

// elem is the element k as h (a set of have) holds it.
func (h *setT) elem(k string) (elemT, bool) {
	if x, ok := h.was[k]; ok {
		return x.e, x.ok
	}
	e, ok := h.elems[k]
	return e, ok
}

// keys calls f with each key h (a set of have) holds.
func (h *setT) keys(f func(k string)) {
	for k := range h.elems {
		if x, ok := h.was[k]; !ok || x.ok {
			f(k)
		}
	}
	for k, x := range h.was {
		if _, inElems := h.elems[k]; x.ok && !inElems {
			f(k)
		}
	}
}

// changing records, in the have set h that shadows w, what element k is
// before w changes it (once per sync: the first value is the kernel's).
func (h *setT) changing(w *setT, k string) {
	if h == nil || h.of != w {
		return
	}
	if _, noted := h.was[k]; noted {
		return
	}
	if h.was == nil {
		h.was = map[string]wasT{}
	}
	e, ok := w.elems[k]
	h.was[k] = wasT{e, ok}
}

type tableModel struct {
	chains map[string]*chainT
	sets   map[string]*setT
}

func newTableModel() *tableModel {
	return &tableModel{chains: map[string]*chainT{}, sets: map[string]*setT{}}
}

// elemKey is an element's identity in a set or map, normalised to how nft
// prints it, so listed elements compare equal to rendered ones.
func elemKey(key []string) string {
	parts := make([]string, len(key))
	for i, k := range key {
		k = strings.TrimSuffix(k, "/32")
		k = strings.TrimSuffix(k, "/128")
		if a, b, ok := strings.Cut(k, "-"); ok && a == b {
			k = a
		}
		parts[i] = k
	}
	return strings.Join(parts, " . ")
}

func sameRules(want, have *chainT) bool {
	if len(want.rules) != len(have.rules) {
		return false
	}
	for i := range want.rules {
		if want.rules[i].comment != have.rules[i].comment {
			return false
		}
		if !have.listed && !want.listed && want.rules[i].text != have.rules[i].text {
			return false
		}
	}
	return true
}

// dirtySet tracks what changed in want since the last sync.
type dirtySet struct {
	chains map[string]struct{}
	sets   map[string]struct{}
	// elems are the changed element keys of sets that are not themselves
	// dirty as a whole.
	elems map[string]map[string]struct{}
}

func newDirty() *dirtySet {
	return &dirtySet{chains: map[string]struct{}{}, sets: map[string]struct{}{}, elems: map[string]map[string]struct{}{}}
}

func (d *dirtySet) empty() bool {
	return len(d.chains) == 0 && len(d.sets) == 0 && len(d.elems) == 0
}

// elem marks one element of set changed. A set dirty as a whole is
// compared whole at the next sync, so its elements are not recorded one by
// one: a new set's first members would otherwise be kept twice until then.
func (d *dirtySet) elem(set, key string) {
	if _, whole := d.sets[set]; whole {
		return
	}
	m := d.elems[set]
	if m == nil {
		m = map[string]struct{}{}
		d.elems[set] = m
	}
	m[key] = struct{}{}
}

// setChain puts a chain in want. Its rules may be shared with a program
// (they are never changed in place): a rule whose comment comment() would
// change is fixed in a copy.
func (d *Driver) setChain(name string, c *chainT) {
	copied := false
	for i := range c.rules {
		cm := comment(c.rules[i].comment)
		if cm == c.rules[i].comment {
			continue
		}
		if !copied {
			c.rules, copied = slices.Clone(c.rules), true
		}
		c.rules[i].comment = cm
	}
	d.want.chains[name] = c
	d.dirty.chains[name] = struct{}{}
}

func (d *Driver) delChain(name string) {
	delete(d.want.chains, name)
	d.dirty.chains[name] = struct{}{}
}

// ensureSet puts an empty set or map in want if it is not there.
func (d *Driver) ensureSet(name string, shape setShape, text string) *setT {
	s := d.want.sets[name]
	if s == nil {
		s = &setT{setShape: shape, comment: comment(text), elems: map[string]elemT{}}
		d.want.sets[name] = s
		d.dirty.sets[name] = struct{}{}
	}
	return s
}

func (d *Driver) delSet(name string) {
	if _, ok := d.want.sets[name]; ok {
		delete(d.want.sets, name)
		d.dirty.sets[name] = struct{}{}
	}
}

// setElem adds or changes (value != nil for a map) an element in want.
func (d *Driver) setElem(set string, key, value []string) {
	s := d.want.sets[set]
	k := elemKey(key)
	if old, ok := s.elems[k]; ok && slices.Equal(old.value, value) {
		return
	}
	d.have.sets[set].changing(s, k)
	s.elems[k] = elemT{key: key, value: value}
	d.dirty.elem(set, k)
}

func (d *Driver) delElem(set string, key []string) {
	s := d.want.sets[set]
	if s == nil {
		return
	}
	k := elemKey(key)
	if _, ok := s.elems[k]; ok {
		d.have.sets[set].changing(s, k)
		delete(s.elems, k)
		d.dirty.elem(set, k)
	}
}
