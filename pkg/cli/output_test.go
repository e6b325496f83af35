package cli

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// topKeys is the order of the keys of the JSON object in s, and of its
// first item's when it has items.
func topKeys(t *testing.T, s string) (keys, itemKeys []string) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	var walk func(depth int, record bool) []string
	walk = func(depth int, record bool) []string {
		var out []string
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%v in %s", err, s)
		}
		switch tok {
		case json.Delim('{'):
			for dec.More() {
				k, _ := dec.Token()
				if record {
					out = append(out, k.(string))
				}
				if k == "items" && depth == 0 {
					tok, _ := dec.Token() // [
					if tok != json.Delim('[') {
						t.Fatalf("items is not a list")
					}
					first := true
					for dec.More() {
						ik := walk(depth+2, first)
						if first {
							itemKeys, first = ik, false
						}
					}
					_, _ = dec.Token() // ]
					continue
				}
				walk(depth+1, false)
			}
			_, _ = dec.Token()
		case json.Delim('['):
			for dec.More() {
				walk(depth+1, false)
			}
			_, _ = dec.Token()
		}
		return out
	}
	keys = walk(0, true)
	return keys, itemKeys
}

// TestJSONKeyOrder: -o json prints keys in Calico's order, as calicoctl
// does (its types' field order), not sorted: kind, apiVersion, metadata,
// spec for a resource; kind, apiVersion, metadata, items for a listing.
func TestJSONKeyOrder(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	resource := []string{"kind", "apiVersion", "metadata", "spec"}
	keys, _ := topKeys(t, e.mustRun("get", "ippool", "pool-a", "-o", "json"))
	if !reflect.DeepEqual(keys, resource) {
		t.Errorf("resource keys %v, want %v", keys, resource)
	}
	for _, args := range [][]string{{"get", "ippools", "-o", "json"}, {"get", "ipreservations", "-o", "json"}} {
		keys, items := topKeys(t, e.mustRun(args...))
		if want := []string{"kind", "apiVersion", "metadata", "items"}; !reflect.DeepEqual(keys, want) {
			t.Errorf("%v: list keys %v, want %v", args, keys, want)
		}
		if items != nil && !reflect.DeepEqual(items, resource) {
			t.Errorf("%v: item keys %v, want %v", args, items, resource)
		}
	}
}
