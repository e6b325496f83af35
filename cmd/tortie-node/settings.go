package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/tortie/tortie/pkg/agentconfig"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/dataplane/nft"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/routing"
	"github.com/tortie/tortie/pkg/startup"
)

// flagSettings are the FelixConfiguration fields the command line set
// explicitly: they win over the environment and FelixConfiguration.
func flagSettings(o *options) map[string]string {
	out := map[string]string{}
	if o.changed["log-level"] {
		out["logSeverityScreen"] = o.logLevel
	}
	if o.changed["interface-prefix"] {
		out["interfacePrefix"] = o.ifacePrefixes
	}
	addrFlag := func(addr, enabled, host, port string) {
		if addr == "" {
			out[enabled] = "false"
			return
		}
		out[enabled] = "true"
		if h, p, err := net.SplitHostPort(addr); err == nil {
			out[host], out[port] = h, p
		}
	}
	if o.changed["health-addr"] {
		addrFlag(o.healthAddr, "healthEnabled", "healthHost", "healthPort")
	}
	if o.changed["metrics-addr"] {
		addrFlag(o.metricsAddr, "prometheusMetricsEnabled", "prometheusMetricsHost", "prometheusMetricsPort")
	}
	return out
}

// felixConfigs reads FelixConfiguration "default" and "node.<name>"
// (nil when absent).
func felixConfigs(ctx context.Context, c *client.Client, name string) (global, node *v3.FelixConfiguration, err error) {
	k, _ := v3.KindByKind(v3.KindFelixConfiguration)
	get := func(n string) (*v3.FelixConfiguration, error) {
		r, err := c.Get(ctx, k, "", n)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading FelixConfiguration %s: %w", n, err)
		}
		fc, _ := r.(*v3.FelixConfiguration)
		return fc, nil
	}
	if global, err = get("default"); err != nil {
		return nil, nil, err
	}
	node, err = get("node." + name)
	return global, node, err
}

// logSettings says what the agent runs with and where each setting came from.
func logSettings(log *slog.Logger, res agentconfig.Result) {
	for _, err := range res.Errors {
		log.Warn("configuration value refused; the next layer's value applies", "err", err)
	}
	attrs := []any{}
	for _, n := range agentconfig.Names() {
		if src := res.Sources[n]; src != agentconfig.SourceDefault {
			attrs = append(attrs, n, string(src))
		}
	}
	log.Info("configuration (fields not listed are Calico's defaults)", attrs...)
}

