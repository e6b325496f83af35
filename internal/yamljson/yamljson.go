// Package yamljson converts the plain YAML that manifests are written in to
// JSON without the three intermediate forms the general path builds (a YAML
// tree of interface values, its JSON-able copy, and reflection to marshal
// it). Its output is byte for byte what sigs.k8s.io/yaml's
// YAMLToJSONStrict gives for the same input: keys sorted, HTML characters
// escaped, integers as written.
//
// It accepts a deliberately small subset of YAML and declines everything
// else, so that the caller falls back to the general path, which also gives
// the errors:
//
//   - block mappings and sequences (a sequence may sit at its key's
//     indentation), and flow mappings and sequences that end on their line;
//   - keys that are plain or quoted strings; duplicate keys are declined;
//   - single-line scalars: double-quoted without escapes, single-quoted, or
//     plain of letters, digits, spaces and punctuation but for :#,[]{};
//   - plain scalars resolved only where there is no doubt: true, false,
//     null, decimal integers of up to 18 digits, and strings that start with
//     a letter (but are not one of YAML 1.1's other boolean and null words:
//     yes, No, on, OFF, ~, ...) or with one of _/$(, contain a '/'
//     (10.0.0.0/8) or are an IPv4 address;
//   - comments and blank lines; ASCII only, no tabs or carriage returns.
//
// Anchors, aliases, tags, block scalars (| and >), multi-line scalars,
// escapes, floats, octal and hexadecimal numbers, timestamps, complex keys
// and document markers (but a "---" before the content) are all declined.
package yamljson

import (
	"bytes"
	"slices"
	"strings"
)

// Convert returns y as JSON, and false when y is outside the subset (or not
// a mapping at its top): then the caller converts it the general way.
func Convert(y []byte) ([]byte, bool) {
	p := parser{lines: splitLines(y)}
	if len(p.lines) == 0 {
		return nil, false
	}
	top, ok := p.block(p.lines[0].indent)
	if !ok || p.i != len(p.lines) || top.kind != kindMap {
		return nil, false
	}
	out := make([]byte, 0, len(y))
	return top.appendJSON(out), true
}

type kind uint8

const (
	kindNull kind = iota
	kindTrue
	kindFalse
	kindInt
	kindString
	kindMap
	kindSeq
)

// node is a parsed value: a scalar's text (the integer's digits or the
// string), or a collection's children (a mapping's as key, value pairs).
type node struct {
	kind kind
	text string
	kids []node
}

// line is one line with content: not blank and not only a comment.
type line struct {
	indent int
	text   string
}

// splitLines returns the lines with content, or nil if y has a character
// the subset does not allow anywhere (non-ASCII, control characters, tabs)
// or a document marker other than a "---" before the content.
func splitLines(y []byte) []line {
	for _, c := range y {
		if (c < 0x20 && c != '\n') || c >= 0x7f {
			return nil
		}
	}
	s := string(y)
	lines := make([]line, 0, bytes.Count(y, []byte{'\n'})+1)
	started := false
	for len(s) > 0 {
		var t string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			t, s = s[:i], s[i+1:]
		} else {
			t, s = s, ""
		}
		if strings.HasPrefix(t, "---") && len(lines) == 0 && !started && restIsComment(t, 3) {
			started = true // the document's start marker, alone on its line
			continue
		}
		if strings.HasPrefix(t, "---") || strings.HasPrefix(t, "...") || strings.HasPrefix(t, "%") {
			return nil
		}
		n := 0
		for n < len(t) && t[n] == ' ' {
			n++
		}
		if n == len(t) || t[n] == '#' {
			continue
		}
		lines = append(lines, line{indent: n, text: t})
	}
	return lines
}

type parser struct {
	lines []line
	i     int // the line being parsed
}

// block parses the mapping or sequence whose first entry starts at column
// col of the current line (col is past the indentation when the entry
// follows a sequence's "- " on the same line). Its later entries are the
// following lines indented by exactly col.
func (p *parser) block(col int) (node, bool) {
	t := p.lines[p.i].text
	switch {
	case isDash(t, col):
		return p.sequence(col)
	case isKeyStart(t, col):
		return p.mapping(col)
	}
	return node{}, false
}

