// Package agentconfig works out tortie-node's settings the way Felix works
// out its own: every setting is looked up, field by field, in the agent's
// explicit flags, then the environment (FELIX_<NAME>, NAME being the
// FelixConfiguration field upper-cased), then the FelixConfiguration of
// this node ("node.<name>"), then the global one ("default"), then Calico's
// default. It is pure: it reads the values it is given and nothing else.
//
// It must never accept a value it cannot parse silently: a bad value is an
// error naming the field and where it came from, and the field keeps the
// value of the next layer down (as Felix does), so one typo does not stop
// the agent.
package agentconfig

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// Settings are the FelixConfiguration fields tortie-node honours.
type Settings struct {
	// LogSeverityScreen is the log level: Debug, Info, Warning, Error
	// (Fatal and Panic are taken as Error).
	LogSeverityScreen string
	// FailsafeInbound and FailsafeOutbound are always allowed to and from
	// the host through host endpoint policy.
	FailsafeInbound, FailsafeOutbound []v3.ProtoPort
	// DefaultEndpointToHostAction: Drop, Accept or Return.
	DefaultEndpointToHostAction string
	// InterfacePrefixes of workload interfaces (interfacePrefix, comma-separated).
	InterfacePrefixes []string
	// IPv6Support: whether IPv6 routes are programmed.
	IPv6Support bool
	// NATOutgoingAddress, when valid, is the source address natOutgoing
	// traffic is rewritten to (instead of the outgoing interface's).
	NATOutgoingAddress netip.Addr
	// Health endpoint (/liveness, /readiness, /status/...).
	HealthEnabled bool
	HealthHost    string
	HealthPort    int
	// Prometheus /metrics.
	PrometheusMetricsEnabled bool
	PrometheusMetricsHost    string
	PrometheusMetricsPort    int
	// Go's profiler (/debug/pprof/): DebugPort 0 (Felix's unset) is off.
	DebugHost string
	DebugPort int
	// RouteRefreshInterval: how often routes are compared with the kernel.
	RouteRefreshInterval time.Duration
	// VXLAN: VXLANEnabled false refuses pools that ask for VXLAN (the node
	// is not ready and says which); VXLANMTU 0 means from the host's MTU.
	VXLANEnabled bool
	VXLANPort    int
	VXLANVNI     int
	VXLANMTU     int
	// IPIPEnabled false refuses pools that ask for IP-in-IP (the node is
	// not ready and says which); IPIPMTU 0 means from the host's MTU.
	IPIPEnabled bool
	IPIPMTU     int
	// MTUIfacePattern selects the host interfaces whose smallest MTU the
	// tunnel MTU is computed from.
	MTUIfacePattern string
	// BPFEnabled asks for an eBPF dataplane, which tortie does not have.
	BPFEnabled bool
	// FlowLogs (flowLogsLocalReporter Enabled): every connection's
	// deciding rule is logged and served on the health address at
	// /status/flows (loopback clients only), for `tortie flows`.
	FlowLogs bool
	// FlowLogsFlushInterval is the aggregation interval of flow records.
	FlowLogsFlushInterval time.Duration
	// The Go runtime's settings (see ApplyRuntime): GoGCThreshold is GOGC (-1
	// turns collection off), GoMemoryLimitMB the soft memory limit (-1:
	// none), GoMaxProcs the CPUs used at once (-1: Go's choice).
	GoGCThreshold   int
	GoMemoryLimitMB int
	GoMaxProcs      int
	// WireGuard (IPv4): WireguardEnabled encrypts traffic to other hosts'
	// workloads through device WireguardInterfaceName, listening on
	// WireguardListeningPort; WireguardMTU 0 means the host's MTU minus
	// WireGuard's overhead. Traffic to other hosts' workloads is looked up
	// in the device's routing table by a rule of priority
	// WireguardRoutingRulePriority. WireguardKeepAlive 0 is off.
	WireguardEnabled             bool
	WireguardListeningPort       int
	WireguardMTU                 int
	WireguardInterfaceName       string
	WireguardRoutingRulePriority int
	WireguardKeepAlive           time.Duration
	// WireguardEnabledV6 and WireguardHostEncryptionEnabled are read so
	// that the agent can say, loudly, that it does not do them (IPv6, and
	// traffic between the hosts themselves, stay unencrypted).
	WireguardEnabledV6             bool
	WireguardHostEncryptionEnabled bool
}

