package v3

import (
	"net"
	"net/netip"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

// WorkloadEndpoint is the interface of one workload (a pod's eth0) on its
// host. The CNI plugin creates it; policy selects it by its labels.
type WorkloadEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              WorkloadEndpointSpec `json:"spec,omitempty"`
}

// WorkloadEndpointSpec is the body of a WorkloadEndpoint.
type WorkloadEndpointSpec struct {
	Orchestrator string `json:"orchestrator,omitempty"`
	Workload     string `json:"workload,omitempty"`
	Node         string `json:"node,omitempty"`
	ContainerID  string `json:"containerID,omitempty"`
	Pod          string `json:"pod,omitempty"`
	Endpoint     string `json:"endpoint,omitempty"`
	// ServiceAccountName is the Kubernetes service account of the pod.
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// IPNetworks are the endpoint's addresses, each a /32 or /128.
	IPNetworks  []string `json:"ipNetworks,omitempty"`
	IPNATs      []IPNAT  `json:"ipNATs,omitempty"`
	IPv4Gateway string   `json:"ipv4Gateway,omitempty"`
	IPv6Gateway string   `json:"ipv6Gateway,omitempty"`
	// Profiles apply, in order, after all tiers.
	Profiles []string `json:"profiles,omitempty"`
	// InterfaceName is the host side of the workload's veth ("cali…").
	InterfaceName string                 `json:"interfaceName,omitempty"`
	MAC           string                 `json:"mac,omitempty"`
	Ports         []WorkloadEndpointPort `json:"ports,omitempty"`
	// AllowSpoofedSourcePrefixes may be sent from, bypassing the RPF check.
	AllowSpoofedSourcePrefixes []string `json:"allowSpoofedSourcePrefixes,omitempty"`
}

// WorkloadEndpointPort is a named (or host-mapped) port of a workload.
type WorkloadEndpointPort struct {
	Name     string               `json:"name"`
	Protocol numorstring.Protocol `json:"protocol"`
	Port     uint16               `json:"port"`
	HostPort uint16               `json:"hostPort"`
	HostIP   string               `json:"hostIP"`
}

// IPNAT is a 1:1 NAT of an external address to one of the endpoint's own.
type IPNAT struct {
	InternalIP string `json:"internalIP"`
	ExternalIP string `json:"externalIP"`
	// Source "openstack" marks an OpenStack floating IP.
	Source string `json:"source"`
}

// HostEndpoint is one of a host's own interfaces (or, with interfaceName
// "*", all of them) brought under policy.
type HostEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              HostEndpointSpec `json:"spec,omitempty"`
}

// HostEndpointSpec is the body of a HostEndpoint.
type HostEndpointSpec struct {
	Node string `json:"node,omitempty"`
	// InterfaceName is an interface, "*" for all of the host's traffic, or
	// empty to find the interface by ExpectedIPs.
	InterfaceName string `json:"interfaceName,omitempty"`
	// ExpectedIPs are the interface's addresses; rule selectors that match
	// the host endpoint match these.
	ExpectedIPs []string       `json:"expectedIPs,omitempty"`
	Profiles    []string       `json:"profiles,omitempty"`
	Ports       []EndpointPort `json:"ports,omitempty"`
}

// EndpointPort is a named port of a host endpoint.
type EndpointPort struct {
	Name     string               `json:"name"`
	Protocol numorstring.Protocol `json:"protocol"`
	Port     uint16               `json:"port"`
}

// Labels the datastore client sets on every WorkloadEndpoint it stores.
const (
	LabelNamespace    = "projectcalico.org/namespace"
	LabelOrchestrator = "projectcalico.org/orchestrator"
)

// Orchestrator names with their own workload identifier.
const (
	OrchestratorKubernetes = "k8s"
	OrchestratorCNI        = "cni"
)

// WorkloadEndpointName is the name Calico gives a WorkloadEndpoint:
// "<node>-<orchestrator>-<workload>-<endpoint>", each part with its own '-'
// doubled, so the name splits back into its parts unambiguously. workload is
// the pod name for orchestrator k8s, the container ID for cni, and the
// workload name otherwise.
func WorkloadEndpointName(node, orchestrator, workload, endpoint string) string {
	parts := []string{node, orchestrator, workload, endpoint}
	for i, s := range parts {
		parts[i] = strings.ReplaceAll(s, "-", "--")
	}
	return strings.Join(parts, "-")
}

