package datastore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tortie/tortie/pkg/datastore"
)

var datastoreEnv = []string{"ETCD_ENDPOINTS", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_CA_CERT_FILE", "ETCD_USERNAME", "ETCD_PASSWORD", "DATASTORE_TYPE"}

// clearEnv unsets Calico's variables for the test (t.Setenv restores them).
func clearEnv(t *testing.T) {
	for _, k := range datastoreEnv {
		t.Setenv(k, "")
	}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tortie.cfg")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// resolveField is one setting of Config as the resolver's tests see it.
type resolveField struct {
	name     string
	flagName string
	flag     func(*datastore.Flags, string)
	env      string
	fileKey  string
	get      func(datastore.Config) string
	origin   func(datastore.Origins) datastore.Origin
	def      string
}

var resolveFields = []resolveField{
	{"endpoints", "--etcd-endpoints", func(f *datastore.Flags, v string) { f.Endpoints = v }, "ETCD_ENDPOINTS", "etcdEndpoints",
		func(c datastore.Config) string { return strings.Join(c.Endpoints, ",") },
		func(o datastore.Origins) datastore.Origin { return o.Endpoints }, datastore.DefaultEndpoint},
	{"cert", "--etcd-cert", func(f *datastore.Flags, v string) { f.CertFile = v }, "ETCD_CERT_FILE", "etcdCertFile",
		func(c datastore.Config) string { return c.CertFile },
		func(o datastore.Origins) datastore.Origin { return o.Cert }, ""},
	{"key", "--etcd-key", func(f *datastore.Flags, v string) { f.KeyFile = v }, "ETCD_KEY_FILE", "etcdKeyFile",
		func(c datastore.Config) string { return c.KeyFile },
		func(o datastore.Origins) datastore.Origin { return o.Key }, ""},
	{"ca", "--etcd-ca", func(f *datastore.Flags, v string) { f.CAFile = v }, "ETCD_CA_CERT_FILE", "etcdCACertFile",
		func(c datastore.Config) string { return c.CAFile },
		func(o datastore.Origins) datastore.Origin { return o.CA }, ""},
	{"username", "--etcd-username", func(f *datastore.Flags, v string) { f.Username = v }, "ETCD_USERNAME", "etcdUsername",
		func(c datastore.Config) string { return c.Username },
		func(o datastore.Origins) datastore.Origin { return o.Username }, ""},
	{"password", "--etcd-password", func(f *datastore.Flags, v string) { f.Password = v }, "ETCD_PASSWORD", "etcdPassword",
		func(c datastore.Config) string { return c.Password },
		func(o datastore.Origins) datastore.Origin { return o.Password }, ""},
}

// TestResolvePrecedence: for every setting, each of flag, environment and
// file wins over those after it, and the default applies when none says;
// the other settings are left alone.
func TestResolvePrecedence(t *testing.T) {
	steps := []datastore.Source{datastore.FromFlag, datastore.FromEnv, datastore.FromFile, datastore.FromDefault}
	for _, fld := range resolveFields {
		for i, winner := range steps {
			t.Run(fld.name+"/"+string(winner), func(t *testing.T) {
				clearEnv(t)
				// Every source from the winner down sets its own value.
				var flags datastore.Flags
				file := "spec:\n  datastoreType: etcdv3\n"
				for _, s := range steps[i:] {
					switch v := "http://" + string(s) + ":2379"; s {
					case datastore.FromFlag:
						fld.flag(&flags, v)
					case datastore.FromEnv:
						t.Setenv(fld.env, v)
					case datastore.FromFile:
						file += "  " + fld.fileKey + ": " + v + "\n"
					}
				}
				flags.ConfigFile = writeFile(t, file)
				r, err := datastore.Resolve(datastore.Sources{Flags: flags})
				if err != nil {
					t.Fatal(err)
				}
				want, wantName := "http://"+string(winner)+":2379", ""
				switch winner {
				case datastore.FromFlag:
					wantName = fld.flagName
				case datastore.FromEnv:
					wantName = fld.env
				case datastore.FromFile:
					wantName = flags.ConfigFile
				case datastore.FromDefault:
					want = fld.def
				}
				if got := fld.get(r.Config); got != want {
					t.Errorf("%s = %q, want %q", fld.name, got, want)
				}
				if o := fld.origin(r.Origins); o != (datastore.Origin{Source: winner, Name: wantName}) {
					t.Errorf("%s from %+v, want %s %q", fld.name, o, winner, wantName)
				}
				for _, other := range resolveFields {
					if other.name != fld.name && (other.get(r.Config) != other.def || other.origin(r.Origins).Source != datastore.FromDefault) {
						t.Errorf("%s: %q from %v, want the default", other.name, other.get(r.Config), other.origin(r.Origins))
					}
				}
			})
		}
	}
}

func TestResolveEndpointLists(t *testing.T) {
	clearEnv(t)
	t.Setenv("ETCD_ENDPOINTS", " , ")
	missing := filepath.Join(t.TempDir(), "missing.cfg")
	for _, tt := range []struct {
		flag string
		want []string
		from datastore.Source
	}{
		{"http://a:2379, http://b:2379,,http://c:2379", []string{"http://a:2379", "http://b:2379", "http://c:2379"}, datastore.FromFlag},
		{" , ", []string{datastore.DefaultEndpoint}, datastore.FromDefault}, // a list of nothing sets nothing
	} {
		r, err := datastore.Resolve(datastore.Sources{Flags: datastore.Flags{Endpoints: tt.flag}, DefaultConfigFile: missing, FallbackConfigFile: missing})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.Config.Endpoints, tt.want) || r.Origins.Endpoints.Source != tt.from {
			t.Errorf("%q: %v from %v", tt.flag, r.Config.Endpoints, r.Origins.Endpoints)
		}
	}
}

const inlineFile = `apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata:
spec:
  datastoreType: etcdv3
  etcdEndpoints: "https://127.0.0.1:2379"
  etcdCACert: |
    -----BEGIN CERTIFICATE-----
    Q0E=
    -----END CERTIFICATE-----
  etcdCert: |
    -----BEGIN CERTIFICATE-----
    Q0VSVA==
    -----END CERTIFICATE-----
  etcdKeyFile: /etc/tortie/key.pem
`

// TestResolveFile: the file's fields inline or absent, and the files that
// are not read or refused.
func TestResolveFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, text string
		env        map[string]string
		check      func(t *testing.T, r *datastore.Resolved)
		wantErr    string
	}{
		{name: "flow style, absent fields", text: "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec: {etcdEndpoints: 'http://f1:2379,http://f2:2379'}\n",
			check: func(t *testing.T, r *datastore.Resolved) {
				if !slices.Equal(r.Config.Endpoints, []string{"http://f1:2379", "http://f2:2379"}) || r.Config.CertFile != "" || r.Config.CertPEM != "" ||
					r.Origins.Cert.Source != datastore.FromDefault || r.Origins.DatastoreType.Source != datastore.FromDefault {
					t.Errorf("%+v from %+v", r.Config, r.Origins)
				}
			}},
		{name: "empty file", text: "",
			check: func(t *testing.T, r *datastore.Resolved) {
				if !r.ConfigFileRead || r.Config.Endpoints[0] != datastore.DefaultEndpoint || r.Origins.Endpoints.Source != datastore.FromDefault {
					t.Errorf("%+v from %+v", r.Config, r.Origins)
				}
			}},
		{name: "inline PEM", text: inlineFile,
			check: func(t *testing.T, r *datastore.Resolved) {
				c := r.Config
				if !strings.HasPrefix(c.CAPEM, "-----BEGIN CERTIFICATE-----\nQ0E=\n") || !strings.Contains(c.CertPEM, "Q0VSVA==") || c.CAFile != "" || c.CertFile != "" ||
					c.KeyFile != "/etc/tortie/key.pem" || c.KeyPEM != "" {
					t.Errorf("%+v", c)
				}
				if r.Origins.CA.Source != datastore.FromFile || r.Origins.Cert.Source != datastore.FromFile {
					t.Errorf("origins %+v", r.Origins)
				}
			}},
		{name: "a file set by environment wins over inline PEM", text: inlineFile, env: map[string]string{"ETCD_CA_CERT_FILE": "/env/ca.pem"},
			check: func(t *testing.T, r *datastore.Resolved) {
				if r.Config.CAFile != "/env/ca.pem" || r.Config.CAPEM != "" || r.Origins.CA != (datastore.Origin{Source: datastore.FromEnv, Name: "ETCD_CA_CERT_FILE"}) {
					t.Errorf("%+v from %+v", r.Config, r.Origins.CA)
				}
			}},
		{name: "inline and file both", text: "spec:\n  etcdCACertFile: /a.pem\n  etcdCACert: x\n", wantErr: "spec.etcdCACertFile and spec.etcdCACert are both set"},
		{name: "unknown field", text: "spec:\n  etcdEndpoint: http://typo:2379\n", wantErr: `unknown field "etcdEndpoint"`},
		{name: "not YAML", text: "spec: [", wantErr: "datastore config file " + filepath.Join(dir, "not YAML")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := filepath.Join(dir, tt.name)
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := datastore.Resolve(datastore.Sources{Flags: datastore.Flags{ConfigFile: path}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.ConfigFile != path || !r.ConfigFileRead {
				t.Errorf("config file %q read %v", r.ConfigFile, r.ConfigFileRead)
			}
			tt.check(t, r)
		})
	}
}