func (p *parser) sequence(col int) (node, bool) {
	n := node{kind: kindSeq}
	for {
		t := p.lines[p.i].text
		j := skipSpaces(t, col+1)
		var item node
		var ok bool
		switch {
		case j == len(t) || (t[j] == '#' && j > col+1):
			// "-" alone: the item is the block below, or null.
			p.i++
			item, ok = p.below(col, false)
		case isDash(t, j) || isKeyStart(t, j):
			item, ok = p.block(j)
		default:
			item, ok = p.inlineToEnd(t, j, col)
		}
		if !ok {
			return node{}, false
		}
		n.kids = append(n.kids, item)
		if p.i == len(p.lines) {
			return n, true
		}
		next := p.lines[p.i]
		if next.indent > col {
			return node{}, false
		}
		if next.indent < col || !isDash(next.text, col) {
			return n, true
		}
	}
}

func (p *parser) mapping(col int) (node, bool) {
	n := node{kind: kindMap}
	for {
		t := p.lines[p.i].text
		key, j, ok := parseKey(t, col)
		if !ok {
			return node{}, false
		}
		k := skipSpaces(t, j)
		var v node
		switch {
		case k == len(t) || t[k] == '#':
			p.i++
			v, ok = p.below(col, true)
		case isDash(t, k):
			return node{}, false // "key: - x" is not YAML
		default:
			v, ok = p.inlineToEnd(t, k, col)
		}
		if !ok {
			return node{}, false
		}
		n.kids = append(n.kids, node{kind: kindString, text: key}, v)
		if p.i == len(p.lines) {
			break
		}
		next := p.lines[p.i]
		if next.indent > col {
			return node{}, false
		}
		if next.indent < col || isDash(next.text, col) {
			break
		}
	}
	return n.sorted()
}

// below parses the value of a key or dash at column col that has nothing
// after it on its line: the block on the next lines if they are indented
// more (or, for a key, a sequence at the key's own indentation), else null.
func (p *parser) below(col int, key bool) (node, bool) {
	if p.i < len(p.lines) {
		next := p.lines[p.i]
		if next.indent > col {
			return p.block(next.indent)
		}
		if key && next.indent == col && isDash(next.text, col) {
			return p.sequence(col)
		}
	}
	return node{kind: kindNull}, true
}

// inlineToEnd parses the scalar or flow collection at t[j:] that ends the
// line (but for a comment), and moves to the next line, which must not be
// indented past col: a more indented line would continue a multi-line
// scalar.
func (p *parser) inlineToEnd(t string, j, col int) (node, bool) {
	v, k, ok := parseValue(t, j, false)
	if !ok || !restIsComment(t, k) {
		return node{}, false
	}
	p.i++
	if p.i < len(p.lines) && p.lines[p.i].indent > col {
		return node{}, false
	}
	return v, true
}

// parseValue parses the value at t[j:]: quoted, flow, or plain. In flow
// context a plain scalar ends at ',', ']' or '}'. It returns the index
// after the value.
func parseValue(t string, j int, flow bool) (node, int, bool) {
	switch t[j] {
	case '"', '\'':
		s, k, ok := parseQuoted(t, j)
		return node{kind: kindString, text: s}, k, ok
	case '[':
		return parseFlowSeq(t, j)
	case '{':
		return parseFlowMap(t, j)
	}
	k := j
	for k < len(t) {
		c := t[k]
		if c == ' ' {
			// A comment (plain scalars may not hold " #"), or spaces
			// inside the scalar.
			e := skipSpaces(t, k)
			if e == len(t) || t[e] == '#' || (flow && (t[e] == ',' || t[e] == ']' || t[e] == '}')) {
				break
			}
			k = e
			continue
		}
		if flow && (c == ',' || c == ']' || c == '}') {
			break
		}
		if !plainChar(c) {
			return node{}, 0, false
		}
		k++
	}
	v, ok := resolvePlain(t[j:k])
	return v, k, ok
}

func parseFlowSeq(t string, j int) (node, int, bool) {
	n := node{kind: kindSeq}
	k := skipSpaces(t, j+1)
	if k < len(t) && t[k] == ']' {
		return n, k + 1, true
	}
	for k < len(t) {
		v, e, ok := parseValue(t, k, true)
		if !ok {
			return node{}, 0, false
		}
		n.kids = append(n.kids, v)
		var closed bool
		if k, closed, ok = afterEntry(t, e, ']'); !ok {
			return node{}, 0, false
		}
		if closed {
			return n, k, true
		}
	}
	return node{}, 0, false // not closed on its line
}

