package nft

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/pkg/calc"
)

// Driver programs one inet table from calc's desired state. It is not safe
// for concurrent use: the agent calls Apply after each calc Flush and
// Resync periodically, from one goroutine.
type Driver struct {
	nft knftables.Interface
	nl  *Netlink // nil: every transaction through nft
	cfg Config

	// The desired state as far as rendering needs it (IP set members live
	// in members and in want, not here).
	ipsets    map[string]*calc.IPSet
	policies  map[calc.PolicyID]*calc.Policy
	profiles  map[string]*calc.Profile
	endpoints map[calc.EndpointID]*calc.Endpoint
	inSync    bool
	pools     []Pool

	want, have *tableModel
	dirty      *dirtySet
	// pending are objects no longer wanted but still in the kernel: they
	// are deleted by the next sync, when nothing references them any more.
	pending map[string]bool // name → is a chain
	// synced is false until a full sync succeeded, and after any failure:
	// the next sync is then a full one.
	synced bool

	members  map[string]map[netip.Prefix]struct{} // address-set members by kernel set
	progs    map[string]*progEntry
	epRefs   map[calc.EndpointID][]dispatch
	polUsers map[calc.PolicyID]map[calc.EndpointID]struct{}
	proUsers map[string]map[calc.EndpointID]struct{}
	// wildcards are host endpoints with interface "*", per dispatch map.
	wildcards map[string]map[calc.EndpointID]string
	memo      map[string]bool // programs compiled in this Apply
	// chainRefs counts the installed programs that have each class chain.
	chainRefs map[string]int
	ruleCache map[calc.PolicyID]*cachedRules
	proCache  map[string]*cachedRules
	ruleIDs   uint64
	// indexed is each endpoint as polUsers and proUsers know it.
	indexed map[calc.EndpointID]*calc.Endpoint
}

// cachedRules are the compiled rules of one version of a policy or
// profile.
type cachedRules struct {
	pol             *calc.Policy
	pro             *calc.Profile
	ingress, egress []compiledRule
}

type progEntry struct {
	prog *program
	refs int
}

// dispatch is one element of a dispatch map: interface → program.
type dispatch struct {
	mapName, iface, prog string
}

// New returns a driver for the table cfg.TableName (nft must be an
// Interface for that table, family inet). It touches nothing until the
// first Apply or Resync.
func New(nft knftables.Interface, cfg Config) *Driver {
	cfg = cfg.Defaults()
	return &Driver{
		nft: nft, cfg: cfg, pools: slices.Clone(cfg.Pools),
		ipsets: map[string]*calc.IPSet{}, policies: map[calc.PolicyID]*calc.Policy{},
		profiles: map[string]*calc.Profile{}, endpoints: map[calc.EndpointID]*calc.Endpoint{},
		want: newTableModel(), have: newTableModel(), dirty: newDirty(), pending: map[string]bool{},
		members: map[string]map[netip.Prefix]struct{}{}, progs: map[string]*progEntry{},
		epRefs: map[calc.EndpointID][]dispatch{}, polUsers: map[calc.PolicyID]map[calc.EndpointID]struct{}{},
		proUsers: map[string]map[calc.EndpointID]struct{}{}, wildcards: map[string]map[calc.EndpointID]string{},
		indexed: map[calc.EndpointID]*calc.Endpoint{}, chainRefs: map[string]int{},
		ruleCache: map[calc.PolicyID]*cachedRules{}, proCache: map[string]*cachedRules{},
	}
}

// SetPools replaces the IP pools (natOutgoing); the next Apply or Resync
// programs them.
func (d *Driver) SetPools(pools []Pool) { d.pools = slices.Clone(pools) }