// TestResolveMissingFile: the default file may be absent; one the caller
// names may not.
func TestResolveMissingFile(t *testing.T) {
	clearEnv(t)
	missing := filepath.Join(t.TempDir(), "missing.cfg")
	r, err := datastore.Resolve(datastore.Sources{DefaultConfigFile: missing, FallbackConfigFile: missing})
	if err != nil {
		t.Fatalf("missing default file: %v", err)
	}
	if r.ConfigFileRead || r.ConfigFile != missing || !slices.Equal(r.Config.Endpoints, []string{datastore.DefaultEndpoint}) || r.Origins.Endpoints.Source != datastore.FromDefault {
		t.Errorf("missing default file: %+v", r)
	}
	_, err = datastore.Resolve(datastore.Sources{Flags: datastore.Flags{ConfigFile: missing}, DefaultConfigFile: missing, FallbackConfigFile: missing})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "--config") || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing --config file: %v", err)
	}
	_, err = datastore.Resolve(datastore.Sources{
		Flags: datastore.Flags{ConfigFile: missing}, FlagNames: datastore.Flags{ConfigFile: "config_file in the network config"}})
	if err == nil || !strings.Contains(err.Error(), "config_file in the network config") {
		t.Errorf("missing file, another flag name: %v", err)
	}
	if r, _ := datastore.Resolve(datastore.Sources{}); r != nil && r.ConfigFile != datastore.DefaultConfigFile && r.ConfigFile != datastore.CalicoConfigFile {
		t.Errorf("default config file %q", r.ConfigFile)
	}
	if datastore.DefaultConfigFile != "/etc/tortie/tortie.cfg" || datastore.CalicoConfigFile != "/etc/calico/calicoctl.cfg" {
		t.Errorf("default config files %s, %s", datastore.DefaultConfigFile, datastore.CalicoConfigFile)
	}
}

