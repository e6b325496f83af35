package v3

import (
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

// FelixConfiguration holds the per-host agent knobs: cluster-wide
// ("default") or for one node ("node.<node>", which wins field by field).
//
// The spec mirrors every field of Calico's FelixConfigurationSpec so that any
// Calico FelixConfiguration decodes strictly, in Calico's field order so that
// the stored JSON is byte-for-byte Calico's. Most knobs are carried, not
// acted on, by tortie's agent.
type FelixConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec FelixConfigurationSpec `json:"spec,omitempty"`
}

// FelixConfigurationSpec: see FelixConfiguration. Durations are Go duration
// strings ("90s", "1m30s").
type FelixConfigurationSpec struct {
	UseInternalDataplaneDriver     *bool            `json:"useInternalDataplaneDriver,omitempty"`
	DataplaneDriver                string           `json:"dataplaneDriver,omitempty"`
	DataplaneWatchdogTimeout       *metav1.Duration `json:"dataplaneWatchdogTimeout,omitempty"`
	IPv6Support                    *bool            `json:"ipv6Support,omitempty"`
	RouteRefreshInterval           *metav1.Duration `json:"routeRefreshInterval,omitempty"`
	InterfaceRefreshInterval       *metav1.Duration `json:"interfaceRefreshInterval,omitempty"`
	IptablesRefreshInterval        *metav1.Duration `json:"iptablesRefreshInterval,omitempty"`
	IptablesPostWriteCheckInterval *metav1.Duration `json:"iptablesPostWriteCheckInterval,omitempty"`
	IptablesLockFilePath           string           `json:"iptablesLockFilePath,omitempty"`
	IptablesLockTimeout            *metav1.Duration `json:"iptablesLockTimeout,omitempty"`
	IptablesLockProbeInterval      *metav1.Duration `json:"iptablesLockProbeInterval,omitempty"`
	FeatureDetectOverride          string           `json:"featureDetectOverride,omitempty"`
	FeatureGates                   string           `json:"featureGates,omitempty"`
	IpsetsRefreshInterval          *metav1.Duration `json:"ipsetsRefreshInterval,omitempty"`
	MaxIpsetSize                   *int             `json:"maxIpsetSize,omitempty"`
	IptablesBackend                *IptablesBackend `json:"iptablesBackend,omitempty"`
	XDPRefreshInterval             *metav1.Duration `json:"xdpRefreshInterval,omitempty"`
	NetlinkTimeout                 *metav1.Duration `json:"netlinkTimeout,omitempty"`
	MetadataAddr                   string           `json:"metadataAddr,omitempty"`
	MetadataPort                   *int             `json:"metadataPort,omitempty"`
	OpenstackRegion                string           `json:"openstackRegion,omitempty"`
	InterfacePrefix                string           `json:"interfacePrefix,omitempty"`
	InterfaceExclude               string           `json:"interfaceExclude,omitempty"`
	ChainInsertMode                string           `json:"chainInsertMode,omitempty"`
	DefaultEndpointToHostAction    string           `json:"defaultEndpointToHostAction,omitempty"`
	IptablesFilterAllowAction      string           `json:"iptablesFilterAllowAction,omitempty"`
	IptablesMangleAllowAction      string           `json:"iptablesMangleAllowAction,omitempty"`
	IptablesFilterDenyAction       string           `json:"iptablesFilterDenyAction,omitempty"`
	LogPrefix                      string           `json:"logPrefix,omitempty"`
	LogFilePath                    string           `json:"logFilePath,omitempty"`
	LogSeverityFile                string           `json:"logSeverityFile,omitempty"`
	LogSeverityScreen              string           `json:"logSeverityScreen,omitempty"`
	LogSeveritySys                 string           `json:"logSeveritySys,omitempty"`
	LogDebugFilenameRegex          string           `json:"logDebugFilenameRegex,omitempty"`

	IPIPEnabled                    *bool `json:"ipipEnabled,omitempty"`
	IPIPMTU                        *int  `json:"ipipMTU,omitempty"`
	VXLANEnabled                   *bool `json:"vxlanEnabled,omitempty"`
	VXLANMTU                       *int  `json:"vxlanMTU,omitempty"`
	VXLANMTUV6                     *int  `json:"vxlanMTUV6,omitempty"`
	VXLANPort                      *int  `json:"vxlanPort,omitempty"`
	VXLANVNI                       *int  `json:"vxlanVNI,omitempty"`
	AllowVXLANPacketsFromWorkloads *bool `json:"allowVXLANPacketsFromWorkloads,omitempty"`
	AllowIPIPPacketsFromWorkloads  *bool `json:"allowIPIPPacketsFromWorkloads,omitempty"`

	ReportingInterval        *metav1.Duration `json:"reportingInterval,omitempty"`
	ReportingTTL             *metav1.Duration `json:"reportingTTL,omitempty"`
	EndpointReportingEnabled *bool            `json:"endpointReportingEnabled,omitempty"`
	EndpointReportingDelay   *metav1.Duration `json:"endpointReportingDelay,omitempty"`
	EndpointStatusPathPrefix string           `json:"endpointStatusPathPrefix,omitempty"`

	IptablesMarkMask             *uint32                 `json:"iptablesMarkMask,omitempty"`
	DisableConntrackInvalidCheck *bool                   `json:"disableConntrackInvalidCheck,omitempty"`
	HealthEnabled                *bool                   `json:"healthEnabled,omitempty"`
	HealthHost                   *string                 `json:"healthHost,omitempty"`
	HealthPort                   *int                    `json:"healthPort,omitempty"`
	HealthTimeoutOverrides       []HealthTimeoutOverride `json:"healthTimeoutOverrides,omitempty"`

	PrometheusMetricsEnabled          *bool  `json:"prometheusMetricsEnabled,omitempty"`
	PrometheusMetricsHost             string `json:"prometheusMetricsHost,omitempty"`
	PrometheusMetricsPort             *int   `json:"prometheusMetricsPort,omitempty"`
	PrometheusGoMetricsEnabled        *bool  `json:"prometheusGoMetricsEnabled,omitempty"`
	PrometheusProcessMetricsEnabled   *bool  `json:"prometheusProcessMetricsEnabled,omitempty"`
	PrometheusWireGuardMetricsEnabled *bool  `json:"prometheusWireGuardMetricsEnabled,omitempty"`

	FailsafeInboundHostPorts   *[]ProtoPort        `json:"failsafeInboundHostPorts,omitempty"`
	FailsafeOutboundHostPorts  *[]ProtoPort        `json:"failsafeOutboundHostPorts,omitempty"`
	KubeNodePortRanges         *[]numorstring.Port `json:"kubeNodePortRanges,omitempty"`
	PolicySyncPathPrefix       string              `json:"policySyncPathPrefix,omitempty"`
	UsageReportingEnabled      *bool               `json:"usageReportingEnabled,omitempty"`
	UsageReportingInitialDelay *metav1.Duration    `json:"usageReportingInitialDelay,omitempty"`
	UsageReportingInterval     *metav1.Duration    `json:"usageReportingInterval,omitempty"`

	NATPortRange                 *numorstring.Port          `json:"natPortRange,omitempty"`
	NATOutgoingAddress           string                     `json:"natOutgoingAddress,omitempty"`
	NATOutgoingExclusions        *NATOutgoingExclusionsType `json:"natOutgoingExclusions,omitempty"`
	DeviceRouteSourceAddress     string                     `json:"deviceRouteSourceAddress,omitempty"`
	DeviceRouteSourceAddressIPv6 string                     `json:"deviceRouteSourceAddressIPv6,omitempty"`
	DeviceRouteProtocol          *int                       `json:"deviceRouteProtocol,omitempty"`
	RemoveExternalRoutes         *bool                      `json:"removeExternalRoutes,omitempty"`
	ProgramClusterRoutes         *string                    `json:"programClusterRoutes,omitempty"`
	IPForwarding                 string                     `json:"ipForwarding,omitempty"`
	ExternalNodesCIDRList        *[]string                  `json:"externalNodesList,omitempty"`

	DebugMemoryProfilePath             string           `json:"debugMemoryProfilePath,omitempty"`
	DebugDisableLogDropping            *bool            `json:"debugDisableLogDropping,omitempty"`
	DebugSimulateCalcGraphHangAfter    *metav1.Duration `json:"debugSimulateCalcGraphHangAfter,omitempty"`
	DebugSimulateDataplaneHangAfter    *metav1.Duration `json:"debugSimulateDataplaneHangAfter,omitempty"`
	DebugSimulateDataplaneApplyDelay   *metav1.Duration `json:"debugSimulateDataplaneApplyDelay,omitempty"`
	DebugHost                          *string          `json:"debugHost,omitempty"`
	DebugPort                          *int             `json:"debugPort,omitempty"`
	IptablesNATOutgoingInterfaceFilter string           `json:"iptablesNATOutgoingInterfaceFilter,omitempty"`
	SidecarAccelerationEnabled         *bool            `json:"sidecarAccelerationEnabled,omitempty"`
	XDPEnabled                         *bool            `json:"xdpEnabled,omitempty"`
	GenericXDPEnabled                  *bool            `json:"genericXDPEnabled,omitempty"`

	NFTablesMode                      *NFTablesMode    `json:"nftablesMode,omitempty"`
	NftablesRefreshInterval           *metav1.Duration `json:"nftablesRefreshInterval,omitempty"`
	NftablesFilterAllowAction         string           `json:"nftablesFilterAllowAction,omitempty"`
	NftablesMangleAllowAction         string           `json:"nftablesMangleAllowAction,omitempty"`
	NftablesFilterDenyAction          string           `json:"nftablesFilterDenyAction,omitempty"`
	NftablesMarkMask                  *uint32          `json:"nftablesMarkMask,omitempty"`
	NFTablesFlowTableOffload          *string          `json:"nftablesFlowTableOffload,omitempty"`
	NFTablesFlowTableDataIfacePattern string           `json:"nftablesFlowTableDataIfacePattern,omitempty"`

	BPFEnabled             *bool `json:"bpfEnabled,omitempty"`
	BPFDisableUnprivileged *bool `json:"bpfDisableUnprivileged,omitempty"`
	// BPFLogLevel has no omitempty in Calico, so every stored
	// FelixConfiguration carries "bpfLogLevel":"".
	BPFLogLevel                        string                   `json:"bpfLogLevel"`
	BPFConntrackLogLevel               string                   `json:"bpfConntrackLogLevel,omitempty"`
	BPFConntrackCleanupMode            *BPFConntrackMode        `json:"bpfConntrackMode,omitempty"`
	BPFConntrackTimeouts               *BPFConntrackTimeouts    `json:"bpfConntrackTimeouts,omitempty"`
	BPFLogFilters                      *map[string]string       `json:"bpfLogFilters,omitempty"`
	BPFCTLBLogFilter                   string                   `json:"bpfCTLBLogFilter,omitempty"`
	BPFDataIfacePattern                string                   `json:"bpfDataIfacePattern,omitempty"`
	BPFL3IfacePattern                  string                   `json:"bpfL3IfacePattern,omitempty"`
	BPFConnectTimeLoadBalancingEnabled *bool                    `json:"bpfConnectTimeLoadBalancingEnabled,omitempty"`
	BPFConnectTimeLoadBalancing        *BPFConnectTimeLBType    `json:"bpfConnectTimeLoadBalancing,omitempty"`
	BPFHostNetworkedNATWithoutCTLB     *BPFHostNetworkedNATType `json:"bpfHostNetworkedNATWithoutCTLB,omitempty"`
	BPFExternalServiceMode             string                   `json:"bpfExternalServiceMode,omitempty"`
	BPFDSROptoutCIDRs                  *[]string                `json:"bpfDSROptoutCIDRs,omitempty"`
	BPFExtToServiceConnmark            *int                     `json:"bpfExtToServiceConnmark,omitempty"`
	BPFKubeProxyIptablesCleanupEnabled *bool                    `json:"bpfKubeProxyIptablesCleanupEnabled,omitempty"`
	BPFKubeProxyMinSyncPeriod          *metav1.Duration         `json:"bpfKubeProxyMinSyncPeriod,omitempty"`
	BPFKubeProxyEndpointSlicesEnabled  *bool                    `json:"bpfKubeProxyEndpointSlicesEnabled,omitempty"`
	BPFKubeProxyHealthzPort            *int                     `json:"bpfKubeProxyHealthzPort,omitempty"`
	BPFPSNATPorts                      *numorstring.Port        `json:"bpfPSNATPorts,omitempty"`
	BPFMapSizeNATFrontend              *int                     `json:"bpfMapSizeNATFrontend,omitempty"`
	BPFMapSizeNATBackend               *int                     `json:"bpfMapSizeNATBackend,omitempty"`
	BPFMapSizeNATAffinity              *int                     `json:"bpfMapSizeNATAffinity,omitempty"`
	BPFMapSizeRoute                    *int                     `json:"bpfMapSizeRoute,omitempty"`
	BPFMapSizeConntrack                *int                     `json:"bpfMapSizeConntrack,omitempty"`
	BPFMapSizePerCPUConntrack          *int                     `json:"bpfMapSizePerCpuConntrack,omitempty"`
	BPFMapSizeConntrackScaling         string                   `json:"bpfMapSizeConntrackScaling,omitempty"`
	BPFMapSizeConntrackCleanupQueue    *int                     `json:"bpfMapSizeConntrackCleanupQueue,omitempty"`
	BPFMapSizeIPSets                   *int                     `json:"bpfMapSizeIPSets,omitempty"`
	BPFMapSizeIfState                  *int                     `json:"bpfMapSizeIfState,omitempty"`
	BPFHostConntrackBypass             *bool                    `json:"bpfHostConntrackBypass,omitempty"`
	BPFEnforceRPF                      string                   `json:"bpfEnforceRPF,omitempty"`
	BPFPolicyDebugEnabled              *bool                    `json:"bpfPolicyDebugEnabled,omitempty"`
	BPFForceTrackPacketsFromIfaces     *[]string                `json:"bpfForceTrackPacketsFromIfaces,omitempty"`
	BPFDisableGROForIfaces             string                   `json:"bpfDisableGROForIfaces,omitempty"`
	BPFExcludeCIDRsFromNAT             *[]string                `json:"bpfExcludeCIDRsFromNAT,omitempty"`
	BPFExportBufferSizeMB              *int                     `json:"bpfExportBufferSizeMB,omitempty"`
	BPFMaglevMaxEndpointsPerService    *int                     `json:"bpfMaglevMaxEndpointsPerService,omitempty"`
	BPFMaglevMaxServices               *int                     `json:"bpfMaglevMaxServices,omitempty"`

	FlowLogsPolicyEvaluationMode *FlowLogsPolicyEvaluationModeType `json:"flowLogsPolicyEvaluationMode,omitempty"`
	BPFRedirectToPeer            string                            `json:"bpfRedirectToPeer,omitempty"`
	BPFAttachType                *string                           `json:"bpfAttachType,omitempty"`
	FlowLogsFlushInterval        *metav1.Duration                  `json:"flowLogsFlushInterval,omitempty"`
	FlowLogsCollectorDebugTrace  *bool                             `json:"flowLogsCollectorDebugTrace,omitempty"`
	FlowLogsGoldmaneServer       *string                           `json:"flowLogsGoldmaneServer,omitempty"`
	FlowLogsLocalReporter        *string                           `json:"flowLogsLocalReporter,omitempty"`
	BPFProfiling                 string                            `json:"bpfProfiling,omitempty"`

	RouteSource       string            `json:"routeSource,omitempty"`
	RouteTableRanges  *RouteTableRanges `json:"routeTableRanges,omitempty"`
	RouteTableRange   *RouteTableRange  `json:"routeTableRange,omitempty"`
	RouteSyncDisabled *bool             `json:"routeSyncDisabled,omitempty"`

	// Route metrics of workload routes: normal, and elevated while a live
	// migration converges (Calico v3.33+).
	IPv4NormalRoutePriority           *int             `json:"ipv4NormalRoutePriority,omitempty"`
	IPv4ElevatedRoutePriority         *int             `json:"ipv4ElevatedRoutePriority,omitempty"`
	IPv6NormalRoutePriority           *int             `json:"ipv6NormalRoutePriority,omitempty"`
	IPv6ElevatedRoutePriority         *int             `json:"ipv6ElevatedRoutePriority,omitempty"`
	LiveMigrationRouteConvergenceTime *metav1.Duration `json:"liveMigrationRouteConvergenceTime,omitempty"`

	WireguardEnabled               *bool            `json:"wireguardEnabled,omitempty"`
	WireguardEnabledV6             *bool            `json:"wireguardEnabledV6,omitempty"`
	WireguardThreadingEnabled      *bool            `json:"wireguardThreadingEnabled,omitempty"`
	WireguardListeningPort         *int             `json:"wireguardListeningPort,omitempty"`
	WireguardListeningPortV6       *int             `json:"wireguardListeningPortV6,omitempty"`
	WireguardRoutingRulePriority   *int             `json:"wireguardRoutingRulePriority,omitempty"`
	WireguardInterfaceName         string           `json:"wireguardInterfaceName,omitempty"`
	WireguardInterfaceNameV6       string           `json:"wireguardInterfaceNameV6,omitempty"`
	WireguardMTU                   *int             `json:"wireguardMTU,omitempty"`
	WireguardMTUV6                 *int             `json:"wireguardMTUV6,omitempty"`
	WireguardHostEncryptionEnabled *bool            `json:"wireguardHostEncryptionEnabled,omitempty"`
	WireguardPersistentKeepAlive   *metav1.Duration `json:"wireguardKeepAlive,omitempty"`

	AWSSrcDstCheck             *AWSSrcDstCheckOption           `json:"awsSrcDstCheck,omitempty"`
	ServiceLoopPrevention      string                          `json:"serviceLoopPrevention,omitempty"`
	WorkloadSourceSpoofing     string                          `json:"workloadSourceSpoofing,omitempty"`
	MTUIfacePattern            string                          `json:"mtuIfacePattern,omitempty"`
	FloatingIPs                *FloatingIPType                 `json:"floatingIPs,omitempty"`
	WindowsManageFirewallRules *WindowsManageFirewallRulesMode `json:"windowsManageFirewallRules,omitempty"`
	GoGCThreshold              *int                            `json:"goGCThreshold,omitempty"`
	GoMemoryLimitMB            *int                            `json:"goMemoryLimitMB,omitempty"`
	GoMaxProcs                 *int                            `json:"goMaxProcs,omitempty"`
	RequireMTUFile             *bool                           `json:"requireMTUFile,omitempty"`
}