// workloadID returns the identifier that names the workload for this
// orchestrator, and the field it comes from.
func (s *WorkloadEndpointSpec) workloadID() (string, string) {
	switch s.Orchestrator {
	case OrchestratorKubernetes:
		return s.Pod, "pod"
	case OrchestratorCNI:
		return s.ContainerID, "containerID"
	default:
		return s.Workload, "workload"
	}
}

// derivedName is the name the identifiers give, or "" if one is missing.
func (w *WorkloadEndpoint) derivedName() string {
	id, _ := w.Spec.workloadID()
	if w.Spec.Node == "" || w.Spec.Orchestrator == "" || id == "" || w.Spec.Endpoint == "" {
		return ""
	}
	return WorkloadEndpointName(w.Spec.Node, w.Spec.Orchestrator, id, w.Spec.Endpoint)
}

// setDefaults names an unnamed endpoint from its identifiers, as Calico's
// client does.
func (w *WorkloadEndpoint) setDefaults() {
	if w.Name == "" {
		w.Name = w.derivedName()
	}
}

func (w *WorkloadEndpoint) validateName(p Path) ErrorList {
	errs := ValidateResourceName(p, w.Name)
	if len(errs) > 0 {
		return errs
	}
	if want := w.derivedName(); want != "" && w.Name != want {
		errs = append(errs, p.Errorf("%q does not match the identifiers in spec (node, orchestrator, workload, endpoint): expected %q", w.Name, want))
	}
	return errs
}

