package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

var update = flag.Bool("update", false, "rewrite golden files")

const examplesFile = "../../testdata/shared/testdata/manifests/calico-examples.yaml"

// env is a datastore and a way to run tortie against it, in process.
type env struct {
	t   *testing.T
	ep  string
	raw *datastore.Etcd
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := etcdtest.Start(t)
	return &env{t: t, ep: srv.Endpoint(), raw: etcdtest.NewClient(t, srv)}
}

// run executes tortie with args; stdin feeds "-f -".
func (e *env) run(stdin string, args ...string) (stdout string, err error) {
	var out, errw bytes.Buffer
	root := NewRootCommand(strings.NewReader(stdin), &out, &errw)
	root.SetArgs(append([]string{"--etcd-endpoints", e.ep, "--config", os.DevNull}, args...))
	err = root.Execute()
	return out.String(), err
}

func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	out, err := e.run("", args...)
	if err != nil {
		e.t.Fatalf("tortie %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) keyCount(prefix string) int {
	kvs, _, err := e.raw.List(e.t.Context(), prefix)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(kvs)
}

// TestCalicoExamplesRoundTrip: all 18 documents apply with one command, and
// `get KIND NAME -o yaml` returns each with the same spec after defaulting.
func TestCalicoExamplesRoundTrip(t *testing.T) {
	if _, err := os.Stat(examplesFile); err != nil {
		t.Fatalf("shared test data missing: %v", err)
	}
	e := newEnv(t)
	out := e.mustRun("apply", "-f", examplesFile)
	if strings.TrimSpace(out) != "Successfully applied 18 resource(s)" {
		t.Errorf("apply said %q", out)
	}
	docs, err := readManifests([]string{examplesFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeDocuments(docs, decodeAndValidate); err != nil {
		t.Fatal(err)
	}
	if len(docs) != 18 {
		t.Fatalf("%d documents, want 18", len(docs))
	}
	for _, d := range docs {
		args := []string{"get", v3.KindOf(d.Obj).Kind, d.Obj.GetName(), "-o", "yaml"}
		if ns := d.Obj.GetNamespace(); ns != "" {
			args = append(args, "-n", ns)
		}
		got, err := v3.Decode([]byte(e.mustRun(args...)))
		if err != nil {
			t.Errorf("%s: get output does not decode: %v", d.Describe(), err)
			continue
		}
		if want, have := specOf(t, d.Obj), specOf(t, got); !reflect.DeepEqual(want, have) {
			t.Errorf("%s: spec changed\nwant %v\n got %v", d.Describe(), want, have)
		}
		if got.GetUID() == "" || got.GetResourceVersion() == "" || got.GetCreationTimestamp().Time.IsZero() {
			t.Errorf("%s: missing identity in %v", d.Describe(), got)
		}
	}
	// Applying again changes nothing but revisions: idempotent.
	if out := e.mustRun("apply", "-f", examplesFile); !strings.Contains(out, "18") {
		t.Errorf("second apply: %q", out)
	}
}

func specOf(t *testing.T, r v3.Resource) any {
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m["spec"]
}

const goodDoc = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: fine
spec:
  nets: [192.0.2.0/24]
`

// TestBadManifestWritesNothing: one bad document among good ones writes
// nothing, and the error names the file, the document and the field.
func TestBadManifestWritesNothing(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"reversed port range", `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np1, namespace: prod}
spec:
  ingress:
    - action: Allow
      protocol: TCP
      destination: {ports: ["90:80"]}
`, []string{`NetworkPolicy "np1" in namespace "prod"`, "spec.ingress[0].destination.ports[0]", "reversed"}},
		{"unknown field", `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.0.0.0/16, natOutgoin: true}
`, []string{`IPPool "p1"`, "spec.natOutgoin", "unknown field"}},
		{"unmasked pool CIDR", `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p2}
spec: {cidr: 10.0.0.1/16}
`, []string{"spec.cidr"}},
		{"bad selector", `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g1}
spec: {selector: "app == "}
`, []string{"spec.selector", "expected"}},
		{"ports without protocol", `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g2}
spec:
  egress: [{action: Allow, destination: {ports: [53]}}]
`, []string{"spec.egress[0].destination.ports"}},
		{"icmp code without type", `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g3}
spec:
  ingress: [{action: Allow, protocol: ICMP, icmp: {code: 3}}]
`, []string{"spec.ingress[0].icmp"}},
		{"preDNAT without applyOnForward", `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g4}
spec: {preDNAT: true, ingress: [{action: Deny}]}
`, []string{"spec.applyOnForward", "preDNAT"}},
		{"ipip and vxlan together", `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p3}