// programClusterRoutesValues are the values of programClusterRoutes
// (FelixConfiguration: which cluster routes Felix programs;
// BGPConfiguration: which BIRD programs): each names the classes of pool
// that component is responsible for.
var programClusterRoutesValues = []string{"Disabled", "Enabled", "EnabledIPIPOnly", "EnabledNoEncapOnly"}

// Named enum types of FelixConfigurationSpec, as in Calico.
type (
	IptablesBackend                  string
	NFTablesMode                     string
	AWSSrcDstCheckOption             string
	FloatingIPType                   string
	BPFHostNetworkedNATType          string
	BPFConnectTimeLBType             string
	BPFConntrackMode                 string
	WindowsManageFirewallRulesMode   string
	FlowLogsPolicyEvaluationModeType string
	NATOutgoingExclusionsType        string
)

// Values the client fills in (see setDefaults).
const (
	NFTablesModeAuto            NFTablesMode            = "Auto"
	FloatingIPsDisabled         FloatingIPType          = "Disabled"
	BPFConnectTimeLBTCP         BPFConnectTimeLBType    = "TCP"
	BPFConnectTimeLBEnabled     BPFConnectTimeLBType    = "Enabled"
	BPFConnectTimeLBDisabled    BPFConnectTimeLBType    = "Disabled"
	BPFHostNetworkedNATEnabled  BPFHostNetworkedNATType = "Enabled"
	BPFHostNetworkedNATDisabled BPFHostNetworkedNATType = "Disabled"
	FlowTableOffloadDisabled                            = "Disabled"
)