var (
	containerIDRegex = lazyRegexp(`^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
	interfaceRegex   = lazyRegexp(`^[a-zA-Z0-9_.-]{1,15}$`)
)

func validateInterfaceName(p Path, name string, allowStar bool) ErrorList {
	if allowStar && name == "*" {
		return nil
	}
	if !interfaceRegex().MatchString(name) {
		return ErrorList{p.Errorf("%q is not an interface name (1-15 of a-z, A-Z, 0-9, '_', '.', '-')", name)}
	}
	return nil
}

// validateProtocolPort checks an endpoint port's protocol and number.
func validateProtocolPort(p Path, proto numorstring.Protocol, port uint16) ErrorList {
	var errs ErrorList
	if err := proto.Validate(); err != nil {
		errs = append(errs, p.Child("protocol").Errorf("%v", err))
	} else if !proto.SupportsPorts() {
		errs = append(errs, p.Child("protocol").Errorf("%s has no ports; use TCP, UDP or SCTP", proto))
	}
	if port == 0 {
		errs = append(errs, p.Child("port").Errorf("required: a port 1-65535"))
	}
	return errs
}

func (w *WorkloadEndpoint) validate() ErrorList {
	spec := Path("spec")
	s := &w.Spec
	var errs ErrorList
	errs = append(errs, validateNameField(spec.Child("node"), s.Node, true)...)
	errs = append(errs, validateNameField(spec.Child("orchestrator"), s.Orchestrator, true)...)
	errs = append(errs, validateNameField(spec.Child("endpoint"), s.Endpoint, true)...)
	id, idField := s.workloadID()
	if id == "" {
		errs = append(errs, spec.Child(idField).Errorf("required for orchestrator %q", s.Orchestrator))
	}
	errs = append(errs, validateNameField(spec.Child("workload"), s.Workload, false)...)
	errs = append(errs, validateNameField(spec.Child("pod"), s.Pod, false)...)
	if s.ContainerID != "" && !containerIDRegex().MatchString(s.ContainerID) {
		errs = append(errs, spec.Child("containerID").Errorf("%q is not a container ID (letters, digits and inner '-')", s.ContainerID))
	}
	errs = append(errs, validateNameField(spec.Child("serviceAccountName"), s.ServiceAccountName, false)...)

	var nets []netip.Prefix
	for i, n := range s.IPNetworks {
		np := spec.Child("ipNetworks").Index(i)
		pfx, fe := ParseCIDR(np, n)
		if fe != nil {
			errs = append(errs, fe)
			continue
		}
		if !pfx.IsSingleIP() {
			errs = append(errs, np.Errorf("%q has more than one address; use a /%d", n, pfx.Addr().BitLen()))
			continue
		}
		nets = append(nets, pfx)
	}
	for i, nat := range s.IPNATs {
		np := spec.Child("ipNATs").Index(i)
		in, err1 := netip.ParseAddr(nat.InternalIP)
		if err1 != nil || in.Zone() != "" {
			errs = append(errs, np.Child("internalIP").Errorf("%q is not a valid IP address", nat.InternalIP))
		}
		ex, err2 := netip.ParseAddr(nat.ExternalIP)
		if err2 != nil || ex.Zone() != "" {
			errs = append(errs, np.Child("externalIP").Errorf("%q is not a valid IP address", nat.ExternalIP))
		}
		if err1 != nil || err2 != nil {
			continue
		}
		if in.Is4() != ex.Is4() {
			errs = append(errs, np.Child("externalIP").Errorf("%s and internal %s are of different IP versions", ex, in))
		}
		found := false
		for _, pfx := range nets {
			if pfx.Contains(in) {
				found = true
			}
		}
		if !found {
			errs = append(errs, np.Child("internalIP").Errorf("%s is not one of the endpoint's ipNetworks", in))
		}
	}
	for _, gw := range []struct {
		name  string
		v     string
		want4 bool
	}{{"ipv4Gateway", s.IPv4Gateway, true}, {"ipv6Gateway", s.IPv6Gateway, false}} {
		if gw.v == "" {
			continue
		}
		a, err := netip.ParseAddr(gw.v)
		switch {
		case err != nil || a.Zone() != "":
			errs = append(errs, spec.Child(gw.name).Errorf("%q is not a valid IP address", gw.v))
		case a.Is4() != gw.want4:
			errs = append(errs, spec.Child(gw.name).Errorf("%q is of the wrong IP version", gw.v))
		}
	}
	errs = append(errs, validateNames(spec.Child("profiles"), s.Profiles)...)
	if s.InterfaceName == "" {
		errs = append(errs, spec.Child("interfaceName").Errorf("required"))
	} else {
		errs = append(errs, validateInterfaceName(spec.Child("interfaceName"), s.InterfaceName, false)...)
	}
	if s.MAC != "" {
		if _, err := net.ParseMAC(s.MAC); err != nil {
			errs = append(errs, spec.Child("mac").Errorf("%q is not a MAC address", s.MAC))
		}
	}
	for i, port := range s.Ports {
		pp := spec.Child("ports").Index(i)
		switch {
		case port.Name != "":
			if err := numorstring.ValidatePortName(port.Name); err != nil {
				errs = append(errs, pp.Child("name").Errorf("%v", err))
			}
		case port.HostPort == 0:
			errs = append(errs, pp.Child("name").Errorf("required unless hostPort is set"))
		}
		errs = append(errs, validateProtocolPort(pp, port.Protocol, port.Port)...)
		if port.HostIP != "" {
			if _, fe := ParseCIDR(pp.Child("hostIP"), port.HostIP); fe != nil {
				errs = append(errs, fe)
			}
		}
	}
	errs = append(errs, ValidateCIDRs(spec.Child("allowSpoofedSourcePrefixes"), s.AllowSpoofedSourcePrefixes)...)
	return errs
}

func (h *HostEndpoint) validate() ErrorList {
	spec := Path("spec")
	s := &h.Spec
	var errs ErrorList
	errs = append(errs, validateNameField(spec.Child("node"), s.Node, true)...)
	switch {
	case s.InterfaceName != "":
		errs = append(errs, validateInterfaceName(spec.Child("interfaceName"), s.InterfaceName, true)...)
	case len(s.ExpectedIPs) == 0:
		errs = append(errs, spec.Child("interfaceName").Errorf("interfaceName or expectedIPs is required"))
	}
	for i, ip := range s.ExpectedIPs {
		errs = append(errs, ValidateIP(spec.Child("expectedIPs").Index(i), ip)...)
	}
	errs = append(errs, validateNames(spec.Child("profiles"), s.Profiles)...)
	for i, port := range s.Ports {
		pp := spec.Child("ports").Index(i)
		if err := numorstring.ValidatePortName(port.Name); err != nil {
			errs = append(errs, pp.Child("name").Errorf("%v", err))
		}
		errs = append(errs, validateProtocolPort(pp, port.Protocol, port.Port)...)
	}
	return errs
}
