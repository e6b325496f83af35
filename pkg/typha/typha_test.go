package typha_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tortie/tortie/internal/testpki"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/typha"
)

const (
	prefA = "/calico/resources/v3/projectcalico.org/a/"
	prefB = "/calico/resources/v3/projectcalico.org/b/"
	prefC = "/calico/resources/v3/projectcalico.org/c/"
)

// pki is a CA with a typha and an agent certificate, written to files.
type pki struct {
	ca           *testpki.CA
	typha, agent testpki.Files
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := testpki.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &pki{ca: ca}
	tp, err := ca.Issue("typha-server", nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ap, err := ca.Issue("typha-client", []string{"spiffe://cluster.local/ns/calico-system/sa/calico-node"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.typha, err = ca.WriteFiles(dir, "typha", tp); err != nil {
		t.Fatal(err)
	}
	if p.agent, err = ca.WriteFiles(dir, "agent", ap); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pki) serverTLS(t *testing.T, clientCN, clientURI string) *tls.Config {
	t.Helper()
	cfg, err := typha.ServerTLS(typha.TLSFiles{CAFile: p.typha.CA, CertFile: p.typha.Cert, KeyFile: p.typha.Key, PeerCN: clientCN, PeerURISAN: clientURI})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (p *pki) clientTLS(t *testing.T, serverCN, serverURI string) *tls.Config {
	t.Helper()
	cfg, err := typha.ClientTLS(typha.TLSFiles{CAFile: p.agent.CA, CertFile: p.agent.Cert, KeyFile: p.agent.Key, PeerCN: serverCN, PeerURISAN: serverURI})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startTypha runs a server on a fresh loopback port until the returned
// stop is called (or the test ends).
func startTypha(t *testing.T, be datastore.Backend, tlsCfg *tls.Config, mod func(*typha.ServerConfig)) (addr string, srv *typha.Server, stop func()) {
	t.Helper()
	cfg := typha.ServerConfig{Backend: be, Prefixes: []string{prefA, prefB, prefC}, TLS: tlsCfg, Name: "test-typha"}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := typha.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); srv.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return ln.Addr().String(), srv, stop
}

// recorder collects what a stream delivers.
type recorder struct {
	mu     sync.Mutex
	events []string
	state  map[string]string // key → value, as the events build it
	synced map[int]bool
	note   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{state: map[string]string{}, synced: map[int]bool{}, note: make(chan struct{}, 1)}
}

func (r *recorder) handle(i int, ev datastore.WatchEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev.Type {
	case datastore.EventAdded, datastore.EventModified:
		r.state[ev.KV.Key] = string(ev.KV.Value)
		r.events = append(r.events, fmt.Sprintf("%d %v %s=%s more=%v", i, ev.Type, ev.KV.Key, ev.KV.Value, ev.More))
	case datastore.EventDeleted:
		delete(r.state, ev.KV.Key)
		r.events = append(r.events, fmt.Sprintf("%d %v %s more=%v", i, ev.Type, ev.KV.Key, ev.More))
	case datastore.EventInSync:
		r.synced[i] = true
		r.events = append(r.events, fmt.Sprintf("%d in-sync", i))
	}
	select {
	case r.note <- struct{}{}:
	default:
	}
}

// waitFor waits until cond holds of what was recorded.
func (r *recorder) waitFor(t *testing.T, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.note:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; events:\n%s", what, strings.Join(r.events, "\n"))
		}
	}
}

func put(t *testing.T, be *datastore.Etcd, key, value string) {
	t.Helper()
	if _, err := be.Txn(context.Background(), []datastore.Op{{Type: datastore.OpPut, Key: key, Value: []byte(value)}}); err != nil {
		t.Fatal(err)
	}
}

// TestStream: an agent gets a snapshot of the prefixes it asked for (and
// not the others), each ended by its in-sync, then every change in order,
// a transaction's changes marked as one.
func TestStream(t *testing.T) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	put(t, be, prefA+"x", "1")
	put(t, be, prefA+"y", "2")
	put(t, be, prefB+"z", "3")
	put(t, be, prefC+"hidden", "4")
	p := newPKI(t)
	addr, _, _ := startTypha(t, be, p.serverTLS(t, "typha-client", ""), nil)

	cl, err := typha.NewClient(typha.ClientConfig{Addrs: []string{addr}, TLS: p.clientTLS(t, "typha-server", ""), Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Stream(ctx, []string{prefB, prefA}, rec.handle) }()
	rec.waitFor(t, "the snapshot", func(r *recorder) bool { return r.synced[0] && r.synced[1] })
	rec.mu.Lock()
	if want := map[string]string{prefA + "x": "1", prefA + "y": "2", prefB + "z": "3"}; fmt.Sprint(rec.state) != fmt.Sprint(want) {
		t.Errorf("snapshot %v, want %v", rec.state, want)
	}
	rec.events = nil
	rec.mu.Unlock()

	// One transaction: two changes, marked as one; then a deletion; then
	// a change outside what was asked for, then one inside.
	if _, err := be.Txn(ctx, []datastore.Op{
		{Type: datastore.OpPut, Key: prefA + "x", Value: []byte("10")},
		{Type: datastore.OpPut, Key: prefA + "w", Value: []byte("11")},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Delete(ctx, prefA+"y", 0); err != nil {
		t.Fatal(err)
	}
	put(t, be, prefC+"hidden", "5")
	put(t, be, prefB+"z", "30")
	rec.waitFor(t, "the changes", func(r *recorder) bool { return r.state[prefB+"z"] == "30" })
	rec.mu.Lock()
	got := strings.Join(rec.events, "\n")
	rec.mu.Unlock()
	want := strings.Join([]string{
		"1 modified " + prefA + "x=10 more=true",
		"1 added " + prefA + "w=11 more=false",
		"1 deleted " + prefA + "y more=false",
		"0 modified " + prefB + "z=30 more=false",
	}, "\n")
	if got != want {
		t.Errorf("events:\n%s\nwant:\n%s", got, want)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Stream after cancel: %v, want context.Canceled", err)
	}
}

// TestTLSIdentity: both sides check the other's certificate: the CA, and
// the common name or URI SAN configured; a mismatch is refused with an
// error that says what was expected.
func TestTLSIdentity(t *testing.T) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	p := newPKI(t)
	other, err := testpki.NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Issue("typha-client", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	strangerFiles, err := other.WriteFiles(t.TempDir(), "stranger", stranger)
	if err != nil {
		t.Fatal(err)
	}
	const uri = "spiffe://cluster.local/ns/calico-system/sa/calico-node"
	for _, tc := range []struct {
		name                string
		clientCN, clientURI string // what the typha requires
		serverCN, serverURI string // what the agent requires
		agentFiles          *testpki.Files
		wantErr             string // "" : streams
	}{
		{name: "CN both ways", clientCN: "typha-client", serverCN: "typha-server"},
		{name: "URI SAN of the agent", clientURI: uri, serverCN: "typha-server"},
		{name: "either matching", clientCN: "someone-else", clientURI: uri, serverCN: "typha-server"},
		{name: "agent CN wrong", clientCN: "felix", serverCN: "typha-server", wantErr: "typha"},
		{name: "typha CN wrong", clientCN: "typha-client", serverCN: "not-typha", wantErr: `matches neither the expected CN "not-typha"`},
		{name: "agent from another CA", clientCN: "typha-client", serverCN: "typha-server", agentFiles: &strangerFiles, wantErr: "typha"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _, stop := startTypha(t, be, p.serverTLS(t, tc.clientCN, tc.clientURI), nil)
			defer stop()
			files := p.agent
			if tc.agentFiles != nil {
				files = *tc.agentFiles
				files.CA = p.agent.CA
			}
			ctls, err := typha.ClientTLS(typha.TLSFiles{CAFile: files.CA, CertFile: files.Cert, KeyFile: files.Key, PeerCN: tc.serverCN, PeerURISAN: tc.serverURI})
			if err != nil {
				t.Fatal(err)
			}
			cl, err := typha.NewClient(typha.ClientConfig{Addrs: []string{addr}, TLS: ctls, Node: "n1", DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			synced := make(chan struct{}, 3)
			err = cl.Stream(ctx, []string{prefA}, func(_ int, ev datastore.WatchEvent) {
				if ev.Type == datastore.EventInSync {
					synced <- struct{}{}
					cancel()
				}
			})
			if tc.wantErr == "" {
				if len(synced) != 1 {
					t.Fatalf("no snapshot: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || len(synced) != 0 {
				t.Fatalf("err %v (synced %d), want one containing %q", err, len(synced), tc.wantErr)
			}
		})
	}
}

// TestTLSFilesIncomplete: half a TLS configuration is an error naming what
// is missing, never a silent fallback to plain TCP.
func TestTLSFilesIncomplete(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		files typha.TLSFiles
		want  string
	}{
		{typha.TLSFiles{CertFile: p.agent.Cert, KeyFile: p.agent.Key, PeerCN: "x"}, "CA file"},
		{typha.TLSFiles{CAFile: p.agent.CA, CertFile: p.agent.Cert, KeyFile: p.agent.Key}, "common name or URI SAN"},
		{typha.TLSFiles{CAFile: p.agent.Cert + ".missing", CertFile: p.agent.Cert, KeyFile: p.agent.Key, PeerCN: "x"}, "no such file"},
		{typha.TLSFiles{CAFile: p.agent.Key, CertFile: p.agent.Cert, KeyFile: p.agent.Key, PeerCN: "x"}, "holds no PEM certificate"},
	} {
		if _, err := typha.ClientTLS(tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ClientTLS(%+v): %v, want an error containing %q", tc.files, err, tc.want)
		}
		if _, err := typha.ServerTLS(tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ServerTLS(%+v): %v, want an error containing %q", tc.files, err, tc.want)
		}
	}
}

// rawHello sends a hello frame by hand and returns the first frame back.
func rawHello(t *testing.T, addr, hello string) (byte, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frame := make([]byte, 5, 5+len(hello))
	binary.BigEndian.PutUint32(frame, uint32(1+len(hello)))
	frame[4] = 1
	frame = append(frame, hello...)
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	return body[0], string(body[1:])
}

// TestHelloRefused: another protocol version or a prefix the typha does
// not serve is answered with an error frame that says so.
func TestHelloRefused(t *testing.T) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	addr, _, _ := startTypha(t, be, nil, nil)
	for _, tc := range []struct{ hello, want string }{
		{`{"version":99,"node":"n1","prefixes":[]}`, "protocol version 99; this typha speaks version 1"},
		{`{"version":1,"node":"n1","prefixes":["/elsewhere/"]}`, "prefix /elsewhere/ is not served here"},
		{`not json`, "hello:"},
	} {
		typ, body := rawHello(t, addr, tc.hello)
		if typ != 5 || !strings.Contains(body, tc.want) {
			t.Errorf("hello %s: frame %d %s, want an error frame containing %q", tc.hello, typ, body, tc.want)
		}
	}
	// A client sees the same refusal as its error.
	cl, err := typha.NewClient(typha.ClientConfig{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	err = cl.Stream(context.Background(), []string{"/elsewhere/"}, func(int, datastore.WatchEvent) {})
	if err == nil || !strings.Contains(err.Error(), "prefix /elsewhere/ is not served here") {
		t.Errorf("Stream of an unserved prefix: %v", err)
	}
}

// TestSlowAgent: an agent that stops reading is disconnected without
// holding up the watch or another agent, which gets every change.
func TestSlowAgent(t *testing.T) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	// MaxLag above the number of changes: only the blocked writes
	// disconnect the slow agent, and a busy machine does not make the
	// fast one fall that far behind.
	addr, tsrv, _ := startTypha(t, be, nil, func(c *typha.ServerConfig) {
		c.MaxLag = 1000
		c.WriteTimeout = 500 * time.Millisecond
	})
	cl, err := typha.NewClient(typha.ClientConfig{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	fast := newRecorder()
	fastDone := make(chan error, 1)
	go func() { fastDone <- cl.Stream(ctx, []string{prefA}, fast.handle) }()
	block := make(chan struct{})
	slowSynced := make(chan struct{})
	slowDone := make(chan error, 1)
	go func() {
		slowDone <- cl.Stream(ctx, []string{prefA}, func(_ int, ev datastore.WatchEvent) {
			if ev.Type == datastore.EventInSync {
				close(slowSynced)
				<-block // stops reading
			}
		})
	}()
	fast.waitFor(t, "the fast agent's snapshot", func(r *recorder) bool { return r.synced[0] })
	<-slowSynced

	// Enough to fill the slow agent's socket buffers (several MB each way
	// on loopback) a few times over.
	value := strings.Repeat("v", 64<<10)
	const n = 600
	for i := range n {
		put(t, be, fmt.Sprintf("%sk%04d", prefA, i), value)
	}
	fast.waitFor(t, "every change at the fast agent", func(r *recorder) bool { return len(r.state) == n })
	close(block)
	select {
	case err := <-slowDone:
		if err == nil || !(strings.Contains(err.Error(), "too slow") || strings.Contains(err.Error(), "connection lost")) {
			t.Errorf("slow agent's stream ended with %v, want it disconnected", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the slow agent was never disconnected")
	}
	if !tsrv.Ready() {
		t.Error("server not ready")
	}
	cancel()
	<-fastDone
}

// TestIdleAgentLeaving: an agent that goes away while nothing changes is
// noticed by the next ping that fails, not kept until the next change.
func TestIdleAgentLeaving(t *testing.T) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	p := newPKI(t)
	addr, tsrv, _ := startTypha(t, be, p.serverTLS(t, "typha-client", ""), func(c *typha.ServerConfig) { c.PingInterval = 100 * time.Millisecond })
	cl, err := typha.NewClient(typha.ClientConfig{Addrs: []string{addr}, TLS: p.clientTLS(t, "typha-server", ""), Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rec := newRecorder()
	done := make(chan error, 1)
	go func() { done <- cl.Stream(ctx, []string{prefA}, rec.handle) }()
	rec.waitFor(t, "the snapshot", func(r *recorder) bool { return r.synced[0] })
	if n := tsrv.Connections(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	cancel()
	<-done
	for deadline := time.Now().Add(5 * time.Second); tsrv.Connections() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the typha still counts %d agents 5 s after the only one left (pings every 100 ms)", tsrv.Connections())
		}
	}
}

// TestSharedSnapshot: agents that connect close together, asking for the
// same prefixes, get one snapshot encoded once; each still gets every key,
// and a change made after it reaches each of them.
func TestSharedSnapshot(t *testing.T) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	for i := range 50 {
		put(t, be, fmt.Sprintf("%sk%02d", prefA, i), "v")
	}
	addr, tsrv, _ := startTypha(t, be, nil, nil)
	cl, err := typha.NewClient(typha.ClientConfig{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recs := make([]*recorder, 5)
	for i := range recs {
		recs[i] = newRecorder()
		go func() { _ = cl.Stream(ctx, []string{prefA}, recs[i].handle) }()
	}
	for _, r := range recs {
		r.waitFor(t, "the snapshot", func(r *recorder) bool { return r.synced[0] && len(r.state) == 50 })
	}
	put(t, be, prefA+"after", "x")
	for _, r := range recs {
		r.waitFor(t, "the change after the snapshot", func(r *recorder) bool { return r.state[prefA+"after"] == "x" })
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(tsrv.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tortie_typha_snapshots_encoded_total" {
			if n := mf.GetMetric()[0].GetCounter().GetValue(); n != 1 {
				t.Errorf("%v snapshots encoded for 5 agents connecting together, want 1", n)
			}
			return
		}
	}
	t.Error("no tortie_typha_snapshots_encoded_total")
}

// TestLaggingAgent: an agent whose socket is slow (not stuck) and which
// falls more than MaxLag changes behind is told it is too slow and
// disconnected, to come back for a fresh snapshot.
func TestLaggingAgent(t *testing.T) {
	srv := etcdtest.Start(t)
	be := etcdtest.NewClient(t, srv)
	addr, _, _ := startTypha(t, be, nil, func(c *typha.ServerConfig) {
		c.MaxLag = 50
		c.WriteTimeout = time.Minute // only the lag disconnects it
	})
	cl, err := typha.NewClient(typha.ClientConfig{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	synced := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- cl.Stream(context.Background(), []string{prefA}, func(_ int, ev datastore.WatchEvent) {
			if ev.Type == datastore.EventInSync {
				close(synced)
				<-block
			}
		})
	}()
	<-synced
	value := strings.Repeat("v", 64<<10)
	for i := range 600 {
		put(t, be, fmt.Sprintf("%sk%04d", prefA, i), value)
	}
	close(block)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "too slow") {
			t.Errorf("stream ended with %v, want the typha's too slow", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the lagging agent was never disconnected")
	}
}
