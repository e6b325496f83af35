package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ProtocolTortie is the rtm_protocol number stamped on every route tortie
// installs. It is how the driver tells its own routes from everybody else's:
// only routes carrying it are ever replaced or deleted.
//
// 116 is ASCII 't'. It is not reserved in the kernel's rtnetlink.h nor in
// iproute2's rt_protos, and differs from the numbers used by BIRD (12), the
// BGP daemons' common 186, and Calico's felix (80), so tortie can run next to
// any of them, including during an in-place migration from Calico. Operators
// can name it for `ip route` by adding "116 tortie" to
// /etc/iproute2/rt_protos.d/tortie.conf.
const ProtocolTortie netlink.RouteProtocol = 116

// RouteType is the kind of route: where matching packets go.
type RouteType uint8

const (
	// Unicast forwards through a device and/or a gateway (RTN_UNICAST).
	Unicast RouteType = iota
	// Blackhole silently drops (RTN_BLACKHOLE). Used for blocks affine to this
	// host so that traffic to a free address in them is not sent back out of
	// the default route.
	Blackhole
	// Throw ends the lookup in this table (RTN_THROW): the kernel goes on to
	// the next routing rule. Used in a table of its own, for destinations
	// that must not take that table's path (hosts without a WireGuard key).
	Throw
)

func (t RouteType) String() string {
	switch t {
	case Unicast:
		return "unicast"
	case Blackhole:
		return "blackhole"
	case Throw:
		return "throw"
	}
	return fmt.Sprintf("RouteType(%d)", uint8(t))
}

// kernel is the route type's rtm_type.
func (t RouteType) kernel() int {
	switch t {
	case Blackhole:
		return unix.RTN_BLACKHOLE
	case Throw:
		return unix.RTN_THROW
	}
	return unix.RTN_UNICAST
}

// Scope is the IPv4 route scope. IPv6 has no route scopes; the kernel reports
// every IPv6 route as universe, and so does the driver.
type Scope uint8

const (
	// ScopeAuto is "link" for a unicast route without a gateway (the
	// destination is directly on the device, as `ip route add … dev X` does)
	// and "universe" otherwise.
	ScopeAuto Scope = iota
	ScopeUniverse
	ScopeLink
	ScopeHost
)

func (s Scope) String() string {
	switch s {
	case ScopeAuto:
		return "auto"
	case ScopeUniverse:
		return "global"
	case ScopeLink:
		return "link"
	case ScopeHost:
		return "host"
	}
	return fmt.Sprintf("Scope(%d)", uint8(s))
}

func (s Scope) netlink() netlink.Scope {
	switch s {
	case ScopeLink:
		return netlink.SCOPE_LINK
	case ScopeHost:
		return netlink.SCOPE_HOST
	}
	return netlink.SCOPE_UNIVERSE
}

// Route is one desired route. Routes are identified by Dst: a desired set has
// at most one route per destination (in the reconciler's table).
type Route struct {
	Dst  netip.Prefix
	Type RouteType
	// Dev is the output device of a unicast route, e.g. cali0123456789a,
	// vxlan.calico, eth0. May be empty when Gateway is set; the kernel then
	// picks the device from the gateway's route.
	Dev string
	// Gateway is the next hop; optional.
	Gateway netip.Addr
	// OnLink makes the kernel take Gateway as directly reachable on Dev even
	// though no address on Dev covers it (VXLAN routes to remote tunnel
	// addresses, default via 169.254.1.1 in workloads).
	OnLink bool
	Scope  Scope
	// Src is the preferred source address; optional. It must be local.
	Src netip.Addr
}

// WorkloadRoute is the host route to a local workload: <addr>/32 (or /128)
// dev <hostVeth> scope link.
func WorkloadRoute(addr netip.Addr, hostVeth string) Route {
	addr = addr.Unmap()
	return Route{Dst: netip.PrefixFrom(addr, addr.BitLen()), Dev: hostVeth, Scope: ScopeLink}
}

// BlackholeRoute is the route for a block affine to this host: packets to a
// block address with no workload are dropped here instead of being routed
// back out.
func BlackholeRoute(block netip.Prefix) Route {
	return Route{Dst: block, Type: Blackhole}
}

// TunnelRoute is the route to another host's block through the VXLAN device:
// <block> via <remoteTunnelAddr> dev <device> onlink.
func TunnelRoute(block netip.Prefix, device string, remoteTunnelAddr netip.Addr) Route {
	return Route{Dst: block, Dev: device, Gateway: remoteTunnelAddr, OnLink: true}
}

// String renders the route as `ip route` would write it.
func (r Route) String() string {
	var b strings.Builder
	if r.Type != Unicast {
		b.WriteString(r.Type.String())
		b.WriteByte(' ')
	}
	b.WriteString(r.Dst.String())
	if r.Gateway.IsValid() {
		b.WriteString(" via ")
		b.WriteString(r.Gateway.String())
	}
	if r.Dev != "" {
		b.WriteString(" dev ")
		b.WriteString(r.Dev)
	}
	if r.Scope != ScopeAuto {
		b.WriteString(" scope ")
		b.WriteString(r.Scope.String())
	}
	if r.Src.IsValid() {
		b.WriteString(" src ")
		b.WriteString(r.Src.String())
	}
	if r.OnLink {
		b.WriteString(" onlink")
	}
	return b.String()
}

