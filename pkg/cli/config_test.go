package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// withConfigFiles points the CLI's default and fallback config files
// (/etc/tortie/tortie.cfg, /etc/calico/calicoctl.cfg) at def and fallback
// for the test, and clears Calico's environment variables.
func withConfigFiles(t *testing.T, def, fallback string) {
	t.Helper()
	for _, k := range []string{"ETCD_ENDPOINTS", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_CA_CERT_FILE", "ETCD_USERNAME", "ETCD_PASSWORD", "DATASTORE_TYPE"} {
		t.Setenv(k, "")
	}
	saved := configFiles
	configFiles.def, configFiles.fallback = def, fallback
	t.Cleanup(func() { configFiles = saved })
}

// enableEtcdAuth turns etcd's authentication on, with one user: root.
func enableEtcdAuth(t *testing.T, endpoint, rootPassword string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := t.Context()
	if _, err = cli.RoleAdd(ctx, "root"); err == nil {
		if _, err = cli.UserAdd(ctx, "root", rootPassword); err == nil {
			if _, err = cli.UserGrantRole(ctx, "root", "root"); err == nil {
				_, err = cli.AuthEnable(ctx)
			}
		}
	}
	if err != nil {
		t.Fatalf("enabling etcd authentication: %v", err)
	}
}

// runBare runs tortie with exactly args: no --etcd-endpoints, no --config.
func runBare(stdin string, args ...string) (string, error) {
	var out, errw bytes.Buffer
	root := NewRootCommand(strings.NewReader(stdin), &out, &errw)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestCalicoctlConfigFile: on a host set up for calicoctl, with no
// /etc/tortie/tortie.cfg, the CLI reads /etc/calico/calicoctl.cfg, its etcd
// user and password included (here against an etcd with authentication
// on); `datastore config` says which file it read; a wrong password is
// refused with etcd's reason; tortie's own file, when there, wins.
func TestCalicoctlConfigFile(t *testing.T) {
	srv := etcdtest.Start(t)
	enableEtcdAuth(t, srv.Endpoint(), "calico-secret")
	dir := t.TempDir()
	tortieCfg, calicoCfg := filepath.Join(dir, "tortie.cfg"), filepath.Join(dir, "calicoctl.cfg")
	withConfigFiles(t, tortieCfg, calicoCfg)
	writeCfg := func(path, password string) {
		t.Helper()
		text := "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: " +
			srv.Endpoint() + "\n  etcdUsername: root\n  etcdPassword: " + password + "\n"
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg(calicoCfg, "calico-secret")

	if out, err := runBare(goodDoc, "apply", "-f", "-"); err != nil || !strings.Contains(out, "Successfully applied 1") {
		t.Fatalf("apply with calicoctl.cfg: %q %v", out, err)
	}
	if out, err := runBare("", "get", "globalnetworksets"); err != nil || !strings.Contains(out, "fine") {
		t.Errorf("get with calicoctl.cfg: %q %v", out, err)
	}
	out, err := runBare("", "datastore", "config")
	want := "Config file:   " + calicoCfg + " (calicoctl's, read because /etc/tortie/tortie.cfg is not present)\n" +
		"Endpoints:     " + srv.Endpoint() + " (from " + calicoCfg + ")\n" +
		"Certificate:   none\nKey:           none\nCA:            none\n" +
		"User:          root (from " + calicoCfg + ")\n" +
		"Password:      set (from " + calicoCfg + ")\n"
	if err != nil || out != want {
		t.Errorf("datastore config:\n%s%v\nwant:\n%s", out, err, want)
	}
	if strings.Contains(out, "calico-secret") {
		t.Error("datastore config shows the password")
	}

	writeCfg(calicoCfg, "wrong")
	_, err = runBare("", "get", "globalnetworksets")
	if want := "connecting to the datastore at " + srv.Endpoint() + " (from " + calicoCfg + "), as user \"root\" (from " + calicoCfg + "; password from " + calicoCfg + "): "; err == nil ||
		!strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("wrong password: %v\nwant %s...authentication failed", err, want)
	}

	writeCfg(tortieCfg, "calico-secret") // tortie's own file wins
	if out, err := runBare("", "datastore", "config"); err != nil || !strings.HasPrefix(out, "Config file:   "+tortieCfg+"\n") {
		t.Errorf("with tortie.cfg: %q %v", out, err)
	}
	if _, err := runBare("", "get", "globalnetworksets"); err != nil {
		t.Errorf("get with tortie.cfg: %v", err)
	}
}
