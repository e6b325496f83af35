package v3

import (
	"encoding/base64"
	"net"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
)

// Node is Calico's view of a host: its BGP identity, tunnel addresses and
// the orchestrator's name for it.
type Node struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec NodeSpec `json:"spec,omitempty"`
	// Status is a struct, not a pointer: Calico always stores "status":{}.
	Status NodeStatus `json:"status,omitempty"`
}

// NodeSpec is the JSON shape of Calico's, in Calico's field order.
type NodeSpec struct {
	BGP                  *NodeBGPSpec       `json:"bgp,omitempty"`
	IPv4VXLANTunnelAddr  string             `json:"ipv4VXLANTunnelAddr,omitempty"`
	VXLANTunnelMACAddr   string             `json:"vxlanTunnelMACAddr,omitempty"`
	IPv6VXLANTunnelAddr  string             `json:"ipv6VXLANTunnelAddr,omitempty"`
	VXLANTunnelMACAddrV6 string             `json:"vxlanTunnelMACAddrV6,omitempty"`
	OrchRefs             []OrchRef          `json:"orchRefs,omitempty"`
	Wireguard            *NodeWireguardSpec `json:"wireguard,omitempty"`
	Addresses            []NodeAddress      `json:"addresses,omitempty"`
	Interfaces           []NodeInterface    `json:"interfaces,omitempty"`
}

// NodeBGPSpec is a node's BGP identity. The addresses are interface
// addresses in CIDR form (host bits set is normal: "10.0.0.2/24").
type NodeBGPSpec struct {
	ASNumber                *numorstring.ASNumber `json:"asNumber,omitempty"`
	IPv4Address             string                `json:"ipv4Address,omitempty"`
	IPv6Address             string                `json:"ipv6Address,omitempty"`
	IPv4IPIPTunnelAddr      string                `json:"ipv4IPIPTunnelAddr,omitempty"`
	RouteReflectorClusterID string                `json:"routeReflectorClusterID,omitempty"`
}

// OrchRef ties the node to its name in an orchestrator.
type OrchRef struct {
	NodeName     string `json:"nodeName,omitempty"`
	Orchestrator string `json:"orchestrator"`
}

// NodeWireguardSpec holds the node's WireGuard interface addresses.
type NodeWireguardSpec struct {
	InterfaceIPv4Address string `json:"interfaceIPv4Address,omitempty"`
	InterfaceIPv6Address string `json:"interfaceIPv6Address,omitempty"`
}

// NodeAddress is one address the node can be reached at.
type NodeAddress struct {
	Address string `json:"address"`
	// Type is CalicoNodeIP, InternalIP or ExternalIP.
	Type string `json:"type,omitempty"`
}

// NodeInterface is one host interface and its addresses.
type NodeInterface struct {
	Name      string   `json:"name,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
}

// NodeStatus is written by the node agent.
type NodeStatus struct {
	WireguardPublicKey   string   `json:"wireguardPublicKey,omitempty"`
	WireguardPublicKeyV6 string   `json:"wireguardPublicKeyV6,omitempty"`
	PodCIDRs             []string `json:"podCIDRs,omitempty"`
}

func (r *Node) validate() ErrorList {
	var errs ErrorList
	s := &r.Spec
	spec := Path("spec")
	if s.BGP != nil {
		bgp := spec.Child("bgp")
		errs = append(errs, validateInterfaceCIDR(bgp.Child("ipv4Address"), s.BGP.IPv4Address, 4)...)
		errs = append(errs, validateInterfaceCIDR(bgp.Child("ipv6Address"), s.BGP.IPv6Address, 6)...)
		errs = append(errs, validateIPFamily(bgp.Child("ipv4IPIPTunnelAddr"), s.BGP.IPv4IPIPTunnelAddr, 4)...)
		errs = append(errs, validateIPFamily(bgp.Child("routeReflectorClusterID"), s.BGP.RouteReflectorClusterID, 4)...)
	}
	errs = append(errs, validateIPFamily(spec.Child("ipv4VXLANTunnelAddr"), s.IPv4VXLANTunnelAddr, 4)...)
	errs = append(errs, validateIPFamily(spec.Child("ipv6VXLANTunnelAddr"), s.IPv6VXLANTunnelAddr, 6)...)
	errs = append(errs, validateMAC(spec.Child("vxlanTunnelMACAddr"), s.VXLANTunnelMACAddr)...)
	errs = append(errs, validateMAC(spec.Child("vxlanTunnelMACAddrV6"), s.VXLANTunnelMACAddrV6)...)
	for i, o := range s.OrchRefs {
		if o.Orchestrator == "" {
			errs = append(errs, spec.Child("orchRefs").Index(i).Child("orchestrator").Errorf("required"))
		}
	}
	if s.Wireguard != nil {
		wg := spec.Child("wireguard")
		errs = append(errs, validateIPFamily(wg.Child("interfaceIPv4Address"), s.Wireguard.InterfaceIPv4Address, 4)...)
		errs = append(errs, validateIPFamily(wg.Child("interfaceIPv6Address"), s.Wireguard.InterfaceIPv6Address, 6)...)
	}
	for i, a := range s.Addresses {
		p := spec.Child("addresses").Index(i).Child("address")
		if a.Address == "" {
			errs = append(errs, p.Errorf("required"))
		} else if !isIPOrInterfaceCIDR(a.Address) {
			errs = append(errs, p.Errorf("%q is not a valid IP address or CIDR", a.Address))
		}
	}
	for i, ifc := range s.Interfaces {
		p := spec.Child("interfaces").Index(i)
		for j, a := range ifc.Addresses {
			if !isIPOrInterfaceCIDR(a) {
				errs = append(errs, p.Child("addresses").Index(j).Errorf("%q is not a valid IP address or CIDR", a))
			}
		}
	}
	st := Path("status")
	errs = append(errs, validateWireguardKey(st.Child("wireguardPublicKey"), r.Status.WireguardPublicKey)...)
	errs = append(errs, validateWireguardKey(st.Child("wireguardPublicKeyV6"), r.Status.WireguardPublicKeyV6)...)
	errs = append(errs, ValidateCIDRs(st.Child("podCIDRs"), r.Status.PodCIDRs)...)
	return errs
}

// validateInterfaceCIDR checks an optional "address/prefix-length" of one
// family; unlike a route, it may have host bits set.
func validateInterfaceCIDR(p Path, s string, family int) ErrorList {
	if s == "" {
		return nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return ErrorList{p.Errorf("%q is not an address in CIDR form (e.g. 10.0.0.2/24)", s)}
	}
	if (family == 4) != pfx.Addr().Is4() {
		return ErrorList{p.Errorf("%q is not an IPv%d address", s, family)}
	}
	return nil
}

func isIPOrInterfaceCIDR(s string) bool {
	if _, err := netip.ParsePrefix(s); err == nil {
		return true
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == ""
}

func validateMAC(p Path, s string) ErrorList {
	if s == "" {
		return nil
	}
	if _, err := net.ParseMAC(s); err != nil {
		return ErrorList{p.Errorf("%q is not a valid MAC address", s)}
	}
	return nil
}

// validateWireguardKey requires a base64-encoded 32-byte key.
func validateWireguardKey(p Path, s string) ErrorList {
	if s == "" {
		return nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err != nil || len(b) != 32 {
		return ErrorList{p.Errorf("not a valid WireGuard public key (base64 of 32 bytes)")}
	}
	return nil
}
