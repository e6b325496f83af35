package selector

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseErrorMessage(t *testing.T) {
	_, err := Parse(`a == `)
	want := `selector "a == ": at character 5: expected a quoted string, found end of input`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		expr     string
		pos      int
		expected string // substring of ParseError.Expected
		found    string
	}{
		{`a == `, 5, "a quoted string", "end of input"},
		{`b == b`, 5, "a quoted string", `"b"`},
		{`'b1' == b`, 0, "a label", `string 'b1'`},
		{`b`, 1, "an operator", "end of input"},
		{`a b`, 2, "an operator", `"b"`},
		{`label = "value"`, 6, "an operator", `"="`},
		{`label inf "value"`, 6, "an operator", `"inf"`},
		{`label starts foo "value"`, 6, "an operator", `"starts"`},
		{`label ends withs "value"`, 6, "an operator", `"ends"`},
		{`!`, 1, "a label", "end of input"},
		{`foo == "bar" &`, 13, "'&&', '||' or end of input", `"&"`},
		{`a == "b" | has(foo)`, 9, "'&&', '||' or end of input", `"|"`},
		{`foo in ""`, 7, "'{'", `string ""`},
		{`foo in {"", ||`, 12, "a quoted string or '}'", `"||"`},
		{`foo in {"a" "b"}`, 12, "',' or '}'", `string "b"`},
		{`foo in {,}`, 8, "a quoted string or '}'", `","`},
		{`label == "value`, 15, `'"' to close the string opened at character 9`, "end of input"},
		{`a == 'v`, 7, `'\'' to close the string opened at character 5`, "end of input"},
		{`(a == "foo"`, 11, "'&&', '||' or ')'", "end of input"},
		{`)`, 0, "a label", `")"`},
		{`()`, 1, "a label", `")"`},
		{`%`, 0, "a label", `"%"`},
		{`a == "b" && é`, 12, "a label", `"é"`},
		{`has()`, 4, "a label name", `")"`},
		{`has( foo `, 9, "')'", "end of input"},
		{`all(x)`, 4, "')'", `"x"`},
		{`has(foo) &&`, 11, "a label", "end of input"},
		{strings.Repeat("a", 513) + ` == "v"`, 0, "at most 512 characters", "a 513-character label"},
		{`has(` + strings.Repeat("a", 600) + `)`, 4, "at most 512 characters", "a 600-character label"},
		{strings.Repeat("(", maxNesting+1) + "all()" + strings.Repeat(")", maxNesting+1), maxNesting, "nested parentheses", `"("`},
	} {
		t.Run(fmt.Sprintf("%.40q", tc.expr), func(t *testing.T) {
			_, err := Parse(tc.expr)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) error = %v, want *ParseError", tc.expr, err)
			}
			if pe.Expr != tc.expr || pe.Pos != tc.pos || !strings.Contains(pe.Expected, tc.expected) || pe.Found != tc.found {
				t.Errorf("Parse(%q):\n got pos %d expected %q found %q\nwant pos %d expected ~%q found %q",
					tc.expr, pe.Pos, pe.Expected, pe.Found, tc.pos, tc.expected, tc.found)
			}
			if Validate(tc.expr) == nil {
				t.Errorf("Validate(%q) = nil", tc.expr)
			}
		})
	}
}

func TestAccepted(t *testing.T) {
	// Spellings that must parse, with their canonical form.
	for _, tc := range []struct{ in, want string }{
		{"\ta\t==\t'x'\t", `a == "x"`},
		{`a notin {}`, `a not in {}`},
		{`a not	in {"x",}`, `a not in {"x"}`},
		{`a in{"b","a"}`, `a in {"a", "b"}`},
		{`a startswith"x"`, `a starts with "x"`},
		{`a ends   with 'x'`, `a ends with "x"`},
		{`contains contains "contains"`, `contains contains "contains"`},
		{`in in {"in"}`, `in in {"in"}`},
		{`not not in {"not"}`, `not not in {"not"}`},
		{`has == "x"`, `has == "x"`},
		{`all() && global( )`, `(all() && global())`},
		{`calico/k8s_NS-.1/role == ""`, `calico/k8s_NS-.1/role == ""`},
		{`has( ` + strings.Repeat("b", 512) + ` )`, `has(` + strings.Repeat("b", 512) + `)`},
		{strings.Repeat("(", maxNesting) + "all()" + strings.Repeat(")", maxNesting), "all()"},
	} {
		s, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if s.String() != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, s.String(), tc.want)
		}
	}
}

