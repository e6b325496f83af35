package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tortie/tortie/internal/testenv"
)

// TestBuiltBinariesKnowTheirCommit: `make build` stamps the git commit into
// tortie, tortie-node and tortie-cni even when GOFLAGS says
// -buildvcs=false, and each prints it: `tortie version`, `tortie
// --version`, `tortie-node --version`, and tortie-cni run by hand.
func TestBuiltBinariesKnowTheirCommit(t *testing.T) {
	for _, tool := range []string{"make", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, tool)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
		if err != nil {
			testenv.Missing(t, "a git checkout git can read (git "+strings.Join(args, " ")+": "+err.Error()+")")
		}
		return strings.TrimSpace(string(out))
	}
	// Others may commit while this builds: the commit stamped must be one
	// from the HEAD before the build to the HEAD after it.
	before := git("rev-parse", "HEAD")
	bin := t.TempDir()
	mk := exec.Command("make", "-C", root, "build", "BIN="+bin)
	mk.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	after := git("rev-parse", "HEAD")
	between := func(commit string) bool {
		for _, pair := range [][2]string{{before, commit}, {commit, after}} {
			if exec.Command("git", "-C", root, "merge-base", "--is-ancestor", pair[0], pair[1]).Run() != nil {
				return false
			}
		}
		return true
	}

	run := func(name string, env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env = append(os.Environ(), env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
		}
		return out.String()
	}
	commitIn := func(what, out, prefix, suffix string) {
		t.Helper()
		m := regexp.MustCompile(regexp.QuoteMeta(prefix) + `([0-9a-f]{40})(-dirty)?` + regexp.QuoteMeta(suffix)).FindStringSubmatch(out)
		if m == nil || !between(m[1]) {
			t.Errorf("%s does not name a commit of this checkout's HEAD:\n%s", what, out)
		}
	}
	commitIn("tortie version --client", run("tortie", nil, "version", "--client"), "\nGit commit:        ", "\n")
	commitIn("tortie --version", run("tortie", nil, "--version"), "tortie v0.1.0-dev (commit ", ")\n")
	commitIn("tortie-node --version", run("tortie-node", nil, "--version"), "tortie-node v0.1.0-dev (commit ", ")\n")
	commitIn("tortie-cni", run("tortie-cni", []string{"CNI_COMMAND="}, "--version"), "tortie CNI plugin v0.1.0-dev (commit ", ")")
}