// HealthTimeoutOverride replaces the watchdog timeout of one component.
type HealthTimeoutOverride struct {
	Name    string          `json:"name"`
	Timeout metav1.Duration `json:"timeout"`
}

// RouteTableRange is the deprecated single range of route table indices.
type RouteTableRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// RouteTableIDRange is one range of route table indices, inclusive.
type RouteTableIDRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// RouteTableRanges are the route table indices Felix may use.
type RouteTableRanges []RouteTableIDRange

// ProtoPort is a failsafe port: protocol (default tcp), port, optional CIDR.
type ProtoPort struct {
	Protocol string `json:"protocol,omitempty"`
	Port     uint16 `json:"port"`
	Net      string `json:"net,omitempty"`
}

// BPFConntrackTimeout is a duration string or "Auto".
type BPFConntrackTimeout string

// BPFConntrackTimeouts overrides individual BPF conntrack timers.
type BPFConntrackTimeouts struct {
	CreationGracePeriod *BPFConntrackTimeout `json:"creationGracePeriod,omitempty"`
	TCPSynSent          *BPFConntrackTimeout `json:"tcpSynSent,omitempty"`
	TCPEstablished      *BPFConntrackTimeout `json:"tcpEstablished,omitempty"`
	TCPFinsSeen         *BPFConntrackTimeout `json:"tcpFinsSeen,omitempty"`
	TCPResetSeen        *BPFConntrackTimeout `json:"tcpResetSeen,omitempty"`
	UDPTimeout          *BPFConntrackTimeout `json:"udpTimeout,omitempty"`
	GenericTimeout      *BPFConntrackTimeout `json:"genericTimeout,omitempty"`
	ICMPTimeout         *BPFConntrackTimeout `json:"icmpTimeout,omitempty"`
}

