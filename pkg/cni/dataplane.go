package cni

// The workload plumbing, as Calico does it:
//
//	workload netns                      host netns
//	eth0 <ip>/32, <ip6>/128  ─ veth ─  cali<11 hex>  MAC ee:ee:ee:ee:ee:ee
//	169.254.1.1 dev eth0 scope link     <ip>/32 dev cali… scope link
//	default via 169.254.1.1 dev eth0    <ip6>/128 dev cali…
//	default via <cali LL> dev eth0      proxy_arp=1, neigh proxy_delay=0,
//	                                    forwarding=1 (v4); proxy_ndp=1,
//	                                    forwarding=1, accept_dad=0 (v6)
//
// The workload ARPs for 169.254.1.1, an address nobody has: the host
// answers by proxy ARP with the cali MAC, so every packet goes to the host,
// which routes it. The kernel answers a proxy ARP only when it would itself
// route the asked-for address out of a different interface than the one
// the request came in on: the host needs a route to 169.254.1.1 through
// another device (its default route normally is one). For IPv6 the
// workload's gateway is the cali interface's own link-local address, which
// the host answers for without any proxy; forwarding IPv6 needs
// net.ipv6.conf.all.forwarding=1 on the host, a host-wide setting left to
// the operator (or the node agent).

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	// HostVethMAC is the MAC of every host-side workload interface: the
	// workload only ever talks to its gateway, so one fixed MAC is enough
	// and survives the interface being recreated.
	HostVethMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	// GatewayIPv4 is the workload's IPv4 next hop, answered by proxy ARP.
	GatewayIPv4 = net.IPv4(169, 254, 1, 1).To4()
)

// linkLocalWait bounds the wait for the host veth's IPv6 link-local
// address (it appears as soon as both ends are up; DAD is off).
const linkLocalWait = 2 * time.Second

// dataplaneError is a failure of the kernel side.
func dataplaneError(msg string, err error) *types.Error {
	return newError(CodeDataplane, msg, err)
}

// vethPlan is the interface pair of one workload.
type vethPlan struct {
	netns    string // path of the workload's network namespace
	contName string // CNI_IFNAME
	hostName string // cali…
	mtu      int
	addrs    []netip.Addr
}

// vethState is what setup made.
type vethState struct {
	contMAC   net.HardwareAddr
	contIndex int
	hostIndex int
	gw6       net.IP // the host veth's link-local address, when IPv6
}

func (v *vethPlan) has(version int) bool {
	for _, a := range v.addrs {
		if (version == 4) == a.Is4() {
			return true
		}
	}
	return false
}

// precheck runs before anything is allocated: it reports whether the
// container already has our interface (a retried ADD) and refuses an
// interface name that something else took.
func (v *vethPlan) precheck() (reuse bool, err error) {
	netns, err := ns.GetNS(v.netns)
	if err != nil {
		return false, newError(types.ErrInvalidNetNS, fmt.Sprintf("cannot open the container's network namespace %s", v.netns), err)
	}
	defer netns.Close()
	var peerIndex int
	var kind string
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(v.contName)
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			return err
		}
		kind = l.Type()
		if veth, ok := l.(*netlink.Veth); ok {
			peerIndex, _ = netlink.VethPeerIndex(veth)
		}
		if peerIndex == 0 {
			peerIndex = -1
		}
		return nil
	})
	if err != nil {
		return false, dataplaneError(fmt.Sprintf("cannot read the interfaces of %s", v.netns), err)
	}
	if peerIndex == 0 {
		return false, nil // free
	}
	if host, err := netlinksafe.LinkByName(v.hostName); err == nil && host.Attrs().Index == peerIndex {
		return true, nil
	}
	return false, newError(CodeInterfaceExists,
		fmt.Sprintf("the container already has an interface named %q (a %s not made by tortie for this workload); pass another CNI_IFNAME or remove it", v.contName, kind), nil)
}

