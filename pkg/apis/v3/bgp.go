package v3

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

// BGPConfiguration is the cluster-wide ("default") or per-node
// ("node.<node>") BGP configuration.
type BGPConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPConfigurationSpec `json:"spec,omitempty"`
}

// BGPConfigurationSpec is the JSON shape of Calico's, field for field and in
// Calico's order (the order fixes the bytes stored in etcd).
type BGPConfigurationSpec struct {
	LogSeverityScreen      string                       `json:"logSeverityScreen,omitempty"`
	NodeToNodeMeshEnabled  *bool                        `json:"nodeToNodeMeshEnabled,omitempty"`
	ASNumber               *numorstring.ASNumber        `json:"asNumber,omitempty"`
	ServiceLoadBalancerIPs []ServiceLoadBalancerIPBlock `json:"serviceLoadBalancerIPs,omitempty"`
	ServiceExternalIPs     []ServiceExternalIPBlock     `json:"serviceExternalIPs,omitempty"`
	ServiceClusterIPs      []ServiceClusterIPBlock      `json:"serviceClusterIPs,omitempty"`
	Communities            []Community                  `json:"communities,omitempty"`
	PrefixAdvertisements   []PrefixAdvertisement        `json:"prefixAdvertisements,omitempty"`
	ListenPort             uint16                       `json:"listenPort,omitempty"`
	NodeMeshPassword       *BGPPassword                 `json:"nodeMeshPassword,omitempty"`
	NodeMeshMaxRestartTime *metav1.Duration             `json:"nodeMeshMaxRestartTime,omitempty"`
	BindMode               *BindMode                    `json:"bindMode,omitempty"`
	IgnoredInterfaces      []string                     `json:"ignoredInterfaces,omitempty"`
	// LocalWorkloadPeeringIPV4/6 are the addresses a node uses to peer with
	// its own workloads (BGPPeer.localWorkloadSelector).
	LocalWorkloadPeeringIPV4       string                          `json:"localWorkloadPeeringIPV4,omitempty"`
	LocalWorkloadPeeringIPV6       string                          `json:"localWorkloadPeeringIPV6,omitempty"`
	ServiceLoadBalancerAggregation *ServiceLoadBalancerAggregation `json:"serviceLoadBalancerAggregation,omitempty"`
	// ProgramClusterRoutes says which cluster routes BIRD programs (the
	// rest are Felix's: FelixConfiguration.programClusterRoutes).
	ProgramClusterRoutes *string `json:"programClusterRoutes,omitempty"`
	// IPv4/6NormalRoutePriority are the metrics Felix gives workload routes
	// (they must match FelixConfiguration's); BIRD tells elevated routes of
	// a live migration by them.
	IPv4NormalRoutePriority *int `json:"ipv4NormalRoutePriority,omitempty"`
	IPv6NormalRoutePriority *int `json:"ipv6NormalRoutePriority,omitempty"`
}

// ServiceLoadBalancerIPBlock is one LoadBalancer IP range to advertise.
type ServiceLoadBalancerIPBlock struct {
	CIDR string `json:"cidr,omitempty"`
}

// ServiceExternalIPBlock is one external IP range to advertise.
type ServiceExternalIPBlock struct {
	CIDR string `json:"cidr,omitempty"`
}

// ServiceClusterIPBlock is one cluster IP range to advertise.
type ServiceClusterIPBlock struct {
	CIDR string `json:"cidr,omitempty"`
}

// Community names a BGP community value: "aa:nn" (standard, 16-bit parts)
// or "aa:nn:mm" (large, 32-bit parts).
type Community struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// PrefixAdvertisement attaches communities to the routes for one CIDR.
type PrefixAdvertisement struct {
	CIDR        string   `json:"cidr,omitempty"`
	Communities []string `json:"communities,omitempty"`
}

// BindMode says where BIRD listens: all addresses (None) or the node IP.
type BindMode string

// Bind modes.
const (
	BindModeNone   BindMode = "None"
	BindModeNodeIP BindMode = "NodeIP"
)

// ServiceLoadBalancerAggregation says whether LoadBalancer IPs are advertised
// as their configured blocks (Enabled) or one route per address (Disabled).
type ServiceLoadBalancerAggregation string

