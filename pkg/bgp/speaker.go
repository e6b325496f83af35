package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Names of the GoBGP policy objects that implement Peer.NextHopSelf: one
// global export policy that sets the next hop to self for the neighbors in
// one set. GoBGP applies a neighbor set with no members to every neighbor,
// so the set always holds a placeholder that matches no peer.
const (
	nextHopSelfSet         = "tortie-next-hop-self"
	nextHopSelfPolicy      = "tortie-next-hop-self"
	nextHopSelfPlaceholder = "0.0.0.0/32"
)

// md5SampleInterval is how often the namespace's TCP MD5 counters are read,
// and md5Memory how long a rise is remembered when explaining a session
// that is down: a few connect retries.
const (
	md5SampleInterval = 2 * time.Second
	md5MemoryRetries  = 3
)

// Speaker is one BGP router. Create it with New, Start it, then tell it what
// it should do with SetPeers and SetAdvertisements as often as the desired
// state changes; it applies only differences.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer
	q   *eventQueue

	quietStop atomic.Bool // set while stopping: GoBGP complains about its own second stop

	// mu serialises the public methods and guards the desired and applied
	// state. It is held across calls into GoBGP; GoBGP's callbacks never
	// take it.
	mu        sync.Mutex
	started   bool
	stopped   bool
	cancel    context.CancelFunc
	done      chan struct{}
	peers     map[netip.Addr]Peer            // applied (what GoBGP has)
	adverts   map[netip.Prefix]Advertisement // applied
	nhs       []string                       // applied members of nextHopSelfSet
	wantPeers map[netip.Addr]Peer            // desired before Start
	wantAdv   map[netip.Prefix]Advertisement // desired before Start

	// st guards what GoBGP's callbacks write: session states and the
	// learned best paths.
	st      sync.Mutex
	status  map[netip.Addr]*peerState
	learned map[netip.Prefix]Route
	md5Rise struct{ notFound, unexpected, failure time.Time }
}

type peerState struct {
	peer    Peer
	state   string
	since   time.Time
	info    string // from the last disconnect
	dialErr string // from the last failed dial
}

// New checks cfg and returns a speaker that is not yet running.
func New(cfg Config) (*Speaker, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bgp: %w", err)
	}
	return &Speaker{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "bgp"),
		q:         newEventQueue(),
		peers:     map[netip.Addr]Peer{},
		adverts:   map[netip.Prefix]Advertisement{},
		wantPeers: map[netip.Addr]Peer{},
		wantAdv:   map[netip.Prefix]Advertisement{},
		status:    map[netip.Addr]*peerState{},
		learned:   map[netip.Prefix]Route{},
		done:      make(chan struct{}),
	}, nil
}

// Start starts the embedded server, opens the listeners (in this process's
// network namespace) and applies any peers and advertisements set before.
// The speaker stops when ctx is cancelled or Stop is called.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("bgp: already started")
	}
	s.started = true

	tap := &tapHandler{next: s.cfg.Logger.With("component", "gobgp").Handler(), tap: s.tapLog,
		drop: func(msg string) bool { return s.quietStop.Load() && msg == "failed to stop BGP server" }}
	s.srv = server.NewBgpServer(server.LoggerOption(slog.New(tap), nil))
	go s.srv.Serve()

	g := &api.Global{
		Asn:        s.cfg.ASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: int32(s.cfg.ListenPort),
		// Only what peers are configured with. Without a list GoBGP makes
		// a RIB for each of the 25-odd families it knows, each of 2,048
		// shards: 11 MB of an agent's heap for nothing.
		Families: []uint32{
			uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST]),
			uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV6_UNICAST]),
		},
	}
	for _, a := range s.cfg.ListenAddrs {
		g.ListenAddresses = append(g.ListenAddresses, a.String())
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		s.srv.Stop()
		s.stopped = true
		s.q.close()
		return fmt.Errorf("bgp: start: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	err := s.srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{
		OnBestPath:   s.onBestPath,
		OnPeerUpdate: s.onPeerUpdate,
		OnPathEor:    s.onEndOfRIB,
	}, server.WatchBestPath(true), server.WatchPeer(), server.WatchEor(false))
	if err == nil {
		err = s.setupNextHopSelf(ctx)
	}
	if err != nil {
		cancel()
		s.stopLocked(false)
		return fmt.Errorf("bgp: start: %w", err)
	}
	go s.sampleMD5(wctx)
	go func() {
		select {
		case <-ctx.Done():
			s.Stop()
		case <-s.done:
		}
	}()
	s.log.Info("BGP speaker started", "routerID", s.cfg.RouterID, "asn", s.cfg.ASN, "listenPort", s.cfg.ListenPort)

	errP := s.applyPeers(ctx, s.wantPeers)
	errA := s.applyAdverts(s.wantAdv)
	s.wantPeers, s.wantAdv = nil, nil
	return errors.Join(errP, errA)
}

