package wireguard

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tortie/tortie/pkg/dataplane/routes"
	"github.com/tortie/tortie/pkg/mtu"
)

// Calico's defaults; a Calico cluster's WireGuard peers interoperate with
// these.
const (
	DeviceName  = "wireguard.cali"
	DefaultPort = 51820
	// Overhead is what WireGuard adds to an IPv4 packet (outer IPv4 20, UDP
	// 8, WireGuard header 16, authentication tag 16): the device MTU is the
	// underlay's minus this. Over an IPv6 underlay it is 20 more.
	Overhead = 60
	// DefaultMTU is the device MTU when the caller gives none: WireGuard's
	// own default, right for an underlay of 1500 over IPv6 or IPv4.
	DefaultMTU = 1420
)

// Mode says which WireGuard implementation carries the device.
type Mode string

const (
	// ModeAuto uses the kernel's WireGuard where the kernel has it, and the
	// userspace implementation inside this process where it has not.
	ModeAuto Mode = ""
	// ModeKernel requires the kernel's.
	ModeKernel Mode = "kernel"
	// ModeUserspace uses the userspace implementation even where the kernel
	// has WireGuard.
	ModeUserspace Mode = "userspace"
)

// Config is the desired WireGuard device of this host.
type Config struct {
	Name       string // DeviceName
	ListenPort int    // DefaultPort
	// FirewallMark is put on the device's own (encrypted) packets, so that
	// routing rules can keep them out of the device; 0 is none.
	FirewallMark int
	MTU          int // 0: DefaultMTU
	PrivateKey   wgtypes.Key
	// Addr is the device's address (Node wireguard.interfaceIPv4Address),
	// installed as a /32 (/128); invalid leaves the addresses alone.
	Addr netip.Addr
	Mode Mode
	// NetnsPath is the network namespace the device is made and configured
	// in; "" is the calling process's. The netlink handle given to Ensure
	// must be opened in the same one.
	NetnsPath string
	Logger    *slog.Logger // nil: slog.Default()
}

