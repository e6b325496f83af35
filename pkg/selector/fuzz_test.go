package selector

import (
	"errors"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, name := range []string{"calico_cases.tsv", "calico_extra_cases.tsv", "calico_canonical.tsv"} {
		for _, l := range readData(f, name, 3) {
			f.Add(l.fields[0])
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) error %T, want *ParseError", in, err)
			}
			if pe.Pos < 0 || pe.Pos > len(in) || pe.Expr != in || pe.Expected == "" || pe.Found == "" {
				t.Fatalf("Parse(%q): malformed error %#v", in, pe)
			}
			if Validate(in) == nil {
				t.Fatalf("Validate(%q) accepted what Parse rejected", in)
			}
			return
		}
		canon := s.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) = %q, which does not re-parse: %v", in, canon, err)
		}
		if again.String() != canon {
			t.Fatalf("Parse(%q) = %q, re-parsed as %q", in, canon, again.String())
		}
		if again.UniqueID() != s.UniqueID() {
			t.Fatalf("Parse(%q): unique ID changed on re-parse", in)
		}
		for _, m := range labelMapsFrom(in) {
			if s.Evaluate(m) != again.Evaluate(m) {
				t.Fatalf("Parse(%q) and its canonical %q disagree on %v", in, canon, m)
			}
		}
	})
}

// labelMapsFrom builds label sets from the words and quoted strings of a
// selector, so that evaluation exercises both matching and non-matching
// branches instead of only ever seeing missing labels.
func labelMapsFrom(in string) []map[string]string {
	var names, values []string
	for i := 0; i < len(in); {
		c := in[i]
		switch {
		case isLabelChar(c):
			j := i
			for j < len(in) && isLabelChar(in[j]) {
				j++
			}
			names = append(names, in[i:j])
			i = j
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(in) && in[j] != c {
				j++
			}
			values = append(values, in[i+1:min(j, len(in))])
			i = j + 1
		default:
			i++
		}
	}
	const maxNames = 16
	if len(names) > maxNames {
		names = names[:maxNames]
	}
	values = append(values, "", "x")
	maps := []map[string]string{{}}
	for k := range 4 {
		m := map[string]string{}
		for i, n := range names {
			switch k {
			case 0:
				m[n] = values[0]
			case 1:
				m[n] = values[i%len(values)]
			case 2:
				m[n] = values[(i+1)%len(values)]
			case 3:
				if i%2 == 0 {
					m[n] = n
				}
			}
		}
		maps = append(maps, m)
	}
	return maps
}
