package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/bgp"
	"github.com/tortie/tortie/pkg/dataplane/routes"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
	"github.com/tortie/tortie/pkg/mtu"
	"github.com/tortie/tortie/pkg/syncer"
)

// Config configures a Component.
type Config struct {
	// NodeName is this host's Node (required).
	NodeName string
	// Netlink is a handle in the namespace to program; nil opens one in
	// this process's namespace at the first Apply. The BGP speaker always
	// lives in the process's own namespace (see pkg/bgp), so the two must
	// agree.
	Netlink *netlink.Handle
	// NewSpeaker makes the BGP speaker; nil means bgp.New. The component
	// starts it, and makes a new one when the router ID, AS number or
	// listen port changes.
	NewSpeaker func(bgp.Config) (*bgp.Speaker, error)
	// DisableBGP runs without a speaker (VXLAN-only clusters): only
	// datastore-computed routes are programmed.
	DisableBGP bool
	// HoldTime and KeepaliveTime of every session a BGPPeer does not set
	// (0: bgp's defaults, 90s and a third of it).
	HoldTime, KeepaliveTime time.Duration
	// ConnectRetry between dials of a peer (0: bgp.DefaultConnectRetry).
	ConnectRetry time.Duration
	// RestartTime is the graceful restart time this node advertises: how
	// long peers keep its routes while it restarts (0: 120s).
	RestartTime time.Duration
	// Secrets resolves BGPPeer passwords (nil: FileSecrets(DefaultSecretsDir)).
	Secrets SecretLookup
	// VXLANMTU of the tunnel device; 0 = the host's MTU (MTUIfacePattern)
	// minus 50.
	VXLANMTU int
	// VXLANPort and VXLANVNI of the tunnel device (0: routes.VXLANPort,
	// routes.VXLANVNI; FelixConfiguration vxlanPort, vxlanVNI).
	VXLANPort, VXLANVNI int
	// VXLANDisabled (FelixConfiguration vxlanEnabled: false) makes no VXLAN
	// device: pools that ask for VXLAN keep the node not ready, and their
	// traffic is never routed without encapsulation.
	VXLANDisabled bool
	// IPIPMTU of the IP-in-IP device (FelixConfiguration ipipMTU); 0 = the
	// host's MTU (MTUIfacePattern) minus 20.
	IPIPMTU int
	// IPIPDisabled (FelixConfiguration ipipEnabled: false): this node does
	// no IP-in-IP, as on a kernel without it: pools that ask for it keep
	// the node not ready and their traffic is not routed.
	IPIPDisabled bool
	// MTUIfacePattern selects the host interfaces whose smallest MTU the
	// tunnel MTU is computed from (FelixConfiguration mtuIfacePattern);
	// empty, or no match: the MTU of the interface with the node's address.
	MTUIfacePattern string
	// MTUFile is where the workload MTU is kept for the CNI plugin (Calico's
	// /var/lib/calico/mtu; see pkg/mtu): the smallest MTU of the tunnels in
	// use, else the host's. Empty: not written.
	MTUFile string
	// IPv6Disabled (FelixConfiguration ipv6Support: false) programs no
	// IPv6 routes.
	IPv6Disabled bool
	// ResyncInterval: how often the kernel is compared with the desired
	// state even when nothing changed, to repair hand-made changes
	// (default 30s). The agent's loop does it (node.Resyncer).
	ResyncInterval time.Duration
	// SkipSysctls leaves IP forwarding alone (it is otherwise turned on:
	// a router that does not forward routes nothing).
	SkipSysctls bool
	// Warnings from startup (e.g. a tunnel pool on a node without IPv4),
	// shown in Status.
	Warnings []string
	// Wireguard encrypts traffic to other hosts' workloads when Enabled;
	// otherwise what an earlier run left of it (device, rule, routes) is
	// removed at the first Apply.
	Wireguard WireguardConfig
	Logger    *slog.Logger
}

