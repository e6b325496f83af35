package nft

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
)

// programCache is what the driver has compiled: the compiled rules of each
// version of a policy or profile, the programs by name with how many
// endpoint dispatches use each, and how many installed programs have each
// class chain (programs share the chains of the classes they have in
// common). The Driver's methods below put what it holds in want; program.go
// builds the programs; the digest at the end of each program's entry chain
// is how a restarted driver sees that a program changed while it was down.
type programCache struct {
	progs map[string]*progEntry
	// compiled are the programs compiled in this Apply (nil outside one):
	// each is compiled once, however many endpoints use it.
	compiled  map[string]bool
	chainRefs map[string]int
	byPolicy  map[calc.PolicyID]*cachedRules
	byProfile map[string]*cachedRules
	ruleIDs   uint64
}

type progEntry struct {
	prog *program
	refs int
}

// cachedRules are the compiled rules of one version of a policy or
// profile.
type cachedRules struct {
	version         any // the *calc.Policy or *calc.Profile compiled
	ingress, egress []compiledRule
}

func (cr *cachedRules) of(dir calc.Direction) []compiledRule {
	if dir == calc.Egress {
		return cr.egress
	}
	return cr.ingress
}

func newProgramCache() programCache {
	return programCache{
		progs: map[string]*progEntry{}, chainRefs: map[string]int{},
		byPolicy: map[calc.PolicyID]*cachedRules{}, byProfile: map[string]*cachedRules{},
	}
}

func (c *programCache) beginApply() { c.compiled = map[string]bool{} }
func (c *programCache) endApply()   { c.compiled = nil }

// forgetPolicy and forgetProfile drop the compiled rules of a policy or
// profile that changed or went.
func (c *programCache) forgetPolicy(id calc.PolicyID) { delete(c.byPolicy, id) }
func (c *programCache) forgetProfile(name string)     { delete(c.byProfile, name) }

// policyRules are the compiled rules of policy id (pol, nil when it does
// not exist) in one direction, compiled once per policy version.
func (c *programCache) policyRules(id calc.PolicyID, pol *calc.Policy, dir calc.Direction) []compiledRule {
	if pol == nil {
		return nil
	}
	return cachedFor(c, c.byPolicy, id, pol, pol.Ingress, pol.Egress).of(dir)
}

// profileRules are the compiled rules of a profile in one direction,
// compiled once per profile version.
func (c *programCache) profileRules(pr *calc.Profile, dir calc.Direction) []compiledRule {
	return cachedFor(c, c.byProfile, pr.Name, pr, pr.Ingress, pr.Egress).of(dir)
}

func cachedFor[K comparable](c *programCache, m map[K]*cachedRules, k K, version any, ingress, egress []calc.Rule) *cachedRules {
	cr := m[k]
	if cr == nil || cr.version != version {
		cr = &cachedRules{version: version, ingress: c.compileRules(ingress), egress: c.compileRules(egress)}
		m[k] = cr
	}
	return cr
}

func (c *programCache) compileRules(rules []calc.Rule) []compiledRule {
	out := make([]compiledRule, 0, len(rules))
	for i := range rules {
		if cr, ok := compileRule(&rules[i], ipSetName); ok {
			c.ruleIDs++
			cr.id = c.ruleIDs
			out = append(out, cr)
		}
	}
	return out
}

// compiledNow reports whether program name was compiled in this Apply.
func (c *programCache) compiledNow(name string) bool { return c.compiled[name] }

// last is program name as compiled last time (nil: never).
func (c *programCache) last(name string) *program {
	if e := c.progs[name]; e != nil {
		return e.prog
	}
	return nil
}

// put stores p as program name's compiled form. When the program is in
// use, it returns the form it replaces, to be replaced in want.
func (c *programCache) put(name string, p *program) (installed *program) {
	if c.compiled != nil {
		c.compiled[name] = true
	}
	e := c.progs[name]
	if e == nil {
		c.progs[name] = &progEntry{prog: p}
		return nil
	}
	if e.refs > 0 {
		installed = e.prog
	}
	e.prog = p
	return installed
}

