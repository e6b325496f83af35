package startup

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/selector"
)

// Networking backends, as calico-node's CALICO_NETWORKING_BACKEND.
const (
	BackendBird  = "bird"  // BGP (and VXLAN or IP-in-IP for pools that ask)
	BackendVXLAN = "vxlan" // no BGP: routes from the datastore, VXLAN between hosts
	BackendNone  = "none"  // no routing at all: policy only
)

// RouterIDHash is CALICO_ROUTER_ID's value asking for a router ID hashed
// from the node name.
const RouterIDHash = "hash"

// Env is what a Calico etcd-mode DaemonSet tells calico-node through its
// environment, besides what tortie-node's flags read directly (NODENAME,
// IP, IP6, the autodetection methods, AS, the pool CIDRs, ETCD_*) and
// FELIX_* (pkg/agentconfig).
type Env struct {
	// Backend: CALICO_NETWORKING_BACKEND (default bird).
	Backend string
	// DefaultIPv4Pool, DefaultIPv6Pool: CALICO_IPV4POOL_CIDR,
	// CALICO_IPV6POOL_CIDR; empty when NoDefaultPools.
	DefaultIPv4Pool, DefaultIPv6Pool string
	// NoDefaultPools: NO_DEFAULT_POOLS=true.
	NoDefaultPools bool
	// Settings of a created default IPv4 pool: CALICO_IPV4POOL_VXLAN,
	// CALICO_IPV4POOL_IPIP (default Never), CALICO_IPV4POOL_NAT_OUTGOING
	// (default true), CALICO_IPV4POOL_BLOCK_SIZE (default 26),
	// CALICO_IPV4POOL_NODE_SELECTOR (default all()).
	PoolVXLANMode, PoolIPIPMode v3.EncapsulationMode
	PoolNAT                     bool
	PoolBlockSize               int
	PoolNodeSelector            string
	// RouterID: CALICO_ROUTER_ID, "hash" or an IPv4 address; "" when unset.
	RouterID string
	// ClusterType: CLUSTER_TYPE ("k8s,bgp"), merged into ClusterInformation
	// default's clusterType.
	ClusterType string
	// KubernetesNodeRef: CALICO_K8S_NODE_REF, the Kubernetes Node this
	// host is (a DaemonSet sets it from spec.nodeName); recorded in the
	// Node's spec.orchRefs so the controllers know which Calico Node to
	// remove when the Kubernetes Node goes.
	KubernetesNodeRef string
	// WaitForDatastore: WAIT_FOR_DATASTORE. tortie-node always waits for
	// its datastore; the value is checked and recorded.
	WaitForDatastore bool
	// DisableFileLogging: CALICO_DISABLE_FILE_LOGGING. tortie-node logs to
	// stderr only, never to files; checked and recorded.
	DisableFileLogging bool
	// StartupLogLevel: CALICO_STARTUP_LOGLEVEL, the log level until the
	// agent's own configuration (logSeverityScreen) applies; nil when unset.
	StartupLogLevel *slog.Level
}

// BGP reports whether the backend runs a BGP speaker.
func (e *Env) BGP() bool { return e.Backend == BackendBird }

// Routing reports whether the backend programs routes at all.
func (e *Env) Routing() bool { return e.Backend != BackendNone }

