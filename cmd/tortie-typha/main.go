// Command tortie-typha watches the datastore once and fans it out to many
// tortie-node agents: a snapshot, then every change in order (pkg/typha).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/tortie/tortie/internal/flagenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/serve"
	"github.com/tortie/tortie/pkg/syncer"
	"github.com/tortie/tortie/pkg/typha"
	"github.com/tortie/tortie/pkg/version"
)

func main() {
	cmd := newCommand(os.Stderr)
	cmd.SetArgs(os.Args[1:])
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tortie-typha:", err)
		os.Exit(1)
	}
}

type options struct {
	ds           datastore.Flags
	listen       string
	tls          typha.TLSFiles
	plain        bool
	kinds        string
	maxLag       int
	writeTimeout time.Duration
	pingInterval time.Duration
	healthAddr   string
	metricsAddr  string
	logLevel     string
}

// DefaultPort is Calico's typha port.
const DefaultPort = 5473

func newCommand(logOut io.Writer) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "tortie-typha",
		Short: "Watch the datastore once and serve it to many tortie-node agents",
		Long: `tortie-typha is Calico's typha for tortie: it watches the datastore (etcd,
Calico's etcdv3 layout) once, and serves every agent that connects a
snapshot of what it asked for, then every change in the datastore's order.
Past a few dozen hosts this keeps etcd's load independent of the number of
agents: etcd serves one set of watches, not one per host.

Agents connect with tortie-node --typha-addr HOST:PORT[,HOST:PORT...] (or
FELIX_TYPHAADDR). Several typhas may serve the same agents: an agent picks
one at random and moves to another when its typha goes away, starting from a
fresh snapshot (it is told only what changed). An agent more than --max-lag
changes behind, or whose socket does not take a write for --write-timeout,
is disconnected and reconnects; the others are not held up.

TLS is mutual, as Calico's: the typha presents --server-cert-file and
requires a client certificate signed by --ca-file whose common name is
--client-cn or that carries the URI SAN --client-uri-san (either matching
is enough). Without TLS an agent's connection is plain TCP, and anyone who
can reach the port reads the whole datastore: that needs
--insecure-plain-tcp, meant for one-host labs and tests.

/readiness (on --health-addr) says 200 once the typha holds a complete
snapshot; agents that connect earlier wait for it. /metrics (on
--metrics-addr) has tortie_typha_connections, snapshot size and duration,
send latency, disconnects by reason.`,
		Example: `  tortie-typha --etcd-endpoints https://10.0.0.1:2379 --etcd-ca ca.pem --etcd-cert typha-etcd.pem --etcd-key typha-etcd-key.pem \
      --ca-file typha-ca.pem --server-cert-file typha.pem --server-key-file typha-key.pem --client-cn calico-node
  tortie-typha --etcd-endpoints http://127.0.0.1:2379 --listen 127.0.0.1:5473 --insecure-plain-tcp`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, logOut)
		},
	}
	cmd.Version = version.Get().String()
	cmd.SetVersionTemplate("tortie-typha {{.Version}}\n")
	f := cmd.Flags()
	o.ds.Bind(f.StringVar)
	f.StringVar(&o.listen, "listen", flagenv.Or("TYPHA_LISTEN", fmt.Sprintf(":%d", DefaultPort)), "where agents connect (env TYPHA_LISTEN)")
	f.StringVar(&o.tls.CAFile, "ca-file", flagenv.Or("TYPHA_CAFILE", ""), "CA that signs the agents' certificates (env TYPHA_CAFILE)")
	f.StringVar(&o.tls.CertFile, "server-cert-file", flagenv.Or("TYPHA_SERVERCERTFILE", ""), "this typha's certificate (env TYPHA_SERVERCERTFILE)")
	f.StringVar(&o.tls.KeyFile, "server-key-file", flagenv.Or("TYPHA_SERVERKEYFILE", ""), "this typha's key (env TYPHA_SERVERKEYFILE)")
	f.StringVar(&o.tls.PeerCN, "client-cn", flagenv.Or("TYPHA_CLIENTCN", ""), "common name an agent's certificate must have (env TYPHA_CLIENTCN)")
	f.StringVar(&o.tls.PeerURISAN, "client-uri-san", flagenv.Or("TYPHA_CLIENTURISAN", ""), "URI SAN an agent's certificate may have instead (env TYPHA_CLIENTURISAN)")
	f.BoolVar(&o.plain, "insecure-plain-tcp", false, "serve without TLS: anyone who reaches --listen reads the datastore (labs and tests only)")
	f.StringVar(&o.kinds, "kinds", "", "comma-separated kinds to serve (default: every projectcalico.org/v3 kind and IPAMBlock)")
	f.IntVar(&o.maxLag, "max-lag", 100000, "changes an agent may fall behind before it is disconnected to resync")
	f.DurationVar(&o.writeTimeout, "write-timeout", 10*time.Second, "how long a write to one agent may block before it is disconnected")
	f.DurationVar(&o.pingInterval, "ping-interval", 10*time.Second, "how often an idle connection carries a ping; agents give up after three silent intervals")
	f.StringVar(&o.healthAddr, "health-addr", flagenv.Or("TYPHA_HEALTHADDR", "localhost:9098"), `where to serve /liveness and /readiness ("": nowhere) (env TYPHA_HEALTHADDR)`)
	f.StringVar(&o.metricsAddr, "metrics-addr", flagenv.Or("TYPHA_METRICSADDR", ""), `where to serve Prometheus /metrics, e.g. :9093 ("": nowhere) (env TYPHA_METRICSADDR)`)
	f.StringVar(&o.logLevel, "log-level", flagenv.Or("TYPHA_LOGSEVERITYSCREEN", "info"), "debug, info, warn or error (env TYPHA_LOGSEVERITYSCREEN)")
	return cmd
}