// Defaults are Calico's, except where tortie is safer: the health
// endpoint on localhost (as calico-node runs it), metrics off.
func Defaults() Settings {
	return Settings{
		LogSeverityScreen: "Info",
		FailsafeInbound: []v3.ProtoPort{
			{Protocol: "tcp", Port: 22}, {Protocol: "udp", Port: 68}, {Protocol: "tcp", Port: 179},
			{Protocol: "tcp", Port: 2379}, {Protocol: "tcp", Port: 2380}, {Protocol: "tcp", Port: 5473},
			{Protocol: "tcp", Port: 6443}, {Protocol: "tcp", Port: 6666}, {Protocol: "tcp", Port: 6667},
		},
		FailsafeOutbound: []v3.ProtoPort{
			{Protocol: "udp", Port: 53}, {Protocol: "udp", Port: 67}, {Protocol: "tcp", Port: 179},
			{Protocol: "tcp", Port: 2379}, {Protocol: "tcp", Port: 2380}, {Protocol: "tcp", Port: 5473},
			{Protocol: "tcp", Port: 6443}, {Protocol: "tcp", Port: 6666}, {Protocol: "tcp", Port: 6667},
		},
		DefaultEndpointToHostAction:  "Drop",
		InterfacePrefixes:            []string{"cali"},
		IPv6Support:                  true,
		HealthEnabled:                true,
		HealthHost:                   "localhost",
		HealthPort:                   9099,
		PrometheusMetricsPort:        9091,
		DebugHost:                    "localhost",
		RouteRefreshInterval:         90 * time.Second,
		VXLANEnabled:                 true,
		IPIPEnabled:                  true,
		VXLANPort:                    4789,
		VXLANVNI:                     4096,
		MTUIfacePattern:              `^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)`,
		FlowLogsFlushInterval:        15 * time.Second,
		GoGCThreshold:                40,
		GoMemoryLimitMB:              -1,
		GoMaxProcs:                   -1,
		WireguardListeningPort:       51820,
		WireguardInterfaceName:       "wireguard.cali",
		WireguardRoutingRulePriority: 99,
	}
}

// field is one honoured FelixConfiguration field: its JSON name (the
// environment variable is FELIX_ and the name upper-cased) and how its text
// form sets Settings.
type field struct {
	name  string
	parse func(s *Settings, v string) error
	// get is the field's value in s, for comparisons and logs.
	get func(s *Settings) any
}

func (f field) value(s Settings) string { return fmt.Sprint(f.get(&s)) }