// TestResolveDatastoreType: anything but etcdv3 is refused, wherever it is
// said; a source before it that says etcdv3 wins.
func TestResolveDatastoreType(t *testing.T) {
	const refused = "datastore type kubernetes is not supported yet; tortie supports etcdv3"
	k8sFile := "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n  kubeconfig: /root/.kube/config\n"
	for _, tt := range []struct {
		name       string
		flag, env  string
		file       string
		wantErr    string
		wantOrigin datastore.Source
	}{
		{name: "env", env: "kubernetes", wantErr: "DATASTORE_TYPE: " + refused},
		{name: "file", file: k8sFile, wantErr: "spec.datastoreType: " + refused},
		{name: "flag", flag: "kubernetes", wantErr: "--datastore-type: " + refused},
		{name: "env etcdv3 over file", env: "etcdv3", file: "spec:\n  datastoreType: kubernetes\n", wantOrigin: datastore.FromEnv},
		{name: "flag etcdv3 over env", flag: "etcdv3", env: "kubernetes", wantOrigin: datastore.FromFlag},
		{name: "file etcdv3", file: "spec:\n  datastoreType: etcdv3\n", wantOrigin: datastore.FromFile},
		{name: "unset", wantOrigin: datastore.FromDefault},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("DATASTORE_TYPE", tt.env)
			path := filepath.Join(t.TempDir(), "tortie.cfg")
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			r, err := datastore.Resolve(datastore.Sources{Flags: datastore.Flags{DatastoreType: tt.flag}, DefaultConfigFile: path, FallbackConfigFile: path + ".none"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Origins.DatastoreType.Source != tt.wantOrigin {
				t.Errorf("type from %+v, want %s", r.Origins.DatastoreType, tt.wantOrigin)
			}
		})
	}
	if err := datastore.CheckType("kubernetes"); err == nil || err.Error() != refused {
		t.Errorf("CheckType: %v", err)
	}
	for _, ok := range []string{"", "etcdv3"} {
		if err := datastore.CheckType(ok); err != nil {
			t.Errorf("CheckType(%q): %v", ok, err)
		}
	}
}

