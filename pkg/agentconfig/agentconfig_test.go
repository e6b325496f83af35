package agentconfig

import (
	"log/slog"
	"math"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/syncer"
)

func fc(name, spec string) *v3.FelixConfiguration {
	r, err := v3.Decode([]byte("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: " + name + "}\nspec: " + spec))
	if err != nil {
		panic(err)
	}
	return r.(*v3.FelixConfiguration)
}

// TestPrecedence: per field, a flag wins over FELIX_*, which wins over
// node.<name>, which wins over default, which wins over Calico's default.
func TestPrecedence(t *testing.T) {
	global := fc("default", `{logSeverityScreen: Warning, interfacePrefix: "tap", healthPort: 9199, failsafeInboundHostPorts: [{protocol: tcp, port: 2222}], routeRefreshInterval: 30s}`)
	node := fc("node.n1", `{logSeverityScreen: Error, healthPort: 9299, vxlanVNI: 7}`)
	tests := []struct {
		name  string
		in    Input
		check func(Settings) bool
		field string
		src   Source
	}{
		{"Calico's default", Input{}, func(s Settings) bool { return s.LogSeverityScreen == "Info" && s.HealthPort == 9099 }, "logSeverityScreen", SourceDefault},
		{"global", Input{Global: global}, func(s Settings) bool { return s.LogSeverityScreen == "Warning" }, "logSeverityScreen", SourceGlobal},
		{"node over global", Input{Global: global, Node: node, NodeName: "n1"}, func(s Settings) bool { return s.LogSeverityScreen == "Error" }, "logSeverityScreen", NodeSource("n1")},
		{"global where node is silent", Input{Global: global, Node: node, NodeName: "n1"}, func(s Settings) bool { return strings.Join(s.InterfacePrefixes, ",") == "tap" }, "interfacePrefix", SourceGlobal},
		{"env over node", Input{Global: global, Node: node, NodeName: "n1", Env: []string{"FELIX_HEALTHPORT=9399", "PATH=/bin"}}, func(s Settings) bool { return s.HealthPort == 9399 }, "healthPort", SourceEnv},
		{"env name is case-insensitive in the field part", Input{Env: []string{"FELIX_LOGSEVERITYSCREEN=debug"}}, func(s Settings) bool { return s.LogSeverityScreen == "Debug" }, "logSeverityScreen", SourceEnv},
		{"flag over env", Input{Env: []string{"FELIX_LOGSEVERITYSCREEN=debug"}, Flags: map[string]string{"logSeverityScreen": "warn"}}, func(s Settings) bool { return s.LogSeverityScreen == "Warning" }, "logSeverityScreen", SourceFlag},
		{"ports from a resource", Input{Global: global}, func(s Settings) bool {
			return len(s.FailsafeInbound) == 1 && s.FailsafeInbound[0] == v3.ProtoPort{Protocol: "tcp", Port: 2222}
		}, "failsafeInboundHostPorts", SourceGlobal},
		{"ports from env, Felix's form", Input{Env: []string{"FELIX_FAILSAFEOUTBOUNDHOSTPORTS=udp:53, tcp:10.0.0.0/8:443"}}, func(s Settings) bool {
			return formatPorts(s.FailsafeOutbound) == "udp:53,tcp:10.0.0.0/8:443"
		}, "failsafeOutboundHostPorts", SourceEnv},
		{"no ports", Input{Env: []string{"FELIX_FAILSAFEINBOUNDHOSTPORTS=none"}}, func(s Settings) bool { return s.FailsafeInbound != nil && len(s.FailsafeInbound) == 0 }, "failsafeInboundHostPorts", SourceEnv},
		{"duration from a resource", Input{Global: global}, func(s Settings) bool { return s.RouteRefreshInterval == 30*time.Second }, "routeRefreshInterval", SourceGlobal},
		{"duration from env in seconds", Input{Env: []string{"FELIX_ROUTEREFRESHINTERVAL=2.5"}}, func(s Settings) bool { return s.RouteRefreshInterval == 2500*time.Millisecond }, "routeRefreshInterval", SourceEnv},
		{"number from node", Input{Node: node, NodeName: "n1"}, func(s Settings) bool { return s.VXLANVNI == 7 }, "vxlanVNI", NodeSource("n1")},
		{"another node's config is not read", Input{Node: node, NodeName: "n1"}, func(s Settings) bool { return s.HealthPort == 9299 }, "healthPort", NodeSource("n1")},
		{"NAT address", Input{Env: []string{"FELIX_NATOUTGOINGADDRESS=192.0.2.7"}}, func(s Settings) bool { return s.NATOutgoingAddress == netip.MustParseAddr("192.0.2.7") }, "natOutgoingAddress", SourceEnv},
		{"bpf", Input{Global: fc("default", `{bpfEnabled: true}`)}, func(s Settings) bool { return s.BPFEnabled }, "bpfEnabled", SourceGlobal},
		{"ipip off", Input{Global: fc("default", `{ipipEnabled: false, ipipMTU: 1400}`)}, func(s Settings) bool { return !s.IPIPEnabled && s.IPIPMTU == 1400 }, "ipipEnabled", SourceGlobal},
		{"Go's threshold, Calico's default", Input{}, func(s Settings) bool { return s.GoGCThreshold == 40 && s.GoMemoryLimitMB == -1 && s.GoMaxProcs == -1 }, "goGCThreshold", SourceDefault},
		{"Go's memory limit from a resource", Input{Global: fc("default", `{goMemoryLimitMB: 250, goGCThreshold: -1}`)}, func(s Settings) bool { return s.GoMemoryLimitMB == 250 && s.GoGCThreshold == -1 }, "goMemoryLimitMB", SourceGlobal},
		{"Go's CPUs from env", Input{Env: []string{"FELIX_GOMAXPROCS=1"}}, func(s Settings) bool { return s.GoMaxProcs == 1 }, "goMaxProcs", SourceEnv},
		{"WireGuard, Calico's defaults", Input{}, func(s Settings) bool {
			return !s.WireguardEnabled && s.WireguardListeningPort == 51820 && s.WireguardInterfaceName == "wireguard.cali" &&
				s.WireguardRoutingRulePriority == 99 && s.WireguardMTU == 0 && s.WireguardKeepAlive == 0
		}, "wireguardEnabled", SourceDefault},
		{"WireGuard from a resource", Input{Global: fc("default", `{wireguardEnabled: true, wireguardListeningPort: 51821, wireguardMTU: 1400,
			wireguardInterfaceName: wg0, wireguardRoutingRulePriority: 98, wireguardKeepAlive: 25s}`)}, func(s Settings) bool {
			return s.WireguardEnabled && s.WireguardListeningPort == 51821 && s.WireguardMTU == 1400 && s.WireguardInterfaceName == "wg0" &&
				s.WireguardRoutingRulePriority == 98 && s.WireguardKeepAlive == 25*time.Second
		}, "wireguardEnabled", SourceGlobal},
		{"WireGuard's parts tortie does not do, read to be warned of", Input{Global: fc("default", `{wireguardEnabledV6: true, wireguardHostEncryptionEnabled: true}`)},
			func(s Settings) bool { return s.WireguardEnabledV6 && s.WireguardHostEncryptionEnabled }, "wireguardEnabledV6", SourceGlobal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Resolve(tt.in)
			if len(res.Errors) > 0 {
				t.Fatalf("errors: %v", res.Errors)
			}
			if !tt.check(res.Settings) {
				t.Errorf("settings %+v", res.Settings)
			}
			if got := res.Sources[tt.field]; got != tt.src {
				t.Errorf("source of %s: %s, want %s", tt.field, got, tt.src)
			}
		})
	}
}

