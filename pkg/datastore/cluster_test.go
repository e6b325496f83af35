package datastore_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// cluster is a multi-member cluster of the system's etcd binary (Debian's
// etcd-server, a peer nobody here wrote), on loopback.
type cluster struct {
	t       *testing.T
	bin     string
	members []*member
	pki     *pki // when set, clients must use TLS with client certificates
}

type member struct {
	name, dir          string
	clientURL, peerURL string
	args               []string
	cmd                *exec.Cmd
	exited             chan struct{}
}

func (m *member) endpoint() string { return m.clientURL }

// startCluster starts n members, retrying with new ports if one was taken
// between choosing it and etcd binding it.
func startCluster(t *testing.T, n int, pki *pki) *cluster {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		testenv.Missing(t, "etcd (scripts/install-deps.sh installs etcd-server)")
	}
	c := &cluster{t: t, bin: bin, pki: pki}
	t.Cleanup(c.stop)
	for attempt := 1; ; attempt++ {
		err := c.start(n)
		if err == nil {
			return c
		}
		c.stop()
		if attempt == 3 {
			t.Fatalf("etcd cluster: %v", err)
		}
		t.Logf("etcd cluster did not start (%v); again with other ports", err)
	}
}

func (c *cluster) start(n int) error {
	base := c.t.TempDir()
	token := filepath.Base(base) // unique per run: members of other runs never join
	c.members = nil
	var initial []string
	scheme := "http"
	if c.pki != nil {
		scheme = "https"
	}
	for i := range n {
		cp, err1 := etcdtest.FreePort()
		pp, err2 := etcdtest.FreePort()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(base, fmt.Sprintf("m%d", i)),
			clientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, cp),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", pp),
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	for _, m := range c.members {
		m.args = []string{
			"--name", m.name, "--data-dir", m.dir,
			"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", token,
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--logger", "zap", "--log-level", "error",
		}
		if c.pki != nil {
			m.args = append(m.args, "--cert-file", c.pki.serverCert, "--key-file", c.pki.serverKey,
				"--trusted-ca-file", c.pki.ca, "--client-cert-auth")
		}
		if err := c.run(m); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range c.members {
		if err := c.waitHealthy(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) run(m *member) error {
	logf, err := os.OpenFile(m.dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	m.cmd = exec.Command(c.bin, m.args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(exited)
	}(m.cmd, m.exited)
	return nil
}

// waitHealthy waits until m answers a linearizable read.
func (c *cluster) waitHealthy(ctx context.Context, m *member) error {
	cfg := clientv3.Config{Endpoints: []string{m.endpoint()}, Logger: zap.NewNop()}
	if c.pki != nil {
		info := transport.TLSInfo{CertFile: c.pki.clientCert, KeyFile: c.pki.clientKey, TrustedCAFile: c.pki.ca}
		tc, err := info.ClientConfig()
		if err != nil {
			return err
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(rctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-m.exited:
			log, _ := os.ReadFile(m.dir + ".log")
			return fmt.Errorf("member %s exited: %s", m.name, lastLines(log, 5))
		case <-ctx.Done():
			return fmt.Errorf("member %s not healthy: %v", m.name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.endpoint())
	}
	return eps
}

// leader finds the current leader through the maintenance Status API.
func (c *cluster) leader(ctx context.Context, cli *clientv3.Client) (*member, error) {
	for _, m := range c.members {
		st, err := cli.Status(ctx, m.endpoint())
		if err != nil {
			continue
		}
		if st.Leader == st.Header.MemberId {
			return m, nil
		}
	}
	return nil, errors.New("no member says it is the leader")
}

func (c *cluster) kill(m *member) {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.exited
	}
}

func (c *cluster) stop() {
	for _, m := range c.members {
		c.kill(m)
	}
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	h.mu.Unlock()
	return nil
}

// Kill the leader of a real 3-member cluster with SIGKILL in the middle of
// a stream of writes, and bring it back later. Every write must land
// exactly once, no caller may see an error, and a watcher must see every
// change exactly once.
func TestLeaderKilledDuringWrites(t *testing.T) {
	c := startCluster(t, 3, nil)
	logs := &countingHandler{counts: map[string]int{}}
	client, err := datastore.New(datastore.Config{
		Endpoints:      c.endpoints(),
		RequestTimeout: 3 * time.Second,
		Logger:         slog.New(logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	const n = 600
	key := func(i int) string { return fmt.Sprintf("/lk/%04d", i) }
	value := func(i, gen int) []byte { return fmt.Appendf(nil, "value-%d-%d", i, gen) }
	updated := func(i int) bool { return i%5 == 0 }

	events := client.Watch(ctx, "/lk/", 0)
	if ev := <-events; ev.Type != datastore.EventInSync {
		t.Fatalf("first event %v, want in-sync", ev.Type)
	}

	var progress atomic.Int64
	writeErrs := make(chan error, 1)
	go func() {
		defer close(writeErrs)
		for i := range n {
			kv, err := client.Create(ctx, key(i), value(i, 1))
			if err != nil {
				writeErrs <- fmt.Errorf("create %s: %w", key(i), err)
				return
			}
			if updated(i) {
				if _, err := client.Update(ctx, key(i), value(i, 2), kv.Revision); err != nil {
					writeErrs <- fmt.Errorf("update %s: %w", key(i), err)
					return
				}
			}
			progress.Store(int64(i + 1))
		}
	}()

	waitFor := func(p int64) {
		for progress.Load() < p {
			select {
			case err, ok := <-writeErrs:
				if ok {
					t.Fatal(err)
				}
				t.Fatalf("writer stopped at %d", progress.Load())
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	waitFor(150)
	leader, err := c.leader(ctx, client.Client())
	if err != nil {
		t.Fatal(err)
	}
	killedAt := progress.Load()
	c.kill(leader)
	t.Logf("killed leader %s after %d writes", leader.name, killedAt)
	waitFor(killedAt + 150) // the survivors elect a leader and take writes
	if err := c.run(leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted %s after %d writes", leader.name, progress.Load())
	if err := c.waitHealthy(ctx, leader); err != nil {
		t.Fatal(err)
	}
	if err, ok := <-writeErrs; ok {
		t.Fatal(err)
	}

	// Every key once, with its last value, written exactly as often as
	// asked (etcd's per-key version counts the writes).
	resp, err := client.Client().Get(ctx, "/lk/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != n {
		t.Fatalf("%d keys, want %d", len(resp.Kvs), n)
	}
	for i, kv := range resp.Kvs {
		wantGen := int64(1)
		if updated(i) {
			wantGen = 2
		}
		if string(kv.Key) != key(i) || !bytes.Equal(kv.Value, value(i, int(wantGen))) || kv.Version != wantGen {
			t.Errorf("%s = %q (version %d), want %s = %q (version %d)", kv.Key, kv.Value, kv.Version, key(i), value(i, int(wantGen)), wantGen)
		}
	}

	// The watcher saw each create and each update exactly once.
	seen := map[string][]string{}
	want := n + n/5
	for got := 0; got < want; got++ {
		select {
		case ev := <-events:
			if ev.Type != datastore.EventAdded && ev.Type != datastore.EventModified {
				t.Fatalf("unexpected %v event %+v", ev.Type, ev)
			}
			seen[ev.KV.Key] = append(seen[ev.KV.Key], ev.Type.String()+" "+string(ev.KV.Value))
		case <-time.After(20 * time.Second):
			t.Fatalf("watch delivered %d of %d events", got, want)
		}
	}
	for i := range n {
		want := []string{"added " + string(value(i, 1))}
		if updated(i) {
			want = append(want, "modified "+string(value(i, 2)))
		}
		if got := seen[key(i)]; !slices.Equal(got, want) {
			t.Errorf("watch events for %s: %q, want %q", key(i), got, want)
		}
	}
	logs.mu.Lock()
	t.Logf("client log during the run: %v", logs.counts)
	logs.mu.Unlock()
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a client
// certificate.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tortie test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &pki{ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.ca, "CERTIFICATE", caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.serverCert, p.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The client speaks TLS with a client certificate to an etcd that demands
// one, configured the way Calico's variables configure it.
func TestTLSFromEnv(t *testing.T) {
	p := newPKI(t)
	c := startCluster(t, 1, p)
	t.Setenv("ETCD_ENDPOINTS", c.members[0].endpoint())
	t.Setenv("ETCD_CERT_FILE", p.clientCert)
	t.Setenv("ETCD_KEY_FILE", p.clientKey)
	t.Setenv("ETCD_CA_CERT_FILE", p.ca)
	client, err := datastore.New(datastore.ConfigFromEnv())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	if _, err := client.Create(ctx, "/tls", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if kv, err := client.Get(ctx, "/tls"); err != nil || string(kv.Value) != "ok" {
		t.Fatalf("get over TLS: %v, %v", kv, err)
	}

	// Without a client certificate the server refuses the handshake; to the
	// client that looks like an unreachable server, retried until its budget
	// runs out.
	noCert, err := datastore.New(datastore.Config{Endpoints: c.endpoints(), CAFile: p.ca, RetryTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if _, err := noCert.Get(ctx, "/tls"); !errors.Is(err, datastore.ErrUnavailable) {
		t.Fatalf("read without a client certificate: %v, want ErrUnavailable", err)
	}
}