// Apply folds changes into the desired state and brings the kernel to it
// with the smallest transaction it can: only the dirty objects and
// elements. Before the graph is in sync it programs nothing. After a failed
// transaction, and on a new Driver, it does a full sync instead.
//
// ctx bounds the kernel I/O. The changes are folded in whatever happens,
// and the write is one transaction: a ctx done before it returns ctx.Err()
// having written nothing, and a failed or cancelled write leaves the
// kernel as it was (the next sync is then a full one).
func (d *Driver) Apply(ctx context.Context, c *calc.Changes) error {
	if c.InSync {
		d.inSync = true
	}
	if !d.inSync {
		return nil
	}
	d.renderStatic()
	d.memo = map[string]bool{}
	defer func() { d.memo = nil }()
	dirtyEps := map[calc.EndpointID]struct{}{}
	users := func(m map[calc.EndpointID]struct{}) {
		for id := range m {
			dirtyEps[id] = struct{}{}
		}
	}
	for _, u := range c.IPSetUpdates {
		d.updateIPSet(u.Set, u.Members)
	}
	for _, md := range c.MemberDeltas {
		if s := d.ipsets[md.SetID]; s != nil {
			d.changeMembers(s, md.Added, md.Removed)
		}
	}
	for _, p := range c.PolicyUpdates {
		d.policies[p.ID] = p
		delete(d.ruleCache, p.ID)
		users(d.polUsers[p.ID])
	}
	for _, p := range c.ProfileUpdates {
		d.profiles[p.Name] = p
		delete(d.proCache, p.Name)
		users(d.proUsers[p.Name])
	}
	for _, e := range c.EndpointUpdates {
		d.endpoints[e.ID] = e
		dirtyEps[e.ID] = struct{}{}
	}
	for _, id := range c.EndpointRemoves {
		delete(d.endpoints, id)
		dirtyEps[id] = struct{}{}
	}
	for _, n := range c.ProfileRemoves {
		delete(d.profiles, n)
		delete(d.proCache, n)
		users(d.proUsers[n])
	}
	for _, id := range c.PolicyRemoves {
		delete(d.policies, id)
		delete(d.ruleCache, id)
		users(d.polUsers[id])
	}
	ids := make([]calc.EndpointID, 0, len(dirtyEps))
	for id := range dirtyEps {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, calc.CompareEndpointIDs)
	for _, id := range ids {
		d.renderEndpoint(id)
	}
	for _, id := range c.IPSetRemoves {
		d.removeIPSet(id)
	}
	scope := syncDirty
	if !d.synced {
		scope = syncFull
	}
	return d.sync(ctx, scope)
}

// Resync compares the whole table with what the kernel has and repairs
// any difference (a rule deleted by hand, a missing element). It never
// flushes the table; objects that should not be there are deleted by the
// following sync. ctx bounds the kernel I/O, as for Apply.
func (d *Driver) Resync(ctx context.Context) error {
	if !d.inSync {
		return nil
	}
	return d.sync(ctx, syncFull)
}

// ---- IP sets ----

func (d *Driver) kernelSets(s *calc.IPSet) (v4, v6 string) {
	return ipSetName(s.ID, s.Kind, 4), ipSetName(s.ID, s.Kind, 6)
}

func (d *Driver) updateIPSet(s *calc.IPSet, members []calc.Member) {
	old := d.ipsets[s.ID]
	d.ipsets[s.ID] = s
	v4, v6 := d.kernelSets(s)
	for i, name := range []string{v4, v6} {
		typ := "ipv4_addr"
		if i == 1 {
			typ = "ipv6_addr"
		}
		if s.Kind == calc.NamedPortSet {
			d.ensureSet(name, setShape{typ: typ + " . inet_proto . inet_service"},
				fmt.Sprintf("named port %s/%s of %s", protoName(s.Protocol), s.PortName, s.Selector))
		} else {
			d.ensureSet(name, setShape{typ: typ, interval: true}, "selector "+s.Selector)
		}
	}
	// Replace the members by the difference from what the set has.
	want := make(map[calc.Member]struct{}, len(members))
	for _, m := range members {
		want[m] = struct{}{}
	}
	var removed []calc.Member
	if old != nil {
		for _, m := range d.currentMembers(s) {
			if _, ok := want[m]; !ok {
				removed = append(removed, m)
			} else {
				delete(want, m)
			}
		}
	}
	added := make([]calc.Member, 0, len(want))
	for m := range want {
		added = append(added, m)
	}
	slices.SortFunc(added, calc.CompareMembers)
	d.changeMembers(s, added, removed)
}