// TestBadValues: a value that cannot be parsed is an error naming the
// field and where it came from, and the next layer's value stays.
func TestBadValues(t *testing.T) {
	tests := []struct {
		env, want string
		check     func(Settings) bool
	}{
		{"FELIX_HEALTHPORT=99999", "healthPort (FELIX_HEALTHPORT)", func(s Settings) bool { return s.HealthPort == 9199 }},
		{"FELIX_LOGSEVERITYSCREEN=loud", "logSeverityScreen (FELIX_LOGSEVERITYSCREEN)", func(s Settings) bool { return s.LogSeverityScreen == "Warning" }},
		{"FELIX_FAILSAFEINBOUNDHOSTPORTS=tcp:22,icmp:1", `protocol "icmp"`, func(s Settings) bool { return formatPorts(s.FailsafeInbound) == "tcp:2222" }},
		{"FELIX_DEFAULTENDPOINTTOHOSTACTION=Reject", "defaultEndpointToHostAction", func(s Settings) bool { return s.DefaultEndpointToHostAction == "Drop" }},
		{"FELIX_NATOUTGOINGADDRESS=2001:db8::1", "natOutgoingAddress", func(s Settings) bool { return !s.NATOutgoingAddress.IsValid() }},
		{"FELIX_VXLANENABLED=maybe", "vxlanEnabled", func(s Settings) bool { return s.VXLANEnabled }},
		{"FELIX_MTUIFACEPATTERN=(", "mtuIfacePattern", func(s Settings) bool { return s.MTUIfacePattern == Defaults().MTUIfacePattern }},
		{"FELIX_GOGCTHRESHOLD=-2", `goGCThreshold (FELIX_GOGCTHRESHOLD): "-2": want -1 (no collection) or a percentage`, func(s Settings) bool { return s.GoGCThreshold == 40 }},
		{"FELIX_GOMEMORYLIMITMB=0", "goMemoryLimitMB", func(s Settings) bool { return s.GoMemoryLimitMB == -1 }},
		{"FELIX_GOMAXPROCS=all", "goMaxProcs", func(s Settings) bool { return s.GoMaxProcs == -1 }},
		{"FELIX_WIREGUARDINTERFACENAME=wireguard.calico0", "wireguardInterfaceName", func(s Settings) bool { return s.WireguardInterfaceName == "wireguard.cali" }},
		{"FELIX_WIREGUARDROUTINGRULEPRIORITY=32766", "wireguardRoutingRulePriority", func(s Settings) bool { return s.WireguardRoutingRulePriority == 99 }},
		{"FELIX_WIREGUARDKEEPALIVE=-1s", `wireguardKeepAlive (FELIX_WIREGUARDKEEPALIVE): "-1s" is negative`, func(s Settings) bool { return s.WireguardKeepAlive == 0 }},
		{"FELIX_WIREGUARDLISTENINGPORT=0", "wireguardListeningPort", func(s Settings) bool { return s.WireguardListeningPort == 51820 }},
	}
	global := fc("default", `{logSeverityScreen: Warning, healthPort: 9199, failsafeInboundHostPorts: [{protocol: tcp, port: 2222}]}`)
	for _, tt := range tests {
		res := Resolve(Input{Global: global, Env: []string{tt.env}})
		if len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Error(), tt.want) {
			t.Errorf("%s: errors %v, want one naming %q", tt.env, res.Errors, tt.want)
		}
		if !tt.check(res.Settings) {
			t.Errorf("%s: the next layer's value did not stay: %+v", tt.env, res.Settings)
		}
	}
}

