package startup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/apis/v3/numorstring"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/ipam"
	"github.com/tortie/tortie/pkg/netutil"
	"github.com/tortie/tortie/pkg/nodename"
	"github.com/tortie/tortie/pkg/selector"
)

// DefaultNodenameFile is where the node name is written for the CNI
// plugin, which reads it: nodename.DefaultFile, the one constant both use.
const DefaultNodenameFile = nodename.DefaultFile

// Address settings, as Calico's IP and IP6 variables.
const (
	AddrAutodetect = "autodetect"
	AddrNone       = "none"
)

// tunnelKind is one kind of tunnel address a node gets from IPAM, as
// Calico's allocateip names and stores it: an IPAM handle per node, the
// allocation's type attribute, whether a pool (that selects the node) asks
// for the tunnel, and the Node field that holds the address.
type tunnelKind struct {
	name         string // in logs and errors
	handlePrefix string // + node name
	attrType     string
	wants        func(*v3.IPPoolSpec, *v3.Node) bool
	addr         func(*v3.Node) string
	// set writes the address into the Node; "" removes it, with anything
	// that belongs to it.
	set func(n *v3.Node, addr string)
}

var (
	vxlanTunnel = tunnelKind{
		name: "VXLAN", handlePrefix: "vxlan-tunnel-addr-", attrType: "vxlanTunnelAddress",
		wants: func(s *v3.IPPoolSpec, _ *v3.Node) bool { return encapsulates(s.VXLANMode) },
		addr:  func(n *v3.Node) string { return n.Spec.IPv4VXLANTunnelAddr },
		set: func(n *v3.Node, addr string) {
			n.Spec.IPv4VXLANTunnelAddr = addr
			switch {
			case addr == "":
				n.Spec.VXLANTunnelMACAddr = ""
			case n.Spec.VXLANTunnelMACAddr == "":
				n.Spec.VXLANTunnelMACAddr = netutil.RandomMAC().String()
			}
		},
	}
	ipipTunnel = tunnelKind{
		name: "IP-in-IP", handlePrefix: "ipip-tunnel-addr-", attrType: "ipipTunnelAddress",
		wants: func(s *v3.IPPoolSpec, _ *v3.Node) bool { return encapsulates(s.IPIPMode) },
		addr: func(n *v3.Node) string {
			if n.Spec.BGP == nil {
				return ""
			}
			return n.Spec.BGP.IPv4IPIPTunnelAddr
		},
		set: func(n *v3.Node, addr string) {
			if n.Spec.BGP == nil {
				n.Spec.BGP = &v3.NodeBGPSpec{}
			}
			n.Spec.BGP.IPv4IPIPTunnelAddr = addr
		},
	}
	// The WireGuard device's address comes from any pool, once the node
	// has published a public key (WireGuard is on for it).
	wireguardTunnel = tunnelKind{
		name: "WireGuard", handlePrefix: "wireguard-tunnel-addr-", attrType: "wireguardTunnelAddress",
		wants: func(_ *v3.IPPoolSpec, n *v3.Node) bool { return n.Status.WireguardPublicKey != "" },
		addr: func(n *v3.Node) string {
			if n.Spec.Wireguard == nil {
				return ""
			}
			return n.Spec.Wireguard.InterfaceIPv4Address
		},
		set: func(n *v3.Node, addr string) {
			if n.Spec.Wireguard == nil {
				n.Spec.Wireguard = &v3.NodeWireguardSpec{}
			}
			n.Spec.Wireguard.InterfaceIPv4Address = addr
			if *n.Spec.Wireguard == (v3.NodeWireguardSpec{}) {
				n.Spec.Wireguard = nil
			}
		},
	}
	tunnelKinds = []*tunnelKind{&vxlanTunnel, &ipipTunnel, &wireguardTunnel}
)

func encapsulates(m v3.EncapsulationMode) bool {
	return m == v3.EncapAlways || m == v3.EncapCrossSubnet
}

// Default pool names, as calico-node names them.
const (
	DefaultIPv4PoolName = "default-ipv4-ippool"
	DefaultIPv6PoolName = "default-ipv6-ippool"
)