// Stop stops the speaker. Sessions with graceful restart enabled are closed
// without a NOTIFICATION, so those peers keep our routes for the restart
// time while we come back; the others are told we are going. Idempotent.
func (s *Speaker) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(true)
}

// StopAndWithdraw stops the speaker and tells every peer, so that they drop
// our routes now: for a node that leaves for good.
func (s *Speaker) StopAndWithdraw() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(false)
}

func (s *Speaker) stopLocked(graceful bool) error {
	if !s.started || s.stopped {
		s.stopped = true
		s.q.close()
		return nil
	}
	s.stopped = true
	close(s.done)
	if s.cancel != nil {
		s.cancel()
	}
	err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: graceful})
	s.quietStop.Store(true)
	s.srv.Stop() // stops GoBGP's BFD goroutine; StopBgp has already stopped the rest
	s.q.close()
	s.log.Info("BGP speaker stopped", "graceful", graceful)
	if err != nil {
		return fmt.Errorf("bgp: stop: %w", err)
	}
	return nil
}

// SetPeers makes the speaker's sessions those in peers: new ones are added,
// gone ones deleted (their routes withdrawn), changed ones rebuilt. A change
// of Type alone only relabels the status. On error, the peers that could be
// applied are, and the rest are retried by the next call.
func (s *Speaker) SetPeers(ctx context.Context, peers []Peer) error {
	want := make(map[netip.Addr]Peer, len(peers))
	for i, p := range peers {
		if err := p.validate(); err != nil {
			return fmt.Errorf("bgp: peers[%d] (%s): %w", i, p.Address, err)
		}
		if _, dup := want[p.Address]; dup {
			return fmt.Errorf("bgp: peers[%d]: duplicate address %s", i, p.Address)
		}
		want[p.Address] = p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return errors.New("bgp: stopped")
	case !s.started:
		s.wantPeers = want
		return nil
	}
	return s.applyPeers(ctx, want)
}

func (s *Speaker) applyPeers(ctx context.Context, want map[netip.Addr]Peer) error {
	var errs []error

	// Next-hop-self membership first, so a rebuilt session exports with it.
	var nhs []string
	for _, p := range want {
		if p.NextHopSelf {
			nhs = append(nhs, netip.PrefixFrom(p.Address, p.Address.BitLen()).String())
		}
	}
	slices.Sort(nhs)
	// The set is changed in place (append, remove): GoBGP's Replace puts a
	// new set object in its map while the policy statement keeps using the
	// old one, so a replaced set silently stops applying.
	var added, removed []string
	for _, m := range nhs {
		if !slices.Contains(s.nhs, m) {
			added = append(added, m)
		}
	}
	for _, m := range s.nhs {
		if !slices.Contains(nhs, m) {
			removed = append(removed, m)
		}
	}
	set := func(list []string) *api.DefinedSet {
		return &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: nextHopSelfSet, List: list}
	}
	if len(added) > 0 {
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set(added)}); err != nil {
			errs = append(errs, fmt.Errorf("next-hop-self set: %w", err))
			nhs = slices.DeleteFunc(nhs, func(m string) bool { return slices.Contains(added, m) })
		}
	}
	if len(removed) > 0 {
		if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: set(removed)}); err != nil {
			errs = append(errs, fmt.Errorf("next-hop-self set: %w", err))
			nhs = append(nhs, removed...)
		}
	}
	slices.Sort(nhs)
	s.nhs = nhs

	for addr, have := range s.peers {
		p, keep := want[addr]
		if keep && sameSession(have, p) {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("delete peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.st.Lock()
		delete(s.status, addr)
		s.st.Unlock()
		s.log.Info("BGP peer deleted", "peer", addr, "rebuild", keep)
	}
	for _, addr := range sortedKeys(want) {
		p := want[addr]
		if have, ok := s.peers[addr]; ok {
			if have != p { // only Type differs
				s.peers[addr] = p
				s.st.Lock()
				if ps := s.status[addr]; ps != nil {
					ps.peer = p
				}
				s.st.Unlock()
			}
			continue
		}
		s.st.Lock()
		s.status[addr] = &peerState{peer: p, state: StateIdle, since: time.Now()}
		s.st.Unlock()
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerToAPI(s.cfg, p)}); err != nil {
			s.st.Lock()
			delete(s.status, addr)
			s.st.Unlock()
			errs = append(errs, fmt.Errorf("add peer %s: %w", addr, err))
			continue
		}
		s.peers[addr] = p
		s.log.Info("BGP peer added", "peer", addr, "asn", p.ASN, "type", p.Type, "passive", p.Passive,
			"rrClient", p.RouteReflectorClient, "md5", p.Password != "", "restartTime", restartTime(s.cfg, p))
	}
	if len(errs) > 0 {
		return fmt.Errorf("bgp: %w", errors.Join(errs...))
	}
	return nil
}

