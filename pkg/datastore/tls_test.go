package datastore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCert makes a certificate signed by parent (self-signed when nil) and
// returns it with its key, PEM encoded.
func testCert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.Subject = pkix.Name{CommonName: name}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = &tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return cert, key,
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
}

// TestInlineTLS: inline PEM (calicoctl's etcdCert, etcdKey, etcdCACert),
// alone or mixed with files, makes a client that passes mutual TLS.
func TestInlineTLS(t *testing.T) {
	ca, caKey, caPEM, _ := testCert(t, "ca", nil, nil, x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	_, srvKey, srvPEM, _ := testCert(t, "server", ca, caKey, x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	_, _, cliPEM, cliKeyPEM := testCert(t, "client", ca, caKey, x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	srvBlock, _ := pem.Decode([]byte(srvPEM))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvBlock.Bytes}, PrivateKey: srvKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, []byte(cliKeyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"all inline":         {CAPEM: caPEM, CertPEM: cliPEM, KeyPEM: cliKeyPEM},
		"key from its file":  {CAPEM: caPEM, CertPEM: cliPEM, KeyFile: keyFile},
		"only the CA inline": {CAPEM: caPEM},
	} {
		tc, err := cfg.tlsConfig()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		conn, err := tls.Dial("tcp", ln.Addr().String(), tc)
		if err == nil {
			err = conn.Handshake()
			if err == nil {
				// TLS 1.3 reports a refused client certificate on the first read.
				_, err = conn.Read(make([]byte, 1))
				if errors.Is(err, io.EOF) {
					err = nil
				}
			}
			conn.Close()
		}
		if wantOK := cfg.CertPEM != ""; (err == nil) != wantOK {
			t.Errorf("%s: handshake error %v, want success %v", name, err, wantOK)
		}
	}
	for name, cfg := range map[string]Config{
		"not PEM CA":       {CAPEM: "Q0E="},
		"cert without key": {CAPEM: caPEM, CertPEM: cliPEM},
		"missing key file": {CertPEM: cliPEM, KeyFile: filepath.Join(t.TempDir(), "none")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