// WireguardConfig is the WireGuard part of Config (FelixConfiguration
// wireguard* fields). Zero values take Calico's defaults.
type WireguardConfig struct {
	Enabled    bool
	PrivateKey wgtypes.Key // required when Enabled
	Device     string      // wireguard.DeviceName
	Port       int         // wireguard.DefaultPort
	// MTU of the device; 0: the host's MTU (MTUIfacePattern) minus
	// wireguard.Overhead.
	MTU int
	// RulePriority of the routing rule into Table (99); Table is Calico's
	// wireguardRoutingTableIndex (1); Mark is the device's firewall mark,
	// which keeps its own packets out of Table (0x100000, Calico's).
	RulePriority, Table, Mark int
	Keepalive                 time.Duration
	// Mode: kernel, userspace, or (empty) the kernel's where it has
	// WireGuard.
	Mode wireguard.Mode
}

func (w WireguardConfig) withDefaults() WireguardConfig {
	if w.Device == "" {
		w.Device = wireguard.DeviceName
	}
	if w.Port == 0 {
		w.Port = wireguard.DefaultPort
	}
	if w.RulePriority == 0 {
		w.RulePriority = 99
	}
	if w.Table == 0 {
		w.Table = 1
	}
	if w.Mark == 0 {
		w.Mark = 0x100000
	}
	return w
}

