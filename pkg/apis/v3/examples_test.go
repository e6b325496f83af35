package v3

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tortie/tortie/internal/reference"
)

// calicoExamples is the shared set of real Calico documents every kind must
// decode, validate and round-trip.
const calicoExamples = "../../../testdata/shared/testdata/manifests/calico-examples.yaml"

// splitYAMLDocuments splits a multi-document stream at "---" lines, as
// kubectl and sigs.k8s.io/yaml's readers do.
func splitYAMLDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimRight(line, " \t") == "---" {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(docs, cur.Bytes())
}

func TestCalicoExamples(t *testing.T) {
	data, err := os.ReadFile(calicoExamples)
	if err != nil {
		t.Fatalf("the shared Calico examples are missing: %v", err)
	}
	n := 0
	for i, doc := range splitYAMLDocuments(data) {
		r, err := Decode(doc)
		if errors.Is(err, ErrEmptyDocument) {
			continue
		}
		n++
		if err != nil {
			t.Errorf("document %d: decode: %v\n%s", i, err, doc)
			continue
		}
		name := r.GetObjectKind().GroupVersionKind().Kind + "/" + r.GetName()
		t.Run(name, func(t *testing.T) {
			SetDefaults(r)
			if err := Validate(r); err != nil {
				t.Fatalf("validate: %v", err)
			}
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			again, err := Decode(b)
			if err != nil {
				t.Fatalf("decode of own JSON: %v\n%s", err, b)
			}
			if !reflect.DeepEqual(r, again) {
				t.Fatalf("round trip changed the object:\n before %#v\n after  %#v", r, again)
			}
			// Defaulting is idempotent.
			SetDefaults(again)
			if !reflect.DeepEqual(r, again) {
				t.Fatalf("second SetDefaults changed the object")
			}
		})
	}
	if n != 18 {
		t.Errorf("found %d documents, want 18", n)
	}
}

// TestStoredValues decodes every value real Calico stored (etcd-layout.md):
// it marshals back byte for byte, defaulting leaves it unchanged, it
// validates, and its key is where the kind's plural and namespace put it.
func TestStoredValues(t *testing.T) {
	kvs, err := reference.StoredResources()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		key, value := kv.Key, kv.Value
		t.Run(strings.TrimPrefix(key, reference.ResourcePrefix), func(t *testing.T) {
			r, err := Decode([]byte(value))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != value {
				t.Fatalf("marshal differs:\n got  %s\n want %s", b, value)
			}
			SetDefaults(r)
			if b, _ := json.Marshal(r); string(b) != value {
				t.Fatalf("SetDefaults changed a stored value:\n got  %s\n want %s", b, value)
			}
			if err := Validate(r); err != nil {
				t.Fatalf("validate: %v", err)
			}
			k := KindOf(r)
			want := reference.ResourcePrefix + k.Plural + "/"
			if k.Namespaced {
				want += r.GetNamespace() + "/"
			}
			if want += r.GetName(); want != key {
				t.Errorf("key %s, want %s", key, want)
			}
		})
	}
}

func TestSplitYAMLDocuments(t *testing.T) {
	docs := splitYAMLDocuments([]byte("# c\na: 1\n---\nb: 2\n--- \n---\nc: 3"))
	if len(docs) != 4 || string(docs[0]) != "# c\na: 1\n" || string(docs[1]) != "b: 2\n" || len(docs[2]) != 0 || string(docs[3]) != "c: 3\n" {
		t.Fatalf("got %q", docs)
	}
}
