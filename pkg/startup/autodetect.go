package startup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Autodetection methods, spelled as Calico's IP_AUTODETECTION_METHOD.
const (
	MethodFirstFound    = "first-found"
	MethodInterface     = "interface="
	MethodSkipInterface = "skip-interface="
	MethodCanReach      = "can-reach="
	MethodCIDR          = "cidr="
)

// DefaultExcludedInterfaces are never chosen by first-found and
// skip-interface: container, tunnel and virtual-bridge devices whose
// addresses are not how other hosts reach this one (Calico's list).
var DefaultExcludedInterfaces = []string{
	`^docker.*`, `^cbr.*`, `^dummy.*`, `^virbr.*`, `^lxcbr.*`, `^veth.*`, `^lo$`,
	`^cali.*`, `^tunl.*`, `^flannel.*`, `^kube-ipvs.*`, `^cni.*`,
	`^vxlan.calico.*`, `^vxlan-v6.calico.*`, `^wireguard.cali.*`, `^wg-v6.cali.*`,
	`^nodelocaldns.*`,
}

// Interface is one host interface and its addresses (with their prefix
// lengths), in the order the host lists them.
type Interface struct {
	Name  string
	Up    bool
	Addrs []netip.Prefix
}

// HostInterfaces lists this network namespace's interfaces.
func HostInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []Interface
	for _, i := range ifs {
		addrs, err := i.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", i.Name, err)
		}
		ifc := Interface{Name: i.Name, Up: i.Flags&net.FlagUp != 0}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ones, _ := n.Mask.Size()
			ifc.Addrs = append(ifc.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
		}
		out = append(out, ifc)
	}
	return out, nil
}

// Detector carries what autodetection needs from the host; tests replace
// both functions.
type Detector struct {
	Interfaces func() ([]Interface, error)
	// SourceFor returns the local address the kernel would send from to
	// reach dest (used by can-reach). dest may be a name.
	SourceFor func(ctx context.Context, dest string, v6 bool) (netip.Addr, error)
}

// HostDetector works on this process's network namespace.
func HostDetector() Detector {
	return Detector{Interfaces: HostInterfaces, SourceFor: udpSource}
}

// udpSource connects a UDP socket (which sends nothing) and reads back the
// source address routing chose.
func udpSource(ctx context.Context, dest string, v6 bool) (netip.Addr, error) {
	network := "udp4"
	if v6 {
		network = "udp6"
	}
	host := dest
	if a, err := netip.ParseAddr(strings.Trim(dest, "[]")); err == nil {
		host = a.String()
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, network, net.JoinHostPort(host, "80"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("can-reach=%s: %w", dest, err)
	}
	defer c.Close()
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, err
	}
	return ap.Addr().Unmap(), nil
}

// ErrNoAddress means the method found no usable address.
var ErrNoAddress = errors.New("no address found")

// Detect runs an autodetection method for one family and returns the
// chosen address with its interface's prefix length.
func (d Detector) Detect(ctx context.Context, method string, v6 bool) (netip.Prefix, string, error) {
	ifs, err := d.Interfaces()
	if err != nil {
		return netip.Prefix{}, "", err
	}
	if dest, ok := strings.CutPrefix(method, MethodCanReach); ok {
		if d.SourceFor == nil {
			return netip.Prefix{}, "", errors.New("can-reach: no way to ask the kernel for a route")
		}
		src, err := d.SourceFor(ctx, dest, v6)
		if err != nil {
			return netip.Prefix{}, "", err
		}
		return pickSource(ifs, src, dest)
	}
	return Autodetect(ifs, method, v6)
}

// pickSource finds the interface that holds src, for its prefix length.
func pickSource(ifs []Interface, src netip.Addr, dest string) (netip.Prefix, string, error) {
	for _, i := range ifs {
		for _, a := range i.Addrs {
			if a.Addr() == src {
				return a, i.Name, nil
			}
		}
	}
	return netip.Prefix{}, "", fmt.Errorf("can-reach=%s: source address %s is on no interface: %w", dest, src, ErrNoAddress)
}

// Autodetect chooses an address from ifs by method (every method but
// can-reach, which needs the kernel's routing decision): the first usable
// address of the family on the first eligible interface. Usable means
// global unicast: not loopback, link-local or multicast. It returns the
// address with its prefix length and the interface it is on.
func Autodetect(ifs []Interface, method string, v6 bool) (netip.Prefix, string, error) {
	if method == "" {
		method = MethodFirstFound
	}
	var include, exclude []*regexp.Regexp
	var cidrs []netip.Prefix
	var err error
	switch {
	case method == MethodFirstFound:
		exclude, err = compileAll(DefaultExcludedInterfaces)
	case strings.HasPrefix(method, MethodInterface):
		include, err = compileList(strings.TrimPrefix(method, MethodInterface))
	case strings.HasPrefix(method, MethodSkipInterface):
		exclude, err = compileList(strings.TrimPrefix(method, MethodSkipInterface))
		if err == nil {
			var def []*regexp.Regexp
			def, err = compileAll(DefaultExcludedInterfaces)
			exclude = append(exclude, def...)
		}
	case strings.HasPrefix(method, MethodCIDR):
		for _, s := range strings.Split(strings.TrimPrefix(method, MethodCIDR), ",") {
			p, perr := netip.ParsePrefix(strings.TrimSpace(s))
			if perr != nil {
				return netip.Prefix{}, "", fmt.Errorf("autodetection method %q: %w", method, perr)
			}
			cidrs = append(cidrs, p.Masked())
		}
		exclude, err = compileAll(DefaultExcludedInterfaces)
	case strings.HasPrefix(method, MethodCanReach):
		return netip.Prefix{}, "", fmt.Errorf("autodetection method %q needs the kernel: use Detector.Detect", method)
	default:
		return netip.Prefix{}, "", fmt.Errorf("unknown autodetection method %q (want first-found, interface=, skip-interface=, can-reach= or cidr=)", method)
	}
	if err != nil {
		return netip.Prefix{}, "", fmt.Errorf("autodetection method %q: %w", method, err)
	}

	for _, i := range ifs {
		if include != nil && !matchAny(include, i.Name) {
			continue
		}
		if matchAny(exclude, i.Name) {
			continue
		}
		for _, a := range i.Addrs {
			ip := a.Addr()
			if ip.Is6() != v6 || !ip.IsGlobalUnicast() {
				continue
			}
			if cidrs != nil && !containedIn(cidrs, ip) {
				continue
			}
			return a, i.Name, nil
		}
	}
	fam := "IPv4"
	if v6 {
		fam = "IPv6"
	}
	return netip.Prefix{}, "", fmt.Errorf("autodetection method %q: %s: %w", method, fam, ErrNoAddress)
}

func compileList(s string) ([]*regexp.Regexp, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty interface list")
	}
	return compileAll(strings.Split(s, ","))
}

func compileAll(exprs []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(exprs))
	for _, e := range exprs {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		re, err := regexp.Compile(e)
		if err != nil {
			return nil, err
		}
		out = append(out, re)
	}
	return out, nil
}

func matchAny(res []*regexp.Regexp, name string) bool {
	for _, re := range res {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

func containedIn(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
