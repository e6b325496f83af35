package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestApplyJSONPatch: RFC 6902's operations, its appendix A examples among
// them, and its errors.
func TestApplyJSONPatch(t *testing.T) {
	for _, tt := range []struct {
		name, doc, patch, want, err string
	}{
		{"add member", `{"foo":"bar"}`, `[{"op":"add","path":"/baz","value":"qux"}]`, `{"baz":"qux","foo":"bar"}`, ""},
		{"add array element", `{"foo":["bar","baz"]}`, `[{"op":"add","path":"/foo/1","value":"qux"}]`, `{"foo":["bar","qux","baz"]}`, ""},
		{"append", `{"foo":["bar"]}`, `[{"op":"add","path":"/foo/-","value":["abc","def"]}]`, `{"foo":["bar",["abc","def"]]}`, ""},
		{"remove member", `{"baz":"qux","foo":"bar"}`, `[{"op":"remove","path":"/baz"}]`, `{"foo":"bar"}`, ""},
		{"remove element", `{"foo":["bar","qux","baz"]}`, `[{"op":"remove","path":"/foo/1"}]`, `{"foo":["bar","baz"]}`, ""},
		{"replace", `{"baz":"qux","foo":"bar"}`, `[{"op":"replace","path":"/baz","value":"boo"}]`, `{"baz":"boo","foo":"bar"}`, ""},
		{"move member", `{"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}`, `[{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]`,
			`{"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}`, ""},
		{"move element", `{"foo":["all","grass","cows","eat"]}`, `[{"op":"move","from":"/foo/1","path":"/foo/3"}]`, `{"foo":["all","cows","eat","grass"]}`, ""},
		{"copy", `{"a":{"b":[1]}}`, `[{"op":"copy","from":"/a","path":"/c"},{"op":"add","path":"/c/b/-","value":2}]`, `{"a":{"b":[1]},"c":{"b":[1,2]}}`, ""},
		{"test passes", `{"baz":"qux","foo":["a",2,"c"]}`, `[{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]`, `{"baz":"qux","foo":["a",2,"c"]}`, ""},
		{"escaped pointer", `{"a/b":{"m~n":1}}`, `[{"op":"replace","path":"/a~1b/m~0n","value":2}]`, `{"a/b":{"m~n":2}}`, ""},
		{"whole document", `{"a":1}`, `[{"op":"replace","path":"","value":{"b":2}}]`, `{"b":2}`, ""},
		{"null value", `{"a":1}`, `[{"op":"add","path":"/a","value":null}]`, `{"a":null}`, ""},

		{"test fails", `{"baz":"qux"}`, `[{"op":"test","path":"/baz","value":"bar"}]`, "", `JSON patch operation 1 (test /baz): test failed: the value is "qux"`},
		{"remove missing", `{"a":1}`, `[{"op":"remove","path":"/b"}]`, "", `operation 1 (remove /b): no member "b"`},
		{"replace missing", `{"a":1}`, `[{"op":"replace","path":"/b","value":1}]`, "", `no member "b"`},
		{"add under missing", `{"a":1}`, `[{"op":"add","path":"/b/c","value":1}]`, "", `no member "b"`},
		{"index out of range", `{"a":[1]}`, `[{"op":"add","path":"/a/2","value":1}]`, "", "index 2 is out of range"},
		{"leading zero", `{"a":[1,2]}`, `[{"op":"remove","path":"/a/01"}]`, "", `"01" is not an array index`},
		{"move into itself", `{"a":{"b":1}}`, `[{"op":"move","from":"/a","path":"/a/c"}]`, "", "cannot move a value into itself"},
		{"second fails", `{"a":1}`, `[{"op":"add","path":"/b","value":2},{"op":"remove","path":"/x"}]`, "", "operation 2 (remove /x)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := parseJSONPatch([]byte(tt.patch))
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := json.Unmarshal([]byte(tt.doc), &doc); err != nil {
				t.Fatal(err)
			}
			got, err := applyJSONPatch(doc, ops)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want any
			_ = json.Unmarshal([]byte(tt.want), &want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %s, want %s", compactJSON(got), tt.want)
			}
		})
	}
	for _, bad := range []struct{ patch, err string }{
		{`{"op":"add"}`, "a JSON patch is a JSON array of operations"},
		{`[{"op":"frob","path":"/a"}]`, `unknown op "frob"`},
		{`[{"op":"add","path":"/a"}]`, "no value"},
		{`[{"op":"remove","path":"a"}]`, "is not a JSON pointer"},
		{`[{"op":"remove","path":"/a","valu":1}]`, "unknown field"},
	} {
		_, err := parseJSONPatch([]byte(bad.patch))
		if err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("%s: %v, want %q", bad.patch, err, bad.err)
		}
	}
}