var fields = []field{
	{"logSeverityScreen", func(s *Settings, v string) error {
		lv, err := LogLevel(v)
		if err == nil {
			s.LogSeverityScreen = lv
		}
		return err
	}, func(s *Settings) any { return s.LogSeverityScreen }},
	{"failsafeInboundHostPorts", func(s *Settings, v string) error {
		ps, err := parsePorts(v)
		if err == nil {
			s.FailsafeInbound = ps
		}
		return err
	}, func(s *Settings) any { return formatPorts(s.FailsafeInbound) }},
	{"failsafeOutboundHostPorts", func(s *Settings, v string) error {
		ps, err := parsePorts(v)
		if err == nil {
			s.FailsafeOutbound = ps
		}
		return err
	}, func(s *Settings) any { return formatPorts(s.FailsafeOutbound) }},
	{"defaultEndpointToHostAction", func(s *Settings, v string) error {
		for _, a := range []string{"Drop", "Accept", "Return"} {
			if strings.EqualFold(v, a) {
				s.DefaultEndpointToHostAction = a
				return nil
			}
		}
		return fmt.Errorf("%q: want Drop, Accept or Return", v)
	}, func(s *Settings) any { return s.DefaultEndpointToHostAction }},
	{"interfacePrefix", func(s *Settings, v string) error {
		var ps []string
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				ps = append(ps, p)
			}
		}
		if len(ps) == 0 {
			return fmt.Errorf("%q: want one or more comma-separated prefixes", v)
		}
		s.InterfacePrefixes = ps
		return nil
	}, func(s *Settings) any { return strings.Join(s.InterfacePrefixes, ",") }},
	boolField("ipv6Support", func(s *Settings) *bool { return &s.IPv6Support }),
	{"natOutgoingAddress", func(s *Settings, v string) error {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return fmt.Errorf("%q: want an IPv4 address", v)
		}
		s.NATOutgoingAddress = a
		return nil
	}, func(s *Settings) any { return s.NATOutgoingAddress }},
	boolField("healthEnabled", func(s *Settings) *bool { return &s.HealthEnabled }),
	{"healthHost", func(s *Settings, v string) error { s.HealthHost = v; return nil }, func(s *Settings) any { return s.HealthHost }},
	portField("healthPort", func(s *Settings) *int { return &s.HealthPort }),
	boolField("prometheusMetricsEnabled", func(s *Settings) *bool { return &s.PrometheusMetricsEnabled }),
	{"prometheusMetricsHost", func(s *Settings, v string) error { s.PrometheusMetricsHost = v; return nil }, func(s *Settings) any { return s.PrometheusMetricsHost }},
	portField("prometheusMetricsPort", func(s *Settings) *int { return &s.PrometheusMetricsPort }),
	{"debugHost", func(s *Settings, v string) error { s.DebugHost = v; return nil }, func(s *Settings) any { return s.DebugHost }},
	portField("debugPort", func(s *Settings) *int { return &s.DebugPort }),
	durationField("routeRefreshInterval", 0, func(s *Settings) *time.Duration { return &s.RouteRefreshInterval }),
	boolField("vxlanEnabled", func(s *Settings) *bool { return &s.VXLANEnabled }),
	portField("vxlanPort", func(s *Settings) *int { return &s.VXLANPort }),
	{"vxlanVNI", func(s *Settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<24-1 {
			return fmt.Errorf("%q: want a VNI from 1 to 16777215", v)
		}
		s.VXLANVNI = n
		return nil
	}, func(s *Settings) any { return s.VXLANVNI }},
	mtuField("vxlanMTU", func(s *Settings) *int { return &s.VXLANMTU }),
	boolField("ipipEnabled", func(s *Settings) *bool { return &s.IPIPEnabled }),
	mtuField("ipipMTU", func(s *Settings) *int { return &s.IPIPMTU }),
	{"mtuIfacePattern", func(s *Settings, v string) error {
		if _, err := regexp.Compile(v); err != nil {
			return fmt.Errorf("%q: %v", v, err)
		}
		s.MTUIfacePattern = v
		return nil
	}, func(s *Settings) any { return s.MTUIfacePattern }},
	boolField("bpfEnabled", func(s *Settings) *bool { return &s.BPFEnabled }),
	{"flowLogsLocalReporter", func(s *Settings, v string) error {
		switch {
		case strings.EqualFold(v, "Enabled"):
			s.FlowLogs = true
		case strings.EqualFold(v, "Disabled"):
			s.FlowLogs = false
		default:
			return fmt.Errorf("%q: want Enabled or Disabled", v)
		}
		return nil
	}, func(s *Settings) any {
		if s.FlowLogs {
			return "Enabled"
		}
		return "Disabled"
	}},
	durationField("flowLogsFlushInterval", time.Second, func(s *Settings) *time.Duration { return &s.FlowLogsFlushInterval }),
	intField("goGCThreshold", 0, "-1 (no collection) or a percentage", func(s *Settings) *int { return &s.GoGCThreshold }),
	intField("goMemoryLimitMB", 1, "-1 (no limit) or a size in MB", func(s *Settings) *int { return &s.GoMemoryLimitMB }),
	intField("goMaxProcs", 1, "-1 (Go's choice) or a CPU count", func(s *Settings) *int { return &s.GoMaxProcs }),
	boolField("wireguardEnabled", func(s *Settings) *bool { return &s.WireguardEnabled }),
	portField("wireguardListeningPort", func(s *Settings) *int { return &s.WireguardListeningPort }),
	mtuField("wireguardMTU", func(s *Settings) *int { return &s.WireguardMTU }),
	{"wireguardInterfaceName", func(s *Settings, v string) error {
		if !v3.ValidInterfaceName(v) {
			return fmt.Errorf("%q: want an interface name: 1 to 15 letters, digits, '.', '_' or '-'", v)
		}
		s.WireguardInterfaceName = v
		return nil
	}, func(s *Settings) any { return s.WireguardInterfaceName }},
	{"wireguardRoutingRulePriority", func(s *Settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 32765 {
			return fmt.Errorf("%q: want a routing rule priority from 1 to 32765", v)
		}
		s.WireguardRoutingRulePriority = n
		return nil
	}, func(s *Settings) any { return s.WireguardRoutingRulePriority }},
	durationField("wireguardKeepAlive", 0, func(s *Settings) *time.Duration { return &s.WireguardKeepAlive }),
	boolField("wireguardEnabledV6", func(s *Settings) *bool { return &s.WireguardEnabledV6 }),
	boolField("wireguardHostEncryptionEnabled", func(s *Settings) *bool { return &s.WireguardHostEncryptionEnabled }),
}

