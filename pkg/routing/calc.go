package routing

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/bgp"
	"github.com/tortie/tortie/pkg/dataplane/routes"
	"github.com/tortie/tortie/pkg/selector"
)

// BGPSettings is the BGP configuration that applies to one node: the
// cluster's "default" BGPConfiguration overlaid by its "node.<name>" one,
// and the node's own AS number.
type BGPSettings struct {
	Mesh                 bool
	ASN                  uint32 // this node's AS
	ClusterASN           uint32 // the cluster default, for nodes without their own
	ListenPort           int    // 0 = 179
	MeshPassword         *v3.BGPPassword
	MeshMaxRestartTime   time.Duration
	ServiceCIDRs         []netip.Prefix
	Communities          map[string]string // name → value
	PrefixAdvertisements []v3.PrefixAdvertisement
}

// ResolveBGP computes the settings for node from the snapshot.
func ResolveBGP(s *Snapshot, node string) BGPSettings {
	st := BGPSettings{Mesh: true, ClusterASN: bgp.DefaultASN, Communities: map[string]string{}}
	apply := func(c *v3.BGPConfiguration, global bool) {
		if c == nil {
			return
		}
		sp := &c.Spec
		if sp.NodeToNodeMeshEnabled != nil && global {
			st.Mesh = *sp.NodeToNodeMeshEnabled
		}
		if sp.ASNumber != nil && global {
			st.ClusterASN = uint32(*sp.ASNumber)
		}
		if sp.ListenPort != 0 {
			st.ListenPort = int(sp.ListenPort)
		}
		if sp.NodeMeshPassword != nil && global {
			st.MeshPassword = sp.NodeMeshPassword
		}
		if sp.NodeMeshMaxRestartTime != nil && global {
			st.MeshMaxRestartTime = sp.NodeMeshMaxRestartTime.Duration
		}
		var svc []netip.Prefix
		for _, b := range sp.ServiceClusterIPs {
			svc = appendPrefix(svc, b.CIDR)
		}
		for _, b := range sp.ServiceExternalIPs {
			svc = appendPrefix(svc, b.CIDR)
		}
		for _, b := range sp.ServiceLoadBalancerIPs {
			svc = appendPrefix(svc, b.CIDR)
		}
		if len(svc) > 0 {
			st.ServiceCIDRs = svc
		}
		for _, c := range sp.Communities {
			st.Communities[c.Name] = c.Value
		}
		if len(sp.PrefixAdvertisements) > 0 {
			st.PrefixAdvertisements = sp.PrefixAdvertisements
		}
	}
	apply(s.BGPConfigs[v3.ConfigNameDefault], true)
	apply(s.BGPConfigs[v3.NodeConfigPrefix+node], false)
	st.ASN = st.ClusterASN
	if n, ok := s.Nodes[node]; ok {
		if ni := parseNode(n); ni.asn != 0 {
			st.ASN = ni.asn
		}
	}
	return st
}

func appendPrefix(ps []netip.Prefix, s string) []netip.Prefix {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return ps
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return append(ps, p.Masked())
}

// SecretLookup returns key of the named secret. There is no Kubernetes,
// so a BGPPeer's password.secretKeyRef is read from a file or the
// environment: see FileSecrets.
type SecretLookup func(name, key string) (string, bool)

// DefaultSecretsDir is where FileSecrets looks: one directory per secret
// and one file per key, the layout of a Kubernetes secret volume.
const DefaultSecretsDir = "/etc/tortie/secrets"

// FileSecrets reads <dir>/<name>/<key> (trailing newlines trimmed), else
// the environment variable TORTIE_SECRET_<NAME>_<KEY> (upper case, every
// character that is not a letter or digit replaced by '_').
func FileSecrets(dir string) SecretLookup {
	if dir == "" {
		dir = DefaultSecretsDir
	}
	return func(name, key string) (string, bool) {
		if name != "" && key != "" && !strings.ContainsAny(name+key, "/\x00") && name != ".." && key != ".." {
			if b, err := os.ReadFile(filepath.Join(dir, name, key)); err == nil {
				return strings.TrimRight(string(b), "\r\n"), true
			}
		}
		if v, ok := os.LookupEnv(SecretEnvName(name, key)); ok {
			return v, true
		}
		return "", false
	}
}

