package selector

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// dataDir is the in-repo copy of the project's shared conformance data
// (testdata/README.md says where it comes from).
const dataDir = "../../testdata/shared/testdata/selector"

type dataLine struct {
	num    int
	fields []string
}

// readData fails (never skips) when the data is missing, so a broken checkout
// cannot pass silently. Lines are split on TAB only and never trimmed: leading
// and trailing spaces in selectors are part of the cases.
func readData(tb testing.TB, name string, nFields int) []dataLine {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir, name))
	if err != nil {
		tb.Fatalf("conformance data unavailable: %v", err)
	}
	text := strings.TrimSuffix(string(raw), "\n")
	var out []dataLine
	for i, line := range strings.Split(text, "\n") {
		f := strings.Split(line, "\t")
		if len(f) != nFields {
			tb.Fatalf("%s:%d: want %d TAB-separated fields, got %d", name, i+1, nFields, len(f))
		}
		out = append(out, dataLine{num: i + 1, fields: f})
	}
	if len(out) == 0 {
		tb.Fatalf("%s: no cases", name)
	}
	return out
}

func runCaseFile(t *testing.T, name string) {
	lines := readData(t, name, 3)
	for _, l := range lines {
		t.Run(strconv.Itoa(l.num), func(t *testing.T) {
			expr, labelsJSON, want := l.fields[0], l.fields[1], l.fields[2]
			var labels map[string]string
			if err := json.Unmarshal([]byte(labelsJSON), &labels); err != nil {
				t.Fatalf("bad labels %q: %v", labelsJSON, err)
			}
			sel, err := Parse(expr)
			if want == "error" {
				if err == nil {
					t.Fatalf("Parse(%q) = %q, want error", expr, sel)
				}
				if _, ok := err.(*ParseError); !ok {
					t.Fatalf("Parse(%q) error is %T, want *ParseError", expr, err)
				}
				if Validate(expr) == nil {
					t.Fatalf("Validate(%q) = nil, want error", expr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", expr, err)
			}
			if Validate(expr) != nil {
				t.Fatalf("Validate(%q) failed but Parse succeeded", expr)
			}
			wantMatch, err := strconv.ParseBool(want)
			if err != nil {
				t.Fatalf("bad expectation %q", want)
			}
			if got := sel.Evaluate(labels); got != wantMatch {
				t.Errorf("Parse(%q).Evaluate(%v) = %v, want %v", expr, labels, got, wantMatch)
			}
			// The canonical form must select exactly the same endpoints.
			again, err := Parse(sel.String())
			if err != nil {
				t.Fatalf("canonical %q does not re-parse: %v", sel.String(), err)
			}
			if got := again.Evaluate(labels); got != wantMatch {
				t.Errorf("canonical %q.Evaluate(%v) = %v, want %v", sel.String(), labels, got, wantMatch)
			}
		})
	}
}

func TestCalicoCases(t *testing.T)      { runCaseFile(t, "calico_cases.tsv") }
func TestCalicoExtraCases(t *testing.T) { runCaseFile(t, "calico_extra_cases.tsv") }

func TestCalicoCanonical(t *testing.T) {
	for _, l := range readData(t, "calico_canonical.tsv", 3) {
		t.Run(strconv.Itoa(l.num), func(t *testing.T) {
			in, canon, id := l.fields[0], l.fields[1], l.fields[2]
			sel, err := Parse(in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", in, err)
			}
			if got := sel.String(); got != canon {
				t.Errorf("Parse(%q).String() = %q, want %q", in, got, canon)
			}
			if got := sel.UniqueID(); got != id {
				t.Errorf("Parse(%q).UniqueID() = %q, want %q", in, got, id)
			}
			again, err := Parse(canon)
			if err != nil {
				t.Fatalf("canonical %q does not re-parse: %v", canon, err)
			}
			if again.String() != canon || again.UniqueID() != id {
				t.Errorf("canonical %q is not a fixed point: %q %q", canon, again.String(), again.UniqueID())
			}
		})
	}
}
