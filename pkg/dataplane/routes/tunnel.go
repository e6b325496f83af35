package routes

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// tunnelAttrs are what a tunnel device (VXLAN, IP-in-IP) has in common and
// can change while it is live.
type tunnelAttrs struct {
	kind string // "vxlan", "ipip": for logs and errors
	name string
	mtu  int              // 0: left alone
	mac  net.HardwareAddr // nil: left alone
	addr netip.Addr       // invalid: left alone
}

// FindLink returns the device named name, or nil and no error when there is
// none.
func FindLink(h *netlink.Handle, name string) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	return link, err
}

// TuneDevice brings a live device that another driver created (WireGuard's)
// to MTU mtu (0: left alone), up, and the single address addr of its family
// (invalid: left alone), as the tunnel devices here are tuned. kind names the
// device in logs and errors. It says what it changed.
func TuneDevice(h *netlink.Handle, link netlink.Link, kind string, mtu int, addr netip.Addr, log *slog.Logger) ([]string, error) {
	return tuneTunnel(h, link, tunnelAttrs{kind: kind, name: link.Attrs().Name, mtu: mtu, addr: addr}, log)
}

// tuneTunnel brings a live tunnel device's MTU, MAC, state and address to
// want, writing only what differs, and says what it changed.
func tuneTunnel(h *netlink.Handle, link netlink.Link, want tunnelAttrs, log *slog.Logger) ([]string, error) {
	var changes []string
	changed := func(what string, args ...any) {
		changes = append(changes, what)
		log.Info(want.kind+" device "+what, args...)
	}
	a := link.Attrs()
	if want.mtu != 0 && a.MTU != want.mtu {
		if err := h.LinkSetMTU(link, want.mtu); err != nil {
			return changes, fmt.Errorf("%s %s: setting MTU %d: %w", want.kind, want.name, want.mtu, err)
		}
		changed("MTU set", "mtu", want.mtu, "was", a.MTU)
	}
	if want.mac != nil && !bytes.Equal(a.HardwareAddr, want.mac) {
		if err := h.LinkSetHardwareAddr(link, want.mac); err != nil {
			return changes, fmt.Errorf("%s %s: setting MAC %s: %w", want.kind, want.name, want.mac, err)
		}
		changed("MAC set", "mac", want.mac.String(), "was", a.HardwareAddr.String())
	}
	if a.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return changes, fmt.Errorf("%s %s: setting up: %w", want.kind, want.name, err)
		}
		changed("set up")
	}
	if want.addr.IsValid() {
		c, err := ensureTunnelAddr(h, link, want.addr, log)
		changes = append(changes, c...)
		if err != nil {
			return changes, fmt.Errorf("%s %s: %w", want.kind, want.name, err)
		}
	}
	return changes, nil
}