// currentMembers lists what s has in the kernel model.
func (d *Driver) currentMembers(s *calc.IPSet) []calc.Member {
	v4, v6 := d.kernelSets(s)
	var out []calc.Member
	for _, name := range []string{v4, v6} {
		if s.Kind == calc.NamedPortSet {
			for _, e := range d.want.sets[name].elems {
				if m, ok := parseNamedPortElem(e.key); ok {
					out = append(out, m)
				}
			}
			continue
		}
		for p := range d.members[name] {
			out = append(out, calc.Member{Prefix: p})
		}
	}
	return out
}

func parseNamedPortElem(key []string) (calc.Member, bool) {
	if len(key) != 3 {
		return calc.Member{}, false
	}
	a, err := netip.ParseAddr(key[0])
	port, err2 := strconv.Atoi(key[2])
	if err != nil || err2 != nil {
		return calc.Member{}, false
	}
	var proto uint8
	for p := 0; p < 256; p++ {
		if protoName(uint8(p)) == key[1] {
			proto = uint8(p)
			break
		}
	}
	return calc.Member{Prefix: netip.PrefixFrom(a, a.BitLen()), Protocol: proto, Port: uint16(port)}, true
}

// changeMembers turns member changes into element adds and deletes.
// Interval sets must not hold overlapping elements, and an endpoint's /32
// may lie inside a network set's CIDR, so the kernel holds the cover of the
// members (those not inside another member); members move in and out of
// the cover as containing prefixes come and go.
func (d *Driver) changeMembers(s *calc.IPSet, added, removed []calc.Member) {
	v4, v6 := d.kernelSets(s)
	for _, m := range removed {
		name := v4
		if is6(m.Prefix) {
			name = v6
		}
		if s.Kind == calc.NamedPortSet {
			d.delElem(name, namedPortKey(m))
			continue
		}
		d.coverRemove(name, m.Prefix.Masked())
	}
	for _, m := range added {
		name := v4
		if is6(m.Prefix) {
			name = v6
		}
		if s.Kind == calc.NamedPortSet {
			d.setElem(name, namedPortKey(m), nil)
			continue
		}
		d.coverAdd(name, m.Prefix.Masked())
	}
}

func namedPortKey(m calc.Member) []string {
	return []string{m.Prefix.Addr().String(), protoName(m.Protocol), strconv.Itoa(int(m.Port))}
}

func (d *Driver) hasAncestor(ms map[netip.Prefix]struct{}, p netip.Prefix) bool {
	for b := 0; b < p.Bits(); b++ {
		if _, ok := ms[netip.PrefixFrom(p.Addr(), b).Masked()]; ok {
			return true
		}
	}
	return false
}

func (d *Driver) coverAdd(set string, p netip.Prefix) {
	ms := d.members[set]
	if ms == nil {
		ms = map[netip.Prefix]struct{}{}
		d.members[set] = ms
	}
	if _, ok := ms[p]; ok {
		return
	}
	ms[p] = struct{}{}
	if d.hasAncestor(ms, p) {
		return
	}
	if !p.IsSingleIP() {
		for q := range ms {
			if q != p && q.Bits() > p.Bits() && p.Contains(q.Addr()) {
				d.delElem(set, []string{prefixString(q)})
			}
		}
	}
	d.setElem(set, []string{prefixString(p)}, nil)
}

func (d *Driver) coverRemove(set string, p netip.Prefix) {
	ms := d.members[set]
	if _, ok := ms[p]; !ok {
		return
	}
	delete(ms, p)
	if d.hasAncestor(ms, p) {
		return
	}
	d.delElem(set, []string{prefixString(p)})
	if !p.IsSingleIP() {
		for q := range ms {
			if q.Bits() > p.Bits() && p.Contains(q.Addr()) && !d.hasAncestor(ms, q) {
				d.setElem(set, []string{prefixString(q)}, nil)
			}
		}
	}
}

func (d *Driver) removeIPSet(id string) {
	s := d.ipsets[id]
	if s == nil {
		return
	}
	delete(d.ipsets, id)
	v4, v6 := d.kernelSets(s)
	for _, n := range []string{v4, v6} {
		d.delSet(n)
		delete(d.members, n)
	}
}

// ---- endpoints and programs ----

