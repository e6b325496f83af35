package cli

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/tortie/tortie/pkg/lab"
)

// runLab runs `tortie lab ...` in process with the labs' directory in a
// temp dir, catching the exit status commands choose themselves.
func runLab(t *testing.T, args ...string) (out, errOut string, exit int, err error) {
	t.Helper()
	old := lab.RunDir
	lab.RunDir = t.TempDir()
	t.Cleanup(func() { lab.RunDir = old })
	exit = -1
	labExit = func(code int) { exit = code }
	t.Cleanup(func() { labExit = os.Exit })
	var o, e bytes.Buffer
	root := NewRootCommand(strings.NewReader(""), &o, &e)
	root.SetArgs(append([]string{"lab"}, args...))
	err = root.Execute()
	return o.String(), e.String(), exit, err
}

func TestLabCommands(t *testing.T) {
	out, _, _, err := runLab(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"up", "down", "status", "list", "workload", "exec", "probe", "matrix", "agent", "link"} {
		if !strings.Contains(out, "\n  "+sub+" ") {
			t.Errorf("lab --help does not list %q:\n%s", sub, out)
		}
	}
	if strings.Contains(out, "\n  serve ") {
		t.Errorf("serve is listed; it is hidden:\n%s", out)
	}
}

func TestLabNoLab(t *testing.T) {
	// probe: 2 when the probe cannot be made.
	if _, errOut, exit, err := runLab(t, "probe", "a", "b", "--port", "80"); err != nil || exit != probeError || !strings.Contains(errOut, "no lab") {
		t.Errorf("probe without a lab: exit %d, err %v, stderr %q", exit, err, errOut)
	}
	if _, _, _, err := runLab(t, "down", "--name", "nosuch"); err == nil || !strings.Contains(err.Error(), "no such lab") {
		t.Errorf("down of no lab: %v", err)
	}
	if _, _, _, err := runLab(t, "up", "--name", "Bad_Name"); err == nil || !strings.Contains(err.Error(), "lab name") {
		t.Errorf("up with a bad name: %v", err)
	}
	if _, _, _, err := runLab(t, "up", "--topology", "star"); err == nil || !strings.Contains(err.Error(), "--topology") {
		t.Errorf("up with a bad topology: %v", err)
	}
}

func TestParseLabelList(t *testing.T) {
	m, err := parseLabelList("app=web, tier=front")
	if err != nil || len(m) != 2 || m["app"] != "web" || m["tier"] != "front" {
		t.Errorf("got %v, %v", m, err)
	}
	if _, err := parseLabelList("app"); err == nil {
		t.Error("app without =value accepted")
	}
	if m, err := parseLabelList(""); m != nil || err != nil {
		t.Errorf("empty: %v %v", m, err)
	}
}
