package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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
	// Others may commit while this builds: any HEAD seen around the build
	// will do.
	heads := []string{git("rev-parse", "HEAD")}
	bin := t.TempDir()
	mk := exec.Command("make", "-C", root, "build", "BIN="+bin)
	mk.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	heads = append(heads, git("rev-parse", "HEAD"))

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
	commitIn := func(what, out, before, after string) {
		t.Helper()
		for _, h := range heads {
			for _, suffix := range []string{"", "-dirty"} {
				if strings.Contains(out, before+h+suffix+after) {
					return
				}
			}
		}
		t.Errorf("%s does not name the commit (%v):\n%s", what, heads, out)
	}
	commitIn("tortie version --client", run("tortie", nil, "version", "--client"), "\nGit commit:        ", "\n")
	commitIn("tortie --version", run("tortie", nil, "--version"), "tortie v0.1.0-dev (commit ", ")\n")
	commitIn("tortie-node --version", run("tortie-node", nil, "--version"), "tortie-node v0.1.0-dev (commit ", ")\n")
	commitIn("tortie-cni", run("tortie-cni", []string{"CNI_COMMAND="}, "--version"), "tortie CNI plugin v0.1.0-dev (commit ", ")")
}