// Names are the FelixConfiguration fields tortie-node honours.
func Names() []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.name
	}
	return out
}

// EnvName is the environment variable that sets a field: FELIX_ and the
// field's name upper-cased (Felix's rule).
func EnvName(field string) string { return "FELIX_" + strings.ToUpper(field) }

// Source says which layer a field's value came from.
type Source string

const (
	SourceDefault Source = "default"
	SourceGlobal  Source = "FelixConfiguration default"
	SourceEnv     Source = "environment"
	SourceFlag    Source = "flag"
)

// NodeSource is the source of a value from FelixConfiguration node.<name>.
func NodeSource(node string) Source { return Source("FelixConfiguration node." + node) }

// Input is everything Resolve reads.
type Input struct {
	// Global and Node are FelixConfigurations "default" and
	// "node.<NodeName>" (nil when absent).
	Global, Node *v3.FelixConfiguration
	NodeName     string
	// Env is the process environment as os.Environ gives it; only FELIX_
	// variables are read.
	Env []string
	// Flags are values set explicitly on the command line, by field name
	// (e.g. "logSeverityScreen": "debug"), in the environment form.
	Flags map[string]string
}

// Result is the settings with where each field came from, and the values
// that were refused.
type Result struct {
	Settings Settings
	Sources  map[string]Source
	// Errors are the refused values, each naming the field and its source;
	// those fields kept the next layer's value.
	Errors []error
}

// Resolve applies the layers, lowest first, onto Calico's defaults.
func Resolve(in Input) Result {
	res := Result{Settings: Defaults(), Sources: map[string]Source{}}
	for _, f := range fields {
		res.Sources[f.name] = SourceDefault
	}
	env := map[string]string{}
	for _, kv := range in.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "FELIX_") {
			env[strings.ToUpper(k)] = v
		}
	}
	type layer struct {
		src    Source
		values map[string]string
	}
	layers := []layer{
		{SourceGlobal, specValues(in.Global)},
		{NodeSource(in.NodeName), specValues(in.Node)},
		{SourceEnv, nil},
		{SourceFlag, in.Flags},
	}
	for _, f := range fields {
		for _, l := range layers {
			v, ok := l.values[f.name]
			if l.src == SourceEnv {
				v, ok = env[EnvName(f.name)]
			}
			if !ok {
				continue
			}
			where := string(l.src)
			if l.src == SourceEnv {
				where = EnvName(f.name)
			}
			if err := f.parse(&res.Settings, strings.TrimSpace(v)); err != nil {
				res.Errors = append(res.Errors, fmt.Errorf("%s (%s): %w", f.name, where, err))
				continue
			}
			res.Sources[f.name] = l.src
		}
	}
	return res
}

// specValues gives the honoured fields a FelixConfiguration sets, in their
// environment form ("tcp:22,udp:68", "true", "90s").
func specValues(fc *v3.FelixConfiguration) map[string]string {
	if fc == nil {
		return nil
	}
	b, err := json.Marshal(fc.Spec)
	if err != nil {
		return nil
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		return nil
	}
	out := map[string]string{}
	for _, f := range fields {
		r, ok := raw[f.name]
		if !ok {
			continue
		}
		var s string
		var ports []v3.ProtoPort
		switch {
		case json.Unmarshal(r, &s) == nil:
			out[f.name] = s
		case json.Unmarshal(r, &ports) == nil:
			out[f.name] = formatPorts(ports)
		default:
			out[f.name] = string(r) // numbers and booleans
		}
	}
	return out
}

// NeedsRestart reports whether going from s to o takes a restart of the
// agent: a change of any honoured setting but the log level, as Felix
// restarts on a configuration change. The log level changes live.
func (s Settings) NeedsRestart(o Settings) bool {
	return len(s.Changed(o)) > 0
}

// Changed names the settings, other than those that change live (the log
// level and the Go runtime's), that differ.
func (s Settings) Changed(o Settings) []string {
	var out []string
	for _, f := range fields {
		if f.name == "logSeverityScreen" || isRuntimeField(f.name) {
			continue
		}
		if f.value(s) != f.value(o) {
			out = append(out, f.name)
		}
	}
	return out
}