func (c Config) withDefaults() Config {
	if c.NewSpeaker == nil {
		c.NewSpeaker = bgp.New
	}
	if c.Secrets == nil {
		c.Secrets = FileSecrets(DefaultSecretsDir)
	}
	if c.RestartTime == 0 {
		c.RestartTime = bgp.DefaultRestartTime
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = 30 * time.Second
	}
	if c.VXLANPort == 0 {
		c.VXLANPort = routes.VXLANPort
	}
	if c.VXLANVNI == 0 {
		c.VXLANVNI = routes.VXLANVNI
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Wireguard = c.Wireguard.withDefaults()
	return c
}

// Component keeps one host's routing in step with the datastore. It is a
// component of the agent's one loop (pkg/node): the syncer's updates are
// folded into a Snapshot (OnUpdate), and Apply computes desired peers,
// advertisements and routes with the pure functions of this package and
// drives the BGP speaker and the route and VXLAN reconcilers. Routes
// learned over BGP and expired hold timers wake the loop (Wake) for the
// next Apply.
type Component struct {
	cfg Config
	log *slog.Logger

	// Loop-owned: touched only by OnUpdate, Apply and Close (the agent's
	// loop goroutine).
	snap       *Snapshot
	h          *netlink.Handle
	ownHandle  bool // h was opened here, and is closed by Close
	rec        *routes.Reconciler
	vx         *routes.VXLAN
	started    time.Time // the first Apply
	restarting bool      // the kernel had our routes at the first Apply
	carried    []routes.Route
	allUpSince time.Time
	// warned is what the last apply warned about: a warning is logged when
	// it appears, not on every apply.
	warned []string
	// ipipErr is the answer of routes.IPIPSupported (nil: supported), asked
	// when a pool first wants IP-in-IP (ipipProbed) and, while it is no,
	// again at each full apply (an operator may load the module).
	ipipProbed bool
	ipipErr    error

	ready   atomic.Bool
	holding atomic.Bool // carried routes are kept; Run wakes the loop each second

	// unreachable holds peers whose hold timer expired (see peerExpired),
	// with when it expired, until their session is Established again.
	deadMu      sync.Mutex
	unreachable map[netip.Addr]time.Time
	wake        chan struct{}

	// WireGuard, loop-owned: the device's configuration last applied, the
	// reconciler of its routing table, whether the rule is known to be in
	// place; with WireGuard off, whether what an earlier run left is gone.
	wgCfg     wireguard.Config
	wgRec     *routes.Reconciler
	wgRule    bool
	wgRemoved bool

	// mtuWritten is the workload MTU last written to Config.MTUFile.
	mtuWritten int

	mu     sync.Mutex // guards what Status reads
	sp     *bgp.Speaker
	spCfg  bgp.Config
	status Status
	wg     *wireguard.Device
	// wgNodes names the node of each peer's public key, for Status.
	wgNodes map[wgtypes.Key]string
}

// Kinds routing depends on: what the calculation's Snapshot holds.
var routingKinds = []string{
	v3.KindNode, v3.KindBGPConfiguration, v3.KindBGPPeer, v3.KindIPPool,
	v3.KindWorkloadEndpoint, syncer.KindIPAMBlock,
}

// New returns a component for the agent (node.New); it touches nothing
// until its first Apply.
func New(cfg Config) (*Component, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("routing: node name is empty")
	}
	if cfg.Wireguard.Enabled && cfg.Wireguard.PrivateKey == (wgtypes.Key{}) {
		return nil, errors.New("routing: WireGuard is enabled but no private key was given")
	}
	if _, err := regexp.Compile(cfg.MTUIfacePattern); err != nil {
		return nil, fmt.Errorf("routing: MTU interface pattern: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Component{cfg: cfg, log: cfg.Logger.With("component", "routing", "node", cfg.NodeName),
		snap: NewSnapshot(), h: cfg.Netlink,
		unreachable: map[netip.Addr]time.Time{}, wake: make(chan struct{}, 1)}
	c.status.NodeName = cfg.NodeName
	return c, nil
}

// Name is the component's name in the agent: its status is served at
// /status/routing (StatusPath), where `tortie node status` asks.
func (c *Component) Name() string { return "routing" }

// Kinds are the datastore kinds the component folds into its snapshot.
func (c *Component) Kinds() []string { return routingKinds }

// OnInSync: nothing to do; the first Apply follows.
func (c *Component) OnInSync() {}

// ResyncInterval is how often the agent applies routing in full.
func (c *Component) ResyncInterval() time.Duration { return c.cfg.ResyncInterval }

// Wake fires when routes learned over BGP change, a peer's hold timer
// expires, or, while routes of the previous run are kept, every second.
func (c *Component) Wake() <-chan struct{} { return c.wake }

// ServeStatus serves Status as JSON (the agent's /status/routing).
func (c *Component) ServeStatus(w http.ResponseWriter, r *http.Request) {
	c.Handler().ServeHTTP(w, r)
}

func (c *Component) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Ready reports whether the first complete datastore snapshot has been
// programmed.
func (c *Component) Ready() bool { return c.ready.Load() }

// restartHoldSettle is how long every session must have been up before
// routes carried over from the previous run are let go: time for the
// peers' updates to arrive.
const restartHoldSettle = 3 * time.Second

// Run wakes the loop each second while routes of the previous run are
// kept, so that they are let go as soon as the sessions have settled.
func (c *Component) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if c.holding.Load() {
				c.kick()
			}
		}
	}
}

// Close stops the speaker gracefully (peers keep our routes for the
// restart time) and leaves the kernel's routes in place for the next run.
func (c *Component) Close() error {
	c.mu.Lock()
	sp := c.sp
	c.sp = nil
	c.mu.Unlock()
	var err error
	if sp != nil {
		err = sp.Stop()
	}
	c.mu.Lock()
	wg := c.wg
	c.wg = nil
	c.mu.Unlock()
	if wg != nil {
		wg.Close() // the device and its routes stay for the next run
	}
	if c.ownHandle && c.h != nil {
		c.h.Close()
		c.h, c.rec, c.vx = nil, nil, nil
	}
	return err
}