// Aggregation settings.
const (
	ServiceLoadBalancerAggregationEnabled  ServiceLoadBalancerAggregation = "Enabled"
	ServiceLoadBalancerAggregationDisabled ServiceLoadBalancerAggregation = "Disabled"
)

// BGPPassword says where a BGP session password comes from.
type BGPPassword struct {
	SecretKeyRef *SecretKeySelector `json:"secretKeyRef,omitempty"`
}

// SecretKeySelector is Kubernetes' core/v1 SecretKeySelector: one key of a
// Secret in calico-node's namespace.
type SecretKeySelector struct {
	Name     string `json:"name,omitempty"`
	Key      string `json:"key"`
	Optional *bool  `json:"optional,omitempty"`
}

// ConfigNameDefault is the name of the cluster-wide instance of a
// configuration kind; per-node instances are named NodeConfigPrefix+<node>.
const (
	ConfigNameDefault = "default"
	NodeConfigPrefix  = "node."
)

// validateConfigName enforces `default` or `node.<node>` (BGPConfiguration,
// FelixConfiguration).
func validateConfigName(p Path, name string) ErrorList {
	if errs := ValidateResourceName(p, name); len(errs) > 0 {
		return errs
	}
	if name == ConfigNameDefault {
		return nil
	}
	if node, ok := strings.CutPrefix(name, NodeConfigPrefix); ok && node != "" {
		return nil
	}
	return ErrorList{p.Errorf("%q: must be %q or %q followed by a node name", name, ConfigNameDefault, NodeConfigPrefix)}
}

func (r *BGPConfiguration) validateName(p Path) ErrorList { return validateConfigName(p, r.Name) }

func (r *BGPConfiguration) setDefaults() {
	if r.Spec.ServiceLoadBalancerAggregation == nil {
		a := ServiceLoadBalancerAggregationEnabled
		r.Spec.ServiceLoadBalancerAggregation = &a
	}
}

