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
	if c.MTU != 0 || c.WorkloadNamespace != "default" {
		t.Errorf("defaults: %+v", c)
	}
	for in, code := range map[string]uint{
		`{"name":"n","mtu":10}`:                      types.ErrInvalidNetworkConfig,
		`{"name":"n","mtu":-1}`:                      types.ErrInvalidNetworkConfig,
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
	// Calico's deprecated "hostname": after the file, before the host's name.
	c = &NetConf{NodenameFile: filepath.Join(t.TempDir(), "none"), Hostname: "Calico-Host"}
	if n, _ := c.nodeName(); n != "Calico-Host" {
		t.Errorf("hostname key: %s", n)
	}
	c.NodenameFile = file
	if n, _ := c.nodeName(); n != "agent-node" {
		t.Errorf("file before the hostname key: %s", n)
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

// TestCalicoKeys: the keys of Calico's config tortie cannot act on as
// Calico does are refused with code 2 naming the key and its value (never a
// token's), for ADD, CHECK and STATUS of the network plugin; DEL and GC go
// on (Calico's DEL uses none of them) and get the keys to log; the IPAM
// plugin is not concerned; etcd_discovery_srv is refused for every command
// and role. policy.type k8s and kubernetes.node_name are accepted.
func TestCalicoKeys(t *testing.T) {
	for _, c := range []struct {
		conf, key, value string
		always           bool
	}{
		{`"kubernetes":{"kubeconfig":"/etc/cni/net.d/calico-kubeconfig"}`, "kubernetes.kubeconfig", "/etc/cni/net.d/calico-kubeconfig", false},
		{`"kubernetes":{"k8s_api_root":"https://10.96.0.1:443"}`, "kubernetes.k8s_api_root", "https://10.96.0.1:443", false},
		{`"policy":{"k8s_api_root":"https://api:6443/api/v1/"}`, "policy.k8s_api_root", "https://api:6443/api/v1/", false},
		{`"policy":{"k8s_auth_token":"s3cret"}`, "policy.k8s_auth_token", "value not shown", false},
		{`"policy":{"k8s_client_certificate":"/c.pem"}`, "policy.k8s_client_certificate", "/c.pem", false},
		{`"policy":{"k8s_client_key":"/k.pem"}`, "policy.k8s_client_key", "/k.pem", false},
		{`"policy":{"k8s_certificate_authority":"/ca.pem"}`, "policy.k8s_certificate_authority", "/ca.pem", false},
		{`"policy":{"type":"istio"}`, "policy.type", `"istio"`, false},
		{`"container_settings":{"allow_ip_forwarding":true}`, "container_settings.allow_ip_forwarding", "true", false},
		{`"readiness_gates":["http://127.0.0.1:9099/readiness"]`, "readiness_gates", "http://127.0.0.1:9099/readiness", false},
		{`"policy_setup_timeout_seconds":10`, "policy_setup_timeout_seconds", "10", false},
		{`"dataplane_options":{"type":"grpc","socket":"unix:///tmp/dp.sock"}`, "dataplane_options", "an alternative dataplane", false},
		{`"etcd_discovery_srv":"example.com"`, "etcd_discovery_srv", "example.com", true},
	} {
		conf, err := parseConf([]byte(`{"cniVersion":"0.3.1","name":"n","type":"calico",` + c.conf + `}`))
		if err != nil {
			t.Fatalf("%s: %v", c.conf, err)
		}
		for _, cmd := range []string{"ADD", "CHECK", "STATUS", "DEL", "GC"} {
			for _, r := range []role{roleMain, roleIPAM} {
				te, skipped := conf.checkCalicoKeys(r, cmd)
				refuse := (r == roleMain || c.always) && (c.always || cmd == "ADD" || cmd == "CHECK" || cmd == "STATUS")
				switch {
				case refuse && te == nil:
					t.Errorf("%s, %s in role %d: not refused", c.conf, cmd, r)
				case refuse && (te.Code != types.ErrUnsupportedField || !strings.HasPrefix(te.Msg, c.key+" set ("+c.value+"): ")):
					t.Errorf("%s, %s: %d %q", c.conf, cmd, te.Code, te.Msg)
				case refuse && strings.Contains(te.Msg, "s3cret"):
					t.Errorf("the token is in the message: %q", te.Msg)
				case !refuse && te != nil:
					t.Errorf("%s, %s in role %d: refused: %q", c.conf, cmd, r, te.Msg)
				case !refuse && r == roleMain && (len(skipped) != 1 || skipped[0].key != c.key):
					t.Errorf("%s, %s: skipped %v, want %s to log", c.conf, cmd, skipped, c.key)
				}
			}
		}
	}
	// What Calico's own manifests carry: the client with policy.type k8s
	// (the Kubernetes mode), or policy.type k8s alone.
	for _, extra := range []string{
		`"kubernetes":{"node_name":"n1","kubeconfig":"/etc/cni/net.d/calico-kubeconfig"}`,
		`"kubernetes":{"node_name":"n1"}`,
		`"kubernetes":{"k8s_api_root":"https://10.96.0.1:443"},"policy":{"type":"k8s","k8s_auth_token":"s3cret","k8s_api_root":"https://api:6443/api/v1/","k8s_client_certificate":"/c.pem","k8s_client_key":"/k.pem","k8s_certificate_authority":"/ca.pem"}`,
	} {
		policy := `"policy":{"type":"k8s"},`
		if strings.Contains(extra, `"policy"`) {
			policy = ""
		}
		conf, err := parseConf([]byte(`{"cniVersion":"0.3.1","name":"k8s-pod-network","type":"calico",` + policy + extra + `,"ipam":{"type":"calico-ipam"}}`))
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"ADD", "CHECK", "STATUS", "DEL", "GC"} {
			if te, skipped := conf.checkCalicoKeys(roleMain, cmd); te != nil || len(skipped) > 0 {
				t.Errorf("policy.type k8s, %s: %s: %v %v", extra, cmd, te, skipped)
			}
		}
	}
}

// TestKubeRESTConfig: the client is configured as Calico's plugin
// configures it: the kubeconfig, then the network config's overrides.
func TestKubeRESTConfig(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://from-file:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: file-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	for _, c := range []struct {
		conf, host, token, err string
	}{
		{`"kubernetes":{"kubeconfig":"` + kc + `"}`, "https://from-file:6443", "file-token", ""},
		{`"kubernetes":{"kubeconfig":"` + kc + `"},"policy":{"k8s_api_root":"https://root:443/api/v1/","k8s_auth_token":"t2"}`, "https://root:443", "t2", ""},
		{`"kubernetes":{"kubeconfig":"` + kc + `","k8s_api_root":"https://kroot:443"},"policy":{"k8s_api_root":"https://root:443"}`, "https://kroot:443", "file-token", ""},
		{`"kubernetes":{"k8s_api_root":"https://only:443"}`, "https://only:443", "", ""},
		{`"kubernetes":{"kubeconfig":"` + dir + `/missing"}`, "", "", "missing"},
	} {
		conf, err := parseConf([]byte(`{"cniVersion":"1.0.0","name":"n","type":"calico","policy":{"type":"k8s"},` + c.conf + `}`))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := conf.kubeRESTConfig()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one naming %q", c.conf, err, c.err)
			}
			if _, err := newKubeClient(conf); err == nil || err.(*types.Error).Code != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "kubernetes.kubeconfig") {
				t.Errorf("%s: newKubeClient error %v, want code 7 naming the key", c.conf, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.conf, err)
			continue
		}
		if rc.Host != c.host || rc.BearerToken != c.token {
			t.Errorf("%s: host %q token %q, want %q %q", c.conf, rc.Host, rc.BearerToken, c.host, c.token)
		}
	}
}

