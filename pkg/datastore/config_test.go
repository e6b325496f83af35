package datastore_test

import (
	"context"
	"errors"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want datastore.Config
	}{
		{"nothing set", nil, datastore.Config{}},
		{"calico variables", map[string]string{
			"ETCD_ENDPOINTS":    "https://10.0.0.1:2379, https://10.0.0.2:2379,,https://10.0.0.3:2379",
			"ETCD_CERT_FILE":    "/etc/calico/cert.pem",
			"ETCD_KEY_FILE":     "/etc/calico/key.pem",
			"ETCD_CA_CERT_FILE": "/etc/calico/ca.pem",
			"ETCD_USERNAME":     "calico",
			"ETCD_PASSWORD":     "secret",
		}, datastore.Config{
			Endpoints: []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"},
			CertFile:  "/etc/calico/cert.pem", KeyFile: "/etc/calico/key.pem", CAFile: "/etc/calico/ca.pem",
			Username: "calico", Password: "secret",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"ETCD_ENDPOINTS", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_CA_CERT_FILE", "ETCD_USERNAME", "ETCD_PASSWORD"} {
				t.Setenv(k, tt.env[k])
			}
			if got := datastore.ConfigFromEnv(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestNewBadTLS(t *testing.T) {
	if _, err := datastore.New(datastore.Config{CAFile: "/nonexistent/ca.pem"}); err == nil {
		t.Fatal("New accepted a CA file that does not exist")
	}
}

func TestPing(t *testing.T) {
	srv := etcdtest.Start(t)
	ok, err := datastore.New(datastore.Config{Endpoints: []string{srv.Endpoint()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ok.Ping(ctx); err != nil {
		t.Errorf("ping of a running server: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	bad, err := datastore.New(datastore.Config{Endpoints: []string{dead}})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	start := time.Now()
	err = bad.Ping(ctx)
	if !errors.Is(err, datastore.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), dead) {
		t.Errorf("ping of nothing: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("a refused connection took %v to report", time.Since(start))
	}
}

// enableAuth turns on etcd authentication with a root user and a user
// "calico" that may read and write /calico/ only, as a cluster secured for
// Calico is set up.
func enableAuth(t *testing.T, endpoint string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := t.Context()
	steps := []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", "root-secret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "calico"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "calico", "/calico/", clientv3.GetPrefixRangeEnd("/calico/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "calico", "calico-secret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "calico", "calico"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("enabling etcd auth, step %d: %v", i+1, err)
		}
	}
}

// TestUsernamePasswordFromConfigFile: calicoctl.cfg's etcdUsername and
// etcdPassword reach the etcd client: with them a user limited to /calico/
// pings, writes, reads and watches; with a wrong password the error says
// authentication failed.
func TestUsernamePasswordFromConfigFile(t *testing.T) {
	clearEnv(t)
	srv := etcdtest.Start(t)
	enableAuth(t, srv.Endpoint())
	file := func(password string) string {
		return writeFile(t, "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n"+
			"  etcdEndpoints: "+srv.Endpoint()+"\n  etcdUsername: calico\n  etcdPassword: "+password+"\n")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	r, err := datastore.Resolve(datastore.Sources{Flags: datastore.Flags{ConfigFile: file("calico-secret")}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.Username != "calico" || r.Config.Password != "calico-secret" || r.Origins.Password.Source != datastore.FromFile {
		t.Fatalf("resolved %+v from %+v", r.Config, r.Origins)
	}
	be, err := datastore.New(r.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if err := be.Ping(ctx); err != nil {
		t.Fatalf("ping as calico: %v", err)
	}
	w := be.Watch(ctx, "/calico/", 0)
	if _, err := be.Create(ctx, "/calico/resources/v3/x", []byte("1")); err != nil {
		t.Fatalf("write as calico: %v", err)
	}
	if kv, err := be.Get(ctx, "/calico/resources/v3/x"); err != nil || string(kv.Value) != "1" {
		t.Fatalf("read as calico: %v %v", kv, err)
	}
	select {
	case ev := <-w:
		if ev.Err != nil {
			t.Fatalf("watch as calico: %v", ev.Err)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}
	if _, err := be.Get(ctx, "/elsewhere"); err == nil {
		t.Error("calico read outside /calico/")
	}

	r, err = datastore.Resolve(datastore.Sources{Flags: datastore.Flags{ConfigFile: file("wrong")}})
	if err != nil {
		t.Fatal(err)
	}
	r.Config.RetryTimeout = 2 * time.Second
	bad, err := datastore.New(r.Config)
	if err == nil {
		defer bad.Close()
		err = bad.Ping(ctx)
	}
	if err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("wrong password: %v", err)
	}
	// The message says who tried, and where the user and password came from.
	cfg := r.ConfigFile
	if err := r.WrapError(err); err == nil || !strings.HasPrefix(err.Error(), "datastore at "+srv.Endpoint()+" (from "+cfg+"), as user \"calico\" (from "+cfg+"; password from "+cfg+"): ") {
		t.Errorf("wrong password, wrapped: %v", err)
	}
}

// TestInlinePEMFromConfigFile: a calicoctl.cfg whose etcdCACert, etcdCert
// and etcdKey hold the PEM itself reaches an etcd that demands a client
// certificate.
func TestInlinePEMFromConfigFile(t *testing.T) {
	for _, k := range datastoreEnv {
		t.Setenv(k, "") // restored after the test
		os.Unsetenv(k)  // unset, not empty: the etcd server reads them too
	}
	p := newPKI(t)
	c := startCluster(t, 1, p)
	block := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return "|\n    " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n    ") + "\n"
	}
	cfg := writeFile(t, "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n"+
		"  etcdEndpoints: "+c.members[0].endpoint()+"\n  etcdCACert: "+block(p.ca)+"  etcdCert: "+block(p.clientCert)+"  etcdKey: "+block(p.clientKey))
	r, err := datastore.Resolve(datastore.Sources{Flags: datastore.Flags{ConfigFile: cfg}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.CAFile != "" || r.Config.CertFile != "" || r.Config.KeyFile != "" || r.Config.CAPEM == "" || r.Config.KeyPEM == "" {
		t.Fatalf("resolved %+v", r.Config)
	}
	be, err := datastore.New(r.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ctx := t.Context()
	if _, err := be.Create(ctx, "/calico/inline", []byte("ok")); err != nil {
		t.Fatalf("write over TLS with inline PEM: %v", err)
	}
	if kv, err := be.Get(ctx, "/calico/inline"); err != nil || string(kv.Value) != "ok" {
		t.Fatalf("read over TLS with inline PEM: %v %v", kv, err)
	}
}
