// Package nodestatus is what tortie-node serves about its routing at
// StatusPath and what `tortie node status` reads: plain types, so the CLI
// does not link the BGP speaker.
package nodestatus

import (
	"encoding/json"
	"net/http"
	"time"
)

// Status endpoint: the agent serves Handler on loopback, and `tortie node
// status` reads it. GET StatusPath returns Status as JSON (200), whether
// or not BGP runs; any other method gets 405.
const (
	// DefaultStatusAddr is where the agent serves its health and status
	// (the port of Calico's health endpoint).
	DefaultStatusAddr = "127.0.0.1:9099"
	StatusPath        = "/status/routing"
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
	// IPIP says the IP-in-IP device (tunl0) is in use; IPIPTunnelAddr is
	// its address.
	IPIP           bool   `json:"ipip,omitempty"`
	IPIPTunnelAddr string `json:"ipipTunnelAddr,omitempty"`
	// WorkloadMTU is the MTU new workloads get, kept in MTUFile for the CNI
	// plugin (0: not kept); HostMTU is the host's, which it is worked out
	// from.
	WorkloadMTU int    `json:"workloadMTU,omitempty"`
	HostMTU     int    `json:"hostMTU,omitempty"`
	MTUFile     string `json:"mtuFile,omitempty"`
	// Wireguard is the WireGuard device and its peers; nil when encryption
	// is off.
	Wireguard *WireguardStatus `json:"wireguard,omitempty"`
	// Warnings are conditions an operator must see that do not stop the
	// node: a peer whose password secret is missing.
	Warnings []string `json:"warnings,omitempty"`
	// LastError is why the last apply failed, which keeps the node not
	// ready (an IP pool asking for an encapsulation this host cannot do,
	// a device that cannot be made); empty when it succeeded.
	LastError string    `json:"lastError,omitempty"`
	LastApply time.Time `json:"lastApply,omitzero"`
}

// PeerStatus is one session.
type PeerStatus struct {
	Address string    `json:"address"`
	Family  string    `json:"family"` // FamilyIPv4, FamilyIPv6 (of the session's address)
	Type    string    `json:"type"`   // mesh, global or node-specific (bgp.PeerType*)
	State   string    `json:"state"`  // BGP FSM state: Idle … Established
	Since   time.Time `json:"since,omitzero"`
	Info    string    `json:"info,omitempty"` // why it is not up
}

// WireguardStatus is this node's WireGuard device, as `wg show` reports it,
// with the node of each peer.
type WireguardStatus struct {
	Device     string          `json:"device"`
	Kind       string          `json:"kind,omitempty"` // "kernel" or "userspace"; empty until the device exists
	PublicKey  string          `json:"publicKey,omitempty"`
	ListenPort int             `json:"listenPort,omitempty"`
	Addr       string          `json:"addr,omitempty"`
	MTU        int             `json:"mtu,omitempty"`
	Peers      []WireguardPeer `json:"peers"`
	// Unencrypted says which nodes' workloads are reached unencrypted, and
	// why (no key published yet, no address, a shared key).
	Unencrypted []string `json:"unencrypted,omitempty"`
	// Error is why the device could not be read.
	Error string `json:"error,omitempty"`
}

// WireguardPeer is one other node this node encrypts to.
type WireguardPeer struct {
	Node            string    `json:"node"`
	PublicKey       string    `json:"publicKey"`
	Endpoint        string    `json:"endpoint,omitempty"`
	AllowedIPs      []string  `json:"allowedIPs"`
	LatestHandshake time.Time `json:"latestHandshake,omitzero"`
	ReceivedBytes   int64     `json:"receivedBytes"`
	SentBytes       int64     `json:"sentBytes"`
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

// Handler serves status() as JSON at StatusPath.
func Handler(status func() Status) http.Handler {
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