// LogLevel normalises a Felix log severity: Debug, Info, Warning, Error;
// Fatal and Panic are taken as Error (tortie logs nothing at those).
func LogLevel(v string) (string, error) {
	switch strings.ToLower(v) {
	case "debug":
		return "Debug", nil
	case "info":
		return "Info", nil
	case "warning", "warn":
		return "Warning", nil
	case "error", "fatal", "panic":
		return "Error", nil
	}
	return "", fmt.Errorf("%q: want Debug, Info, Warning, Error, Fatal or Panic", v)
}

func boolField(name string, p func(*Settings) *bool) field {
	return field{name, func(s *Settings, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		*p(s) = b
		return nil
	}, func(s *Settings) any { return *p(s) }}
}

func mtuField(name string, p func(*Settings) *int) field {
	return field{name, func(s *Settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || (n > 0 && n < 1280) || n > 65535 {
			return fmt.Errorf("%q: want 0 (from the host's MTU) or an MTU from 1280 to 65535", v)
		}
		*p(s) = n
		return nil
	}, func(s *Settings) any { return *p(s) }}
}

// intField is -1 (the field's "off") or a number from least up.
func intField(name string, least int, want string, p func(*Settings) *int) field {
	return field{name, func(s *Settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || (n != -1 && n < least) {
			return fmt.Errorf("%q: want %s", v, want)
		}
		*p(s) = n
		return nil
	}, func(s *Settings) any { return *p(s) }}
}

func portField(name string, p func(*Settings) *int) field {
	return field{name, func(s *Settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: want a port from 1 to 65535", v)
		}
		*p(s) = n
		return nil
	}, func(s *Settings) any { return *p(s) }}
}

// durationField is a duration of at least least.
func durationField(name string, least time.Duration, p func(*Settings) *time.Duration) field {
	return field{name, func(s *Settings, v string) error {
		d, err := parseDuration(v)
		switch {
		case err != nil:
			return err
		case d < least && least == 0:
			return fmt.Errorf("%q is negative", v)
		case d < least:
			return fmt.Errorf("%q: want at least %v", v, least)
		}
		*p(s) = d
		return nil
	}, func(s *Settings) any { return *p(s) }}
}

// parseDuration reads Felix's environment form (seconds, "90" or "0.5")
// or a Go duration ("90s").
func parseDuration(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q: want seconds or a duration such as 90s", v)
	}
	return d, nil
}

// parsePorts reads Felix's port list: "tcp:22, udp:68", each entry
// protocol:port or protocol:net:port; "none" or "" is no ports.
func parsePorts(v string) ([]v3.ProtoPort, error) {
	out := []v3.ProtoPort{}
	if v == "" || strings.EqualFold(v, "none") {
		return out, nil
	}
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		parts := strings.Split(e, ":")
		if len(parts) > 3 && strings.Contains(e, "[") {
			// protocol:[v6 net]:port
			i, j := strings.Index(e, "["), strings.LastIndex(e, "]")
			if i < j {
				parts = []string{e[:i-1], e[i+1 : j], strings.TrimPrefix(e[j+1:], ":")}
			}
		}
		var pp v3.ProtoPort
		switch len(parts) {
		case 2:
			pp.Protocol = parts[0]
		case 3:
			pp.Protocol, pp.Net = parts[0], parts[1]
			if _, err := netip.ParsePrefix(pp.Net); err != nil {
				return nil, fmt.Errorf("%q: %q is not a CIDR", e, pp.Net)
			}
		default:
			return nil, fmt.Errorf("%q: want protocol:port or protocol:net:port", e)
		}
		pp.Protocol = strings.ToLower(pp.Protocol)
		switch pp.Protocol {
		case "tcp", "udp", "sctp":
		default:
			return nil, fmt.Errorf("%q: protocol %q: want tcp, udp or sctp", e, parts[0])
		}
		port, err := strconv.ParseUint(parts[len(parts)-1], 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("%q: want a port from 1 to 65535", e)
		}
		pp.Port = uint16(port)
		out = append(out, pp)
	}
	return out, nil
}

func formatPorts(ps []v3.ProtoPort) string {
	if len(ps) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		b.WriteString(proto + ":")
		if p.Net != "" {
			if strings.Contains(p.Net, ":") {
				b.WriteString("[" + p.Net + "]:")
			} else {
				b.WriteString(p.Net + ":")
			}
		}
		b.WriteString(strconv.Itoa(int(p.Port)))
	}
	return b.String()
}