func (r *BGPConfiguration) validate() ErrorList {
	var errs ErrorList
	s := &r.Spec
	spec := Path("spec")
	errs = append(errs, validateLogLevel(spec.Child("logSeverityScreen"), s.LogSeverityScreen, false)...)

	if r.Name != ConfigNameDefault {
		// As Calico: cluster-wide settings belong to the default instance only.
		only := func(set bool, field string) {
			if set {
				errs = append(errs, spec.Child(field).Errorf("can only be set on the %q BGPConfiguration", ConfigNameDefault))
			}
		}
		only(s.NodeToNodeMeshEnabled != nil, "nodeToNodeMeshEnabled")
		only(s.ASNumber != nil, "asNumber")
		only(len(s.ServiceLoadBalancerIPs) > 0, "serviceLoadBalancerIPs")
		only(len(s.ServiceExternalIPs) > 0, "serviceExternalIPs")
		only(len(s.ServiceClusterIPs) > 0, "serviceClusterIPs")
	}
	for i, b := range s.ServiceLoadBalancerIPs {
		errs = append(errs, validateCIDRField(spec.Child("serviceLoadBalancerIPs").Index(i).Child("cidr"), b.CIDR)...)
	}
	for i, b := range s.ServiceExternalIPs {
		errs = append(errs, validateCIDRField(spec.Child("serviceExternalIPs").Index(i).Child("cidr"), b.CIDR)...)
	}
	for i, b := range s.ServiceClusterIPs {
		errs = append(errs, validateCIDRField(spec.Child("serviceClusterIPs").Index(i).Child("cidr"), b.CIDR)...)
	}

	names := map[string]bool{}
	for i, c := range s.Communities {
		p := spec.Child("communities").Index(i)
		switch {
		case c.Name == "":
			errs = append(errs, p.Child("name").Errorf("required"))
		case !communityNameRE().MatchString(c.Name):
			errs = append(errs, p.Child("name").Errorf("%q: may contain only letters, digits, '.', '_' and '-'", c.Name))
		case names[c.Name]:
			errs = append(errs, p.Child("name").Errorf("%q is defined twice", c.Name))
		}
		names[c.Name] = true
		if c.Value == "" {
			errs = append(errs, p.Child("value").Errorf("required"))
		} else if msg := checkCommunityValue(c.Value); msg != "" {
			errs = append(errs, p.Child("value").Errorf("%s", msg))
		}
	}
	for i, pa := range s.PrefixAdvertisements {
		p := spec.Child("prefixAdvertisements").Index(i)
		errs = append(errs, validateCIDRField(p.Child("cidr"), pa.CIDR)...)
		if len(pa.Communities) == 0 {
			errs = append(errs, p.Child("communities").Errorf("required"))
		}
		for j, c := range pa.Communities {
			if names[c] {
				continue
			}
			if msg := checkCommunityValue(c); msg != "" {
				errs = append(errs, p.Child("communities").Index(j).Errorf("%q is neither a community defined in spec.communities nor a valid community value (aa:nn or aa:nn:mm)", c))
			}
		}
	}
	errs = append(errs, validateBGPPassword(spec.Child("nodeMeshPassword"), s.NodeMeshPassword)...)
	errs = append(errs, validateDuration(spec.Child("nodeMeshMaxRestartTime"), s.NodeMeshMaxRestartTime, 0)...)
	if s.BindMode != nil {
		errs = append(errs, validateEnum(spec.Child("bindMode"), string(*s.BindMode), string(BindModeNone), string(BindModeNodeIP))...)
	}
	for i, ifc := range s.IgnoredInterfaces {
		if !ifaceGlobRE().MatchString(ifc) {
			errs = append(errs, spec.Child("ignoredInterfaces").Index(i).Errorf("%q is not a valid interface name or pattern", ifc))
		}
	}
	errs = append(errs, validateIPFamily(spec.Child("localWorkloadPeeringIPV4"), s.LocalWorkloadPeeringIPV4, 4)...)
	errs = append(errs, validateIPFamily(spec.Child("localWorkloadPeeringIPV6"), s.LocalWorkloadPeeringIPV6, 6)...)
	if s.ServiceLoadBalancerAggregation != nil {
		errs = append(errs, validateEnum(spec.Child("serviceLoadBalancerAggregation"), string(*s.ServiceLoadBalancerAggregation),
			string(ServiceLoadBalancerAggregationEnabled), string(ServiceLoadBalancerAggregationDisabled))...)
	}
	if s.ProgramClusterRoutes != nil {
		errs = append(errs, validateEnum(spec.Child("programClusterRoutes"), *s.ProgramClusterRoutes, programClusterRoutesValues...)...)
	}
	for _, f := range []struct {
		field string
		v     *int
	}{{"ipv4NormalRoutePriority", s.IPv4NormalRoutePriority}, {"ipv6NormalRoutePriority", s.IPv6NormalRoutePriority}} {
		if f.v != nil && (*f.v < 1 || *f.v > 2147483646) {
			errs = append(errs, spec.Child(f.field).Errorf("%d is out of range: must be a route metric, 1-2147483646", *f.v))
		}
	}
	return errs
}

var (
	communityNameRE = lazyRegexp(`^[a-zA-Z0-9_.-]+$`)
	// An interface name (at most 15 characters) or a glob over names.
	ifaceGlobRE = lazyRegexp(`^[a-zA-Z0-9_.:*?+@-]{1,15}$`)
)

// checkCommunityValue returns "" for a valid standard (aa:nn, 16-bit parts)
// or large (aa:nn:mm, 32-bit parts) community, else what is wrong.
func checkCommunityValue(v string) string {
	parts := strings.Split(v, ":")
	bits := 16
	switch len(parts) {
	case 2:
	case 3:
		bits = 32
	default:
		return "community value " + strconv.Quote(v) + " must be aa:nn or aa:nn:mm"
	}
	for _, part := range parts {
		if part == "" || strings.TrimLeft(part, "0123456789") != "" {
			return "community value " + strconv.Quote(v) + " must be aa:nn or aa:nn:mm with decimal numbers"
		}
		if _, err := strconv.ParseUint(part, 10, bits); err != nil {
			if bits == 16 {
				return "community value " + strconv.Quote(v) + ": each part of a standard community must be 0-65535"
			}
			return "community value " + strconv.Quote(v) + ": each part of a large community must be 0-4294967295"
		}
	}
	return ""
}