// afterEntry reads what follows an entry of a flow collection ending in
// closer, from t[e:]: the closer (closed, and k after it) or a comma and
// the next entry's start. An empty or trailing entry, anything else, or
// the end of the line is not ok.
func afterEntry(t string, e int, closer byte) (k int, closed, ok bool) {
	k = skipSpaces(t, e)
	if k == len(t) {
		return 0, false, false
	}
	switch t[k] {
	case closer:
		return k + 1, true, true
	case ',':
		k = skipSpaces(t, k+1)
		return k, false, k < len(t) && t[k] != closer && t[k] != ','
	}
	return 0, false, false
}

func parseFlowMap(t string, j int) (node, int, bool) {
	n := node{kind: kindMap}
	k := skipSpaces(t, j+1)
	if k < len(t) && t[k] == '}' {
		return n, k + 1, true
	}
	for k < len(t) {
		key, e, ok := parseKey(t, k)
		if !ok {
			return node{}, 0, false
		}
		k = skipSpaces(t, e)
		if k == len(t) || t[k] == ',' || t[k] == '}' {
			return node{}, 0, false // an empty value
		}
		v, e, ok := parseValue(t, k, true)
		if !ok {
			return node{}, 0, false
		}
		n.kids = append(n.kids, node{kind: kindString, text: key}, v)
		var closed bool
		if k, closed, ok = afterEntry(t, e, '}'); !ok {
			return node{}, 0, false
		}
		if closed {
			s, ok := n.sorted()
			return s, k, ok
		}
	}
	return node{}, 0, false
}

// parseKey parses "key:" followed by a space or the end of the line at
// t[j:], and returns the key and the index after the ':'. A plain key must
// resolve to a string.
func parseKey(t string, j int) (string, int, bool) {
	var key string
	k := j
	if j < len(t) && (t[j] == '"' || t[j] == '\'') {
		var ok bool
		if key, k, ok = parseQuoted(t, j); !ok {
			return "", 0, false
		}
	} else {
		for k < len(t) && (plainChar(t[k]) || (t[k] == ' ' && k+1 < len(t) && t[k+1] != ' ' && t[k+1] != ':' && t[k+1] != '#')) {
			k++
		}
		if k == j {
			return "", 0, false
		}
		key = t[j:k]
		if v, ok := resolvePlain(key); !ok || v.kind != kindString {
			return "", 0, false
		}
	}
	if k == len(t) || t[k] != ':' || (k+1 < len(t) && t[k+1] != ' ') {
		return "", 0, false
	}
	return key, k + 1, true
}

// isKeyStart reports whether t[j:] starts with a key.
func isKeyStart(t string, j int) bool {
	_, _, ok := parseKey(t, j)
	return ok
}

// isDash reports a sequence entry at t[j:]: "-" then a space or the end.
func isDash(t string, j int) bool {
	return j < len(t) && t[j] == '-' && (j+1 == len(t) || t[j+1] == ' ')
}

// parseQuoted parses the quoted scalar at t[j:], which must end on its
// line; a double-quoted one may not have escapes.
func parseQuoted(t string, j int) (string, int, bool) {
	q := t[j]
	if q == '"' {
		e := strings.IndexByte(t[j+1:], '"')
		if e < 0 {
			return "", 0, false
		}
		s := t[j+1 : j+1+e]
		if strings.IndexByte(s, '\\') >= 0 {
			return "", 0, false
		}
		return s, j + e + 2, true
	}
	var b strings.Builder
	k := j + 1
	for {
		e := strings.IndexByte(t[k:], '\'')
		if e < 0 {
			return "", 0, false
		}
		if k+e+1 < len(t) && t[k+e+1] == '\'' { // '' is one quote
			b.WriteString(t[k : k+e+1])
			k += e + 2
			continue
		}
		if b.Len() == 0 {
			return t[k : k+e], k + e + 1, true
		}
		b.WriteString(t[k : k+e])
		return b.String(), k + e + 1, true
	}
}

// restIsComment reports whether t[k:] is empty, spaces, or spaces and a
// comment.
func restIsComment(t string, k int) bool {
	e := skipSpaces(t, k)
	return e == len(t) || (t[e] == '#' && e > k)
}

func skipSpaces(t string, k int) int {
	for k < len(t) && t[k] == ' ' {
		k++
	}
	return k
}

