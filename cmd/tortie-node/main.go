// Command tortie-node is the per-host agent: node startup (pkg/startup), then
// it watches the datastore and programs this host's network namespace:
// network policy in the nftables table "inet tortie" and routes and BGP
// (pkg/routing). Everything it does lives in those packages and pkg/node;
// this is flags, logging and signals.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/internal/flagenv"
	"github.com/tortie/tortie/pkg/agentconfig"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/dataplane/nft"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/mtu"
	"github.com/tortie/tortie/pkg/node"
	"github.com/tortie/tortie/pkg/routing"
	"github.com/tortie/tortie/pkg/startup"
	"github.com/tortie/tortie/pkg/syncer"
	"github.com/tortie/tortie/pkg/typha"
	"github.com/tortie/tortie/pkg/version"
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
	ds               datastore.Flags
	table            string
	nftOnly          bool
	ifacePrefixes    string
	resyncInterval   time.Duration
	minApplyInterval time.Duration
	logLevel         string
	logFormat        string
	healthAddr       string
	metricsAddr      string

	// Node startup and routing.
	ip, ipMethod     string
	ip6, ip6Method   string
	asNumber         string
	nodenameFile     string
	mtuFile          string
	defaultIPv4Pool  string
	defaultIPv6Pool  string
	defaultPoolVXLAN string
	defaultPoolNAT   bool
	noBGP            bool
	noRouting        bool

	// Typha: where the datastore's resources come from instead of
	// watching etcd.
	typhaAddr string
	typhaTLS  typha.TLSFiles

	// WireGuard: where the private key is kept, and which implementation
	// carries the device.
	wireguardKeyFile string
	wireguardMode    string

	// changed are the flags given on the command line: those win over
	// FelixConfiguration and FELIX_* (agentconfig).
	changed map[string]bool
}

func newCommand(logOut io.Writer) *cobra.Command {
	cmd, _ := newCommandOptions(logOut)
	return cmd
}

