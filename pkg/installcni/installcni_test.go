package installcni

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authv1 "k8s.io/api/authentication/v1"
	"sigs.k8s.io/yaml"
)

// etcdTemplate is a conflist template without Kubernetes placeholders.
const etcdTemplate = `{"name": "net", "cniVersion": "0.3.1", "plugins": [{"type": "tortie",
  "etcd_endpoints": "__ETCD_ENDPOINTS__", "etcd_ca_cert_file": "__ETCD_CA_CERT_FILE__",
  "etcd_cert_file": "__ETCD_CERT_FILE__", "etcd_key_file": "__ETCD_KEY_FILE__",
  "mtu": __CNI_MTU__, "nodename": "__KUBERNETES_NODE_NAME__", "log_level": "__LOG_LEVEL__",
  "datastore_type": "__DATASTORE_TYPE__", "ipam": {"type": "tortie-ipam"}}]}`

type fixture struct {
	root, bin, net, sa, secrets string
	plugin                      []byte
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	root := t.TempDir()
	f := fixture{
		root:    root,
		bin:     filepath.Join(root, "host/opt/cni/bin"),
		net:     filepath.Join(root, "host/etc/cni/net.d"),
		sa:      filepath.Join(root, "sa"),
		secrets: filepath.Join(root, "calico-secrets"),
		plugin:  []byte("\x7fELF the plugin"),
	}
	for _, d := range []string{f.bin, f.sa, f.secrets} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(root, "image/tortie-cni"), f.plugin, 0o755)
	// Another plugin already there, which must be left alone.
	write(t, filepath.Join(f.bin, "loopback"), []byte("loopback"), 0o755)
	write(t, filepath.Join(f.sa, "token"), []byte("pod-token\n"), 0o644)
	write(t, filepath.Join(f.sa, "namespace"), []byte("kube-system"), 0o644)
	write(t, filepath.Join(f.secrets, "etcd-ca"), []byte("CA PEM"), 0o644)
	write(t, filepath.Join(f.secrets, "etcd-cert"), []byte("CERT PEM"), 0o644)
	write(t, filepath.Join(f.secrets, "etcd-key"), []byte("KEY PEM"), 0o600)
	write(t, filepath.Join(f.secrets, "empty"), nil, 0o600)
	return f
}

func write(t *testing.T, p string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
}

