package selector

import "strings"

// Op is the kind of one node of a selector's expression tree.
type Op int

const (
	OpAll        Op = iota // all()
	OpGlobal               // global()
	OpHas                  // has(Label)
	OpEqual                // Label == Values[0]
	OpNotEqual             // Label != Values[0]
	OpContains             // Label contains Values[0]
	OpStartsWith           // Label starts with Values[0]
	OpEndsWith             // Label ends with Values[0]
	OpIn                   // Label in {Values...}
	OpNotIn                // Label not in {Values...}
	OpNot                  // !Args[0]
	OpAnd                  // Args[0] && Args[1] && ...
	OpOr                   // Args[0] || Args[1] || ...
)

// Expr is an exported, mutable copy of a parsed selector's tree. Consumers
// walk it to learn which labels a selector needs (to index selectors by
// label) or rewrite it (to move a namespaceSelector onto the labels
// endpoints inherit from their namespace) and re-parse its String().
type Expr struct {
	Op     Op
	Label  string   // for comparisons and has()
	Values []string // one value for comparisons, the set for in / not in
	Args   []Expr   // operands of !, && and ||
}

// Tree returns a copy of s's expression tree; changing it never changes s.
// A Selector that was not made by this package yields all().
func Tree(s Selector) Expr {
	c, ok := s.(*compiled)
	if !ok {
		return Expr{Op: OpAll}
	}
	return toExpr(c.root)
}

func toExpr(n node) Expr {
	switch n := n.(type) {
	case allNode:
		return Expr{Op: OpAll}
	case globalNode:
		return Expr{Op: OpGlobal}
	case *hasNode:
		return Expr{Op: OpHas, Label: n.label}
	case *eqNode:
		return Expr{Op: OpEqual, Label: n.label, Values: []string{n.value}}
	case *neNode:
		return Expr{Op: OpNotEqual, Label: n.label, Values: []string{n.value}}
	case *containsNode:
		return Expr{Op: OpContains, Label: n.label, Values: []string{n.value}}
	case *startsWithNode:
		return Expr{Op: OpStartsWith, Label: n.label, Values: []string{n.value}}
	case *endsWithNode:
		return Expr{Op: OpEndsWith, Label: n.label, Values: []string{n.value}}
	case *inNode:
		return Expr{Op: OpIn, Label: n.label, Values: append([]string(nil), n.values...)}
	case *notInNode:
		return Expr{Op: OpNotIn, Label: n.label, Values: append([]string(nil), n.values...)}
	case *notNode:
		return Expr{Op: OpNot, Args: []Expr{toExpr(n.x)}}
	case *andNode:
		return Expr{Op: OpAnd, Args: toExprs(n.ops)}
	case *orNode:
		return Expr{Op: OpOr, Args: toExprs(n.ops)}
	}
	panic("selector: unknown node type")
}

func toExprs(ns []node) []Expr {
	out := make([]Expr, len(ns))
	for i, n := range ns {
		out[i] = toExpr(n)
	}
	return out
}

// String renders e in the selector language. For a tree returned by Tree it
// is the canonical form of the selector; for a rewritten tree Parse(String())
// gives the selector it describes (and fails, as Parse does, on label names
// the language does not allow).
func (e Expr) String() string {
	var b strings.Builder
	e.write(&b)
	return b.String()
}

func (e Expr) write(b *strings.Builder) {
	value := func() string {
		if len(e.Values) > 0 {
			return e.Values[0]
		}
		return ""
	}
	switch e.Op {
	case OpAll:
		b.WriteString("all()")
	case OpGlobal:
		b.WriteString("global()")
	case OpHas:
		(&hasNode{label: e.Label}).write(b)
	case OpEqual:
		writeCmp(b, e.Label, " == ", value())
	case OpNotEqual:
		writeCmp(b, e.Label, " != ", value())
	case OpContains:
		writeCmp(b, e.Label, " contains ", value())
	case OpStartsWith:
		writeCmp(b, e.Label, " starts with ", value())
	case OpEndsWith:
		writeCmp(b, e.Label, " ends with ", value())
	case OpIn, OpNotIn:
		b.WriteString(e.Label)
		if e.Op == OpIn {
			b.WriteString(" in ")
		} else {
			b.WriteString(" not in ")
		}
		valueSet(e.Values).write(b)
	case OpNot:
		b.WriteByte('!')
		if len(e.Args) != 1 {
			b.WriteString("all()")
			return
		}
		// Comparisons and groups bind to a leading "!" as they print; only
		// a doubled negation needs parentheses, since "!!x" reads as x.
		if e.Args[0].Op == OpNot {
			b.WriteByte('(')
			e.Args[0].write(b)
			b.WriteByte(')')
			return
		}
		e.Args[0].write(b)
	case OpAnd, OpOr:
		sep := " && "
		if e.Op == OpOr {
			sep = " || "
		}
		if len(e.Args) == 0 {
			b.WriteString("all()")
			return
		}
		b.WriteByte('(')
		for i, a := range e.Args {
			if i > 0 {
				b.WriteString(sep)
			}
			a.write(b)
		}
		b.WriteByte(')')
	}
}