// endpointAddr is host:port, or "" when the endpoint is off.
func endpointAddr(enabled bool, host string, port int) string {
	if !enabled {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// nftConfig is the nftables driver's configuration from the settings.
func nftConfig(table string, s agentconfig.Settings, log *slog.Logger) nft.Config {
	return nft.Config{
		TableName:          table,
		InterfacePrefixes:  s.InterfacePrefixes,
		FailsafeInbound:    failsafe(s.FailsafeInbound, "failsafeInboundHostPorts", log),
		FailsafeOutbound:   failsafe(s.FailsafeOutbound, "failsafeOutboundHostPorts", log),
		EndpointToHost:     nft.EndpointToHost(s.DefaultEndpointToHostAction),
		NATOutgoingAddress: s.NATOutgoingAddress,
	}
}

func failsafe(ps []v3.ProtoPort, field string, log *slog.Logger) []nft.ProtoPort {
	out := []nft.ProtoPort{}
	for _, p := range ps {
		proto := map[string]uint8{"tcp": calc.ProtoTCP, "udp": calc.ProtoUDP, "sctp": calc.ProtoSCTP}[p.Protocol]
		if p.Net != "" {
			log.Warn("failsafe port with a net: the port is open from and to any address", "field", field, "port", p.Port, "net", p.Net)
		}
		out = append(out, nft.ProtoPort{Protocol: proto, Port: p.Port})
	}
	return out
}

// wireguardSetup reads (or makes) this host's WireGuard key when
// wireguardEnabled is true and this agent routes, and publishes its public
// key in the Node, which gives the node its WireGuard tunnel address; when
// WireGuard is off it removes the key from the Node, as Felix does. The
// returned configuration is the routing component's.
func wireguardSetup(ctx context.Context, o *options, set agentconfig.Settings, routes bool, c *client.Client, res *startup.Result, log *slog.Logger) (routing.WireguardConfig, error) {
	w := routing.WireguardConfig{
		Enabled: set.WireguardEnabled && routes,
		Device:  set.WireguardInterfaceName, Port: set.WireguardListeningPort, MTU: set.WireguardMTU,
		RulePriority: set.WireguardRoutingRulePriority, Keepalive: set.WireguardKeepAlive,
	}
	switch o.wireguardMode {
	case "auto", "":
		w.Mode = wireguard.ModeAuto
	case "kernel", "userspace":
		w.Mode = wireguard.Mode(o.wireguardMode)
	default:
		return w, fmt.Errorf("--wireguard-mode %q: want auto, kernel or userspace", o.wireguardMode)
	}
	if set.WireguardEnabled && !routes {
		log.Warn("wireguardEnabled is true but this agent does no routing (--no-routing): no encryption")
	}
	pub := ""
	if w.Enabled {
		key, created, err := wireguard.LoadOrCreateKey(o.wireguardKeyFile)
		if err != nil {
			return w, err
		}
		if created {
			log.Info("WireGuard private key made", "file", o.wireguardKeyFile)
		}
		w.PrivateKey, pub = key, key.PublicKey().String()
	}
	if err := startup.SetWireguardKey(ctx, c, res, pub, log); err != nil {
		return w, fmt.Errorf("publishing the WireGuard public key: %w", err)
	}
	return w, nil
}

// wireguardNotDone are the warnings for FelixConfiguration WireGuard
// settings tortie does not act on, so that no operator takes traffic for
// encrypted that is not.
func wireguardNotDone(set agentconfig.Settings) []string {
	var out []string
	if set.WireguardEnabledV6 {
		out = append(out, "FelixConfiguration wireguardEnabledV6 is true, but tortie encrypts IPv4 only: IPv6 traffic between hosts is NOT encrypted")
	}
	if set.WireguardHostEncryptionEnabled {
		out = append(out, "FelixConfiguration wireguardHostEncryptionEnabled is true, but tortie encrypts only traffic to other hosts' workloads: traffic between the hosts themselves is NOT encrypted")
	}
	return out
}

// restart runs this program again in this process, with the same
// arguments and environment, once the agent has stopped: a restart
// reconciles the kernel in place, so nothing is flushed on the way.
func restart(log *slog.Logger, why error) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("%v; and cannot find this program to restart it: %w", why, err)
	}
	log.Warn("restarting", "reason", why, "exe", exe)
	return syscall.Exec(exe, os.Args, os.Environ())
}

// flowTokenEnv names a file holding the token that lets the cluster's
// flow aggregator (tortie flows serve --token-file) read this agent's flow
// records from another host.
const flowTokenEnv = "TORTIE_FLOW_TOKEN_FILE"

// flowToken reads the flow token, "" when none is configured. A file that
// is named but unreadable or empty is an error: flow records would
// otherwise be served to no one it was meant for.
func flowToken() (string, error) {
	path := os.Getenv(flowTokenEnv)
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flowTokenEnv, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s: %s is empty", flowTokenEnv, path)
	}
	return tok, nil
}

// flowTotalsEnv turns on packet and byte totals in flow records.
const flowTotalsEnv = "TORTIE_FLOW_TOTALS"

// flowTotals reads TORTIE_FLOW_TOTALS: unset or false is off.
func flowTotals() (bool, error) {
	v := os.Getenv(flowTotalsEnv)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false", flowTotalsEnv, v)
	}
	return b, nil
}
