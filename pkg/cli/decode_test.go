package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// decodeCorpus is every document of the repository's example manifests and
// test data, and documents that each take a turn of the decoders: lists,
// Kubernetes kinds, duplicated and unknown fields, values of the wrong type
// (some that v3.Decode's lenient second attempt accepts), odd apiVersions and
// kinds, empty and scalar documents.
func decodeCorpus(t *testing.T) [][]byte {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../../examples/*.yaml", "../../examples/*/*.yaml", examplesFile, "testdata/*.yaml", "../apis/k8s/testdata/*/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 10 {
		t.Fatalf("only %d corpus files: %v", len(files), files)
	}
	var docs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range strings.Split(string(b), "\n---") {
			docs = append(docs, []byte(d))
		}
	}
	for _, d := range []string{
		goodDoc,
		rulePoliciesManifest(30000)[4:2000],
		`{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"x"},"spec":{"nets":["10.0.0.0/8"]}}`,
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: x}\nmetadata: {name: y}\n",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: x, name: y}\n",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: x}\nspec: {bogus: 1}\n",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: 1234}\n",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: true}\n",
		"apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: x, namespace: default}\nspec: {containerID: 1234, node: n}\n",
		"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{action: Allow, protocol: 6, destination: {ports: [80, \"81:82\", http, 0]}}]}\n",
		"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {order: abc}\n",
		"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{action: Allow, destination: {ports: [99999]}}]}\n",
		"apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: \"1.10\"}\n",
		"apiVersion: projectcalico.org/v4\nkind: GlobalNetworkSet\nmetadata: {name: x}\n",
		"apiVersion: 3\nkind: GlobalNetworkSet\nmetadata: {name: x}\n",
		"apiVersion: projectcalico.org/v3\nkind: 12\nmetadata: {name: x}\n",
		"apiVersion: projectcalico.org/v3\nkind: Nonsense\nmetadata: {name: x}\n",
		"apiVersion: projectcalico.org/v3\nmetadata: {name: x}\n",
		"APIVERSION: projectcalico.org/v3\nKind: GlobalNetworkSet\nmetadata: {name: x}\n",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nkind: GlobalNetworkSet\nmetadata: {name: x}\n",
		"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k, namespace: prod}\nspec: {podSelector: {}}\n",
		"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k}\nspec: {podSelector: {}, bogus: 1}\n",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {team: a}}\n",
		"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {name: a}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n",
		"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSetList\nitems: [{apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {name: a, name: b}}]\n",
		"kind: List\nitems: 5\n",
		"kind: List\n",
		"kind: \"Li\\x73t\"\nitems: [{apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {name: a}}]\n",
		"kind: List\nkind: List\nitems: []\n",
		"just a string",
		"- a\n- b\n",
		"~",
		"{",
		"a: [1, 2",
		"metadata: {name: x}\n\tbad: tab\n",
		"",
	} {
		docs = append(docs, []byte(d))
	}
	return docs
}

// TestDecodeFromJSONAsFromYAML: decoding from the JSON made while reading a
// manifest gives what decoding the YAML again gives (the result, or the
// error), and so does finding a List's items.
func TestDecodeFromJSONAsFromYAML(t *testing.T) {
	for i, raw := range decodeCorpus(t) {
		js, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			continue // read without JSON: the one path
		}
		name := fmt.Sprintf("doc %d %.60q", i, raw)
		if got, want := listItems(raw, js), listItems(raw, nil); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: list items from JSON %q, from YAML %q", name, got, want)
		}
		got, gotErr := decodeResource(raw, js)
		want, wantErr := decodeResource(raw, nil)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Errorf("%s: error from JSON %v, from YAML %v", name, gotErr, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded from JSON\n%#v\nfrom YAML\n%#v", name, got, want)
		}
	}
}

// TestReadManifestKeepsJSON: the documents read from a manifest carry the
// JSON they decode from, all but List items.
func TestReadManifestKeepsJSON(t *testing.T) {
	m := goodDoc + "---\napiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(strings.TrimSpace(goodDoc), "\n", "\n  ") + "\n"
	docs, err := splitDocuments("m.yaml", bytes.NewReader([]byte(m)))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs[0].json == nil || docs[1].json != nil {
		t.Fatalf("documents %+v", docs)
	}
	if err := decodeDocuments(docs, decodeAndValidate); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(docs[0].Obj, docs[1].Obj) {
		t.Errorf("a document and the same as a List item decode differently:\n%#v\n%#v", docs[0].Obj, docs[1].Obj)
	}
}