// validateCIDRField requires a masked CIDR (or a single address).
func validateCIDRField(p Path, s string) ErrorList {
	if s == "" {
		return ErrorList{p.Errorf("required")}
	}
	if _, fe := ParseCIDR(p, s); fe != nil {
		return ErrorList{fe}
	}
	return nil
}

// validateIPFamily checks an optional address of one family (4 or 6).
func validateIPFamily(p Path, s string, family int) ErrorList {
	if s == "" {
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return ErrorList{p.Errorf("%q is not a valid IPv%d address", s, family)}
	}
	if (family == 4) != a.Is4() {
		return ErrorList{p.Errorf("%q is not an IPv%d address", s, family)}
	}
	return nil
}

// validateEnum is ValidateOneOf for a field that is set: empty is an error.
func validateEnum(p Path, v string, allowed ...string) ErrorList {
	if v == "" {
		return ErrorList{p.Errorf("must be one of %s", strings.Join(allowed, ", "))}
	}
	return ValidateOneOf(p, v, allowed...)
}

// validateDuration checks an optional duration is not negative and, when max
// is non-zero, not above max.
func validateDuration(p Path, d *metav1.Duration, max time.Duration) ErrorList {
	if d == nil {
		return nil
	}
	if d.Duration < 0 {
		return ErrorList{p.Errorf("must not be negative, got %s", d.Duration)}
	}
	if max > 0 && d.Duration > max {
		return ErrorList{p.Errorf("must be at most %s, got %s", max, d.Duration)}
	}
	return nil
}

func validateBGPPassword(p Path, pw *BGPPassword) ErrorList {
	if pw == nil {
		return nil
	}
	ref := p.Child("secretKeyRef")
	if pw.SecretKeyRef == nil {
		return ErrorList{ref.Errorf("required: the password must name a Secret key")}
	}
	var errs ErrorList
	if pw.SecretKeyRef.Name == "" {
		errs = append(errs, ref.Child("name").Errorf("required"))
	} else {
		errs = append(errs, ValidateResourceName(ref.Child("name"), pw.SecretKeyRef.Name)...)
	}
	if pw.SecretKeyRef.Key == "" {
		errs = append(errs, ref.Child("key").Errorf("required"))
	} else if !secretKeyRE().MatchString(pw.SecretKeyRef.Key) {
		errs = append(errs, ref.Child("key").Errorf("%q is not a valid Secret key", pw.SecretKeyRef.Key))
	}
	return errs
}

var secretKeyRE = lazyRegexp(`^[-._a-zA-Z0-9]{1,253}$`)

// BGPPeer adds BGP sessions: to an external router (peerIP), to selected
// Calico nodes (peerSelector), or to a node's own workloads
// (localWorkloadSelector).
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPPeerSpec `json:"spec,omitempty"`
}

// BGPPeerSpec is the JSON shape of Calico's, in Calico's field order.
type BGPPeerSpec struct {
	Node                     string                `json:"node,omitempty"`
	NodeSelector             string                `json:"nodeSelector,omitempty"`
	PeerIP                   string                `json:"peerIP,omitempty"`
	ASNumber                 numorstring.ASNumber  `json:"asNumber,omitempty"`
	LocalWorkloadSelector    string                `json:"localWorkloadSelector,omitempty"`
	PeerSelector             string                `json:"peerSelector,omitempty"`
	KeepOriginalNextHop      bool                  `json:"keepOriginalNextHop,omitempty"`
	NextHopMode              *NextHopMode          `json:"nextHopMode,omitempty"`
	Password                 *BGPPassword          `json:"password,omitempty"`
	SourceAddress            SourceAddress         `json:"sourceAddress,omitempty"`
	FailureDetectionMode     FailureDetectionMode  `json:"failureDetectionMode,omitempty"`
	RestartMode              RestartMode           `json:"restartMode,omitempty"`
	MaxRestartTime           *metav1.Duration      `json:"maxRestartTime,omitempty"`
	BIRDGatewayMode          BIRDGatewayMode       `json:"birdGatewayMode,omitempty"`
	NumAllowedLocalASNumbers *int32                `json:"numAllowedLocalASNumbers,omitempty"`
	TTLSecurity              *uint8                `json:"ttlSecurity,omitempty"`
	Filters                  []string              `json:"filters,omitempty"`
	ReachableBy              string                `json:"reachableBy,omitempty"`
	KeepaliveTime            *metav1.Duration      `json:"keepaliveTime,omitempty"`
	LocalASNumber            *numorstring.ASNumber `json:"localASNumber,omitempty"`
	ReversePeering           *ReversePeering       `json:"reversePeering,omitempty"`
}