func (d *Driver) renderEndpoint(id calc.EndpointID) {
	old := d.epRefs[id]
	d.unindex(id)
	var next []dispatch
	ep := d.endpoints[id]
	if ep != nil {
		next = d.endpointDispatch(ep)
		d.index(ep)
	}
	for _, r := range next {
		d.acquire(r.prog)
	}
	for _, r := range old {
		if r.iface == "*" {
			delete(d.wildcards[r.mapName], id)
		} else if !slices.ContainsFunc(next, func(n dispatch) bool { return n.mapName == r.mapName && n.iface == r.iface }) {
			d.delElem(r.mapName, []string{r.iface})
			if r.mapName == MapWorkloadFrom {
				d.delElem(SetWorkloadIfaces, []string{r.iface})
			}
		}
	}
	for _, r := range next {
		if r.iface == "*" {
			if d.wildcards[r.mapName] == nil {
				d.wildcards[r.mapName] = map[calc.EndpointID]string{}
			}
			d.wildcards[r.mapName][id] = r.prog
			continue
		}
		d.setElem(r.mapName, []string{r.iface}, []string{"jump " + r.prog})
		if r.mapName == MapWorkloadFrom {
			d.setElem(SetWorkloadIfaces, []string{r.iface}, nil)
		}
	}
	for _, r := range old {
		d.release(r.prog)
	}
	if len(next) > 0 {
		d.epRefs[id] = next
	} else {
		delete(d.epRefs, id)
	}
}

// index records which policies and profiles the endpoint uses, so a change
// to one of them re-renders it.
func (d *Driver) index(ep *calc.Endpoint) {
	d.indexed[ep.ID] = ep
	add := func(ts []calc.TierPolicies) {
		for _, t := range ts {
			for _, p := range t.Policies {
				if d.polUsers[p] == nil {
					d.polUsers[p] = map[calc.EndpointID]struct{}{}
				}
				d.polUsers[p][ep.ID] = struct{}{}
			}
		}
	}
	for _, ts := range endpointLists(ep) {
		add(ts)
	}
	for _, p := range ep.Profiles {
		if d.proUsers[p.Name] == nil {
			d.proUsers[p.Name] = map[calc.EndpointID]struct{}{}
		}
		d.proUsers[p.Name][ep.ID] = struct{}{}
	}
}

func (d *Driver) unindex(id calc.EndpointID) {
	ep := d.indexed[id]
	if ep == nil {
		return
	}
	delete(d.indexed, id)
	for _, ts := range endpointLists(ep) {
		for _, t := range ts {
			for _, p := range t.Policies {
				delete(d.polUsers[p], id)
				if len(d.polUsers[p]) == 0 {
					delete(d.polUsers, p)
				}
			}
		}
	}
	for _, p := range ep.Profiles {
		delete(d.proUsers[p.Name], id)
		if len(d.proUsers[p.Name]) == 0 {
			delete(d.proUsers, p.Name)
		}
	}
}

func endpointLists(ep *calc.Endpoint) [][]calc.TierPolicies {
	out := [][]calc.TierPolicies{ep.Ingress, ep.Egress}
	if h := ep.Host; h != nil {
		out = append(out, h.ForwardIngress, h.ForwardEgress, h.PreDNATIngress, h.UntrackedIngress, h.UntrackedEgress)
	}
	return out
}

// endpointDispatch compiles the endpoint's programs and says which
// dispatch map elements lead to them.
func (d *Driver) endpointDispatch(ep *calc.Endpoint) []dispatch {
	iface := ep.InterfaceName
	if iface == "" {
		// A host endpoint found only by address is not enforced (yet).
		return nil
	}
	var out []dispatch
	// The special lists of a host endpoint have no profiles.
	add := func(m string, k progKind, ts []calc.TierPolicies, dir calc.Direction, profiles []calc.ProfileRef) {
		p := d.compile(k, ts, dir, profiles)
		out = append(out, dispatch{mapName: m, iface: iface, prog: p})
	}
	if ep.Host == nil {
		add(MapWorkloadFrom, kindReturn, ep.Egress, calc.Egress, ep.Profiles)
		add(MapWorkloadTo, kindReturn, ep.Ingress, calc.Ingress, ep.Profiles)
		return out
	}
	h := ep.Host
	add(MapHostIn, kindAccept, ep.Ingress, calc.Ingress, ep.Profiles)
	add(MapHostOut, kindAccept, ep.Egress, calc.Egress, ep.Profiles)
	if len(h.ForwardIngress) > 0 {
		add(MapHostForwardIn, kindReturn, h.ForwardIngress, calc.Ingress, nil)
	}
	if len(h.ForwardEgress) > 0 {
		add(MapHostForwardOut, kindReturn, h.ForwardEgress, calc.Egress, nil)
	}
	if len(h.PreDNATIngress) > 0 {
		add(MapHostPreDNATIn, kindPreDNAT, h.PreDNATIngress, calc.Ingress, nil)
	}
	if len(h.UntrackedIngress) > 0 {
		add(MapHostUntrackedIn, kindUntracked, h.UntrackedIngress, calc.Ingress, nil)
	}
	if len(h.UntrackedEgress) > 0 {
		add(MapHostUntrackOut, kindUntracked, h.UntrackedEgress, calc.Egress, nil)
	}
	return out
}