spec: {cidr: 10.5.0.0/16, ipipMode: Always, vxlanMode: Always}
`, []string{`IPPool "p3"`, "spec"}},
		{"wrong apiVersion", `apiVersion: projectcalico.org/v1
kind: IPPool
metadata: {name: p4}
spec: {cidr: 10.6.0.0/16}
`, []string{"apiVersion", "projectcalico.org/v3"}},
		{"unknown kind", `apiVersion: projectcalico.org/v3
kind: IPPoool
metadata: {name: p5}
`, []string{"kind", "IPPoool"}},
		{"bad action", `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np2, namespace: prod}
spec: {ingress: [{action: Accept}]}
`, []string{"spec.ingress[0].action"}},
		{"missing name", `apiVersion: projectcalico.org/v3
kind: Profile
metadata: {}
spec: {}
`, []string{"metadata.name"}},
		{"namespace on a cluster kind", `apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: gs, namespace: prod}
spec: {nets: [10.0.0.0/8]}
`, []string{"metadata.namespace"}},
		{"wrong value type", `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p6}
spec: {cidr: 10.7.0.0/16, blockSize: "big"}
`, []string{"spec.blockSize"}},
		{"bad block size", `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p7}
spec: {cidr: 10.8.0.0/16, blockSize: 12}
`, []string{"spec.blockSize"}},
		{"bad peer IP", `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: bp}
spec: {peerIP: 300.1.1.1, asNumber: 64512}
`, []string{"spec.peerIP"}},
		{"not YAML", "apiVersion: [\n", []string{"document 2"}},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
			if err := os.WriteFile(file, []byte(goodDoc+"---\n"+c.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := e.run("", "apply", "-f", file)
			if err == nil {
				t.Fatal("bad manifest accepted")
			}
			msg := err.Error()
			for _, w := range append([]string{file, "document 2"}, c.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q:\n%s", w, msg)
				}
			}
			if strings.Contains(msg, "document 1 ") {
				t.Errorf("the good document was blamed:\n%s", msg)
			}
			if n := e.keyCount("/calico/"); n != 0 {
				t.Errorf("%d keys written", n)
			}
			// validate says the same, offline.
			if _, err := e.run("", "validate", "-f", file); err == nil {
				t.Errorf("validate accepted it")
			}
		})
	}
}

// TestGetTables compares ps and wide tables with golden files.
func TestGetTables(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	cases := [][]string{
		{"get", "ippools"}, {"get", "ippool", "-o", "wide"},
		{"get", "networkpolicies", "-n", "prod"}, {"get", "np", "-A", "-o", "wide"},
		{"get", "globalnetworkpolicies"}, {"get", "gnp", "-o", "wide"},
		{"get", "workloadendpoints", "-n", "prod"}, {"get", "weps", "-A", "-o", "wide"},
		{"get", "nodes"}, {"get", "nodes", "-o", "wide"},
		{"get", "bgppeers"}, {"get", "bgpp", "-o", "wide"},
		{"get", "hostendpoints"}, {"get", "heps", "-o", "wide"},
		{"get", "profiles"}, {"get", "profile", "-o", "wide"},
		{"get", "tiers"}, {"get", "bgpconfig"},
		{"get", "globalnetworksets", "-o", "wide"}, {"get", "ippools", "pool-a", "pool-b"},
	}
	var all strings.Builder
	for _, args := range cases {
		fmt.Fprintf(&all, "$ tortie %s\n%s", strings.Join(args, " "), e.mustRun(args...))
	}
	golden := filepath.Join("testdata", "get.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(all.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if all.String() != string(want) {
		t.Errorf("get output differs from %s (rerun with -update after checking):\n%s", golden, all.String())
	}
}

func TestGetYAMLAndErrors(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	var list struct {
		Kind     string           `json:"kind"`
		Items    []map[string]any `json:"items"`
		Metadata map[string]any   `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(e.mustRun("get", "ippools", "-o", "yaml")), &list); err != nil {
		t.Fatal(err)
	}
	if list.Kind != "IPPoolList" || len(list.Items) != 2 || list.Metadata["resourceVersion"] == "" {
		t.Errorf("list: %+v", list)
	}
	if err := json.Unmarshal([]byte(e.mustRun("get", "ipreservations", "-o", "json")), &list); err != nil || list.Items == nil {
		t.Errorf("empty list must print items: []: %v %+v", err, list)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "ippool", "nope"}, "resource does not exist: IPPool(nope)"},
		{[]string{"get", "bogus"}, `unknown resource type "bogus"`},
		{[]string{"get", "ippool", "-n", "x"}, "IPPool is not namespaced"},
		{[]string{"get", "np", "a", "-A"}, "all-namespaces"},
		{[]string{"get", "ippool", "-o", "xml"}, "unrecognized output format"},
		{[]string{"delete", "ippool", "nope"}, "resource does not exist: IPPool(nope)"},
	} {
		if _, err := e.run("", c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("tortie %v: %v, want %q", c.args, err, c.want)
		}
	}
}

