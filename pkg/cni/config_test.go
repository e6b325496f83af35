package cni

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

func TestHostVethName(t *testing.T) {
	for _, c := range []struct{ orch, ns, pod, cid, ep, want string }{
		// printf default.w1 | sha1sum -> 187f863ea3934811...
		{"k8s", "default", "w1", "c0ffee", "eth0", "cali187f863ea39"},
		// printf abc123 | sha1sum -> 6367c48dd193d56e...
		{"cni", "default", "", "abc123", "eth0", "cali6367c48dd19"},
	} {
		if got := HostVethName(c.orch, c.ns, c.pod, c.cid, c.ep); got != c.want {
			t.Errorf("HostVethName(%v) = %s, want %s", c, got, c.want)
		}
	}
	if a, b := HostVethName("cni", "", "", "abc123", "eth0"), HostVethName("cni", "", "", "abc123", "eth1"); a == b || len(b) != 15 {
		t.Errorf("second interface: %s, %s", a, b)
	}
}

func TestParseConf(t *testing.T) {
	c, err := parseConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"tortie","ipam":{"type":"tortie-ipam","assign_ipv4":"false","assign_ipv6":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if n4, n6 := c.assignFamilies(); n4 != 0 || n6 != 1 {
		t.Errorf("families %d %d", n4, n6)
	}
	if c.MTU != DefaultMTU || c.WorkloadNamespace != "default" {
		t.Errorf("defaults: %+v", c)
	}
	for in, code := range map[string]uint{
		`{"name":"n","mtu":10}`:                      types.ErrInvalidNetworkConfig,
		`{"type":"tortie"}`:                          types.ErrInvalidNetworkConfig,
		`{"name":"n","datastore_type":"kubernetes"}`: types.ErrInvalidNetworkConfig,
		`{"name":"n","ipam":{"ipv4_pools":[""]}}`:    types.ErrInvalidNetworkConfig,
		`not json`: types.ErrDecodingFailure,
	} {
		_, err := parseConf([]byte(in))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != code {
			t.Errorf("%s: %v, want code %d", in, err, code)
		}
	}
}

func TestDatastoreConfigOrder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tortie.cfg")
	os.WriteFile(file, []byte("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://file:2379\n"), 0o644)
	c := &NetConf{}
	t.Setenv("ETCD_ENDPOINTS", "")
	if cfg, src, _ := c.datastoreConfig(file); !slices.Equal(cfg.Endpoints, []string{"http://file:2379"}) || src != file {
		t.Errorf("file: %v from %s", cfg.Endpoints, src)
	}
	t.Setenv("ETCD_ENDPOINTS", "http://env1:2379,http://env2:2379")
	if cfg, _, _ := c.datastoreConfig(file); !slices.Equal(cfg.Endpoints, []string{"http://env1:2379", "http://env2:2379"}) {
		t.Errorf("env: %v", cfg.Endpoints)
	}
	c.EtcdEndpoints = "http://conf:2379"
	if cfg, _, _ := c.datastoreConfig(file); !slices.Equal(cfg.Endpoints, []string{"http://conf:2379"}) || cfg.RetryTimeout != DefaultDatastoreTimeout {
		t.Errorf("conf: %v %v", cfg.Endpoints, cfg.RetryTimeout)
	}
	t.Setenv("ETCD_ENDPOINTS", "")
	if cfg, _, _ := (&NetConf{}).datastoreConfig(filepath.Join(dir, "missing")); cfg.Endpoints[0] != "http://127.0.0.1:2379" {
		t.Errorf("default: %v", cfg.Endpoints)
	}
}