// OnUpdate folds one datastore change into the snapshot.
func (c *Component) OnUpdate(u syncer.Update) {
	s := c.snap
	if u.Kind == syncer.KindIPAMBlock {
		c.foldBlock(u)
		return
	}
	if u.Deleted() {
		switch u.Kind {
		case v3.KindNode:
			delete(s.Nodes, u.Name)
		case v3.KindBGPConfiguration:
			delete(s.BGPConfigs, u.Name)
		case v3.KindBGPPeer:
			delete(s.Peers, u.Name)
		case v3.KindIPPool:
			delete(s.Pools, u.Name)
		case v3.KindWorkloadEndpoint:
			delete(s.Endpoints, u.Namespace+"/"+u.Name)
		}
		return
	}
	switch o := u.Resource.(type) {
	case *v3.Node:
		s.Nodes[u.Name] = o
	case *v3.BGPConfiguration:
		s.BGPConfigs[u.Name] = o
	case *v3.BGPPeer:
		s.Peers[u.Name] = o
	case *v3.IPPool:
		s.Pools[u.Name] = o
	case *v3.WorkloadEndpoint:
		key := u.Namespace + "/" + u.Name
		if o.Spec.Node == c.cfg.NodeName {
			s.Endpoints[key] = o
		} else {
			delete(s.Endpoints, key) // moved away, or never ours
		}
	}
}

// foldBlock folds an IPAM block change; blocks are keyed by CIDR in the
// snapshot and by their datastore name in blockKeys.
func (c *Component) foldBlock(u syncer.Update) {
	s := c.snap
	old, had := s.blockKeys[u.Name]
	if u.Deleted() {
		if had {
			delete(s.Blocks, old)
			delete(s.blockKeys, u.Name)
		}
		return
	}
	b, err := ParseBlock(u.Value)
	if err != nil {
		c.log.Warn("ignoring datastore value", "kind", u.Kind, "key", u.Key, "err", err)
		return
	}
	if had && old != b.CIDR {
		delete(s.Blocks, old)
	}
	s.blockKeys[u.Name] = b.CIDR
	s.Blocks[b.CIDR] = b
}

// Apply computes the desired state and programs it. The first Apply opens
// what the component needs in the kernel and looks for routes a previous
// run left (a restart keeps them until BGP has relearned them).
func (c *Component) Apply(ctx context.Context, full bool) error {
	if c.rec == nil {
		if err := c.open(); err != nil {
			return err
		}
	}
	if c.holding.Load() && c.holdDone() {
		c.holding.Store(false)
		c.log.Info("restart complete: routes from the previous run no longer kept")
	}
	var carry []routes.Route
	if c.holding.Load() {
		carry = c.carried
	}
	err := c.apply(ctx, carry, full)
	c.mu.Lock()
	c.status.LastApply = time.Now()
	if err != nil {
		c.status.LastError = err.Error()
	} else {
		c.status.LastError = ""
	}
	c.mu.Unlock()
	if !c.ready.Load() {
		c.ready.Store(true)
		c.log.Info("routing programmed", "since first apply", time.Since(c.started).Round(time.Millisecond))
	}
	return err
}

// open prepares the kernel side at the first Apply.
func (c *Component) open() error {
	if c.h == nil {
		h, err := netlink.NewHandle()
		if err != nil {
			return fmt.Errorf("routing: netlink: %w", err)
		}
		c.h, c.ownHandle = h, true
	}
	if !c.cfg.SkipSysctls {
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
				c.log.Warn("cannot turn forwarding on", "sysctl", p, "err", err)
			}
		}
	}
	c.rec = routes.NewReconciler(c.h, routes.Options{Logger: c.log})
	c.vx = routes.NewVXLAN(c.h, routes.VXLANDeviceName, c.log)
	c.wgRec = routes.NewReconciler(c.h, routes.Options{Table: c.cfg.Wireguard.Table, Logger: c.log})
	// Routes of ours still in the kernel mean this is a restart: keep the
	// routes to other hosts until BGP has had time to relearn them.
	c.carried = kernelCarry(c.h)
	c.restarting = len(c.carried) > 0
	c.started = time.Now()
	if c.restarting {
		c.holding.Store(true)
		c.log.Info("restarting: keeping routes from the previous run until sessions are back", "routes", len(c.carried))
	}
	return nil
}

