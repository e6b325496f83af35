// Package etcdtest starts real etcd servers for tests: an embedded member in
// the test's temp dir, and clients for it. It is for tests only.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
)

// Start runs an embedded etcd in t.TempDir() on a free loopback port and
// stops it when the test ends.
func Start(t testing.TB) *embedded.Server {
	t.Helper()
	return StartWith(t, embedded.ServeConfig{})
}

// StartWith is Start with settings (DataDir and ListenClientURL are filled
// in when empty).
func StartWith(t testing.TB, cfg embedded.ServeConfig) *embedded.Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	// A test's data is thrown away: no test should fail because the disk
	// stalled under other work.
	cfg.UnsafeNoFsync = true
	pickPort := cfg.ListenClientURL == ""
	// A port found free can be taken by another process before etcd binds
	// it; then try another.
	for attempt := 0; ; attempt++ {
		if pickPort {
			port, err := FreePort()
			if err != nil {
				t.Fatalf("etcdtest: %v", err)
			}
			cfg.ListenClientURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		}
		srv, err := embedded.Serve(context.Background(), cfg) // lives until Cleanup
		if err == nil {
			t.Cleanup(func() { srv.Close() })
			return srv
		}
		if !pickPort || !errors.Is(err, syscall.EADDRINUSE) || attempt == 20 {
			t.Fatalf("etcdtest: start etcd: %v", err)
		}
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// NewClient connects a client to srv and closes it when the test ends.
func NewClient(t testing.TB, srv *embedded.Server) *datastore.Etcd {
	t.Helper()
	c, err := datastore.New(datastore.Config{Endpoints: []string{srv.Endpoint()}})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Gated is a backend whose watch of one prefix delivers nothing until
// Release is closed: a datastore that never finishes listing that kind.
type Gated struct {
	*datastore.Etcd
	Prefix  string
	Release chan struct{}
}

// NewGated gates be's watch of prefix.
func NewGated(be *datastore.Etcd, prefix string) *Gated {
	return &Gated{Etcd: be, Prefix: prefix, Release: make(chan struct{})}
}

// Watch is be's Watch, held back for Prefix until Release is closed.
func (g *Gated) Watch(ctx context.Context, prefix string, fromRev int64) <-chan datastore.WatchEvent {
	in := g.Etcd.Watch(ctx, prefix, fromRev)
	if prefix != g.Prefix {
		return in
	}
	out := make(chan datastore.WatchEvent)
	go func() {
		defer close(out)
		select {
		case <-g.Release:
		case <-ctx.Done():
			return
		}
		for ev := range in {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
