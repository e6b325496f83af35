package routes

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Calico's IP-in-IP device. Once the kernel's ipip module is loaded, every
// network namespace has it (the fallback tunnel: remote any, local any),
// and it receives every IP-in-IP packet addressed to the host; routes
// "<block> via <remote host> dev tunl0 onlink" send through it.
const (
	IPIPDeviceName = "tunl0"
	// IPIPOverhead is what encapsulation adds: the outer IPv4 header. The
	// device MTU is the host's minus this.
	IPIPOverhead = 20
)

// ErrNoIPIP means this kernel cannot make IP-in-IP tunnels: the ipip
// module is neither built in nor loadable.
var ErrNoIPIP = errors.New("this host's kernel has no IP-in-IP support (no ipip module)")

// IPIPConfig is the desired IP-in-IP device of this host.
type IPIPConfig struct {
	Name string // IPIPDeviceName
	// MTU of the device; zero leaves the kernel's alone.
	MTU int
	// TunnelAddr is the device's address (Node spec.bgp.ipv4IPIPTunnelAddr),
	// installed as a /32; other IPv4 addresses are removed from the device.
	// Zero leaves the device's addresses alone.
	TunnelAddr netip.Addr
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

func (c *IPIPConfig) validate() error {
	if c.Name == "" || len(c.Name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("ipip: invalid device name %q", c.Name)
	}
	if c.MTU < 0 {
		return fmt.Errorf("ipip %s: negative MTU", c.Name)
	}
	c.TunnelAddr = c.TunnelAddr.Unmap()
	if c.TunnelAddr.IsValid() && !c.TunnelAddr.Is4() {
		return fmt.Errorf("ipip %s: tunnel address %s is not IPv4", c.Name, c.TunnelAddr)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// IPIPSupported reports whether this namespace can have the IP-in-IP
// device: nil when tunl0 exists (as an ipip device) or creating it
// succeeds (the device is then left in place, ready for EnsureIPIP);
// otherwise an error saying why, wrapping ErrNoIPIP when the kernel lacks
// the ipip module.
func IPIPSupported(h *netlink.Handle) error {
	_, _, err := ipipLink(h, IPIPDeviceName)
	return err
}

// ipipLink returns the ipip device name, and whether it had to create it.
func ipipLink(h *netlink.Handle, name string) (netlink.Link, bool, error) {
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	created := false
	if errors.As(err, &notFound) {
		err = h.LinkAdd(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: name}})
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			return nil, false, fmt.Errorf("%w: creating %s: %v", ErrNoIPIP, name, err)
		case err != nil && !errors.Is(err, unix.EEXIST):
			return nil, false, fmt.Errorf("ipip %s: creating: %w", name, err)
		}
		created = err == nil
		link, err = h.LinkByName(name)
	}
	if err != nil {
		return nil, created, fmt.Errorf("ipip %s: %w", name, err)
	}
	if link.Type() != "ipip" {
		return nil, created, fmt.Errorf("ipip %s: the device exists but is of type %s, not ipip", name, link.Type())
	}
	return link, created, nil
}

// EnsureIPIP makes the IP-in-IP device described by cfg (creating it when
// the kernel has not) up, with its MTU and tunnel address. A device that
// already matches is not written to at all. An error wraps ErrNoIPIP when
// the kernel cannot make the device.
func EnsureIPIP(h *netlink.Handle, cfg IPIPConfig) error {
	_, err := ensureIPIP(h, cfg)
	return err
}

// ensureIPIP is EnsureIPIP returning what it changed, for tests.
func ensureIPIP(h *netlink.Handle, cfg IPIPConfig) ([]string, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("dev", cfg.Name)
	var changes []string
	changed := func(what string, args ...any) {
		changes = append(changes, what)
		log.Info("ipip device "+what, args...)
	}
	link, created, err := ipipLink(h, cfg.Name)
	if err != nil {
		return nil, err
	}
	if created {
		changed("created")
	}
	c, err := tuneTunnel(h, link, tunnelAttrs{kind: "ipip", name: cfg.Name, mtu: cfg.MTU, addr: cfg.TunnelAddr}, log)
	return append(changes, c...), err
}
