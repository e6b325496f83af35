package yamljson

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// check converts in both ways: whatever Convert accepts must be what
// sigs.k8s.io/yaml gives, byte for byte, and what that rejects Convert must
// decline. It reports whether Convert accepted.
func check(t *testing.T, name string, in []byte) bool {
	t.Helper()
	want, werr := yaml.YAMLToJSONStrict(in)
	got, ok := Convert(in)
	if !ok {
		return false
	}
	if werr != nil {
		t.Errorf("%s: accepted what sigs.k8s.io/yaml rejects (%v):\n%s\ngot %s", name, werr, in, got)
	} else if !bytes.Equal(got, want) {
		t.Errorf("%s:\n%s\ngot  %s\nwant %s", name, in, got, want)
	}
	return true
}

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		accept   bool
	}{
		{"flat", "a: 1\nb: x\n", true},
		{"sorted keys", "z: 1\na: 2\nm: {x: 1, b: 2}\n", true},
		{"policy", `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: bench, name: svc-001}
spec:
  order: 101
  selector: "role == 'server'"
  types: [Ingress]
  ingress:
    - {action: Allow, protocol: TCP, source: {selector: "app == 'svc-1'"}, destination: {ports: [20100]}}
    - {action: Allow, protocol: TCP, source: {nets: [172.17.1.0/24]}, destination: {ports: [20101]}}
`, true},
		{"sequence at its key's indentation", "a:\n- 1\n- x\nb: 2\n", true},
		{"compact mappings in a sequence", "l:\n  - a: 1\n    b: [2, 3]\n  -   c: 'it''s'\n      d: \"<&>\"\n", true},
		{"dash alone", "l:\n  -\n    a: 1\n  -\n  - x\n", true},
		{"nested sequences", "l:\n  - - 1\n    - 2\n  - - 3\n", true},
		{"comments and blank lines", "# top\na: 1 # one\n\n  # indented\nb: # nested\n  c: 'x' # q\n", true},
		{"empty values", "a:\nb: {}\nc: []\nd: null\n", true},
		{"spaces in plain scalars", "description: allow web  to db\nkey with space: v\n", true},
		{"labels", "metadata:\n  labels:\n    app.kubernetes.io/name: tortie\n    projectcalico.org/orchestrator: k8s\n", true},
		{"integers", "a: 0\nb: -12\nc: 123456789012345678\n", true},
		{"booleans", "a: true\nb: false\n", true},
		{"whole document indented", "  a: 1\n  b: 2\n", true},
		// Declined: the general path decides (and gives the errors).
		{"yaml 1.1 boolean", "a: yes\n", false},
		{"yaml 1.1 boolean key", "on: x\n", false},
		{"octal", "a: 0755\n", false},
		{"hex", "a: 0x1F\n", false},
		{"float", "a: 1.5\n", false},
		{"big integer", "a: 1234567890123456789\n", false},
		{"address", "a: 10.0.0.1\n", true},
		{"version", "a: 1.2\n", false},
		{"timestamp", "a: 2001-12-14\n", false},
		{"integer key", "80: x\n", false},
		{"duplicate key", "a: 1\na: 2\n", false},
		{"duplicate flow key", "a: {b: 1, b: 2}\n", false},
		{"escape", "a: \"x\\ty\"\n", false},
		{"block scalar", "a: |\n  x\n", false},
		{"multi-line plain", "a: x\n  y\n", false},
		{"multi-line flow", "a: [1,\n  2]\n", false},
		{"anchor", "a: &x 1\nb: *x\n", false},
		{"tag", "a: !!str 1\n", false},
		{"colon in plain", "a: b:c\n", false},
		{"mapping in plain", "a: b: c\n", false},
		{"tab", "a:\t1\n", false},
		{"non-ASCII", "a: é\n", false},
		{"carriage return", "a: 1\r\n", false},
		{"start marker", "# c\n--- # d\na: 1\n", true},
		{"start marker with content", "--- a\n", false},
		{"second document", "a: 1\n---\nb: 2\n", false},
		{"end marker", "a: 1\n...\n", false},
		{"top-level sequence", "- a\n", false},
		{"top-level scalar", "a\n", false},
		{"bad indentation", "a:\n  b: 1\n c: 2\n", false},
		{"dash after a value", "a: 1\n- b\n", false},
		{"trailing comma", "a: [1, 2, ]\n", false},
		{"space before colon", "a : 1\n", false},
		{"comment without space", "a: 'x'#c\n", false},
		{"JSON", `{"a": 1}`, false},
	} {
		if got := check(t, tc.name, []byte(tc.in)); got != tc.accept {
			t.Errorf("%s: accepted %v, want %v:\n%s", tc.name, got, tc.accept, tc.in)
		}
	}
}