func (r *FelixConfiguration) validateName(p Path) ErrorList { return validateConfigName(p, r.Name) }

// setDefaults fills what Calico's client fills before an etcd write
// (libcalico-go clientv3 felixconfig.go); Kubernetes-backed Calico gets the
// same values from the CRD schema defaults.
func (r *FelixConfiguration) setDefaults() {
	s := &r.Spec
	if s.NFTablesMode == nil {
		m := NFTablesModeAuto
		s.NFTablesMode = &m
	}
	if s.NFTablesFlowTableOffload == nil {
		v := FlowTableOffloadDisabled
		s.NFTablesFlowTableOffload = &v
	}
	if s.FloatingIPs == nil {
		v := FloatingIPsDisabled
		s.FloatingIPs = &v
	}
	if s.BPFConnectTimeLoadBalancing == nil {
		v := BPFConnectTimeLBTCP
		s.BPFConnectTimeLoadBalancing = &v
	}
	if s.BPFHostNetworkedNATWithoutCTLB == nil {
		v := BPFHostNetworkedNATEnabled
		s.BPFHostNetworkedNATWithoutCTLB = &v
	}
	// The deprecated boolean, when present, decides both of its successors,
	// exactly as Calico's client does.
	if s.BPFConnectTimeLoadBalancingEnabled != nil {
		nat := BPFHostNetworkedNATDisabled
		s.BPFHostNetworkedNATWithoutCTLB = &nat
		ctlb := BPFConnectTimeLBDisabled
		if *s.BPFConnectTimeLoadBalancingEnabled {
			ctlb = BPFConnectTimeLBEnabled
		}
		s.BPFConnectTimeLoadBalancing = &ctlb
	}
}

