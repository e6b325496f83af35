package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/mtu"
	"github.com/tortie/tortie/pkg/nodename"
)

const (
	// PluginType is the network config "type" of the main plugin.
	PluginType = "tortie"
	// IPAMType is the IPAM "type" (and the second name of the binary).
	IPAMType = "tortie-ipam"
	// CalicoPluginType and CalicoIPAMType are Calico's names for the two
	// plugins, which the binary answers to as well: the same roles.
	CalicoPluginType = "calico"
	CalicoIPAMType   = "calico-ipam"

	// NodenameFile is where the node agent writes the name it registered
	// the node under; the plugin reads it when the config names no node, so
	// both agree even when the host name differs from the node name.
	NodenameFile = nodename.DefaultFile
	// DefaultConfigFile is the CLI's datastore config (calicoctl.cfg
	// format), the last place the plugin looks for the datastore.
	DefaultConfigFile = datastore.DefaultConfigFile
	// DefaultLogFile is where the plugin logs when log_file_path is unset.
	DefaultLogFile = "/var/log/tortie/cni.log"
	// DefaultMTU of the workload interface when the config sets none and
	// the MTU file (mtu_file) is missing.
	DefaultMTU = 1500
	// DefaultDatastoreTimeout bounds every datastore request of one
	// invocation, retries included: a runtime would rather see an error it
	// can retry than hang.
	DefaultDatastoreTimeout = 10 * time.Second
	// DefaultGCGrace: GC leaves alone allocations and endpoints younger than
	// this, which may belong to an ADD still in flight.
	DefaultGCGrace = time.Minute
	// DefaultNamespace is the namespace of non-Kubernetes workloads.
	DefaultNamespace = "default"
)

// NetConf is the network configuration the plugin reads on stdin. Field
// names follow Calico's plugin so a Calico conflist works unchanged.
type NetConf struct {
	types.PluginConf

	// NodeName overrides the node name (else NodenameFile, else Hostname,
	// else the host's name).
	NodeName     string `json:"nodename,omitempty"`
	NodenameFile string `json:"nodename_file,omitempty"`
	// Hostname is Calico's deprecated name for the node name, read after
	// the node name file as Calico reads it.
	Hostname string `json:"hostname,omitempty"`

	DatastoreType  string `json:"datastore_type,omitempty"`
	EtcdEndpoints  string `json:"etcd_endpoints,omitempty"`
	EtcdKeyFile    string `json:"etcd_key_file,omitempty"`
	EtcdCertFile   string `json:"etcd_cert_file,omitempty"`
	EtcdCACertFile string `json:"etcd_ca_cert_file,omitempty"`
	// DatastoreTimeoutSeconds bounds each datastore request (default 10).
	DatastoreTimeoutSeconds float64 `json:"datastore_timeout_seconds,omitempty"`

	// MTU of the workload's interface; 0 or unset: the MTU in MTUFile,
	// which tortie-node keeps (the smallest MTU of its tunnels), else
	// DefaultMTU. See workloadMTU.
	MTU int `json:"mtu,omitempty"`
	// MTUFile (tortie's; Calico's plugin reads /var/lib/calico/mtu) is
	// where tortie-node writes the workload MTU (default mtu.DefaultFile).
	MTUFile string `json:"mtu_file,omitempty"`
	// RequireMTUFile (Calico's): with no mtu set, ADD fails when the MTU
	// file is missing, rather than use DefaultMTU.
	RequireMTUFile bool `json:"require_mtu_file,omitempty"`

	// The log file, rotated by size as Calico's: see logfile.go and openLog.
	LogFilePath string `json:"log_file_path,omitempty"`
	LogLevel    string `json:"log_level,omitempty"`
	// LogFileMaxSize in MB, LogFileMaxAge in days, LogFileMaxCount rotated
	// files; 0 means the default (DefaultLogFileMaxSize, ...).
	LogFileMaxSize  int `json:"log_file_max_size,omitempty"`
	LogFileMaxAge   int `json:"log_file_max_age,omitempty"`
	LogFileMaxCount int `json:"log_file_max_count,omitempty"`

	// WorkloadNamespace is the namespace of workloads that are not
	// Kubernetes pods (default "default").
	WorkloadNamespace string `json:"workload_namespace,omitempty"`
	// Profiles of non-Kubernetes workloads (default: one named after the
	// network). The plugin does not create the profile (Calico's does, when
	// the config has no policy section): until it exists, tortie-node
	// treats the workload's traffic as a missing profile, and drops it.
	Profiles []string `json:"profiles,omitempty"`
	// GCGraceSeconds: see DefaultGCGrace; 0 means the default, a negative
	// value no grace at all.
	GCGraceSeconds float64 `json:"gc_grace_seconds,omitempty"`

	IPAM IPAMConf `json:"ipam"`

	RuntimeConfig struct {
		Labels json.RawMessage `json:"labels,omitempty"`
	} `json:"runtimeConfig,omitempty"`
	Args struct {
		CNI struct {
			Labels []labelKV `json:"labels,omitempty"`
		} `json:"cni,omitempty"`
	} `json:"args,omitempty"`

	// ValidAttachments are GC's "cni.dev/valid-attachments".
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`

	// Calico's Kubernetes sections and the other keys of Calico's config
	// tortie does not act on: see calico.go.
	Policy     PolicyConf     `json:"policy,omitempty"`
	Kubernetes KubernetesConf `json:"kubernetes,omitempty"`
	calicoOnly
}

// IPAMConf is the "ipam" section. For tortie-ipam the pools and families
// are ours (Calico's names); any other type is delegated as it is.
type IPAMConf struct {
	Type       string    `json:"type"`
	AssignIPv4 *flexBool `json:"assign_ipv4,omitempty"`
	AssignIPv6 *flexBool `json:"assign_ipv6,omitempty"`
	// IPv4Pools, IPv6Pools: each entry an IPPool's name or CIDR; see
	// resolvePools.
	IPv4Pools []string `json:"ipv4_pools,omitempty"`
	IPv6Pools []string `json:"ipv6_pools,omitempty"`
}

type labelKV struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// flexBool accepts true, "true" and "false" (Calico writes strings).
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	s := strings.Trim(string(data), `"`)
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%s is not a boolean", data)
	}
	*b = flexBool(v)
	return nil
}

