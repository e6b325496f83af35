package apiserver

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCert(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, f := range []string{caCertFile, caKeyFile, serveCertFile, serveKeyFile, saKeyFile, saPubFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		m[f] = b
	}
	return m
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.250.0.1"), net.ParseIP("10.96.0.1")}
	if err := ensurePKI(dir, ips); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, filepath.Join(dir, caCertFile))
	serving := readCert(t, filepath.Join(dir, serveCertFile))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, name := range append([]string{"127.0.0.1", "10.250.0.1", "10.96.0.1"}, ServingNames...) {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("serving certificate for %s: %v", name, err)
		}
	}
	if !slices.Contains(serving.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Error("serving certificate not for server auth")
	}
	for _, f := range []string{caKeyFile, serveKeyFile, saKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	kb, _ := os.ReadFile(filepath.Join(dir, saKeyFile))
	sa, err := parseKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sa.(*rsa.PrivateKey); !ok {
		t.Errorf("service-account key is %T, want RSA", sa)
	}
	pb, _ := os.ReadFile(filepath.Join(dir, saPubFile))
	if !strings.HasPrefix(string(pb), "-----BEGIN PUBLIC KEY-----") {
		t.Errorf("sa.pub: %.40q", pb)
	}

	// Again with the same addresses: nothing changes.
	before := snapshot(t, dir)
	if err := ensurePKI(dir, ips); err != nil {
		t.Fatal(err)
	}
	for f, b := range snapshot(t, dir) {
		if !bytes.Equal(b, before[f]) {
			t.Errorf("%s rewritten by a second ensurePKI", f)
		}
	}

	// A new address: the serving certificate is reissued by the same CA,
	// everything else is kept.
	more := append(ips, net.ParseIP("10.250.0.2"))
	if err := ensurePKI(dir, more); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, dir)
	for f, b := range after {
		changed := !bytes.Equal(b, before[f])
		if want := f == serveCertFile || f == serveKeyFile; changed != want {
			t.Errorf("%s: changed %v, want %v", f, changed, want)
		}
	}
	serving = readCert(t, filepath.Join(dir, serveCertFile))
	if _, err := serving.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.250.0.2"}); err != nil {
		t.Errorf("reissued serving certificate: %v", err)
	}
}

func TestPKIRefusesHalfACA(t *testing.T) {
	dir := t.TempDir()
	if err := ensurePKI(dir, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, caCertFile)); err != nil {
		t.Fatal(err)
	}
	if err := ensurePKI(dir, []net.IP{net.ParseIP("127.0.0.1")}); err == nil || !strings.Contains(err.Error(), "remove") {
		t.Fatalf("ensurePKI with a CA key but no certificate: %v, want an error", err)
	}
}

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	users, err := ensureTokens(dir, []User{
		{Name: "system:node:h1", Groups: []string{"system:nodes"}},
		{Name: "bob", Token: "bobs-token", Groups: []string{"a", "b"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 3 || users[0].Name != AdminUser || !slices.Equal(users[0].Groups, []string{"system:masters"}) {
		t.Fatalf("users: %+v", users)
	}
	if users[2].Token != "bobs-token" || len(users[0].Token) < 32 || users[0].Token == users[1].Token {
		t.Fatalf("tokens: %+v", users)
	}
	b, _ := os.ReadFile(filepath.Join(dir, tokensFile))
	// kube-apiserver's format: token,user,uid[,"group,group"].
	if !strings.Contains(string(b), "bobs-token,bob,bob,\"a,b\"\n") {
		t.Errorf("tokens.csv:\n%s", b)
	}
	if st, _ := os.Stat(filepath.Join(dir, tokensFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("tokens.csv mode %v", st.Mode().Perm())
	}

	// Restarted with one user fewer and one more: known tokens kept, the
	// dropped user kept too (its kubeconfig may be in use).
	again, err := ensureTokens(dir, []User{{Name: "carol"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 4 || again[3].Name != "carol" || again[3].Token == "" {
		t.Fatalf("users after adding carol: %+v", again)
	}
	for i := range users {
		if again[i].Name != users[i].Name || again[i].Token != users[i].Token || !slices.Equal(again[i].Groups, users[i].Groups) {
			t.Errorf("user %d: %+v, was %+v", i, again[i], users[i])
		}
	}
}

func TestKubeconfigYAML(t *testing.T) {
	b, err := KubeconfigYAML("https://10.250.0.1:6443", []byte("-----BEGIN CERTIFICATE-----\n"), "system:node:h1", "tok")
	if err != nil {
		t.Fatal(err)
	}
	var back kubeconfig
	if err := yaml.UnmarshalStrict(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.CurrentContext != "tortie" || back.Clusters[0].Cluster.Server != "https://10.250.0.1:6443" ||
		string(back.Clusters[0].Cluster.CertificateAuthorityData) != "-----BEGIN CERTIFICATE-----\n" ||
		back.Users[0].Name != "system:node:h1" || back.Users[0].User.Token != "tok" || back.Contexts[0].Context.User != "system:node:h1" {
		t.Fatalf("kubeconfig:\n%s", b)
	}
}
