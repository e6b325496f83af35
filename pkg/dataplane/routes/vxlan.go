package routes

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Calico's VXLAN defaults; a Calico cluster's tunnels interoperate with these.
const (
	VXLANDeviceName = "vxlan.calico"
	VXLANVNI        = 4096
	VXLANPort       = 4789
	// VXLANOverhead is what encapsulation adds to an IPv4 packet (outer IPv4
	// 20, UDP 8, VXLAN 8, inner Ethernet 14): the device MTU is the parent's
	// minus this.
	VXLANOverhead = 50
	// VXLANOverheadV6 is the same over an IPv6 underlay (outer header 40).
	VXLANOverheadV6 = 70
)

// ErrDeviceNotFound means a device the caller named does not exist (yet).
var ErrDeviceNotFound = errors.New("device not found")

// VXLANConfig is the desired VXLAN tunnel device of this host.
type VXLANConfig struct {
	Name string // VXLANDeviceName
	VNI  int    // VXLANVNI
	Port int    // VXLANPort; UDP destination port of the tunnel
	// MTU of the device; zero leaves the kernel's choice (the parent's MTU
	// minus VXLANOverhead) alone.
	MTU int
	// ParentAddr is this host's address on the underlay; the device sends
	// from it and is bound to the interface that has it.
	ParentAddr netip.Addr
	// MAC of the device (Node vxlanTunnelMACAddr); nil leaves the kernel's
	// random one. Other hosts' FDB entries point at it, so it must be stable:
	// see netutil.RandomMAC.
	MAC net.HardwareAddr
	// TunnelAddr is the address of the device (Node ipv4VXLANTunnelAddr),
	// installed as a /32 (/128); other addresses of its family are removed
	// from the device. Zero leaves the device's addresses alone.
	TunnelAddr netip.Addr
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

func (c *VXLANConfig) validate() error {
	if c.Name == "" || len(c.Name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("vxlan: invalid device name %q", c.Name)
	}
	if c.VNI < 1 || c.VNI > 1<<24-1 {
		return fmt.Errorf("vxlan %s: VNI %d out of range", c.Name, c.VNI)
	}
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("vxlan %s: port %d out of range", c.Name, c.Port)
	}
	if c.MTU < 0 {
		return fmt.Errorf("vxlan %s: negative MTU", c.Name)
	}
	if !c.ParentAddr.IsValid() {
		return fmt.Errorf("vxlan %s: no parent address", c.Name)
	}
	c.ParentAddr = c.ParentAddr.Unmap()
	c.TunnelAddr = c.TunnelAddr.Unmap()
	if c.MAC != nil && !validUnicastMAC(c.MAC) {
		return fmt.Errorf("vxlan %s: MAC %s is not a unicast Ethernet address", c.Name, c.MAC)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func validUnicastMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && !bytes.Equal(mac, make([]byte, 6))
}

// EnsureVXLAN creates the VXLAN device described by cfg, or brings an existing
// one in line. Attributes the kernel can change on a live device (MTU, MAC,
// up, addresses) are changed in place; only when an immutable one differs
// (VNI, port, parent, source, learning) is the device deleted and created
// again. A device that already matches is not written to at all.
func EnsureVXLAN(h *netlink.Handle, cfg VXLANConfig) error {
	_, err := ensureVXLAN(h, cfg)
	return err
}

// ensureVXLAN is EnsureVXLAN returning what it changed, for tests.
func ensureVXLAN(h *netlink.Handle, cfg VXLANConfig) ([]string, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("dev", cfg.Name)
	var changes []string
	changed := func(what string, args ...any) {
		changes = append(changes, what)
		log.Info("vxlan device "+what, args...)
	}

	parent, err := LinkWithAddr(h, cfg.ParentAddr)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: %w", cfg.Name, err)
	}
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: cfg.Name, MTU: cfg.MTU, HardwareAddr: cfg.MAC},
		VxlanId:      cfg.VNI,
		VtepDevIndex: parent.Attrs().Index,
		SrcAddr:      net.IP(cfg.ParentAddr.AsSlice()),
		Port:         cfg.Port,
		Learning:     false,
	}

	link, err := FindLink(h, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("vxlan %s: %w", cfg.Name, err)
	}
	if link != nil {
		if reason := vxlanMismatch(want, link); reason != "" {
			log.Warn("vxlan device does not match and cannot be changed in place; re-creating it", "reason", reason)
			if err := h.LinkDel(link); err != nil {
				return changes, fmt.Errorf("vxlan %s: deleting: %w", cfg.Name, err)
			}
			changes = append(changes, "deleted: "+reason)
			link = nil
		}
	}
	if link == nil {
		if err := h.LinkAdd(want); err != nil {
			return changes, fmt.Errorf("vxlan %s: creating: %w", cfg.Name, err)
		}
		changed("created", "vni", cfg.VNI, "port", cfg.Port, "parent", parent.Attrs().Name, "src", cfg.ParentAddr)
		if link, err = h.LinkByName(cfg.Name); err != nil {
			return changes, fmt.Errorf("vxlan %s: %w", cfg.Name, err)
		}
	}

	c, err := tuneTunnel(h, link, tunnelAttrs{kind: "vxlan", name: cfg.Name, mtu: cfg.MTU, mac: cfg.MAC, addr: cfg.TunnelAddr}, log)
	return append(changes, c...), err
}