// plainChar reports the characters a plain scalar of the subset may hold
// (besides single spaces inside it).
func plainChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte(plainPunct, c) >= 0
}

// plainPunct is the punctuation a plain scalar of the subset may hold. What
// may not start one is left to resolvePlain; ':' and '#' (which would end
// it in some places) and ',', '[', ']', '{' and '}' (which end it in a flow
// collection) are not here.
const plainPunct = "._-/+=()$@'\"!&*|<>~%^?;`"

// yaml11Words are the plain scalars that YAML 1.1 (and so sigs.k8s.io/yaml)
// reads as booleans or null, other than true, false and null.
var yaml11Words = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true,
	"n": true, "N": true, "no": true, "No": true, "NO": true,
	"on": true, "On": true, "ON": true, "off": true, "Off": true, "OFF": true,
	"True": true, "TRUE": true, "False": true, "FALSE": true,
	"Null": true, "NULL": true,
}

// resolvePlain resolves a plain scalar, or declines when it is not
// certainly a string, a boolean, null or a decimal integer.
func resolvePlain(s string) (node, bool) {
	switch s {
	case "":
		return node{}, false
	case "true":
		return node{kind: kindTrue}, true
	case "false":
		return node{kind: kindFalse}, true
	case "null":
		return node{kind: kindNull}, true
	}
	c := s[0]
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		if yaml11Words[s] {
			return node{}, false
		}
		return node{kind: kindString, text: s}, true
	case '0' <= c && c <= '9', c == '-', c == '+', c == '.':
		if isDecimal(s) {
			return node{kind: kindInt, text: s}, true
		}
		// No number, timestamp or special float has a '/', nor is one
		// digits with two dots or more (an IPv4 address).
		if strings.IndexByte(s, '/') >= 0 || isDottedDigits(s) {
			return node{kind: kindString, text: s}, true
		}
		return node{}, false
	case c == '_', c == '/', c == '$', c == '(':
		return node{kind: kindString, text: s}, true
	}
	return node{}, false
}

// isDottedDigits reports digits with two dots or more between them, and
// nothing else.
func isDottedDigits(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if i == 0 || i == len(s)-1 || s[i-1] == '.' {
				return false
			}
			dots++
		case c < '0' || c > '9':
			return false
		}
	}
	return dots >= 2
}

// isDecimal reports an integer in canonical decimal form (no sign but '-',
// no leading zeros, no underscores) that fits in 64 bits.
func isDecimal(s string) bool {
	d := strings.TrimPrefix(s, "-")
	if d == "" || len(d) > 18 || (d[0] == '0' && (len(d) > 1 || len(s) > 1)) {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}

// sorted sorts a mapping's pairs by key, as encoding/json writes a map, and
// declines a mapping with a key twice (an error in strict YAML).
func (n node) sorted() (node, bool) {
	pairs := len(n.kids) / 2
	if pairs < 2 {
		return n, true
	}
	idx := make([]int, pairs)
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(n.kids[2*a].text, n.kids[2*b].text) })
	kids := make([]node, 0, len(n.kids))
	for i, x := range idx {
		if i > 0 && n.kids[2*x].text == kids[len(kids)-2].text {
			return node{}, false
		}
		kids = append(kids, n.kids[2*x], n.kids[2*x+1])
	}
	n.kids = kids
	return n, true
}

func (n node) appendJSON(b []byte) []byte {
	switch n.kind {
	case kindNull:
		return append(b, "null"...)
	case kindTrue:
		return append(b, "true"...)
	case kindFalse:
		return append(b, "false"...)
	case kindInt:
		return append(b, n.text...)
	case kindString:
		return appendString(b, n.text)
	case kindSeq:
		b = append(b, '[')
		for i, k := range n.kids {
			if i > 0 {
				b = append(b, ',')
			}
			b = k.appendJSON(b)
		}
		return append(b, ']')
	}
	b = append(b, '{')
	for i := 0; i < len(n.kids); i += 2 {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, n.kids[i].text)
		b = append(b, ':')
		b = n.kids[i+1].appendJSON(b)
	}
	return append(b, '}')
}

// appendString writes a printable ASCII string as encoding/json does:
// quotes and backslashes escaped, and <, > and & as \u escapes.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '"':
			esc = `\"`
		case '\\':
			esc = `\\`
		case '<':
			esc = `\u003c`
		case '>':
			esc = `\u003e`
		case '&':
			esc = `\u0026`
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