// acquire takes a reference on program name; on the first it returns the
// program, to be put in want.
func (c *programCache) acquire(name string) (first *program) {
	e := c.progs[name]
	e.refs++
	if e.refs == 1 {
		return e.prog
	}
	return nil
}

// release drops a reference on program name; on the last it forgets the
// program and returns it, to be taken out of want.
func (c *programCache) release(name string) (last *program) {
	e := c.progs[name]
	if e == nil {
		return nil
	}
	e.refs--
	if e.refs > 0 {
		return nil
	}
	delete(c.progs, name)
	return e.prog
}

// refChain takes a reference on a class chain and reports whether it was
// the first.
func (c *programCache) refChain(name string) (first bool) {
	c.chainRefs[name]++
	return c.chainRefs[name] == 1
}

// unrefChain drops a reference on a class chain and reports whether it was
// the last.
func (c *programCache) unrefChain(name string) (last bool) {
	c.chainRefs[name]--
	if c.chainRefs[name] > 0 {
		return false
	}
	delete(c.chainRefs, name)
	return true
}

// gc forgets compiled programs nothing references (compiled in an Apply
// but superseded).
func (c *programCache) gc() {
	for n, e := range c.progs {
		if e.refs == 0 {
			delete(c.progs, n)
		}
	}
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
	if d.progs.compiledNow(name) {
		return name
	}
	p := buildProgram(name, k, dir, d.programBlocks(k, tiers, dir, profiles), &d.cfg, d.progs.last(name))
	if prev := d.progs.put(name, p); prev != nil {
		d.install(prev, p)
	}
	// Only that install may use the difference: keeping it would keep
	// every earlier version of the program alive, one through the next.
	p.from, p.touched = nil, nil
	return name
}

