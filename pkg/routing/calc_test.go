package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/bgp"
	"github.com/tortie/tortie/pkg/dataplane/routes"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// snapshot builders

type nodeOpt func(*v3.Node)

func mkNode(name, v4 string, opts ...nodeOpt) *v3.Node {
	n := &v3.Node{}
	n.Name = name
	n.Spec.BGP = &v3.NodeBGPSpec{IPv4Address: v4}
	for _, o := range opts {
		o(n)
	}
	return n
}
func withV6(a string) nodeOpt { return func(n *v3.Node) { n.Spec.BGP.IPv6Address = a } }
func withRR(cid string) nodeOpt {
	return func(n *v3.Node) { n.Spec.BGP.RouteReflectorClusterID = cid }
}
func withLabels(kv ...string) nodeOpt {
	return func(n *v3.Node) {
		n.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
	}
}
func withASN(a uint32) nodeOpt {
	return func(n *v3.Node) { x := numorstring.ASNumber(a); n.Spec.BGP.ASNumber = &x }
}
func withTunnel(a, mac string) nodeOpt {
	return func(n *v3.Node) { n.Spec.IPv4VXLANTunnelAddr, n.Spec.VXLANTunnelMACAddr = a, mac }
}

func snap(nodes ...*v3.Node) *Snapshot {
	s := NewSnapshot()
	for _, n := range nodes {
		s.Nodes[n.Name] = n
	}
	return s
}

func (s *Snapshot) pool(name, cidr string, mod func(*v3.IPPoolSpec)) *Snapshot {
	p := &v3.IPPool{}
	p.Name = name
	p.Spec.CIDR = cidr
	if mod != nil {
		mod(&p.Spec)
	}
	s.Pools[name] = p
	return s
}

func (s *Snapshot) block(cidr, node string, borrowed ...string) *Snapshot {
	b := &Block{CIDR: pfx(cidr), Affinity: node}
	for i := 0; i+1 < len(borrowed); i += 2 {
		if b.Borrowed == nil {
			b.Borrowed = map[netip.Addr]string{}
		}
		b.Borrowed[addr(borrowed[i])] = borrowed[i+1]
	}
	s.Blocks[b.CIDR] = b
	return s
}

func (s *Snapshot) bgpConfig(name string, mod func(*v3.BGPConfigurationSpec)) *Snapshot {
	c := &v3.BGPConfiguration{}
	c.Name = name
	mod(&c.Spec)
	s.BGPConfigs[name] = c
	return s
}

func (s *Snapshot) peer(name string, mod func(*v3.BGPPeerSpec)) *Snapshot {
	p := &v3.BGPPeer{}
	p.Name = name
	mod(&p.Spec)
	s.Peers[name] = p
	return s
}

func (s *Snapshot) wep(name, node, iface string, ips ...string) *Snapshot {
	w := &v3.WorkloadEndpoint{}
	w.Name, w.Namespace = name, "default"
	w.Spec.Node, w.Spec.InterfaceName, w.Spec.IPNetworks = node, iface, ips
	s.Endpoints["default/"+name] = w
	return s
}

func ptr[T any](v T) *T { return &v }

// peerLine renders the fields a test cares about.
func peerLine(p bgp.Peer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s as%d %s", p.Address, p.ASN, p.Type)
	if p.Passive {
		b.WriteString(" passive")
	}
	if p.RouteReflectorClient {
		fmt.Fprintf(&b, " rr-client(%s)", p.ClusterID)
	}
	if p.Port != 0 {
		fmt.Fprintf(&b, " port=%d", p.Port)
	}
	if p.LocalASN != 0 {
		fmt.Fprintf(&b, " local-as=%d", p.LocalASN)
	}
	if p.Password != "" {
		fmt.Fprintf(&b, " pw=%s", p.Password)
	}
	if p.KeepaliveTime != 0 {
		fmt.Fprintf(&b, " keepalive=%s", p.KeepaliveTime)
	}
	if p.MaxRestartTime != 0 {
		fmt.Fprintf(&b, " restart=%s", p.MaxRestartTime)
	}
	if p.SourceAddr.IsValid() {
		fmt.Fprintf(&b, " src=%s", p.SourceAddr)
	}
	if p.NextHopSelf {
		b.WriteString(" nhs")
	}
	return b.String()
}

func threeNodes(opts ...func(i int) []nodeOpt) *Snapshot {
	var ns []*v3.Node
	for i := 1; i <= 3; i++ {
		var o []nodeOpt
		for _, f := range opts {
			o = append(o, f(i)...)
		}
		ns = append(ns, mkNode(fmt.Sprintf("n%d", i), fmt.Sprintf("10.0.0.%d/24", i), o...))
	}
	return snap(ns...)
}