func TestChanged(t *testing.T) {
	a := Defaults()
	b := Defaults()
	b.LogSeverityScreen = "Debug"
	if a.NeedsRestart(b) {
		t.Error("a log level change needs a restart; it is live")
	}
	b.GoGCThreshold, b.GoMemoryLimitMB, b.GoMaxProcs = 100, 300, 1
	if a.NeedsRestart(b) {
		t.Error("a Go runtime change needs a restart; it is live")
	}
	b.FailsafeInbound = []v3.ProtoPort{{Protocol: "tcp", Port: 1}}
	b.HealthPort = 1
	if got := strings.Join(a.Changed(b), ","); got != "failsafeInboundHostPorts,healthPort" {
		t.Errorf("changed %q", got)
	}
}

// TestComponent: the component changes the log level live, asks for a
// restart (once) when another setting changes, and keeps the agent not
// ready while bpfEnabled is true.
func TestComponent(t *testing.T) {
	level := &slog.LevelVar{}
	in := Input{NodeName: "n1"}
	c := NewComponent(in, Resolve(in).Settings, level, slog.Default())
	update := func(r *v3.FelixConfiguration) {
		c.OnUpdate(syncer.Update{Kind: v3.KindFelixConfiguration, Name: r.Name, Resource: r})
	}
	update(fc("node.n2", `{logSeverityScreen: Debug, healthPort: 1234}`)) // another node's
	if err := c.Apply(t.Context(), true); err != nil || level.Level() != slog.LevelInfo || len(c.restart) != 0 {
		t.Fatalf("another node's config acted on: err %v, level %v, restart %d", err, level.Level(), len(c.restart))
	}
	update(fc("default", `{logSeverityScreen: Debug}`))
	if err := c.Apply(t.Context(), false); err != nil || level.Level() != slog.LevelDebug || len(c.restart) != 0 {
		t.Fatalf("log level: err %v, level %v, restart asked %d", err, level.Level(), len(c.restart))
	}
	update(fc("node.n1", `{healthPort: 9999}`))
	if err := c.Apply(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if err := c.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "healthPort (FelixConfiguration node.n1)") {
		t.Errorf("restart: %v", err)
	}
	update(fc("node.n1", `{healthPort: 9999, bpfEnabled: true}`))
	if err := c.Apply(t.Context(), false); err == nil || !strings.Contains(err.Error(), "bpfEnabled") {
		t.Errorf("bpfEnabled: %v", err)
	}
	c.OnUpdate(syncer.Update{Kind: v3.KindFelixConfiguration, Name: "node.n1"}) // deleted
	if err := c.Apply(t.Context(), false); err != nil {
		t.Errorf("after the node's config went: %v", err)
	}
}