func TestLabelPatchDeleteCommands(t *testing.T) {
	e := newEnv(t)
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	steps := []struct {
		args    []string
		out     string
		wantErr string
	}{
		{[]string{"label", "nodes", "h1", "zone=a"}, "Successfully set label zone on nodes h1", ""},
		{[]string{"label", "nodes", "h1", "zone=b"}, "", "--overwrite"},
		{[]string{"label", "nodes", "h1", "zone=b", "--overwrite"}, "Successfully updated label zone on nodes h1", ""},
		{[]string{"label", "nodes", "h1", "zone", "--remove"}, "Successfully removed label zone from nodes h1", ""},
		{[]string{"label", "nodes", "h1", "zone", "--remove"}, "", "no label"},
		{[]string{"label", "nodes", "h1", "bad key=x"}, "", "metadata.labels"},
		{[]string{"patch", "ippool", "pool-a", "-p", `{"spec":{"disabled":true}}`}, "Successfully patched 1 'IPPool' resource", ""},
		{[]string{"patch", "ippool", "pool-a", "-p", `{"spec":{"blockSize":99}}`}, "", "spec.blockSize"},
		{[]string{"delete", "networkpolicy", "web", "-n", "prod"}, "Successfully deleted 1 'NetworkPolicy' resource(s)", ""},
		{[]string{"delete", "ippool", "pool-a", "pool-b"}, "Successfully deleted 2 'IPPool' resource(s)", ""},
		// calicoctl counts what --skip-not-exists skipped as deleted.
		{[]string{"delete", "ippool", "pool-a", "--skip-not-exists"}, "Successfully deleted 1 'IPPool' resource(s)", ""},
	}
	for _, s := range steps {
		out, err := e.run("", s.args...)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Errorf("tortie %v: %v, want error %q", s.args, err, s.wantErr)
			}
			continue
		}
		if err != nil || strings.TrimSpace(out) != s.out {
			t.Errorf("tortie %v: %q %v, want %q", s.args, out, err, s.out)
		}
	}
	if out := e.mustRun("get", "ippools", "-o", "json"); strings.Contains(out, "pool-a") {
		t.Errorf("pool-a still there")
	}
	// delete -f removes what a manifest names, from stdin too.
	if _, err := e.run(goodDoc, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if out, err := e.run(goodDoc, "delete", "-f", "-"); err != nil || !strings.Contains(out, "Successfully deleted 1 'GlobalNetworkSet'") {
		t.Errorf("delete -f -: %q %v", out, err)
	}
}

func TestCreateReplaceSemantics(t *testing.T) {
	e := newEnv(t)
	if _, err := e.run(goodDoc, "replace", "-f", "-"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("replace of a missing resource: %v", err)
	}
	if out, err := e.run(goodDoc, "create", "-f", "-"); err != nil || !strings.Contains(out, "Successfully created 1 'GlobalNetworkSet'") {
		t.Errorf("create: %q %v", out, err)
	}
	if _, err := e.run(goodDoc, "create", "-f", "-"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second create: %v", err)
	}
	if out, err := e.run(goodDoc, "replace", "-f", "-"); err != nil || !strings.Contains(out, "Successfully replaced 1") {
		t.Errorf("replace: %q %v", out, err)
	}
	// A stale resourceVersion is refused.
	stale := strings.Replace(goodDoc, "name: fine", "name: fine\n  resourceVersion: \"1\"", 1)
	if _, err := e.run(stale, "replace", "-f", "-"); err == nil || !strings.Contains(err.Error(), "resourceVersion") {
		t.Errorf("stale replace: %v", err)
	}
}

func TestDirectoryAndListManifests(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	list := `apiVersion: v1
kind: List
items:
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkSet
  metadata: {name: l1}
  spec: {nets: [10.1.0.0/16]}
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkSet
  metadata: {name: l2}
  spec: {nets: [10.2.0.0/16]}
`
	_ = os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(goodDoc), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "b.yml"), []byte(list), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "c.json"), []byte(`{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"j1"},"spec":{"nets":["10.3.0.0/16"]}}`), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a manifest"), 0o644)
	if out := e.mustRun("apply", "-f", dir); !strings.Contains(out, "Successfully applied 4 'GlobalNetworkSet' resource(s)") {
		t.Errorf("apply dir: %q", out)
	}
}