func TestDesiredPeers(t *testing.T) {
	secrets := func(name, key string) (string, bool) {
		if name == "bgp" && key == "pw" {
			return "s3cret", true
		}
		return "", false
	}
	tests := []struct {
		name  string
		s     *Snapshot
		node  string
		want  []string
		warns int
	}{
		{
			name: "full mesh by default, higher address passive",
			s:    threeNodes(),
			node: "n2",
			want: []string{
				"10.0.0.1 as64512 node-to-node mesh passive src=10.0.0.2",
				"10.0.0.3 as64512 node-to-node mesh src=10.0.0.2",
			},
		},
		{
			name: "mesh over both families",
			s:    snap(mkNode("a", "10.0.0.1/24", withV6("fd00::1/64")), mkNode("b", "10.0.0.2/24", withV6("fd00::2/64")), mkNode("c", "10.0.0.3/24")),
			node: "a",
			want: []string{
				"10.0.0.2 as64512 node-to-node mesh src=10.0.0.1",
				"10.0.0.3 as64512 node-to-node mesh src=10.0.0.1",
				"fd00::2 as64512 node-to-node mesh src=fd00::1",
			},
		},
		{
			name: "cluster AS from BGPConfiguration, node AS overrides",
			s: snap(mkNode("a", "10.0.0.1/24"), mkNode("b", "10.0.0.2/24", withASN(65002))).
				bgpConfig("default", func(c *v3.BGPConfigurationSpec) { c.ASNumber = ptr(numorstring.ASNumber(65000)) }),
			node: "a",
			want: []string{"10.0.0.2 as65002 node-to-node mesh src=10.0.0.1"},
		},
		{
			name: "mesh disabled",
			s:    threeNodes().bgpConfig("default", func(c *v3.BGPConfigurationSpec) { c.NodeToNodeMeshEnabled = ptr(false) }),
			node: "n1",
			want: nil,
		},
		{
			name: "mesh password from secret, restart time",
			s: threeNodes().bgpConfig("default", func(c *v3.BGPConfigurationSpec) {
				c.NodeMeshPassword = &v3.BGPPassword{SecretKeyRef: &v3.SecretKeySelector{Name: "bgp", Key: "pw"}}
				c.NodeMeshMaxRestartTime = &metav1.Duration{Duration: 300 * time.Second}
			}),
			node: "n1",
			want: []string{
				"10.0.0.2 as64512 node-to-node mesh pw=s3cret restart=5m0s src=10.0.0.1",
				"10.0.0.3 as64512 node-to-node mesh pw=s3cret restart=5m0s src=10.0.0.1",
			},
		},
		{
			name: "missing mesh secret: no mesh, a warning",
			s: threeNodes().bgpConfig("default", func(c *v3.BGPConfigurationSpec) {
				c.NodeMeshPassword = &v3.BGPPassword{SecretKeyRef: &v3.SecretKeySelector{Name: "nope", Key: "pw"}}
			}),
			node:  "n1",
			want:  nil,
			warns: 1,
		},
		{
			name: "global peer by IP with options",
			s: threeNodes().peer("tor", func(p *v3.BGPPeerSpec) {
				p.PeerIP = "10.0.0.254:1179"
				p.ASNumber = 65000
				p.LocalASNumber = ptr(numorstring.ASNumber(64999))
				p.Password = &v3.BGPPassword{SecretKeyRef: &v3.SecretKeySelector{Name: "bgp", Key: "pw"}}
				p.KeepaliveTime = &metav1.Duration{Duration: 10 * time.Second}
				p.MaxRestartTime = &metav1.Duration{Duration: 60 * time.Second}
				p.NextHopMode = ptr(v3.NextHopSelf)
			}),
			node: "n3",
			want: []string{
				"10.0.0.1 as64512 node-to-node mesh passive src=10.0.0.3",
				"10.0.0.2 as64512 node-to-node mesh passive src=10.0.0.3",
				"10.0.0.254 as65000 global port=1179 local-as=64999 pw=s3cret keepalive=10s restart=1m0s src=10.0.0.3 nhs",
			},
		},
		{
			name: "sourceAddress None, v6 peer",
			s: snap(mkNode("a", "10.0.0.1/24", withV6("fd00::1/64"))).peer("tor6", func(p *v3.BGPPeerSpec) {
				p.PeerIP = "[fd00::fe]:179"
				p.ASNumber = 65000
				p.SourceAddress = v3.SourceAddressNone
			}),
			node: "a",
			want: []string{"fd00::fe as65000 global port=179"},
		},
		{
			name: "per-node peer applies only to its node",
			s: threeNodes().bgpConfig("default", func(c *v3.BGPConfigurationSpec) { c.NodeToNodeMeshEnabled = ptr(false) }).
				peer("only-n2", func(p *v3.BGPPeerSpec) { p.Node = "n2"; p.PeerIP = "10.0.0.254"; p.ASNumber = 65000 }),
			node: "n1",
			want: nil,
		},
		{
			name: "per-node peer on its node",
			s: threeNodes().bgpConfig("default", func(c *v3.BGPConfigurationSpec) { c.NodeToNodeMeshEnabled = ptr(false) }).
				peer("only-n2", func(p *v3.BGPPeerSpec) { p.Node = "n2"; p.PeerIP = "10.0.0.254"; p.ASNumber = 65000 }),
			node: "n2",
			want: []string{"10.0.0.254 as65000 node specific src=10.0.0.2"},
		},
		{
			name: "nodeSelector peer",
			s: threeNodes(func(i int) []nodeOpt {
				if i == 3 {
					return []nodeOpt{withLabels("rack", "r1")}
				}
				return nil
			}).bgpConfig("default", func(c *v3.BGPConfigurationSpec) { c.NodeToNodeMeshEnabled = ptr(false) }).
				peer("rack1", func(p *v3.BGPPeerSpec) { p.NodeSelector = "rack == 'r1'"; p.PeerIP = "10.0.0.254"; p.ASNumber = 65000 }),
			node: "n3",
			want: []string{"10.0.0.254 as65000 node specific src=10.0.0.3"},
		},
		{
			name: "missing peer secret: peer left out with a warning",
			s: threeNodes().bgpConfig("default", func(c *v3.BGPConfigurationSpec) { c.NodeToNodeMeshEnabled = ptr(false) }).
				peer("tor", func(p *v3.BGPPeerSpec) {
					p.PeerIP = "10.0.0.254"
					p.ASNumber = 65000
					p.Password = &v3.BGPPassword{SecretKeyRef: &v3.SecretKeySelector{Name: "x", Key: "y"}}
				}),
			node:  "n1",
			want:  nil,
			warns: 1,
		},
		{
			name: "explicit peering replaces the mesh session to the same address",
			s: threeNodes().peer("to-n2", func(p *v3.BGPPeerSpec) {
				p.PeerIP = "10.0.0.2"
				p.ASNumber = 64512
				p.KeepaliveTime = &metav1.Duration{Duration: 5 * time.Second}
			}),
			node: "n1",
			want: []string{
				"10.0.0.2 as64512 global keepalive=5s src=10.0.0.1",
				"10.0.0.3 as64512 node-to-node mesh src=10.0.0.1",
			},
		},
	}

	// Route reflector: n1 reflects for n2..n4, mesh off, one BGPPeer
	// "everyone peers with the reflectors".
	rr := snap(
		mkNode("n1", "10.0.0.1/24", withRR("224.0.0.1"), withLabels("rr", "true")),
		mkNode("n2", "10.0.0.2/24"), mkNode("n3", "10.0.0.3/24"), mkNode("n4", "10.0.0.4/24"),
	).bgpConfig("default", func(c *v3.BGPConfigurationSpec) { c.NodeToNodeMeshEnabled = ptr(false) }).
		peer("to-rr", func(p *v3.BGPPeerSpec) { p.NodeSelector = "all()"; p.PeerSelector = "rr == 'true'" })
	tests = append(tests,
		struct {
			name  string
			s     *Snapshot
			node  string
			want  []string
			warns int
		}{"route reflector has its clients (reverse peering)", rr, "n1", []string{
			"10.0.0.2 as64512 node specific rr-client(224.0.0.1) src=10.0.0.1",
			"10.0.0.3 as64512 node specific rr-client(224.0.0.1) src=10.0.0.1",
			"10.0.0.4 as64512 node specific rr-client(224.0.0.1) src=10.0.0.1",
		}, 0},
		struct {
			name  string
			s     *Snapshot
			node  string
			want  []string
			warns int
		}{"client peers only with the reflector", rr, "n3", []string{
			"10.0.0.1 as64512 node specific passive src=10.0.0.3",
		}, 0},
	)
	// With the mesh on, reflectors still leave it.
	rrMesh := snap(mkNode("n1", "10.0.0.1/24", withRR("1.1.1.1")), mkNode("n2", "10.0.0.2/24"), mkNode("n3", "10.0.0.3/24"))
	tests = append(tests, struct {
		name  string
		s     *Snapshot
		node  string
		want  []string
		warns int
	}{"reflector leaves the mesh", rrMesh, "n2", []string{"10.0.0.3 as64512 node-to-node mesh src=10.0.0.2"}, 0},
		struct {
			name  string
			s     *Snapshot
			node  string
			want  []string
			warns int
		}{"reflector has no mesh sessions", rrMesh, "n1", nil, 0})

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			peers, warns := DesiredPeers(tc.s, tc.node, PeerOptions{Secrets: secrets})
			var got []string
			for _, p := range peers {
				got = append(got, peerLine(p))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("peers:\n got %q\nwant %q", got, tc.want)
			}
			if len(warns) != tc.warns {
				t.Errorf("warnings %q, want %d", warns, tc.warns)
			}
		})
	}
}