// programSig is what a program is compiled from; its hash names the
// program. Equal signatures compile to equal programs (at any one time),
// so endpoints share them; the policies' contents are not part of it, so a
// policy change updates the program in place.
func programSig(k progKind, dir calc.Direction, tiers []calc.TierPolicies, profiles []calc.ProfileRef) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kind %d %s\n", k, dir)
	for _, t := range tiers {
		fmt.Fprintf(&b, "tier %q %s\n", t.Name, t.DefaultAction)
		for _, p := range t.Policies {
			fmt.Fprintf(&b, "policy %q %q %q\n", p.Kind, p.Namespace, p.Name)
		}
	}
	for _, p := range profiles {
		fmt.Fprintf(&b, "profile %q %v\n", p.Name, p.Missing)
	}
	return b.String()
}

// compile builds the program for one list, updates it in place if it is
// in the table, and returns its name. Each program is compiled once per
// Apply. profiles follow the tiers (none for a host endpoint's special
// lists).
func (d *Driver) compile(k progKind, tiers []calc.TierPolicies, dir calc.Direction, profiles []calc.ProfileRef) string {
	name := programName(hashName(programSig(k, dir, tiers, profiles), 16))
	if d.memo[name] {
		return name
	}
	var blocks []block
	tierDefaults := k == kindReturn || k == kindAccept
	for _, t := range tiers {
		b := block{name: "tier " + t.Name}
		for _, pid := range t.Policies {
			b.rules = append(b.rules, d.policyRules(pid, dir)...)
		}
		if tierDefaults && t.DefaultAction != calc.Pass {
			b.drop = true
			b.endComment = "tier " + t.Name + ": no policy decided, default action Deny"
		}
		blocks = append(blocks, b)
	}
	for _, ref := range profiles {
		b := block{name: "profile " + ref.Name}
		pr := d.profiles[ref.Name]
		if ref.Missing || pr == nil {
			b.drop = true
			b.endComment = "profile " + ref.Name + " does not exist: fail closed"
		} else {
			b.rules = d.profileRules(pr, dir)
		}
		blocks = append(blocks, b)
	}
	var memo *classMemo
	if e := d.progs[name]; e != nil {
		memo = e.prog.memo
	}
	p := buildProgram(name, k, blocks, &d.cfg, memo)
	if d.memo != nil {
		d.memo[name] = true
	}
	switch e := d.progs[name]; {
	case e == nil:
		d.progs[name] = &progEntry{prog: p}
	case e.refs > 0:
		d.install(e.prog, p)
		e.prog = p
	default:
		e.prog = p
	}
	return name
}

// policyRules are the compiled rules of one policy in one direction,
// compiled once per policy version.
func (d *Driver) policyRules(id calc.PolicyID, dir calc.Direction) []compiledRule {
	pol := d.policies[id]
	if pol == nil {
		return nil
	}
	c := d.ruleCache[id]
	if c == nil || c.pol != pol {
		c = &cachedRules{pol: pol, ingress: d.compileRules(pol.Ingress), egress: d.compileRules(pol.Egress)}
		d.ruleCache[id] = c
	}
	if dir == calc.Egress {
		return c.egress
	}
	return c.ingress
}