// env is the environment the DaemonSet gives the init container, with the
// fixture's directories.
func (f fixture) env(extra map[string]string) func(string) string {
	m := map[string]string{
		"CNI_DEST_BIN_DIR":     f.bin,
		"CNI_DEST_NET_DIR":     f.net,
		"SERVICEACCOUNT_DIR":   f.sa,
		"KUBERNETES_NODE_NAME": "node-1",
		"ETCD_ENDPOINTS":       "http://10.0.0.1:2379",
	}
	for k, v := range extra {
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

// fakeAPIServer answers TokenRequests for kube-system/tortie-cni-plugin
// from a caller with the pod's token, and returns the CA PEM it serves with.
func fakeAPIServer(t *testing.T, allow bool) (host, port string, ca []byte, requests *int) {
	t.Helper()
	n := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		if r.Header.Get("Authorization") != "Bearer pod-token" {
			http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
			return
		}
		if !allow {
			http.Error(w, `{"kind":"Status","message":"serviceaccounts \"tortie-cni-plugin\" is forbidden"}`, http.StatusForbidden)
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/namespaces/kube-system/serviceaccounts/tortie-cni-plugin/token" {
			http.Error(w, "not found: "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		var tr authv1.TokenRequest
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil || tr.Spec.ExpirationSeconds == nil || *tr.Spec.ExpirationSeconds != DefaultTokenExpiration {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		tr.Status.Token = "cni-plugin-token"
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(tr)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	host, port, _ = net.SplitHostPort(u.Host)
	ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return host, port, ca, &n
}

func TestInstall(t *testing.T) {
	type want struct {
		err       string            // substring of the error; "" for success
		conf      map[string]any    // fields of the first plugin
		files     map[string]string // file under the net dir -> content
		kubeToken string            // the kubeconfig's token; "" for no kubeconfig
	}
	tests := []struct {
		name string
		env  map[string]string
		kube string // "": no API server; "allow", "deny": a fake one
		want want
	}{{
		name: "etcd only, no TLS",
		env:  map[string]string{"CNI_NETWORK_CONFIG": etcdTemplate, "CNI_MTU": "1450"},
		want: want{conf: map[string]any{
			"etcd_endpoints": "http://10.0.0.1:2379", "etcd_ca_cert_file": "", "etcd_cert_file": "", "etcd_key_file": "",
			"mtu": 1450.0, "nodename": "node-1", "log_level": "info", "datastore_type": "etcdv3",
		}},
	}, {
		name: "etcd TLS files copied to the host",
		env: map[string]string{"CNI_NETWORK_CONFIG": etcdTemplate, "ETCD_CA_CERT_FILE": "SECRETS/etcd-ca",
			"ETCD_CERT_FILE": "SECRETS/etcd-cert", "ETCD_KEY_FILE": "SECRETS/etcd-key", "LOG_LEVEL": "debug"},
		want: want{
			conf: map[string]any{
				"etcd_ca_cert_file": "/etc/cni/net.d/tortie-tls/etcd-ca", "etcd_cert_file": "/etc/cni/net.d/tortie-tls/etcd-cert",
				"etcd_key_file": "/etc/cni/net.d/tortie-tls/etcd-key", "mtu": 1500.0, "log_level": "debug",
			},
			files: map[string]string{"tortie-tls/etcd-ca": "CA PEM", "tortie-tls/etcd-cert": "CERT PEM", "tortie-tls/etcd-key": "KEY PEM"},
		},
	}, {
		name: "a TLS file named but missing",
		env:  map[string]string{"CNI_NETWORK_CONFIG": etcdTemplate, "ETCD_CA_CERT_FILE": "SECRETS/nope"},
		want: want{err: "tortie-etcd-secrets"},
	}, {
		name: "a TLS file empty",
		env:  map[string]string{"CNI_NETWORK_CONFIG": etcdTemplate, "ETCD_KEY_FILE": "SECRETS/empty"},
		want: want{err: "is empty"},
	}, {
		name: "default template in a cluster: the plugin's own account's token",
		env:  map[string]string{"CNI_SERVICE_ACCOUNT": "tortie-cni-plugin"},
		kube: "allow",
		want: want{
			conf: map[string]any{
				"type": "tortie", "etcd_endpoints": "http://10.0.0.1:2379", "nodename": "node-1",
				"kubernetes": map[string]any{"kubeconfig": "/etc/cni/net.d/tortie-kubeconfig", "node_name": "node-1"},
				"ipam":       map[string]any{"type": "tortie-ipam"}, "policy": map[string]any{"type": "k8s"},
				"log_file_path": "/var/log/tortie/cni.log",
			},
			kubeToken: "cni-plugin-token",
		},
	}, {
		name: "no CNI_SERVICE_ACCOUNT: the pod's token",
		kube: "deny", // never asked
		want: want{conf: map[string]any{"type": "tortie"}, kubeToken: "pod-token"},
	}, {
		name: "the TokenRequest refused",
		env:  map[string]string{"CNI_SERVICE_ACCOUNT": "tortie-cni-plugin"},
		kube: "deny",
		want: want{err: "serviceaccounts/token"},
	}, {
		name: "default template outside a cluster",
		want: want{err: "KUBERNETES_SERVICE_HOST"},
	}, {
		name: "template not JSON once replaced",
		env:  map[string]string{"CNI_NETWORK_CONFIG": `{"name": "x", "plugins": [{"type": "tortie", "mtu": __CNI_MTU__}]}`, "CNI_MTU": "fifteen"},
		want: want{err: "not JSON"},
	}, {
		name: "unknown placeholder",
		env:  map[string]string{"CNI_NETWORK_CONFIG": `{"name": "x", "plugins": [{"type": "tortie", "x": "__NOPE__"}]}`},
		want: want{err: "__NOPE__"},
	}, {
		name: "no plugins",
		env:  map[string]string{"CNI_NETWORK_CONFIG": `{"name": "x"}`},
		want: want{err: "neither plugins nor type"},
	}, {
		name: "conf name without a CNI extension",
		env:  map[string]string{"CNI_NETWORK_CONFIG": etcdTemplate, "CNI_CONF_NAME": "10-tortie"},
		want: want{err: "conflist"},
	}, {
		name: "conf name a path",
		env:  map[string]string{"CNI_NETWORK_CONFIG": etcdTemplate, "CNI_CONF_NAME": "../10-tortie.conflist"},
		want: want{err: "file name"},
	}, {
		name: "other conf name",
		env:  map[string]string{"CNI_NETWORK_CONFIG": etcdTemplate, "CNI_CONF_NAME": "05-tortie.conflist"},
		want: want{conf: map[string]any{"type": "tortie"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = strings.ReplaceAll(v, "SECRETS/", f.secrets+"/")
			}
			var ca []byte
			if tt.kube != "" {
				var host, port string
				host, port, ca, _ = fakeAPIServer(t, tt.kube == "allow")
				write(t, filepath.Join(f.sa, "ca.crt"), ca, 0o644)
				env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = host, port
			}
			c, err := FromEnv(f.env(env), filepath.Join(f.root, "image/tortie-install-cni"))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			c.Out = &out
			err = Install(c)
			if tt.want.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want.err) {
					t.Fatalf("Install: %v, want an error with %q", err, tt.want.err)
				}
				if _, err := os.Stat(filepath.Join(f.net, c.ConfName)); err == nil {
					t.Errorf("a conflist was written despite the error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Install: %v\n%s", err, out.String())
			}
			// The plugin under both names, executable; the other plugin untouched.
			for _, name := range []string{"tortie", "tortie-ipam"} {
				checkFile(t, filepath.Join(f.bin, name), string(f.plugin), 0o755)
			}
			checkFile(t, filepath.Join(f.bin, "loopback"), "loopback", 0o755)
			// The conflist.
			raw, err := os.ReadFile(filepath.Join(f.net, c.ConfName))
			if err != nil {
				t.Fatal(err)
			}
			var conf struct {
				Plugins []map[string]any `json:"plugins"`
			}
			if err := json.Unmarshal(raw, &conf); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want.conf {
				got, _ := json.Marshal(conf.Plugins[0][k])
				exp, _ := json.Marshal(v)
				if !bytes.Equal(got, exp) {
					t.Errorf("conflist %s = %s, want %s", k, got, exp)
				}
			}
			for name, content := range tt.want.files {
				checkFile(t, filepath.Join(f.net, name), content, 0o600)
			}
			kc := filepath.Join(f.net, DefaultKubeconfigName)
			if tt.want.kubeToken == "" {
				if _, err := os.Stat(kc); err == nil {
					t.Errorf("a kubeconfig was written outside a cluster")
				}
			} else {
				checkKubeconfig(t, kc, env, ca, tt.want.kubeToken)
			}
			// A second run changes nothing.
			before := mtimes(t, f.root)
			out.Reset()
			if err := Install(c); err != nil {
				t.Fatalf("second Install: %v", err)
			}
			if strings.Contains(out.String(), "written") {
				t.Errorf("second run wrote files:\n%s", out.String())
			}
			if after := mtimes(t, f.root); !maps.Equal(before, after) {
				t.Errorf("second run changed the directories:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func checkFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), mode)
	}
	if b, _ := os.ReadFile(p); string(b) != content {
		t.Errorf("%s: %q, want %q", p, b, content)
	}
}

func checkKubeconfig(t *testing.T, p string, env map[string]string, ca []byte, token string) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(p)
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
				CAData string `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				Token string `json:"token"`
			} `json:"user"`
		} `json:"users"`
		CurrentContext string `json:"current-context"`
	}
	if err := yaml.Unmarshal(b, &kc); err != nil {
		t.Fatalf("kubeconfig: %v\n%s", err, b)
	}
	if len(kc.Clusters) != 1 || len(kc.Users) != 1 || kc.CurrentContext == "" {
		t.Fatalf("kubeconfig: want one cluster, one user, a current context:\n%s", b)
	}
	wantServer := "https://" + net.JoinHostPort(env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"])
	if kc.Clusters[0].Cluster.Server != wantServer {
		t.Errorf("kubeconfig server %q, want %q", kc.Clusters[0].Cluster.Server, wantServer)
	}
	if got, _ := base64.StdEncoding.DecodeString(kc.Clusters[0].Cluster.CAData); !bytes.Equal(got, ca) {
		t.Errorf("kubeconfig CA is not the ServiceAccount's ca.crt")
	}
	if kc.Users[0].User.Token != token {
		t.Errorf("kubeconfig token %q, want %q", kc.Users[0].User.Token, token)
	}
}

func mtimes(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		m[p] = info.ModTime().String() + " " + info.Mode().String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestUpdateBinariesFalse(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.bin, "tortie"), []byte("old tortie"), 0o755)
	c, err := FromEnv(f.env(map[string]string{"CNI_NETWORK_CONFIG": etcdTemplate, "UPDATE_CNI_BINARIES": "false"}), filepath.Join(f.root, "image/x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Install(c); err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(f.bin, "tortie"), "old tortie", 0o755)
	checkFile(t, filepath.Join(f.bin, "tortie-ipam"), string(f.plugin), 0o755)
	// And true replaces it, through a rename: no temporary file is left.
	c.UpdateBinaries = true
	if err := Install(c); err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(f.bin, "tortie"), string(f.plugin), 0o755)
	entries, _ := os.ReadDir(f.bin)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "loopback tortie tortie-ipam" {
		t.Errorf("bin dir: %v", names)
	}
}

func TestFromEnv(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  map[string]string
		err  string
		chk  func(Config) string
	}{
		{name: "defaults", chk: func(c Config) string {
			if c.DestBinDir != "/host/opt/cni/bin" || c.DestNetDir != "/host/etc/cni/net.d" || c.NetDir != "/etc/cni/net.d" ||
				c.ConfName != DefaultConfName || c.Template != DefaultTemplate || c.MTU != "1500" || c.DatastoreType != "etcdv3" ||
				c.PluginBinary != "/usr/bin/tortie-cni" || !c.UpdateBinaries || c.CNIServiceAccount != "" || c.KubePort != "443" {
				return "unexpected defaults"
			}
			return ""
		}},
		{name: "template file", env: map[string]string{"CNI_NETWORK_CONFIG_FILE": "FILE", "CNI_NETWORK_CONFIG": "ignored"}, chk: func(c Config) string {
			if c.Template != "from file" {
				return "template " + c.Template
			}
			return ""
		}},
		{name: "bad bool", env: map[string]string{"UPDATE_CNI_BINARIES": "yes please"}, err: "UPDATE_CNI_BINARIES"},
		{name: "short token", env: map[string]string{"CNI_TOKEN_EXPIRATION_SECONDS": "60"}, err: "600"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "template")
			write(t, file, []byte("from file"), 0o644)
			env := func(k string) string {
				if v := tt.env[k]; v == "FILE" {
					return file
				}
				return tt.env[k]
			}
			c, err := FromEnv(env, "/usr/bin/tortie-install-cni")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.chk(c); msg != "" {
				t.Errorf("%s: %+v", msg, c)
			}
		})
	}
}
