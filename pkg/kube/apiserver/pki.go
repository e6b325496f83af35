package apiserver

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Files of the PKI under Dir.
const (
	pkiDir        = "pki"
	caCertFile    = "pki/ca.crt"
	caKeyFile     = "pki/ca.key"
	serveCertFile = "pki/apiserver.crt"
	serveKeyFile  = "pki/apiserver.key"
	saKeyFile     = "pki/sa.key"
	saPubFile     = "pki/sa.pub"
)

const (
	caValidity    = 10 * 365 * 24 * time.Hour
	serveValidity = 365 * 24 * time.Hour
	// renewBefore: a serving certificate this close to expiry is reissued.
	renewBefore = 7 * 24 * time.Hour
	clockSkew   = time.Hour
)

// ServingNames are the DNS names in every serving certificate (besides
// the IP addresses): the names of the kubernetes Service.
var ServingNames = []string{
	"localhost",
	"kubernetes",
	"kubernetes.default",
	"kubernetes.default.svc",
	"kubernetes.default.svc.cluster.local",
}

// ensurePKI makes the CA, serving certificate and service-account keys in
// dir, reusing what is there. The serving certificate is reissued (by the
// same CA) when it does not name every one of ips or is near expiry.
func ensurePKI(dir string, ips []net.IP) error {
	if err := os.MkdirAll(filepath.Join(dir, pkiDir), 0o700); err != nil {
		return err
	}
	ca, caKey, err := ensureCA(dir)
	if err != nil {
		return err
	}
	if err := ensureServing(dir, ca, caKey, ips); err != nil {
		return err
	}
	return ensureSAKeys(dir)
}

func ensureCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	cert, key, err := loadPair(certPath, keyPath)
	if err == nil {
		if !cert.IsCA || time.Now().After(cert.NotAfter) {
			return nil, nil, fmt.Errorf("%s: not a valid CA (expired, or not a CA); remove %s to start afresh", certPath, filepath.Join(dir, pkiDir))
		}
		return cert, key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	if exists(certPath) || exists(keyPath) {
		return nil, nil, fmt.Errorf("%s and %s: one is missing; remove %s to start afresh", certPath, keyPath, filepath.Join(dir, pkiDir))
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "tortie-kubernetes-ca", Organization: []string{"tortie"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return nil, nil, err
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	// A crash between the two writes leaves a key alone, which the next
	// start reports rather than silently replacing the CA.
	if err := writeKey(keyPath, k); err != nil {
		return nil, nil, err
	}
	if err := writeFile(certPath, pemBlock("CERTIFICATE", der), 0o644); err != nil {
		return nil, nil, err
	}
	return cert, k, nil
}

func ensureServing(dir string, ca *x509.Certificate, caKey crypto.Signer, ips []net.IP) error {
	certPath, keyPath := filepath.Join(dir, serveCertFile), filepath.Join(dir, serveKeyFile)
	if cert, _, err := loadPair(certPath, keyPath); err == nil && servingOK(cert, ca, ips) {
		return nil
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(serveValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     ServingNames,
		IPAddresses:  uniqueIPs(ips),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, k); err != nil {
		return err
	}
	return writeFile(certPath, pemBlock("CERTIFICATE", der), 0o644)
}

// servingOK says whether cert, signed by ca, names every IP and every
// ServingNames entry and stays valid for a while yet.
func servingOK(cert, ca *x509.Certificate, ips []net.IP) bool {
	if cert.CheckSignatureFrom(ca) != nil || time.Now().Add(renewBefore).After(cert.NotAfter) {
		return false
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	for _, n := range ServingNames {
		if !slices.Contains(cert.DNSNames, n) {
			return false
		}
	}
	return true
}

func ensureSAKeys(dir string) error {
	keyPath, pubPath := filepath.Join(dir, saKeyFile), filepath.Join(dir, saPubFile)
	if b, err := os.ReadFile(keyPath); err == nil {
		k, err := parseKey(b)
		if err != nil {
			return fmt.Errorf("%s: %w", keyPath, err)
		}
		if exists(pubPath) {
			return nil
		}
		return writePub(pubPath, k.Public())
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// RSA: the signing algorithm (RS256) every token consumer accepts.
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, k); err != nil {
		return err
	}
	return writePub(pubPath, k.Public())
}

func writePub(path string, pub crypto.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	return writeFile(path, pemBlock("PUBLIC KEY", der), 0o644)
}

func writeKey(path string, k crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	return writeFile(path, pemBlock("PRIVATE KEY", der), 0o600)
}

// loadPair reads a certificate and its private key (os.ErrNotExist when
// either file is missing) and checks that they belong together.
func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cert, err := parseCert(cb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := parseKey(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not hold the key of %s", keyPath, certPath)
	}
	return cert, key, nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func parseKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM private key")
	}
	var k any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T is not a signing key", k)
	}
	return s, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}

func uniqueIPs(ips []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range ips {
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}

// writeFile replaces path atomically with data, with mode perm.
func writeFile(path string, data []byte, perm os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return os.Chmod(path, perm)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
