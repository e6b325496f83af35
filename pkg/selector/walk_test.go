package selector

import "testing"

func TestTreeStringIsCanonical(t *testing.T) {
	for _, expr := range []string{
		"", "all()", "global()", "has(a)", "!has(a)", `a == "x"`, `a != 'x"y'`, `a in {"c", "b"}`,
		`a not in {"x"}`, `a contains "x" && b starts with "y" || c ends with "z"`,
		`!(a == "x" || !(b == "y" && has(c)))`, `!!a == "x"`,
	} {
		s := MustParse(expr)
		tr := Tree(s)
		if got := tr.String(); got != s.String() {
			t.Errorf("%q: Tree().String() = %q, want canonical %q", expr, got, s.String())
		}
	}
}

func TestTreeRewrite(t *testing.T) {
	s := MustParse(`team == "x" && !has(b) || all()`)
	var prefix func(e *Expr)
	prefix = func(e *Expr) {
		if e.Label != "" {
			e.Label = "pcns." + e.Label
		}
		if e.Op == OpAll {
			*e = Expr{Op: OpHas, Label: "ns"}
		}
		for i := range e.Args {
			prefix(&e.Args[i])
		}
	}
	tr := Tree(s)
	prefix(&tr)
	got, err := Parse(tr.String())
	if err != nil {
		t.Fatal(err)
	}
	if want := `((pcns.team == "x" && !has(pcns.b)) || has(ns))`; got.String() != want {
		t.Errorf("got %q, want %q", got.String(), want)
	}
	if s.String() != `((team == "x" && !has(b)) || all())` {
		t.Errorf("rewriting the tree changed the selector: %q", s.String())
	}
	// A doubled negation made by a rewrite keeps its meaning.
	dbl := Expr{Op: OpNot, Args: []Expr{{Op: OpNot, Args: []Expr{{Op: OpHas, Label: "a"}}}}}
	if p := MustParse(dbl.String()); p.String() != "has(a)" {
		t.Errorf("double negation: %q", p.String())
	}
}