var (
	interfacePrefixRE = lazyRegexp(`^[a-zA-Z0-9_-]{1,15}(,[a-zA-Z0-9_-]{1,15})*$`)
	keyValueListRE    = lazyRegexp(`^([a-zA-Z0-9-_]+=[^=,]*,)*([a-zA-Z0-9-_]+=[^=,]*)?$`)
	ifaceNameRE       = lazyRegexp(`^[a-zA-Z0-9_.-]{1,15}$`)
)

func (r *FelixConfiguration) validate() ErrorList {
	var errs ErrorList
	s := &r.Spec
	spec := Path("spec")
	add := func(e ErrorList) { errs = append(errs, e...) }

	add(validateLogLevel(spec.Child("logSeverityScreen"), s.LogSeverityScreen, false))
	add(validateLogLevel(spec.Child("logSeverityFile"), s.LogSeverityFile, true))
	add(validateLogLevel(spec.Child("logSeveritySys"), s.LogSeveritySys, true))

	// Enumerations Calico matches case-insensitively.
	for _, e := range []struct {
		field, value string
		allowed      []string
	}{
		{"chainInsertMode", s.ChainInsertMode, []string{"Insert", "Append"}},
		{"defaultEndpointToHostAction", s.DefaultEndpointToHostAction, []string{"Drop", "Accept", "Return"}},
		{"iptablesFilterAllowAction", s.IptablesFilterAllowAction, []string{"Accept", "Return"}},
		{"iptablesMangleAllowAction", s.IptablesMangleAllowAction, []string{"Accept", "Return"}},
		{"iptablesFilterDenyAction", s.IptablesFilterDenyAction, []string{"Drop", "Reject"}},
		{"nftablesFilterAllowAction", s.NftablesFilterAllowAction, []string{"Accept", "Return"}},
		{"nftablesMangleAllowAction", s.NftablesMangleAllowAction, []string{"Accept", "Return"}},
		{"nftablesFilterDenyAction", s.NftablesFilterDenyAction, []string{"Drop", "Reject"}},
		{"bpfLogLevel", s.BPFLogLevel, []string{"Off", "Info", "Debug"}},
		{"bpfExternalServiceMode", s.BPFExternalServiceMode, []string{"Tunnel", "DSR"}},
		{"bpfMapSizeConntrackScaling", s.BPFMapSizeConntrackScaling, []string{"Disabled", "DoubleIfFull"}},
		{"bpfEnforceRPF", s.BPFEnforceRPF, []string{"Disabled", "Strict", "Loose"}},
		{"routeSource", s.RouteSource, []string{"WorkloadIPs", "CalicoIPAM"}},
		{"serviceLoopPrevention", s.ServiceLoopPrevention, []string{"Drop", "Reject", "Disabled"}},
		{"workloadSourceSpoofing", s.WorkloadSourceSpoofing, []string{"Disabled", "Any"}},
		{"iptablesBackend", derefStr(s.IptablesBackend), []string{"Auto", "Legacy", "NFT"}},
	} {
		add(validateOneOfFold(spec.Child(e.field), e.value, e.allowed...))
	}
	// Enumerations Calico matches exactly.
	for _, e := range []struct {
		field, value string
		allowed      []string
	}{
		{"nftablesMode", derefStr(s.NFTablesMode), []string{"Disabled", "Enabled", "Auto"}},
		{"nftablesFlowTableOffload", derefStr(s.NFTablesFlowTableOffload), []string{"Disabled", "Enabled", "All"}},
		{"bpfConntrackLogLevel", s.BPFConntrackLogLevel, []string{"Off", "Debug"}},
		{"bpfConntrackMode", derefStr(s.BPFConntrackCleanupMode), []string{"Auto", "Userspace", "BPFProgram"}},
		{"bpfConnectTimeLoadBalancing", derefStr(s.BPFConnectTimeLoadBalancing), []string{"TCP", "Enabled", "Disabled"}},
		{"bpfHostNetworkedNATWithoutCTLB", derefStr(s.BPFHostNetworkedNATWithoutCTLB), []string{"Enabled", "Disabled"}},
		{"bpfRedirectToPeer", s.BPFRedirectToPeer, []string{"Enabled", "Disabled", "L2Only"}},
		{"bpfAttachType", derefStr(s.BPFAttachType), []string{"TC", "TCX"}},
		{"bpfProfiling", s.BPFProfiling, []string{"Enabled", "Disabled"}},
		{"flowLogsPolicyEvaluationMode", derefStr(s.FlowLogsPolicyEvaluationMode), []string{"None", "Continuous"}},
		{"flowLogsLocalReporter", derefStr(s.FlowLogsLocalReporter), []string{"Disabled", "Enabled"}},
		{"natOutgoingExclusions", derefStr(s.NATOutgoingExclusions), []string{"IPPoolsOnly", "IPPoolsAndHostIPs"}},
		{"programClusterRoutes", derefStr(s.ProgramClusterRoutes), programClusterRoutesValues},
		{"ipForwarding", s.IPForwarding, []string{"Enabled", "Disabled"}},
		{"awsSrcDstCheck", derefStr(s.AWSSrcDstCheck), []string{"DoNothing", "Enable", "Disable"}},
		{"floatingIPs", derefStr(s.FloatingIPs), []string{"Enabled", "Disabled"}},
		{"windowsManageFirewallRules", derefStr(s.WindowsManageFirewallRules), []string{"Enabled", "Disabled"}},
	} {
		add(ValidateOneOf(spec.Child(e.field), e.value, e.allowed...))
	}

	if s.InterfacePrefix != "" && !interfacePrefixRE().MatchString(s.InterfacePrefix) {
		add(ErrorList{spec.Child("interfacePrefix").Errorf("%q: must be a comma-separated list of interface name prefixes (letters, digits, '_', '-', at most 15 characters each)", s.InterfacePrefix)})
	}
	for _, f := range []struct{ field, value string }{
		{"featureDetectOverride", s.FeatureDetectOverride}, {"featureGates", s.FeatureGates},
	} {
		if f.value != "" && !keyValueListRE().MatchString(f.value) {
			add(ErrorList{spec.Child(f.field).Errorf("%q: must be a comma-separated list of key=value pairs", f.value)})
		}
	}
	for _, f := range []struct{ field, value string }{
		{"logDebugFilenameRegex", s.LogDebugFilenameRegex},
		{"bpfDataIfacePattern", s.BPFDataIfacePattern},
		{"bpfL3IfacePattern", s.BPFL3IfacePattern},
		{"bpfDisableGROForIfaces", s.BPFDisableGROForIfaces},
		{"mtuIfacePattern", s.MTUIfacePattern},
		{"nftablesFlowTableDataIfacePattern", s.NFTablesFlowTableDataIfacePattern},
	} {
		if f.value == "" {
			continue
		}
		if _, err := regexp.Compile(f.value); err != nil {
			add(ErrorList{spec.Child(f.field).Errorf("not a valid regular expression: %v", err)})
		}
	}
	for _, f := range []struct{ field, value string }{
		{"wireguardInterfaceName", s.WireguardInterfaceName}, {"wireguardInterfaceNameV6", s.WireguardInterfaceNameV6},
	} {
		if f.value != "" && !ValidInterfaceName(f.value) {
			add(ErrorList{spec.Child(f.field).Errorf("%q is not a valid interface name (at most 15 letters, digits, '.', '_', '-')", f.value)})
		}
	}

	// Integer ranges.
	for _, n := range []struct {
		field    string
		v        *int
		min, max int
		what     string
	}{
		{"ipipMTU", s.IPIPMTU, 0, 65535, "0 (auto-detect) or an MTU"},
		{"vxlanMTU", s.VXLANMTU, 0, 65535, "0 (auto-detect) or an MTU"},
		{"vxlanMTUV6", s.VXLANMTUV6, 0, 65535, "0 (auto-detect) or an MTU"},
		{"wireguardMTU", s.WireguardMTU, 0, 65535, "0 (auto-detect) or an MTU"},
		{"wireguardMTUV6", s.WireguardMTUV6, 0, 65535, "0 (auto-detect) or an MTU"},
		{"vxlanPort", s.VXLANPort, 1, 65535, "a port"},
		{"vxlanVNI", s.VXLANVNI, 1, 1<<24 - 1, "a VXLAN network identifier"},
		{"metadataPort", s.MetadataPort, 0, 65535, "a port"},
		{"healthPort", s.HealthPort, 0, 65535, "a port"},
		{"prometheusMetricsPort", s.PrometheusMetricsPort, 0, 65535, "a port"},
		{"debugPort", s.DebugPort, 0, 65535, "a port"},
		{"wireguardListeningPort", s.WireguardListeningPort, 1, 65535, "a port"},
		{"wireguardListeningPortV6", s.WireguardListeningPortV6, 1, 65535, "a port"},
		{"wireguardRoutingRulePriority", s.WireguardRoutingRulePriority, 1, 32765, "a routing rule priority"},
		{"deviceRouteProtocol", s.DeviceRouteProtocol, 0, 255, "a route protocol number"},
		{"maxIpsetSize", s.MaxIpsetSize, 0, 1<<31 - 1, "a size"},
		{"bpfExtToServiceConnmark", s.BPFExtToServiceConnmark, 0, 1<<32 - 1, "a 32-bit mark"},
		{"bpfMapSizeConntrackCleanupQueue", s.BPFMapSizeConntrackCleanupQueue, 1, 1<<31 - 1, "a map size"},
		{"bpfMapSizeNATFrontend", s.BPFMapSizeNATFrontend, 0, 1<<31 - 1, "a map size"},
		{"bpfMapSizeNATBackend", s.BPFMapSizeNATBackend, 0, 1<<31 - 1, "a map size"},
		{"bpfMapSizeNATAffinity", s.BPFMapSizeNATAffinity, 0, 1<<31 - 1, "a map size"},
		{"bpfMapSizeRoute", s.BPFMapSizeRoute, 0, 1<<31 - 1, "a map size"},
		{"bpfMapSizeConntrack", s.BPFMapSizeConntrack, 0, 1<<31 - 1, "a map size"},
		{"bpfMapSizePerCpuConntrack", s.BPFMapSizePerCPUConntrack, 0, 1<<31 - 1, "a map size"},
		{"bpfMapSizeIPSets", s.BPFMapSizeIPSets, 0, 1<<31 - 1, "a map size"},
		{"bpfMapSizeIfState", s.BPFMapSizeIfState, 0, 1<<31 - 1, "a map size"},
		{"bpfExportBufferSizeMB", s.BPFExportBufferSizeMB, 1, 1<<31 - 1, "a size in MB"},
		{"bpfKubeProxyHealthzPort", s.BPFKubeProxyHealthzPort, 0, 65535, "a port"},
		{"bpfMaglevMaxEndpointsPerService", s.BPFMaglevMaxEndpointsPerService, 1, 3000, "a count"},
		{"bpfMaglevMaxServices", s.BPFMaglevMaxServices, 1, 3000, "a count"},
		{"ipv4NormalRoutePriority", s.IPv4NormalRoutePriority, 1, 2147483646, "a route metric"},
		{"ipv4ElevatedRoutePriority", s.IPv4ElevatedRoutePriority, 1, 2147483646, "a route metric"},
		{"ipv6NormalRoutePriority", s.IPv6NormalRoutePriority, 1, 2147483646, "a route metric"},
		{"ipv6ElevatedRoutePriority", s.IPv6ElevatedRoutePriority, 1, 2147483646, "a route metric"},
		{"goGCThreshold", s.GoGCThreshold, -1, 1<<31 - 1, "-1 or a percentage"},
		{"goMemoryLimitMB", s.GoMemoryLimitMB, -1, 1<<31 - 1, "-1 or a size in MB"},
		{"goMaxProcs", s.GoMaxProcs, -1, 1<<31 - 1, "-1 or a CPU count"},
	} {
		if n.v != nil && (*n.v < n.min || *n.v > n.max) {
			add(ErrorList{spec.Child(n.field).Errorf("%d is out of range: must be %s, %d-%d", *n.v, n.what, n.min, n.max)})
		}
	}
	for _, mtu := range []struct {
		field string
		v     *int
		min   int
	}{{"ipipMTU", s.IPIPMTU, 68}, {"vxlanMTU", s.VXLANMTU, 68}, {"wireguardMTU", s.WireguardMTU, 68},
		{"vxlanMTUV6", s.VXLANMTUV6, 1280}, {"wireguardMTUV6", s.WireguardMTUV6, 1280}} {
		if mtu.v != nil && *mtu.v > 0 && *mtu.v < mtu.min {
			add(ErrorList{spec.Child(mtu.field).Errorf("MTU %d is too small: must be 0 (auto-detect) or at least %d", *mtu.v, mtu.min)})
		}
	}

	// Durations.
	for _, d := range []struct {
		field string
		v     *metav1.Duration
	}{
		{"dataplaneWatchdogTimeout", s.DataplaneWatchdogTimeout}, {"routeRefreshInterval", s.RouteRefreshInterval},
		{"interfaceRefreshInterval", s.InterfaceRefreshInterval}, {"iptablesRefreshInterval", s.IptablesRefreshInterval},
		{"iptablesPostWriteCheckInterval", s.IptablesPostWriteCheckInterval}, {"iptablesLockTimeout", s.IptablesLockTimeout},
		{"iptablesLockProbeInterval", s.IptablesLockProbeInterval}, {"ipsetsRefreshInterval", s.IpsetsRefreshInterval},
		{"xdpRefreshInterval", s.XDPRefreshInterval}, {"netlinkTimeout", s.NetlinkTimeout},
		{"reportingInterval", s.ReportingInterval}, {"reportingTTL", s.ReportingTTL},
		{"endpointReportingDelay", s.EndpointReportingDelay}, {"usageReportingInitialDelay", s.UsageReportingInitialDelay},
		{"usageReportingInterval", s.UsageReportingInterval}, {"debugSimulateCalcGraphHangAfter", s.DebugSimulateCalcGraphHangAfter},
		{"debugSimulateDataplaneHangAfter", s.DebugSimulateDataplaneHangAfter}, {"debugSimulateDataplaneApplyDelay", s.DebugSimulateDataplaneApplyDelay},
		{"nftablesRefreshInterval", s.NftablesRefreshInterval}, {"bpfKubeProxyMinSyncPeriod", s.BPFKubeProxyMinSyncPeriod},
		{"flowLogsFlushInterval", s.FlowLogsFlushInterval}, {"wireguardKeepAlive", s.WireguardPersistentKeepAlive},
		{"liveMigrationRouteConvergenceTime", s.LiveMigrationRouteConvergenceTime},
	} {
		add(validateDuration(spec.Child(d.field), d.v, 0))
	}
	for i, h := range s.HealthTimeoutOverrides {
		p := spec.Child("healthTimeoutOverrides").Index(i)
		if h.Name == "" {
			add(ErrorList{p.Child("name").Errorf("required")})
		}
		add(validateDuration(p.Child("timeout"), &h.Timeout, 0))
	}

	// Failsafe ports.
	for _, fp := range []struct {
		field string
		v     *[]ProtoPort
	}{{"failsafeInboundHostPorts", s.FailsafeInboundHostPorts}, {"failsafeOutboundHostPorts", s.FailsafeOutboundHostPorts}} {
		if fp.v == nil {
			continue
		}
		for i, pp := range *fp.v {
			p := spec.Child(fp.field).Index(i)
			add(validateOneOfFold(p.Child("protocol"), pp.Protocol, "tcp", "udp", "sctp"))
			if pp.Port == 0 {
				add(ErrorList{p.Child("port").Errorf("required: must be 1-65535")})
			}
			if pp.Net != "" {
				if _, fe := ParseCIDR(p.Child("net"), pp.Net); fe != nil {
					add(ErrorList{fe})
				}
			}
		}
	}
	// Port ranges (numeric only: named ports mean nothing here).
	portRanges := map[string]*numorstring.Port{"natPortRange": s.NATPortRange, "bpfPSNATPorts": s.BPFPSNATPorts}
	for _, field := range []string{"natPortRange", "bpfPSNATPorts"} {
		if pr := portRanges[field]; pr != nil {
			add(validatePortRange(spec.Child(field), *pr))
		}
	}
	if s.KubeNodePortRanges != nil {
		for i, pr := range *s.KubeNodePortRanges {
			add(validatePortRange(spec.Child("kubeNodePortRanges").Index(i), pr))
		}
	}

	// Addresses.
	add(validateIPFamily(spec.Child("deviceRouteSourceAddress"), s.DeviceRouteSourceAddress, 4))
	add(validateIPFamily(spec.Child("deviceRouteSourceAddressIPv6"), s.DeviceRouteSourceAddressIPv6, 6))
	add(validateIPFamily(spec.Child("natOutgoingAddress"), s.NATOutgoingAddress, 4))
	for _, l := range []struct {
		field string
		v     *[]string
	}{{"externalNodesList", s.ExternalNodesCIDRList}, {"bpfDSROptoutCIDRs", s.BPFDSROptoutCIDRs}, {"bpfExcludeCIDRsFromNAT", s.BPFExcludeCIDRsFromNAT}} {
		if l.v != nil {
			add(ValidateCIDRs(spec.Child(l.field), *l.v))
		}
	}

	// Route tables. Indices 253-255 are the kernel's default, main and local.
	if s.RouteTableRange != nil {
		rt := spec.Child("routeTableRange")
		if s.RouteTableRange.Min < 1 || s.RouteTableRange.Max > 250 || s.RouteTableRange.Min > s.RouteTableRange.Max {
			add(ErrorList{rt.Errorf("must satisfy 1 <= min <= max <= 250, got min %d max %d", s.RouteTableRange.Min, s.RouteTableRange.Max)})
		}
	}
	if s.RouteTableRanges != nil {
		for i, rg := range *s.RouteTableRanges {
			p := spec.Child("routeTableRanges").Index(i)
			switch {
			case rg.Min < 1 || rg.Min > rg.Max || rg.Max > 1<<32-1:
				add(ErrorList{p.Errorf("must satisfy 1 <= min <= max <= 4294967295, got min %d max %d", rg.Min, rg.Max)})
			case rg.Min <= 255 && rg.Max >= 253:
				add(ErrorList{p.Errorf("range %d-%d includes the kernel's reserved tables 253-255", rg.Min, rg.Max)})
			}
		}
	}
	return errs
}

