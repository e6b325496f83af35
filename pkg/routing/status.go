package routing

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/tortie/tortie/pkg/bgp"
)

// Status endpoint: the agent serves Handler on loopback, and `tortie node
// status` reads it. GET StatusPath returns Status as JSON (200), whether
// or not BGP runs; any other method gets 405.
const (
	// DefaultStatusAddr is where the agent serves its health and status
	// (the port of Calico's health endpoint).
	DefaultStatusAddr = "127.0.0.1:9099"
	StatusPath        = "/status/bgp"
)

// Address families as the status tables name them.
const (
	FamilyIPv4 = "IPv4"
	FamilyIPv6 = "IPv6"
)

// Status is the routing state of this node, for `tortie node status`.
type Status struct {
	NodeName string `json:"nodeName"`
	Ready    bool   `json:"ready"`
	// BGPEnabled is false when no speaker runs; BGPDisabledReason says why.
	BGPEnabled        bool   `json:"bgpEnabled"`
	BGPDisabledReason string `json:"bgpDisabledReason,omitempty"`
	RouterID          string `json:"routerID,omitempty"`
	ASNumber          uint32 `json:"asNumber,omitempty"`
	// Peers are every configured session, IPv4 then IPv6, each by address.
	Peers          []PeerStatus `json:"peers"`
	Advertisements []string     `json:"advertisements,omitempty"`
	LearnedRoutes  int          `json:"learnedRoutes"`
	// Routes is the number of kernel routes desired; RoutesPending of them
	// wait for their device.
	Routes          int    `json:"routes"`
	RoutesPending   int    `json:"routesPending,omitempty"`
	VXLAN           bool   `json:"vxlan"`
	VXLANTunnelAddr string `json:"vxlanTunnelAddr,omitempty"`
	// Warnings are conditions an operator must see: IP-in-IP requested on a
	// kernel without it, a peer whose password secret is missing.
	Warnings  []string  `json:"warnings,omitempty"`
	LastError string    `json:"lastError,omitempty"`
	LastApply time.Time `json:"lastApply,omitzero"`
}

// PeerStatus is one session.
type PeerStatus struct {
	Address string    `json:"address"`
	Family  string    `json:"family"` // FamilyIPv4, FamilyIPv6 (of the session's address)
	Type    string    `json:"type"`   // bgp.PeerTypeMesh, PeerTypeGlobal, PeerTypeNodeSpecific
	State   string    `json:"state"`  // BGP FSM state: Idle … Established
	Since   time.Time `json:"since,omitzero"`
	Info    string    `json:"info,omitempty"` // why it is not up
}

// PeersByFamily splits peers into the per-family tables.
func (s Status) PeersByFamily(family string) []PeerStatus {
	var out []PeerStatus
	for _, p := range s.Peers {
		if p.Family == family {
			out = append(out, p)
		}
	}
	return out
}

// Status returns the current state.
func (c *Component) Status() Status {
	c.mu.Lock()
	st := c.status
	st.Warnings = slices.Clone(st.Warnings)
	st.Advertisements = slices.Clone(st.Advertisements)
	sp := c.sp
	c.mu.Unlock()
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
func StatusHandler(status func() Status) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(StatusPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(status())
	})
	return mux
}