// Config is what startup is told.
type Config struct {
	// NodeName: empty means NODENAME, then the host name.
	NodeName string
	// IPv4, IPv6: AddrAutodetect, AddrNone, or an address (with or without
	// a prefix length; without, the prefix length of the interface that
	// has it is used, else /32 or /128). Empty IPv4 means autodetect,
	// empty IPv6 means none (Calico's defaults).
	IPv4, IPv6 string
	// IPv4Method, IPv6Method: autodetection methods (default first-found).
	IPv4Method, IPv6Method string
	// ASNumber, when set, is written to spec.bgp.asNumber ("64512" or
	// "1.10").
	ASNumber string
	// Labels are merged into the Node's labels (others' labels are kept).
	Labels map[string]string
	// NodenameFile: empty means DefaultNodenameFile; "-" means do not write.
	NodenameFile string
	// DefaultIPv4Pool, DefaultIPv6Pool: a CIDR to create a pool from when
	// no pool of that family exists; empty means create none.
	DefaultIPv4Pool, DefaultIPv6Pool string
	// Settings of a created default IPv4 pool (Calico's CALICO_IPV4POOL_*).
	DefaultPoolVXLANMode v3.EncapsulationMode
	DefaultPoolIPIPMode  v3.EncapsulationMode
	DefaultPoolNAT       bool
	DefaultPoolBlockSize int
	// DefaultPoolNodeSelector of a created default IPv4 pool (empty:
	// all()).
	DefaultPoolNodeSelector string
	// ClusterType ("k8s,bgp", Calico's CLUSTER_TYPE) is merged into
	// ClusterInformation default's clusterType as calico-node merges it:
	// the types not there yet are appended.
	ClusterType string
	// KubernetesNodeRef, when set, is the Kubernetes Node this host is:
	// an orchRef {orchestrator: k8s, nodeName} is added to the Node if it
	// has none for k8s (as calico-node does with CALICO_K8S_NODE_REF).
	KubernetesNodeRef string
	// Detector finds addresses; zero means HostDetector.
	Detector Detector
	Logger   *slog.Logger
}

// Result is what startup settled.
type Result struct {
	NodeName   string
	IPv4, IPv6 netip.Prefix // invalid when none
	IPv4Iface  string       // where IPv4 was found ("" when given)
	IPv6Iface  string
	Node       *v3.Node // as written
	// VXLANTunnelAddr and VXLANMAC are set when a VXLAN pool applies.
	VXLANTunnelAddr netip.Addr
	VXLANMAC        string
	// IPIPTunnelAddr is set when an IP-in-IP pool applies.
	IPIPTunnelAddr netip.Addr
	// Warnings are conditions the operator must know about that do not
	// stop the node (a tunnel pool applies but the node has no IPv4
	// address).
	Warnings []string
}

// NodeName resolves the node name: flag, NODENAME, host name.
func NodeName(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := strings.TrimSpace(os.Getenv("NODENAME")); n != "" {
		return n, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("node name: no flag, no NODENAME and no host name: %w", err)
	}
	return strings.ToLower(strings.TrimSpace(h)), nil
}