// TestApplyRuntime: the settings reach the Go runtime, but not past Go's
// own variables; a change through the component is applied live.
func TestApplyRuntime(t *testing.T) {
	gc, limit, procs := debug.SetGCPercent(100), debug.SetMemoryLimit(-1), runtime.GOMAXPROCS(0)
	t.Cleanup(func() {
		debug.SetGCPercent(gc)
		debug.SetMemoryLimit(limit)
		runtime.GOMAXPROCS(procs)
	})
	s := Defaults()
	s.GoGCThreshold, s.GoMemoryLimitMB, s.GoMaxProcs = 70, 300, 1
	got := ApplyRuntime(s, []string{"PATH=/bin"})
	if debug.SetGCPercent(70) != 70 || debug.SetMemoryLimit(-1) != 300<<20 || runtime.GOMAXPROCS(0) != 1 {
		t.Errorf("runtime not set: %v", got)
	}
	if want := "goGCThreshold=70 goMemoryLimitMB=300 goMaxProcs=1 (GOMAXPROCS 1)"; strings.Join(got, " ") != want {
		t.Errorf("applied %q, want %q", got, want)
	}

	// Go's variables win; -1 is no limit and Go's own CPU count.
	s.GoGCThreshold, s.GoMemoryLimitMB, s.GoMaxProcs = 30, -1, -1
	got = ApplyRuntime(s, []string{"GOGC=90"})
	if debug.SetGCPercent(70) != 70 || debug.SetMemoryLimit(-1) != math.MaxInt64 || runtime.GOMAXPROCS(0) != procs {
		t.Errorf("runtime: %v", got)
	}
	if !strings.HasPrefix(strings.Join(got, " "), "goGCThreshold: GOGC=90 set goMemoryLimitMB=-1") {
		t.Errorf("applied %q", got)
	}

	in := Input{NodeName: "n1"}
	c := NewComponent(in, Resolve(in).Settings, nil, slog.Default())
	c.OnUpdate(syncer.Update{Kind: v3.KindFelixConfiguration, Name: "default", Resource: fc("default", `{goGCThreshold: 55}`)})
	if err := c.Apply(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if debug.SetGCPercent(100) != 55 || len(c.restart) != 0 {
		t.Errorf("goGCThreshold not applied live (restart asked %d)", len(c.restart))
	}
}
