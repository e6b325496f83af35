package startup

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/syncer"
)

// Tunnels keeps the node's tunnel addresses (VXLAN, IP-in-IP) as the IP
// pools ask while the agent runs, as calico-node's allocate-tunnel-addrs
// does: a pool whose vxlanMode becomes Always or CrossSubnet gives the
// node a VXLAN tunnel address (and MAC) at once, one set back to Never,
// deleted or no longer selecting the node takes it away. Run does the same
// once at startup; Tunnels is an agent component (pkg/node's Component)
// fed IPPool and Node updates. It writes to the datastore only when the
// Node's addresses and what the pools ask differ.
type Tunnels struct {
	c     *client.Client
	res   Result
	log   *slog.Logger
	pools map[string]*v3.IPPool
	// applied is the wanted state last brought about (tunnelsKey).
	applied string
}

// NewTunnels is the component for the node res registered.
func NewTunnels(c *client.Client, res *Result, log *slog.Logger) *Tunnels {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tunnels{c: c, res: *res, log: log, pools: map[string]*v3.IPPool{}}
}

// Name is the component's name.
func (t *Tunnels) Name() string { return "tunnel-addresses" }

// Kinds are IP pools and nodes.
func (t *Tunnels) Kinds() []string { return []string{v3.KindIPPool, v3.KindNode} }

// OnUpdate follows the pools and this node.
func (t *Tunnels) OnUpdate(u syncer.Update) {
	switch u.Kind {
	case v3.KindIPPool:
		if p, ok := u.Resource.(*v3.IPPool); ok {
			t.pools[u.Name] = p
		} else {
			delete(t.pools, u.Name)
		}
	case v3.KindNode:
		if n, ok := u.Resource.(*v3.Node); ok && u.Name == t.res.NodeName {
			t.res.Node = n
		}
	}
}

// OnInSync does nothing: Apply compares.
func (t *Tunnels) OnInSync() {}

// Apply allocates or releases tunnel addresses when the Node's differ from
// what the pools ask (whatever full says: when they agree there is
// nothing to repair in the datastore).
func (t *Tunnels) Apply(ctx context.Context, full bool) error {
	if t.res.Node == nil {
		return nil // not seen yet (deleted?): nothing to keep
	}
	pools := slices.Collect(maps.Values(t.pools))
	key := tunnelsKey(pools, t.res.Node)
	if key == t.applied {
		return nil
	}
	if agree(tunnelPools(pools, t.res.Node), t.res.Node) {
		t.applied = key
		return nil
	}
	t.log.Info("tunnel addresses: reconciling with the pools", "node", t.res.NodeName)
	if err := ensureTunnels(ctx, t.c, &t.res, pools, t.log); err != nil {
		return fmt.Errorf("tunnel addresses: %w", err)
	}
	t.applied = tunnelsKey(pools, t.res.Node)
	return nil
}

// agree says whether the node holds exactly the tunnel addresses want asks
// for, each inside one of its pools.
func agree(want map[*tunnelKind][]netip.Prefix, n *v3.Node) bool {
	for _, k := range tunnelKinds {
		addr := k.addr(n)
		if len(want[k]) == 0 {
			if addr != "" {
				return false
			}
			continue
		}
		a, err := netip.ParseAddr(addr)
		if err != nil || !slices.ContainsFunc(want[k], func(p netip.Prefix) bool { return p.Contains(a) }) {
			return false
		}
	}
	return true
}

// tunnelsKey sums up what the tunnel addresses depend on: the pools that
// ask for a tunnel and select the node, and the node's addresses.
func tunnelsKey(pools []*v3.IPPool, n *v3.Node) string {
	var parts []string
	for k, ps := range tunnelPools(pools, n) {
		for _, p := range ps {
			parts = append(parts, k.name+"="+p.String())
		}
	}
	for _, k := range tunnelKinds {
		parts = append(parts, k.name+"@"+k.addr(n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