func (c *Config) validate() error {
	if c.Name == "" || len(c.Name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("wireguard: invalid device name %q", c.Name)
	}
	if c.ListenPort < 1 || c.ListenPort > 65535 {
		return fmt.Errorf("wireguard %s: listening port %d out of range", c.Name, c.ListenPort)
	}
	if c.FirewallMark < 0 {
		return fmt.Errorf("wireguard %s: negative firewall mark", c.Name)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < mtu.Min || c.MTU > mtu.Max {
		return fmt.Errorf("wireguard %s: MTU %d out of range", c.Name, c.MTU)
	}
	if c.PrivateKey == (wgtypes.Key{}) {
		return fmt.Errorf("wireguard %s: no private key", c.Name)
	}
	switch c.Mode {
	case ModeAuto, ModeKernel, ModeUserspace:
	default:
		return fmt.Errorf("wireguard %s: mode %q is not kernel, userspace or empty", c.Name, c.Mode)
	}
	c.Addr = c.Addr.Unmap()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Device is this host's WireGuard device, kernel or userspace. Both are
// configured with a wgtypes.Config and report a wgtypes.Device; only how
// those reach the device differs. Its methods may be called from any
// goroutine.
type Device struct {
	h   *netlink.Handle
	log *slog.Logger

	mu   sync.Mutex
	cfg  Config
	kind wgtypes.DeviceType
	wg   *wgctrl.Client // kernel device
	user *device.Device // userspace device, owned by this process
}

// Ensure makes the device cfg describes, or takes over a kernel device of
// that name left by an earlier run, and brings its key, port, mark, MTU,
// state and address to cfg. Peers are not touched: see SetPeers.
//
// A userspace device runs as long as this process (or until Close); its
// interface outlives it (see Close).
func Ensure(h *netlink.Handle, cfg Config) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &Device{h: h, cfg: cfg, log: cfg.Logger.With("dev", cfg.Name)}
	link, err := routes.FindLink(h, cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("wireguard %s: %w", cfg.Name, err)
	}
	kernel := false
	switch {
	case link == nil:
	case link.Type() == "wireguard" && cfg.Mode != ModeUserspace:
		kernel = true // an earlier run's: taken over with its peers
	case isTUN(link) && cfg.Mode != ModeKernel:
		// An earlier run's userspace device, kept (persistent) so that
		// traffic for it was dropped, not sent in clear, while no process
		// ran it: attached to below.
	default:
		d.log.Warn("a device of this name is in the way; deleting it", "type", link.Type())
		if err := h.LinkDel(link); err != nil {
			return nil, fmt.Errorf("wireguard %s: deleting the %s device in the way: %w", cfg.Name, link.Type(), err)
		}
		link = nil
	}
	if link == nil && cfg.Mode != ModeUserspace {
		err := h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: cfg.Name, MTU: cfg.MTU}})
		switch {
		case err == nil:
			d.log.Info("kernel wireguard device created")
			kernel = true
		case cfg.Mode == ModeAuto && errors.Is(err, unix.EOPNOTSUPP):
			d.log.Info("the kernel has no WireGuard; using the userspace implementation in this process")
		default:
			return nil, fmt.Errorf("wireguard %s: creating the kernel device: %w", cfg.Name, err)
		}
	}

	if kernel {
		if link, err = h.LinkByName(cfg.Name); err != nil {
			return nil, fmt.Errorf("wireguard %s: %w", cfg.Name, err)
		}
		d.kind = wgtypes.LinuxKernel
		if err := d.inNS(func() error {
			var err error
			d.wg, err = wgctrl.New()
			return err
		}); err != nil {
			return nil, fmt.Errorf("wireguard %s: opening the kernel's WireGuard interface: %w", cfg.Name, err)
		}
	} else {
		d.kind = wgtypes.Userspace
		if err := d.startUserspace(); err != nil {
			return nil, err
		}
		if link, err = h.LinkByName(cfg.Name); err != nil {
			d.Close()
			return nil, fmt.Errorf("wireguard %s: %w", cfg.Name, err)
		}
	}

	if err := d.configureDevice(); err != nil {
		d.Close()
		return nil, err
	}
	if _, err := routes.TuneDevice(h, link, "wireguard", cfg.MTU, cfg.Addr, d.log); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// startUserspace makes the TUN interface and the userspace device behind it,
// and brings the device up, in the configured namespace: its UDP sockets
// are opened there, by the thread that brings it up.
func (d *Device) startUserspace() error {
	logger := &device.Logger{
		Verbosef: func(f string, a ...any) { d.log.Debug(fmt.Sprintf(f, a...)) },
		Errorf:   func(f string, a ...any) { d.log.Warn(fmt.Sprintf(f, a...)) },
	}
	return d.inNS(func() error {
		f, err := openTUN(d.cfg.Name)
		if err != nil {
			return fmt.Errorf("wireguard %s: the TUN interface for the userspace device: %w", d.cfg.Name, err)
		}
		t, err := tun.CreateTUNFromFile(f, d.cfg.MTU)
		if err != nil {
			f.Close()
			return fmt.Errorf("wireguard %s: the TUN interface for the userspace device: %w", d.cfg.Name, err)
		}
		d.user = device.NewDevice(newNSTUN(t, d.inNS), conn.NewDefaultBind(), logger) // owns t from here
		if err := d.user.IpcSet(encodeConfig(d.deviceConfig())); err != nil {
			d.user.Close()
			d.user = nil
			return fmt.Errorf("wireguard %s: configuring the userspace device: %w", d.cfg.Name, err)
		}
		if err := d.user.Up(); err != nil {
			d.user.Close()
			d.user = nil
			return fmt.Errorf("wireguard %s: bringing the userspace device up: %w", d.cfg.Name, err)
		}
		d.log.Info("userspace wireguard device started", "port", d.cfg.ListenPort)
		return nil
	})
}

func isTUN(link netlink.Link) bool {
	t, ok := link.(*netlink.Tuntap)
	return ok && t.Mode == netlink.TUNTAP_MODE_TUN
}

