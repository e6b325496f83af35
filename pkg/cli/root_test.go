package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCommandContext: datastore commands run under the command's context,
// so cancelling it (Ctrl-C in cmd/tortie) ends them.
func TestCommandContext(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errw bytes.Buffer
	root := NewRootCommand(strings.NewReader(""), &out, &errw)
	root.SetArgs([]string{"--etcd-endpoints", e.ep, "--config", os.DevNull, "get", "ippools"})
	if err := root.ExecuteContext(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("get under a cancelled context: %v", err)
	}
	g := &globals{ctx: ctx, timeout: time.Minute}
	c, done := g.context()
	defer done()
	if c.Err() == nil {
		t.Error("a request context outlives the command's")
	}
	if c, done := (&globals{timeout: time.Minute}).context(); c.Err() != nil {
		t.Error("no command context: the request context is done")
	} else {
		done()
	}
}

// TestNoDatastoreSays: the unreachable message names the endpoints, where
// they came from, and where to set others.
func TestNoDatastoreSays(t *testing.T) {
	e := &env{t: t, ep: "http://127.0.0.1:1"}
	_, err := e.run("", "get", "ippools")
	if err == nil || !strings.HasPrefix(err.Error(), "datastore at http://127.0.0.1:1 (from --etcd-endpoints) does not answer: ") ||
		!strings.Contains(err.Error(), "set --etcd-endpoints, ETCD_ENDPOINTS or "+os.DevNull) {
		t.Errorf("no datastore: %v", err)
	}
	t.Setenv("ETCD_ENDPOINTS", "")
	t.Setenv("DATASTORE_TYPE", "kubernetes")
	cfg := filepath.Join(t.TempDir(), "tortie.cfg")
	_ = os.WriteFile(cfg, []byte("spec:\n  etcdEndpoints: http://127.0.0.1:1\n"), 0o644)
	var out bytes.Buffer
	root := NewRootCommand(strings.NewReader(""), &out, &out)
	root.SetArgs([]string{"--config", cfg, "get", "ippools"})
	if err := root.Execute(); err == nil || err.Error() != "DATASTORE_TYPE: datastore type kubernetes is not supported yet; tortie supports etcdv3" {
		t.Errorf("DATASTORE_TYPE=kubernetes: %v", err)
	}
}
