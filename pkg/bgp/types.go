package bgp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// Peer types as `tortie node status` prints them (the words calicoctl uses).
const (
	PeerTypeMesh         = "node-to-node mesh"
	PeerTypeGlobal       = "global"
	PeerTypeNodeSpecific = "node specific"
)

// Session states, named as BIRD and calicoctl name them.
const (
	StateIdle        = "Idle"
	StateConnect     = "Connect"
	StateActive      = "Active"
	StateOpenSent    = "OpenSent"
	StateOpenConfirm = "OpenConfirm"
	StateEstablished = "Established"
)

// Defaults applied by Config.Defaults and used for peers that leave a field zero.
const (
	DefaultASN          = 64512 // Calico's default AS number
	DefaultPort         = 179
	DefaultRestartTime  = 120 * time.Second // BIRD's default graceful restart time
	DefaultConnectRetry = 5 * time.Second   // GoBGP's own default (120s) is far too slow for a cluster that boots together
	DefaultHoldTime     = 90 * time.Second
)

// Config is the speaker's global configuration. It cannot change while the
// speaker runs: a new router ID or AS number means a new Speaker.
type Config struct {
	RouterID netip.Addr // IPv4; BGP identifiers are 32 bits even on IPv6-only nodes
	ASN      uint32     // 0 = DefaultASN
	// ListenPort: 0 = 179; -1 = do not listen (every peer must then be dialled by us).
	ListenPort  int
	ListenAddrs []netip.Addr // empty = all addresses, both families
	// GracefulRestart enables graceful restart (RFC 4724) on every session, and
	// makes Stop leave the sessions without a NOTIFICATION so that peers keep
	// our routes for RestartTime.
	GracefulRestart bool
	RestartTime     time.Duration // advertised restart time; 0 = DefaultRestartTime
	// Restarting marks this start as a restart after a graceful Stop (the
	// agent knows: its routes are still in the kernel). It sets the Restart
	// State bit in our OPENs and holds our updates back until every peer has
	// sent its End-of-RIB, as RFC 4724 asks of a restarting speaker.
	Restarting bool
	// ConnectRetry is the interval between attempts to dial a peer; 0 =
	// DefaultConnectRetry. GoBGP works in whole seconds and waits at least 2s.
	ConnectRetry time.Duration
	Logger       *slog.Logger `json:"-"`
	// OnHoldTimerExpired, when set, is called (from any goroutine) with a
	// peer's address when its hold timer expires. GoBGP treats that like a
	// graceful restart of the peer and keeps its routes, marked stale, for
	// the peer's restart time (GoBGP issue 2174), though RFC 4724 keeps
	// routes only when a session ends without a NOTIFICATION and a hold
	// timer expiry sends one: the peer is unreachable, not restarting. GoBGP
	// says so only in its log, which the speaker reads.
	OnHoldTimerExpired func(peer netip.Addr) `json:"-"`
}