// TestPatchTypes: patch --type json applies an RFC 6902 patch to a stored
// resource, validated and all or nothing; merge and strategic (calicoctl's
// default) are merge patches.
func TestPatchTypes(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	get := func(kind, name, path string) string {
		t.Helper()
		out := e.mustRun("get", kind, name, "-o", "custom-columns=V:"+path)
		return strings.TrimSpace(strings.TrimPrefix(out, "V"))
	}
	steps := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"patch", "ippool", "pool-a", "--type", "json", "-p", `[{"op":"replace","path":"/spec/vxlanMode","value":"Always"}]`}, ""},
		{[]string{"patch", "node", "h3", "-t", "json", "-p", `[{"op":"add","path":"/metadata/labels","value":{"rack":"r3"}}]`}, ""},
		{[]string{"patch", "ippool", "pool-a", "-t", "json", "-p", `[{"op":"test","path":"/spec/natOutgoing","value":false},{"op":"replace","path":"/spec/vxlanMode","value":"Never"}]`}, "test failed: the value is true"},
		{[]string{"patch", "ippool", "pool-a", "-t", "json", "-p", `[{"op":"replace","path":"/spec/blockSize","value":99}]`}, "spec.blockSize"},
		{[]string{"patch", "ippool", "pool-a", "-t", "json", "-p", `[{"op":"replace","path":"/metadata/name","value":"other"}]`}, "cannot change kind, apiVersion, metadata.name or metadata.namespace"},
		{[]string{"patch", "ippool", "pool-a", "-t", "json", "-p", `{"spec":{}}`}, "a JSON patch is a JSON array"},
		{[]string{"patch", "ippool", "nope", "-t", "json", "-p", `[]`}, "not found"},
		{[]string{"patch", "ippool", "pool-a", "-t", "merge", "-p", `{"spec":{"natOutgoing":false}}`}, ""},
		{[]string{"patch", "ippool", "pool-a", "-p", `{"spec":{"disabled":true}}`}, ""},
		{[]string{"patch", "ippool", "pool-a", "-t", "bogus", "-p", `{}`}, `--type "bogus": want strategic, merge or json`},
	}
	for _, s := range steps {
		out, err := e.run("", s.args...)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Errorf("tortie %v: %v, want %q", s.args, err, s.wantErr)
			}
			continue
		}
		if err != nil || out != "Successfully patched 1 '"+map[string]string{"ippool": "IPPool", "node": "Node"}[s.args[1]]+"' resource\n" {
			t.Errorf("tortie %v: %q %v", s.args, out, err)
		}
	}
	for _, c := range []struct{ kind, name, path, want string }{
		{"ippool", "pool-a", ".spec.vxlanMode", "Always"}, // the failed patches changed nothing
		{"ippool", "pool-a", ".spec.blockSize", "26"},
		{"ippool", "pool-a", ".spec.natOutgoing", "<none>"},
		{"ippool", "pool-a", ".spec.disabled", "true"},
		{"node", "h3", ".metadata.labels.rack", "r3"},
	} {
		if got := get(c.kind, c.name, c.path); got != c.want {
			t.Errorf("%s %s %s = %q, want %q", c.kind, c.name, c.path, got, c.want)
		}
	}
}