// openTUN opens the TUN interface name, creating it if it does not exist,
// with the flags WireGuard's userspace implementation uses, and makes it
// persistent: when this process ends the interface and the routes through
// it stay, and what they carry is dropped until a process attaches again.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			err = fmt.Errorf("attaching (TUNSETIFF): %w", err)
		}
	}
	if err == nil {
		if err = unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
			err = fmt.Errorf("making it persistent: %w", err)
		}
	}
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

func (d *Device) inNS(f func() error) error {
	if d.cfg.NetnsPath == "" {
		return f()
	}
	return ns.WithNetNSPath(d.cfg.NetnsPath, func(ns.NetNS) error { return f() })
}

// deviceConfig is the device-wide part of cfg.
func (d *Device) deviceConfig() wgtypes.Config {
	key, port, mark := d.cfg.PrivateKey, d.cfg.ListenPort, d.cfg.FirewallMark
	return wgtypes.Config{PrivateKey: &key, ListenPort: &port, FirewallMark: &mark}
}

// configureDevice writes the device-wide settings that differ from cfg.
func (d *Device) configureDevice() error {
	cur, err := d.device()
	if err != nil {
		return err
	}
	want := d.deviceConfig()
	var c wgtypes.Config
	if cur.PrivateKey != *want.PrivateKey {
		c.PrivateKey = want.PrivateKey
	}
	if cur.ListenPort != *want.ListenPort {
		c.ListenPort = want.ListenPort
	}
	if cur.FirewallMark != *want.FirewallMark {
		c.FirewallMark = want.FirewallMark
	}
	if c.PrivateKey == nil && c.ListenPort == nil && c.FirewallMark == nil {
		return nil
	}
	if err := d.configure(c); err != nil {
		return err
	}
	d.log.Info("wireguard device configured", "publicKey", d.cfg.PrivateKey.PublicKey().String(),
		"port", d.cfg.ListenPort, "fwmark", d.cfg.FirewallMark, "keyChanged", c.PrivateKey != nil)
	return nil
}

// Update brings a device made by Ensure to cfg: a new key (rotation), port,
// mark, MTU or address, each written only if it differs. The name, mode and
// namespace cannot change; Close the device and Ensure a new one for that.
func (d *Device) Update(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if cfg.Name != d.cfg.Name || cfg.Mode != d.cfg.Mode || cfg.NetnsPath != d.cfg.NetnsPath {
		return fmt.Errorf("wireguard %s: name, mode and namespace are fixed for a device's life", d.cfg.Name)
	}
	d.cfg = cfg
	if err := d.configureDevice(); err != nil {
		return err
	}
	link, err := d.h.LinkByName(cfg.Name)
	if err != nil {
		return fmt.Errorf("wireguard %s: %w", cfg.Name, err)
	}
	_, err = routes.TuneDevice(d.h, link, "wireguard", cfg.MTU, cfg.Addr, d.log)
	return err
}