// SecretEnvName is the variable FileSecrets falls back to.
func SecretEnvName(name, key string) string {
	up := strings.ToUpper(name + "_" + key)
	b := []byte(up)
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return "TORTIE_SECRET_" + string(b)
}

// PeerOptions are the agent's timer settings and secret source.
type PeerOptions struct {
	HoldTime      time.Duration // 0 = bgp.DefaultHoldTime
	KeepaliveTime time.Duration // 0 = HoldTime/3, unless a BGPPeer says
	Secrets       SecretLookup  // nil: every password is missing
}

// DesiredPeers computes the BGP sessions node should have, sorted by
// address, and warnings about peers that cannot be configured.
//
// Full mesh (unless nodeToNodeMeshEnabled is false): a session per family
// to every other node with an address of that family, the side with the
// higher address passive. Nodes with a routeReflectorClusterID are left
// out of the mesh on both ends. Then every BGPPeer that applies: to this
// node (node, nodeSelector, or neither: global), a session to peerIP or
// to each node its peerSelector selects; and, in reverse, from every node
// a peerSelector peering applies to, when this node is selected. A route
// reflector treats the nodes it peers with that are not in its own
// cluster as its clients. An explicit peering replaces a mesh session to
// the same address.
func DesiredPeers(s *Snapshot, node string, opts PeerOptions) ([]bgp.Peer, []string) {
	me, ok := s.Nodes[node]
	if !ok {
		return nil, nil
	}
	self := parseNode(me)
	st := ResolveBGP(s, node)
	var warnings []string
	out := map[netip.Addr]bgp.Peer{}

	others := make([]nodeInfo, 0, len(s.Nodes))
	for _, name := range sortedKeys(s.Nodes) {
		if name != node {
			others = append(others, parseNode(s.Nodes[name]))
		}
	}
	asnOf := func(n nodeInfo) uint32 {
		if n.asn != 0 {
			return n.asn
		}
		return st.ClusterASN
	}
	password := func(pw *v3.BGPPassword, what string) (string, bool) {
		if pw == nil || pw.SecretKeyRef == nil {
			return "", true
		}
		ref := pw.SecretKeyRef
		if opts.Secrets != nil {
			if v, ok := opts.Secrets(ref.Name, ref.Key); ok {
				return v, true
			}
		}
		if ref.Optional != nil && *ref.Optional {
			return "", true
		}
		warnings = append(warnings, fmt.Sprintf("%s: password secret %s key %s not found (file %s/%s/%s or $%s); session not configured",
			what, ref.Name, ref.Key, DefaultSecretsDir, ref.Name, ref.Key, SecretEnvName(ref.Name, ref.Key)))
		return "", false
	}
	base := func(addr netip.Addr, asn uint32, typ string) bgp.Peer {
		return bgp.Peer{Address: addr, ASN: asn, Type: typ, HoldTime: opts.HoldTime, KeepaliveTime: opts.KeepaliveTime}
	}

	if st.Mesh && self.clusterID == "" {
		pw, pwOK := password(st.MeshPassword, "node-to-node mesh")
		for _, o := range others {
			if o.clusterID != "" || !pwOK {
				continue
			}
			for _, v6 := range []bool{false, true} {
				mine, theirs := self.addrOf(v6), o.addrOf(v6)
				if !mine.IsValid() || !theirs.IsValid() || mine == theirs {
					continue
				}
				p := base(theirs, asnOf(o), bgp.PeerTypeMesh)
				p.Passive = mine.Compare(theirs) > 0
				p.Password = pw
				p.SourceAddr = mine
				if st.MeshMaxRestartTime > 0 {
					p.GracefulRestart, p.MaxRestartTime = true, st.MeshMaxRestartTime
				}
				out[theirs] = p
			}
		}
	}

	// Explicit peerings, by name so that the first wins a tie.
	explicit := map[netip.Addr]bool{}
	nodeByAddr := map[netip.Addr]nodeInfo{}
	for _, o := range others {
		for _, a := range []netip.Addr{o.v4.Addr(), o.v6.Addr()} {
			if a.IsValid() {
				nodeByAddr[a] = o
			}
		}
	}
	appliesTo := func(bp *v3.BGPPeer, n nodeInfo) bool {
		if bp.Spec.Node != "" {
			return bp.Spec.Node == n.name
		}
		return matches(bp.Spec.NodeSelector, n.labels)
	}
	add := func(bp *v3.BGPPeer, addr netip.Addr, port int, remote *nodeInfo) {
		if !addr.IsValid() || addr == self.v4.Addr() || addr == self.v6.Addr() || explicit[addr] {
			return
		}
		typ := bgp.PeerTypeNodeSpecific
		if bp.Spec.Node == "" && bp.Spec.NodeSelector == "" {
			typ = bgp.PeerTypeGlobal
		}
		asn := uint32(bp.Spec.ASNumber)
		if asn == 0 {
			if remote != nil {
				asn = asnOf(*remote)
			} else {
				asn = st.ClusterASN
			}
		}
		p := base(addr, asn, typ)
		p.Port = port
		if bp.Spec.LocalASNumber != nil {
			p.LocalASN = uint32(*bp.Spec.LocalASNumber)
		}
		pw, ok := password(bp.Spec.Password, "BGPPeer "+bp.Name)
		if !ok {
			return
		}
		p.Password = pw
		if bp.Spec.KeepaliveTime != nil && bp.Spec.KeepaliveTime.Duration > 0 {
			p.KeepaliveTime = bp.Spec.KeepaliveTime.Duration
			if h := p.HoldTime; h == 0 && 3*p.KeepaliveTime > bgp.DefaultHoldTime || h != 0 && 3*p.KeepaliveTime > h {
				p.HoldTime = 3 * p.KeepaliveTime
			}
		}
		if bp.Spec.MaxRestartTime != nil && bp.Spec.MaxRestartTime.Duration > 0 {
			p.GracefulRestart, p.MaxRestartTime = true, bp.Spec.MaxRestartTime.Duration
		}
		if bp.Spec.SourceAddress != v3.SourceAddressNone {
			p.SourceAddr = self.addrOf(addr.Is6())
		}
		if bp.Spec.NextHopMode != nil && *bp.Spec.NextHopMode == v3.NextHopSelf {
			p.NextHopSelf = true
		}
		if bp.Spec.TTLSecurity != nil {
			p.TTLSecurity = int(*bp.Spec.TTLSecurity)
		}
		if remote != nil {
			mine := self.addrOf(addr.Is6())
			p.Passive = mine.IsValid() && mine.Compare(addr) > 0
			if self.clusterID != "" && remote.clusterID != self.clusterID {
				p.RouteReflectorClient = true
				if cid, err := netip.ParseAddr(self.clusterID); err == nil && cid.Is4() {
					p.ClusterID = cid
				}
			}
		}
		explicit[addr] = true
		out[addr] = p
	}
	for _, name := range sortedKeys(s.Peers) {
		bp := s.Peers[name]
		local := appliesTo(bp, self)
		switch {
		case bp.Spec.PeerIP != "":
			if !local {
				continue
			}
			addr, port, err := parsePeerIP(bp.Spec.PeerIP)
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("BGPPeer %s: %v", name, err))
				continue
			}
			var remote *nodeInfo
			if o, ok := nodeByAddr[addr]; ok {
				remote = &o
			}
			add(bp, addr, port, remote)
		case bp.Spec.PeerSelector != "":
			for _, o := range others {
				forward := local && matches(bp.Spec.PeerSelector, o.labels)
				reverse := matches(bp.Spec.PeerSelector, self.labels) && appliesTo(bp, o) &&
					(bp.Spec.ReversePeering == nil || *bp.Spec.ReversePeering != "Manual")
				if !forward && !reverse {
					continue
				}
				for _, v6 := range []bool{false, true} {
					if self.addrOf(v6).IsValid() {
						add(bp, o.addrOf(v6), 0, &o)
					}
				}
			}
		}
	}

	peers := make([]bgp.Peer, 0, len(out))
	for _, p := range out {
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b bgp.Peer) int { return a.Address.Compare(b.Address) })
	return peers, warnings
}