func TestConfigFile(t *testing.T) {
	e := newEnv(t)
	cfg := filepath.Join(t.TempDir(), "tortie.cfg")
	_ = os.WriteFile(cfg, []byte("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: "+e.ep+"\n"), 0o644)
	var out, errw bytes.Buffer
	root := NewRootCommand(strings.NewReader(""), &out, &errw)
	t.Setenv("ETCD_ENDPOINTS", "")
	root.SetArgs([]string{"--config", cfg, "get", "ippools"})
	if err := root.Execute(); err != nil {
		t.Fatalf("config file not used: %v", err)
	}
	_ = os.WriteFile(cfg, []byte("spec:\n  datastoreType: kubernetes\n"), 0o644)
	root = NewRootCommand(strings.NewReader(""), &out, &errw)
	root.SetArgs([]string{"--config", cfg, "get", "ippools"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "datastoreType") {
		t.Errorf("kubernetes datastore: %v", err)
	}
}

// TestYAMLOutputMatchesSigsYAML: the fast YAML printer prints exactly what
// sigs.k8s.io/yaml (kubectl's and calicoctl's printer) does.
func TestYAMLOutputMatchesSigsYAML(t *testing.T) {
	docs, err := readManifests([]string{examplesFile, "testdata/get-fixtures.yaml"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeDocuments(docs, decodeAndValidate); err != nil {
		t.Fatal(err)
	}
	var all []v3.Resource
	for _, d := range docs {
		all = append(all, d.Obj)
	}
	for _, v := range []any{all, map[string]any{"n": 1e6, "f": 1.5, "s": "123", "b": "true", "e": []string{}}} {
		want, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := toYAML(v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("toYAML differs from sigs.k8s.io/yaml\n got:\n%s\nwant:\n%s", got, want)
		}
	}
}

// TestKubernetesKinds: Kubernetes NetworkPolicy and Namespace objects apply
// and are stored as Calico stores them for a Kubernetes cluster.
func TestKubernetesKinds(t *testing.T) {
	e := newEnv(t)
	manifest := `apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {team: blue}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: blue}}}]
    ports: [{port: 80}]
`
	out, err := e.run(manifest, "apply", "-f", "-")
	if err != nil || !strings.Contains(out, "Successfully applied 2 resource(s)") {
		t.Fatalf("apply: %q %v", out, err)
	}
	np := e.mustRun("get", "networkpolicy", "knp.default.allow-a", "-n", "x", "-o", "yaml")
	for _, want := range []string{"tier: default", "order: 1000", "pod == 'a'", "team == 'blue'", "- 80"} {
		if !strings.Contains(np, want) {
			t.Errorf("converted policy lacks %q:\n%s", want, np)
		}
	}
	prof := e.mustRun("get", "profile", "kns.x", "-o", "yaml")
	if !strings.Contains(prof, "pcns.team: blue") {
		t.Errorf("namespace profile:\n%s", prof)
	}
	bad := strings.Replace(manifest, "port: 80", "port: 80, protocol: ICMP", 1)
	if _, err := e.run(bad, "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), "document 2") || !strings.Contains(err.Error(), "protocol") {
		t.Errorf("bad Kubernetes policy: %v", err)
	}
}

// TestNoDatastore: with nothing listening, commands fail at once and say
// what to do.
func TestNoDatastore(t *testing.T) {
	e := &env{t: t, ep: "http://127.0.0.1:1"}
	start := time.Now()
	_, err := e.run("", "get", "ippools")
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "tortie datastore serve") {
		t.Errorf("no datastore: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to report a refused connection", d)
	}
}

// TestDatastoreServeNeedsItsProgram: `tortie datastore serve` becomes
// tortie-datastore; without it, it says where it looked and what to run.
func TestDatastoreServeNeedsItsProgram(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	e := &env{t: t, ep: "http://127.0.0.1:1"}
	_, err := e.run("", "datastore", "serve", "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "tortie-datastore is neither next to tortie nor on the PATH") ||
		!strings.Contains(err.Error(), "make build") {
		t.Errorf("datastore serve without tortie-datastore: %v", err)
	}
	if _, err := e.run("", "datastore", "serve"); err == nil || !strings.Contains(err.Error(), "--data-dir is required") {
		t.Errorf("datastore serve without --data-dir: %v", err)
	}
}