// SetPeers makes the device's peers exactly peers, writing only what
// differs: a peer that already matches keeps its session. It says how many
// peers it added, changed or removed.
func (d *Device) SetPeers(peers []Peer) (int, error) {
	if err := validatePeers(peers); err != nil {
		return 0, fmt.Errorf("wireguard %s: %w", d.cfg.Name, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, err := d.device()
	if err != nil {
		return 0, err
	}
	changes := peerChanges(cur.Peers, peers)
	if len(changes) == 0 {
		return 0, nil
	}
	if err := d.configure(wgtypes.Config{Peers: changes}); err != nil {
		return 0, err
	}
	if d.user != nil {
		d.handshake(changes)
	}
	d.log.Info("wireguard peers updated", "changed", len(changes), "peers", len(peers))
	return len(changes), nil
}

// handshakeDelay is how long the side with the greater public key waits
// for the other to make the handshake with a new peer before making it.
const handshakeDelay = time.Second

// handshake makes a session with each new or changed peer now, rather than
// when traffic first needs one. A userspace device starts without sessions,
// while its peers may still hold one with its previous run: they would send
// on it, and be dropped, until their own timers make a new handshake (15 s
// or more). But two peers that both initiate at once spoil each other's
// handshake, and neither can send until a retry 5 s later. So the side with
// the smaller public key initiates at once, and the other only if no
// handshake has happened after handshakeDelay (the other side has an old
// session, and so does not see a change).
func (d *Device) handshake(changes []wgtypes.PeerConfig) {
	own := d.cfg.PrivateKey.PublicKey()
	for _, c := range changes {
		if c.Remove {
			continue
		}
		p := d.user.LookupPeer(device.NoisePublicKey(c.PublicKey))
		if p == nil {
			continue
		}
		if bytes.Compare(own[:], c.PublicKey[:]) < 0 {
			p.SendKeepalive()
			continue
		}
		key := c.PublicKey
		time.AfterFunc(handshakeDelay, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			dev, err := d.device()
			if err != nil {
				return // closed
			}
			for _, q := range dev.Peers {
				if q.PublicKey == key && q.LastHandshakeTime.IsZero() {
					p.SendKeepalive()
				}
			}
		})
	}
}

// Status reads the device: its public key, port, and each peer with its
// endpoint, allowed IPs, latest handshake and byte counters.
func (d *Device) Status() (*wgtypes.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.device()
}

// Kind says whether the device is the kernel's or this process's.
func (d *Device) Kind() wgtypes.DeviceType { return d.kind }

func (d *Device) device() (*wgtypes.Device, error) {
	if d.user == nil && d.wg == nil {
		return nil, fmt.Errorf("wireguard %s: closed", d.cfg.Name)
	}
	if d.user != nil {
		body, err := d.user.IpcGet()
		if err != nil {
			return nil, fmt.Errorf("wireguard %s: reading the userspace device: %w", d.cfg.Name, err)
		}
		return parseDevice(d.cfg.Name, body)
	}
	dev, err := d.wg.Device(d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("wireguard %s: reading the kernel device: %w", d.cfg.Name, err)
	}
	return dev, nil
}

func (d *Device) configure(c wgtypes.Config) error {
	if d.user == nil && d.wg == nil {
		return fmt.Errorf("wireguard %s: closed", d.cfg.Name)
	}
	if d.user != nil {
		// In the namespace: a new listening port opens new sockets in the
		// calling thread's.
		if err := d.inNS(func() error { return d.user.IpcSet(encodeConfig(c)) }); err != nil {
			return fmt.Errorf("wireguard %s: configuring the userspace device: %w", d.cfg.Name, err)
		}
		return nil
	}
	if err := d.wg.ConfigureDevice(d.cfg.Name, c); err != nil {
		return fmt.Errorf("wireguard %s: configuring the kernel device: %w", d.cfg.Name, err)
	}
	return nil
}

// Close releases the device. A kernel device stays, with its peers, for the
// next run to take over. A userspace device stops, but its interface and the
// routes through it stay: until the next run attaches to it, traffic for the
// other hosts' workloads is dropped there rather than sent unencrypted. Remove
// deletes either.
func (d *Device) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.user != nil {
		d.user.Close()
		d.user = nil
		d.log.Info("userspace wireguard device stopped")
	}
	if d.wg != nil {
		_ = d.wg.Close()
		d.wg = nil
	}
}

// Remove deletes the device named name if it exists and is a WireGuard
// device, kernel or userspace (a TUN), so that nothing is left when
// encryption is turned off; a device of another kind is not ours and is
// left alone. A userspace device still running in this process must be
// Closed first.
func Remove(h *netlink.Handle, name string, log *slog.Logger) error {
	link, err := routes.FindLink(h, name)
	if err != nil {
		return fmt.Errorf("wireguard %s: %w", name, err)
	}
	if link == nil || link.Type() != "wireguard" && !isTUN(link) {
		return nil
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("wireguard %s: deleting: %w", name, err)
	}
	if log != nil {
		log.Info("wireguard device deleted", "dev", name, "type", link.Type())
	}
	return nil
}
