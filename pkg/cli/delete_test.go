package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const threeSets = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: s1}
spec: {nets: [192.0.2.0/26]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: s2}
spec: {nets: [192.0.2.64/26]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: s3}
spec: {nets: [192.0.2.128/26]}
`

// TestDeleteSomeMissing: delete -f with one resource already gone deletes
// the others and reports the missing one by name, exit status 1, as
// calicoctl and kubectl do; --ignore-not-found says nothing of it and
// succeeds; --skip-not-exists counts it as deleted.
func TestDeleteSomeMissing(t *testing.T) {
	e := newEnv(t)
	file := filepath.Join(t.TempDir(), "sets.yaml")
	if err := os.WriteFile(file, []byte(threeSets), 0o644); err != nil {
		t.Fatal(err)
	}
	reset := func() {
		t.Helper()
		e.mustRun("apply", "-f", file)
		e.mustRun("delete", "globalnetworkset", "s2")
	}

	reset()
	out, err := e.run("", "delete", "-f", file)
	if err == nil || err.Error() != file+" document 2: resource does not exist: GlobalNetworkSet(s2)" {
		t.Errorf("delete -f with s2 gone: error %v", err)
	}
	if out != "Successfully deleted 2 'GlobalNetworkSet' resource(s)\n" {
		t.Errorf("delete -f with s2 gone: %q", out)
	}
	if n := e.keyCount("/calico/resources/v3/projectcalico.org/globalnetworksets/"); n != 0 {
		t.Errorf("%d network sets left", n)
	}

	reset()
	if out, err := e.run("", "delete", "-f", file, "--ignore-not-found"); err != nil || out != "Successfully deleted 2 'GlobalNetworkSet' resource(s)\n" {
		t.Errorf("--ignore-not-found: %q %v", out, err)
	}
	if out, err := e.run("", "delete", "-f", file, "--ignore-not-found"); err != nil || out != "" {
		t.Errorf("--ignore-not-found, all gone: %q %v", out, err)
	}
	reset()
	if out, err := e.run("", "delete", "-f", file, "-s"); err != nil || out != "Successfully deleted 3 'GlobalNetworkSet' resource(s)\n" {
		t.Errorf("--skip-not-exists: %q %v", out, err)
	}

	// On the command line too; all missing prints no success line.
	e.mustRun("apply", "-f", file)
	out, err = e.run("", "delete", "globalnetworkset", "s1", "gone", "s3", "also-gone")
	if err == nil || err.Error() != "resource does not exist: GlobalNetworkSet(gone)\nresource does not exist: GlobalNetworkSet(also-gone)" ||
		out != "Successfully deleted 2 'GlobalNetworkSet' resource(s)\n" {
		t.Errorf("delete by name, two missing: %q %v", out, err)
	}
	out, err = e.run("", "delete", "networkpolicy", "nope", "-n", "prod")
	if err == nil || err.Error() != "resource does not exist: NetworkPolicy(prod/nope)" || out != "" {
		t.Errorf("delete of a missing namespaced resource: %q %v", out, err)
	}
	if _, err := e.run("", "delete", "globalnetworkset", "x", "-s", "--ignore-not-found"); err == nil {
		t.Error("--skip-not-exists with --ignore-not-found accepted")
	}
}

// TestDeleteOtherErrorDeletesNothing: a problem other than a missing
// resource (here a stale resourceVersion) still deletes nothing.
func TestDeleteOtherErrorDeletesNothing(t *testing.T) {
	e := newEnv(t)
	if _, err := e.run(threeSets, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	stale := strings.Replace(threeSets, "name: s3}", "name: s3, resourceVersion: \"1\"}", 1)
	stale = strings.Replace(stale, "name: s1}", "name: gone}", 1)
	if _, err := e.run(stale, "delete", "-f", "-"); err == nil || !strings.Contains(err.Error(), "resourceVersion") {
		t.Errorf("stale delete: %v", err)
	}
	if n := e.keyCount("/calico/resources/v3/projectcalico.org/globalnetworksets/"); n != 3 {
		t.Errorf("%d network sets left, want 3", n)
	}
}

// TestRecursiveAndSkipEmpty: -f DIR reads the directory's own files; -R
// its subdirectories too, in lexical order, as calicoctl walks them. A
// file, directory or standard input without resources is an error naming
// it, unless --skip-empty.
func TestRecursiveAndSkipEmpty(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	docs := strings.Split(threeSets, "---\n")
	write("a.yaml", docs[0])
	write("sub/b.yaml", docs[1])
	write("sub/deeper/c.json", `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"s3"},"spec":{"nets":["192.0.2.128/26"]}}`)
	write("sub/notes.txt", "not a manifest")

	if out := e.mustRun("apply", "-f", dir); out != "Successfully applied 1 'GlobalNetworkSet' resource(s)\n" {
		t.Errorf("apply -f DIR: %q", out)
	}
	if out := e.mustRun("validate", "-f", dir, "-R"); out != "3 document(s) valid\n" {
		t.Errorf("validate -R: %q", out)
	}
	if out := e.mustRun("apply", "-f", dir, "--recursive"); out != "Successfully applied 3 'GlobalNetworkSet' resource(s)\n" {
		t.Errorf("apply -R: %q", out)
	}
	if out := e.mustRun("delete", "-R", "-f", dir); out != "Successfully deleted 3 'GlobalNetworkSet' resource(s)\n" {
		t.Errorf("delete -R: %q", out)
	}

	write("sub/empty.yaml", "# nothing yet\n---\n")
	if _, err := e.run("", "apply", "-R", "-f", dir); err == nil || err.Error() != "no resources in file "+filepath.Join(dir, "sub/empty.yaml")+" (--skip-empty allows that)" {
		t.Errorf("an empty file: %v", err)
	}
	if out := e.mustRun("apply", "-R", "-f", dir, "--skip-empty"); out != "Successfully applied 3 'GlobalNetworkSet' resource(s)\n" {
		t.Errorf("--skip-empty: %q", out)
	}

	none := filepath.Join(dir, "sub", "deeper", "none")
	if err := os.Mkdir(none, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"apply", "-f", none}, {"delete", "-f", none}, {"validate", "-f", none}} {
		if _, err := e.run("", args...); err == nil || !strings.HasPrefix(err.Error(), "no resources in directory "+none+" (no *.yaml, *.yml or *.json files; -R reads subdirectories)") {
			t.Errorf("%v: %v", args, err)
		}
	}
	for _, verb := range []string{"apply", "create", "replace", "delete"} {
		if out, err := e.run("", verb, "-f", none, "--skip-empty"); err != nil || out != "No resources specified\n" {
			t.Errorf("%s --skip-empty of an empty directory: %q %v", verb, out, err)
		}
		if _, err := e.run("# only a comment\n", verb, "-f", "-"); err == nil || err.Error() != "no resources in standard input (--skip-empty allows that)" {
			t.Errorf("%s of empty standard input: %v", verb, err)
		}
	}
}
