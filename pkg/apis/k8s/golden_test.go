package k8s

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenCase is one manifest whose conversion is compared with
// testdata/<family>/<name>.json.
type goldenCase struct {
	name     string
	manifest string
}

// marshal is the golden form of a resource: indented JSON without HTML
// escaping, so selectors read as written ("&&", not "\u0026\u0026").
func marshal(t *testing.T, r any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// runGolden decodes each manifest, checks the result is stable under
// v3.SetDefaults and passes v3.Validate, and compares it with its golden
// file (rewritten with -update).
func runGolden(t *testing.T, family string, cases []goldenCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decode([]byte(c.manifest))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got := marshal(t, r)
			v3.SetDefaults(r)
			if again := marshal(t, r); !bytes.Equal(got, again) {
				t.Errorf("v3.SetDefaults changed the converted object:\n%s\nbecame\n%s", got, again)
			}
			if err := v3.Validate(r); err != nil {
				t.Errorf("v3.Validate: %v", err)
			}
			path := filepath.Join("testdata", family, c.name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the conversion:\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}