// TestDatastoreConfigSettings: each setting on its own (the network
// config's TLS files win over the environment's, which win over the
// file's), and DATASTORE_TYPE other than etcdv3 is refused.
func TestDatastoreConfigSettings(t *testing.T) {
	for _, k := range []string{"ETCD_ENDPOINTS", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_CA_CERT_FILE", "ETCD_USERNAME", "ETCD_PASSWORD", "DATASTORE_TYPE"} {
		t.Setenv(k, "")
	}
	file := filepath.Join(t.TempDir(), "tortie.cfg")
	os.WriteFile(file, []byte("spec:\n  etcdEndpoints: http://file:2379\n  etcdCACertFile: /file/ca.pem\n  etcdKeyFile: /file/key.pem\n  etcdUsername: file-user\n"), 0o644)
	t.Setenv("ETCD_KEY_FILE", "/env/key.pem")
	c := &NetConf{EtcdEndpoints: "http://conf:2379", EtcdCertFile: "/conf/cert.pem"}
	cfg, src, err := c.datastoreConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Endpoints[0] != "http://conf:2379" || src != "etcd_endpoints in the network config" || cfg.CertFile != "/conf/cert.pem" ||
		cfg.KeyFile != "/env/key.pem" || cfg.CAFile != "/file/ca.pem" || cfg.Username != "file-user" {
		t.Errorf("%+v from %s", cfg, src)
	}
	if _, src, _ := (&NetConf{}).datastoreConfig(filepath.Join(t.TempDir(), "missing")); src != "default" {
		t.Errorf("default from %q", src)
	}
	t.Setenv("DATASTORE_TYPE", "kubernetes")
	_, _, err = c.datastoreConfig(file)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "DATASTORE_TYPE: datastore type kubernetes is not supported yet") {
		t.Errorf("DATASTORE_TYPE=kubernetes: %v", err)
	}
	c.DatastoreType = "etcdv3" // the network config wins
	if _, _, err := c.datastoreConfig(file); err != nil {
		t.Errorf("datastore_type etcdv3 over DATASTORE_TYPE: %v", err)
	}
	t.Setenv("DATASTORE_TYPE", "")
	os.WriteFile(file, []byte("spec:\n  datastoreType: kubernetes\n"), 0o644)
	if _, _, err := (&NetConf{}).datastoreConfig(file); !errors.As(err, &te) || !strings.Contains(te.Msg, "spec.datastoreType") {
		t.Errorf("file datastoreType kubernetes: %v", err)
	}
}

func TestNodeName(t *testing.T) {
	file := filepath.Join(t.TempDir(), "nodename")
	c := &NetConf{NodenameFile: file}
	h, _ := os.Hostname()
	if n, _ := c.nodeName(); n != strings.ToLower(h) {
		t.Errorf("hostname: %s", n)
	}
	os.WriteFile(file, []byte("agent-node\n"), 0o644)
	if n, _ := c.nodeName(); n != "agent-node" {
		t.Errorf("file: %s", n)
	}
	c.NodeName = "conf-node"
	if n, _ := c.nodeName(); n != "conf-node" {
		t.Errorf("conf: %s", n)
	}
}

func TestIdentify(t *testing.T) {
	c, _ := parseConf([]byte(`{"name":"n","runtimeConfig":{"labels":[{"key":"app","value":"web"}]},"args":{"cni":{"labels":[{"key":"tier","value":"db"}]}}}`))
	w, err := identify(c, "abc", "eth0", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;LABELS=env:prod,app:ignored")
	if err != nil {
		t.Fatal(err)
	}
	if w.orchestrator != v3.OrchestratorKubernetes || w.namespace != "ns1" || w.pod != "p1" {
		t.Errorf("pod identity: %+v", w)
	}
	if w.labels["app"] != "web" || w.labels["tier"] != "db" || w.labels["env"] != "prod" {
		t.Errorf("labels %v", w.labels)
	}
	if got := w.endpointName("h-1"); got != "h--1-k8s-p1-eth0" {
		t.Errorf("endpoint name %s", got)
	}
	if p := w.profiles(c); !slices.Equal(p, []string{"kns.ns1"}) {
		t.Errorf("profiles %v", p)
	}
	w, _ = identify(c, "abc", "eth0", "")
	if w.orchestrator != v3.OrchestratorCNI || w.namespace != "default" || w.workloadID() != "abc" || !slices.Equal(w.profiles(c), []string{"n"}) {
		t.Errorf("container identity: %+v", w)
	}
	if _, err := identify(c, "abc", "eth0", "LABELS=novalue"); err == nil {
		t.Error("malformed LABELS accepted")
	}
	c2, _ := parseConf([]byte(`{"name":"n","runtimeConfig":{"labels":{"bad key!":"x"}}}`))
	if _, err := identify(c2, "abc", "eth0", ""); err == nil {
		t.Error("invalid label accepted")
	}
}
