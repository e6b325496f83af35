package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

// DefaultConfigFile is where the CLI looks for its datastore when neither a
// flag nor ETCD_ENDPOINTS says; the lab writes it. Same format as calicoctl's
// /etc/calico/calicoctl.cfg.
const DefaultConfigFile = "/etc/tortie/tortie.cfg"

// globals are the flags every datastore command shares.
type globals struct {
	configFile string
	endpoints  string
	certFile   string
	keyFile    string
	caFile     string
	timeout    time.Duration
	out, errw  io.Writer
	in         io.Reader
}

// NewRootCommand builds the whole command tree. Output goes to out and errw,
// "-" manifests are read from in.
func NewRootCommand(in io.Reader, out, errw io.Writer) *cobra.Command {
	g := &globals{in: in, out: out, errw: errw}
	root := &cobra.Command{
		Use:   "tortie",
		Short: "tortie: container, VM and host networking with network policy",
		Long: `tortie manages networking and network policy resources: Calico's
projectcalico.org/v3 kinds, stored in etcd exactly as Calico stores them.

The datastore is found, in order, from --etcd-endpoints, ETCD_ENDPOINTS,
the config file (--config, default ` + DefaultConfigFile + `), or
http://127.0.0.1:2379. TLS: --etcd-cert/--etcd-key/--etcd-ca or
ETCD_CERT_FILE/ETCD_KEY_FILE/ETCD_CA_CERT_FILE.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errw)
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "datastore config file (calicoctl.cfg format; default "+DefaultConfigFile+" if present)")
	pf.StringVar(&g.endpoints, "etcd-endpoints", "", "comma-separated etcd endpoints (env ETCD_ENDPOINTS)")
	pf.StringVar(&g.certFile, "etcd-cert", "", "client certificate for etcd TLS (env ETCD_CERT_FILE)")
	pf.StringVar(&g.keyFile, "etcd-key", "", "client key for etcd TLS (env ETCD_KEY_FILE)")
	pf.StringVar(&g.caFile, "etcd-ca", "", "CA certificate for etcd TLS (env ETCD_CA_CERT_FILE)")
	pf.DurationVar(&g.timeout, "request-timeout", 2*time.Minute, "give up on the datastore after this long")

	root.AddCommand(
		newWriteCommand(g, client.OpCreate),
		newWriteCommand(g, client.OpApply),
		newWriteCommand(g, client.OpReplace),
		newDeleteCommand(g),
		newGetCommand(g),
		newLabelCommand(g),
		newPatchCommand(g),
		newValidateCommand(g),
		newVersionCommand(g),
		newDatastoreCommand(g),
		newIPAMCommand(g),
		newNodeCommand(g),
		newLabCommand(g),
	)
	return root
}

// Main runs the CLI and returns the process exit status.
func Main(args []string) int {
	root := NewRootCommand(os.Stdin, os.Stdout, os.Stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}

// apiConfig is calicoctl's config file format; only the etcd fields matter.
type apiConfig struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       struct {
		DatastoreType string `json:"datastoreType"`
		EtcdEndpoints string `json:"etcdEndpoints"`
		EtcdCertFile  string `json:"etcdCertFile"`
		EtcdKeyFile   string `json:"etcdKeyFile"`
		EtcdCACert    string `json:"etcdCACertFile"`
	} `json:"spec"`
}

// datastoreConfig resolves where the datastore is: flags, then environment,
// then the config file, then the default endpoint.
func (g *globals) datastoreConfig() (datastore.Config, error) {
	cfg := datastore.ConfigFromEnv()
	path, explicit := g.configFile, g.configFile != ""
	if !explicit {
		path = DefaultConfigFile
	}
	if b, err := os.ReadFile(path); err == nil {
		var ac apiConfig
		if err := yaml.UnmarshalStrict(b, &ac); err != nil {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
		if ac.Spec.DatastoreType != "" && ac.Spec.DatastoreType != "etcdv3" {
			return cfg, fmt.Errorf("config file %s: spec.datastoreType %q is not supported; tortie uses etcdv3", path, ac.Spec.DatastoreType)
		}
		if len(cfg.Endpoints) == 0 && ac.Spec.EtcdEndpoints != "" {
			cfg.Endpoints = splitList(ac.Spec.EtcdEndpoints)
		}
		cfg.CertFile = firstSet(cfg.CertFile, ac.Spec.EtcdCertFile)
		cfg.KeyFile = firstSet(cfg.KeyFile, ac.Spec.EtcdKeyFile)
		cfg.CAFile = firstSet(cfg.CAFile, ac.Spec.EtcdCACert)
	} else if explicit {
		return cfg, fmt.Errorf("config file: %w", err)
	}
	if g.endpoints != "" {
		cfg.Endpoints = splitList(g.endpoints)
	}
	cfg.CertFile = firstSet(g.certFile, cfg.CertFile)
	cfg.KeyFile = firstSet(g.keyFile, cfg.KeyFile)
	cfg.CAFile = firstSet(g.caFile, cfg.CAFile)
	return cfg, nil
}

// pingTimeout bounds the reachability check every command makes first.
const pingTimeout = 10 * time.Second

// connect opens the datastore. The returned close function must be called.
func (g *globals) connect() (*client.Client, func(), error) {
	cfg, err := g.datastoreConfig()
	if err != nil {
		return nil, nil, err
	}
	be, err := datastore.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to the datastore: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(g.timeout, pingTimeout))
	defer cancel()
	if err := be.Ping(ctx); err != nil {
		be.Close()
		return nil, nil, fmt.Errorf("%w\n(is the datastore running? start one with `tortie datastore serve`, or point at yours with --etcd-endpoints or ETCD_ENDPOINTS)", err)
	}
	return client.New(be), func() { be.Close() }, nil
}

func (g *globals) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

// session is connect and context together, for a command's whole run; done
// releases both.
func (g *globals) session() (*client.Client, context.Context, func(), error) {
	c, closeFn, err := g.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.context()
	return c, ctx, func() { cancel(); closeFn() }, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func firstSet(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