// NextHopMode says how BIRD sets the next hop towards a peer.
type NextHopMode string

// Next-hop modes.
const (
	NextHopAuto NextHopMode = "Auto"
	NextHopSelf NextHopMode = "Self"
	NextHopKeep NextHopMode = "Keep"
)

// SourceAddress says whether sessions are sourced from the node IP.
type SourceAddress string

// Source address modes.
const (
	SourceAddressUseNodeIP SourceAddress = "UseNodeIP"
	SourceAddressNone      SourceAddress = "None"
)

// FailureDetectionMode selects BFD for directly connected peers.
type FailureDetectionMode string

// RestartMode selects graceful or long-lived graceful restart.
type RestartMode string

// BIRDGatewayMode selects how BIRD resolves the gateway of learned routes.
type BIRDGatewayMode string

// ReversePeering says whether the matching reverse session is made for a
// peerSelector peering (Auto) or must be configured explicitly (Manual).
type ReversePeering string

func (r *BGPPeer) validate() ErrorList {
	var errs ErrorList
	s := &r.Spec
	spec := Path("spec")
	if s.Node != "" {
		errs = append(errs, ValidateResourceName(spec.Child("node"), s.Node)...)
		if s.NodeSelector != "" {
			errs = append(errs, spec.Child("nodeSelector").Errorf("cannot be set together with node"))
		}
	}
	for _, sel := range []struct {
		field, expr string
	}{{"nodeSelector", s.NodeSelector}, {"peerSelector", s.PeerSelector}, {"localWorkloadSelector", s.LocalWorkloadSelector}} {
		if sel.expr != "" {
			errs = append(errs, ValidateSelector(spec.Child(sel.field), sel.expr)...)
		}
	}

	targets := 0
	for _, set := range []bool{s.PeerIP != "", s.PeerSelector != "", s.LocalWorkloadSelector != ""} {
		if set {
			targets++
		}
	}
	switch {
	case targets == 0:
		errs = append(errs, spec.Child("peerIP").Errorf("one of peerIP, peerSelector or localWorkloadSelector is required"))
	case targets > 1:
		errs = append(errs, spec.Child("peerSelector").Errorf("peerIP, peerSelector and localWorkloadSelector are mutually exclusive"))
	}
	if s.PeerIP != "" {
		if msg := checkPeerIP(s.PeerIP); msg != "" {
			errs = append(errs, spec.Child("peerIP").Errorf("%s", msg))
		}
	}
	if (s.PeerIP != "" || s.LocalWorkloadSelector != "") && s.ASNumber == 0 {
		errs = append(errs, spec.Child("asNumber").Errorf("required with peerIP or localWorkloadSelector"))
	}
	if s.PeerSelector != "" && s.ASNumber != 0 {
		errs = append(errs, spec.Child("asNumber").Errorf("must not be set with peerSelector: the AS number comes from each selected node"))
	}

	if s.NextHopMode != nil {
		errs = append(errs, validateEnum(spec.Child("nextHopMode"), string(*s.NextHopMode), string(NextHopAuto), string(NextHopSelf), string(NextHopKeep))...)
		if s.KeepOriginalNextHop {
			errs = append(errs, spec.Child("keepOriginalNextHop").Errorf("cannot be set together with nextHopMode; use nextHopMode: Keep"))
		}
	}
	errs = append(errs, validateBGPPassword(spec.Child("password"), s.Password)...)
	errs = append(errs, ValidateOneOf(spec.Child("sourceAddress"), string(s.SourceAddress), string(SourceAddressUseNodeIP), string(SourceAddressNone))...)
	errs = append(errs, ValidateOneOf(spec.Child("failureDetectionMode"), string(s.FailureDetectionMode), "None", "BFDIfDirectlyConnected")...)
	errs = append(errs, ValidateOneOf(spec.Child("restartMode"), string(s.RestartMode), "GracefulRestart", "LongLivedGracefulRestart")...)
	errs = append(errs, ValidateOneOf(spec.Child("birdGatewayMode"), string(s.BIRDGatewayMode), "Recursive", "DirectIfDirectlyConnected")...)
	errs = append(errs, validateDuration(spec.Child("maxRestartTime"), s.MaxRestartTime, 0)...)
	if s.KeepaliveTime != nil {
		// BIRD takes the keepalive in whole seconds, 1-65535.
		if s.KeepaliveTime.Duration < time.Second || s.KeepaliveTime.Duration > 65535*time.Second {
			errs = append(errs, spec.Child("keepaliveTime").Errorf("must be between 1s and 65535s, got %s", s.KeepaliveTime.Duration))
		}
	}
	if s.NumAllowedLocalASNumbers != nil && *s.NumAllowedLocalASNumbers < 0 {
		errs = append(errs, spec.Child("numAllowedLocalASNumbers").Errorf("must not be negative"))
	}
	if s.TTLSecurity != nil && *s.TTLSecurity == 0 {
		errs = append(errs, spec.Child("ttlSecurity").Errorf("must be between 1 and 255 hops"))
	}
	for i, f := range s.Filters {
		errs = append(errs, ValidateResourceName(spec.Child("filters").Index(i), f)...)
	}
	if s.ReachableBy != "" {
		errs = append(errs, ValidateIP(spec.Child("reachableBy"), s.ReachableBy)...)
	}
	if s.ReversePeering != nil {
		errs = append(errs, validateEnum(spec.Child("reversePeering"), string(*s.ReversePeering), "Auto", "Manual")...)
	}
	return errs
}