// parseConf decodes and checks the network config.
func parseConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, newError(types.ErrDecodingFailure, "the network configuration is not valid JSON", err)
	}
	if conf.Name == "" {
		return nil, newError(types.ErrInvalidNetworkConfig, `the network configuration has no "name"`, nil)
	}
	if err := datastore.CheckType(conf.DatastoreType); err != nil {
		return nil, newError(types.ErrInvalidNetworkConfig, "datastore_type: "+err.Error(), nil)
	}
	if conf.MTU != 0 && (conf.MTU < mtu.Min || conf.MTU > mtu.Max) {
		return nil, newError(types.ErrInvalidNetworkConfig, fmt.Sprintf("mtu %d is out of range (%d-%d; 0 or unset: from the MTU file)", conf.MTU, mtu.Min, mtu.Max), nil)
	}
	for key, v := range map[string]int{"log_file_max_size": conf.LogFileMaxSize, "log_file_max_age": conf.LogFileMaxAge, "log_file_max_count": conf.LogFileMaxCount} {
		if v < 0 {
			return nil, newError(types.ErrInvalidNetworkConfig, fmt.Sprintf("%s %d is negative (0 means the default)", key, v), nil)
		}
	}
	if conf.WorkloadNamespace == "" {
		conf.WorkloadNamespace = DefaultNamespace
	}
	for key, list := range map[string][]string{"ipv4_pools": conf.IPAM.IPv4Pools, "ipv6_pools": conf.IPAM.IPv6Pools} {
		for _, p := range list {
			if strings.TrimSpace(p) == "" {
				return nil, newError(types.ErrInvalidNetworkConfig,
					fmt.Sprintf("ipam.%s has an empty entry (an entry is an IPPool's name or CIDR)", key), nil)
			}
		}
	}
	return conf, nil
}

// workloadMTU is the MTU the workload's interface gets: the config's mtu
// when set; else the one tortie-node wrote to the MTU file, so that nothing
// a workload sends has to be fragmented into the node's tunnels; else, with
// no file, DefaultMTU (an error with require_mtu_file). A file that is
// there but unreadable or wrong is an error: a guessed MTU could black-hole
// large packets.
func (c *NetConf) workloadMTU() (int, *types.Error) {
	if c.MTU != 0 {
		return c.MTU, nil
	}
	path := c.MTUFile
	if path == "" {
		path = mtu.DefaultFile
	}
	v, err := mtu.Read(path)
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, fs.ErrNotExist) && !c.RequireMTUFile:
		return DefaultMTU, nil
	case errors.Is(err, fs.ErrNotExist):
		return 0, newError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("require_mtu_file is set and the MTU file %s is missing: tortie-node writes it once it runs on this host (or set mtu)", path), nil)
	default:
		return 0, newError(types.ErrIOFailure, "cannot read the workload MTU (set mtu to skip the file)", err)
	}
}

// checkIPAMType refuses, for the network plugin, an ipam.type that names a
// network plugin: delegating to it would run this binary again as the
// network plugin (which would delegate again, without end), or Calico's
// network plugin, which is no IPAM plugin either.
func (c *NetConf) checkIPAMType() *types.Error {
	switch c.IPAM.Type {
	case PluginType, CalicoPluginType:
		return newError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("ipam.type %q names the network plugin, not an IPAM plugin: write %q or %q for tortie's IPAM, or another IPAM plugin (host-local, ...)",
				c.IPAM.Type, CalicoIPAMType, IPAMType), nil)
	}
	return nil
}

func (c *NetConf) datastoreTimeout() time.Duration {
	if c.DatastoreTimeoutSeconds > 0 {
		return time.Duration(c.DatastoreTimeoutSeconds * float64(time.Second))
	}
	return DefaultDatastoreTimeout
}