// TestUnreachable: the one message for a datastore that does not answer
// names the endpoints, where they came from and where to set them.
func TestUnreachable(t *testing.T) {
	clearEnv(t)
	missing := filepath.Join(t.TempDir(), "tortie.cfg")
	cause := fmt.Errorf("%w: no etcd endpoint answers: http://127.0.0.1:2379: connection refused", datastore.ErrUnavailable)
	def, err := datastore.Resolve(datastore.Sources{DefaultConfigFile: missing, FallbackConfigFile: missing})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("ETCD_ENDPOINTS", "http://e1:2379,http://e2:2379")
	env, err := datastore.Resolve(datastore.Sources{DefaultConfigFile: missing, FallbackConfigFile: missing})
	if err != nil {
		t.Fatal(err)
	}
	cni, err := datastore.Resolve(datastore.Sources{
		Flags:             datastore.Flags{Endpoints: "http://conf:2379"},
		FlagNames:         datastore.Flags{Endpoints: "etcd_endpoints in the network config"},
		DefaultConfigFile: missing, FallbackConfigFile: missing,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		r    *datastore.Resolved
		err  error
		want string
	}{
		{"default", def, cause,
			"datastore at http://127.0.0.1:2379 (default) does not answer: no etcd endpoint answers: http://127.0.0.1:2379: connection refused; set --etcd-endpoints, ETCD_ENDPOINTS or " + missing},
		{"env, deadline", env, fmt.Errorf("listing pools: %w", context.DeadlineExceeded),
			"datastore at http://e1:2379,http://e2:2379 (from ETCD_ENDPOINTS) does not answer: listing pools: context deadline exceeded; set --etcd-endpoints, ETCD_ENDPOINTS or " + missing},
		{"network config", cni, cause,
			"datastore at http://conf:2379 (from etcd_endpoints in the network config) does not answer: no etcd endpoint answers: http://127.0.0.1:2379: connection refused; set etcd_endpoints in the network config, ETCD_ENDPOINTS or " + missing},
		{"another error", env, datastore.ErrConflict,
			"datastore at http://e1:2379,http://e2:2379 (from ETCD_ENDPOINTS): datastore: revision conflict"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.WrapError(tt.err)
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("%v does not wrap %v", err, tt.err)
			}
			var ue *datastore.UnreachableError
			if errors.As(err, &ue) != !errors.Is(tt.err, datastore.ErrConflict) {
				t.Errorf("UnreachableError: %v", errors.As(err, &ue))
			}
		})
	}
	if def.WrapError(nil) != nil {
		t.Error("WrapError(nil) is not nil")
	}
}