// holdDone reports whether routes carried over from the previous run may
// go: every session up for restartHoldSettle, or the restart time over.
func (c *Component) holdDone() bool {
	switch {
	case !c.allEstablished():
		c.allUpSince = time.Time{}
	case c.allUpSince.IsZero():
		c.allUpSince = time.Now()
	}
	return (!c.allUpSince.IsZero() && time.Since(c.allUpSince) >= restartHoldSettle) ||
		time.Since(c.started) > c.cfg.RestartTime
}

// forwardRoutes wakes the loop on every change of a speaker's learned
// routes, until the speaker stops (it closes the channel).
func (c *Component) forwardRoutes(ch <-chan bgp.RouteEvent) {
	for range ch {
		c.kick()
	}
}

// apply computes the desired state and programs it, keeping carry (routes
// of the previous run) where nothing else routes their destinations.
func (c *Component) apply(ctx context.Context, carry []routes.Route, full bool) error {
	cfg, s, h := c.cfg, c.snap, c.h
	node := cfg.NodeName
	var errs []error
	warnings := slices.Clone(cfg.Warnings)

	me, known := s.Nodes[node]
	var self nodeInfo
	if known {
		self = parseNode(me)
	} else {
		warnings = append(warnings, fmt.Sprintf("Node %s does not exist in the datastore (has startup run?)", node))
	}
	st := ResolveBGP(s, node)

	// BGP.
	bgpReason := ""
	switch {
	case cfg.DisableBGP:
		bgpReason = "BGP disabled by configuration"
	case !known:
		bgpReason = "no Node resource"
	case !self.v4.IsValid():
		bgpReason = "the Node has no spec.bgp.ipv4Address: BGP needs an IPv4 router ID"
	}
	var learned []bgp.Route
	var peers []bgp.Peer
	var adverts []bgp.Advertisement
	if bgpReason == "" {
		want := bgp.Config{
			RouterID:           self.v4.Addr(),
			ASN:                st.ASN,
			ListenPort:         st.ListenPort,
			GracefulRestart:    true,
			RestartTime:        cfg.RestartTime,
			ConnectRetry:       cfg.ConnectRetry,
			Logger:             cfg.Logger,
			OnHoldTimerExpired: c.peerExpired,
		}
		c.mu.Lock()
		sp, cur := c.sp, c.spCfg
		c.mu.Unlock()
		if sp != nil && (cur.RouterID != want.RouterID || cur.ASN != want.ASN || cur.ListenPort != want.ListenPort) {
			c.log.Info("BGP identity changed; restarting the speaker", "routerID", want.RouterID, "asn", want.ASN, "listenPort", want.ListenPort)
			sp.StopAndWithdraw()
			sp = nil
		}
		if sp == nil {
			want.Restarting = c.restarting
			nsp, err := cfg.NewSpeaker(want)
			if err == nil {
				err = nsp.Start(ctx)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("BGP speaker: %w", err))
			} else {
				sp = nsp
				go c.forwardRoutes(sp.Routes())
				c.mu.Lock()
				c.sp, c.spCfg = sp, want
				c.mu.Unlock()
			}
		}
		if sp != nil {
			var pw []string
			peers, pw = DesiredPeers(s, node, PeerOptions{HoldTime: cfg.HoldTime, KeepaliveTime: cfg.KeepaliveTime, Secrets: cfg.Secrets})
			warnings = append(warnings, pw...)
			if err := sp.SetPeers(ctx, peers); err != nil {
				errs = append(errs, err)
			}
			adverts = DesiredAdvertisements(s, node)
			if err := sp.SetAdvertisements(adverts); err != nil {
				errs = append(errs, err)
			}
			learned = UsableLearned(sp.LearnedRoutes(), c.unreachablePeers(sp.Peers()))
		}
	} else {
		c.mu.Lock()
		sp := c.sp
		c.sp = nil
		c.mu.Unlock()
		if sp != nil {
			sp.StopAndWithdraw()
		}
	}

	// Kernel.
	wantIPIP := len(ipipPools(s)) > 0
	var ipipErr error
	if wantIPIP {
		ipipErr = c.ipipSupport(full)
	}
	rs := DesiredRoutes(s, node, learned, RouteOptions{NoVXLAN: cfg.VXLANDisabled, NoIPv6: cfg.IPv6Disabled,
		IPIP: wantIPIP && ipipErr == nil})
	if len(rs.NoVXLAN) > 0 {
		errs = append(errs, fmt.Errorf("IP pool(s) %s ask for VXLAN, but FelixConfiguration vxlanEnabled is false on this node: "+
			"their traffic to other hosts is not routed (never without encapsulation); set vxlanEnabled to true or the pools' vxlanMode to Never",
			strings.Join(rs.NoVXLAN, ", ")))
	}
	// The host's MTU, read once and only when something needs it.
	hostMTUOf, hostMTURead := 0, false
	host := func() int {
		if !hostMTURead {
			hostMTUOf, hostMTURead = hostMTU(h, self.v4.Addr(), cfg.MTUIfacePattern), true
		}
		return hostMTUOf
	}
	// The MTUs of the tunnels in use, for the workload MTU (0: not in use).
	var vxlanMTU, ipipMTU, wgMTU int
	if rs.VXLAN {
		mac, _ := net.ParseMAC(self.mac)
		vxlanMTU = tunnelMTU(cfg.VXLANMTU, host, routes.VXLANOverhead)
		if err := routes.EnsureVXLAN(h, routes.VXLANConfig{
			Name: routes.VXLANDeviceName, VNI: cfg.VXLANVNI, Port: cfg.VXLANPort, MTU: vxlanMTU,
			ParentAddr: self.v4.Addr(), MAC: mac, TunnelAddr: self.tunnel, Logger: c.log,
		}); err != nil {
			errs = append(errs, err)
		}
	}
	if len(rs.NoIPIP) > 0 {
		errs = append(errs, noIPIPError(s, rs.NoIPIP, ipipErr))
	}
	if rs.IPIP {
		ipipMTU = tunnelMTU(cfg.IPIPMTU, host, routes.IPIPOverhead)
		if err := routes.EnsureIPIP(h, routes.IPIPConfig{
			Name: routes.IPIPDeviceName, MTU: ipipMTU, TunnelAddr: self.ipipTunnel, Logger: c.log,
		}); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case cfg.Wireguard.Enabled:
		wgMTU = tunnelMTU(cfg.Wireguard.MTU, host, wireguard.Overhead)
		if err := c.applyWireguard(s, node, wgMTU, full); err != nil {
			errs = append(errs, err)
		}
	case !c.wgRemoved:
		if err := c.removeWireguard(); err != nil {
			errs = append(errs, err) // tried again at the next apply
		} else {
			c.wgRemoved = true
		}
	}
	workloadMTU := 0
	if cfg.MTUFile != "" {
		workloadMTU = mtu.ForWorkloads(host(), vxlanMTU, ipipMTU, wgMTU)
		if err := c.writeWorkloadMTU(workloadMTU, full); err != nil {
			errs = append(errs, err)
		}
	}
	desired := rs.Routes
	if len(carry) > 0 {
		have := map[netip.Prefix]bool{}
		for _, r := range desired {
			have[r.Dst] = true
		}
		for _, r := range carry {
			if !have[r.Dst] {
				desired = append(desired, r)
			}
		}
	}
	c.rec.Set(desired)
	stats, err := c.rec.Apply()
	if err != nil {
		errs = append(errs, err)
	}
	c.vx.SetVTEPs(rs.VTEPs)
	if err := c.vx.Apply(); err != nil && !(errors.Is(err, routes.ErrDeviceNotFound) && !rs.VXLAN) {
		errs = append(errs, err)
	}

	c.mu.Lock()
	c.status.BGPEnabled = bgpReason == ""
	c.status.BGPDisabledReason = bgpReason
	c.status.ASNumber = st.ASN
	if self.v4.IsValid() {
		c.status.RouterID = self.v4.Addr().String()
	}
	c.status.Advertisements = prefixes(adverts)
	c.status.LearnedRoutes = len(learned)
	c.status.Routes = len(desired)
	c.status.RoutesPending = stats.Pending
	c.status.VXLAN = rs.VXLAN
	if self.tunnel.IsValid() {
		c.status.VXLANTunnelAddr = self.tunnel.String()
	}
	c.status.IPIP = rs.IPIP
	c.status.IPIPTunnelAddr = ""
	if self.ipipTunnel.IsValid() {
		c.status.IPIPTunnelAddr = self.ipipTunnel.String()
	}
	c.status.WorkloadMTU, c.status.HostMTU, c.status.MTUFile = workloadMTU, hostMTUOf, cfg.MTUFile
	c.status.Warnings = warnings
	c.mu.Unlock()
	for _, w := range warnings {
		if !slices.Contains(c.warned, w) {
			c.log.Warn(w)
		}
	}
	c.warned = warnings
	return errors.Join(errs...)
}