// setup creates (or, when reuse, completes) the veth pair and configures
// both ends. On error the caller removes the pair with teardownHost.
func (v *vethPlan) setup(reuse bool) (*vethState, error) {
	netns, err := ns.GetNS(v.netns)
	if err != nil {
		return nil, newError(types.ErrInvalidNetNS, fmt.Sprintf("cannot open the container's network namespace %s", v.netns), err)
	}
	defer netns.Close()

	if !reuse {
		// A host veth of this name with no peer in this container is left
		// over: the workload's sandbox was recreated under the same name, or
		// an earlier ADD died. Calico replaces it; so do we.
		if old, err := netlinksafe.LinkByName(v.hostName); err == nil {
			if err := netlink.LinkDel(old); err != nil && !isNotFound(err) {
				return nil, dataplaneError(fmt.Sprintf("cannot remove the stale host interface %s", v.hostName), err)
			}
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: v.hostName, MTU: v.mtu, HardwareAddr: HostVethMAC},
			PeerName:      v.contName,
			PeerMTU:       uint32(v.mtu),
			PeerNamespace: netlink.NsFd(int(netns.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return nil, newError(CodeInterfaceExists,
					fmt.Sprintf("cannot create veth %s/%s: an interface of that name exists (in the container or on the host)", v.hostName, v.contName), err)
			}
			return nil, dataplaneError(fmt.Sprintf("cannot create veth pair %s (host) / %s (container, mtu %d)", v.hostName, v.contName, v.mtu), err)
		}
	}
	host, err := netlinksafe.LinkByName(v.hostName)
	if err != nil {
		return nil, dataplaneError(fmt.Sprintf("host interface %s vanished", v.hostName), err)
	}
	st := &vethState{hostIndex: host.Attrs().Index}

	if err := v.hostSysctls(); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, dataplaneError(fmt.Sprintf("cannot bring up %s", v.hostName), err)
	}

	if err := netns.Do(func(ns.NetNS) error { return v.setupContainer(st, nil) }); err != nil {
		return nil, err
	}

	if v.has(6) {
		gw, err := v.hostLinkLocal(host)
		if err != nil {
			return nil, err
		}
		st.gw6 = gw
		if err := netns.Do(func(ns.NetNS) error { return v.setupContainer(st, gw) }); err != nil {
			return nil, err
		}
	}

	// Host routes last: nothing is sent to the workload before its
	// addresses exist.
	for _, a := range v.addrs {
		r := &netlink.Route{LinkIndex: st.hostIndex, Dst: hostPrefix(a), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return nil, dataplaneError(fmt.Sprintf("cannot add host route %s dev %s", hostPrefix(a), v.hostName), err)
		}
	}
	return st, nil
}

// setupContainer configures the container end; run inside its netns. With
// gw6 nil it does the link, addresses and IPv4 routes; with gw6 the IPv6
// default route.
func (v *vethPlan) setupContainer(st *vethState, gw6 net.IP) error {
	l, err := netlinksafe.LinkByName(v.contName)
	if err != nil {
		return dataplaneError(fmt.Sprintf("container interface %s vanished", v.contName), err)
	}
	if gw6 != nil {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultNet(6), Gw: gw6}
		if err := netlink.RouteReplace(r); err != nil {
			return dataplaneError(fmt.Sprintf("cannot add route default via %s dev %s in the container", gw6, v.contName), err)
		}
		return nil
	}
	st.contMAC, st.contIndex = l.Attrs().HardwareAddr, l.Attrs().Index
	if v.has(6) {
		if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6"); err != nil || strings.TrimSpace(string(b)) == "1" {
			return dataplaneError("the network assigns IPv6 but the container has IPv6 disabled (net.ipv6.conf.all.disable_ipv6=1 or no IPv6 in its kernel); enable it or set assign_ipv6 false", err)
		}
		// No DAD for an address IPAM made unique: usable at once.
		_ = writeSysctl(fmt.Sprintf("net/ipv6/conf/%s/accept_dad", v.contName), "0")
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return dataplaneError(fmt.Sprintf("cannot bring up %s in the container", v.contName), err)
	}
	for _, a := range v.addrs {
		addr := &netlink.Addr{IPNet: hostPrefix(a)}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(l, addr); err != nil {
			return dataplaneError(fmt.Sprintf("cannot add address %s to %s in the container", addr.IPNet, v.contName), err)
		}
	}
	if v.has(4) {
		gw := &net.IPNet{IP: GatewayIPv4, Mask: net.CIDRMask(32, 32)}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
			return dataplaneError(fmt.Sprintf("cannot add route %s dev %s scope link in the container", GatewayIPv4, v.contName), err)
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultNet(4), Gw: GatewayIPv4}); err != nil {
			return dataplaneError(fmt.Sprintf("cannot add route default via %s dev %s in the container", GatewayIPv4, v.contName), err)
		}
	}
	return nil
}

