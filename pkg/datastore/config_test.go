package datastore_test

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

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
