// Command tortie-kube-controllers is Calico's kube-controllers for an etcd
// datastore: it keeps the Calico resources that stand for Kubernetes
// objects (namespace and service-account profiles, converted
// NetworkPolicies, pods' WorkloadEndpoints, deleted nodes and their IPAM)
// in step with the API server. The work is in pkg/kubecontrollers; this is
// flags, environment, logging and signals.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	npaversioned "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"

	"github.com/tortie/tortie/internal/flagenv"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/kubecontrollers"
	"github.com/tortie/tortie/pkg/version"
)

func main() {
	cmd := newCommand(os.Stderr)
	cmd.SetArgs(os.Args[1:])
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tortie-kube-controllers:", err)
		os.Exit(1)
	}
}

// DefaultHealthAddr is where /liveness and /readiness answer unless told
// otherwise: the loopback only, as tortie-node's health (the probes are
// "tortie-kube-controllers check-status -r" and "-l", run in the
// container, as Calico's check-status).
const DefaultHealthAddr = "localhost:9097"

type options struct {
	kubeconfig     string
	ds             datastore.Flags
	controllers    string
	logLevel       string
	logFormat      string
	healthAddr     string
	metricsAddr    string
	leaderElect    bool
	identity       string
	leaseNamespace string
	leaseName      string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
	reconcile      time.Duration
	endpointGrace  time.Duration
	leakGrace      time.Duration
	workers        int
	apiQPS         float32
	apiBurst       int
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

func newCommand(logOut io.Writer) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "tortie-kube-controllers",
		Short: "Calico's kube-controllers for an etcd datastore: Kubernetes objects kept in step with their Calico resources",
		Long: `tortie-kube-controllers watches the Kubernetes API server and keeps the Calico
resources that stand for Kubernetes objects in the etcd datastore (Calico's
etcdv3 layout) in step with them, as Calico's kube-controllers does in etcd
mode. Controllers (--controllers, env ENABLED_CONTROLLERS; all by default):

  namespace         each Namespace is the Profile kns.<name> (its labels as
                    pcns.<key> for namespaceSelectors; allow all)
  serviceaccount    each ServiceAccount is the Profile ksa.<ns>.<name>
                    (its labels as pcsa.<key>)
  policy            each NetworkPolicy is the v3 NetworkPolicy
                    knp.default.<name> in its namespace
  workloadendpoint  a pod's WorkloadEndpoints (written by the CNI plugin)
                    get its labels, profiles, service account and ports;
                    those of a pod gone for --endpoint-grace-period are
                    deleted
  node              a deleted Node's Calico Node goes, with its endpoints,
                    BGPPeers, node.<name> configurations, addresses and
                    blocks; addresses of pods gone for --leak-grace-period
                    are released (Calico's IPAM garbage collection)
  clusternetworkpolicy
                    each ClusterNetworkPolicy (policy.networking.k8s.io) is
                    the GlobalNetworkPolicy kcnp.kube-admin.<name> or
                    kcnp.kube-baseline.<name>; without the CRD it waits
                    for it

Only what it owns is written (kns.*, ksa.*, knp.default.*, kcnp.*, the pod fields of
endpoints, the Calico Nodes of deleted Nodes), always with compare-and-swap.
Stale objects of its own with no Kubernetes object left are removed at
start. Every --reconcile-interval everything is compared again.

Kubernetes: --kubeconfig, else KUBECONFIG, else the in-cluster service
account. It needs get/list/watch on namespaces, serviceaccounts, pods,
nodes, networkpolicies and clusternetworkpolicies, and leases in
--lease-namespace.

Datastore: --etcd-endpoints, else ETCD_ENDPOINTS, else the config file
(--config, else /etc/tortie/tortie.cfg, else /etc/calico/calicoctl.cfg, if
present), else http://127.0.0.1:2379; TLS from --etcd-cert/--etcd-key/
--etcd-ca, else ETCD_CERT_FILE/ETCD_KEY_FILE/ETCD_CA_CERT_FILE, else the
file; ETCD_USERNAME/ETCD_PASSWORD. DATASTORE_TYPE, if set, must be etcdv3.

Replicas: with --leader-elect (the default) only the holder of the Lease
--lease-namespace/--lease-name runs the controllers; the others stand by
and take over when it stops renewing (--lease-duration). A leader that
cannot renew stops writing and campaigns again.

Health: /liveness and /readiness on --health-addr (` + DefaultHealthAddr + `);
"tortie-kube-controllers check-status -r" (or -l) asks them, for exec
probes. Prometheus metrics (tortie_kube_controllers_*) on --metrics-addr,
off unless given (e.g. :9094, Calico's port). See docs/kube-controllers.md.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o, logOut)
		},
	}
	cmd.Version = version.Get().String()
	cmd.SetVersionTemplate("tortie-kube-controllers {{.Version}}\n")
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (env KUBECONFIG; neither: the in-cluster service account)")
	o.ds.Bind(f.StringVar)
	f.StringVar(&o.controllers, "controllers", flagenv.Or("ENABLED_CONTROLLERS", strings.Join(kubecontrollers.AllControllers, ",")), "comma-separated controllers to run: "+strings.Join(kubecontrollers.AllControllers, ", ")+" (env ENABLED_CONTROLLERS)")
	f.StringVar(&o.logLevel, "log-level", flagenv.Or("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	f.StringVar(&o.logFormat, "log-format", "text", "text (key=value) or json")
	f.StringVar(&o.healthAddr, "health-addr", DefaultHealthAddr, `where to serve /liveness and /readiness ("": nowhere)`)
	f.StringVar(&o.metricsAddr, "metrics-addr", "", `where to serve Prometheus /metrics, e.g. :9094 ("": nowhere)`)
	f.BoolVar(&o.leaderElect, "leader-elect", true, "run the controllers only while holding the leader Lease (safe with several replicas)")
	f.StringVar(&o.identity, "identity", flagenv.Or("POD_NAME", ""), "this replica's name in the Lease (env POD_NAME; default the host name and a random suffix)")
	f.StringVar(&o.leaseNamespace, "lease-namespace", "kube-system", "namespace of the leader Lease")
	f.StringVar(&o.leaseName, "lease-name", "tortie-kube-controllers", "name of the leader Lease")
	f.DurationVar(&o.leaseDuration, "lease-duration", 15*time.Second, "how long a standby waits after the leader's last renewal before taking over")
	f.DurationVar(&o.renewDeadline, "renew-deadline", 10*time.Second, "how long the leader keeps trying to renew before it stops writing")
	f.DurationVar(&o.retryPeriod, "retry-period", 2*time.Second, "how often the Lease is renewed or tried")
	f.DurationVar(&o.reconcile, "reconcile-interval", envDuration("RECONCILER_PERIOD", 5*time.Minute), "how often everything is compared again (env RECONCILER_PERIOD)")
	f.DurationVar(&o.endpointGrace, "endpoint-grace-period", time.Minute, "how long a pod must be gone before its WorkloadEndpoints are deleted")
	f.DurationVar(&o.leakGrace, "leak-grace-period", 15*time.Minute, "how long a pod must be gone before its addresses are released (Calico's leakGracePeriod)")
	f.IntVar(&o.workers, "workers", 2, "workers per controller")
	f.Float32Var(&o.apiQPS, "kube-api-qps", 50, "requests per second to the API server (client-go's limiter)")
	f.IntVar(&o.apiBurst, "kube-api-burst", 100, "burst of requests to the API server")
	cmd.AddCommand(checkStatusCommand())
	return cmd
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	// Calico's LOG_LEVEL is logrus's: "warning", "fatal" and "panic" too.
	switch strings.ToLower(level) {
	case "warning":
		level = "warn"
	case "fatal", "panic":
		level = "error"
	}
	var lv slog.LevelVar
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	ho := &slog.HandlerOptions{Level: &lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func kubeConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig, no KUBECONFIG, and not in a cluster: %w", err)
	}
	return cfg, nil
}

func run(ctx context.Context, o *options, logOut io.Writer) error {
	log, err := newLogger(o.logLevel, o.logFormat, logOut)
	if err != nil {
		return err
	}
	klog.SetSlogLogger(log.With("from", "client-go"))
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

	rc, err := kubeConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = o.apiQPS, o.apiBurst
	rc.UserAgent = "tortie-kube-controllers/" + version.Get().String()
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	policyAPI, err := npaversioned.NewForConfig(rc)
	if err != nil {
		return err
	}

	var controllers []string
	for _, c := range datastore.SplitList(o.controllers) {
		controllers = append(controllers, strings.ToLower(c))
	}
	srv, err := kubecontrollers.New(kubecontrollers.Config{
		Controllers: controllers, Kube: kube, PolicyAPI: policyAPI, Backend: be,
		LeaderElection: o.leaderElect, Identity: o.identity, ReleaseOnCancel: true,
		LeaseNamespace: o.leaseNamespace, LeaseName: o.leaseName,
		LeaseDuration: o.leaseDuration, RenewDeadline: o.renewDeadline, RetryPeriod: o.retryPeriod,
		ReconcileInterval: o.reconcile, EndpointGracePeriod: o.endpointGrace, LeakGracePeriod: o.leakGrace,
		Workers: o.workers, HealthAddr: o.healthAddr, MetricsAddr: o.metricsAddr, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("starting", "version", version.Get().String(), "controllers", strings.Join(controllers, ","),
		"kubernetes", rc.Host, "etcd", ds, "leaderElection", o.leaderElect,
		"health", srv.HealthAddr(), "metrics", srv.MetricsAddr())
	return srv.Run(ctx)
}

func checkStatusCommand() *cobra.Command {
	var readiness, liveness bool
	var addr string
	cmd := &cobra.Command{
		Use:   "check-status",
		Short: "ask a running tortie-kube-controllers for its readiness (-r) or liveness (-l); exit 0 if it is",
		Long: `check-status asks the health endpoint of a tortie-kube-controllers running on
this host (--health-addr) and exits 0 when it answers ok, 1 otherwise, with
the reason on stderr: Calico's check-status, for exec probes.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if readiness == liveness {
				return fmt.Errorf("give one of -r (readiness) or -l (liveness)")
			}
			path := "/readiness"
			if liveness {
				path = "/liveness"
			}
			c := &http.Client{Timeout: 5 * time.Second}
			resp, err := c.Get("http://" + addr + path)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s", strings.TrimSpace(string(body)))
			}
			fmt.Fprint(cmd.OutOrStdout(), string(body))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&readiness, "readiness", "r", false, "check readiness")
	cmd.Flags().BoolVarP(&liveness, "liveness", "l", false, "check liveness")
	cmd.Flags().StringVar(&addr, "health-addr", DefaultHealthAddr, "where the controllers serve their health")
	return cmd
}