// parsePeerIP reads "ip", "ip:port" or "[v6]:port".
func parsePeerIP(s string) (netip.Addr, int, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), 0, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("peerIP %q: want ip, ip:port or [ipv6]:port", s)
	}
	return ap.Addr().Unmap(), int(ap.Port()), nil
}

func matches(expr string, labels map[string]string) bool {
	if strings.TrimSpace(expr) == "" {
		return true
	}
	sel, err := selector.Parse(expr)
	if err != nil {
		return false
	}
	return sel.Evaluate(labels)
}

// poolFor returns the pool whose CIDR holds p (the longest such), or nil.
func poolFor(s *Snapshot, p netip.Prefix) *v3.IPPool {
	var best *v3.IPPool
	bestBits := -1
	for _, name := range sortedKeys(s.Pools) {
		pool := s.Pools[name]
		cidr, err := netip.ParsePrefix(pool.Spec.CIDR)
		if err != nil {
			continue
		}
		if cidr.Bits() <= p.Bits() && cidr.Contains(p.Addr()) && cidr.Bits() > bestBits {
			best, bestBits = pool, cidr.Bits()
		}
	}
	return best
}

// DesiredAdvertisements computes what node announces, sorted by prefix:
// each block affine to it (one route per block: the block is the
// aggregate of its addresses) and each address it borrowed from another
// node's block as a /32 (/128), unless the pool has disableBGPExport; the
// service cluster, external and LoadBalancer ranges of BGPConfiguration.
// Communities come from prefixAdvertisements (by name from communities,
// or literal), for every advertised prefix inside the given CIDR. IPv6
// prefixes carry the node's IPv6 address as next hop, since they may ride
// an IPv4 session; without an IPv6 address none are announced.
func DesiredAdvertisements(s *Snapshot, node string) []bgp.Advertisement {
	me, ok := s.Nodes[node]
	if !ok {
		return nil
	}
	self := parseNode(me)
	st := ResolveBGP(s, node)
	want := map[netip.Prefix]bool{}
	exported := func(p netip.Prefix) bool {
		pool := poolFor(s, p)
		return pool != nil && !pool.Spec.DisableBGPExport
	}
	for _, b := range s.Blocks {
		if b.Affinity == node && exported(b.CIDR) {
			want[b.CIDR] = true
		}
		for a, holder := range b.Borrowed {
			if holder == node && b.Affinity != node {
				if p := netip.PrefixFrom(a, a.BitLen()); exported(p) {
					want[p] = true
				}
			}
		}
	}
	for _, p := range st.ServiceCIDRs {
		want[p] = true
	}

	out := make([]bgp.Advertisement, 0, len(want))
	for p := range want {
		a := bgp.Advertisement{Prefix: p}
		if p.Addr().Is6() {
			if !self.v6.IsValid() {
				continue
			}
			a.NextHop = self.v6.Addr()
		} else if !self.v4.IsValid() && !self.v6.IsValid() {
			continue
		}
		a.Communities = communitiesFor(st, p)
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b bgp.Advertisement) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

func communitiesFor(st BGPSettings, p netip.Prefix) []string {
	var out []string
	for _, pa := range st.PrefixAdvertisements {
		cidr, err := netip.ParsePrefix(pa.CIDR)
		if err != nil || cidr.Addr().Is4() != p.Addr().Is4() || cidr.Bits() > p.Bits() || !cidr.Contains(p.Addr()) {
			continue
		}
		for _, c := range pa.Communities {
			v := c
			if named, ok := st.Communities[c]; ok {
				v = named
			}
			if !slices.Contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// RouteOptions name the devices routes use and say which encapsulations
// this node can do.
type RouteOptions struct {
	VXLANDevice string // "" = routes.VXLANDeviceName
	IPIPDevice  string // "" = routes.IPIPDeviceName
	// NoVXLAN: this node may not use VXLAN (FelixConfiguration vxlanEnabled
	// false). Pools that ask for it are listed in RouteSet.NoVXLAN, and
	// their remote blocks are not routed at all: never without the
	// encapsulation they ask for.
	NoVXLAN bool
	// IPIP: this node can encapsulate in IP-in-IP (the kernel has it and
	// the device can be made: routes.IPIPSupported). Without it, pools that
	// ask for IP-in-IP are listed in RouteSet.NoIPIP, and the learned routes
	// of theirs that would need it are not programmed at all: never without
	// the encapsulation they ask for.
	IPIP bool
	// NoIPv6: no IPv6 routes (FelixConfiguration ipv6Support false).
	NoIPv6 bool
}

// RouteSet is the desired kernel state of one node.
type RouteSet struct {
	Routes []routes.Route // sorted by destination
	// VTEPs are the other nodes' tunnel endpoints, when a VXLAN pool is in
	// use; nil otherwise.
	VTEPs []routes.VTEP
	// VXLAN says this node needs its tunnel device.
	VXLAN bool
	// NoVXLAN names the pools that ask for VXLAN when RouteOptions.NoVXLAN
	// forbids it.
	NoVXLAN []string
	// IPIP says this node needs its IP-in-IP device: a pool asks for
	// IP-in-IP and RouteOptions.IPIP allows it.
	IPIP bool
	// NoIPIP names, sorted, the pools whose traffic needs IP-in-IP when
	// RouteOptions.IPIP says this node cannot do it: those with ipipMode
	// Always; CrossSubnet ones when another node is outside this node's
	// subnet; any pool a learned route was left out for.
	NoIPIP []string
}

// DesiredRoutes computes node's routes:
//
//   - a blackhole for each block affine to it;
//   - a /32 (/128) to each local workload address through its host veth;
//   - for blocks of pools with vxlanMode Always, or CrossSubnet when the
//     owner is outside this node's subnet, a route via the owner's tunnel
//     address through the VXLAN device (and a VTEP per remote node); for
//     CrossSubnet owners inside the subnet, a route via the owner's
//     address (native, computed from the datastore so it needs no BGP);
//     borrowed addresses in those pools the same way, as /32s to the node
//     that holds them;
//   - every route learned over BGP that nothing above already covers, via
//     its next hop, except routes to a subnet this node is on and routes
//     inside a service range of BGPConfiguration (serviceClusterIPs,
//     serviceExternalIPs, serviceLoadBalancerIPs: every node announces
//     those itself, and Calico's confd rejects them from the kernel so
//     that an address no service answers for is not bounced between
//     nodes); in a pool with ipipMode Always, or CrossSubnet when the next
//     hop is outside this node's subnet, as Calico's BIRD does: via the
//     next hop through the IP-in-IP device, onlink (and not at all when
//     RouteOptions.IPIP says this node cannot encapsulate).
//
// For one destination, the first of these that applies wins.
func DesiredRoutes(s *Snapshot, node string, learned []bgp.Route, opts RouteOptions) RouteSet {
	dev := cmp.Or(opts.VXLANDevice, routes.VXLANDeviceName)
	ipipDev := cmp.Or(opts.IPIPDevice, routes.IPIPDeviceName)
	var self nodeInfo
	if me, ok := s.Nodes[node]; ok {
		self = parseNode(me)
	} else {
		self.name = node
	}
	services := ResolveBGP(s, node).ServiceCIDRs
	want := map[netip.Prefix]routes.Route{}
	put := func(r routes.Route) {
		if _, taken := want[r.Dst]; !taken {
			want[r.Dst] = r
		}
	}

	for _, b := range sortedBlocks(s) {
		if b.Affinity == node {
			put(routes.BlackholeRoute(b.CIDR))
		}
	}
	for _, key := range sortedKeys(s.Endpoints) {
		ep := s.Endpoints[key]
		if ep.Spec.Node != node || ep.Spec.InterfaceName == "" {
			continue
		}
		for _, n := range ep.Spec.IPNetworks {
			if p := parseIfacePrefix(n); p.IsValid() {
				put(routes.WorkloadRoute(p.Addr(), ep.Spec.InterfaceName))
			}
		}
	}

	// VXLAN and CrossSubnet routes from the datastore.
	var rs RouteSet
	nodes := map[string]nodeInfo{}
	for name, n := range s.Nodes {
		nodes[name] = parseNode(n)
	}
	vxlanPools := false
	for _, name := range sortedKeys(s.Pools) {
		p := s.Pools[name]
		if m := p.Spec.VXLANMode; !p.Spec.Disabled && (m == v3.EncapAlways || m == v3.EncapCrossSubnet) {
			vxlanPools = true
			if opts.NoVXLAN {
				rs.NoVXLAN = append(rs.NoVXLAN, name)
			}
		}
	}
	rs.VXLAN = vxlanPools && !opts.NoVXLAN && self.tunnel.IsValid() && self.v4.IsValid()
	ipip := ipipPools(s)
	rs.IPIP = opts.IPIP && len(ipip) > 0
	noIPIP := map[string]bool{}
	if !opts.IPIP {
		// Always needs IP-in-IP to every other host; CrossSubnet to hosts
		// outside this one's subnet, if there are any.
		crossSubnet := false
		for name, o := range nodes {
			if name != node && o.v4.IsValid() && encapsulated(v3.EncapCrossSubnet, self, o.v4.Addr()) {
				crossSubnet = true
			}
		}
		for _, name := range ipip {
			if s.Pools[name].Spec.IPIPMode == v3.EncapAlways || crossSubnet {
				noIPIP[name] = true
			}
		}
	}
	remoteRoute := func(dst netip.Prefix, owner string, mode v3.EncapsulationMode) {
		o, ok := nodes[owner]
		if !ok || owner == node || !dst.Addr().Is4() {
			return
		}
		sameSubnet := self.v4.IsValid() && o.v4.IsValid() && self.v4.Masked().Contains(o.v4.Addr())
		switch {
		case mode == v3.EncapAlways || mode == v3.EncapCrossSubnet && !sameSubnet:
			if rs.VXLAN && o.tunnel.IsValid() && o.mac != "" && o.v4.IsValid() {
				put(routes.TunnelRoute(dst, dev, o.tunnel))
			}
		case mode == v3.EncapCrossSubnet && sameSubnet:
			put(routes.Route{Dst: dst, Gateway: o.v4.Addr()})
		}
	}
	if vxlanPools {
		for _, b := range sortedBlocks(s) {
			pool := poolFor(s, b.CIDR)
			if pool == nil {
				continue
			}
			mode := pool.Spec.VXLANMode
			for _, a := range sortedAddrs(b.Borrowed) {
				remoteRoute(netip.PrefixFrom(a, a.BitLen()), b.Borrowed[a], mode)
			}
			if b.Affinity != "" {
				remoteRoute(b.CIDR, b.Affinity, mode)
			}
		}
		if rs.VXLAN {
			for _, name := range sortedKeys(nodes) {
				o := nodes[name]
				if name == node || !o.tunnel.IsValid() || !o.v4.IsValid() {
					continue
				}
				mac, err := parseMAC(o.mac)
				if err != nil {
					continue
				}
				rs.VTEPs = append(rs.VTEPs, routes.VTEP{NodeName: name, TunnelAddr: o.tunnel, MAC: mac, ParentAddr: o.v4.Addr()})
			}
		}
	}

	for _, r := range learned {
		nh := r.NextHop
		if !nh.IsValid() || nh.Zone() != "" || nh == self.v4.Addr() || nh == self.v6.Addr() {
			continue
		}
		if r.Prefix.Contains(self.v4.Addr()) || r.Prefix.Contains(self.v6.Addr()) {
			continue // our own underlay subnet: never route it over BGP
		}
		if slices.ContainsFunc(services, func(svc netip.Prefix) bool { return within(r.Prefix, svc) }) {
			continue // a service range: ours as much as the sender's
		}
		if nh.Is4() != r.Prefix.Addr().Is4() {
			continue
		}
		p := poolFor(s, r.Prefix)
		if p != nil && !rs.VXLAN && encapsulated(p.Spec.VXLANMode, self, nh) {
			continue // a VXLAN pool's block without a tunnel: never plain
		}
		if p != nil && nh.Is4() && encapsulated(p.Spec.IPIPMode, self, nh) {
			if rs.IPIP {
				put(routes.TunnelRoute(r.Prefix.Masked(), ipipDev, nh))
			} else {
				noIPIP[p.Name] = true // never plain
			}
			continue
		}
		put(routes.Route{Dst: r.Prefix.Masked(), Gateway: nh})
	}
	rs.NoIPIP = slices.Sorted(maps.Keys(noIPIP))

	rs.Routes = make([]routes.Route, 0, len(want))
	for _, r := range want {
		if opts.NoIPv6 && r.Dst.Addr().Is6() {
			continue
		}
		rs.Routes = append(rs.Routes, r)
	}
	slices.SortFunc(rs.Routes, func(a, b routes.Route) int { return comparePrefix(a.Dst, b.Dst) })
	return rs
}

// within reports whether p is inside outer (outer itself included).
func within(p, outer netip.Prefix) bool {
	return p.Addr().Is4() == outer.Addr().Is4() && outer.Bits() <= p.Bits() && outer.Contains(p.Addr())
}

// encapsulated reports whether traffic from self to next hop nh is to be
// encapsulated under mode: Always, or CrossSubnet with nh outside self's
// subnet.
func encapsulated(mode v3.EncapsulationMode, self nodeInfo, nh netip.Addr) bool {
	switch mode {
	case v3.EncapAlways:
		return true
	case v3.EncapCrossSubnet:
		return !(self.v4.IsValid() && self.v4.Masked().Contains(nh))
	}
	return false
}

// ipipPools names the pools that ask for IP-in-IP (ipipMode Always or
// CrossSubnet; IPv4 only, as Calico), disabled ones too: their blocks
// still hold workloads that other hosts reach through the tunnel.
func ipipPools(s *Snapshot) []string {
	var out []string
	for _, name := range sortedKeys(s.Pools) {
		p := s.Pools[name]
		cidr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil || !cidr.Addr().Is4() {
			continue
		}
		if m := p.Spec.IPIPMode; m == v3.EncapAlways || m == v3.EncapCrossSubnet {
			out = append(out, name)
		}
	}
	return out
}

// UsableLearned drops the stale routes of peers known to be unreachable
// (hold timer expired) rather than restarting: those are kept by the
// speaker for a graceful restart that is not happening.
func UsableLearned(learned []bgp.Route, unreachable map[netip.Addr]bool) []bgp.Route {
	if len(unreachable) == 0 {
		return learned
	}
	out := make([]bgp.Route, 0, len(learned))
	for _, r := range learned {
		if r.Stale && unreachable[r.Peer] {
			continue
		}
		out = append(out, r)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func sortedBlocks(s *Snapshot) []*Block {
	out := make([]*Block, 0, len(s.Blocks))
	for _, b := range s.Blocks {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *Block) int { return comparePrefix(a.CIDR, b.CIDR) })
	return out
}

func sortedAddrs(m map[netip.Addr]string) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// parseMAC is net.ParseMAC limited to Ethernet addresses.
func parseMAC(s string) ([]byte, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return nil, fmt.Errorf("MAC %q: want six octets", s)
	}
	out := make([]byte, 6)
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil {
			return nil, fmt.Errorf("MAC %q: %w", s, err)
		}
		out[i] = byte(v)
	}
	return out, nil
}