// checkPeerIP accepts "ip", "ipv4:port" and "[ipv6]:port".
func checkPeerIP(s string) string {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return ""
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Addr().Zone() != "" {
		return strconv.Quote(s) + " is not a valid peer address: use ip, ipv4:port or [ipv6]:port"
	}
	if ap.Port() == 0 {
		return strconv.Quote(s) + ": port must be between 1 and 65535"
	}
	return ""
}

// BGPFilter is an ordered list of import/export rules BGPPeers refer to.
type BGPFilter struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPFilterSpec `json:"spec,omitempty"`
}

// BGPFilterSpec holds the rules per direction and address family.
type BGPFilterSpec struct {
	ExportV4 []BGPFilterRuleV4 `json:"exportV4,omitempty"`
	ImportV4 []BGPFilterRuleV4 `json:"importV4,omitempty"`
	ExportV6 []BGPFilterRuleV6 `json:"exportV6,omitempty"`
	ImportV6 []BGPFilterRuleV6 `json:"importV6,omitempty"`
}

// BGPFilterRuleV4 matches IPv4 routes and accepts or rejects them.
type BGPFilterRuleV4 struct {
	CIDR          string                   `json:"cidr,omitempty"`
	PrefixLength  *BGPFilterPrefixLengthV4 `json:"prefixLength,omitempty"`
	Source        string                   `json:"source,omitempty"`
	Interface     string                   `json:"interface,omitempty"`
	MatchOperator string                   `json:"matchOperator,omitempty"`
	Action        string                   `json:"action"`
}

// BGPFilterRuleV6 matches IPv6 routes and accepts or rejects them.
type BGPFilterRuleV6 struct {
	CIDR          string                   `json:"cidr,omitempty"`
	PrefixLength  *BGPFilterPrefixLengthV6 `json:"prefixLength,omitempty"`
	Source        string                   `json:"source,omitempty"`
	Interface     string                   `json:"interface,omitempty"`
	MatchOperator string                   `json:"matchOperator,omitempty"`
	Action        string                   `json:"action"`
}

