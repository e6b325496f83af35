package typha

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
)

// TLSFiles are the PEM files of one side of the connection and the identity
// it requires of the other, as Calico names them: Typha's TYPHA_CAFILE,
// TYPHA_SERVERCERTFILE, TYPHA_SERVERKEYFILE, TYPHA_CLIENTCN and
// TYPHA_CLIENTURISAN; Felix's FELIX_TYPHACAFILE, FELIX_TYPHACERTFILE,
// FELIX_TYPHAKEYFILE, FELIX_TYPHACN and FELIX_TYPHAURISAN.
type TLSFiles struct {
	// CAFile is the CA that signed the other side's certificate.
	CAFile string
	// CertFile and KeyFile are this side's certificate and key.
	CertFile, KeyFile string
	// PeerCN and PeerURISAN: the other side's certificate must have this
	// common name or this URI SAN (either matching is enough when both are
	// given; at least one is required).
	PeerCN, PeerURISAN string
}

// Empty reports whether no file and no identity is given: plain TCP.
func (f TLSFiles) Empty() bool { return f == TLSFiles{} }

func (f TLSFiles) load(side string) (tls.Certificate, *x509.CertPool, error) {
	var missing []string
	for _, m := range []struct{ v, name string }{{f.CAFile, "CA file"}, {f.CertFile, "certificate file"}, {f.KeyFile, "key file"}} {
		if m.v == "" {
			missing = append(missing, m.name)
		}
	}
	if f.PeerCN == "" && f.PeerURISAN == "" {
		missing = append(missing, "the "+side+"'s expected common name or URI SAN")
	}
	if len(missing) > 0 {
		return tls.Certificate{}, nil, fmt.Errorf("typha TLS: missing %v (all are needed once any is given)", missing)
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("typha TLS: certificate %s, key %s: %w", f.CertFile, f.KeyFile, err)
	}
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("typha TLS: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("typha TLS: CA file %s holds no PEM certificate", f.CAFile)
	}
	return cert, pool, nil
}

// checkIdentity requires cert to carry cn as its common name or uriSAN as
// one of its URI SANs.
func checkIdentity(cert *x509.Certificate, cn, uriSAN, side string) error {
	if cn != "" && cert.Subject.CommonName == cn {
		return nil
	}
	if uriSAN != "" && slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == uriSAN }) {
		return nil
	}
	var uris []string
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	return fmt.Errorf("%s certificate (CN %q, URI SANs %v) matches neither the expected CN %q nor URI SAN %q", side, cert.Subject.CommonName, uris, cn, uriSAN)
}

// ServerTLS is a typha's TLS: its certificate, and a client certificate
// required, signed by the CA and carrying the expected identity.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	cert, pool, err := f.load("client")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if len(chains) == 0 || len(chains[0]) == 0 {
				return errors.New("no verified client certificate")
			}
			return checkIdentity(chains[0][0], f.PeerCN, f.PeerURISAN, "client")
		},
	}, nil
}

// ClientTLS is an agent's TLS: its certificate, and the typha's checked
// against the CA and the expected identity (not against the address
// dialled, which is often an IP address the certificate does not name:
// Calico's agents check typha the same way).
func ClientTLS(f TLSFiles) (*tls.Config, error) {
	cert, pool, err := f.load("typha")
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// The chain and the identity are checked below instead of the
		// host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("typha sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("typha certificate: %w", err)
			}
			return checkIdentity(leaf, f.PeerCN, f.PeerURISAN, "typha")
		},
	}, nil
}
