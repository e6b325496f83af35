package selector

import (
	"slices"
	"strings"
)

// node is one compiled piece of a selector. Keeping evaluation and printing on
// the same small types lets the canonical form follow the tree exactly, so a
// printed selector re-parses to the same tree.
type node interface {
	eval(labels map[string]string) bool
	write(b *strings.Builder)
}

type allNode struct{}

func (allNode) eval(map[string]string) bool { return true }
func (allNode) write(b *strings.Builder)    { b.WriteString("all()") }

// globalNode matches like all(); the distinction only matters to the policy
// layer (a namespaceSelector of global() selects non-namespaced things), so it
// must survive into the canonical form.
type globalNode struct{}

func (globalNode) eval(map[string]string) bool { return true }
func (globalNode) write(b *strings.Builder)    { b.WriteString("global()") }

type hasNode struct{ label string }

func (n *hasNode) eval(l map[string]string) bool {
	_, ok := l[n.label]
	return ok
}

func (n *hasNode) write(b *strings.Builder) {
	b.WriteString("has(")
	b.WriteString(n.label)
	b.WriteByte(')')
}

type eqNode struct{ label, value string }

func (n *eqNode) eval(l map[string]string) bool {
	v, ok := l[n.label]
	return ok && v == n.value
}

func (n *eqNode) write(b *strings.Builder) { writeCmp(b, n.label, " == ", n.value) }

// neNode is true for a missing label: Calico treats "not equal" as the
// complement of "==", so an unlabelled endpoint is selected.
type neNode struct{ label, value string }

func (n *neNode) eval(l map[string]string) bool {
	v, ok := l[n.label]
	return !ok || v != n.value
}

func (n *neNode) write(b *strings.Builder) { writeCmp(b, n.label, " != ", n.value) }

type containsNode struct{ label, value string }

func (n *containsNode) eval(l map[string]string) bool {
	v, ok := l[n.label]
	return ok && strings.Contains(v, n.value)
}

func (n *containsNode) write(b *strings.Builder) { writeCmp(b, n.label, " contains ", n.value) }

type startsWithNode struct{ label, value string }

func (n *startsWithNode) eval(l map[string]string) bool {
	v, ok := l[n.label]
	return ok && strings.HasPrefix(v, n.value)
}

func (n *startsWithNode) write(b *strings.Builder) { writeCmp(b, n.label, " starts with ", n.value) }

type endsWithNode struct{ label, value string }

func (n *endsWithNode) eval(l map[string]string) bool {
	v, ok := l[n.label]
	return ok && strings.HasSuffix(v, n.value)
}

func (n *endsWithNode) write(b *strings.Builder) { writeCmp(b, n.label, " ends with ", n.value) }

// valueSet is sorted and de-duplicated at parse time: the canonical form needs
// that order anyway, and it allows a binary search for big sets without
// building a map per selector.
type valueSet []string

// linearSetMax is where a plain scan stops beating binary search; short
// string compares are cheap and most sets in real policies have 1–3 values.
const linearSetMax = 8

func (s valueSet) contains(v string) bool {
	if len(s) <= linearSetMax {
		for _, x := range s {
			if x == v {
				return true
			}
		}
		return false
	}
	_, found := slices.BinarySearch(s, v)
	return found
}

func (s valueSet) write(b *strings.Builder) {
	b.WriteByte('{')
	for i, v := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		writeQuoted(b, v)
	}
	b.WriteByte('}')
}

type inNode struct {
	label  string
	values valueSet
}

func (n *inNode) eval(l map[string]string) bool {
	v, ok := l[n.label]
	return ok && n.values.contains(v)
}

func (n *inNode) write(b *strings.Builder) {
	b.WriteString(n.label)
	b.WriteString(" in ")
	n.values.write(b)
}

// notInNode, like neNode, selects endpoints that lack the label.
type notInNode struct {
	label  string
	values valueSet
}

func (n *notInNode) eval(l map[string]string) bool {
	v, ok := l[n.label]
	return !ok || !n.values.contains(v)
}

func (n *notInNode) write(b *strings.Builder) {
	b.WriteString(n.label)
	b.WriteString(" not in ")
	n.values.write(b)
}

type notNode struct{ x node }

func (n *notNode) eval(l map[string]string) bool { return !n.x.eval(l) }

// write relies on And/Or printing their own parentheses, so "!" never needs
// to add any: `!a == "x"` re-parses as the negated comparison.
func (n *notNode) write(b *strings.Builder) {
	b.WriteByte('!')
	n.x.write(b)
}

type andNode struct{ ops []node }

func (n *andNode) eval(l map[string]string) bool {
	for _, op := range n.ops {
		if !op.eval(l) {
			return false
		}
	}
	return true
}

func (n *andNode) write(b *strings.Builder) { writeGroup(b, n.ops, " && ") }

type orNode struct{ ops []node }

func (n *orNode) eval(l map[string]string) bool {
	for _, op := range n.ops {
		if op.eval(l) {
			return true
		}
	}
	return false
}

func (n *orNode) write(b *strings.Builder) { writeGroup(b, n.ops, " || ") }

// writeGroup always parenthesises, even at the top level, because that is
// Calico's canonical form and unique IDs must agree with it.
func writeGroup(b *strings.Builder, ops []node, sep string) {
	b.WriteByte('(')
	for i, op := range ops {
		if i > 0 {
			b.WriteString(sep)
		}
		op.write(b)
	}
	b.WriteByte(')')
}

func writeCmp(b *strings.Builder, label, op, value string) {
	b.WriteString(label)
	b.WriteString(op)
	writeQuoted(b, value)
}

// writeQuoted picks the quote character the value cannot contain. The
// language has no escapes, so a literal never holds both kinds of quote.
func writeQuoted(b *strings.Builder, v string) {
	q := byte('"')
	if strings.IndexByte(v, '"') >= 0 {
		q = '\''
	}
	b.WriteByte(q)
	b.WriteString(v)
	b.WriteByte(q)
}
