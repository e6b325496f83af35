package bgp

// Pure conversions between tortie's types and GoBGP's. No I/O, so they are
// tested without root.

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

var (
	apiFamilyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	apiFamilyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// seconds rounds a duration up to whole seconds, GoBGP's unit for timers.
func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Second - 1) / time.Second)
}

// restartTime is the graceful restart time we advertise to p, or 0 when
// graceful restart is off for p.
func restartTime(cfg Config, p Peer) time.Duration {
	if !cfg.GracefulRestart && !p.GracefulRestart {
		return 0
	}
	if p.MaxRestartTime > 0 {
		return p.MaxRestartTime
	}
	return cfg.RestartTime
}

// peerToAPI renders the GoBGP neighbor for p. Both unicast families are
// always configured: GoBGP offers both in its OPEN and uses those the peer
// also offers (a BIRD with only an ipv4 channel still comes up).
func peerToAPI(cfg Config, p Peer) *api.Peer {
	hold := p.HoldTime
	if hold == 0 {
		hold = DefaultHoldTime
	}
	keepalive := p.KeepaliveTime
	if keepalive == 0 {
		keepalive = hold / 3
	}
	gr := restartTime(cfg, p)
	out := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password,
			Description:     p.Type,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      max(seconds(cfg.ConnectRetry), 1),
			HoldTime:          seconds(hold),
			KeepaliveInterval: max(seconds(keepalive), 1),
			// After a reset we sent (admin reset) GoBGP would sit idle
			// for 30s before dialling again; a node agent wants it back now.
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{
			PassiveMode: p.Passive,
			RemotePort:  uint32(p.Port),
		},
	}
	if p.SourceAddr.IsValid() {
		out.Transport.LocalAddress = p.SourceAddr.String()
	}
	if p.RouteReflectorClient {
		out.RouteReflector = &api.RouteReflector{RouteReflectorClient: true}
		if p.ClusterID.IsValid() {
			out.RouteReflector.RouteReflectorClusterId = p.ClusterID.String()
		} else {
			out.RouteReflector.RouteReflectorClusterId = cfg.RouterID.String()
		}
	}
	if p.TTLSecurity > 0 {
		out.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: uint32(256 - p.TTLSecurity)}
	}
	if p.EBGPMultihop > 0 {
		out.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.EBGPMultihop)}
	}
	for _, f := range []*api.Family{apiFamilyV4, apiFamilyV6} {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if gr > 0 {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		out.AfiSafis = append(out.AfiSafis, af)
	}
	if gr > 0 {
		out.GracefulRestart = &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(seconds(gr)),
			// How long a restarting speaker waits for its peers' End-of-RIB
			// before sending its own routes anyway (RFC 4724's
			// selection deferral timer).
			DeferralTime:    uint32(min(seconds(gr), math.MaxUint16)),
			LocalRestarting: cfg.Restarting,
		}
	}
	return out
}

// familyOf returns the unicast family a prefix belongs to.
func familyOf(p netip.Prefix) bgp.Family {
	if p.Addr().Is4() {
		return bgp.RF_IPv4_UC
	}
	return bgp.RF_IPv6_UC
}

func familyName(f bgp.Family) Family {
	if f == bgp.RF_IPv6_UC {
		return IPv6Unicast
	}
	return IPv4Unicast
}

// advertToPath renders a locally originated path. withdraw builds the path
// GoBGP's DeletePath expects for the same prefix.
func advertToPath(a Advertisement, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(a.Prefix)
	if err != nil {
		return nil, err
	}
	fam := familyOf(a.Prefix)
	nh := a.NextHop
	if !nh.IsValid() {
		// Unspecified: GoBGP replaces it with our address on each session.
		if fam == bgp.RF_IPv4_UC {
			nh = netip.IPv4Unspecified()
		} else {
			nh = netip.IPv6Unspecified()
		}
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if fam == bgp.RF_IPv4_UC && nh.Is4() {
		a, err := bgp.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	} else {
		a, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	std, large, err := parseCommunities(a.Communities)
	if err != nil {
		return nil, err
	}
	if len(std) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(std))
	}
	if len(large) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(large))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, Withdrawal: withdraw}, nil
}

var wellKnownCommunities = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
}

// parseCommunities splits "aa:nn" (RFC 1997) from "aa:nn:mm" (RFC 8092).
func parseCommunities(in []string) (std []uint32, large []*bgp.LargeCommunity, err error) {
	for _, s := range in {
		if v, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
			std = append(std, v)
			continue
		}
		parts := strings.Split(s, ":")
		switch len(parts) {
		case 2:
			hi, err1 := strconv.ParseUint(parts[0], 10, 16)
			lo, err2 := strconv.ParseUint(parts[1], 10, 16)
			if err1 != nil || err2 != nil {
				return nil, nil, fmt.Errorf("%q: community parts must be 0..65535", s)
			}
			std = append(std, uint32(hi)<<16|uint32(lo))
		case 3:
			var v [3]uint32
			for i, p := range parts {
				n, err := strconv.ParseUint(p, 10, 32)
				if err != nil {
					return nil, nil, fmt.Errorf("%q: large community parts must be 0..4294967295", s)
				}
				v[i] = uint32(n)
			}
			large = append(large, bgp.NewLargeCommunity(v[0], v[1], v[2]))
		default:
			return nil, nil, fmt.Errorf("%q: want aa:nn or aa:nn:mm", s)
		}
	}
	return std, large, nil
}

// pathToRoute extracts a learned route. ok is false for paths that are not
// learned unicast routes: our own advertisements, End-of-RIB markers and
// other families.
func pathToRoute(p *apiutil.Path) (r Route, ok bool) {
	if p == nil || !p.PeerAddress.IsValid() {
		return Route{}, false // locally originated
	}
	if p.Family != bgp.RF_IPv4_UC && p.Family != bgp.RF_IPv6_UC {
		return Route{}, false
	}
	nlri, isPrefix := p.Nlri.(*bgp.IPAddrPrefix)
	if !isPrefix {
		return Route{}, false
	}
	r = Route{
		Prefix: nlri.Prefix,
		Peer:   p.PeerAddress.WithZone(""),
		Family: familyName(p.Family),
		Stale:  p.Stale,
	}
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			r.NextHop = a.Value
		case *bgp.PathAttributeMpReachNLRI:
			r.NextHop = a.Nexthop
			if !r.NextHop.IsValid() || r.NextHop.IsUnspecified() {
				r.NextHop = a.LinkLocalNexthop
			}
		}
	}
	return r, true
}