func validatePortRange(p Path, pr numorstring.Port) ErrorList {
	if pr.IsNamed() {
		return ErrorList{p.Errorf("%q: a named port is not allowed here; use a number or min:max", pr.PortName)}
	}
	if err := pr.Validate(); err != nil {
		return ErrorList{p.Errorf("%v", err)}
	}
	return nil
}

func derefStr[T ~string](p *T) string {
	if p == nil {
		return ""
	}
	return string(*p)
}

// validateOneOfFold is ValidateOneOf ignoring case, as Calico's patterns
// `^(?i)(...)?$` do.
func validateOneOfFold(p Path, v string, allowed ...string) ErrorList {
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return nil
		}
	}
	return ValidateOneOf(p, v, allowed...)
}

// validateLogLevel accepts Calico's log levels in any case; file and syslog
// severities may also be "None" (logging to that target off).
func validateLogLevel(p Path, v string, allowNone bool) ErrorList {
	levels := []string{"Trace", "Debug", "Info", "Warning", "Error", "Fatal"}
	if allowNone {
		levels = append(levels, "None")
	}
	return validateOneOfFold(p, v, levels...)
}

// ValidInterfaceName says whether s can name a network interface: 1 to 15
// letters, digits, '.', '_' or '-'.
func ValidInterfaceName(s string) bool { return ifaceNameRE().MatchString(s) }