// ipipSupport asks routes.IPIPSupported once, and again at a full apply
// while the answer is no.
func (c *Component) ipipSupport(full bool) error {
	if c.cfg.IPIPDisabled {
		return errIPIPDisabled
	}
	if !c.ipipProbed || c.ipipErr != nil && full {
		c.ipipErr = routes.IPIPSupported(c.h)
		c.ipipProbed = true
		if c.ipipErr == nil {
			c.log.Info("IP-in-IP available", "dev", routes.IPIPDeviceName)
		}
	}
	return c.ipipErr
}

var errIPIPDisabled = errors.New("FelixConfiguration ipipEnabled is false on this node")

// noIPIPError is the error that keeps the node not ready while pools ask
// for IP-in-IP that this node cannot do: each pool with its CIDR and mode,
// and why (why is routes.IPIPSupported's answer).
func noIPIPError(s *Snapshot, pools []string, why error) error {
	reason := "IP-in-IP is not available on this node"
	switch {
	case errors.Is(why, routes.ErrNoIPIP):
		reason = routes.ErrNoIPIP.Error()
	case why != nil:
		reason = "IP-in-IP is not available on this node (" + why.Error() + ")"
	}
	what := make([]string, 0, len(pools))
	for _, name := range pools {
		p := s.Pools[name]
		w := fmt.Sprintf("pool %s (%s, ipipMode %s", name, p.Spec.CIDR, p.Spec.IPIPMode)
		if p.Spec.IPIPMode == v3.EncapCrossSubnet {
			w += ": hosts in other subnets"
		}
		what = append(what, w+")")
	}
	return fmt.Errorf("%s: traffic to other hosts' blocks of %s is not routed; use vxlanMode instead",
		reason, strings.Join(what, ", "))
}

