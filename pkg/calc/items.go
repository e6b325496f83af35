package calc

import (
	"maps"
	"net/netip"
	"slices"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

type itemKind uint8

const (
	kindWorkload itemKind = iota
	kindHost
	kindNetSet
	kindGlobalNetSet
)

type itemKey struct {
	kind     itemKind
	ns, name string
}

// namedPort is a port of an endpoint that rules can name.
type namedPort struct {
	name  string
	proto uint8
	port  uint16
}

// item is anything labelled that selectors match: a workload or host
// endpoint (anywhere in the cluster) or a network set.
type item struct {
	key     itemKey
	own     map[string]string // own labels, plus the implicit ones
	parents []string          // profiles it inherits labels from
	labels  map[string]string // effective: own, then parents in order
	addrs   []netip.Prefix
	ports   []namedPort
	local   bool // an endpoint of this host
	iface   string
	matches [2]selList
}

func (it *item) endpointID() EndpointID {
	if it.key.kind == kindHost {
		return EndpointID{Kind: v3.KindHostEndpoint, Name: it.key.name}
	}
	return EndpointID{Kind: v3.KindWorkloadEndpoint, Namespace: it.key.ns, Name: it.key.name}
}

func (g *Graph) updateItem(u Update) {
	var key itemKey
	switch u.Kind {
	case v3.KindWorkloadEndpoint:
		key = itemKey{kindWorkload, u.Namespace, u.Name}
	case v3.KindHostEndpoint:
		key = itemKey{kind: kindHost, name: u.Name}
	case v3.KindNetworkSet:
		key = itemKey{kindNetSet, u.Namespace, u.Name}
	case v3.KindGlobalNetworkSet:
		key = itemKey{kind: kindGlobalNetSet, name: u.Name}
	}
	next := g.buildItem(key, u.Resource)
	old := g.items[key]
	switch {
	case old == nil && next == nil:
	case old == nil:
		g.addItem(next)
	case next == nil:
		g.removeItem(old)
	default:
		g.changeItem(old, next)
	}
}

// buildItem extracts what the graph uses from a resource, or nil for a
// delete (or a resource of the wrong type).
func (g *Graph) buildItem(key itemKey, r v3.Resource) *item {
	if r == nil {
		return nil
	}
	it := &item{key: key}
	own := map[string]string{}
	switch res := r.(type) {
	case *v3.WorkloadEndpoint:
		if key.kind != kindWorkload {
			return nil
		}
		maps.Copy(own, res.Labels)
		if sa := res.Spec.ServiceAccountName; sa != "" {
			if _, ok := own[LabelServiceAccount]; !ok {
				own[LabelServiceAccount] = sa
			}
		}
		own[LabelNamespace] = key.ns
		it.parents = slices.Clone(res.Spec.Profiles)
		it.addrs = parseAddrs(res.Spec.IPNetworks)
		for _, p := range res.Spec.Ports {
			if p.Name != "" {
				it.ports = append(it.ports, namedPort{p.Name, protoNum(&p.Protocol), p.Port})
			}
		}
		it.local = res.Spec.Node == g.cfg.NodeName
		it.iface = res.Spec.InterfaceName
	case *v3.HostEndpoint:
		if key.kind != kindHost {
			return nil
		}
		maps.Copy(own, res.Labels)
		it.parents = slices.Clone(res.Spec.Profiles)
		it.addrs = parseAddrs(res.Spec.ExpectedIPs)
		for _, p := range res.Spec.Ports {
			it.ports = append(it.ports, namedPort{p.Name, protoNum(&p.Protocol), p.Port})
		}
		it.local = res.Spec.Node == g.cfg.NodeName
		it.iface = res.Spec.InterfaceName
	case *v3.NetworkSet:
		if key.kind != kindNetSet {
			return nil
		}
		maps.Copy(own, res.Labels)
		own[LabelNamespace] = key.ns
		// As in Calico, a network set inherits its namespace's labels, so
		// namespaceSelectors reach it.
		it.parents = []string{NamespaceProfilePrefix + key.ns}
		it.addrs = parseAddrs(res.Spec.Nets)
	case *v3.GlobalNetworkSet:
		if key.kind != kindGlobalNetSet {
			return nil
		}
		maps.Copy(own, res.Labels)
		it.addrs = parseAddrs(res.Spec.Nets)
	default:
		return nil
	}
	it.own = own
	return it
}

// parseAddrs parses, masks, sorts and de-duplicates addresses and CIDRs.
func parseAddrs(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, ok := parsePrefix(s); ok {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	return CompareMembers(Member{Prefix: a}, Member{Prefix: b})
}

// effectiveLabels are the item's own labels plus those of its profiles; own
// labels win, and an earlier profile wins over a later one.
func (g *Graph) effectiveLabels(it *item) map[string]string {
	var out map[string]string
	for _, name := range it.parents {
		p := g.profiles[name]
		if p == nil || len(p.labels) == 0 {
			continue
		}
		if out == nil {
			out = maps.Clone(it.own)
		}
		for k, v := range p.labels {
			if _, ok := out[k]; !ok {
				out[k] = v
			}
		}
	}
	if out == nil {
		return it.own
	}
	return out
}

func (g *Graph) profile(name string) *profileState {
	p := g.profiles[name]
	if p == nil {
		p = &profileState{name: name, items: itemSet{}}
		g.profiles[name] = p
	}
	return p
}

// linkParents records it as a user of its profiles.
func (g *Graph) linkParents(it *item) {
	for _, name := range it.parents {
		p := g.profile(name)
		p.items[it] = struct{}{}
		if it.local {
			p.localRefs++
			g.syncProfile(p)
		}
	}
}

func (g *Graph) unlinkParents(it *item) {
	for _, name := range it.parents {
		p := g.profiles[name]
		if p == nil {
			continue
		}
		delete(p.items, it)
		if it.local {
			p.localRefs--
			g.syncProfile(p)
		}
		g.gcProfile(p)
	}
}

func (g *Graph) gcProfile(p *profileState) {
	if !p.exists && len(p.items) == 0 && p.localRefs == 0 {
		delete(g.profiles, p.name)
	}
}

func (g *Graph) addItem(it *item) {
	g.items[it.key] = it
	g.linkParents(it)
	it.own = g.labels.intern(it.own)
	it.labels = g.labels.intern(g.effectiveLabels(it))
	g.setIdx.add(it)
	if it.local {
		g.polIdx.add(it)
		g.dirtyEndpoint(it)
	}
}

func (g *Graph) removeItem(it *item) {
	if it.local {
		g.polIdx.remove(it)
		g.dirtyEndpoint(it)
	}
	g.setIdx.remove(it)
	g.unlinkParents(it)
	delete(g.items, it.key)
	g.labels.release(it.own)
	g.labels.release(it.labels)
}

// changeItem brings it (the item in the graph) to the content of next.
func (g *Graph) changeItem(it, next *item) {
	oldLocal := it.local
	if !slices.Equal(it.parents, next.parents) || oldLocal != next.local {
		// Link the new parents before unlinking the old, so a profile
		// listed by both never looks unused in between.
		oldParents := it.parents
		for _, name := range next.parents {
			p := g.profile(name)
			p.items[it] = struct{}{}
			if next.local {
				p.localRefs++
				g.syncProfile(p)
			}
		}
		for _, name := range oldParents {
			p := g.profiles[name]
			if p == nil {
				continue // listed twice, and forgotten after the first
			}
			if !slices.Contains(next.parents, name) {
				delete(p.items, it)
			}
			if oldLocal {
				p.localRefs--
				g.syncProfile(p)
			}
			g.gcProfile(p)
		}
		it.parents = next.parents
	}
	if oldLocal && !next.local {
		g.polIdx.remove(it)
		g.dirtyEndpoint(it)
	}
	it.local = next.local

	if !slices.Equal(it.addrs, next.addrs) || !slices.Equal(it.ports, next.ports) {
		for _, e := range it.matches[setSlot] {
			for st := range e.sets {
				g.contribute(st, it, -1)
			}
		}
		it.addrs, it.ports = next.addrs, next.ports
		for _, e := range it.matches[setSlot] {
			for st := range e.sets {
				g.contribute(st, it, +1)
			}
		}
	}
	it.iface = next.iface
	oldOwn := it.own
	it.own = g.labels.intern(next.own)
	g.labels.release(oldOwn)
	oldLabels := it.labels
	it.labels = g.labels.intern(g.effectiveLabels(it))
	defer g.labels.release(oldLabels) // read below
	labelsChanged := !maps.Equal(oldLabels, it.labels)
	if labelsChanged {
		g.setIdx.relabel(it, oldLabels)
	}
	switch {
	case oldLocal && next.local:
		if labelsChanged {
			g.polIdx.relabel(it, oldLabels)
		}
		g.dirtyEndpoint(it)
	case !oldLocal && next.local:
		g.polIdx.add(it)
		g.dirtyEndpoint(it)
	}
}

// relabelInheritors recomputes the labels of everything listing p.
func (g *Graph) relabelInheritors(p *profileState) {
	for it := range p.items {
		old := it.labels
		it.labels = g.labels.intern(g.effectiveLabels(it))
		if !maps.Equal(old, it.labels) {
			g.setIdx.relabel(it, old)
			if it.local {
				g.polIdx.relabel(it, old)
			}
		}
		g.labels.release(old)
	}
}

func (g *Graph) dirtyEndpoint(it *item) {
	g.dirtyEndpoints[it.endpointID()] = it
}