// newCommandOptions is the command and the options its flags fill.
func newCommandOptions(logOut io.Writer) (*cobra.Command, *options) {
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

Datastore: --etcd-endpoints, else ETCD_ENDPOINTS, else the config file
(--config, else /etc/tortie/tortie.cfg, else /etc/calico/calicoctl.cfg, if
present; calicoctl's format),
else http://127.0.0.1:2379. TLS: --etcd-cert/--etcd-key/--etcd-ca, else
ETCD_CERT_FILE/ETCD_KEY_FILE/ETCD_CA_CERT_FILE, else the config file; each
setting on its own. ETCD_USERNAME and ETCD_PASSWORD are read too;
DATASTORE_TYPE, if set, must be etcdv3.

At start it registers the host as Calico's node startup does: it finds the
node's address (--ip/--ip-autodetection-method, as IP and
IP_AUTODETECTION_METHOD in Calico: first-found, interface=REGEX,
skip-interface=REGEX, can-reach=DEST, cidr=CIDR), creates or updates the Node
resource, writes the node name where the CNI plugin reads it, and creates a
default IP pool when asked and none exists. calico-node's environment is
read as a Calico etcd-mode DaemonSet sets it (CALICO_NETWORKING_BACKEND,
CALICO_IPV4POOL_*, NO_DEFAULT_POOLS, CLUSTER_TYPE, CALICO_K8S_NODE_REF, CALICO_STARTUP_LOGLEVEL,
...; a flag given wins; a bad value stops the agent, naming the variable:
docs/agent-config.md). Then, unless --no-routing, it
routes: blackholes for its own blocks, routes to local workloads, BGP (the
node-to-node mesh, BGPPeers, route reflectors) and VXLAN for pools that ask
for it.

Configuration: as Felix, each setting comes from the flag when given, else
the environment variable FELIX_<FIELD> (the FelixConfiguration field name
upper-cased, e.g. FELIX_LOGSEVERITYSCREEN=debug), else FelixConfiguration
node.<node-name>, else FelixConfiguration default, else Calico's default.
Honoured: logSeverityScreen (changed live), failsafeInboundHostPorts,
failsafeOutboundHostPorts, defaultEndpointToHostAction, interfacePrefix,
ipv6Support, natOutgoingAddress, healthEnabled/Host/Port,
prometheusMetricsEnabled/Host/Port, routeRefreshInterval, vxlanEnabled,
vxlanPort, vxlanVNI, vxlanMTU, ipipEnabled, ipipMTU, mtuIfacePattern,
flowLogsLocalReporter (Enabled: flow logs, served at /status/flows to loopback
clients, and to others presenting the token in the file $TORTIE_FLOW_TOKEN_FILE;
TORTIE_FLOW_TOTALS=true adds packets and bytes from conntrack),
flowLogsFlushInterval; bpfEnabled is refused (the agent stays not ready). A change of any but the log level restarts the agent
in place, as Felix restarts. See docs/agent-config.md.

Typha: with --typha-addr (FELIX_TYPHAADDR) the agent takes the datastore's
resources from tortie-typha instead of watching etcd (node startup and the
agent's few writes still go to etcd). Several addresses, comma-separated:
it picks one at random and moves to another when that one goes away. TLS as
Calico's Felix: --typha-ca-file, --typha-cert-file, --typha-key-file, and
--typha-cn or --typha-uri-san, the identity typha's certificate must carry
(FELIX_TYPHACAFILE, ...). No typha reachable is never a silent fallback to
etcd: the agent keeps what it programmed and is not ready, /readiness
saying why, until a typha streams again.

Health: GET /liveness (the agent's loop is turning) and /readiness (in sync
with the datastore and every component's last apply succeeded; otherwise it
names each one and why) on --health-addr (localhost:9099 unless configured); the BGP
status "tortie node status" shows is at /status/routing there. Prometheus metrics
(tortie_*) on --metrics-addr /metrics, off unless asked for.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.changed = map[string]bool{}
			cmd.Flags().Visit(func(f *pflag.Flag) { o.changed[f.Name] = true })
			return run(cmd.Context(), o, logOut)
		},
	}
	cmd.Version = version.Get().String()
	cmd.SetVersionTemplate("tortie-node {{.Version}}\n")
	f := cmd.Flags()
	f.StringVar(&o.nodeName, "node-name", "", "this host's Node name (default: $NODENAME, else the host name)")
	o.ds.Bind(f.StringVar)
	f.StringVar(&o.table, "nft-table", "tortie", "the nftables table (family inet) the agent owns")
	f.BoolVar(&o.nftOnly, "nft-only", false, "write every change by running nft; by default incremental changes go straight over netlink (nft still writes full syncs)")
	f.StringVar(&o.ifacePrefixes, "interface-prefix", "", "comma-separated prefixes of workload interfaces; unknown ones are dropped (not given: FelixConfiguration interfacePrefix, else cali)")
	f.DurationVar(&o.resyncInterval, "resync-interval", 90*time.Second, "how often to compare the whole table with the kernel and repair drift (0: never)")
	f.DurationVar(&o.minApplyInterval, "min-apply-interval", 20*time.Millisecond, "least time between two kernel updates; changes arriving meanwhile are applied together")
	f.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error (not given: FelixConfiguration logSeverityScreen, else info)")
	f.StringVar(&o.logFormat, "log-format", "text", "text (key=value) or json")
	f.StringVar(&o.healthAddr, "health-addr", "", `where to serve /liveness, /readiness and /status, e.g. :9099 ("": nowhere; not given: FelixConfiguration healthEnabled/healthHost/healthPort, else localhost:9099)`)
	f.StringVar(&o.metricsAddr, "metrics-addr", "", `where to serve Prometheus /metrics, e.g. :9091 ("": nowhere; not given: FelixConfiguration prometheusMetricsEnabled/Host/Port, else nowhere)`)
	f.StringVar(&o.ip, "ip", flagenv.Or("IP", startup.AddrAutodetect), "the node's IPv4 address: autodetect, none, or an address[/len] (env IP)")
	f.StringVar(&o.ipMethod, "ip-autodetection-method", flagenv.Or("IP_AUTODETECTION_METHOD", ""), "how to find the IPv4 address: first-found, interface=REGEX, skip-interface=REGEX, can-reach=DEST, cidr=CIDR[,CIDR] (env IP_AUTODETECTION_METHOD)")
	f.StringVar(&o.ip6, "ip6", flagenv.Or("IP6", startup.AddrNone), "the node's IPv6 address: autodetect, none, or an address[/len] (env IP6)")
	f.StringVar(&o.ip6Method, "ip6-autodetection-method", flagenv.Or("IP6_AUTODETECTION_METHOD", ""), "how to find the IPv6 address, as --ip-autodetection-method (env IP6_AUTODETECTION_METHOD)")
	f.StringVar(&o.asNumber, "as", flagenv.Or("AS", ""), "this node's AS number (default: BGPConfiguration's, else 64512) (env AS)")
	f.StringVar(&o.nodenameFile, "nodename-file", startup.DefaultNodenameFile, "where to write the node name for the CNI plugin (- : do not write)")
	f.StringVar(&o.mtuFile, "mtu-file", flagenv.Or("TORTIE_MTU_FILE", mtu.DefaultFile), "where to keep the MTU for new workloads' interfaces, which the CNI plugin reads when its config sets no mtu: the smallest MTU of the tunnels in use (VXLAN, IP-in-IP, WireGuard), else the host's (- : do not write) (env TORTIE_MTU_FILE)")
	f.StringVar(&o.defaultIPv4Pool, "default-ipv4-pool", "", "create an IPv4 pool with this CIDR when none exists (not given: env CALICO_IPV4POOL_CIDR)")
	f.StringVar(&o.defaultIPv6Pool, "default-ipv6-pool", "", "create an IPv6 pool with this CIDR when none exists (not given: env CALICO_IPV6POOL_CIDR)")
	f.StringVar(&o.defaultPoolVXLAN, "default-pool-vxlan", "", "vxlanMode of a created default pool: Never, Always or CrossSubnet (not given: env CALICO_IPV4POOL_VXLAN, else Never)")
	f.BoolVar(&o.defaultPoolNAT, "default-pool-nat-outgoing", true, "natOutgoing of a created default pool (not given: env CALICO_IPV4POOL_NAT_OUTGOING, else true)")
	f.BoolVar(&o.noBGP, "no-bgp", false, "run no BGP speaker: routes only from the datastore (VXLAN-only clusters) (not given: env CALICO_NETWORKING_BACKEND vxlan or none)")
	f.BoolVar(&o.noRouting, "no-routing", false, "program policy only: no routes, no BGP, no VXLAN (not given: env CALICO_NETWORKING_BACKEND none)")
	f.StringVar(&o.typhaAddr, "typha-addr", flagenv.Or("FELIX_TYPHAADDR", ""), "take the datastore's resources from tortie-typha at HOST:PORT[,HOST:PORT...] instead of watching etcd (env FELIX_TYPHAADDR)")
	f.StringVar(&o.typhaTLS.CAFile, "typha-ca-file", flagenv.Or("FELIX_TYPHACAFILE", ""), "CA that signs typha's certificate (env FELIX_TYPHACAFILE)")
	f.StringVar(&o.typhaTLS.CertFile, "typha-cert-file", flagenv.Or("FELIX_TYPHACERTFILE", ""), "this agent's certificate for typha (env FELIX_TYPHACERTFILE)")
	f.StringVar(&o.typhaTLS.KeyFile, "typha-key-file", flagenv.Or("FELIX_TYPHAKEYFILE", ""), "this agent's key for typha (env FELIX_TYPHAKEYFILE)")
	f.StringVar(&o.typhaTLS.PeerCN, "typha-cn", flagenv.Or("FELIX_TYPHACN", ""), "common name typha's certificate must have (env FELIX_TYPHACN)")
	f.StringVar(&o.typhaTLS.PeerURISAN, "typha-uri-san", flagenv.Or("FELIX_TYPHAURISAN", ""), "URI SAN typha's certificate may have instead (env FELIX_TYPHAURISAN)")
	f.StringVar(&o.wireguardKeyFile, "wireguard-key-file", flagenv.Or("TORTIE_WIREGUARD_KEY_FILE", wireguard.DefaultKeyFile), "where this host's WireGuard private key is kept (made when missing, mode 0600) (env TORTIE_WIREGUARD_KEY_FILE)")
	f.StringVar(&o.wireguardMode, "wireguard-mode", flagenv.Or("TORTIE_WIREGUARD_MODE", "auto"), "WireGuard implementation: auto (the kernel's where it has WireGuard, else userspace in this process), kernel or userspace (env TORTIE_WIREGUARD_MODE)")
	return cmd, o
}