var errInvalidRoute = errors.New("invalid route")

// normalise returns the canonical form of r — the form the kernel reports
// back — or an error saying why it cannot be programmed. Comparisons with the
// kernel are made between normalised routes only.
func (r Route) normalise() (Route, error) {
	if !r.Dst.IsValid() {
		return r, fmt.Errorf("%w: no destination", errInvalidRoute)
	}
	addr := r.Dst.Addr().Unmap()
	bits := r.Dst.Bits()
	if r.Dst.Addr().Is4In6() {
		bits -= 96
		if bits < 0 {
			return r, fmt.Errorf("%w: %s: IPv4-mapped prefix shorter than ::ffff:0:0/96", errInvalidRoute, r.Dst)
		}
	}
	r.Dst = netip.PrefixFrom(addr, bits).Masked()
	r.Gateway = r.Gateway.Unmap()
	r.Src = r.Src.Unmap()
	v4 := r.Dst.Addr().Is4()

	switch r.Type {
	case Unicast:
		if r.Dev == "" && !r.Gateway.IsValid() {
			return r, fmt.Errorf("%w: %s: unicast route needs a device or a gateway", errInvalidRoute, r.Dst)
		}
	case Blackhole, Throw:
		if r.Dev != "" || r.Gateway.IsValid() || r.OnLink {
			return r, fmt.Errorf("%w: %s: a %s route has no device or gateway", errInvalidRoute, r.Dst, r.Type)
		}
	default:
		return r, fmt.Errorf("%w: %s: unknown type %v", errInvalidRoute, r.Dst, r.Type)
	}
	if r.Gateway.IsValid() && r.Gateway.Is4() != v4 {
		return r, fmt.Errorf("%w: %s: gateway %s is of another address family", errInvalidRoute, r.Dst, r.Gateway)
	}
	if r.Src.IsValid() && r.Src.Is4() != v4 {
		return r, fmt.Errorf("%w: %s: source %s is of another address family", errInvalidRoute, r.Dst, r.Src)
	}
	if r.OnLink && !r.Gateway.IsValid() {
		return r, fmt.Errorf("%w: %s: onlink needs a gateway", errInvalidRoute, r.Dst)
	}
	if len(r.Dev) > unix.IFNAMSIZ-1 {
		return r, fmt.Errorf("%w: %s: device name %q is too long", errInvalidRoute, r.Dst, r.Dev)
	}

	switch {
	case !v4:
		r.Scope = ScopeUniverse
	case r.Scope == ScopeAuto && r.Type == Unicast && !r.Gateway.IsValid():
		r.Scope = ScopeLink
	case r.Scope == ScopeAuto:
		r.Scope = ScopeUniverse
	}
	return r, nil
}

func (r Route) family() int {
	if r.Dst.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// toNetlink builds the kernel route for a normalised r. linkIndex is the
// resolved index of r.Dev, or 0.
func (r Route) toNetlink(linkIndex, table int, proto netlink.RouteProtocol) *netlink.Route {
	nr := &netlink.Route{
		Dst:       prefixToIPNet(r.Dst),
		LinkIndex: linkIndex,
		Table:     table,
		Protocol:  proto,
		Scope:     r.Scope.netlink(),
		Type:      unix.RTN_UNICAST,
		Family:    r.family(),
	}
	if t := r.Type.kernel(); t != unix.RTN_UNICAST {
		nr.Type = t
		nr.LinkIndex = 0
	}
	if r.Gateway.IsValid() {
		nr.Gw = net.IP(r.Gateway.AsSlice())
	}
	if r.Src.IsValid() {
		nr.Src = net.IP(r.Src.AsSlice())
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// matches reports whether the kernel route k is the normalised route r, with
// r.Dev resolved to linkIndex. Attributes tortie does not model (metric,
// metrics, realms) are ignored.
func (r Route) matches(linkIndex int, k *netlink.Route) bool {
	if len(k.MultiPath) > 0 || k.Encap != nil || k.Via != nil {
		return false
	}
	switch r.Type {
	case Unicast:
		if k.Type != unix.RTN_UNICAST {
			return false
		}
		if r.Dev != "" && k.LinkIndex != linkIndex {
			return false
		}
	default:
		// The kernel reports IPv6 blackholes on lo and IPv4 ones on no device.
		if k.Type != r.Type.kernel() {
			return false
		}
	}
	if !ipEqual(r.Gateway, k.Gw) || !ipEqual(r.Src, k.Src) {
		return false
	}
	if r.OnLink != (k.Flags&int(netlink.FLAG_ONLINK) != 0) {
		return false
	}
	if r.Dst.Addr().Is4() && k.Scope != r.Scope.netlink() {
		return false
	}
	return true
}

func ipEqual(a netip.Addr, b net.IP) bool {
	if !a.IsValid() {
		return len(b) == 0 || b.IsUnspecified()
	}
	bb, ok := netip.AddrFromSlice(b)
	return ok && bb.Unmap() == a
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// kernelDst returns the destination prefix of a kernel route; the default
// route may come without one.
func kernelDst(k *netlink.Route) (netip.Prefix, bool) {
	if k.Dst == nil || k.Dst.IP == nil {
		switch k.Family {
		case netlink.FAMILY_V4:
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
		case netlink.FAMILY_V6:
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
		}
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(k.Dst.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := k.Dst.Mask.Size()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}