// vxlanMismatch says which attribute that cannot change on a live device
// differs, or "" if none does.
func vxlanMismatch(want *netlink.Vxlan, link netlink.Link) string {
	got, ok := link.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("device is of type %s, not vxlan", link.Type())
	}
	var diffs []string
	if got.VxlanId != want.VxlanId {
		diffs = append(diffs, fmt.Sprintf("VNI %d, want %d", got.VxlanId, want.VxlanId))
	}
	if got.Port != want.Port {
		diffs = append(diffs, fmt.Sprintf("port %d, want %d", got.Port, want.Port))
	}
	if got.VtepDevIndex != want.VtepDevIndex {
		diffs = append(diffs, fmt.Sprintf("parent ifindex %d, want %d", got.VtepDevIndex, want.VtepDevIndex))
	}
	if !got.SrcAddr.Equal(want.SrcAddr) {
		diffs = append(diffs, fmt.Sprintf("source %v, want %v", got.SrcAddr, want.SrcAddr))
	}
	if got.Learning != want.Learning {
		diffs = append(diffs, fmt.Sprintf("learning %v, want %v", got.Learning, want.Learning))
	}
	if len(got.Group) > 0 && !got.Group.IsUnspecified() {
		diffs = append(diffs, fmt.Sprintf("remote/group %v, want none", got.Group))
	}
	if got.FlowBased {
		diffs = append(diffs, "external (flow-based), want not")
	}
	return strings.Join(diffs, "; ")
}

// LinkWithAddr finds the interface that has addr, with one dump of the
// addresses of its family.
func LinkWithAddr(h *netlink.Handle, addr netip.Addr) (netlink.Link, error) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, family) })
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if ipEqual(addr, a.IP) {
			return h.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface has the parent address %s: %w", addr, ErrDeviceNotFound)
}

// ensureTunnelAddr makes addr/32 (/128) the only address of its family on
// link, apart from IPv6 link-local ones the kernel manages.
func ensureTunnelAddr(h *netlink.Handle, link netlink.Link, addr netip.Addr, log *slog.Logger) ([]string, error) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	want := netip.PrefixFrom(addr, addr.BitLen())
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(link, family) })
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	var changes []string
	have := false
	for _, a := range addrs {
		p, ok := ipNetPrefix(a.IPNet)
		switch {
		case ok && p == want:
			have = true
		case ok && p.Addr().IsLinkLocalUnicast() && p.Addr().Is6():
		default:
			if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return changes, fmt.Errorf("removing address %s: %w", a.IPNet, err)
			}
			changes = append(changes, "address removed "+a.IPNet.String())
			log.Info("removed stray address from tunnel device", "addr", a.IPNet.String())
		}
	}
	if !have {
		a := &netlink.Addr{IPNet: prefixToIPNet(want)}
		if addr.Is6() {
			// IPAM made the address unique, and DAD cannot work over a
			// tunnel without multicast anyway: it would only hold the
			// address tentative (unusable) for a second.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return changes, fmt.Errorf("adding address %s: %w", want, err)
		}
		changes = append(changes, "address added "+want.String())
		log.Info("added tunnel address to tunnel device", "addr", want.String())
	}
	return changes, nil
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// VTEP is another host's tunnel endpoint.
type VTEP struct {
	NodeName   string
	TunnelAddr netip.Addr       // the remote device's address (routes use it as gateway)
	MAC        net.HardwareAddr // the remote device's MAC
	ParentAddr netip.Addr       // the remote host's underlay address
}