// TestUnreachablePing: what a command shows when nothing listens.
func TestUnreachablePing(t *testing.T) {
	clearEnv(t)
	r, err := datastore.Resolve(datastore.Sources{Flags: datastore.Flags{Endpoints: "http://127.0.0.1:1"}, DefaultConfigFile: filepath.Join(t.TempDir(), "none"), FallbackConfigFile: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatal(err)
	}
	be, err := datastore.New(r.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	err = r.WrapError(be.Ping(context.Background()))
	if !errors.Is(err, datastore.ErrUnavailable) || !strings.HasPrefix(err.Error(), "datastore at http://127.0.0.1:1 (from --etcd-endpoints) does not answer: ") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("ping: %v", err)
	}
}

func TestResolvedLogValue(t *testing.T) {
	clearEnv(t)
	t.Setenv("ETCD_PASSWORD", "secret")
	t.Setenv("ETCD_USERNAME", "calico")
	path := writeFile(t, inlineFile)
	r, err := datastore.Resolve(datastore.Sources{Flags: datastore.Flags{ConfigFile: path, CertFile: "/flag/cert.pem"}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("datastore", "etcd", r)
	line := buf.String()
	for _, want := range []string{
		"etcd.endpoints=https://127.0.0.1:2379", "etcd.from=" + path, `etcd.cert="/flag/cert.pem (from --etcd-cert)"`,
		`etcd.ca="inline (from ` + path + `)"`, `etcd.user="calico (from ETCD_USERNAME)"`,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %s: %s", want, line)
		}
	}
	if strings.Contains(line, "secret") || strings.Contains(line, "Q0E=") {
		t.Errorf("log line shows a secret: %s", line)
	}
}

// TestFlagsBind: the flags every command shares, by the names messages use.
func TestFlagsBind(t *testing.T) {
	var f datastore.Flags
	names := map[string]*string{}
	f.Bind(func(p *string, name, value, usage string) { names[name] = p })
	for name, p := range map[string]*string{"config": &f.ConfigFile, "etcd-endpoints": &f.Endpoints, "etcd-cert": &f.CertFile, "etcd-key": &f.KeyFile, "etcd-ca": &f.CAFile} {
		if names[name] != p {
			t.Errorf("--%s not bound to its field", name)
		}
	}
}

// TestResolveCalicoConfigFile: with no config file named and tortie's own
// absent, calicoctl's is read, etcd user, password and inline PEM included,
// and every message and log line names it; tortie's own, when present, or
// one named, wins; a Kubernetes one is refused saying why it was read.
func TestResolveCalicoConfigFile(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	tortieCfg, calicoCfg := filepath.Join(dir, "tortie.cfg"), filepath.Join(dir, "calicoctl.cfg")
	calico := inlineFile + "  etcdUsername: calico\n  etcdPassword: secret\n"
	if err := os.WriteFile(calicoCfg, []byte(calico), 0o600); err != nil {
		t.Fatal(err)
	}
	src := datastore.Sources{DefaultConfigFile: tortieCfg, FallbackConfigFile: calicoCfg}

	r, err := datastore.Resolve(src)
	if err != nil {
		t.Fatal(err)
	}
	fromCalico := datastore.Origin{Source: datastore.FromFile, Name: calicoCfg}
	if !r.ConfigFileRead || !r.ConfigFileFallback || r.ConfigFile != calicoCfg || r.Origins.Endpoints != fromCalico ||
		r.Config.Username != "calico" || r.Config.Password != "secret" || r.Origins.Password != fromCalico ||
		!strings.Contains(r.Config.CAPEM, "Q0E=") || r.Origins.CA != fromCalico {
		t.Errorf("calicoctl.cfg: %+v from %+v", r.Config, r.Origins)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("datastore", "etcd", r)
	if !strings.Contains(buf.String(), "etcd.config="+calicoCfg) {
		t.Errorf("the log line does not name the file read: %s", buf.String())
	}
	if err := r.WrapError(datastore.ErrUnavailable); !strings.HasSuffix(err.Error(), "set --etcd-endpoints, ETCD_ENDPOINTS or "+calicoCfg) {
		t.Errorf("unreachable: %v", err)
	}

	// tortie's own file wins when it exists.
	if err := os.WriteFile(tortieCfg, []byte("spec: {etcdEndpoints: 'http://own:2379'}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err := datastore.Resolve(src); err != nil || r.ConfigFile != tortieCfg || r.ConfigFileFallback || r.Config.Endpoints[0] != "http://own:2379" || r.Config.Username != "" {
		t.Errorf("tortie.cfg present: %+v %v", r, err)
	}
	// So does a file named, and a missing one named is an error, not a
	// reason to read calicoctl's.
	os.Remove(tortieCfg)
	named := src
	named.Flags.ConfigFile = filepath.Join(dir, "missing.cfg")
	if _, err := datastore.Resolve(named); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing --config: %v", err)
	}

	// A Kubernetes calicoctl.cfg (the usual one on a Calico host) is
	// refused, saying which file said so and why it was read.
	if err := os.WriteFile(calicoCfg, []byte("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n  kubeconfig: /root/.kube/config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = datastore.Resolve(src)
	if want := "datastore config file " + calicoCfg + ": spec.datastoreType: datastore type kubernetes is not supported yet; tortie supports etcdv3 (this file was read because " + tortieCfg + " does not exist; --config names another)"; err == nil || err.Error() != want {
		t.Errorf("kubernetes calicoctl.cfg:\n got %v\nwant %s", err, want)
	}
	t.Setenv("DATASTORE_TYPE", "etcdv3") // the environment overrides the file's type
	if _, err := datastore.Resolve(src); err == nil || !strings.Contains(err.Error(), `unknown field "kubeconfig"`) {
		t.Errorf("kubernetes calicoctl.cfg under DATASTORE_TYPE=etcdv3: %v", err)
	}

	// Neither present: nothing read, and messages name tortie's file.
	os.Remove(calicoCfg)
	if r, err := datastore.Resolve(src); err != nil || r.ConfigFileRead || r.ConfigFile != tortieCfg || r.Origins.Endpoints.Source != datastore.FromDefault {
		t.Errorf("no file: %+v %v", r, err)
	}
}
