package selector

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxLabelLength is the longest label name the language accepts, matching
// Calico so that a selector valid there is valid here and vice versa.
const MaxLabelLength = 512

// maxNesting bounds parenthesis depth. Calico has no limit, but unbounded
// recursion on hostile input could exhaust the stack of an API server, and no
// sensible selector comes close.
const maxNesting = 256

// ParseError says where a selector stopped making sense. Pos is a 0-based
// byte offset into Expr.
type ParseError struct {
	Expr     string
	Pos      int
	Expected string
	Found    string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("selector %q: at character %d: expected %s, found %s", e.Expr, e.Pos, e.Expected, e.Found)
}

const (
	expOperand    = "a label, has(…), all(), global(), '!' or '('"
	expOperator   = "an operator (==, !=, in, not in, contains, starts with, ends with)"
	expString     = "a quoted string"
	expLabel      = "a label name"
	expEnd        = "'&&', '||' or end of input"
	expCloseGroup = "'&&', '||' or ')'"
)

type parser struct {
	s     string
	pos   int
	depth int
}

func parse(expr string) (node, error) {
	p := parser{s: expr}
	p.skipWS()
	if p.pos == len(p.s) {
		return allNode{}, nil
	}
	n, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	p.skipWS()
	if p.pos != len(p.s) {
		return nil, p.fail(expEnd)
	}
	return n, nil
}

// fail reports an error at the current position, describing what is there.
func (p *parser) fail(expected string) *ParseError {
	return p.failAt(p.pos, expected, p.describe(p.pos))
}

func (p *parser) failAt(pos int, expected, found string) *ParseError {
	return &ParseError{Expr: p.s, Pos: pos, Expected: expected, Found: found}
}

// describe names the token at pos well enough for a person to spot it, without
// echoing the rest of a possibly long expression.
func (p *parser) describe(pos int) string {
	if pos >= len(p.s) {
		return "end of input"
	}
	rest := p.s[pos:]
	switch c := rest[0]; {
	case isLabelChar(c):
		n := 0
		for n < len(rest) && isLabelChar(rest[n]) {
			n++
		}
		if n > 40 {
			return fmt.Sprintf("a %d-character label", n)
		}
		return strconv.Quote(rest[:n])
	case c == '"' || c == '\'':
		if end := strings.IndexByte(rest[1:], c); end >= 0 && end <= 40 {
			return "string " + rest[:end+2]
		}
		return "a string"
	}
	for _, two := range []string{"&&", "||", "==", "!="} {
		if strings.HasPrefix(rest, two) {
			return strconv.Quote(two)
		}
	}
	r := []rune(rest[:min(len(rest), 4)])
	return strconv.Quote(string(r[0]))
}

func (p *parser) skipWS() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *parser) peek(prefix string) bool { return strings.HasPrefix(p.s[p.pos:], prefix) }

// word consumes w only when it is a whole word, so that `inf` is not read as
// the operator `in` followed by junk.
func (p *parser) word(w string) bool {
	if !p.peek(w) {
		return false
	}
	end := p.pos + len(w)
	if end < len(p.s) && isLabelChar(p.s[end]) {
		return false
	}
	p.pos = end
	return true
}

func isLabelChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == '-'
}

// parseOr: and-expressions joined by "||", the loosest operator.
func (p *parser) parseOr() (node, error) {
	first, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	// Collecting into a stack buffer and copying once keeps typical groups
	// to a single allocation for the operand list.
	var buf [8]node
	ops := append(buf[:0], first)
	for {
		p.skipWS()
		if !p.peek("||") {
			break
		}
		p.pos += 2
		next, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		ops = append(ops, next)
	}
	if len(ops) == 1 {
		return first, nil
	}
	return &orNode{ops: append([]node(nil), ops...)}, nil
}

func (p *parser) parseAnd() (node, error) {
	first, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	// Collecting into a stack buffer and copying once keeps typical groups
	// to a single allocation for the operand list.
	var buf [8]node
	ops := append(buf[:0], first)
	for {
		p.skipWS()
		if !p.peek("&&") {
			break
		}
		p.pos += 2
		next, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		ops = append(ops, next)
	}
	if len(ops) == 1 {
		return first, nil
	}
	return &andNode{ops: append([]node(nil), ops...)}, nil
}

// parseUnary applies any run of "!" to the single term that follows, so
// `!a == "x"` negates the comparison rather than the label.
func (p *parser) parseUnary() (node, error) {
	negate := false
	for {
		p.skipWS()
		if p.peek("!") && !p.peek("!=") {
			negate = !negate
			p.pos++
			continue
		}
		break
	}
	t, err := p.parseTerm()
	if err != nil {
		return nil, err
	}
	if !negate {
		return t, nil
	}
	// Cancelling a negation that came from inside parentheses keeps the
	// canonical form a fixed point: `!(!x)` would otherwise print as `!!x`,
	// which re-parses (and prints) as `x`.
	if n, ok := t.(*notNode); ok {
		return n.x, nil
	}
	return &notNode{x: t}, nil
}