// VXLAN keeps the static forwarding entries of one VXLAN device equal to a set
// of remote VTEPs: for each, a permanent neighbour entry TunnelAddr → MAC (so
// that no ARP or ND is ever sent into the tunnel) and an FDB entry MAC →
// ParentAddr (so that the kernel knows where to send the encapsulated frame).
// The device is tortie's, so entries on it that no VTEP asks for are removed.
// Safe for concurrent use; Apply calls are serialised.
type VXLAN struct {
	h    *netlink.Handle
	dev  string
	log  *slog.Logger
	mu   sync.Mutex
	want []VTEP
	set  bool // SetVTEPs has been called

	applyMu sync.Mutex
	stats   Stats
}

// NewVXLAN returns a reconciler for the neighbours of device (usually
// VXLANDeviceName), working through h. Until the first SetVTEPs, Apply does
// nothing, so that a restart keeps the tunnels up until the agent knows its
// peers.
func NewVXLAN(h *netlink.Handle, device string, logger *slog.Logger) *VXLAN {
	if logger == nil {
		logger = slog.Default()
	}
	return &VXLAN{h: h, dev: device, log: logger.With("dev", device)}
}

// SetVTEPs replaces the desired remote VTEPs; this host's own must not be
// among them. No I/O; Apply programs them.
func (v *VXLAN) SetVTEPs(vteps []VTEP) {
	c := slices.Clone(vteps)
	v.mu.Lock()
	v.want, v.set = c, true
	v.mu.Unlock()
}

// Stats returns what the last Apply did, counting neighbour and FDB entries.
func (v *VXLAN) Stats() Stats {
	v.applyMu.Lock()
	defer v.applyMu.Unlock()
	return v.stats
}

type fdbKey struct {
	mac  [6]byte
	dest netip.Addr
}