// profileRules are the compiled rules of a profile in one direction,
// compiled once per profile version.
func (d *Driver) profileRules(pr *calc.Profile, dir calc.Direction) []compiledRule {
	c := d.proCache[pr.Name]
	if c == nil || c.pro != pr {
		c = &cachedRules{pro: pr, ingress: d.compileRules(pr.Ingress), egress: d.compileRules(pr.Egress)}
		d.proCache[pr.Name] = c
	}
	if dir == calc.Egress {
		return c.egress
	}
	return c.ingress
}

func (d *Driver) compileRules(rules []calc.Rule) []compiledRule {
	out := make([]compiledRule, 0, len(rules))
	for i := range rules {
		if c, ok := compileRule(&rules[i], ipSetName); ok {
			d.ruleIDs++
			c.id = d.ruleIDs
			out = append(out, c)
		}
	}
	return out
}

// acquire takes a reference on a program, putting its objects in want on
// the first.
func (d *Driver) acquire(name string) {
	e := d.progs[name]
	e.refs++
	if e.refs == 1 {
		d.install(nil, e.prog)
	}
}

// release drops a reference; the last one takes the program's objects out
// of want (the kernel deletes them a sync later).
func (d *Driver) release(name string) {
	e := d.progs[name]
	if e == nil {
		return
	}
	e.refs--
	if e.refs > 0 {
		return
	}
	delete(d.progs, name)
	d.install(e.prog, nil)
}

// install changes want from program prev to program next (same name;
// either may be nil) by differences: chains and class map elements only
// next has are added, those only prev has are let go (chains are
// referenced before others are let go, so a chain both use stays), changed
// elements are replaced, and the entry chain is rewritten when it changed.
func (d *Driver) install(prev, next *program) {
	if prev == nil {
		prev = &program{}
	}
	if next == nil {
		next = &program{name: prev.name}
	}
	for n, rs := range next.chains {
		if was, ok := prev.chains[n]; !ok {
			d.refChain(n, rs)
		} else if !slices.Equal(was, rs) {
			// A class chain (named by place, not content) has new rules.
			d.setChain(n, &chainT{rules: slices.Clone(rs)})
		}
	}
	for n := range prev.chains {
		if _, ok := next.chains[n]; !ok {
			d.unrefChain(n)
		}
	}
	m := programClassMap(next.name)
	if len(next.classMap) > 0 {
		d.ensureSet(m, classMapShape, "port classes of "+next.name)
		was := make(map[string]string, len(prev.classKeys))
		for i, k := range prev.classKeys {
			was[k] = prev.classMap[i].value[0]
		}
		for i, k := range next.classKeys {
			if v, ok := was[k]; ok {
				delete(was, k)
				if v == next.classMap[i].value[0] && d.want.sets[m].elems[k].value != nil {
					continue
				}
			}
			d.setElem(m, next.classMap[i].key, next.classMap[i].value)
		}
		for i, k := range prev.classKeys {
			if _, gone := was[k]; gone {
				d.delElem(m, prev.classMap[i].key)
			}
		}
	} else if len(prev.classMap) > 0 {
		d.delSet(m)
	}
	if next.entry == nil {
		d.delChain(next.name)
		return
	}
	if c := d.want.chains[next.name]; c == nil || !slices.Equal(c.rules, next.entry) {
		d.setChain(next.name, &chainT{rules: slices.Clone(next.entry)})
	}
}

// refChain takes a reference on a class chain, putting it in want on the
// first.
func (d *Driver) refChain(name string, rules []ruleT) {
	d.chainRefs[name]++
	if d.chainRefs[name] == 1 {
		d.setChain(name, &chainT{rules: slices.Clone(rules)})
	}
}

// unrefChain drops a reference on a class chain; the last one takes it out
// of want.
func (d *Driver) unrefChain(name string) {
	d.chainRefs[name]--
	if d.chainRefs[name] <= 0 {
		delete(d.chainRefs, name)
		d.delChain(name)
	}
}

// gcPrograms forgets compiled programs nothing references (compiled in
// this Apply but superseded).
func (d *Driver) gcPrograms() {
	for n, e := range d.progs {
		if e.refs == 0 {
			delete(d.progs, n)
		}
	}
}

// ---- static objects ----

