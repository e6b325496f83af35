package v3

import (
	"reflect"
	"testing"
)

func TestFelixConfigurationDefaults(t *testing.T) {
	const added = `"nftablesMode":"Auto","nftablesFlowTableOffload":"Disabled","bpfLogLevel":"","bpfConnectTimeLoadBalancing":"TCP","bpfHostNetworkedNATWithoutCTLB":"Enabled","floatingIPs":"Disabled"`
	for _, c := range []struct{ name, spec, want string }{
		{"empty", "", `{` + added + `}`},
		{"stored default", "defaultEndpointToHostAction: Accept\nlogSeverityScreen: Info\nreportingInterval: 0s\nfailsafeOutboundHostPorts:\n- {protocol: tcp, port: 23790}\n- {protocol: udp, port: 53}\n- {protocol: tcp, port: 2379}",
			`{"defaultEndpointToHostAction":"Accept","logSeverityScreen":"Info","reportingInterval":"0s","failsafeOutboundHostPorts":[{"protocol":"tcp","port":23790},{"protocol":"udp","port":53},{"protocol":"tcp","port":2379}],` + added + `}`},
		{"explicit kept", "nftablesMode: Enabled\nnftablesFlowTableOffload: All\nbpfLogLevel: Debug\nbpfConnectTimeLoadBalancing: Disabled\nbpfHostNetworkedNATWithoutCTLB: Disabled\nfloatingIPs: Enabled",
			`{"nftablesMode":"Enabled","nftablesFlowTableOffload":"All","bpfLogLevel":"Debug","bpfConnectTimeLoadBalancing":"Disabled","bpfHostNetworkedNATWithoutCTLB":"Disabled","floatingIPs":"Enabled"}`},
		{"deprecated ctlb true", "bpfConnectTimeLoadBalancingEnabled: true",
			`{"nftablesMode":"Auto","nftablesFlowTableOffload":"Disabled","bpfLogLevel":"","bpfConnectTimeLoadBalancingEnabled":true,"bpfConnectTimeLoadBalancing":"Enabled","bpfHostNetworkedNATWithoutCTLB":"Disabled","floatingIPs":"Disabled"}`},
		{"deprecated ctlb false", "bpfConnectTimeLoadBalancingEnabled: false",
			`{"nftablesMode":"Auto","nftablesFlowTableOffload":"Disabled","bpfLogLevel":"","bpfConnectTimeLoadBalancingEnabled":false,"bpfConnectTimeLoadBalancing":"Disabled","bpfHostNetworkedNATWithoutCTLB":"Disabled","floatingIPs":"Disabled"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decode([]byte(infraDoc("FelixConfiguration", "default", c.spec)))
			if err != nil {
				t.Fatal(err)
			}
			SetDefaults(r)
			got := specJSON(t, r)
			if got != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
			SetDefaults(r)
			if again := specJSON(t, r); again != got {
				t.Fatalf("not idempotent: %s", again)
			}
			if err := Validate(r); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFelixConfigurationValidation(t *testing.T) {
	fc := func(spec string) string { return infraDoc("FelixConfiguration", "default", spec) }
	runInfraBad(t, []infraBad{
		{"name", infraDoc("FelixConfiguration", "h1", "logSeverityScreen: Info"), "metadata.name", `must be "default" or "node."`},
		{"log screen", fc("logSeverityScreen: Verbose"), "spec.logSeverityScreen", `"Verbose" is not one of`},
		{"log sys", fc("logSeveritySys: Loud"), "spec.logSeveritySys", "not one of"},
		{"cluster routes", fc("programClusterRoutes: Sometimes"), "spec.programClusterRoutes", "not one of Disabled, Enabled, EnabledIPIPOnly, EnabledNoEncapOnly"},
		{"route priority", fc("ipv4ElevatedRoutePriority: 2147483647"), "spec.ipv4ElevatedRoutePriority", "out of range"},
		{"maglev services", fc("bpfMaglevMaxServices: 3001"), "spec.bpfMaglevMaxServices", "out of range"},
		{"healthz port", fc("bpfKubeProxyHealthzPort: 70000"), "spec.bpfKubeProxyHealthzPort", "out of range"},
		{"convergence time", fc("liveMigrationRouteConvergenceTime: -1s"), "spec.liveMigrationRouteConvergenceTime", "must not be negative"},
		{"endpoint to host", fc("defaultEndpointToHostAction: Allow"), "spec.defaultEndpointToHostAction", "not one of Drop, Accept, Return"},
		{"chain insert", fc("chainInsertMode: Prepend"), "spec.chainInsertMode", "not one of Insert, Append"},
		{"filter deny", fc("iptablesFilterDenyAction: Accept"), "spec.iptablesFilterDenyAction", "not one of Drop, Reject"},
		{"iptables backend", fc("iptablesBackend: Nft2"), "spec.iptablesBackend", "not one of Auto, Legacy, NFT"},
		{"nftables mode", fc("nftablesMode: Sometimes"), "spec.nftablesMode", "not one of Disabled, Enabled, Auto"},
		{"flowtable", fc("nftablesFlowTableOffload: Some"), "spec.nftablesFlowTableOffload", "not one of Disabled, Enabled, All"},
		{"bpf log level", fc("bpfLogLevel: Trace"), "spec.bpfLogLevel", "not one of Off, Info, Debug"},
		{"ctlb", fc("bpfConnectTimeLoadBalancing: UDP"), "spec.bpfConnectTimeLoadBalancing", "not one of TCP, Enabled, Disabled"},
		{"interface prefix", fc("interfacePrefix: \"cali,way-too-long-prefix\""), "spec.interfacePrefix", "comma-separated list of interface name prefixes"},
		{"ipip mtu small", fc("ipipMTU: 40"), "spec.ipipMTU", "too small"},
		{"vxlan mtu v6 small", fc("vxlanMTUV6: 1000"), "spec.vxlanMTUV6", "at least 1280"},
		{"mtu large", fc("wireguardMTU: 70000"), "spec.wireguardMTU", "out of range"},
		{"health port", fc("healthPort: 65536"), "spec.healthPort", "out of range"},
		{"vxlan port", fc("vxlanPort: 0"), "spec.vxlanPort", "out of range"},
		{"vni", fc("vxlanVNI: 16777216"), "spec.vxlanVNI", "out of range"},
		{"wireguard port", fc("wireguardListeningPort: -1"), "spec.wireguardListeningPort", "out of range"},
		{"failsafe protocol", fc("failsafeInboundHostPorts: [{protocol: icmp, port: 22}]"), "spec.failsafeInboundHostPorts[0].protocol", "not one of tcp, udp, sctp"},
		{"failsafe port", fc("failsafeOutboundHostPorts: [{protocol: udp}]"), "spec.failsafeOutboundHostPorts[0].port", "required"},
		{"failsafe net", fc("failsafeInboundHostPorts: [{protocol: tcp, port: 22, net: 10.0.0.1/8}]"), "spec.failsafeInboundHostPorts[0].net", "host bits"},
		{"duration negative", fc("routeRefreshInterval: -10s"), "spec.routeRefreshInterval", "must not be negative"},
		{"health override", fc("healthTimeoutOverrides: [{name: \"\", timeout: 30s}]"), "spec.healthTimeoutOverrides[0].name", "required"},
		{"regex", fc("bpfDataIfacePattern: \"^(eth\""), "spec.bpfDataIfacePattern", "not a valid regular expression"},
		{"feature gates", fc("featureGates: \"a=b=c\""), "spec.featureGates", "key=value pairs"},
		{"route table range", fc("routeTableRange: {min: 0, max: 250}"), "spec.routeTableRange", "1 <= min <= max <= 250"},
		{"route table ranges reserved", fc("routeTableRanges: [{min: 1, max: 254}]"), "spec.routeTableRanges[0]", "reserved tables 253-255"},
		{"route table ranges order", fc("routeTableRanges: [{min: 300, max: 200}]"), "spec.routeTableRanges[0]", "1 <= min <= max"},
		{"device route source", fc("deviceRouteSourceAddress: \"fd00::1\""), "spec.deviceRouteSourceAddress", "not an IPv4 address"},
		{"external nodes", fc("externalNodesList: [10.0.0.0/33]"), "spec.externalNodesList[0]", "not a valid CIDR"},
		{"nat port range named", fc("natPortRange: http"), "spec.natPortRange", "named port is not allowed"},
		{"go gc", fc("goGCThreshold: -2"), "spec.goGCThreshold", "out of range"},
		{"aws", fc("awsSrcDstCheck: Maybe"), "spec.awsSrcDstCheck", "not one of DoNothing, Enable, Disable"},
		{"wireguard iface", fc("wireguardInterfaceName: \"wireguard.cali.too.long\""), "spec.wireguardInterfaceName", "not a valid interface name"},
	})
}

// TestFelixConfigurationCalicoFields decodes a FelixConfiguration that sets
// every field of Calico's FelixConfigurationSpec: strict decoding must accept
// all of them, and validation must accept these documented values.
func TestFelixConfigurationCalicoFields(t *testing.T) {
	doc := infraDoc("FelixConfiguration", "node.h1", `useInternalDataplaneDriver: true
dataplaneDriver: calico-iptables-plugin
dataplaneWatchdogTimeout: 90s
ipv6Support: true
routeRefreshInterval: 1m30s
interfaceRefreshInterval: 90s
iptablesRefreshInterval: 10s
iptablesPostWriteCheckInterval: 5s
iptablesLockFilePath: /run/xtables.lock
iptablesLockTimeout: 0s
iptablesLockProbeInterval: 50ms
featureDetectOverride: "SNATFullyRandom=true,MASQFullyRandom=false,RestoreSupportsLock="
featureGates: "BPFConnectTimeLoadBalancingWorkaround=enabled"
ipsetsRefreshInterval: 90s
maxIpsetSize: 1048576
iptablesBackend: Auto
xdpRefreshInterval: 90s
netlinkTimeout: 10s
metadataAddr: 127.0.0.1
metadataPort: 8775
openstackRegion: region1
interfacePrefix: cali,tap
interfaceExclude: kube-ipvs0
chainInsertMode: insert
defaultEndpointToHostAction: ACCEPT
iptablesFilterAllowAction: Accept
iptablesMangleAllowAction: Return
iptablesFilterDenyAction: Drop
logPrefix: calico-packet
logFilePath: /var/log/calico/felix.log
logSeverityFile: Warning
logSeverityScreen: Info
logSeveritySys: none
logDebugFilenameRegex: "^int.*"
ipipEnabled: true
ipipMTU: 1440
vxlanEnabled: true
vxlanMTU: 1410
vxlanMTUV6: 1390
vxlanPort: 4789
vxlanVNI: 4096
allowVXLANPacketsFromWorkloads: false
allowIPIPPacketsFromWorkloads: false
reportingInterval: 30s
reportingTTL: 90s
endpointReportingEnabled: false
endpointReportingDelay: 1s
endpointStatusPathPrefix: /var/run/calico
iptablesMarkMask: 4294901760
disableConntrackInvalidCheck: false
healthEnabled: true
healthHost: localhost
healthPort: 9099
healthTimeoutOverrides: [{name: InternalDataplaneMainLoop, timeout: 360s}]
prometheusMetricsEnabled: true
prometheusMetricsHost: 0.0.0.0
prometheusMetricsPort: 9091
prometheusGoMetricsEnabled: true
prometheusProcessMetricsEnabled: true
prometheusWireGuardMetricsEnabled: true
failsafeInboundHostPorts: [{protocol: tcp, port: 22}, {protocol: UDP, port: 68, net: 10.0.0.0/8}]
failsafeOutboundHostPorts: [{port: 53}, {protocol: sctp, port: 5473, net: "fd00::/8"}]
kubeNodePortRanges: [30000:32767, 40000]
policySyncPathPrefix: /var/run/nodeagent
usageReportingEnabled: false
usageReportingInitialDelay: 300s
usageReportingInterval: 24h
natPortRange: 32768:65000
natOutgoingAddress: 192.0.2.10
natOutgoingExclusions: IPPoolsAndHostIPs
deviceRouteSourceAddress: 10.0.0.1
deviceRouteSourceAddressIPv6: "fd00::1"
deviceRouteProtocol: 3
removeExternalRoutes: true
programClusterRoutes: EnabledIPIPOnly
ipForwarding: Enabled
externalNodesList: [192.0.2.0/24]
debugMemoryProfilePath: /tmp/mem.pprof
debugDisableLogDropping: true
debugSimulateCalcGraphHangAfter: 0s
debugSimulateDataplaneHangAfter: 0s
debugSimulateDataplaneApplyDelay: 0s
debugHost: localhost
debugPort: 6060
iptablesNATOutgoingInterfaceFilter: eth+
sidecarAccelerationEnabled: false
xdpEnabled: true
genericXDPEnabled: false
nftablesMode: Enabled
nftablesRefreshInterval: 90s
nftablesFilterAllowAction: Accept
nftablesMangleAllowAction: Accept
nftablesFilterDenyAction: Reject
nftablesMarkMask: 4294901760
nftablesFlowTableOffload: Enabled
nftablesFlowTableDataIfacePattern: "^eth.*"
bpfEnabled: false
bpfDisableUnprivileged: true
bpfLogLevel: "Off"
bpfConntrackLogLevel: "Off"
bpfConntrackMode: Auto
bpfConntrackTimeouts: {creationGracePeriod: 10s, tcpSynSent: 20s, tcpEstablished: 1h, tcpFinsSeen: Auto, tcpResetSeen: 40s, udpTimeout: 60s, genericTimeout: 10m, icmpTimeout: 5s}
bpfLogFilters: {all: "tcp port 80"}
bpfCTLBLogFilter: all
bpfDataIfacePattern: "^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*|tunl0$|vxlan.calico$|wireguard.cali$)"
bpfL3IfacePattern: "^wg0$"
bpfConnectTimeLoadBalancingEnabled: true
bpfConnectTimeLoadBalancing: Enabled
bpfHostNetworkedNATWithoutCTLB: Disabled
bpfExternalServiceMode: DSR
bpfDSROptoutCIDRs: [10.0.0.0/8]
bpfExtToServiceConnmark: 0
bpfKubeProxyIptablesCleanupEnabled: true
bpfKubeProxyMinSyncPeriod: 1s
bpfKubeProxyEndpointSlicesEnabled: true
bpfKubeProxyHealthzPort: 10256
bpfPSNATPorts: 20000:29999
bpfMapSizeNATFrontend: 65536
bpfMapSizeNATBackend: 262144
bpfMapSizeNATAffinity: 65536
bpfMapSizeRoute: 262144
bpfMapSizeConntrack: 512000
bpfMapSizePerCpuConntrack: 0
bpfMapSizeConntrackScaling: DoubleIfFull
bpfMapSizeConntrackCleanupQueue: 100000
bpfMapSizeIPSets: 1048576
bpfMapSizeIfState: 1000
bpfHostConntrackBypass: true
bpfEnforceRPF: Loose
bpfPolicyDebugEnabled: true
bpfForceTrackPacketsFromIfaces: [docker+]
bpfDisableGROForIfaces: "^cali.*"
bpfExcludeCIDRsFromNAT: [169.254.20.10/32]
bpfExportBufferSizeMB: 1
bpfMaglevMaxEndpointsPerService: 100
bpfMaglevMaxServices: 100
flowLogsPolicyEvaluationMode: Continuous
bpfRedirectToPeer: L2Only
bpfAttachType: TCX
flowLogsFlushInterval: 15s
flowLogsCollectorDebugTrace: false
flowLogsGoldmaneServer: goldmane.calico-system.svc:7443
flowLogsLocalReporter: Disabled
bpfProfiling: Disabled
routeSource: CalicoIPAM
routeTableRanges: [{min: 1, max: 250}, {min: 256, max: 1000}]
routeTableRange: {min: 1, max: 250}
routeSyncDisabled: false
ipv4NormalRoutePriority: 1024
ipv4ElevatedRoutePriority: 512
ipv6NormalRoutePriority: 1024
ipv6ElevatedRoutePriority: 512
liveMigrationRouteConvergenceTime: 30s
wireguardEnabled: true
wireguardEnabledV6: true
wireguardThreadingEnabled: false
wireguardListeningPort: 51820
wireguardListeningPortV6: 51821
wireguardRoutingRulePriority: 99
wireguardInterfaceName: wireguard.cali
wireguardInterfaceNameV6: wg-v6.cali
wireguardMTU: 1440
wireguardMTUV6: 1420
wireguardHostEncryptionEnabled: false
wireguardKeepAlive: 0s
awsSrcDstCheck: DoNothing
serviceLoopPrevention: Drop
workloadSourceSpoofing: Any
mtuIfacePattern: "^eth.*"
floatingIPs: Disabled
windowsManageFirewallRules: Disabled
goGCThreshold: 40
goMemoryLimitMB: -1
goMaxProcs: -1
requireMTUFile: false`)
	runInfraGood(t, map[string]string{"every field": doc})
	r, err := Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	spec := reflect.ValueOf(r.(*FelixConfiguration).Spec)
	for i := 0; i < spec.NumField(); i++ {
		if spec.Field(i).IsZero() {
			t.Errorf("the document does not set %s", spec.Type().Field(i).Tag.Get("json"))
		}
	}
}

func TestFelixConfigurationUnknownField(t *testing.T) {
	_, err := Decode([]byte(infraDoc("FelixConfiguration", "default", "logSeverityScreen: Info\nnotAFelixKnob: 1")))
	if err == nil {
		t.Fatal("unknown field accepted")
	}
	el, ok := err.(ErrorList)
	if !ok || len(el) != 1 || el[0].Field != "spec.notAFelixKnob" {
		t.Fatalf("got %v", err)
	}
}