// Run does the whole startup against the datastore behind c.
func Run(ctx context.Context, c *client.Client, cfg Config) (*Result, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "startup")
	if cfg.Detector.Interfaces == nil {
		cfg.Detector = HostDetector()
	}
	name, err := NodeName(cfg.NodeName)
	if err != nil {
		return nil, err
	}
	res := &Result{NodeName: name}

	if res.IPv4, res.IPv4Iface, err = resolveAddr(ctx, cfg.Detector, cfg.IPv4, AddrAutodetect, cfg.IPv4Method, false); err != nil {
		return nil, fmt.Errorf("IPv4 address: %w", err)
	}
	if res.IPv6, res.IPv6Iface, err = resolveAddr(ctx, cfg.Detector, cfg.IPv6, AddrNone, cfg.IPv6Method, true); err != nil {
		return nil, fmt.Errorf("IPv6 address: %w", err)
	}
	log.Info("node address", "node", name, "ipv4", res.IPv4, "ipv4Interface", res.IPv4Iface, "ipv6", res.IPv6, "ipv6Interface", res.IPv6Iface)

	var asn *numorstring.ASNumber
	if cfg.ASNumber != "" {
		a, err := numorstring.ASNumberFromString(cfg.ASNumber)
		if err != nil {
			return nil, fmt.Errorf("AS number %q: %w", cfg.ASNumber, err)
		}
		asn = &a
	}

	if err := c.EnsureInitialized(ctx); err != nil {
		return nil, err
	}
	if err := mergeClusterType(ctx, c, cfg.ClusterType); err != nil {
		return nil, err
	}
	// The Node first, so that pools' nodeSelectors can be matched against
	// its labels below.
	node, err := updateNode(ctx, c, name, func(n *v3.Node) {
		if n.Spec.BGP == nil {
			n.Spec.BGP = &v3.NodeBGPSpec{}
		}
		n.Spec.BGP.IPv4Address = prefixString(res.IPv4)
		n.Spec.BGP.IPv6Address = prefixString(res.IPv6)
		if asn != nil {
			n.Spec.BGP.ASNumber = asn
		}
		if cfg.KubernetesNodeRef != "" {
			setOrchRef(n, v3.OrchestratorKubernetes, cfg.KubernetesNodeRef)
		}
		if len(cfg.Labels) > 0 {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			maps.Copy(n.Labels, cfg.Labels)
		}
	})
	if err != nil {
		return nil, err
	}
	res.Node = node

	if err := writeNodename(cfg.NodenameFile, name); err != nil {
		return nil, err
	}
	if err := ensureDefaultPools(ctx, c, cfg, log); err != nil {
		return nil, err
	}
	pools, err := listPools(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := ensureTunnels(ctx, c, res, pools, log); err != nil {
		return nil, err
	}
	return res, nil
}

// SetWireguardKey publishes this node's WireGuard public key (base64) in
// its Node's status.wireguardPublicKey, or removes it when key is "", as
// Felix does when WireGuard is turned on or off. With a key the node gets a
// WireGuard tunnel address from IPAM (handle "wireguard-tunnel-addr-<node>",
// type wireguardTunnelAddress, into spec.wireguard.interfaceIPv4Address);
// without one the address is released and cleared. res.Node is updated.
// A key the Node already has changes nothing: Run, which res comes from,
// gave the node the tunnel addresses for it.
func SetWireguardKey(ctx context.Context, c *client.Client, res *Result, key string, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	n, err := updateNode(ctx, c, res.NodeName, func(n *v3.Node) { n.Status.WireguardPublicKey = key })
	if err != nil {
		return err
	}
	unchanged := n.Status.WireguardPublicKey == res.Node.Status.WireguardPublicKey
	res.Node = n
	if unchanged {
		return nil // Run gave the node the tunnel addresses for this key already
	}
	if key == "" {
		log.Info("WireGuard public key removed from the Node", "node", res.NodeName)
	} else {
		log.Info("WireGuard public key published in the Node", "node", res.NodeName, "publicKey", key)
	}
	pools, err := listPools(ctx, c)
	if err != nil {
		return err
	}
	return ensureTunnels(ctx, c, res, pools, log)
}

// tunnelPools are, for each kind of tunnel, the enabled IPv4 pools that
// ask for it and select a node of these labels.
func tunnelPools(pools []*v3.IPPool, n *v3.Node) map[*tunnelKind][]netip.Prefix {
	out := map[*tunnelKind][]netip.Prefix{}
	for _, p := range pools {
		if p.Spec.Disabled || !poolSelects(p, n.Labels) {
			continue
		}
		cidr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil || !cidr.Addr().Is4() {
			continue
		}
		for _, k := range tunnelKinds {
			if k.wants(&p.Spec, n) {
				out[k] = append(out[k], cidr)
			}
		}
	}
	return out
}

