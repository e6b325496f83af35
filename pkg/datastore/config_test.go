package datastore_test

import (
	"reflect"
	"testing"

	"github.com/tortie/tortie/pkg/datastore"
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
