package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/bgp"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/dataplane/routes"
	"github.com/tortie/tortie/pkg/datastore"
)

// Config configures a Component.
type Config struct {
	// NodeName is this host's Node (required).
	NodeName string
	// Backend is the datastore (required).
	Backend datastore.Backend
	// Netlink is a handle in the namespace to program; nil opens one in
	// this process's namespace. The BGP speaker always lives in the
	// process's own namespace (see pkg/bgp), so the two must agree.
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
	// VXLANMTU of the tunnel device; 0 = the underlay device's MTU minus 50.
	VXLANMTU int
	// ResyncInterval: how often the kernel is compared with the desired
	// state even when nothing changed, to repair hand-made changes
	// (default 30s).
	ResyncInterval time.Duration
	// MinApplyInterval gathers bursts of changes into one apply (default 20ms).
	MinApplyInterval time.Duration
	// SkipSysctls leaves IP forwarding alone (it is otherwise turned on:
	// a router that does not forward routes nothing).
	SkipSysctls bool
	// Warnings from startup (e.g. IP-in-IP requested), shown in Status.
	Warnings []string
	Logger   *slog.Logger
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
	if c.MinApplyInterval <= 0 {
		c.MinApplyInterval = 20 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Component keeps one host's routing in step with the datastore: it
// watches what routing depends on, computes desired peers, advertisements
// and routes with the pure functions of this package, and drives the BGP
// speaker and the route and VXLAN reconcilers.
type Component struct {
	cfg Config
	log *slog.Logger

	ready atomic.Bool
	// warned is what the last apply warned about: a warning is logged when
	// it appears, not on every apply. Only Run's goroutine uses it.
	warned []string

	// unreachable holds peers whose hold timer expired (see peerExpired) until
	// their session is Established again; kick wakes the loop.
	deadMu      sync.Mutex
	unreachable map[netip.Addr]bool
	kick        chan struct{}

	mu     sync.Mutex // guards what Status reads
	sp     *bgp.Speaker
	spCfg  bgp.Config
	status Status
}

// New returns a component; Run starts it.
func New(cfg Config) *Component {
	cfg = cfg.withDefaults()
	c := &Component{cfg: cfg, log: cfg.Logger.With("component", "routing", "node", cfg.NodeName),
		unreachable: map[netip.Addr]bool{}, kick: make(chan struct{}, 1)}
	c.status.NodeName = cfg.NodeName
	return c
}

// Ready reports whether the first complete datastore snapshot has been
// programmed.
func (c *Component) Ready() bool { return c.ready.Load() }

// watched is one datastore prefix the component follows.
type watched struct {
	name   string
	prefix string
	kind   *v3.KindInfo // nil for IPAM blocks
}

type kindEvent struct {
	w  *watched
	ev datastore.WatchEvent
}

// restartHoldSettle is how long every session must have been up before
// routes carried over from the previous run are let go: time for the
// peers' updates to arrive.
const restartHoldSettle = 3 * time.Second

// Run watches the datastore and programs the host until ctx ends. On the
// way out it stops the speaker gracefully (peers keep our routes for the
// restart time) and leaves the kernel's routes in place for the next run.
func (c *Component) Run(ctx context.Context) error {
	cfg := c.cfg
	if cfg.NodeName == "" || cfg.Backend == nil {
		return errors.New("routing: NodeName and Backend are required")
	}
	h := cfg.Netlink
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(); err != nil {
			return fmt.Errorf("routing: netlink: %w", err)
		}
		defer h.Close()
	}
	if !cfg.SkipSysctls {
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
				c.log.Warn("cannot turn forwarding on", "sysctl", p, "err", err)
			}
		}
	}
	rec := routes.NewReconciler(h, routes.Options{Logger: c.log})
	vx := routes.NewVXLAN(h, routes.VXLANDeviceName, c.log)

	// Routes of ours still in the kernel mean this is a restart: keep the
	// routes to other hosts until BGP has had time to relearn them.
	carried := kernelCarry(h)
	restarting := len(carried) > 0
	start := time.Now()
	holding := restarting
	if restarting {
		c.log.Info("restarting: keeping routes from the previous run until sessions are back", "routes", len(carried))
	}

	kinds := []*watched{
		{name: "Node", kind: kindOf(v3.KindNode)},
		{name: "BGPConfiguration", kind: kindOf(v3.KindBGPConfiguration)},
		{name: "BGPPeer", kind: kindOf(v3.KindBGPPeer)},
		{name: "IPPool", kind: kindOf(v3.KindIPPool)},
		{name: "WorkloadEndpoint", kind: kindOf(v3.KindWorkloadEndpoint)},
		{name: "IPAMBlock", prefix: BlockPrefix},
	}
	wctx, cancelWatches := context.WithCancel(ctx)
	defer cancelWatches()
	events := make(chan kindEvent, 1024)
	for _, w := range kinds {
		if w.kind != nil {
			w.prefix = client.KindPrefix(w.kind, "")
		}
		go func(w *watched) {
			for ev := range cfg.Backend.Watch(wctx, w.prefix, 0) {
				select {
				case events <- kindEvent{w, ev}:
				case <-wctx.Done():
					return
				}
			}
		}(w)
	}

	snap := NewSnapshot()
	blockKeys := map[string]netip.Prefix{}
	inSync := map[string]bool{}
	synced := false

	applyTimer := time.NewTimer(time.Hour)
	applyTimer.Stop()
	armed := false
	arm := func(d time.Duration) {
		if !armed && synced {
			applyTimer.Reset(d)
			armed = true
		}
	}
	resync := time.NewTicker(cfg.ResyncInterval)
	defer resync.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var routeCh <-chan bgp.RouteEvent
	var allUpSince time.Time

	defer func() {
		c.mu.Lock()
		sp := c.sp
		c.sp = nil
		c.mu.Unlock()
		if sp != nil {
			sp.Stop() // graceful: peers keep our routes while we are away
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return nil
		case ke := <-events:
			if ke.ev.Type == datastore.EventError {
				return fmt.Errorf("routing: watching %s: %w", ke.w.name, ke.ev.Err)
			}
			if ke.ev.Type == datastore.EventInSync {
				inSync[ke.w.name] = true
				if !synced && len(inSync) == len(kinds) {
					synced = true
					c.log.Info("datastore in sync", "took", time.Since(start).Round(time.Millisecond))
				}
			} else if err := c.fold(snap, blockKeys, ke); err != nil {
				c.log.Warn("ignoring datastore value", "kind", ke.w.name, "err", err)
			}
			arm(cfg.MinApplyInterval)
		case _, ok := <-routeCh:
			if !ok {
				routeCh = nil
			}
			// Drain what is queued: one apply covers them all.
			for drained := false; !drained && routeCh != nil; {
				select {
				case _, ok := <-routeCh:
					if !ok {
						routeCh = nil
					}
				default:
					drained = true
				}
			}
			arm(cfg.MinApplyInterval)
		case <-c.kick:
			arm(cfg.MinApplyInterval)
		case <-resync.C:
			arm(0)
		case <-tick.C:
			if holding {
				allUp := c.allEstablished()
				switch {
				case !allUp:
					allUpSince = time.Time{}
				case allUpSince.IsZero():
					allUpSince = time.Now()
				}
				if (!allUpSince.IsZero() && time.Since(allUpSince) >= restartHoldSettle) || time.Since(start) > cfg.RestartTime {
					holding = false
					c.log.Info("restart complete: routes from the previous run no longer kept")
					arm(0)
				}
			}
		case <-applyTimer.C:
			armed = false
			var carry []routes.Route
			if holding {
				carry = carried
			}
			ch, err := c.apply(ctx, snap, rec, vx, h, carry, restarting)
			if ch != nil {
				routeCh = ch
			}
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
				c.log.Info("routing ready", "since start", time.Since(start).Round(time.Millisecond))
			}
			if err != nil {
				c.log.Warn("routing apply incomplete; retrying", "err", err)
				arm(time.Second)
			}
		}
	}
}