// ensureTunnels gives the node (res.Node) each kind of tunnel address its
// pools ask for, and takes away those they no longer ask for. Whether this
// host can do IP-in-IP is the routing component's to say (it keeps the
// node not ready when it cannot).
func ensureTunnels(ctx context.Context, c *client.Client, res *Result, pools []*v3.IPPool, log *slog.Logger) error {
	want := tunnelPools(pools, res.Node)
	for _, k := range tunnelKinds {
		if err := ensureTunnel(ctx, c, res, k, want[k], log); err != nil {
			return err
		}
	}
	res.VXLANTunnelAddr, res.VXLANMAC = netip.Addr{}, ""
	if a, err := netip.ParseAddr(vxlanTunnel.addr(res.Node)); err == nil {
		res.VXLANTunnelAddr, res.VXLANMAC = a, res.Node.Spec.VXLANTunnelMACAddr
	}
	res.IPIPTunnelAddr = netip.Addr{}
	if a, err := netip.ParseAddr(ipipTunnel.addr(res.Node)); err == nil {
		res.IPIPTunnelAddr = a
	}
	return nil
}

// mergeClusterType appends to ClusterInformation default's clusterType
// the comma-separated types of clusterType it does not list yet, as
// calico-node does with CLUSTER_TYPE ("k8s,bgp" then "k8s,vxlan" gives
// "k8s,bgp,vxlan").
func mergeClusterType(ctx context.Context, c *client.Client, clusterType string) error {
	if strings.TrimSpace(clusterType) == "" {
		return nil
	}
	kind, _ := v3.KindByKind(v3.KindClusterInformation)
	for attempt := 0; ; attempt++ {
		r, err := c.Get(ctx, kind, "", "default")
		if err != nil {
			return fmt.Errorf("reading ClusterInformation default: %w", err)
		}
		ci := r.(*v3.ClusterInformation)
		merged := MergeClusterType(ci.Spec.ClusterType, clusterType)
		if merged == ci.Spec.ClusterType {
			return nil
		}
		ci.Spec.ClusterType = merged
		_, err = c.Update(ctx, ci)
		if errors.Is(err, datastore.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing ClusterInformation default's clusterType: %w", err)
		}
		return nil
	}
}

// MergeClusterType is have with the types of add it lacks appended, in
// add's order; empty types are dropped.
func MergeClusterType(have, add string) string {
	var out []string
	for _, t := range strings.Split(have, ",") {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	for _, t := range strings.Split(add, ",") {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return strings.Join(out, ",")
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// resolveAddr turns an IP/IP6 setting into an address.
func resolveAddr(ctx context.Context, d Detector, setting, def, method string, v6 bool) (netip.Prefix, string, error) {
	if setting == "" {
		setting = def
	}
	switch strings.ToLower(setting) {
	case AddrNone:
		return netip.Prefix{}, "", nil
	case AddrAutodetect:
		if method == "" {
			method = MethodFirstFound
		}
		return d.Detect(ctx, method, v6)
	}
	var p netip.Prefix
	if strings.Contains(setting, "/") {
		var err error
		if p, err = netip.ParsePrefix(setting); err != nil {
			return netip.Prefix{}, "", err
		}
	} else {
		a, err := netip.ParseAddr(setting)
		if err != nil {
			return netip.Prefix{}, "", fmt.Errorf("%q is neither an address nor %q/%q", setting, AddrAutodetect, AddrNone)
		}
		p = netip.PrefixFrom(a, a.BitLen())
		// Calico takes the prefix length from the interface with the address.
		if ifs, err := d.Interfaces(); err == nil {
			if q, _, err := pickSource(ifs, a, setting); err == nil {
				p = q
			}
		}
	}
	if p.Addr().Is6() != v6 {
		return netip.Prefix{}, "", fmt.Errorf("%s is of the wrong family", setting)
	}
	return p, "", nil
}

// updateNode reads the Node, applies change and writes it back with
// compare-and-swap, retrying from a fresh read on conflict. A missing Node
// is created.
func updateNode(ctx context.Context, c *client.Client, name string, change func(*v3.Node)) (*v3.Node, error) {
	kind, _ := v3.KindByKind(v3.KindNode)
	for attempt := 0; ; attempt++ {
		r, err := c.Get(ctx, kind, "", name)
		var n *v3.Node
		creating := false
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			n = kind.NewObject().(*v3.Node)
			n.Name = name
			creating = true
		case err != nil:
			return nil, fmt.Errorf("reading Node %s: %w", name, err)
		default:
			n = r.(*v3.Node)
		}
		before, _ := json.Marshal(n)
		change(n)
		after, _ := json.Marshal(n)
		if !creating && bytes.Equal(before, after) {
			return n, nil
		}
		var out v3.Resource
		if creating {
			out, err = c.Create(ctx, n)
		} else {
			out, err = c.Update(ctx, n)
		}
		if err == nil {
			return out.(*v3.Node), nil
		}
		if (errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrAlreadyExists)) && attempt < 20 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 20 * time.Millisecond):
			}
			continue
		}
		return nil, fmt.Errorf("writing Node %s: %w", name, err)
	}
}

