package routing

import (
	"net/http"
	"slices"

	"github.com/tortie/tortie/pkg/bgp"
	"github.com/tortie/tortie/pkg/nodestatus"
)

// The status endpoint's types live in package nodestatus, which the CLI
// reads without linking the BGP speaker; these are their names here.
const (
	DefaultStatusAddr = nodestatus.DefaultStatusAddr
	StatusPath        = nodestatus.StatusPath
	FamilyIPv4        = nodestatus.FamilyIPv4
	FamilyIPv6        = nodestatus.FamilyIPv6
)

type (
	Status     = nodestatus.Status
	PeerStatus = nodestatus.PeerStatus
)

// Status returns the current state.
func (c *Component) Status() Status {
	c.mu.Lock()
	st := c.status
	st.Warnings = slices.Clone(st.Warnings)
	st.Advertisements = slices.Clone(st.Advertisements)
	sp := c.sp
	wg, wgNodes := c.wg, c.wgNodes
	c.mu.Unlock()
	if st.Wireguard != nil {
		st.Wireguard = wireguardStatus(*st.Wireguard, wg, wgNodes)
	}
	st.Ready = c.Ready()
	st.Peers = []PeerStatus{}
	if sp != nil {
		st.Peers = peerStatuses(sp.Peers())
	}
	return st
}

func peerStatuses(ps []bgp.PeerStatus) []PeerStatus {
	out := make([]PeerStatus, 0, len(ps))
	for _, p := range ps {
		fam := FamilyIPv4
		if p.Address.Is6() {
			fam = FamilyIPv6
		}
		out = append(out, PeerStatus{Address: p.Address.String(), Family: fam, Type: p.Type, State: p.State, Since: p.Since, Info: p.Info})
	}
	slices.SortStableFunc(out, func(a, b PeerStatus) int {
		if a.Family != b.Family {
			if a.Family == FamilyIPv4 {
				return -1
			}
			return 1
		}
		return 0
	})
	return out
}

// Handler serves the component's Status at StatusPath.
func (c *Component) Handler() http.Handler { return StatusHandler(c.Status) }

// StatusHandler serves status() as JSON at StatusPath.
func StatusHandler(status func() Status) http.Handler { return nodestatus.Handler(status) }