func TestPrecedenceAndNegation(t *testing.T) {
	type L = map[string]string
	maps := []L{{}, {"a": "1"}, {"b": "1"}, {"c": "1"}, {"a": "1", "b": "1"}, {"b": "1", "c": "1"},
		{"a": "1", "c": "1"}, {"a": "1", "b": "1", "c": "1"}, {"a": "2", "b": "1", "c": "2"}}
	a := func(l L) bool { return l["a"] == "1" }
	b := func(l L) bool { return l["b"] == "1" }
	c := func(l L) bool { return l["c"] == "1" }
	for _, tc := range []struct {
		expr  string
		canon string
		want  func(L) bool
	}{
		{`a == "1" || b == "1" && c == "1"`, `(a == "1" || (b == "1" && c == "1"))`,
			func(l L) bool { return a(l) || (b(l) && c(l)) }},
		{`a == "1" && b == "1" || c == "1"`, `((a == "1" && b == "1") || c == "1")`,
			func(l L) bool { return (a(l) && b(l)) || c(l) }},
		{`a == "1" && (b == "1" || c == "1")`, `(a == "1" && (b == "1" || c == "1"))`,
			func(l L) bool { return a(l) && (b(l) || c(l)) }},
		{`!a == "1" && b == "1"`, `(!a == "1" && b == "1")`,
			func(l L) bool { return !a(l) && b(l) }},
		{`!(a == "1" && b == "1")`, `!(a == "1" && b == "1")`,
			func(l L) bool { return !(a(l) && b(l)) }},
		{`! a == "1" || ! b == "1"`, `(!a == "1" || !b == "1")`,
			func(l L) bool { return !a(l) || !b(l) }},
		// Double negation cancels however it is written.
		{`!!a == "1"`, `a == "1"`, a},
		{`!(!a == "1")`, `a == "1"`, a},
		{`!!(!(a == "1"))`, `!a == "1"`, func(l L) bool { return !a(l) }},
		{`! ! !a == "1"`, `!a == "1"`, func(l L) bool { return !a(l) }},
		{`!!has(a)`, `has(a)`, func(l L) bool { _, ok := l["a"]; return ok }},
		// Missing labels: != and not in select, everything else does not.
		{`a != "1"`, `a != "1"`, func(l L) bool { v, ok := l["a"]; return !ok || v != "1" }},
		{`a not in {"1"}`, `a not in {"1"}`, func(l L) bool { v, ok := l["a"]; return !ok || v != "1" }},
		{`!a in {"1"}`, `!a in {"1"}`, func(l L) bool { return !a(l) }},
	} {
		s, err := Parse(tc.expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.expr, err)
			continue
		}
		if s.String() != tc.canon {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.expr, s.String(), tc.canon)
		}
		for _, m := range maps {
			if got, want := s.Evaluate(m), tc.want(m); got != want {
				t.Errorf("Parse(%q).Evaluate(%v) = %v, want %v", tc.expr, m, got, want)
			}
		}
	}
}

func TestCanonicalNestedGroups(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`!(!(k == 'v' && has(t) || all()) && (a in {'c', 'b'}))`,
			`!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})`},
		{`(a == "1" && b == "1") && c == "1"`, `((a == "1" && b == "1") && c == "1")`},
		{`a == "1" && (b == "1" && c == "1")`, `(a == "1" && (b == "1" && c == "1"))`},
		{`((((has(x)))))`, `has(x)`},
		{`((a == "1" || b == "1")) || ((c == "1"))`, `((a == "1" || b == "1") || c == "1")`},
		{`a in {'"', "'", ""}`, `a in {"", '"', "'"}`},
		{`a == ''`, `a == ""`},
		{`x contains "y" || !(x ends with 'z' && global())`, `(x contains "y" || !(x ends with "z" && global()))`},
	} {
		s, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if s.String() != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, s.String(), tc.want)
		}
		again := MustParse(s.String())
		if again.String() != tc.want || again.UniqueID() != s.UniqueID() {
			t.Errorf("canonical %q is not a fixed point", tc.want)
		}
	}
}

func TestLargeSet(t *testing.T) {
	var vals []string
	for i := 0; i < 50; i++ {
		vals = append(vals, fmt.Sprintf("'v%02d'", 49-i))
	}
	in := MustParse("a in {" + strings.Join(vals, ",") + "}")
	notIn := MustParse("a not in {" + strings.Join(vals, ",") + "}")
	for i := 0; i < 60; i++ {
		v := fmt.Sprintf("v%02d", i)
		want := i < 50
		if got := in.Evaluate(map[string]string{"a": v}); got != want {
			t.Errorf("in: %s = %v, want %v", v, got, want)
		}
		if got := notIn.Evaluate(map[string]string{"a": v}); got == want {
			t.Errorf("not in: %s = %v, want %v", v, got, !want)
		}
	}
	if !strings.HasPrefix(in.String(), `a in {"v00", "v01", `) {
		t.Errorf("set not sorted: %s", in.String())
	}
}

func TestUniqueID(t *testing.T) {
	s := MustParse("")
	if s.String() != "all()" || s.UniqueID() != "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug" {
		t.Fatalf("got %q %q", s.String(), s.UniqueID())
	}
	if MustParse(`a == "1"`).UniqueID() == MustParse(`a == "2"`).UniqueID() {
		t.Fatal("different selectors share an ID")
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if _, ok := recover().(*ParseError); !ok {
			t.Fatal("MustParse did not panic with *ParseError")
		}
	}()
	MustParse("a ==")
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	s := MustParse(benchSelector)
	var bigVals []string
	for i := 0; i < 20; i++ {
		bigVals = append(bigVals, fmt.Sprintf("%q", fmt.Sprint(i)))
	}
	big := MustParse(`a contains "x" || a starts with "y" || a ends with "z" || a in {` +
		strings.Join(bigVals, ", ") + `} || global()`)
	for _, l := range []map[string]string{benchLabels, {}, {"a": "17"}} {
		for _, sel := range []Selector{s, big} {
			if n := testing.AllocsPerRun(100, func() { sel.Evaluate(l) }); n != 0 {
				t.Errorf("%s on %v: %v allocs per Evaluate, want 0", sel, l, n)
			}
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	s := MustParse(benchSelector)
	done := make(chan string)
	for i := 0; i < 8; i++ {
		go func() {
			s.Evaluate(benchLabels)
			done <- s.UniqueID() + s.String()
		}()
	}
	first := <-done
	for i := 1; i < 8; i++ {
		if got := <-done; got != first {
			t.Fatalf("inconsistent results: %q vs %q", got, first)
		}
	}
}