// fileFlag is a file flag's path, or "" for "-" (do not write).
func fileFlag(path string) string {
	if path == "-" {
		return ""
	}
	return path
}

func newLogger(o *options, level *slog.LevelVar, w io.Writer) (*slog.Logger, error) {
	text := o.logLevel
	if text == "" {
		text = "info" // until the configuration says otherwise
	}
	if err := level.UnmarshalText([]byte(text)); err != nil {
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

// nodeSettings is what node startup and routing run with, from the flags
// and calico-node's environment (startup.Env).
type nodeSettings struct {
	startup          startup.Config // NodeName and Logger left to the caller
	noBGP, noRouting bool
}

// resolveNode combines the flags and the environment: a flag given on the
// command line wins over its variable. CALICO_NETWORKING_BACKEND bird runs
// BGP, vxlan no BGP, none no routing at all.
func resolveNode(o *options, env *startup.Env) (*nodeSettings, error) {
	ns := &nodeSettings{noBGP: !env.BGP(), noRouting: !env.Routing()}
	if o.changed["no-bgp"] {
		ns.noBGP = o.noBGP
	}
	if o.changed["no-routing"] {
		ns.noRouting = o.noRouting
	}
	if env.RouterID != "" && !ns.noBGP && !ns.noRouting {
		return nil, fmt.Errorf("CALICO_ROUTER_ID=%q: tortie's BGP speaker takes its router ID from the node's IPv4 address and cannot be given another; unset it (or run without BGP: CALICO_NETWORKING_BACKEND=vxlan)", env.RouterID)
	}
	cfg := startup.Config{
		IPv4: o.ip, IPv4Method: o.ipMethod, IPv6: o.ip6, IPv6Method: o.ip6Method,
		ASNumber: o.asNumber, NodenameFile: o.nodenameFile,
		DefaultIPv4Pool: env.DefaultIPv4Pool, DefaultIPv6Pool: env.DefaultIPv6Pool,
		DefaultPoolVXLANMode: env.PoolVXLANMode, DefaultPoolIPIPMode: env.PoolIPIPMode,
		DefaultPoolNAT: env.PoolNAT, DefaultPoolBlockSize: env.PoolBlockSize,
		DefaultPoolNodeSelector: env.PoolNodeSelector, ClusterType: env.ClusterType,
		KubernetesNodeRef: env.KubernetesNodeRef,
	}
	if o.changed["default-ipv4-pool"] {
		cfg.DefaultIPv4Pool = o.defaultIPv4Pool
	}
	if o.changed["default-ipv6-pool"] {
		cfg.DefaultIPv6Pool = o.defaultIPv6Pool
	}
	if o.changed["default-pool-vxlan"] {
		m, err := startup.ParseEncap(o.defaultPoolVXLAN)
		if err != nil {
			return nil, fmt.Errorf("--default-pool-vxlan %w", err)
		}
		cfg.DefaultPoolVXLANMode = m
	}
	if o.changed["default-pool-nat-outgoing"] {
		cfg.DefaultPoolNAT = o.defaultPoolNAT
	}
	ns.startup = cfg
	return ns, nil
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

func run(ctx context.Context, o *options, logOut io.Writer) error {
	level := &slog.LevelVar{}
	log, err := newLogger(o, level, logOut)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	env, err := startup.ReadEnv(os.LookupEnv)
	if err != nil {
		return err
	}
	if env.StartupLogLevel != nil && !o.changed["log-level"] {
		level.Set(*env.StartupLogLevel) // until the configuration says otherwise
	}
	name, err := nodeName(o.nodeName)
	if err != nil {
		return err
	}
	nc, err := resolveNode(o, env)
	if err != nil {
		return err
	}
	feed, err := typhaFeed(o, name, log)
	if err != nil {
		return err
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
	log.Info("datastore", "etcd", ds)

	nc.startup.NodeName, nc.startup.Logger = name, log
	res, err := startNode(ctx, nc.startup, be, ds, log)
	if err != nil {
		return err
	}

	// Settings: flags, then FELIX_* variables, then FelixConfiguration
	// node.<name>, then default (agentconfig); the config component
	// follows them from here on.
	global, nodeFC, err := felixConfigs(ctx, client.New(be), name)
	if err != nil {
		return ds.WrapError(err)
	}
	in := agentconfig.Input{Global: global, Node: nodeFC, NodeName: name, Env: os.Environ(), Flags: flagSettings(o)}
	settings := agentconfig.Resolve(in)
	set := settings.Settings
	logSettings(log, settings)
	log.Info("Go runtime", "settings", agentconfig.ApplyRuntime(set, in.Env))
	level.Set(agentconfig.SlogLevel(set.LogSeverityScreen))
	wg, err := wireguardSetup(ctx, o, set, !nc.noRouting, client.New(be), res, log)
	if err != nil {
		return ds.WrapError(err)
	}

	// The table lives in the network namespace this process was started in.
	nftIface, err := knftables.New(knftables.InetFamily, o.table)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	var nl *nft.Netlink
	if !o.nftOnly {
		if nl, err = nft.NewNetlink(); err != nil {
			log.Warn("incremental changes will run nft", "err", err)
			nl = nil
		} else {
			defer nl.Close()
		}
	}
	drvCfg := nftConfig(o.table, set, log)
	var flowIndex *flowlog.Index
	if set.FlowLogs {
		flowIndex = flowlog.NewIndex()
		drvCfg.FlowLogGroup = nft.DefaultFlowLogGroup
		// A connection between two local workloads: one message, the
		// client's egress decision numbered in the mark.
		if drvCfg.FlowMarks, err = flowlog.NewMarks(flowlog.DefaultMarkMask); err != nil {
			return err
		}
	}
	policy, err := node.NewPolicy(node.PolicyConfig{
		NodeName: name, NFT: nftIface, Netlink: nl, Logger: log, Driver: drvCfg, FlowIndex: flowIndex,
	})
	if err != nil {
		return err
	}
	// The tunnel addresses follow the pools from here on, as calico-node's
	// allocate-tunnel-addrs: a pool switched to VXLAN gives this node its
	// VTEP address without a restart.
	components := []node.Component{policy, agentconfig.NewComponent(in, set, level, log), startup.NewTunnels(client.New(be), res, log)}
	if set.FlowLogs {
		token, err := flowToken()
		if err != nil {
			return err
		}
		totals, err := flowTotals()
		if err != nil {
			return err
		}
		flows, err := node.NewFlows(node.FlowsConfig{
			NodeName: name, Group: nft.DefaultFlowLogGroup, Index: flowIndex, Marks: drvCfg.FlowMarks,
			FlushInterval: set.FlowLogsFlushInterval, Token: token, Totals: totals, Logger: log,
		})
		if err != nil {
			return err
		}
		components = append(components, flows)
	}
	if !nc.noRouting {
		rc, err := routing.New(routing.Config{
			NodeName: name, DisableBGP: nc.noBGP, Warnings: slices.Concat(res.Warnings, wireguardNotDone(set)), Logger: log,
			ResyncInterval: set.RouteRefreshInterval, VXLANMTU: set.VXLANMTU, VXLANPort: set.VXLANPort,
			VXLANVNI: set.VXLANVNI, VXLANDisabled: !set.VXLANEnabled, MTUIfacePattern: set.MTUIfacePattern,
			IPv6Disabled: !set.IPv6Support, IPIPDisabled: !set.IPIPEnabled, IPIPMTU: set.IPIPMTU,
			Wireguard: wg, MTUFile: fileFlag(o.mtuFile),
		})
		if err != nil {
			return err
		}
		components = append(components, rc)
	}

	resync := o.resyncInterval
	if resync == 0 {
		resync = -1 // the flag's 0 means never; node.Config's 0 means the default
	}
	agent, err := node.New(node.Config{
		NodeName: name, ResyncInterval: resync, MinApplyInterval: o.minApplyInterval,
		HealthAddr:  endpointAddr(set.HealthEnabled, set.HealthHost, set.HealthPort),
		MetricsAddr: endpointAddr(set.PrometheusMetricsEnabled, set.PrometheusMetricsHost, set.PrometheusMetricsPort),
		DebugAddr:   endpointAddr(set.DebugPort != 0, set.DebugHost, set.DebugPort),
		Logger:      log, Feed: feed,
	}, be, components...)
	if err != nil {
		return err
	}
	log.Info("tortie-node starting", "node", name, "etcd", ds.Config.Endpoints, "typha", o.typhaAddr, "table", o.table,
		"interfacePrefixes", set.InterfacePrefixes, "health", agent.HealthAddr(), "metrics", agent.MetricsAddr())
	err = agent.Run(ctx)
	switch {
	case errors.Is(err, agentconfig.ErrRestart):
		be.Close()
		return restart(log, err)
	case err != nil && !errors.Is(err, context.Canceled):
		return err
	}
	return nil
}

// typhaFeed is the typha client the agent's syncer streams from, nil when
// no --typha-addr is given (the agent watches etcd itself). Node startup and
// the agent's writes still go to etcd.
func typhaFeed(o *options, node string, log *slog.Logger) (syncer.Feed, error) {
	var addrs []string
	for _, a := range strings.Split(o.typhaAddr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		if !o.typhaTLS.Empty() {
			return nil, errors.New("typha TLS settings without --typha-addr (FELIX_TYPHAADDR)")
		}
		return nil, nil
	}
	cfg := typha.ClientConfig{Addrs: addrs, Node: node, Logger: log}
	if o.typhaTLS.Empty() {
		log.Warn("connecting to typha over plain TCP: no --typha-ca-file, --typha-cert-file, --typha-key-file, --typha-cn or --typha-uri-san")
	} else {
		var err error
		if cfg.TLS, err = typha.ClientTLS(o.typhaTLS); err != nil {
			return nil, err
		}
	}
	cl, err := typha.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return cl, nil
}

// startNode registers this host (Node resource, node name file, default
// pool), retrying while the datastore cannot be reached: an agent started
// before etcd must come up once etcd does, not exit.
func startNode(ctx context.Context, cfg startup.Config, be datastore.Backend, ds *datastore.Resolved, log *slog.Logger) (*startup.Result, error) {
	c := client.New(be)
	wait := time.Second
	for {
		res, err := startup.Run(ctx, c, cfg)
		if err == nil {
			for _, w := range res.Warnings {
				log.Warn("startup", "warning", w)
			}
			log.Info("node registered", "node", res.NodeName, "ipv4", res.IPv4, "ipv6", res.IPv6)
			return res, nil
		}
		if !errors.Is(err, datastore.ErrUnavailable) {
			return nil, fmt.Errorf("node startup: %w", err)
		}
		log.Warn("node startup: datastore unreachable; retrying", "err", ds.WrapError(err), "in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}