// renderStatic puts the base chains, dispatch maps and configuration sets
// in want.
func (d *Driver) renderStatic() {
	for _, m := range []string{MapWorkloadFrom, MapWorkloadTo, MapHostIn, MapHostOut, MapHostForwardIn,
		MapHostForwardOut, MapHostPreDNATIn, MapHostUntrackedIn, MapHostUntrackOut} {
		d.ensureSet(m, setShape{typ: "ifname : verdict", isMap: true}, "dispatch by interface to the endpoint's program")
	}
	d.ensureSet(SetWorkloadIfaces, setShape{typ: "ifname"}, "known workload interfaces")
	for i, name := range []string{SetFailsafeIn, SetFailsafeOut} {
		d.ensureSet(name, setShape{typ: "inet_proto . inet_service"}, "failsafe ports: host endpoint policy never blocks these")
		pps := d.cfg.FailsafeInbound
		if i == 1 {
			pps = d.cfg.FailsafeOutbound
		}
		want := map[string][]string{}
		for _, pp := range pps {
			k := []string{protoName(pp.Protocol), strconv.Itoa(int(pp.Port))}
			want[elemKey(k)] = k
		}
		d.syncElems(name, want)
	}
	for _, f := range []struct {
		name, typ string
		nat, v6   bool
	}{{name: SetPoolsV4, typ: "ipv4_addr"}, {name: SetPoolsV6, typ: "ipv6_addr", v6: true},
		{name: SetNATPoolsV4, typ: "ipv4_addr", nat: true}, {name: SetNATPoolsV6, typ: "ipv6_addr", nat: true, v6: true}} {
		comment := "IP pools"
		if f.nat {
			comment = "IP pools with natOutgoing"
		}
		d.ensureSet(f.name, setShape{typ: f.typ, interval: true}, comment)
		var ps []netip.Prefix
		for _, p := range d.pools {
			if is6(p.CIDR) == f.v6 && (!f.nat || p.NATOutgoing) {
				ps = append(ps, p.CIDR)
			}
		}
		want := map[string][]string{}
		for _, p := range coverPrefixes(ps) {
			k := []string{prefixString(p)}
			want[elemKey(k)] = k
		}
		d.syncElems(f.name, want)
	}
	for name, c := range d.baseChains() {
		if old := d.want.chains[name]; old == nil || !slices.Equal(old.rules, c.rules) {
			d.setChain(name, c)
		}
	}
}

// syncElems makes a small set hold exactly want.
func (d *Driver) syncElems(set string, want map[string][]string) {
	s := d.want.sets[set]
	for k, e := range s.elems {
		if _, ok := want[k]; !ok {
			d.delElem(set, e.key)
		}
	}
	for _, key := range want {
		d.setElem(set, key, nil)
	}
}

// newRule is a rule with its comment.
func newRule(text, comment string) ruleT { return ruleT{text: text, comment: comment} }