// peerExpired is the speaker's OnHoldTimerExpired (any goroutine): GoBGP
// would keep the peer's routes for a graceful restart it is not doing, so
// they leave the kernel until the session is Established again.
func (c *Component) peerExpired(a netip.Addr) {
	c.deadMu.Lock()
	c.unreachable[a] = time.Now()
	c.deadMu.Unlock()
	c.log.Info("BGP peer unreachable (hold timer expired): dropping its routes instead of keeping them for a graceful restart", "peer", a)
	c.kick()
}

// unreachablePeers forgets peers that are back and returns the rest. A
// peer is back when its session was Established after its hold timer
// expired: the expiry is reported a moment before the session leaves
// Established, and an apply in that moment must not take it as back.
func (c *Component) unreachablePeers(ps []bgp.PeerStatus) map[netip.Addr]bool {
	c.deadMu.Lock()
	defer c.deadMu.Unlock()
	for _, p := range ps {
		if at, ok := c.unreachable[p.Address]; ok && p.Established() && p.Since.After(at) {
			delete(c.unreachable, p.Address)
		}
	}
	out := make(map[netip.Addr]bool, len(c.unreachable))
	for a := range c.unreachable {
		out[a] = true
	}
	return out
}

func prefixes(as []bgp.Advertisement) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.Prefix.String())
	}
	return out
}