// TestCorpus converts every document of every YAML file in the repository,
// and requires the manifests that look like what operators write (the
// examples, the deployment, the conformance manifests) to take the fast
// path.
func TestCorpus(t *testing.T) {
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	out, err := exec.Command("git", "-C", strings.TrimSpace(string(root)), "ls-files", "*.yaml", "*.yml").Output()
	if err != nil {
		t.Fatal(err)
	}
	files := strings.Fields(string(out))
	if len(files) == 0 {
		t.Fatal("no YAML files in the repository")
	}
	// How many documents must take the fast path: all but those with IPv6
	// addresses or BGP communities in plain scalars (':').
	mustAccept := map[string]int{
		"examples/30-policy.yaml": 6, "examples/lab/policy.yaml": 2,
		"testdata/shared/testdata/manifests/calico-examples.yaml": 16,
	}
	accepted, total := 0, 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(root)), f))
		if err != nil {
			t.Fatal(err)
		}
		rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		fileAccepted, fileDocs := 0, 0
		for i := 1; ; i++ {
			doc, err := rd.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			fileDocs++
			if check(t, fmt.Sprintf("%s document %d", f, i), doc) {
				fileAccepted++
			}
		}
		if fileAccepted < mustAccept[f] {
			t.Errorf("%s: %d of %d documents took the fast path, want %d", f, fileAccepted, fileDocs, mustAccept[f])
		}
		accepted, total = accepted+fileAccepted, total+fileDocs
	}
	t.Logf("%d of %d documents in %d files took the fast path", accepted, total, len(files))
}

// TestRandom renders random trees in random YAML styles, with scalars
// chosen to sit on every edge of YAML 1.1's resolution, and converts them
// both ways.
func TestRandom(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 500
	}
	accepted := 0
	for seed := range n {
		g := gen{r: rand.New(rand.NewPCG(uint64(seed), 7))}
		var b strings.Builder
		g.mapping(&b, 0, false, 3)
		if check(t, fmt.Sprintf("seed %d", seed), []byte(b.String())) {
			accepted++
		}
	}
	// Declining everything would pass the checks above.
	if accepted < n/4 {
		t.Errorf("only %d of %d random documents took the fast path", accepted, n)
	}
	t.Logf("%d of %d random documents took the fast path", accepted, n)
}

// FuzzConvert checks the same on inputs the fuzzer finds, where Convert
// accepts them (declining is always safe). The general path is not run on
// the rest: on some inputs the fuzzer builds (aliases of aliases) it takes
// longer than the fuzzer allows one input.
func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		"a: 1\n", "a:\n- b\n- {c: d}\n", "l:\n  - a: 'x'\n    b: \"y\"\n", "a: [1, [2, {b: c}]]\n",
		"a: yes\n", "a: 10.0.0.0/8 # c\n", "k: v\n  # c\nk2:\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, ok := Convert(in); ok {
			check(t, "fuzz", in)
		}
	})
}

// gen writes random YAML.
type gen struct{ r *rand.Rand }

// ordinary scalars are what manifests hold.
var ordinary = []string{"web", "Allow", "TCP", "80", "-5", "10.0.0.0/8", "192.168.1.1", "role == 'db'", "all()", "k8s.io/name", "a b"}

// scalars sit on the edges of YAML 1.1's resolution and of the subset.
var scalars = []string{
	"80", "0", "-1", "-0", "007", "0x1F", "0o17", "0b101", "1_000", "1e3", "1.5", ".5", "+1",
	"123456789012345678", "1234567890123456789", "9223372036854775808",
	"10.0.0.1", "10.0.0.0/8", "fd00::/64", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "12:30",
	"yes", "No", "on", "OFF", "y", "N", "true", "True", "false", "null", "NULL", "~", ".inf", ".nan", "<<",
	"", " ", "a b", "a  b", "a #b", "a#b", "a: b", "a:b", "role == 'x'", "it's", "<tag>", "a&b",
	"-x", "-", "--", "./p", "/x", "_x", "$(X)", "all()", "@x", "=x", "x=y", "a/b", "Allow", "TCP",
	"k8s.io/name", "!x", "*x", "&x", "|", ">", "%x", "?x", "[a]", "{a}", "a,b", `"q"`, `back\slash`, "é", "a\tb",
}