// kindPrefixes are the datastore prefixes of the kinds named (all when
// none is).
func kindPrefixes(list string) ([]string, error) {
	var names []string
	if strings.TrimSpace(list) == "" {
		for _, k := range v3.Kinds() {
			names = append(names, k.Kind)
		}
		names = append(names, syncer.KindIPAMBlock)
	} else {
		for _, n := range strings.Split(list, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
	}
	kinds, err := syncer.KindsNamed(names...)
	if err != nil {
		return nil, fmt.Errorf("--kinds: %w", err)
	}
	var prefixes []string
	for _, k := range kinds {
		if !slices.Contains(prefixes, k.Prefix) {
			prefixes = append(prefixes, k.Prefix)
		}
	}
	return prefixes, nil
}

func run(ctx context.Context, o *options, logOut io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	prefixes, err := kindPrefixes(o.kinds)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	switch {
	case o.tls.Empty() && !o.plain:
		return errors.New("no TLS given (--ca-file, --server-cert-file, --server-key-file, --client-cn or --client-uri-san); to serve plain TCP, say --insecure-plain-tcp")
	case !o.tls.Empty() && o.plain:
		return errors.New("--insecure-plain-tcp with TLS files: choose one")
	case !o.tls.Empty():
		if tlsCfg, err = typha.ServerTLS(o.tls); err != nil {
			return err
		}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ds, be, err := o.ds.Open(log)
	if err != nil {
		return err
	}
	defer be.Close()

	host, _ := os.Hostname()
	scfg := typha.ServerConfig{
		Backend: be, Prefixes: prefixes, Name: host, MaxLag: o.maxLag,
		WriteTimeout: o.writeTimeout, PingInterval: o.pingInterval, Logger: log, TLS: tlsCfg,
	}
	srv, err := typha.NewServer(scfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	eps, err := serve.Listen(o.healthAddr, o.metricsAddr, "")
	if err != nil {
		ln.Close()
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var wg sync.WaitGroup
	eps.Run(ctx, &wg, healthHandler(srv), promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), log)
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Run(ctx)
	}()
	log.Info("tortie-typha starting", "listen", ln.Addr().String(), "tls", tlsCfg != nil, "etcd", ds.Config.Endpoints,
		"prefixes", len(prefixes), "health", eps.HealthAddr(), "metrics", eps.MetricsAddr())
	err = srv.Serve(ctx, ln)
	stop()
	wg.Wait()
	return err
}

func healthHandler(srv *typha.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/liveness", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readiness", func(w http.ResponseWriter, _ *http.Request) {
		if !srv.Ready() {
			http.Error(w, "not ready: no complete snapshot of the datastore yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ready: %d agents connected\n", srv.Connections())
	})
	return mux
}