// allEstablished reports whether the speaker has every configured session up.
func (c *Component) allEstablished() bool {
	c.mu.Lock()
	sp := c.sp
	c.mu.Unlock()
	if sp == nil {
		return false
	}
	for _, p := range sp.Peers() {
		if !p.Established() {
			return false
		}
	}
	return true
}

// kernelCarry reads the routes a previous run left to other hosts (ours,
// unicast, with a gateway).
func kernelCarry(h *netlink.Handle) []routes.Route {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.ProtocolTortie}
	krs, err := h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil
	}
	var out []routes.Route
	for _, k := range krs {
		if k.Type != unix.RTN_UNICAST || k.Gw == nil || k.Dst == nil {
			continue
		}
		gw, ok := netip.AddrFromSlice(k.Gw)
		if !ok {
			continue
		}
		dst, ok := netip.AddrFromSlice(k.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := k.Dst.Mask.Size()
		r := routes.Route{Dst: netip.PrefixFrom(dst.Unmap(), ones), Gateway: gw.Unmap()}
		if k.Flags&unix.RTNH_F_ONLINK != 0 {
			r.OnLink = true
			if l, err := h.LinkByIndex(k.LinkIndex); err == nil {
				r.Dev = l.Attrs().Name
			}
		}
		out = append(out, r)
	}
	return out
}

// tunnelMTU is a tunnel device's MTU: set, when not 0 (FelixConfiguration's
// vxlanMTU, ipipMTU, wireguardMTU); else the host's MTU less the tunnel's
// overhead; 0 when neither is known (the device keeps its own).
func tunnelMTU(set int, host func() int, overhead int) int {
	if set != 0 {
		return set
	}
	if hm := host(); hm > overhead {
		return hm - overhead
	}
	return 0
}

// writeWorkloadMTU keeps the workload MTU file (Config.MTUFile) at m: when
// m changed, and at a full apply when the file says otherwise (removed or
// edited by hand). Workloads made before a change keep their MTU, as with
// Calico; the CNI plugin gives new ones m.
func (c *Component) writeWorkloadMTU(m int, full bool) error {
	if m == 0 {
		return nil // the host's MTU is unknown: leave the file as it is
	}
	if m == c.mtuWritten && !full {
		return nil
	}
	if on, err := mtu.Read(c.cfg.MTUFile); err == nil && on == m {
		c.mtuWritten = m
		return nil
	}
	if err := mtu.Write(c.cfg.MTUFile, m); err != nil {
		return err
	}
	c.log.Info("workload MTU written for the CNI plugin", "mtu", m, "file", c.cfg.MTUFile, "was", c.mtuWritten)
	c.mtuWritten = m
	return nil
}

// hostMTU is the smallest MTU of the host's interfaces whose names match
// pattern (Felix's mtuIfacePattern), or, when none does, the MTU of the
// interface that has addr.
func hostMTU(h *netlink.Handle, addr netip.Addr, pattern string) int {
	if pattern != "" {
		links, err := h.LinkList()
		if err != nil {
			return 0
		}
		re := regexp.MustCompile(pattern) // checked by New
		least := 0
		for _, l := range links {
			if a := l.Attrs(); re.MatchString(a.Name) && a.MTU > 0 && (least == 0 || a.MTU < least) {
				least = a.MTU
			}
		}
		if least > 0 {
			return least
		}
	}
	l, err := routes.LinkWithAddr(h, addr)
	if err != nil {
		return 0
	}
	return l.Attrs().MTU
}