// Defaults returns a copy with zero fields set to their defaults.
func (c Config) Defaults() Config {
	if c.ASN == 0 {
		c.ASN = DefaultASN
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultPort
	}
	if c.RestartTime == 0 {
		c.RestartTime = DefaultRestartTime
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = DefaultConnectRetry
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first thing wrong with a (defaulted) Config.
func (c Config) Validate() error {
	if !c.RouterID.Is4() {
		return fmt.Errorf("routerID: %q is not an IPv4 address", c.RouterID)
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 {
		return fmt.Errorf("listenPort: %d out of range", c.ListenPort)
	}
	for i, a := range c.ListenAddrs {
		if !a.IsValid() {
			return fmt.Errorf("listenAddrs[%d]: invalid address", i)
		}
	}
	if c.RestartTime < time.Second || c.RestartTime > 4095*time.Second {
		return fmt.Errorf("restartTime: %s out of range 1s..4095s", c.RestartTime)
	}
	return nil
}

// Peer is one BGP session this node should have. The address identifies it:
// SetPeers with the same address and other settings changes that session.
type Peer struct {
	Address  netip.Addr
	Port     int    // 0 = 179
	ASN      uint32 // the peer's AS; equal to the local AS means iBGP
	LocalASN uint32 // 0 = Config.ASN
	Password string // TCP MD5 (RFC 2385) key; empty = none
	// Type is only carried through to PeerStatus (PeerTypeMesh, …).
	Type string
	// Passive: never dial, only accept. Calico makes the side of a mesh
	// pair with the higher address passive, so that each pair has exactly
	// one connection attempt in flight.
	Passive bool
	// RouteReflectorClient: we are a route reflector and this peer is one
	// of our clients. ClusterID is our cluster ID (IPv4-formatted); zero
	// means the router ID.
	RouteReflectorClient bool
	ClusterID            netip.Addr
	KeepaliveTime        time.Duration // 0 = HoldTime/3; whole seconds
	HoldTime             time.Duration // 0 = DefaultHoldTime; whole seconds, ≥3s
	// GracefulRestart enables graceful restart for this session even when
	// Config.GracefulRestart is off. MaxRestartTime overrides
	// Config.RestartTime for it (Calico's BGPPeer maxRestartTime).
	GracefulRestart bool
	MaxRestartTime  time.Duration
	SourceAddr      netip.Addr // local address to dial from and to accept on; zero = any
	// NextHopSelf rewrites the next hop of every route sent to this peer to
	// our address on the session (Calico's nextHopMode: Self). That address
	// is of the session's family, so over an IPv4 session it suits only
	// IPv4 routes.
	NextHopSelf bool
	// TTLSecurity (GTSM, RFC 5082): the number of hops the peer may be
	// away; packets arriving with a lower TTL are dropped. 0 = off.
	TTLSecurity int
	// EBGPMultihop: TTL of our packets to an eBGP peer that is not directly
	// connected. 0 = 1 (directly connected). Excludes TTLSecurity.
	EBGPMultihop int
}

// Advertisement is a prefix this node announces.
type Advertisement struct {
	Prefix netip.Prefix
	// NextHop: zero means our address on each session. An IPv6 prefix sent
	// over an IPv4 session (or the reverse) needs an explicit next hop of
	// its own family.
	NextHop     netip.Addr
	Communities []string // "aa:nn", large "aa:nn:mm", or no-export, no-advertise, no-export-subconfed
}

// Family is an address family carried by the speaker.
type Family string

const (
	IPv4Unicast Family = "ipv4-unicast"
	IPv6Unicast Family = "ipv6-unicast"
)

// Route is a best path learned from a peer.
type Route struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Peer    netip.Addr // the session it came in on
	Family  Family
	// Stale: the peer is in graceful restart and has not yet refreshed this
	// route. Keep forwarding on it; it is withdrawn if the peer does not
	// come back within its restart time.
	Stale bool
}

// RouteEvent tells of a change of the learned best path for one prefix.
// Withdrawn false: Route is now the best path (new or replacing another).
// Withdrawn true: nothing learned for Route.Prefix any more.
type RouteEvent struct {
	Withdrawn bool
	Route     Route
}

// PeerStatus is the state of one configured session.
type PeerStatus struct {
	Address netip.Addr
	Type    string
	State   string    // StateIdle … StateEstablished
	Since   time.Time // when State was entered
	// Info says why the session is not up: the last notification, dial
	// error or TCP MD5 failure. Empty when nothing is known.
	Info string
}

// Established reports whether the session is up.
func (p PeerStatus) Established() bool { return p.State == StateEstablished }

func (p Peer) validate() error {
	if !p.Address.IsValid() {
		return errors.New("address: invalid")
	}
	if p.Address.Zone() != "" {
		return errors.New("address: zoned (link-local) peers are not supported")
	}
	if p.Port < 0 || p.Port > 65535 {
		return fmt.Errorf("port: %d out of range", p.Port)
	}
	if p.ASN == 0 {
		return errors.New("asn: required")
	}
	if p.ClusterID.IsValid() && !p.ClusterID.Is4() {
		return errors.New("clusterID: must be IPv4-formatted")
	}
	if p.ClusterID.IsValid() && !p.RouteReflectorClient {
		return errors.New("clusterID: set without routeReflectorClient")
	}
	if p.HoldTime != 0 && p.HoldTime < 3*time.Second {
		return fmt.Errorf("holdTime: %s below 3s", p.HoldTime)
	}
	if p.KeepaliveTime < 0 || p.MaxRestartTime < 0 {
		return errors.New("negative duration")
	}
	if p.MaxRestartTime > 4095*time.Second {
		return fmt.Errorf("maxRestartTime: %s above 4095s", p.MaxRestartTime)
	}
	if p.TTLSecurity < 0 || p.TTLSecurity > 254 {
		return fmt.Errorf("ttlSecurity: %d out of range 0..254", p.TTLSecurity)
	}
	if p.EBGPMultihop < 0 || p.EBGPMultihop > 255 {
		return fmt.Errorf("ebgpMultihop: %d out of range 0..255", p.EBGPMultihop)
	}
	if p.TTLSecurity > 0 && p.EBGPMultihop > 0 {
		return errors.New("ttlSecurity and ebgpMultihop are mutually exclusive")
	}
	if p.SourceAddr.IsValid() && p.SourceAddr.Is4() != p.Address.Is4() {
		return errors.New("sourceAddr: family differs from address")
	}
	return nil
}

func (a Advertisement) validate() error {
	if !a.Prefix.IsValid() {
		return errors.New("prefix: invalid")
	}
	if a.Prefix != a.Prefix.Masked() {
		return fmt.Errorf("prefix: %s has host bits set", a.Prefix)
	}
	if a.NextHop.IsValid() && a.NextHop.Zone() != "" {
		return errors.New("nextHop: zoned addresses are not supported")
	}
	if _, _, err := parseCommunities(a.Communities); err != nil {
		return fmt.Errorf("communities: %w", err)
	}
	return nil
}

// sameSession reports whether two peers describe the same session, ignoring
// Type, which only labels the status. A difference means the session must be
// rebuilt.
func sameSession(a, b Peer) bool {
	a.Type, b.Type = "", ""
	return a == b
}

func sameAdvertisement(a, b Advertisement) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && slices.Equal(a.Communities, b.Communities)
}