// TestWorkloadMTU: the config's mtu wins; else the MTU file tortie-node
// keeps; else 1500, or with require_mtu_file an error; a file that is there
// but wrong is an error naming it, never a guess.
func TestWorkloadMTU(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, bad, missing := file("good", "1440\n"), file("bad", "fast"), filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name string
		conf NetConf
		want int
		code uint   // of the error, 0 for none
		msg  string // in the error
	}{
		{"mtu set: the file is not read", NetConf{MTU: 1400, MTUFile: bad}, 1400, 0, ""},
		{"the file's", NetConf{MTUFile: good}, 1440, 0, ""},
		{"no file: 1500", NetConf{MTUFile: missing}, DefaultMTU, 0, ""},
		{"no file, required", NetConf{MTUFile: missing, RequireMTUFile: true}, 0, types.ErrInvalidNetworkConfig, "require_mtu_file is set and the MTU file " + missing + " is missing"},
		{"required and there", NetConf{MTUFile: good, RequireMTUFile: true}, 1440, 0, ""},
		{"a wrong file", NetConf{MTUFile: bad}, 0, types.ErrIOFailure, bad + ` holds "fast"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.conf.workloadMTU()
			if tc.code == 0 {
				if err != nil || got != tc.want {
					t.Errorf("= %d, %v; want %d", got, err, tc.want)
				}
				return
			}
			if err == nil || err.Code != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("= %d, %v; want code %d and %q", got, err, tc.code, tc.msg)
			}
		})
	}
}