// hostSysctls sets the per-interface knobs of the host veth.
func (v *vethPlan) hostSysctls() error {
	var set [][2]string
	if v.has(4) {
		set = append(set,
			[2]string{"net/ipv4/conf/" + v.hostName + "/forwarding", "1"},
			[2]string{"net/ipv4/conf/" + v.hostName + "/proxy_arp", "1"},
			[2]string{"net/ipv4/neigh/" + v.hostName + "/proxy_delay", "0"},
		)
	}
	if v.has(6) {
		set = append(set,
			[2]string{"net/ipv6/conf/" + v.hostName + "/disable_ipv6", "0"},
			[2]string{"net/ipv6/conf/" + v.hostName + "/accept_dad", "0"},
			[2]string{"net/ipv6/conf/" + v.hostName + "/proxy_ndp", "1"},
			[2]string{"net/ipv6/conf/" + v.hostName + "/forwarding", "1"},
		)
	}
	for _, kv := range set {
		if err := writeSysctl(kv[0], kv[1]); err != nil {
			return dataplaneError(fmt.Sprintf("cannot set %s=%s on the host", strings.ReplaceAll(kv[0], "/", "."), kv[1]), err)
		}
	}
	return nil
}

// hostLinkLocal waits for the host veth's IPv6 link-local address.
func (v *vethPlan) hostLinkLocal(host netlink.Link) (net.IP, error) {
	deadline := time.Now().Add(linkLocalWait)
	for {
		addrs, err := netlinksafe.AddrList(host, netlink.FAMILY_V6)
		if err != nil {
			return nil, dataplaneError(fmt.Sprintf("cannot list the addresses of %s", v.hostName), err)
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				return a.IP, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, dataplaneError(fmt.Sprintf("%s has no IPv6 link-local address after %s; is IPv6 disabled on the host (net.ipv6.conf.default.disable_ipv6) or addr_gen_mode none?", v.hostName, linkLocalWait), nil)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// teardownHost deletes the host veth (and with it the container end) if it
// exists; used to undo a failed ADD, whose precheck made sure the pair is
// this workload's.
func teardownHost(hostName string) error {
	l, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// teardownContainer deletes the workload's veth from inside its netns: its
// own interface, so never another workload's. A missing netns or interface
// is not an error (DEL must tolerate what is already gone).
func teardownContainer(netnsPath, contName string) error {
	if netnsPath == "" {
		return nil
	}
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(contName)
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			return err
		}
		if _, ok := l.(*netlink.Veth); !ok {
			return nil // not ours to delete
		}
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			return err
		}
		return nil
	})
	var nsErr ns.NSPathNotExistErr
	if errors.As(err, &nsErr) {
		return nil
	}
	return err
}

// checkHost verifies the host side: the veth, its MAC, that it is up, its
// sysctls, and a route per address.
func (v *vethPlan) checkHost() (hostIndex int, err error) {
	l, err := netlinksafe.LinkByName(v.hostName)
	if err != nil {
		return 0, checkError("host interface %s is missing", v.hostName)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return 0, checkError("host interface %s is a %s, not a veth", v.hostName, l.Type())
	}
	if l.Attrs().HardwareAddr.String() != HostVethMAC.String() {
		return 0, checkError("host interface %s has MAC %s, want %s", v.hostName, l.Attrs().HardwareAddr, HostVethMAC)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return 0, checkError("host interface %s is down", v.hostName)
	}
	if v.has(4) {
		for _, s := range []string{"net/ipv4/conf/" + v.hostName + "/proxy_arp", "net/ipv4/conf/" + v.hostName + "/forwarding"} {
			if b, err := os.ReadFile("/proc/sys/" + s); err != nil || strings.TrimSpace(string(b)) != "1" {
				return 0, checkError("%s is not 1 on the host", strings.ReplaceAll(s, "/", "."))
			}
		}
	}
	routes, err := netlinksafe.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return 0, dataplaneError(fmt.Sprintf("cannot list the routes of %s", v.hostName), err)
	}
	for _, a := range v.addrs {
		want := hostPrefix(a).String()
		found := false
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == want && r.Gw == nil {
				found = true
				break
			}
		}
		if !found {
			return 0, checkError("host route %s dev %s is missing", want, v.hostName)
		}
	}
	return l.Attrs().Index, nil
}