// Apply programs the FDB and neighbour entries, repairing entries changed or
// deleted by hand. If the device does not exist the error wraps
// ErrDeviceNotFound. Invalid or conflicting VTEPs are reported in the error
// and skipped; the others are still programmed.
func (v *VXLAN) Apply() error {
	v.applyMu.Lock()
	defer v.applyMu.Unlock()
	v.mu.Lock()
	vteps, set := v.want, v.set
	v.mu.Unlock()

	v.stats = Stats{}
	st := &v.stats
	var errs []error
	if !set {
		v.log.Debug("no VTEPs set yet; not touching the kernel")
		return nil
	}

	link, err := v.h.LinkByName(v.dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("vxlan %s: %w", v.dev, ErrDeviceNotFound)
		}
		return fmt.Errorf("vxlan %s: %w", v.dev, err)
	}
	idx := link.Attrs().Index

	// Desired entries. Sorted by node name so that a conflict is always
	// resolved the same way: the first node keeps the address or MAC.
	vteps = slices.Clone(vteps)
	slices.SortFunc(vteps, func(a, b VTEP) int { return strings.Compare(a.NodeName, b.NodeName) })
	neigh := map[netip.Addr][6]byte{}
	fdb := map[[6]byte]netip.Addr{}
	owner := map[string]string{}
	for _, t := range vteps {
		t.TunnelAddr, t.ParentAddr = t.TunnelAddr.Unmap(), t.ParentAddr.Unmap()
		if !t.TunnelAddr.IsValid() || !t.ParentAddr.IsValid() || !validUnicastMAC(t.MAC) {
			st.Failed++
			errs = append(errs, fmt.Errorf("vxlan %s: VTEP of node %q is incomplete (tunnel %v, MAC %v, parent %v)", v.dev, t.NodeName, t.TunnelAddr, t.MAC, t.ParentAddr))
			continue
		}
		mac := [6]byte(t.MAC)
		if n, dup := owner["ip/"+t.TunnelAddr.String()]; dup {
			st.Failed++
			errs = append(errs, fmt.Errorf("vxlan %s: node %q has tunnel address %s of node %q; ignored", v.dev, t.NodeName, t.TunnelAddr, n))
			continue
		}
		if n, dup := owner["mac/"+t.MAC.String()]; dup {
			st.Failed++
			errs = append(errs, fmt.Errorf("vxlan %s: node %q has MAC %s of node %q; ignored", v.dev, t.NodeName, t.MAC, n))
			continue
		}
		owner["ip/"+t.TunnelAddr.String()] = t.NodeName
		owner["mac/"+t.MAC.String()] = t.NodeName
		neigh[t.TunnelAddr] = mac
		fdb[mac] = t.ParentAddr
	}

	// FDB first, so that by the time a neighbour entry makes traffic flow
	// the frame has somewhere to go.
	fdbHave, err := retryDump(func() ([]netlink.Neigh, error) { return v.h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("vxlan %s: listing FDB: %w", v.dev, err)
	}
	seen := map[fdbKey]bool{}
	for _, e := range fdbHave {
		if len(e.HardwareAddr) != 6 {
			continue
		}
		mac := [6]byte(e.HardwareAddr)
		dest, _ := netip.AddrFromSlice(e.IP)
		dest = dest.Unmap()
		if want, ok := fdb[mac]; ok && want == dest && e.State&unix.NUD_PERMANENT != 0 && !seen[fdbKey{mac, dest}] {
			seen[fdbKey{mac, dest}] = true
			st.Unchanged++
			continue
		}
		e := e
		if err := v.h.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("vxlan %s: deleting FDB entry %s dst %s: %w", v.dev, e.HardwareAddr, e.IP, err))
			continue
		}
		st.Deleted++
		v.log.Debug("deleted FDB entry", "mac", e.HardwareAddr.String(), "dst", e.IP.String())
	}
	for mac, dest := range fdb {
		if seen[fdbKey{mac, dest}] {
			continue
		}
		e := &netlink.Neigh{
			LinkIndex:    idx,
			Family:       unix.AF_BRIDGE,
			State:        netlink.NUD_PERMANENT,
			Flags:        netlink.NTF_SELF,
			IP:           net.IP(dest.AsSlice()),
			HardwareAddr: net.HardwareAddr(mac[:]),
		}
		if err := v.h.NeighSet(e); err != nil {
			st.Failed++
			errs = append(errs, fmt.Errorf("vxlan %s: FDB entry %s dst %s: %w", v.dev, e.HardwareAddr, dest, err))
			continue
		}
		st.Added++
		v.log.Debug("set FDB entry", "mac", e.HardwareAddr.String(), "dst", dest.String())
	}

	// Neighbour entries, for each family in use or present.
	done := map[netip.Addr]bool{}
	stale := map[netip.Addr]bool{}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		have, err := retryDump(func() ([]netlink.Neigh, error) { return v.h.NeighList(idx, family) })
		if err != nil {
			return fmt.Errorf("vxlan %s: listing neighbours: %w", v.dev, err)
		}
		for _, e := range have {
			ip, ok := netip.AddrFromSlice(e.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			mac, want := neigh[ip]
			switch {
			case want && e.State&unix.NUD_PERMANENT != 0 && bytes.Equal(e.HardwareAddr, mac[:]):
				done[ip] = true
				st.Unchanged++
			case want:
				// Wrong MAC or not permanent: NeighSet below replaces it.
				stale[ip] = true
			case e.State&unix.NUD_PERMANENT != 0:
				// A static entry nobody wants: a VTEP that went away.
				e := e
				if err := v.h.NeighDel(&e); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("vxlan %s: deleting neighbour %s: %w", v.dev, ip, err))
					continue
				}
				st.Deleted++
				v.log.Debug("deleted neighbour", "ip", ip.String(), "mac", e.HardwareAddr.String())
			}
		}
	}
	for ip, mac := range neigh {
		if done[ip] {
			continue
		}
		family := netlink.FAMILY_V4
		if ip.Is6() {
			family = netlink.FAMILY_V6
		}
		e := &netlink.Neigh{
			LinkIndex:    idx,
			Family:       family,
			State:        netlink.NUD_PERMANENT,
			IP:           net.IP(ip.AsSlice()),
			HardwareAddr: net.HardwareAddr(mac[:]),
		}
		if err := v.h.NeighSet(e); err != nil {
			st.Failed++
			errs = append(errs, fmt.Errorf("vxlan %s: neighbour %s lladdr %s: %w", v.dev, ip, e.HardwareAddr, err))
			continue
		}
		if stale[ip] {
			st.Replaced++
		} else {
			st.Added++
		}
		v.log.Debug("set neighbour", "ip", ip.String(), "mac", e.HardwareAddr.String())
	}

	for _, err := range errs {
		v.log.Warn("vxlan entry not programmed", "err", err)
	}
	if st.Changes() > 0 {
		v.log.Info("vxlan entries applied", "added", st.Added, "replaced", st.Replaced, "deleted", st.Deleted,
			"unchanged", st.Unchanged, "failed", st.Failed)
	}
	return errors.Join(errs...)
}