func TestParsePeerIP(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.1": "10.0.0.1:0", "10.0.0.1:1179": "10.0.0.1:1179", "[fd00::1]:179": "[fd00::1]:179", "fd00::1": "[fd00::1]:0"} {
		a, p, err := parsePeerIP(in)
		if err != nil || netip.AddrPortFrom(a, uint16(p)).String() != want {
			t.Errorf("parsePeerIP(%q) = %v %d %v, want %s", in, a, p, err, want)
		}
	}
	if _, _, err := parsePeerIP("nonsense"); err == nil {
		t.Error("parsePeerIP(nonsense): no error")
	}
}

func advLine(a bgp.Advertisement) string {
	s := a.Prefix.String()
	if a.NextHop.IsValid() {
		s += " nh=" + a.NextHop.String()
	}
	if len(a.Communities) > 0 {
		s += " " + strings.Join(a.Communities, ",")
	}
	return s
}

func TestDesiredAdvertisements(t *testing.T) {
	base := func() *Snapshot {
		return snap(mkNode("a", "10.0.0.1/24", withV6("fd00::1/64")), mkNode("b", "10.0.0.2/24")).
			pool("p4", "10.244.0.0/16", nil).pool("p6", "fd00:244::/48", nil)
	}
	tests := []struct {
		name string
		s    *Snapshot
		want []string
	}{
		{
			name: "affine blocks, one route each; others' blocks not",
			s:    base().block("10.244.1.0/26", "a").block("10.244.1.64/26", "a").block("10.244.2.0/26", "b").block("fd00:244::/122", "a"),
			want: []string{"10.244.1.0/26", "10.244.1.64/26", "fd00:244::/122 nh=fd00::1"},
		},
		{
			name: "borrowed /32s from another node's block",
			s:    base().block("10.244.2.0/26", "b", "10.244.2.7", "a", "10.244.2.8", "b2"),
			want: []string{"10.244.2.7/32"},
		},
		{
			name: "disableBGPExport pool is not advertised",
			s: base().pool("quiet", "10.99.0.0/16", func(p *v3.IPPoolSpec) { p.DisableBGPExport = true }).
				block("10.99.0.0/26", "a").block("10.244.1.0/26", "a").block("10.99.1.0/26", "b", "10.99.1.5", "a"),
			want: []string{"10.244.1.0/26"},
		},
		{
			name: "block outside every pool is not advertised",
			s:    base().block("192.168.50.0/26", "a"),
			want: nil,
		},
		{
			name: "service ranges and communities",
			s: base().block("10.244.1.0/26", "a").bgpConfig("default", func(c *v3.BGPConfigurationSpec) {
				c.ServiceClusterIPs = []v3.ServiceClusterIPBlock{{CIDR: "10.96.0.0/12"}}
				c.ServiceExternalIPs = []v3.ServiceExternalIPBlock{{CIDR: "192.0.2.0/24"}}
				c.ServiceLoadBalancerIPs = []v3.ServiceLoadBalancerIPBlock{{CIDR: "198.51.100.10/32"}}
				c.Communities = []v3.Community{{Name: "svc", Value: "64512:300"}}
				c.PrefixAdvertisements = []v3.PrefixAdvertisement{
					{CIDR: "10.96.0.0/12", Communities: []string{"svc", "64512:301"}},
					{CIDR: "10.244.0.0/16", Communities: []string{"65000:1:2"}},
				}
			}),
			want: []string{"10.96.0.0/12 64512:300,64512:301", "10.244.1.0/26 65000:1:2", "192.0.2.0/24", "198.51.100.10/32"},
		},
		{
			name: "node-specific BGPConfiguration adds its own service ranges",
			s: base().bgpConfig("node.a", func(c *v3.BGPConfigurationSpec) {
				c.ServiceExternalIPs = []v3.ServiceExternalIPBlock{{CIDR: "203.0.113.0/24"}}
			}),
			want: []string{"203.0.113.0/24"},
		},
		{
			name: "v6 blocks of a node without IPv6 are not advertised",
			s:    base().block("fd00:244::40/122", "b").block("fd00:244::/122", "a"),
			want: []string{"fd00:244::/122 nh=fd00::1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range DesiredAdvertisements(tc.s, "a") {
				got = append(got, advLine(a))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func routeLines(rs []routes.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	return out
}

func TestDesiredRoutes(t *testing.T) {
	const macB, macC = "66:00:00:00:00:02", "66:00:00:00:00:03"
	vx := func(mode v3.EncapsulationMode) *Snapshot {
		// a and b share 10.0.0.0/24; c is at 10.1.0.3/24.
		return snap(
			mkNode("a", "10.0.0.1/24", withTunnel("10.244.0.1", "66:00:00:00:00:01")),
			mkNode("b", "10.0.0.2/24", withTunnel("10.244.0.65", macB)),
			mkNode("c", "10.1.0.3/24", withTunnel("10.244.0.129", macC)),
		).pool("p", "10.244.0.0/16", func(p *v3.IPPoolSpec) { p.VXLANMode = mode }).
			block("10.244.0.0/26", "a").block("10.244.0.64/26", "b").block("10.244.0.128/26", "c", "10.244.0.140", "b")
	}
	tests := []struct {
		name    string
		s       *Snapshot
		learned []bgp.Route
		want    []string
		vteps   []string
		vxlan   bool
	}{
		{
			name: "blackholes for own blocks, workload /32s, learned routes",
			s: snap(mkNode("a", "10.0.0.1/24", withV6("fd00::1/64")), mkNode("b", "10.0.0.2/24")).pool("p", "10.244.0.0/16", nil).
				block("10.244.1.0/26", "a").block("10.244.2.0/26", "b").
				wep("w1", "a", "cali1", "10.244.1.5/32").wep("w2", "a", "cali2", "10.244.2.9/32", "fd00:244::9/128").
				wep("elsewhere", "b", "cali3", "10.244.2.3/32").wep("noiface", "a", "", "10.244.1.6/32"),
			learned: []bgp.Route{
				{Prefix: pfx("10.244.2.0/26"), NextHop: addr("10.0.0.2")},
				{Prefix: pfx("10.244.1.0/26"), NextHop: addr("10.0.0.2")}, // our own block: blackhole wins
				{Prefix: pfx("10.0.0.0/24"), NextHop: addr("10.0.0.254")}, // our own subnet: never
				{Prefix: pfx("198.51.100.0/24"), NextHop: addr("10.0.0.254")},
				{Prefix: pfx("fd00:244:2::/122"), NextHop: addr("fd00::2")},
				{Prefix: pfx("192.0.2.0/24"), NextHop: addr("10.0.0.1")}, // via ourselves: never
			},
			want: []string{
				"blackhole 10.244.1.0/26",
				"10.244.1.5/32 dev cali1 scope link",
				"10.244.2.0/26 via 10.0.0.2",
				"10.244.2.9/32 dev cali2 scope link",
				"198.51.100.0/24 via 10.0.0.254",
				"fd00:244::9/128 dev cali2 scope link",
				"fd00:244:2::/122 via fd00::2",
			},
		},
		{
			name: "VXLAN Always: every remote block through the tunnel",
			s:    vx(v3.EncapAlways),
			want: []string{
				"blackhole 10.244.0.0/26",
				"10.244.0.64/26 via 10.244.0.65 dev vxlan.calico onlink",
				"10.244.0.128/26 via 10.244.0.129 dev vxlan.calico onlink",
				"10.244.0.140/32 via 10.244.0.65 dev vxlan.calico onlink",
			},
			vteps: []string{"b 10.244.0.65 66:00:00:00:00:02 10.0.0.2", "c 10.244.0.129 66:00:00:00:00:03 10.1.0.3"},
			vxlan: true,
		},
		{
			name: "VXLAN CrossSubnet: tunnel only to the other subnet, native in ours",
			s:    vx(v3.EncapCrossSubnet),
			learned: []bgp.Route{
				{Prefix: pfx("10.244.0.128/26"), NextHop: addr("10.1.0.3")}, // datastore wins
			},
			want: []string{
				"blackhole 10.244.0.0/26",
				"10.244.0.64/26 via 10.0.0.2",
				"10.244.0.128/26 via 10.244.0.129 dev vxlan.calico onlink",
				"10.244.0.140/32 via 10.0.0.2",
			},
			vteps: []string{"b 10.244.0.65 66:00:00:00:00:02 10.0.0.2", "c 10.244.0.129 66:00:00:00:00:03 10.1.0.3"},
			vxlan: true,
		},
		{
			name: "VXLAN pool but this node has no tunnel address yet: no tunnel routes",
			s: func() *Snapshot {
				s := vx(v3.EncapAlways)
				s.Nodes["a"] = mkNode("a", "10.0.0.1/24")
				return s
			}(),
			want:  []string{"blackhole 10.244.0.0/26"},
			vxlan: false,
		},
		{
			name: "remote node without tunnel address: no tunnel route to it",
			s: func() *Snapshot {
				s := vx(v3.EncapAlways)
				s.Nodes["c"] = mkNode("c", "10.1.0.3/24")
				return s
			}(),
			want: []string{
				"blackhole 10.244.0.0/26",
				"10.244.0.64/26 via 10.244.0.65 dev vxlan.calico onlink",
				"10.244.0.140/32 via 10.244.0.65 dev vxlan.calico onlink",
			},
			vteps: []string{"b 10.244.0.65 66:00:00:00:00:02 10.0.0.2"},
			vxlan: true,
		},
		{
			name: "VXLAN Never pool: nothing from the datastore, BGP decides",
			s:    vx(v3.EncapNever),
			learned: []bgp.Route{
				{Prefix: pfx("10.244.0.128/26"), NextHop: addr("10.1.0.3")},
			},
			want: []string{"blackhole 10.244.0.0/26", "10.244.0.128/26 via 10.1.0.3"},
		},
		{
			name: "learned routes inside a service range are not programmed (Calico's rejectcidrs)",
			s: snap(mkNode("a", "10.0.0.1/24", withV6("fd00::1/64")), mkNode("b", "10.0.0.2/24")).
				bgpConfig("default", func(c *v3.BGPConfigurationSpec) {
					c.ServiceClusterIPs = []v3.ServiceClusterIPBlock{{CIDR: "10.96.0.0/16"}, {CIDR: "fd00:96::/112"}}
					c.ServiceExternalIPs = []v3.ServiceExternalIPBlock{{CIDR: "192.0.2.0/24"}}
					c.ServiceLoadBalancerIPs = []v3.ServiceLoadBalancerIPBlock{{CIDR: "198.51.100.16/28"}}
				}),
			learned: []bgp.Route{
				{Prefix: pfx("10.96.0.0/16"), NextHop: addr("10.0.0.2")},       // another node's announcement
				{Prefix: pfx("10.96.7.0/24"), NextHop: addr("10.0.0.254")},     // a more specific
				{Prefix: pfx("192.0.2.10/32"), NextHop: addr("10.0.0.2")},      // one external IP
				{Prefix: pfx("198.51.100.16/28"), NextHop: addr("10.0.0.2")},   // LoadBalancer range
				{Prefix: pfx("fd00:96::5/128"), NextHop: addr("fd00::2")},      // IPv6 cluster IP
				{Prefix: pfx("10.96.0.0/12"), NextHop: addr("10.0.0.254")},     // wider than the range: kept
				{Prefix: pfx("198.51.100.0/27"), NextHop: addr("10.0.0.254")},  // wider too: kept
				{Prefix: pfx("198.51.100.32/28"), NextHop: addr("10.0.0.254")}, // beside it: kept
			},
			want: []string{
				"10.96.0.0/12 via 10.0.0.254",
				"198.51.100.0/27 via 10.0.0.254",
				"198.51.100.32/28 via 10.0.0.254",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := DesiredRoutes(tc.s, "a", tc.learned, RouteOptions{})
			if got := routeLines(rs.Routes); !slices.Equal(got, tc.want) {
				t.Errorf("routes:\n got %q\nwant %q", got, tc.want)
			}
			var vteps []string
			for _, v := range rs.VTEPs {
				vteps = append(vteps, fmt.Sprintf("%s %s %s %s", v.NodeName, v.TunnelAddr, v.MAC, v.ParentAddr))
			}
			if !slices.Equal(vteps, tc.vteps) {
				t.Errorf("vteps:\n got %q\nwant %q", vteps, tc.vteps)
			}
			if rs.VXLAN != tc.vxlan {
				t.Errorf("VXLAN = %v, want %v", rs.VXLAN, tc.vxlan)
			}
		})
	}
}

func TestParseBlock(t *testing.T) {
	// As Calico stores it (etcd-layout.md), with one address borrowed by h2.
	v := `{"cidr":"10.65.192.128/26","affinity":"host:h1","allocations":[0,1,null],"unallocated":[2],` +
		`"attributes":[{"handle_id":"x","secondary":{"node":"h1","pod":"w1"}},{"handle_id":"y","secondary":{"node":"h2"}}],"deleted":false}`
	b, err := ParseBlock([]byte(v))
	if err != nil {
		t.Fatal(err)
	}
	if b.CIDR != pfx("10.65.192.128/26") || b.Affinity != "h1" {
		t.Errorf("block %+v", b)
	}
	if len(b.Borrowed) != 1 || b.Borrowed[addr("10.65.192.129")] != "h2" {
		t.Errorf("borrowed %v", b.Borrowed)
	}
	if _, err := ParseBlock([]byte(`{"cidr":"bad"}`)); err == nil {
		t.Error("bad cidr accepted")
	}
}

func TestResolveBGP(t *testing.T) {
	s := snap(mkNode("a", "10.0.0.1/24")).
		bgpConfig("default", func(c *v3.BGPConfigurationSpec) {
			c.ASNumber = ptr(numorstring.ASNumber(65001))
			c.ListenPort = 1790
		}).
		bgpConfig("node.a", func(c *v3.BGPConfigurationSpec) { c.ListenPort = 1791 })
	st := ResolveBGP(s, "a")
	if !st.Mesh || st.ASN != 65001 || st.ListenPort != 1791 {
		t.Errorf("%+v", st)
	}
	if st := ResolveBGP(NewSnapshot(), "x"); st.ASN != bgp.DefaultASN || !st.Mesh {
		t.Errorf("defaults: %+v", st)
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	if err := writeFile(dir+"/bgp-secrets/peer", "from-file\n"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TORTIE_SECRET_OTHER_SECRET_PW", "from-env")
	look := FileSecrets(dir)
	if v, ok := look("bgp-secrets", "peer"); !ok || v != "from-file" {
		t.Errorf("file: %q %v", v, ok)
	}
	if v, ok := look("other-secret", "pw"); !ok || v != "from-env" {
		t.Errorf("env: %q %v", v, ok)
	}
	if _, ok := look("../etc", "passwd"); ok {
		t.Error("path escape")
	}
}

func TestDesiredRoutesIPIP(t *testing.T) {
	// a and b share 10.0.0.0/24; c is at 10.1.0.3/24. Each has a block of
	// pool "ipip"; b holds an address of c's block.
	ipip := func(mode v3.EncapsulationMode, mods ...func(*v3.IPPoolSpec)) *Snapshot {
		return snap(mkNode("a", "10.0.0.1/24"), mkNode("b", "10.0.0.2/24"), mkNode("c", "10.1.0.3/24")).
			pool("ipip", "10.244.0.0/16", func(p *v3.IPPoolSpec) {
				p.IPIPMode = mode
				for _, m := range mods {
					m(p)
				}
			}).
			pool("never", "10.250.0.0/16", nil).
			block("10.244.0.0/26", "a").block("10.244.0.64/26", "b").block("10.244.0.128/26", "c", "10.244.0.140", "b")
	}
	oneSubnet := func(s *Snapshot) *Snapshot { delete(s.Nodes, "c"); return s }
	learned := []bgp.Route{
		{Prefix: pfx("10.244.0.64/26"), NextHop: addr("10.0.0.2")},
		{Prefix: pfx("10.244.0.128/26"), NextHop: addr("10.1.0.3")},
		{Prefix: pfx("10.244.0.140/32"), NextHop: addr("10.0.0.2")},
		{Prefix: pfx("10.244.0.0/26"), NextHop: addr("10.0.0.2")},  // our own block: blackhole wins
		{Prefix: pfx("10.250.0.0/26"), NextHop: addr("10.1.0.3")},  // a pool without encapsulation
		{Prefix: pfx("10.96.0.0/12"), NextHop: addr("10.0.0.254")}, // in no pool (services)
	}
	plainOthers := []string{"10.96.0.0/12 via 10.0.0.254", "10.250.0.0/26 via 10.1.0.3"}
	tests := []struct {
		name    string
		s       *Snapshot
		learned []bgp.Route
		ipip    bool // RouteOptions.IPIP
		want    []string
		needDev bool     // RouteSet.IPIP
		noIPIP  []string // RouteSet.NoIPIP
	}{
		{
			name: "Always with IP-in-IP: every learned block through tunl0, onlink via the host",
			s:    ipip(v3.EncapAlways), learned: learned, ipip: true,
			want: append([]string{
				"blackhole 10.244.0.0/26",
				"10.244.0.64/26 via 10.0.0.2 dev tunl0 onlink",
				"10.244.0.128/26 via 10.1.0.3 dev tunl0 onlink",
				"10.244.0.140/32 via 10.0.0.2 dev tunl0 onlink",
			}, plainOthers...),
			needDev: true,
		},
		{
			name: "Always without IP-in-IP: the pool's blocks are not routed at all, and the pool is named",
			s:    ipip(v3.EncapAlways), learned: learned,
			want:   append([]string{"blackhole 10.244.0.0/26"}, plainOthers...),
			noIPIP: []string{"ipip"},
		},
		{
			name: "Always without IP-in-IP, before any route is learned: already named",
			s:    ipip(v3.EncapAlways),
			want: []string{"blackhole 10.244.0.0/26"}, noIPIP: []string{"ipip"},
		},
		{
			name: "CrossSubnet with IP-in-IP: native in our subnet, tunl0 to the other",
			s:    ipip(v3.EncapCrossSubnet), learned: learned, ipip: true,
			want: append([]string{
				"blackhole 10.244.0.0/26",
				"10.244.0.64/26 via 10.0.0.2",
				"10.244.0.128/26 via 10.1.0.3 dev tunl0 onlink",
				"10.244.0.140/32 via 10.0.0.2",
			}, plainOthers...),
			needDev: true,
		},
		{
			name: "CrossSubnet without IP-in-IP: native in our subnet, the other subnet not routed, the pool named",
			s:    ipip(v3.EncapCrossSubnet), learned: learned,
			want: append([]string{
				"blackhole 10.244.0.0/26",
				"10.244.0.64/26 via 10.0.0.2",
				"10.244.0.140/32 via 10.0.0.2",
			}, plainOthers...),
			noIPIP: []string{"ipip"},
		},
		{
			name: "CrossSubnet without IP-in-IP, every host in our subnet: nothing needs it",
			s:    oneSubnet(ipip(v3.EncapCrossSubnet)), learned: learned[:1],
			want: []string{"blackhole 10.244.0.0/26", "10.244.0.64/26 via 10.0.0.2"},
		},
		{
			name: "CrossSubnet without IP-in-IP, hosts in our subnet but a route from outside it: left out, the pool named",
			s:    oneSubnet(ipip(v3.EncapCrossSubnet)), learned: learned[:2],
			want: []string{"blackhole 10.244.0.0/26", "10.244.0.64/26 via 10.0.0.2"}, noIPIP: []string{"ipip"},
		},
		{
			name: "a disabled Always pool still needs IP-in-IP for the blocks it has",
			s:    ipip(v3.EncapAlways, func(p *v3.IPPoolSpec) { p.Disabled = true }), learned: learned[:1],
			want: []string{"blackhole 10.244.0.0/26"}, noIPIP: []string{"ipip"},
		},
		{
			name: "Never: plain, whatever the kernel",
			s:    ipip(v3.EncapNever), learned: learned,
			want: append([]string{
				"blackhole 10.244.0.0/26",
				"10.244.0.64/26 via 10.0.0.2",
				"10.244.0.128/26 via 10.1.0.3",
				"10.244.0.140/32 via 10.0.0.2",
			}, plainOthers...),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := DesiredRoutes(tc.s, "a", tc.learned, RouteOptions{IPIP: tc.ipip})
			got := routeLines(rs.Routes)
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) {
				t.Errorf("routes:\n got %q\nwant %q", got, want)
			}
			if rs.IPIP != tc.needDev || !slices.Equal(rs.NoIPIP, tc.noIPIP) {
				t.Errorf("IPIP = %v, NoIPIP = %q; want %v, %q", rs.IPIP, rs.NoIPIP, tc.needDev, tc.noIPIP)
			}
			// Never a plain route where the pool asks for encapsulation.
			self := parseNode(tc.s.Nodes["a"])
			for _, r := range rs.Routes {
				if p := poolFor(tc.s, r.Dst); p != nil && r.Gateway.IsValid() && encapsulated(p.Spec.IPIPMode, self, r.Gateway) &&
					(r.Dev != routes.IPIPDeviceName || !r.OnLink) {
					t.Errorf("%s: pool %s (ipipMode %s) routed without IP-in-IP", r, p.Name, p.Spec.IPIPMode)
				}
			}
		})
	}
}

func TestNoIPIPError(t *testing.T) {
	s := NewSnapshot().
		pool("always", "10.5.0.0/16", func(p *v3.IPPoolSpec) { p.IPIPMode = v3.EncapAlways }).
		pool("cross", "10.6.0.0/16", func(p *v3.IPPoolSpec) { p.IPIPMode = v3.EncapCrossSubnet })
	probe := fmt.Errorf("%w: creating tunl0: operation not supported", routes.ErrNoIPIP)
	got := noIPIPError(s, []string{"always", "cross"}, probe).Error()
	want := "this host's kernel has no IP-in-IP support (no ipip module): traffic to other hosts' blocks of " +
		"pool always (10.5.0.0/16, ipipMode Always), pool cross (10.6.0.0/16, ipipMode CrossSubnet: hosts in other subnets) " +
		"is not routed; use vxlanMode instead"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// Another reason is given as the probe said it.
	other := noIPIPError(s, []string{"always"}, errors.New("ipip tunl0: the device exists but is of type veth, not ipip")).Error()
	if !strings.HasPrefix(other, "IP-in-IP is not available on this node (ipip tunl0: the device exists but is of type veth, not ipip): ") ||
		!strings.Contains(other, "pool always (10.5.0.0/16, ipipMode Always)") {
		t.Errorf("%q", other)
	}
	// FelixConfiguration ipipEnabled false says so.
	off := noIPIPError(s, []string{"always"}, errIPIPDisabled).Error()
	if !strings.HasPrefix(off, "IP-in-IP is not available on this node (FelixConfiguration ipipEnabled is false on this node): ") {
		t.Errorf("%q", off)
	}
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o600)
}

func TestUsableLearned(t *testing.T) {
	learned := []bgp.Route{
		{Prefix: pfx("10.1.0.0/26"), NextHop: addr("10.0.0.2"), Peer: addr("10.0.0.2"), Stale: true},
		{Prefix: pfx("10.1.0.64/26"), NextHop: addr("10.0.0.3"), Peer: addr("10.0.0.3"), Stale: true},
		{Prefix: pfx("10.1.0.128/26"), NextHop: addr("10.0.0.2"), Peer: addr("10.0.0.2")},
	}
	got := UsableLearned(learned, map[netip.Addr]bool{addr("10.0.0.2"): true})
	if len(got) != 2 || got[0].Prefix != pfx("10.1.0.64/26") || got[1].Prefix != pfx("10.1.0.128/26") {
		t.Errorf("%+v", got)
	}
}

// TestDesiredRoutesConfigOff: FelixConfiguration vxlanEnabled false names
// the VXLAN pools and routes none of their remote blocks (never plain, not
// even when learned over BGP); ipv6Support false leaves every IPv6 route out.
func TestDesiredRoutesConfigOff(t *testing.T) {
	s := snap(
		mkNode("a", "10.0.0.1/24", withTunnel("10.244.0.1", "66:00:00:00:00:01"), withV6("fd00::1/64")),
		mkNode("b", "10.0.0.2/24", withTunnel("10.244.0.65", "66:00:00:00:00:02")),
	).pool("p", "10.244.0.0/16", func(p *v3.IPPoolSpec) { p.VXLANMode = v3.EncapAlways }).
		pool("v6", "fd00:244::/48", nil).
		block("10.244.0.0/26", "a").block("10.244.0.64/26", "b")
	learned := []bgp.Route{
		{Prefix: pfx("10.244.0.64/26"), NextHop: addr("10.0.0.2")},
		{Prefix: pfx("fd00:244:2::/122"), NextHop: addr("fd00::2")},
	}
	rs := DesiredRoutes(s, "a", learned, RouteOptions{NoVXLAN: true, NoIPv6: true})
	if got := routeLines(rs.Routes); !slices.Equal(got, []string{"blackhole 10.244.0.0/26"}) {
		t.Errorf("routes %q: want only our blackhole", got)
	}
	if rs.VXLAN || len(rs.VTEPs) != 0 || !slices.Equal(rs.NoVXLAN, []string{"p"}) {
		t.Errorf("VXLAN %v, VTEPs %v, NoVXLAN %q: want no device and pool p named", rs.VXLAN, rs.VTEPs, rs.NoVXLAN)
	}
	// The same with both on: the tunnel route and the IPv6 route are there.
	rs = DesiredRoutes(s, "a", learned, RouteOptions{})
	got := routeLines(rs.Routes)
	for _, want := range []string{"10.244.0.64/26 via 10.244.0.65 dev vxlan.calico onlink", "fd00:244:2::/122 via fd00::2"} {
		if !slices.Contains(got, want) {
			t.Errorf("routes %q lack %q", got, want)
		}
	}
}