func (c *NetConf) gcGrace() time.Duration {
	switch {
	case c.GCGraceSeconds < 0:
		return 0
	case c.GCGraceSeconds > 0:
		return time.Duration(c.GCGraceSeconds * float64(time.Second))
	}
	return DefaultGCGrace
}

// assignFamilies is how many addresses of each family tortie-ipam hands
// out: IPv4 unless assign_ipv4 is false, IPv6 only if assign_ipv6.
func (c *NetConf) assignFamilies() (num4, num6 int) {
	num4 = 1
	if c.IPAM.AssignIPv4 != nil && !bool(*c.IPAM.AssignIPv4) {
		num4 = 0
	}
	if c.IPAM.AssignIPv6 != nil && bool(*c.IPAM.AssignIPv6) {
		num6 = 1
	}
	return num4, num6
}

// nodeName resolves the node: the config, then the file the node agent
// writes, then the config's deprecated "hostname", then the host name
// (lower case, as Calico does).
func (c *NetConf) nodeName() (string, error) {
	if c.NodeName != "" {
		return c.NodeName, nil
	}
	file := c.NodenameFile
	if file == "" {
		file = NodenameFile
	}
	if b, err := os.ReadFile(file); err == nil {
		if n := strings.TrimSpace(string(b)); n != "" {
			return n, nil
		}
	}
	if c.Hostname != "" {
		return c.Hostname, nil
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", newError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("cannot tell the node name: set \"nodename\" in the network config or start the node agent (it writes %s)", file), err)
	}
	return strings.ToLower(strings.TrimSpace(h)), nil
}

// netConfNames are how messages name the network config's etcd fields:
// the plugin's flags, as far as datastore.Resolve is concerned.
var netConfNames = datastore.Flags{
	Endpoints:     "etcd_endpoints in the network config",
	CertFile:      "etcd_cert_file in the network config",
	KeyFile:       "etcd_key_file in the network config",
	CAFile:        "etcd_ca_cert_file in the network config",
	DatastoreType: "datastore_type in the network config",
}

// datastoreConfig resolves the datastore as every tortie binary does
// (datastore.Resolve), each setting on its own: the network config's etcd
// fields, else Calico's ETCD_* environment variables, else configFile (the
// CLI's, read if present), else the default endpoint. The string says where
// the endpoints came from.
func (c *NetConf) datastoreConfig(configFile string) (datastore.Config, string, error) {
	ds, err := datastore.Resolve(datastore.Sources{
		Flags: datastore.Flags{
			Endpoints: c.EtcdEndpoints, CertFile: c.EtcdCertFile, KeyFile: c.EtcdKeyFile, CAFile: c.EtcdCACertFile,
			DatastoreType: c.DatastoreType,
		},
		FlagNames:         netConfNames,
		DefaultConfigFile: configFile,
	})
	if err != nil {
		return datastore.Config{}, "", newError(types.ErrInvalidNetworkConfig, err.Error(), nil)
	}
	cfg := ds.Config
	t := c.datastoreTimeout()
	cfg.DialTimeout = t
	cfg.RequestTimeout = t
	cfg.RetryTimeout = t
	return cfg, ds.Origins.Endpoints.String(), nil
}

// openLog opens the log file (log_file_path, else DefaultLogFile), rotated
// as Calico rotates it. A plugin keeps stdout for its result, and runtimes
// pass its stderr on to their own logs: records go to the file at
// log_level, and only errors also to stderr. When the file cannot be
// opened, or conf is nil (the config could not be read), errors go to
// stderr and nothing else anywhere.
func openLog(c *NetConf) (*slog.Logger, func()) {
	stderr := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})
	if c == nil {
		return slog.New(stderr), func() {}
	}
	path := DefaultLogFile
	if c.LogFilePath != "" {
		path = c.LogFilePath
	}
	orDefault := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	f, err := openRotating(path,
		int64(orDefault(c.LogFileMaxSize, DefaultLogFileMaxSize))<<20,
		time.Duration(orDefault(c.LogFileMaxAge, DefaultLogFileMaxAge))*24*time.Hour,
		orDefault(c.LogFileMaxCount, DefaultLogFileMaxCount))
	if err != nil {
		l := slog.New(stderr)
		l.Error("cannot open the log file: only errors are logged, here", "log_file_path", path, "error", err)
		return l, func() {}
	}
	level, known := logLevel(c.LogLevel)
	l := slog.New(slog.NewMultiHandler(slog.NewTextHandler(f, &slog.HandlerOptions{Level: level}), stderr))
	if !known {
		l.Warn("log_level not known: logging at info", "log_level", c.LogLevel)
	}
	return l, func() { f.Close() }
}

// logLevel reads log_level: Calico's values (debug, info, warning, error;
// others are info in Calico too) and logrus' other names.
func logLevel(s string) (level slog.Level, known bool) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, true
	case "debug", "trace":
		return slog.LevelDebug, true
	case "warning", "warn":
		return slog.LevelWarn, true
	case "error", "fatal", "panic":
		return slog.LevelError, true
	}
	return slog.LevelInfo, false
}