// SetAdvertisements makes the prefixes we announce exactly advs: new and
// changed ones are (re)announced, gone ones withdrawn.
func (s *Speaker) SetAdvertisements(advs []Advertisement) error {
	want := make(map[netip.Prefix]Advertisement, len(advs))
	for i, a := range advs {
		if err := a.validate(); err != nil {
			return fmt.Errorf("bgp: advertisements[%d] (%s): %w", i, a.Prefix, err)
		}
		if _, dup := want[a.Prefix]; dup {
			return fmt.Errorf("bgp: advertisements[%d]: duplicate prefix %s", i, a.Prefix)
		}
		a.Communities = slices.Clone(a.Communities)
		want[a.Prefix] = a
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return errors.New("bgp: stopped")
	case !s.started:
		s.wantAdv = want
		return nil
	}
	return s.applyAdverts(want)
}

func (s *Speaker) applyAdverts(want map[netip.Prefix]Advertisement) error {
	var errs []error
	var del []*apiutil.Path
	var delPfx []netip.Prefix
	for pfx, have := range s.adverts {
		if _, keep := want[pfx]; keep {
			continue
		}
		p, err := advertToPath(have, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		del = append(del, p)
		delPfx = append(delPfx, pfx)
	}
	if len(del) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: del}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw: %w", err))
		} else {
			for _, pfx := range delPfx {
				delete(s.adverts, pfx)
			}
			s.log.Info("BGP advertisements withdrawn", "prefixes", delPfx)
		}
	}

	var add []*apiutil.Path
	var addAdv []Advertisement
	for _, pfx := range sortedPrefixes(want) {
		a := want[pfx]
		if have, ok := s.adverts[pfx]; ok && sameAdvertisement(have, a) {
			continue
		}
		p, err := advertToPath(a, false)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", pfx, err))
			continue
		}
		add = append(add, p)
		addAdv = append(addAdv, a)
	}
	if len(add) > 0 {
		// Announcing a prefix again replaces our previous path for it.
		resps, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add})
		var announced []netip.Prefix
		for i, a := range addAdv {
			if i < len(resps) && resps[i].Error != nil {
				errs = append(errs, fmt.Errorf("announce %s: %w", a.Prefix, resps[i].Error))
				continue
			}
			if err != nil && len(resps) == 0 {
				continue
			}
			s.adverts[a.Prefix] = a
			announced = append(announced, a.Prefix)
		}
		if err != nil && len(resps) == 0 {
			errs = append(errs, fmt.Errorf("announce: %w", err))
		}
		if len(announced) > 0 {
			s.log.Info("BGP advertisements announced", "prefixes", announced)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("bgp: %w", errors.Join(errs...))
	}
	return nil
}

// Routes returns the stream of changes to the learned best paths. It is
// the same channel on every call; it is closed when the speaker stops.
// Events are queued without bound, so a slow reader never slows BGP.
func (s *Speaker) Routes() <-chan RouteEvent { return s.q.out }

