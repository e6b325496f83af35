package cli

import (
	"strings"
	"testing"

	"github.com/tortie/tortie/pkg/version"
)

// TestVersionCommand: the client's version and git commit, as calicoctl
// prints them, then the cluster's from ClusterInformation; --version on the
// root says the same in one line.
func TestVersionCommand(t *testing.T) {
	e := newEnv(t)
	info := version.Get()
	client := "Client Version:    " + info.Version + "\nGit commit:        " + info.CommitString() + "\n"
	if out := e.mustRun("version", "--client"); out != client {
		t.Errorf("version --client:\n%s\nwant:\n%s", out, client)
	}
	if out := e.mustRun("--version"); out != "tortie "+info.Version+" (commit "+info.CommitString()+")\n" {
		t.Errorf("--version: %q", out)
	}
	if out := e.mustRun("version"); out != client+"Cluster:           not initialised (nothing written yet)\n" {
		t.Errorf("version before any write:\n%s", out)
	}
	e.mustRun("apply", "-f", "testdata/get-fixtures.yaml")
	out := e.mustRun("version")
	if !strings.HasPrefix(out, client+"Cluster Version:   ") || !strings.Contains(out, "\nCluster Type:      ") ||
		!strings.Contains(out, "\nCluster GUID:      ") || !strings.HasSuffix(out, "Datastore ready:   true\n") {
		t.Errorf("version:\n%s", out)
	}
}