func kindOf(kind string) *v3.KindInfo {
	k, ok := v3.KindByKind(kind)
	if !ok {
		panic("routing: unknown kind " + kind)
	}
	return k
}

// fold applies one watch event to the snapshot.
func (c *Component) fold(s *Snapshot, blockKeys map[string]netip.Prefix, ke kindEvent) error {
	ev := ke.ev
	key := ""
	if ev.KV != nil {
		key = ev.KV.Key
	} else if ev.PrevKV != nil {
		key = ev.PrevKV.Key
	}
	del := ev.Type == datastore.EventDeleted
	if ke.w.kind == nil { // IPAM block
		if del {
			if p, ok := blockKeys[key]; ok {
				delete(s.Blocks, p)
				delete(blockKeys, key)
			}
			return nil
		}
		b, err := ParseBlock(ev.KV.Value)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if old, ok := blockKeys[key]; ok && old != b.CIDR {
			delete(s.Blocks, old)
		}
		blockKeys[key] = b.CIDR
		s.Blocks[b.CIDR] = b
		return nil
	}
	rest := strings.TrimPrefix(key, client.KindPrefix(ke.w.kind, ""))
	if del {
		switch ke.w.name {
		case "Node":
			delete(s.Nodes, rest)
		case "BGPConfiguration":
			delete(s.BGPConfigs, rest)
		case "BGPPeer":
			delete(s.Peers, rest)
		case "IPPool":
			delete(s.Pools, rest)
		case "WorkloadEndpoint":
			delete(s.Endpoints, rest)
		}
		return nil
	}
	obj := ke.w.kind.NewObject()
	if err := json.Unmarshal(ev.KV.Value, obj); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	switch o := obj.(type) {
	case *v3.Node:
		o.Name = rest
		s.Nodes[rest] = o
	case *v3.BGPConfiguration:
		o.Name = rest
		s.BGPConfigs[rest] = o
	case *v3.BGPPeer:
		o.Name = rest
		s.Peers[rest] = o
	case *v3.IPPool:
		o.Name = rest
		s.Pools[rest] = o
	case *v3.WorkloadEndpoint:
		if o.Spec.Node == c.cfg.NodeName {
			s.Endpoints[rest] = o
		} else {
			delete(s.Endpoints, rest) // moved away, or never ours
		}
	}
	return nil
}