// wildcardRule is the dispatch of a host endpoint with interface "*": it
// applies to every interface that is not a workload's or the loopback.
func (d *Driver) wildcardRule(mapName, dir string) []ruleT {
	ids := make([]calc.EndpointID, 0, len(d.wildcards[mapName]))
	for id := range d.wildcards[mapName] {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	slices.SortFunc(ids, calc.CompareEndpointIDs)
	cond := []string{dir + `ifname != "lo"`}
	for _, p := range d.cfg.InterfacePrefixes {
		cond = append(cond, fmt.Sprintf(`%sifname != "%s*"`, dir, p))
	}
	return []ruleT{newRule(strings.Join(cond, " ")+" jump "+d.wildcards[mapName][ids[0]], "host endpoint "+ids[0].Name+" (all interfaces)")}
}

func (d *Driver) baseChains() map[string]*chainT {
	cfg := &d.cfg
	fast := []ruleT{
		newRule("ct state established,related accept", "fast path: only the first packet of a connection meets policy"),
		newRule("ct state invalid drop", "conntrack says invalid"),
		newRule(fmt.Sprintf("meta mark & %#x != 0 accept", cfg.UntrackedMark), "allowed by untracked (doNotTrack) policy"),
	}
	unknown := func(dir string) []ruleT {
		var out []ruleT
		for _, p := range cfg.InterfacePrefixes {
			out = append(out, newRule(fmt.Sprintf(`%sifname "%s*" %sifname != @%s drop`, dir, p, dir, SetWorkloadIfaces),
				"unknown workload interface: fail closed"))
		}
		return out
	}
	nd := func(dir string) []ruleT {
		var out []ruleT
		for _, p := range cfg.InterfacePrefixes {
			out = append(out, newRule(fmt.Sprintf(`%sifname "%s*" icmpv6 type { 130-136 } accept`, dir, p),
				"IPv6 neighbour and router discovery between host and workloads"))
		}
		return out
	}
	base := func(hook knftables.BaseChainHook, prio knftables.BaseChainPriority, typ knftables.BaseChainType, rules ...[]ruleT) *chainT {
		c := &chainT{base: &baseSpec{typ: typ, hook: hook, prio: prio}}
		for _, rs := range rules {
			c.rules = append(c.rules, rs...)
		}
		return c
	}
	var toHost []ruleT
	for _, p := range cfg.InterfacePrefixes {
		switch cfg.EndpointToHost {
		case EndpointToHostDrop:
			toHost = append(toHost, newRule(fmt.Sprintf(`iifname "%s*" drop`, p), "workload to host: endpoint-to-host action Drop"))
		case EndpointToHostAccept:
			toHost = append(toHost, newRule(fmt.Sprintf(`iifname "%s*" accept`, p), "workload to host: endpoint-to-host action Accept"))
		}
	}
	var hostToWl []ruleT
	for _, p := range cfg.InterfacePrefixes {
		hostToWl = append(hostToWl, newRule(fmt.Sprintf(`oifname "%s*" accept`, p), "host to workload: allowed by the workload's ingress policy"))
	}
	failIn := []ruleT{newRule("meta l4proto . th dport @"+SetFailsafeIn+" accept", "failsafe inbound port")}
	failOut := []ruleT{newRule("meta l4proto . th dport @"+SetFailsafeOut+" accept", "failsafe outbound port")}
	vm := func(dir, m, why string) []ruleT {
		return append([]ruleT{newRule(dir+"ifname vmap @"+m, why)}, d.wildcardRule(m, dir)...)
	}
	return map[string]*chainT{
		ChainForward: base(knftables.ForwardHook, knftables.FilterPriority, knftables.FilterType,
			fast, unknown("i"), unknown("o"),
			vm("i", MapWorkloadFrom, "workload egress policy"),
			vm("o", MapWorkloadTo, "workload ingress policy"),
			vm("i", MapHostForwardIn, "host endpoint applyOnForward ingress policy"),
			vm("o", MapHostForwardOut, "host endpoint applyOnForward egress policy")),
		ChainInput: base(knftables.InputHook, knftables.FilterPriority, knftables.FilterType,
			fast, unknown("i"), nd("i"),
			vm("i", MapWorkloadFrom, "workload egress policy"), toHost, failIn,
			vm("i", MapHostIn, "host endpoint ingress policy")),
		ChainOutput: base(knftables.OutputHook, knftables.FilterPriority, knftables.FilterType,
			fast, unknown("o"), nd("o"),
			vm("o", MapWorkloadTo, "workload ingress policy"), hostToWl, failOut,
			vm("o", MapHostOut, "host endpoint egress policy")),
		ChainPreDNAT: base(knftables.PreroutingHook, knftables.ManglePriority, knftables.FilterType,
			fast[:1], failIn, vm("i", MapHostPreDNATIn, "host endpoint preDNAT policy")),
		ChainRawPrerouting: base(knftables.PreroutingHook, knftables.RawPriority, knftables.FilterType,
			failIn, vm("i", MapHostUntrackedIn, "host endpoint untracked ingress policy")),
		ChainRawOutput: base(knftables.OutputHook, knftables.RawPriority, knftables.FilterType,
			failOut, vm("o", MapHostUntrackOut, "host endpoint untracked egress policy")),
		ChainNATPostrouting: base(knftables.PostroutingHook, knftables.SNATPriority, knftables.NATType,
			[]ruleT{
				newRule(fmt.Sprintf("ip saddr @%s ip daddr != @%s masquerade", SetNATPoolsV4, SetPoolsV4), "natOutgoing: from a NAT pool to outside every pool"),
				newRule(fmt.Sprintf("ip6 saddr @%s ip6 daddr != @%s masquerade", SetNATPoolsV6, SetPoolsV6), "natOutgoing: from a NAT pool to outside every pool"),
			}),
	}
}