// ReadEnv reads calico-node's variables through lookup (os.LookupEnv). A
// variable set to a value Calico would not take is an error naming it;
// every such error is returned, joined. An empty value is unset.
func ReadEnv(lookup func(string) (string, bool)) (*Env, error) {
	get := func(name string) string {
		v, _ := lookup(name)
		return strings.TrimSpace(v)
	}
	var errs []error
	bad := func(name, value, want string) {
		errs = append(errs, fmt.Errorf("%s=%q: %s", name, value, want))
	}
	boolean := func(name string, def bool) bool {
		v := get(name)
		if v == "" {
			return def
		}
		b, ok := parseEnvBool(v)
		if !ok {
			bad(name, v, "want true or false")
		}
		return b
	}
	encap := func(name string) v3.EncapsulationMode {
		v := get(name)
		m, ok := parseEncap(v)
		if !ok {
			bad(name, v, "want Never, Always or CrossSubnet")
		}
		return m
	}

	e := &Env{
		Backend:            BackendBird,
		PoolNAT:            boolean("CALICO_IPV4POOL_NAT_OUTGOING", true),
		PoolVXLANMode:      encap("CALICO_IPV4POOL_VXLAN"),
		PoolIPIPMode:       encap("CALICO_IPV4POOL_IPIP"),
		PoolBlockSize:      v3.DefaultBlockSizeV4,
		PoolNodeSelector:   "all()",
		NoDefaultPools:     boolean("NO_DEFAULT_POOLS", false),
		WaitForDatastore:   boolean("WAIT_FOR_DATASTORE", false),
		DisableFileLogging: boolean("CALICO_DISABLE_FILE_LOGGING", false),
		ClusterType:        get("CLUSTER_TYPE"),
		KubernetesNodeRef:  get("CALICO_K8S_NODE_REF"),
	}
	switch v := get("CALICO_NETWORKING_BACKEND"); v {
	case "":
	case BackendBird, BackendVXLAN, BackendNone:
		e.Backend = v
	default:
		bad("CALICO_NETWORKING_BACKEND", v, "want bird (BGP), vxlan (no BGP) or none (no routing)")
	}
	if e.PoolVXLANMode != v3.EncapNever && e.PoolIPIPMode != v3.EncapNever {
		errs = append(errs, fmt.Errorf("CALICO_IPV4POOL_VXLAN=%q and CALICO_IPV4POOL_IPIP=%q: a pool uses one encapsulation, not both (as in Calico)",
			get("CALICO_IPV4POOL_VXLAN"), get("CALICO_IPV4POOL_IPIP")))
	}
	if v := get("CALICO_IPV4POOL_BLOCK_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 20 || n > 32 {
			bad("CALICO_IPV4POOL_BLOCK_SIZE", v, "want a prefix length from 20 to 32")
		} else {
			e.PoolBlockSize = n
		}
	}
	if v := get("CALICO_IPV4POOL_NODE_SELECTOR"); v != "" {
		if err := selector.Validate(v); err != nil {
			bad("CALICO_IPV4POOL_NODE_SELECTOR", v, "not a selector: "+err.Error())
		} else {
			e.PoolNodeSelector = v
		}
	}
	for _, c := range []struct {
		name string
		v6   bool
		out  *string
	}{{"CALICO_IPV4POOL_CIDR", false, &e.DefaultIPv4Pool}, {"CALICO_IPV6POOL_CIDR", true, &e.DefaultIPv6Pool}} {
		v := get(c.name)
		if v == "" {
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil || p.Addr().Is4() == c.v6 {
			want := "want an IPv4 CIDR"
			if c.v6 {
				want = "want an IPv6 CIDR"
			}
			bad(c.name, v, want)
			continue
		}
		if e.NoDefaultPools {
			errs = append(errs, fmt.Errorf("NO_DEFAULT_POOLS=true and %s=%q: say one or the other (Calico refuses both)", c.name, v))
			continue
		}
		*c.out = v
	}
	if v := get("CALICO_ROUTER_ID"); v != "" {
		if a, err := netip.ParseAddr(v); v != RouterIDHash && (err != nil || !a.Is4()) {
			bad("CALICO_ROUTER_ID", v, `want "hash" or an IPv4 address`)
		} else {
			e.RouterID = v
		}
	}
	if v := get("CALICO_STARTUP_LOGLEVEL"); v != "" {
		if l, ok := parseLogLevel(v); ok {
			e.StartupLogLevel = &l
		} else {
			bad("CALICO_STARTUP_LOGLEVEL", v, "want debug, info, warning, error, fatal or panic")
		}
	}
	return e, errors.Join(errs...)
}

// parseEnvBool takes what Calico's variables take (strconv's forms, yes,
// no, y, n, in any case).
func parseEnvBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "true", "t", "1", "yes", "y":
		return true, true
	case "false", "f", "0", "no", "n":
		return false, true
	}
	return false, false
}

// parseEncap reads an encapsulation mode as calico-node does: any case,
// "cross-subnet" too, "off" for Never; empty is Never.
func parseEncap(v string) (v3.EncapsulationMode, bool) {
	switch strings.ToLower(v) {
	case "", "never", "off":
		return v3.EncapNever, true
	case "always":
		return v3.EncapAlways, true
	case "crosssubnet", "cross-subnet":
		return v3.EncapCrossSubnet, true
	}
	return v3.EncapNever, false
}

// ParseEncap is parseEncap for a flag's value.
func ParseEncap(v string) (v3.EncapsulationMode, error) {
	m, ok := parseEncap(v)
	if !ok {
		return "", fmt.Errorf("%q: want Never, Always or CrossSubnet", v)
	}
	return m, nil
}

// parseLogLevel reads logrus' level names, as calico-node does.
func parseLogLevel(v string) (slog.Level, bool) {
	switch strings.ToLower(v) {
	case "trace", "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warning", "warn":
		return slog.LevelWarn, true
	case "error", "fatal", "panic":
		return slog.LevelError, true
	}
	return 0, false
}