// apply computes the desired state and programs it. It returns the new
// speaker's route channel when it started one.
func (c *Component) apply(ctx context.Context, s *Snapshot, rec *routes.Reconciler, vx *routes.VXLAN, h *netlink.Handle, carry []routes.Route, restarting bool) (<-chan bgp.RouteEvent, error) {
	cfg := c.cfg
	node := cfg.NodeName
	var errs []error
	var newCh <-chan bgp.RouteEvent
	// IP-in-IP warnings are recomputed from the pools as they are now;
	// startup's (from the pools at start) would be stale or duplicates.
	var warnings []string
	for _, w := range cfg.Warnings {
		if !strings.Contains(w, "IP-in-IP") {
			warnings = append(warnings, w)
		}
	}
	for _, w := range ipipWanted(s) {
		if !slices.Contains(warnings, w) {
			warnings = append(warnings, w)
		}
	}

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
			want.Restarting = restarting
			nsp, err := cfg.NewSpeaker(want)
			if err == nil {
				err = nsp.Start(ctx)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("BGP speaker: %w", err))
			} else {
				sp = nsp
				newCh = sp.Routes()
				c.mu.Lock()
				c.sp, c.spCfg = sp, want
				c.mu.Unlock()
			}
		}
		if sp != nil {
			var pw []string
			peers, pw = DesiredPeers(s, node, PeerOptions{HoldTime: cfg.HoldTime, KeepaliveTime: cfg.KeepaliveTime, Secrets: cfg.Secrets})
			warnings = append(warnings, pw...)
			if err := sp.SetPeers(peers); err != nil {
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
	rs := DesiredRoutes(s, node, learned, RouteOptions{})
	if rs.VXLAN {
		mac, _ := net.ParseMAC(self.mac)
		mtu := cfg.VXLANMTU
		if mtu == 0 {
			if pm := parentMTU(h, self.v4.Addr()); pm > 0 {
				mtu = pm - routes.VXLANOverhead
			}
		}
		if err := routes.EnsureVXLAN(h, routes.VXLANConfig{
			Name: routes.VXLANDeviceName, VNI: routes.VXLANVNI, Port: routes.VXLANPort, MTU: mtu,
			ParentAddr: self.v4.Addr(), MAC: mac, TunnelAddr: self.tunnel, Logger: c.log,
		}); err != nil {
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
	rec.Set(desired)
	stats, err := rec.Apply()
	if err != nil {
		errs = append(errs, err)
	}
	vx.SetVTEPs(rs.VTEPs)
	if err := vx.Apply(); err != nil && !(errors.Is(err, routes.ErrDeviceNotFound) && !rs.VXLAN) {
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
	c.status.Warnings = warnings
	c.mu.Unlock()
	for _, w := range warnings {
		if !slices.Contains(c.warned, w) {
			c.log.Warn(w)
		}
	}
	c.warned = warnings
	return newCh, errors.Join(errs...)
}

// peerExpired is the speaker's OnHoldTimerExpired (any goroutine): GoBGP
// would keep the peer's routes for a graceful restart it is not doing, so
// they leave the kernel until the session is Established again.
func (c *Component) peerExpired(a netip.Addr) {
	c.deadMu.Lock()
	c.unreachable[a] = true
	c.deadMu.Unlock()
	c.log.Info("BGP peer unreachable (hold timer expired): dropping its routes instead of keeping them for a graceful restart", "peer", a)
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// unreachablePeers forgets peers that are back and returns the rest.
func (c *Component) unreachablePeers(ps []bgp.PeerStatus) map[netip.Addr]bool {
	c.deadMu.Lock()
	defer c.deadMu.Unlock()
	for _, p := range ps {
		if p.Established() {
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

// parentMTU is the MTU of the device that has addr.
func parentMTU(h *netlink.Handle, addr netip.Addr) int {
	links, err := h.LinkList()
	if err != nil {
		return 0
	}
	for _, l := range links {
		as, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				return l.Attrs().MTU
			}
		}
	}
	return 0
}