// LearnedRoutes returns the current learned best paths, sorted by prefix:
// what the stream of Routes adds up to, for a periodic full resync.
func (s *Speaker) LearnedRoutes() []Route {
	s.st.Lock()
	defer s.st.Unlock()
	out := make([]Route, 0, len(s.learned))
	for _, r := range s.learned {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// Peers returns the status of every configured session, sorted by address.
func (s *Speaker) Peers() []PeerStatus {
	s.st.Lock()
	defer s.st.Unlock()
	memory := md5MemoryRetries*s.cfg.ConnectRetry + md5SampleInterval
	recent := func(t time.Time) bool { return !t.IsZero() && time.Since(t) < memory }
	out := make([]PeerStatus, 0, len(s.status))
	for addr, ps := range s.status {
		st := PeerStatus{Address: addr, Type: ps.peer.Type, State: ps.state, Since: ps.since}
		if ps.state != StateEstablished {
			withPW := ps.peer.Password != ""
			switch {
			case withPW && recent(s.md5Rise.failure):
				st.Info = "Connect: TCP MD5 authentication failed"
			case withPW && recent(s.md5Rise.notFound):
				st.Info = "Connect: TCP MD5 signature missing (no password on the peer)"
			case !withPW && recent(s.md5Rise.unexpected):
				st.Info = "Connect: unexpected TCP MD5 signature (the peer has a password, we have none)"
			case ps.dialErr != "":
				st.Info = ps.dialErr
				if withPW && strings.Contains(ps.dialErr, "timed out") {
					st.Info += " (TCP MD5 is on: a wrong password on either side looks like this)"
				}
			default:
				st.Info = ps.info
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out
}

// onBestPath folds GoBGP's best-path changes into learned and the event
// stream. Our own paths are not routes to program; when one of them becomes
// best for a prefix we also learned, the learned one is withdrawn here.
func (s *Speaker) onBestPath(paths []*apiutil.Path, _ time.Time) {
	var evs []RouteEvent
	s.st.Lock()
	for _, p := range paths {
		if p == nil || (p.Family != bgp.RF_IPv4_UC && p.Family != bgp.RF_IPv6_UC) {
			continue
		}
		nlri, ok := p.Nlri.(*bgp.IPAddrPrefix)
		if !ok {
			continue
		}
		pfx := nlri.Prefix
		old, had := s.learned[pfx]
		r, learnedPath := pathToRoute(p)
		if p.Withdrawal || !learnedPath {
			if had {
				delete(s.learned, pfx)
				evs = append(evs, RouteEvent{Withdrawn: true, Route: old})
			}
			continue
		}
		if had && old == r {
			continue
		}
		s.learned[pfx] = r
		evs = append(evs, RouteEvent{Route: r})
	}
	s.st.Unlock()
	s.q.push(evs...)
}

var stateNames = map[bgp.FSMState]string{
	bgp.BGP_FSM_IDLE:        StateIdle,
	bgp.BGP_FSM_CONNECT:     StateConnect,
	bgp.BGP_FSM_ACTIVE:      StateActive,
	bgp.BGP_FSM_OPENSENT:    StateOpenSent,
	bgp.BGP_FSM_OPENCONFIRM: StateOpenConfirm,
	bgp.BGP_FSM_ESTABLISHED: StateEstablished,
}

func (s *Speaker) onPeerUpdate(ev *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
	if ev == nil || ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr := ev.Peer.State.NeighborAddress.WithZone("")
	state := stateNames[ev.Peer.State.SessionState]
	if state == "" {
		state = ev.Peer.State.SessionState.String()
	}
	s.st.Lock()
	ps := s.status[addr]
	if ps == nil { // deleted meanwhile
		s.st.Unlock()
		return
	}
	old := ps.state
	if state != old {
		ps.state, ps.since = state, t
	}
	if state == StateEstablished {
		ps.info, ps.dialErr = "", ""
	} else if msg := disconnectInfo(ev.Peer.State.DisconnectReason, ev.Peer.State.DisconnectMessage); msg != "" {
		ps.info = msg
	}
	info := ps.info
	var evs []RouteEvent
	if old == StateEstablished && ev.Peer.State.DisconnectReason == api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART {
		// GoBGP keeps the peer's paths, marked stale, without telling
		// best-path watchers (the best path did not change); say so here.
		evs = s.markStale(addr, "", true)
	}
	since := ps.since
	s.st.Unlock()
	s.q.push(evs...)
	if state != old {
		s.log.Info("BGP session state changed", "peer", addr, "from", old, "to", state, "info", info)
		if state == StateEstablished && resendAfterEstablished > 0 {
			time.AfterFunc(resendAfterEstablished, func() { s.resendTo(addr, since) })
		}
	}
}

// resendAfterEstablished is how long after a session comes up the speaker
// sends the peer its whole table again (resendTo); 0 (tests only) sends
// nothing again.
var resendAfterEstablished = time.Second

// resendTo sends the peer every route it should have again (a soft reset
// out), if the session that came up at since is still the one up. GoBGP
// (v4.8.0 and v4.9.0) can lose a route that changes while a session comes
// up: the new peer's first table is taken before the change, and the change
// itself is not sent because the peer is not yet marked Established. A
// reflector whose 20 clients all start at once lost one route at some
// client in about half the runs (bench/scale); one whole table sent again a
// second later makes up for whatever was lost then, at the cost of sending
// it twice.
func (s *Speaker) resendTo(addr netip.Addr, since time.Time) {
	s.st.Lock()
	ps := s.status[addr]
	same := ps != nil && ps.state == StateEstablished && ps.since.Equal(since)
	s.st.Unlock()
	if !same {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
		s.log.Warn("could not send a peer its routes again after its session came up", "peer", addr, "err", err)
	}
}

// onEndOfRIB: a peer has resent all its routes of a family. Those it kept
// through its graceful restart are fresh again; GoBGP withdraws the ones it
// did not resend right after this event.
func (s *Speaker) onEndOfRIB(p *apiutil.Path, _ time.Time) {
	if p == nil || !p.PeerAddress.IsValid() {
		return
	}
	s.st.Lock()
	evs := s.markStale(p.PeerAddress.WithZone(""), familyName(p.Family), false)
	s.st.Unlock()
	s.q.push(evs...)
}

// markStale sets the Stale flag of the routes learned from peer (of family
// fam, or all when fam is ""), returning the events for those that changed.
// s.st must be held.
func (s *Speaker) markStale(peer netip.Addr, fam Family, stale bool) []RouteEvent {
	var evs []RouteEvent
	for _, pfx := range slices.SortedFunc(maps.Keys(s.learned), comparePrefix) {
		r := s.learned[pfx]
		if r.Peer != peer || (fam != "" && r.Family != fam) || r.Stale == stale {
			continue
		}
		r.Stale = stale
		s.learned[pfx] = r
		evs = append(evs, RouteEvent{Route: r})
	}
	return evs
}

// disconnectInfo words GoBGP's reason for the last session loss the way
// BIRD's status column does.
func disconnectInfo(r api.PeerState_DisconnectReason, msg string) string {
	switch r {
	case api.PeerState_DISCONNECT_REASON_UNSPECIFIED, api.PeerState_DISCONNECT_REASON_IDLE_TIMER_EXPIRED:
		return ""
	case api.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED:
		return "Received: " + strings.TrimPrefix(msg, "notification-received ")
	case api.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT:
		return "Error: " + strings.TrimPrefix(msg, "notification-sent ")
	case api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED:
		return "Error: hold timer expired"
	case api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART:
		return "Graceful restart: keeping the peer's routes as stale"
	case api.PeerState_DISCONNECT_REASON_RESTART_TIMER_EXPIRED:
		return "Graceful restart: peer did not return in time, routes dropped"
	case api.PeerState_DISCONNECT_REASON_READ_FAILED, api.PeerState_DISCONNECT_REASON_WRITE_FAILED:
		return "Socket: connection closed"
	case api.PeerState_DISCONNECT_REASON_BAD_PEER_AS:
		return "Error: bad peer AS"
	}
	return msg
}

// tapLog receives GoBGP's log records that explain a down session.
func (s *Speaker) tapLog(peer, msg string, attrs map[string]string) {
	addr, err := netip.ParseAddr(peer)
	if err != nil {
		return
	}
	if msg == gobgpHoldExpired && s.cfg.OnHoldTimerExpired != nil {
		s.cfg.OnHoldTimerExpired(addr.Unmap())
	}
	if msg == gobgpFailedToConnect {
		e := attrs["Error"]
		if i := strings.LastIndex(e, ": "); i >= 0 {
			e = e[i+2:]
		}
		if strings.Contains(e, "timeout") {
			e = "no answer, timed out"
		}
		s.st.Lock()
		if ps := s.status[addr.WithZone("")]; ps != nil && ps.state != StateEstablished {
			ps.dialErr = "Connect: " + e
		}
		s.st.Unlock()
	}
}

func (s *Speaker) sampleMD5(ctx context.Context) {
	t := time.NewTicker(md5SampleInterval)
	defer t.Stop()
	last := readMD5Counters()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := readMD5Counters()
		ts := time.Now()
		s.st.Lock()
		if now.Failure > last.Failure {
			s.md5Rise.failure = ts
		}
		if now.NotFound > last.NotFound {
			s.md5Rise.notFound = ts
		}
		if now.Unexpected > last.Unexpected {
			s.md5Rise.unexpected = ts
		}
		s.st.Unlock()
		last = now
	}
}

func (s *Speaker) setupNextHopSelf(ctx context.Context) error {
	if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR,
		Name:        nextHopSelfSet,
		List:        []string{nextHopSelfPlaceholder},
	}}); err != nil {
		return err
	}
	pol := &api.Policy{Name: nextHopSelfPolicy, Statements: []*api.Statement{{
		Name:       nextHopSelfPolicy,
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: nextHopSelfSet}},
		Actions:    &api.Actions{Nexthop: &api.NexthopAction{Self: true}},
	}}}
	if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return err
	}
	return s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies:      []*api.Policy{{Name: nextHopSelfPolicy}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}})
}

func sortedKeys(m map[netip.Addr]Peer) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func sortedPrefixes(m map[netip.Prefix]Advertisement) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