var (
	keys       = []string{"a", "b", "c", "d", "e", "f", "g", "h", "apiVersion", "my key", "k8s.io/x", "a.b", "$x", "(x)", "_x"}
	trickyKeys = []string{"80", "true", "yes", "on", "-k", "x:y", "'q'", "a ", "<<", "~", "1.5", "a#b", "?x"}
)

func (g *gen) pick(l []string) string { return l[g.r.IntN(len(l))] }

// scalar renders a scalar plain, single-quoted or double-quoted.
func (g *gen) scalar() string {
	s := g.pick(ordinary)
	if g.r.IntN(8) == 0 {
		s = g.pick(scalars)
	}
	switch g.r.IntN(4) {
	case 0:
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	case 1:
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	if s == "" {
		return "x"
	}
	return s
}

func (g *gen) key() string {
	k := g.pick(keys)
	if g.r.IntN(8) == 0 {
		k = g.pick(trickyKeys)
	}
	if g.r.IntN(4) == 0 {
		return `"` + k + `"`
	}
	return k
}

// flow renders a flow collection or a scalar.
func (g *gen) flow(depth int) string {
	switch {
	case depth > 0 && g.r.IntN(3) == 0:
		var parts []string
		for range g.r.IntN(4) {
			parts = append(parts, g.key()+": "+g.flow(depth-1))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case depth > 0 && g.r.IntN(3) == 0:
		var parts []string
		for range g.r.IntN(4) {
			parts = append(parts, g.flow(depth-1))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return g.scalar()
}

func (g *gen) comment() string {
	if g.r.IntN(6) == 0 {
		return " # note"
	}
	return ""
}

// mapping writes a block mapping at indent; inline means its first key
// goes where the writer already is (after a sequence's "- ").
func (g *gen) mapping(b *strings.Builder, indent int, inline bool, depth int) {
	for i := range 1 + g.r.IntN(4) {
		if i > 0 || !inline {
			b.WriteString(strings.Repeat(" ", indent))
		}
		b.WriteString(g.key() + ":")
		g.value(b, indent, depth)
		if g.r.IntN(8) == 0 {
			b.WriteString("\n" + strings.Repeat(" ", g.r.IntN(6)) + "# between\n")
		}
	}
}

// value writes the value of a key at indent, from the ':' on.
func (g *gen) value(b *strings.Builder, indent, depth int) {
	switch r := g.r.IntN(10); {
	case depth > 0 && r < 2:
		b.WriteString(g.comment() + "\n")
		g.mapping(b, indent+1+g.r.IntN(3), false, depth-1)
	case depth > 0 && r < 4:
		b.WriteString(g.comment() + "\n")
		g.sequence(b, indent+2*g.r.IntN(2), depth-1) // at the key's indentation, or under it
	case r == 4:
		b.WriteString(g.comment() + "\n")
	default:
		b.WriteString(" " + g.flow(depth) + g.comment() + "\n")
	}
}

func (g *gen) sequence(b *strings.Builder, indent, depth int) {
	for range 1 + g.r.IntN(3) {
		b.WriteString(strings.Repeat(" ", indent) + "-")
		switch r := g.r.IntN(8); {
		case depth > 0 && r < 2:
			pad := 1 + g.r.IntN(3)
			b.WriteString(strings.Repeat(" ", pad))
			g.mapping(b, indent+1+pad, true, depth-1)
		case depth > 0 && r < 3:
			b.WriteString("\n")
			g.mapping(b, indent+2, false, depth-1)
		case depth > 0 && r < 4:
			b.WriteString("\n")
			g.sequence(b, indent+2, depth-1)
		case r == 4:
			b.WriteString("\n")
		default:
			b.WriteString(" " + g.flow(depth) + g.comment() + "\n")
		}
	}
}
