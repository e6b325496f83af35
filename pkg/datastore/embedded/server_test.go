package embedded_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/datastore/embedded"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// Two servers side by side in one process: separate data, and each opens
// only its client port (no TCP peer port, which is what lets them coexist).
func TestTwoServersSideBySide(t *testing.T) {
	ctx := context.Background()
	srvs := []*embedded.Server{etcdtest.Start(t), etcdtest.Start(t)}
	if srvs[0].Endpoint() == srvs[1].Endpoint() {
		t.Fatalf("both servers on %s", srvs[0].Endpoint())
	}
	for i, srv := range srvs {
		c := etcdtest.NewClient(t, srv)
		if _, err := c.Create(ctx, "/k", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, srv := range srvs {
		kv, err := etcdtest.NewClient(t, srv).Get(ctx, "/k")
		if err != nil || string(kv.Value) != fmt.Sprint(i) {
			t.Fatalf("server %d: got %v, %v; want %d", i, kv, err, i)
		}
	}

	// Every TCP port this process listens on must be one of the client ports.
	want := map[string]bool{}
	for _, srv := range srvs {
		u, _ := url.Parse(srv.Endpoint())
		want[u.Port()] = true
	}
	for _, port := range listeningTCPPorts(t) {
		if !want[port] {
			t.Errorf("process listens on TCP port %s; only client ports %v expected", port, want)
		}
	}
}

// listeningTCPPorts lists the TCP ports this process listens on, per ss.
func listeningTCPPorts(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		testenv.Missing(t, "ss (iproute2)")
	}
	out, err := exec.Command("ss", "-Hltnp").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	mine := fmt.Sprintf("pid=%d,", os.Getpid())
	var ports []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, mine) {
			continue
		}
		f := strings.Fields(line)
		_, port, err := net.SplitHostPort(f[3])
		if err != nil {
			t.Fatalf("ss line %q: %v", line, err)
		}
		ports = append(ports, port)
	}
	if len(ports) == 0 {
		t.Fatalf("ss shows no listening port for this process:\n%s", out)
	}
	return ports
}

func TestServeRestartKeepsData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv := etcdtest.StartWith(t, embedded.ServeConfig{DataDir: dir})
	c := etcdtest.NewClient(t, srv)
	if _, err := c.Create(ctx, "/persist", []byte("v")); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	select {
	case <-srv.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	// Also from another place: the data dir may be moved.
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	srv2 := etcdtest.StartWith(t, embedded.ServeConfig{DataDir: moved})
	kv, err := etcdtest.NewClient(t, srv2).Get(ctx, "/persist")
	if err != nil || !bytes.Equal(kv.Value, []byte("v")) {
		t.Fatalf("after restart: %v, %v", kv, err)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := embedded.Serve(ctx, embedded.ServeConfig{DataDir: t.TempDir(), ListenClientURL: "http://127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(srv.Endpoint(), ":0") {
		t.Errorf("endpoint %s does not name the bound port", srv.Endpoint())
	}
	cancel()
	<-srv.Done()
}
