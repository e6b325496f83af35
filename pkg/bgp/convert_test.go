package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Tests of the pure parts; they need no root.

func TestPeerToAPI(t *testing.T) {
	cfg := Config{RouterID: addr("10.0.0.1"), GracefulRestart: true}.Defaults()
	p := Peer{
		Address: addr("10.0.0.2"), ASN: 65000, Password: "pw", Type: PeerTypeGlobal, Passive: true,
		RouteReflectorClient: true, HoldTime: 9 * time.Second, MaxRestartTime: 30 * time.Second,
		SourceAddr: addr("10.0.0.1"), TTLSecurity: 1,
	}
	a := peerToAPI(cfg, p)
	switch {
	case a.Conf.NeighborAddress != "10.0.0.2" || a.Conf.PeerAsn != 65000 || a.Conf.AuthPassword != "pw":
		t.Errorf("conf: %v", a.Conf)
	case !a.Transport.PassiveMode || a.Transport.LocalAddress != "10.0.0.1":
		t.Errorf("transport: %v", a.Transport)
	case a.Timers.Config.HoldTime != 9 || a.Timers.Config.KeepaliveInterval != 3 || a.Timers.Config.ConnectRetry != 5:
		t.Errorf("timers: %v", a.Timers.Config)
	case a.RouteReflector.RouteReflectorClusterId != "10.0.0.1":
		t.Errorf("cluster ID defaults to the router ID: %v", a.RouteReflector)
	case a.GracefulRestart == nil || a.GracefulRestart.RestartTime != 30:
		t.Errorf("graceful restart: %v", a.GracefulRestart)
	case a.TtlSecurity.TtlMin != 255:
		t.Errorf("ttl security: %v", a.TtlSecurity)
	case len(a.AfiSafis) != 2 || a.AfiSafis[1].Config.Family.Afi != api.Family_AFI_IP6 || !a.AfiSafis[1].MpGracefulRestart.Config.Enabled:
		t.Errorf("families: %v", a.AfiSafis)
	}

	cfg.GracefulRestart = false
	if a := peerToAPI(cfg, Peer{Address: addr("fd00::2"), ASN: 1}); a.GracefulRestart != nil || a.AfiSafis[0].MpGracefulRestart != nil {
		t.Errorf("graceful restart on though disabled: %v", a.GracefulRestart)
	}
}

func TestPeerValidate(t *testing.T) {
	good := Peer{Address: addr("10.0.0.2"), ASN: 64512}
	for _, tc := range []struct {
		mod  func(*Peer)
		want string
	}{
		{func(p *Peer) {}, ""},
		{func(p *Peer) { p.ASN = 0 }, "asn"},
		{func(p *Peer) { p.Address = netip.Addr{} }, "address"},
		{func(p *Peer) { p.HoldTime = time.Second }, "holdTime"},
		{func(p *Peer) { p.ClusterID = addr("1.0.0.1") }, "without routeReflectorClient"},
		{func(p *Peer) { p.TTLSecurity, p.EBGPMultihop = 1, 2 }, "mutually exclusive"},
		{func(p *Peer) { p.SourceAddr = addr("fd00::1") }, "sourceAddr"},
	} {
		p := good
		tc.mod(&p)
		err := p.validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: err %v, want %q", p, err, tc.want)
		}
	}
}

func TestSameSession(t *testing.T) {
	a := Peer{Address: addr("10.0.0.2"), ASN: 64512, Type: PeerTypeMesh}
	b := a
	b.Type = PeerTypeGlobal
	if !sameSession(a, b) {
		t.Error("a relabel rebuilds the session")
	}
	b.Password = "x"
	if sameSession(a, b) {
		t.Error("a new password keeps the session")
	}
}

func TestCommunities(t *testing.T) {
	std, large, err := parseCommunities([]string{"64512:100", "no-export", "4200000000:1:2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(std) != 2 || std[0] != 64512<<16|100 || std[1] != 0xFFFFFF01 {
		t.Errorf("standard: %x", std)
	}
	if len(large) != 1 || large[0].ASN != 4200000000 || large[0].LocalData1 != 1 || large[0].LocalData2 != 2 {
		t.Errorf("large: %+v", large)
	}
	for _, bad := range []string{"65536:1", "a:b", "1", "1:2:3:4"} {
		if _, _, err := parseCommunities([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// An advertisement rendered for GoBGP and read back as if learned keeps its
// prefix, next hop and family: the v4 one with NEXT_HOP, the v6 one with
// MP_REACH_NLRI.
func TestAdvertRoundTrip(t *testing.T) {
	for _, a := range []Advertisement{
		{Prefix: pfx("10.244.1.0/26"), NextHop: addr("10.0.0.1"), Communities: []string{"1:2"}},
		{Prefix: pfx("fd00:244:1::/122"), NextHop: addr("fd00::1")},
	} {
		p, err := advertToPath(a, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := pathToRoute(p); ok {
			t.Errorf("%s: a local path reads as learned", a.Prefix)
		}
		p.PeerAddress = addr("10.0.0.9")
		r, ok := pathToRoute(p)
		if !ok || r.Prefix != a.Prefix || r.NextHop != a.NextHop || r.Peer != p.PeerAddress || r.Family != familyName(familyOf(a.Prefix)) {
			t.Errorf("%s: round trip gave %+v", a.Prefix, r)
		}
	}
	p, _ := advertToPath(Advertisement{Prefix: pfx("10.1.0.0/16")}, false)
	for _, at := range p.Attrs {
		if nh, ok := at.(*bgp.PathAttributeNextHop); ok && !nh.Value.IsUnspecified() {
			t.Errorf("default next hop %s, want unspecified (GoBGP fills in the session address)", nh.Value)
		}
	}
	if (&Advertisement{Prefix: pfx("10.1.0.1/16")}).validate() == nil {
		t.Error("prefix with host bits accepted")
	}
}

func TestOnBestPath(t *testing.T) {
	s, err := New(Config{RouterID: addr("10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.q.close()
	learned := func(prefix, nh string, withdraw bool) *apiutil.Path {
		p, _ := advertToPath(Advertisement{Prefix: pfx(prefix), NextHop: addr(nh)}, withdraw)
		p.PeerAddress = addr("10.0.0.2")
		return p
	}
	local, _ := advertToPath(Advertisement{Prefix: pfx("10.244.1.0/26")}, false)
	s.onBestPath([]*apiutil.Path{learned("10.244.2.0/26", "10.0.0.2", false), local}, time.Now())
	s.onBestPath([]*apiutil.Path{learned("10.244.2.0/26", "10.0.0.2", false)}, time.Now()) // no change
	s.onBestPath([]*apiutil.Path{learned("10.244.2.0/26", "10.0.0.2", true)}, time.Now())
	var got []RouteEvent
	for range 2 {
		got = append(got, <-s.Routes())
	}
	if len(got) != 2 || got[0].Withdrawn || got[0].Route.Prefix != pfx("10.244.2.0/26") || !got[1].Withdrawn {
		t.Errorf("events %+v", got)
	}
	if rs := s.LearnedRoutes(); len(rs) != 0 {
		t.Errorf("learned after withdraw: %+v", rs)
	}
}
