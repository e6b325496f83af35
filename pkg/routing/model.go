package routing

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/syncer"
)

// BlockPrefix holds IPAM blocks (Calico's etcd layout; the syncer's raw
// kind syncer.KindIPAMBlock); the block's own "affinity" field says which
// node it belongs to, so blocks alone are enough to know every node's
// blocks. Affinity keys (/calico/ipam/v2/host/...) only duplicate that,
// with a "pending" state for a claim not yet finished; a pending claim has
// no block and so nothing to route, and they are not watched.
const BlockPrefix = syncer.IPAMBlockPrefix

// Snapshot is the part of the datastore that routing depends on. The
// calculation functions read it and never change it.
type Snapshot struct {
	Nodes      map[string]*v3.Node             // by name
	BGPConfigs map[string]*v3.BGPConfiguration // by name ("default", "node.<n>")
	Peers      map[string]*v3.BGPPeer          // by name
	Pools      map[string]*v3.IPPool           // by name
	Blocks     map[netip.Prefix]*Block         // by CIDR
	// Endpoints are this node's workload endpoints, by namespace/name.
	Endpoints map[string]*v3.WorkloadEndpoint

	// blockKeys maps each block's datastore name to its CIDR, so a
	// deleted block (which carries no value) leaves Blocks.
	blockKeys map[string]netip.Prefix
}

// NewSnapshot returns an empty snapshot.
func NewSnapshot() *Snapshot {
	return &Snapshot{
		Nodes:      map[string]*v3.Node{},
		BGPConfigs: map[string]*v3.BGPConfiguration{},
		Peers:      map[string]*v3.BGPPeer{},
		Pools:      map[string]*v3.IPPool{},
		Blocks:     map[netip.Prefix]*Block{},
		Endpoints:  map[string]*v3.WorkloadEndpoint{},
		blockKeys:  map[string]netip.Prefix{},
	}
}

// Block is what routing needs of an IPAM block: its CIDR, the node it is
// affine to, and the addresses in it that are held by another node
// (borrowed).
type Block struct {
	CIDR     netip.Prefix
	Affinity string // node name; "" when not affine to a host
	// Borrowed maps each allocated address whose allocation names a node
	// other than Affinity to that node.
	Borrowed map[netip.Addr]string
}

// storedBlock is the subset of Calico's AllocationBlock JSON routing reads.
type storedBlock struct {
	CIDR        string  `json:"cidr"`
	Affinity    *string `json:"affinity"`
	Allocations []*int  `json:"allocations"`
	Attributes  []struct {
		Secondary map[string]string `json:"secondary"`
	} `json:"attributes"`
	Deleted bool `json:"deleted"`
}

// ParseBlock decodes an IPAM block value.
func ParseBlock(value []byte) (*Block, error) {
	var sb storedBlock
	if err := json.Unmarshal(value, &sb); err != nil {
		return nil, fmt.Errorf("decoding IPAM block: %w", err)
	}
	cidr, err := netip.ParsePrefix(sb.CIDR)
	if err != nil {
		return nil, fmt.Errorf("IPAM block cidr %q: %w", sb.CIDR, err)
	}
	cidr = cidr.Masked()
	b := &Block{CIDR: cidr}
	if sb.Affinity != nil {
		if n, ok := strings.CutPrefix(*sb.Affinity, "host:"); ok {
			b.Affinity = n
		}
	}
	addr := cidr.Addr()
	for _, idx := range sb.Allocations {
		if idx != nil && *idx >= 0 && *idx < len(sb.Attributes) {
			if n := sb.Attributes[*idx].Secondary["node"]; n != "" && n != b.Affinity {
				if b.Borrowed == nil {
					b.Borrowed = map[netip.Addr]string{}
				}
				b.Borrowed[addr] = n
			}
		}
		addr = addr.Next()
	}
	return b, nil
}

// nodeInfo is a Node reduced to what peering and routing use.
type nodeInfo struct {
	name      string
	v4, v6    netip.Prefix // interface address with its prefix length
	asn       uint32       // 0: the cluster's
	clusterID string       // routeReflectorClusterID
	labels    map[string]string
	tunnel    netip.Addr // VXLAN
	mac       string
	// ipipTunnel is the address of the node's IP-in-IP device.
	ipipTunnel netip.Addr
}

func parseNode(n *v3.Node) nodeInfo {
	ni := nodeInfo{name: n.Name, labels: n.Labels}
	if b := n.Spec.BGP; b != nil {
		ni.v4 = parseIfacePrefix(b.IPv4Address)
		ni.v6 = parseIfacePrefix(b.IPv6Address)
		if b.ASNumber != nil {
			ni.asn = uint32(*b.ASNumber)
		}
		ni.clusterID = b.RouteReflectorClusterID
		if a, err := netip.ParseAddr(b.IPv4IPIPTunnelAddr); err == nil {
			ni.ipipTunnel = a
		}
	}
	if a, err := netip.ParseAddr(n.Spec.IPv4VXLANTunnelAddr); err == nil {
		ni.tunnel = a
	}
	ni.mac = n.Spec.VXLANTunnelMACAddr
	return ni
}

// parseIfacePrefix reads "10.0.0.2/24" or a bare address.
func parseIfacePrefix(s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.BitLen())
	}
	return netip.Prefix{}
}

// addrOf returns the node's address of a family.
func (n nodeInfo) addrOf(v6 bool) netip.Addr {
	if v6 {
		return n.v6.Addr()
	}
	return n.v4.Addr()
}