// programBlocks are the blocks a program evaluates: each tier with its
// policies' rules, then each profile.
func (d *Driver) programBlocks(k progKind, tiers []calc.TierPolicies, dir calc.Direction, profiles []calc.ProfileRef) []block {
	var blocks []block
	tierDefaults := k == kindReturn || k == kindAccept || k == kindReturnMarked
	for _, t := range tiers {
		b := block{name: "tier " + t.Name}
		for _, pid := range t.Policies {
			if rs := d.progs.policyRules(pid, d.policies[pid], dir); len(rs) > 0 {
				b.parts = append(b.parts, rs)
			}
		}
		if tierDefaults && t.DefaultAction != calc.Pass {
			b.drop = true
			b.endComment = "tier " + t.Name + ": no policy decided, default action Deny"
			if flowLogged(k, &d.cfg) {
				b.endFlow = flowlog.TierEndID(dir, t.Name)
			}
		}
		blocks = append(blocks, b)
	}
	for _, ref := range profiles {
		b := block{name: "profile " + ref.Name}
		pr := d.profiles[ref.Name]
		if ref.Missing || pr == nil {
			b.drop = true
			b.endComment = "profile " + ref.Name + " does not exist: fail closed"
			if flowLogged(k, &d.cfg) {
				b.endFlow = flowlog.MissingProfileID(dir, ref.Name)
			}
		} else {
			b.parts = [][]compiledRule{d.progs.profileRules(pr, dir)}
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// acquire takes a reference on a program, putting its objects in want on
// the first.
func (d *Driver) acquire(name string) {
	if p := d.progs.acquire(name); p != nil {
		d.install(nil, p)
	}
}

// release drops a reference; the last one takes the program's objects out
// of want (the kernel deletes them a sync later).
func (d *Driver) release(name string) {
	if p := d.progs.release(name); p != nil {
		d.install(p, nil)
	}
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
	// The chains that may differ: all of both, or when next was compiled
	// from prev by difference, those it recompiled.
	var names []string
	if next.from == prev {
		names = next.touched
	} else {
		names = make([]string, 0, len(next.chains)+len(prev.chains))
		for n := range next.chains {
			names = append(names, n)
		}
		for n := range prev.chains {
			if _, ok := next.chains[n]; !ok {
				names = append(names, n)
			}
		}
	}
	for _, n := range names {
		rs, ok := next.chains[n]
		if !ok {
			continue
		}
		if was, ok := prev.chains[n]; !ok {
			if d.progs.refChain(n) {
				d.setChain(n, &chainT{rules: rs})
			}
		} else if !slices.Equal(was, rs) {
			// A class chain (named by place, not content) has new rules.
			d.setChain(n, &chainT{rules: rs})
		}
	}
	for _, n := range names {
		_, inPrev := prev.chains[n]
		if _, ok := next.chains[n]; !ok && inPrev && d.progs.unrefChain(n) {
			d.delChain(n)
		}
	}
	if len(next.classMap) > 0 && prev.mapName != "" && next.dispatch == prev.dispatch {
		// The same dispatch (compiled by difference, no target changed):
		// the class map keeps its name and elements.
		next.useClassMap(prev.mapName)
		d.ensureSet(prev.mapName, classMapShape, "port classes of "+next.name)
	} else if len(next.classMap) > 0 {
		m := d.classMapFor(prev, next)
		next.useClassMap(m)
		d.ensureSet(m, classMapShape, "port classes of "+next.name)
		was := make(map[string]string, len(prev.classKeys))
		if m == prev.mapName {
			for i, k := range prev.classKeys {
				was[k] = prev.classMap[i].value[0]
			}
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
		d.delSet(prev.mapName)
	}
	if next.entry == nil {
		d.delChain(next.name)
		return
	}
	if c := d.want.chains[next.name]; c == nil || !slices.Equal(c.rules, next.entry) {
		d.setChain(next.name, &chainT{rules: slices.Clone(next.entry)})
	}
}

// maxClassMapDeletions is how many elements a change may delete from a
// program's class map in the kernel (a key that goes or whose verdict
// changes) before the new version is written as a new map instead (see
// classMapFor).
//
// The class map is an interval map of concatenations (nftables' pipapo
// set), and the kernel's commit removes each deleted element from it by
// rebuilding its lookup tables: measured on kernel 6.18, about 1 µs per
// element of the map for every element deleted (10 ms each in a map of
// 10,000, so 9 s for the 1,000 port moves of bench/policy's stress
// variant), while creating a map costs about 15 µs per element (0.15 s for
// 10,000) and deleting a whole map next to nothing. Flushing the map and
// adding its elements again is no way out: a flush deletes element by
// element too (2.3 s for 10,000).
const maxClassMapDeletions = 32

// classMapFor is the name program next's class map gets when it replaces
// prev: the one prev uses, unless that would delete more than
// maxClassMapDeletions elements of it, when it is the program's other name
// (unless the kernel still has that one, not yet deleted): next's map is
// then created whole, the entry chain switched to it in the same
// transaction, and prev's map deleted by the sync after.
func (d *Driver) classMapFor(prev, next *program) string {
	cur := prev.mapName
	if cur == "" {
		return programClassMap(next.name)
	}
	if classMapDeletions(prev, next) <= maxClassMapDeletions {
		return cur
	}
	alt := programClassMapAlt(next.name)
	if cur == alt {
		alt = programClassMap(next.name)
	}
	if d.have.sets[alt] != nil || d.want.sets[alt] != nil {
		return cur
	}
	d.delSet(cur)
	return alt
}

// classMapDeletions is how many elements of prev's class map the kernel
// would delete to turn it into next's: the keys next does not have and
// those whose verdict changes (a map element cannot be changed in place).
func classMapDeletions(prev, next *program) int {
	now := make(map[string]string, len(next.classKeys))
	for i, k := range next.classKeys {
		now[k] = next.classMap[i].value[0]
	}
	n := 0
	for i, k := range prev.classKeys {
		if v, ok := now[k]; !ok || v != prev.classMap[i].value[0] {
			n++
		}
	}
	return n
}

// entryComment starts the comment of a program's last entry rule; the
// program digest and ")" follow.
const entryComment = "rules that do not depend on the destination port (program "

// programDigest is the digest in the entry chain of program name in m, ""
// when there is none.
func programDigest(m *tableModel, name string) string {
	c := m.chains[name]
	if c == nil || len(c.rules) == 0 {
		return ""
	}
	d, ok := strings.CutPrefix(c.rules[len(c.rules)-1].comment, entryComment)
	if !ok {
		return ""
	}
	return strings.TrimSuffix(d, ")")
}
