// Command tortie-node is the per-host agent: it watches the datastore and
// programs this host's network namespace (today: network policy in the
// nftables table "inet tortie"). Everything it does lives in pkg/node; this
// is flags, logging and signals.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/pkg/dataplane/nft"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/node"
)

func main() {
	cmd := newCommand(os.Stderr)
	cmd.SetArgs(os.Args[1:])
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tortie-node:", err)
		os.Exit(1)
	}
}

type options struct {
	nodeName         string
	endpoints        string
	certFile         string
	keyFile          string
	caFile           string
	table            string
	ifacePrefixes    string
	resyncInterval   time.Duration
	minApplyInterval time.Duration
	logLevel         string
	logFormat        string
	healthAddr       string
	metricsAddr      string
}

func newCommand(logOut io.Writer) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "tortie-node",
		Short: "tortie's per-host agent: enforces network policy on this host",
		Long: `tortie-node watches the datastore (etcd, Calico's etcdv3 layout) and programs
the network namespace it runs in: every workload endpoint whose spec.node is
this node gets the policy that applies to it, in one nftables table
("inet tortie" unless --nft-table says otherwise). Nothing is programmed
before the first complete snapshot of the datastore; a restart reconciles
the table in place and never flushes it, so established connections and
denies survive the agent being down. A full comparison with the kernel every
--resync-interval repairs changes made by hand.

Run one per host (or, in a lab, one per host network namespace, started with
"ip netns exec <ns> tortie-node --node-name <name> ...").

Datastore: --etcd-endpoints, else ETCD_ENDPOINTS, else http://127.0.0.1:2379.
TLS: --etcd-cert/--etcd-key/--etcd-ca, else ETCD_CERT_FILE/ETCD_KEY_FILE/
ETCD_CA_CERT_FILE; ETCD_USERNAME and ETCD_PASSWORD are read too.

Health: GET /liveness (the agent's loop is turning) and /readiness (in sync
with the datastore and the last apply succeeded) on --health-addr.
Prometheus metrics (tortie_*) on --metrics-addr /metrics.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, logOut)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.nodeName, "node-name", "", "this host's Node name (default: $NODENAME, else the host name)")
	f.StringVar(&o.endpoints, "etcd-endpoints", "", "comma-separated etcd endpoints (env ETCD_ENDPOINTS)")
	f.StringVar(&o.certFile, "etcd-cert", "", "client certificate for etcd TLS (env ETCD_CERT_FILE)")
	f.StringVar(&o.keyFile, "etcd-key", "", "client key for etcd TLS (env ETCD_KEY_FILE)")
	f.StringVar(&o.caFile, "etcd-ca", "", "CA certificate for etcd TLS (env ETCD_CA_CERT_FILE)")
	f.StringVar(&o.table, "nft-table", "tortie", "the nftables table (family inet) the agent owns")
	f.StringVar(&o.ifacePrefixes, "interface-prefix", "cali", "comma-separated prefixes of workload interfaces; unknown ones are dropped")
	f.DurationVar(&o.resyncInterval, "resync-interval", 90*time.Second, "how often to compare the whole table with the kernel and repair drift (0: never)")
	f.DurationVar(&o.minApplyInterval, "min-apply-interval", 20*time.Millisecond, "least time between two kernel updates; changes arriving meanwhile are applied together")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text (key=value) or json")
	f.StringVar(&o.healthAddr, "health-addr", ":9099", "where to serve /liveness and /readiness (empty: nowhere)")
	f.StringVar(&o.metricsAddr, "metrics-addr", ":9091", "where to serve Prometheus /metrics (empty: nowhere)")
	return cmd
}

func newLogger(o *options, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	ho := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
}

func nodeName(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := os.Getenv("NODENAME"); n != "" {
		return n, nil
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", fmt.Errorf("no --node-name, no NODENAME and no host name: %v", err)
	}
	return h, nil
}

func datastoreConfig(o *options, log *slog.Logger) datastore.Config {
	cfg := datastore.ConfigFromEnv()
	if o.endpoints != "" {
		cfg.Endpoints = nil
		for _, ep := range strings.Split(o.endpoints, ",") {
			if ep = strings.TrimSpace(ep); ep != "" {
				cfg.Endpoints = append(cfg.Endpoints, ep)
			}
		}
	}
	cfg.CertFile = firstSet(o.certFile, cfg.CertFile)
	cfg.KeyFile = firstSet(o.keyFile, cfg.KeyFile)
	cfg.CAFile = firstSet(o.caFile, cfg.CAFile)
	cfg.Logger = log
	return cfg
}

func firstSet(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func run(ctx context.Context, o *options, logOut io.Writer) error {
	log, err := newLogger(o, logOut)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	name, err := nodeName(o.nodeName)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	dcfg := datastoreConfig(o, log)
	be, err := datastore.New(dcfg)
	if err != nil {
		return err
	}
	defer be.Close()

	// The table lives in the network namespace this process was started in.
	nftIface, err := knftables.New(knftables.InetFamily, o.table)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	var prefixes []string
	for _, p := range strings.Split(o.ifacePrefixes, ",") {
		if p = strings.TrimSpace(p); p != "" {
			prefixes = append(prefixes, p)
		}
	}
	policy, err := node.NewPolicy(node.PolicyConfig{
		NodeName: name, NFT: nftIface, Logger: log,
		Driver: nft.Config{TableName: o.table, InterfacePrefixes: prefixes},
	})
	if err != nil {
		return err
	}

	// Node startup (address autodetection, the Node resource, a default
	// IP pool) belongs here, before the agent runs; routes and BGP are
	// further node.Components in this list.
	components := []node.Component{policy}

	resync := o.resyncInterval
	if resync == 0 {
		resync = -1 // the flag's 0 means never; node.Config's 0 means the default
	}
	agent, err := node.New(node.Config{
		NodeName: name, ResyncInterval: resync, MinApplyInterval: o.minApplyInterval,
		HealthAddr: o.healthAddr, MetricsAddr: o.metricsAddr, Logger: log,
	}, be, components...)
	if err != nil {
		return err
	}
	log.Info("tortie-node starting", "node", name, "etcd", dcfg.Endpoints, "table", o.table, "interfacePrefixes", prefixes)
	if err := agent.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