// setOrchRef records that the node is nodeName to orchestrator: the
// orchestrator's entry is set, others are kept.
func setOrchRef(n *v3.Node, orchestrator, nodeName string) {
	for i := range n.Spec.OrchRefs {
		if n.Spec.OrchRefs[i].Orchestrator == orchestrator {
			n.Spec.OrchRefs[i].NodeName = nodeName
			return
		}
	}
	n.Spec.OrchRefs = append(n.Spec.OrchRefs, v3.OrchRef{NodeName: nodeName, Orchestrator: orchestrator})
}

func writeNodename(path, name string) error {
	if path == "-" {
		return nil
	}
	if path == "" {
		path = DefaultNodenameFile
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("node name file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(name), 0o644); err != nil {
		return fmt.Errorf("node name file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("node name file: %w", err)
	}
	return nil
}

func listPools(ctx context.Context, c *client.Client) ([]*v3.IPPool, error) {
	kind, _ := v3.KindByKind(v3.KindIPPool)
	rs, _, err := c.List(ctx, kind, "")
	if err != nil {
		return nil, err
	}
	out := make([]*v3.IPPool, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.(*v3.IPPool))
	}
	return out, nil
}

func poolSelects(p *v3.IPPool, labels map[string]string) bool {
	s := p.Spec.NodeSelector
	if s == "" {
		return true
	}
	sel, err := selector.Parse(s)
	if err != nil {
		return false
	}
	return sel.Evaluate(labels)
}

// ensureDefaultPools creates the requested default pools when no pool of
// their family exists. A pool created meanwhile by another node is fine.
func ensureDefaultPools(ctx context.Context, c *client.Client, cfg Config, log *slog.Logger) error {
	if cfg.DefaultIPv4Pool == "" && cfg.DefaultIPv6Pool == "" {
		return nil
	}
	pools, err := listPools(ctx, c)
	if err != nil {
		return err
	}
	have4, have6 := false, false
	for _, p := range pools {
		if cidr, err := netip.ParsePrefix(p.Spec.CIDR); err == nil {
			if cidr.Addr().Is4() {
				have4 = true
			} else {
				have6 = true
			}
		}
	}
	kind, _ := v3.KindByKind(v3.KindIPPool)
	create := func(name, cidr string, v6 bool) error {
		p := kind.NewObject().(*v3.IPPool)
		p.Name = name
		p.Spec.CIDR = cidr
		p.Spec.NodeSelector = "all()"
		if !v6 {
			if cfg.DefaultPoolNodeSelector != "" {
				p.Spec.NodeSelector = cfg.DefaultPoolNodeSelector
			}
			p.Spec.VXLANMode = cfg.DefaultPoolVXLANMode
			p.Spec.IPIPMode = cfg.DefaultPoolIPIPMode
			p.Spec.NATOutgoing = cfg.DefaultPoolNAT
			p.Spec.BlockSize = cfg.DefaultPoolBlockSize
		}
		_, err := c.Create(ctx, p)
		if errors.Is(err, datastore.ErrAlreadyExists) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("creating default pool %s (%s): %w", name, cidr, err)
		}
		log.Info("created default IP pool", "pool", name, "cidr", cidr)
		return nil
	}
	if cfg.DefaultIPv4Pool != "" && !have4 {
		if err := create(DefaultIPv4PoolName, cfg.DefaultIPv4Pool, false); err != nil {
			return err
		}
	}
	if cfg.DefaultIPv6Pool != "" && !have6 {
		if err := create(DefaultIPv6PoolName, cfg.DefaultIPv6Pool, true); err != nil {
			return err
		}
	}
	return nil
}

