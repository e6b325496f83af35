package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
)

// TestDatastoreFromConfigFile: the agent finds its datastore as the CLI
// does, config file included (it used to read flags and ETCD_* only). The
// cases fail in resolution, before anything touches the host.
func TestDatastoreFromConfigFile(t *testing.T) {
	for _, k := range []string{"ETCD_ENDPOINTS", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_CA_CERT_FILE", "ETCD_USERNAME", "ETCD_PASSWORD", "DATASTORE_TYPE"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	k8s := filepath.Join(dir, "k8s.cfg")
	if err := os.WriteFile(k8s, []byte("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"config file read", "", []string{"--config", k8s},
			"datastore config file " + k8s + ": spec.datastoreType: datastore type kubernetes is not supported yet; tortie supports etcdv3"},
		{"flag over file", "", []string{"--config", k8s, "--etcd-endpoints", "http://127.0.0.1:1"},
			"datastore config file " + k8s + ": spec.datastoreType"}, // the type is the file's whatever the endpoints
		{"config file missing", "", []string{"--config", filepath.Join(dir, "missing.cfg")},
			"datastore config file (--config): open " + filepath.Join(dir, "missing.cfg")},
		{"DATASTORE_TYPE", "kubernetes", []string{"--etcd-endpoints", "http://127.0.0.1:1", "--config", os.DevNull},
			"DATASTORE_TYPE: datastore type kubernetes is not supported yet"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DATASTORE_TYPE", tt.env)
			var log bytes.Buffer
			cmd := newCommand(&log)
			cmd.SetArgs(append([]string{"--node-name", "n1", "--nodename-file", "-", "--health-addr", "", "--metrics-addr", ""}, tt.args...))
			err := cmd.Execute()
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSaysWhenTheDatastoreDoesNotAnswer: an agent whose etcd does not
// answer says so, naming the endpoints and where they came from, and keeps
// trying (it stops only when told to).
func TestSaysWhenTheDatastoreDoesNotAnswer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	var log testenv.LogBuffer
	cmd := newCommand(&log)
	cmd.SetArgs([]string{"--node-name", "n1", "--nodename-file", "-", "--health-addr", "", "--etcd-endpoints", dead, "--config", os.DevNull})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	want := `msg="datastore does not answer; retrying" component=datastore endpoints=[` + dead + `]`
	deadline := time.Now().Add(45 * time.Second)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("nothing saying %q in:\n%s", want, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the agent gave up (%v) instead of retrying", err)
	default:
	}
	cancel()
	<-done
}
