// Package testpki makes short-lived certificate authorities and the
// certificates they sign, for tests and benchmarks of code that speaks
// mutual TLS (tortie-typha and its agents). Nothing here is meant for a
// real deployment: keys are never protected and certificates last a day.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a self-signed certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is the CA's certificate, PEM encoded.
	PEM []byte
}

// Pair is a certificate and its key, PEM encoded.
type Pair struct {
	CertPEM, KeyPEM []byte
}

// NewCA makes a CA named cn.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pemOf("CERTIFICATE", der)}, nil
}

// Issue signs a certificate for cn, usable by servers and clients, with the
// given URI SANs (e.g. spiffe://cluster/ns/calico-system/sa/calico-node) and
// IP SANs.
func (ca *CA) Issue(cn string, uris []string, ips []net.IP) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: ips, DNSNames: []string{cn},
	}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			return Pair{}, fmt.Errorf("URI SAN %q: %w", u, err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return Pair{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{CertPEM: pemOf("CERTIFICATE", der), KeyPEM: pemOf("EC PRIVATE KEY", keyDER)}, nil
}

// Files are where WriteFiles put a pair and its CA.
type Files struct {
	CA, Cert, Key string
}

// WriteFiles writes the CA's certificate and p into dir as NAME-ca.crt,
// NAME.crt and NAME.key (mode 0600 for the key).
func (ca *CA) WriteFiles(dir, name string, p Pair) (Files, error) {
	f := Files{
		CA:   filepath.Join(dir, name+"-ca.crt"),
		Cert: filepath.Join(dir, name+".crt"),
		Key:  filepath.Join(dir, name+".key"),
	}
	for _, w := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{{f.CA, ca.PEM, 0o644}, {f.Cert, p.CertPEM, 0o644}, {f.Key, p.KeyPEM, 0o600}} {
		if err := os.WriteFile(w.path, w.data, w.perm); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
