package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// TestRefused: settings that cannot work stop the typha before it listens,
// saying what is wrong; plain TCP is never a silent default.
func TestRefused(t *testing.T) {
	for _, k := range []string{"TYPHA_CAFILE", "TYPHA_SERVERCERTFILE", "TYPHA_SERVERKEYFILE", "TYPHA_CLIENTCN", "TYPHA_CLIENTURISAN"} {
		t.Setenv(k, "")
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "no TLS given"},
		{[]string{"--insecure-plain-tcp", "--client-cn", "x"}, "--insecure-plain-tcp with TLS files: choose one"},
		{[]string{"--ca-file", "/x/ca.pem", "--client-cn", "node"}, "typha TLS: missing [certificate file key file]"},
		{[]string{"--insecure-plain-tcp", "--kinds", "Pod"}, `--kinds: syncer: unknown kind "Pod"`},
		{[]string{"--insecure-plain-tcp", "--log-level", "loud"}, `--log-level "loud"`},
	} {
		cmd := newCommand(io.Discard)
		cmd.SetArgs(append([]string{"--etcd-endpoints", "http://127.0.0.1:1", "--health-addr", ""}, tt.args...))
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one containing %q", tt.args, err, tt.want)
		}
	}
}

// TestServes: with a datastore it becomes ready, serves /metrics, and stops
// cleanly when its context ends.
func TestServes(t *testing.T) {
	srv := etcdtest.Start(t)
	health, err := etcdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := etcdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var log bytes.Buffer
	cmd := newCommand(&log)
	cmd.SetArgs([]string{"--etcd-endpoints", srv.Endpoint(), "--insecure-plain-tcp", "--listen", "127.0.0.1:0",
		"--health-addr", fmt.Sprintf("127.0.0.1:%d", health), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metrics)})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	get := func(port int, path string) (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get(health, "/readiness")
		if code == http.StatusOK {
			if !strings.Contains(body, "0 agents connected") {
				t.Errorf("readiness body %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %d %s\n%s", code, body, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := get(metrics, "/metrics"); code != http.StatusOK || !strings.Contains(body, "tortie_typha_in_sync 1") {
		t.Errorf("metrics: %d, in-sync line %q", code, grep(body, "tortie_typha_in_sync"))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}

func grep(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
