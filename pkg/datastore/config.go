package datastore

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// DefaultEndpoint is where New connects when no endpoint is configured:
	// the default client URL of Serve and of a packaged etcd.
	DefaultEndpoint = "http://127.0.0.1:2379"

	// maxMsgBytes bounds a single request or response on the client side. It
	// matches the embedded server's default request limit, so a transaction
	// the server accepts is never refused by the client first.
	maxMsgBytes = 64 << 20

	defaultDialTimeout    = 5 * time.Second
	defaultRequestTimeout = 10 * time.Second
	defaultRetryTimeout   = time.Minute
)

// Config says how to reach an etcd v3 cluster. The zero value connects to
// DefaultEndpoint without TLS.
type Config struct {
	// Endpoints of all members; list every one so the client can move to a
	// surviving member when one fails.
	Endpoints []string
	// TLS client certificate, key and CA bundle. TLS is used when any is set.
	CertFile, KeyFile, CAFile string
	// CertPEM, KeyPEM and CAPEM are the same inline (calicoctl's etcdCert,
	// etcdKey and etcdCACert), each in place of its file.
	CertPEM, KeyPEM, CAPEM string
	DialTimeout            time.Duration
	Username, Password     string

	// RequestTimeout bounds one attempt of one request (default 10s); a
	// transient failure within it is retried.
	RequestTimeout time.Duration
	// RetryTimeout bounds all attempts of one request (default 1m); after it
	// the request fails with ErrUnavailable. The caller's context may end it
	// sooner.
	RetryTimeout time.Duration
	// Logger receives retries and watch resyncs (default slog.Default()).
	Logger *slog.Logger
}

// ConfigFromEnv reads Calico's etcd variables alone: ETCD_ENDPOINTS (comma
// separated), ETCD_CERT_FILE, ETCD_KEY_FILE, ETCD_CA_CERT_FILE,
// ETCD_USERNAME and ETCD_PASSWORD. Commands use Resolve, which also reads
// flags and the config file.
func ConfigFromEnv() Config {
	var cfg Config
	cfg.Endpoints = SplitList(os.Getenv("ETCD_ENDPOINTS"))
	cfg.CertFile = os.Getenv("ETCD_CERT_FILE")
	cfg.KeyFile = os.Getenv("ETCD_KEY_FILE")
	cfg.CAFile = os.Getenv("ETCD_CA_CERT_FILE")
	cfg.Username = os.Getenv("ETCD_USERNAME")
	cfg.Password = os.Getenv("ETCD_PASSWORD")
	return cfg
}

func (cfg Config) withDefaults() Config {
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []string{DefaultEndpoint}
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = defaultRetryTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

func (cfg Config) tlsConfig() (*tls.Config, error) {
	if cfg.CertPEM != "" || cfg.KeyPEM != "" || cfg.CAPEM != "" {
		return cfg.inlineTLSConfig()
	}
	if cfg.CertFile == "" && cfg.KeyFile == "" && cfg.CAFile == "" {
		return nil, nil
	}
	info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
	tc, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("datastore: etcd TLS config: %w", err)
	}
	return tc, nil
}

// inlineTLSConfig is tlsConfig when some of the PEM is inline: each piece
// inline or read from its file.
func (cfg Config) inlineTLSConfig() (*tls.Config, error) {
	read := func(what, pem, file string) ([]byte, error) {
		if pem != "" || file == "" {
			return []byte(pem), nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("datastore: etcd TLS %s: %w", what, err)
		}
		return b, nil
	}
	cert, err := read("certificate", cfg.CertPEM, cfg.CertFile)
	if err != nil {
		return nil, err
	}
	key, err := read("key", cfg.KeyPEM, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	ca, err := read("CA", cfg.CAPEM, cfg.CAFile)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(cert) > 0 || len(key) > 0 {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("datastore: etcd TLS client certificate and key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("datastore: etcd TLS CA: no PEM certificate in it")
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// New makes a client for the cluster in cfg. It does not wait for the
// cluster to be reachable; requests retry until it is.
func New(cfg Config) (*Etcd, error) {
	cfg = cfg.withDefaults()
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:          cfg.Endpoints,
		DialTimeout:        cfg.DialTimeout,
		TLS:                tc,
		Username:           cfg.Username,
		Password:           cfg.Password,
		MaxCallSendMsgSize: maxMsgBytes,
		MaxCallRecvMsgSize: maxMsgBytes,
		// Notice a dead member within seconds while a watch or request is
		// open, so that it moves to a live one. Not more often: etcd's
		// servers refuse pings closer than 5 s apart
		// (--grpc-keepalive-min-time) with a "too_many_pings" GoAway, and
		// exactly 5 s races with that limit. Not on an idle connection
		// either: etcd's servers also count pings without an open stream
		// as too many, and an idle client was sent away every 30-40 s
		// (bench/scale); its next request finds a live member by retrying.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		PermitWithoutStream:  false,
		// The client's own zap logs would only repeat what our retries log.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("datastore: etcd client for %v: %w", cfg.Endpoints, err)
	}
	return &Etcd{cli: cli, cfg: cfg, log: cfg.Logger.With("component", "datastore")}, nil
}