// ensureTunnel gives the node a tunnel address of kind k from pools (the
// IPv4 pools that ask for that tunnel and select this node), as Calico's
// allocateip does, or, when pools is empty, releases it and clears it from
// the Node. An address the handle holds outside pools (its pool was
// changed or deleted) is released first.
func ensureTunnel(ctx context.Context, c *client.Client, res *Result, k *tunnelKind, pools []netip.Prefix, log *slog.Logger) error {
	am := ipam.New(c.Backend(), ipam.Options{Logger: log})
	handle := k.handlePrefix + res.NodeName
	if len(pools) == 0 {
		return releaseTunnel(ctx, c, am, res, k, log)
	}
	if !res.IPv4.IsValid() {
		w := fmt.Sprintf("a %s IP pool applies to this node but it has no IPv4 address: no tunnel address", k.name)
		log.Warn(w)
		res.Warnings = append(res.Warnings, w)
		return nil
	}
	held, err := am.IPsByHandle(ctx, handle)
	if err != nil && !errors.Is(err, ipam.ErrHandleNotFound) {
		return fmt.Errorf("reading %s tunnel address: %w", k.name, err)
	}
	if slices.ContainsFunc(held, func(a netip.Addr) bool {
		return !slices.ContainsFunc(pools, func(p netip.Prefix) bool { return p.Contains(a) })
	}) {
		if _, err := am.ReleaseByHandle(ctx, handle); err != nil && !errors.Is(err, ipam.ErrHandleNotFound) {
			return fmt.Errorf("releasing %s tunnel address %v outside its pools: %w", k.name, held, err)
		}
		log.Info(k.name+" tunnel address no longer in a pool that asks for it; released", "node", res.NodeName, "addr", held)
	}
	as, err := am.AutoAssign(ctx, ipam.AutoAssignArgs{
		HandleID:    handle,
		Num4:        1,
		Node:        res.NodeName,
		IPv4Pools:   pools,
		IntendedUse: v3.AllowedUseTunnel,
		Attrs:       map[string]string{ipam.AttrNode: res.NodeName, ipam.AttrType: k.attrType},
	})
	if err != nil {
		return fmt.Errorf("allocating %s tunnel address: %w", k.name, err)
	}
	if len(as.IPv4) == 0 {
		return fmt.Errorf("allocating %s tunnel address: none handed out", k.name)
	}
	addr := as.IPv4[0].Addr()
	n, err := updateNode(ctx, c, res.NodeName, func(n *v3.Node) { k.set(n, addr.String()) })
	if err != nil {
		return err
	}
	res.Node = n
	log.Info(k.name+" tunnel address", "node", res.NodeName, "addr", addr)
	return nil
}

// releaseTunnel gives back the node's tunnel address of kind k, if its
// handle holds one, and clears it from the Node.
func releaseTunnel(ctx context.Context, c *client.Client, am *ipam.IPAM, res *Result, k *tunnelKind, log *slog.Logger) error {
	handle := k.handlePrefix + res.NodeName
	if _, err := am.ReleaseByHandle(ctx, handle); err != nil && !errors.Is(err, ipam.ErrHandleNotFound) {
		log.Warn("releasing "+k.name+" tunnel address", "handle", handle, "err", err)
	}
	if k.addr(res.Node) == "" {
		return nil
	}
	n, err := updateNode(ctx, c, res.NodeName, func(n *v3.Node) { k.set(n, "") })
	if err != nil {
		return err
	}
	res.Node = n
	log.Info("no "+k.name+" pool applies any more; tunnel address released", "node", res.NodeName)
	return nil
}
