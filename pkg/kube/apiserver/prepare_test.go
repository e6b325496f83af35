package apiserver

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPrepare: the command line a caller runs itself, and files that a
// second Prepare on the same Dir keeps.
func TestPrepare(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "kube-apiserver")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := Config{Dir: dir, EtcdServers: []string{"http://127.0.0.1:2379", "http://127.0.0.1:3379"}, Binary: bin,
		BindAddress: "0.0.0.0", AdvertiseAddress: "10.250.0.1", Port: 36443,
		Users: []User{{Name: "system:node:h1", Groups: []string{"system:nodes"}}}}
	p, err := Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.URL != "https://10.250.0.1:36443" || p.Argv[0] != bin || p.LogFile != filepath.Join(dir, "kube-apiserver.log") {
		t.Errorf("Prepare: URL %s, Argv[0] %s, LogFile %s", p.URL, p.Argv[0], p.LogFile)
	}
	for _, want := range []string{
		"--bind-address=0.0.0.0", "--secure-port=36443", "--advertise-address=10.250.0.1",
		"--authorization-mode=Node,RBAC", "--allow-privileged=true", "--service-cluster-ip-range=10.96.0.0/16",
		"--etcd-servers=http://127.0.0.1:2379,http://127.0.0.1:3379", "--etcd-prefix=/registry",
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"), "--client-ca-file=" + filepath.Join(dir, "pki/ca.crt"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "pki/sa.key"),
	} {
		if !slices.Contains(p.Argv, want) {
			t.Errorf("Argv without %s: %v", want, p.Argv)
		}
	}
	if slices.ContainsFunc(p.Argv, func(a string) bool { return strings.HasPrefix(a, "--endpoint-reconciler-type") }) {
		t.Errorf("a routable advertise address with the endpoint reconciler off: %v", p.Argv)
	}
	if len(p.Users) != 2 || p.Users[0].Name != AdminUser || p.Kubeconfigs["system:node:h1"] == "" {
		t.Fatalf("users %+v, kubeconfigs %v", p.Users, p.Kubeconfigs)
	}
	kc, err := os.ReadFile(p.Kubeconfigs["system:node:h1"])
	if err != nil || !strings.Contains(string(kc), "server: https://10.250.0.1:36443") || !strings.Contains(string(kc), p.Users[1].Token) {
		t.Fatalf("node kubeconfig: %v\n%s", err, kc)
	}
	again, err := Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(again.Users, p.Users, func(a, b User) bool { return a.Name == b.Name && a.Token == b.Token }) {
		t.Errorf("tokens changed by a second Prepare")
	}

	// Port 0 picks one; a log writer makes no sense for a caller's process.
	cfg.Port = 0
	if p, err := Prepare(cfg); err != nil || p.Config.Port == 0 {
		t.Errorf("Prepare with port 0: %v, port %d", err, p.Config.Port)
	}
	cfg.Log = os.Stderr
	if _, err := Prepare(cfg); err == nil {
		t.Error("Prepare with Log: no error")
	}
}