func (p *parser) parseTerm() (node, error) {
	p.skipWS()
	if p.pos == len(p.s) {
		return nil, p.fail(expOperand)
	}
	switch {
	case p.s[p.pos] == '(':
		if p.depth >= maxNesting {
			return nil, p.failAt(p.pos, fmt.Sprintf("at most %d nested parentheses", maxNesting), strconv.Quote("("))
		}
		p.depth++
		p.pos++
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		p.skipWS()
		if !p.peek(")") {
			return nil, p.fail(expCloseGroup)
		}
		p.pos++
		p.depth--
		return n, nil
	case p.peek("has("):
		p.pos += len("has(")
		p.skipWS()
		label, err := p.parseLabel()
		if err != nil {
			return nil, err
		}
		if err := p.closeParen(); err != nil {
			return nil, err
		}
		return &hasNode{label: label}, nil
	case p.peek("all("):
		p.pos += len("all(")
		if err := p.closeParen(); err != nil {
			return nil, err
		}
		return allNode{}, nil
	case p.peek("global("):
		p.pos += len("global(")
		if err := p.closeParen(); err != nil {
			return nil, err
		}
		return globalNode{}, nil
	case isLabelChar(p.s[p.pos]):
		label, err := p.parseLabel()
		if err != nil {
			return nil, err
		}
		return p.parseComparison(label)
	}
	return nil, p.fail(expOperand)
}

func (p *parser) closeParen() error {
	p.skipWS()
	if !p.peek(")") {
		return p.fail("')'")
	}
	p.pos++
	return nil
}

func (p *parser) parseLabel() (string, error) {
	start := p.pos
	for p.pos < len(p.s) && isLabelChar(p.s[p.pos]) {
		p.pos++
	}
	switch n := p.pos - start; {
	case n == 0:
		return "", p.fail(expLabel)
	case n > MaxLabelLength:
		return "", p.failAt(start, fmt.Sprintf("a label name of at most %d characters", MaxLabelLength),
			fmt.Sprintf("a %d-character label", n))
	}
	return p.s[start:p.pos], nil
}

type opKind int

const (
	opEq opKind = iota
	opNe
	opContains
	opStartsWith
	opEndsWith
	opIn
	opNotIn
)

func (p *parser) parseComparison(label string) (node, error) {
	p.skipWS()
	opPos := p.pos
	op, ok := p.parseOperator()
	if !ok {
		return nil, p.failAt(opPos, expOperator, p.describe(opPos))
	}
	if op == opIn || op == opNotIn {
		set, err := p.parseSet()
		if err != nil {
			return nil, err
		}
		if op == opIn {
			return &inNode{label: label, values: set}, nil
		}
		return &notInNode{label: label, values: set}, nil
	}
	v, err := p.parseString(expString)
	if err != nil {
		return nil, err
	}
	switch op {
	case opEq:
		return &eqNode{label: label, value: v}, nil
	case opNe:
		return &neNode{label: label, value: v}, nil
	case opContains:
		return &containsNode{label: label, value: v}, nil
	case opStartsWith:
		return &startsWithNode{label: label, value: v}, nil
	default:
		return &endsWithNode{label: label, value: v}, nil
	}
}

// parseOperator accepts the two-word operators with any spacing between the
// words, including none ("startswith", "notin"), as Calico does.
func (p *parser) parseOperator() (opKind, bool) {
	switch {
	case p.peek("=="):
		p.pos += 2
		return opEq, true
	case p.peek("!="):
		p.pos += 2
		return opNe, true
	case p.word("contains"):
		return opContains, true
	case p.word("in"):
		return opIn, true
	}
	for _, two := range [...]struct {
		first string
		op    opKind
	}{{"starts", opStartsWith}, {"ends", opEndsWith}, {"not", opNotIn}} {
		if !p.peek(two.first) {
			continue
		}
		save := p.pos
		p.pos += len(two.first)
		p.skipWS()
		second := "with"
		if two.op == opNotIn {
			second = "in"
		}
		if p.word(second) {
			return two.op, true
		}
		p.pos = save
		return 0, false
	}
	return 0, false
}

func (p *parser) parseString(expected string) (string, error) {
	p.skipWS()
	if p.pos == len(p.s) || (p.s[p.pos] != '"' && p.s[p.pos] != '\'') {
		return "", p.fail(expected)
	}
	q := p.s[p.pos]
	end := strings.IndexByte(p.s[p.pos+1:], q)
	if end < 0 {
		return "", p.failAt(len(p.s), fmt.Sprintf("%q to close the string opened at character %d", q, p.pos), "end of input")
	}
	v := p.s[p.pos+1 : p.pos+1+end]
	p.pos += end + 2
	return v, nil
}

// parseSet reads `{"a", "b"}`. An empty set and a trailing comma are allowed,
// as in Calico.
func (p *parser) parseSet() (valueSet, error) {
	p.skipWS()
	if !p.peek("{") {
		return nil, p.fail("'{'")
	}
	p.pos++
	var buf [8]string
	vals := buf[:0]
	for {
		p.skipWS()
		if p.peek("}") {
			break
		}
		v, err := p.parseString("a quoted string or '}'")
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
		p.skipWS()
		if p.peek(",") {
			p.pos++
			continue
		}
		if !p.peek("}") {
			return nil, p.fail("',' or '}'")
		}
		break
	}
	p.pos++
	slices.Sort(vals)
	vals = slices.Compact(vals)
	if len(vals) == 0 {
		return nil, nil
	}
	return append(valueSet(nil), vals...), nil
}