// checkContainer verifies the container side; run inside its netns.
func (v *vethPlan) checkContainer(hostIndex int, mac string) error {
	l, err := netlinksafe.LinkByName(v.contName)
	if err != nil {
		return checkError("container interface %s is missing", v.contName)
	}
	veth, ok := l.(*netlink.Veth)
	if !ok {
		return checkError("container interface %s is a %s, not a veth", v.contName, l.Type())
	}
	if peer, err := netlink.VethPeerIndex(veth); err != nil || peer != hostIndex {
		return checkError("container interface %s is not paired with host interface %s", v.contName, v.hostName)
	}
	if mac != "" && !strings.EqualFold(l.Attrs().HardwareAddr.String(), mac) {
		return checkError("container interface %s has MAC %s, the result says %s", v.contName, l.Attrs().HardwareAddr, mac)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return checkError("container interface %s is down", v.contName)
	}
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return dataplaneError(fmt.Sprintf("cannot list the addresses of %s", v.contName), err)
	}
	for _, a := range v.addrs {
		want := hostPrefix(a).String()
		found := false
		for _, have := range addrs {
			if have.IPNet.String() == want {
				found = true
			}
		}
		if !found {
			return checkError("address %s is missing from %s in the container", want, v.contName)
		}
	}
	routes, err := netlinksafe.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return dataplaneError(fmt.Sprintf("cannot list the routes of %s", v.contName), err)
	}
	hasLinkRoute := func(dst string) bool {
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == dst && r.Gw == nil {
				return true
			}
		}
		return false
	}
	if v.has(4) {
		if !hasLinkRoute(GatewayIPv4.String() + "/32") {
			return checkError("route %s dev %s scope link is missing in the container", GatewayIPv4, v.contName)
		}
		found := false
		for _, r := range routes {
			if (r.Dst == nil || isDefault(r.Dst)) && r.Gw != nil && r.Gw.Equal(GatewayIPv4) {
				found = true
			}
		}
		if !found {
			return checkError("route default via %s dev %s is missing in the container", GatewayIPv4, v.contName)
		}
	}
	if v.has(6) {
		found := false
		for _, r := range routes {
			if (r.Dst == nil || isDefault(r.Dst)) && r.Gw != nil && r.Gw.To4() == nil && r.Gw.IsLinkLocalUnicast() {
				found = true
			}
		}
		if !found {
			return checkError("IPv6 default route via the host's link-local address is missing in the container (%s)", v.contName)
		}
	}
	return nil
}

func checkError(format string, args ...any) *types.Error {
	return newError(CodeCheckFailed, fmt.Sprintf(format, args...)+"; the workload's networking has been changed since ADD (recreate the workload, or DEL and ADD it again)", nil)
}

func hostPrefix(a netip.Addr) *net.IPNet {
	bits := 32
	if a.Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, bits)}
}

func defaultNet(version int) *net.IPNet {
	if version == 6 {
		return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, syscall.ESRCH)
}

func writeSysctl(name, value string) error {
	return os.WriteFile("/proc/sys/"+name, []byte(value), 0o644)
}

// resultInterfaces are the result's interfaces: 0 the host veth, 1 the
// container's.
func (v *vethPlan) resultInterfaces(st *vethState) []*current.Interface {
	return []*current.Interface{
		{Name: v.hostName, Mac: HostVethMAC.String()},
		{Name: v.contName, Mac: st.contMAC.String(), Sandbox: v.netns},
	}
}