// BGPFilterPrefixLengthV4 bounds the prefix length of matched IPv4 routes.
type BGPFilterPrefixLengthV4 struct {
	Min *int32 `json:"min,omitempty"`
	Max *int32 `json:"max,omitempty"`
}

// BGPFilterPrefixLengthV6 bounds the prefix length of matched IPv6 routes.
type BGPFilterPrefixLengthV6 struct {
	Min *int32 `json:"min,omitempty"`
	Max *int32 `json:"max,omitempty"`
}

// bgpFilterRule is the family-independent view of a rule for validation.
type bgpFilterRule struct {
	cidr, source, iface, op, action string
	min, max                        *int32
}

func (r *BGPFilter) validate() ErrorList {
	var errs ErrorList
	spec := Path("spec")
	for i, rule := range r.Spec.ExportV4 {
		errs = append(errs, validateFilterRule(spec.Child("exportV4").Index(i), 4, v4Rule(rule))...)
	}
	for i, rule := range r.Spec.ImportV4 {
		errs = append(errs, validateFilterRule(spec.Child("importV4").Index(i), 4, v4Rule(rule))...)
	}
	for i, rule := range r.Spec.ExportV6 {
		errs = append(errs, validateFilterRule(spec.Child("exportV6").Index(i), 6, v6Rule(rule))...)
	}
	for i, rule := range r.Spec.ImportV6 {
		errs = append(errs, validateFilterRule(spec.Child("importV6").Index(i), 6, v6Rule(rule))...)
	}
	return errs
}

func v4Rule(r BGPFilterRuleV4) bgpFilterRule {
	out := bgpFilterRule{cidr: r.CIDR, source: r.Source, iface: r.Interface, op: r.MatchOperator, action: r.Action}
	if r.PrefixLength != nil {
		out.min, out.max = r.PrefixLength.Min, r.PrefixLength.Max
	}
	return out
}

func v6Rule(r BGPFilterRuleV6) bgpFilterRule {
	out := bgpFilterRule{cidr: r.CIDR, source: r.Source, iface: r.Interface, op: r.MatchOperator, action: r.Action}
	if r.PrefixLength != nil {
		out.min, out.max = r.PrefixLength.Min, r.PrefixLength.Max
	}
	return out
}

func validateFilterRule(p Path, family int, r bgpFilterRule) ErrorList {
	var errs ErrorList
	errs = append(errs, validateEnum(p.Child("action"), r.action, "Accept", "Reject")...)
	errs = append(errs, ValidateOneOf(p.Child("matchOperator"), r.op, "Equal", "NotEqual", "In", "NotIn")...)
	errs = append(errs, ValidateOneOf(p.Child("source"), r.source, "RemotePeers")...)
	if r.iface != "" && !ifaceGlobRE().MatchString(r.iface) {
		errs = append(errs, p.Child("interface").Errorf("%q is not a valid interface name or pattern", r.iface))
	}
	if (r.cidr == "") != (r.op == "") {
		errs = append(errs, p.Child("matchOperator").Errorf("cidr and matchOperator must be set together"))
	}
	bits := 32
	if family == 6 {
		bits = 128
	}
	if r.cidr != "" {
		pfx, fe := ParseCIDR(p.Child("cidr"), r.cidr)
		switch {
		case fe != nil:
			errs = append(errs, fe)
		case (family == 4) != pfx.Addr().Is4():
			errs = append(errs, p.Child("cidr").Errorf("%s is not an IPv%d CIDR", r.cidr, family))
		}
	}
	if r.min == nil && r.max == nil {
		return errs
	}
	pl := p.Child("prefixLength")
	if r.cidr == "" {
		errs = append(errs, pl.Errorf("requires cidr"))
	}
	for _, b := range []struct {
		name string
		v    *int32
	}{{"min", r.min}, {"max", r.max}} {
		if b.v != nil && (*b.v < 0 || int(*b.v) > bits) {
			errs = append(errs, pl.Child(b.name).Errorf("must be between 0 and %d, got %d", bits, *b.v))
		}
	}
	if r.min != nil && r.max != nil && *r.min > *r.max {
		errs = append(errs, pl.Errorf("min %d is greater than max %d", *r.min, *r.max))
	}
	return errs
}
