package nft

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/flowlog"
)

// A program is the compiled policy of one endpoint in one direction (or one
// of a host endpoint's special lists): every tier, policy, rule and profile
// that applies, in evaluation order, as a small tree of chains.
//
// The port-class dispatch. Evaluating rules one after the other costs every
// packet that reaches the last rule the whole list. Instead the program
// first looks up the packet's (destination port . l4proto) in an interval
// verdict map, which costs the same whatever its size, and jumps to the
// chain of the packet's *class*: the rules that can possibly match that
// protocol and port, in their original order. Classes are the cells of the
// partition of the protocol × port space made by every rule's protocol and
// destination port ranges; a rule without a port condition belongs to every
// class of its protocol, a rule without a protocol to every class. Because
// each class chain is the original sequence with only rules removed that
// cannot match any packet of the class, first-match order, Pass (a goto to
// the class's continuation at the next tier), Log, tier default actions and
// profiles behave exactly as in the full sequence.
//
// The key puts the port first on purpose. A concatenated interval map is
// nftables' "pipapo" set, which narrows the candidates field by field: with
// the protocol first, every element of a TCP-only policy matches the first
// field and the lookup walks them all (measured: connect p50 136 µs with
// 10,000 rules); with the port first, the first field already leaves one
// element (37 µs, as with no policy).
//
// When a class's outcome does not depend on anything but protocol and port
// (the first rule that decides is unconditional within the class, as
// "allow TCP to port 80" is), the class needs no chain: the map element is
// the verdict itself. So a policy of 10,000 port rules costs a packet one
// map lookup, and the packets of other protocols go to the class of the
// rules that do not depend on ports.
//
// Updates in place. A program's entry chain and class map are named by
// what it is compiled from (kind, direction, tiers with their policy IDs,
// profiles), so endpoints with the same policies share one, and a changed
// policy changes the program in place: class chains are named by where
// their class starts (protocol and first port), so a class whose rules
// change (an action, a source) has its chain flushed and rewritten and the
// class map is not touched; when ports change, the class map elements
// around them are replaced (element differences only) in the same
// transaction, and chains of classes that went are deleted a sync later,
// when nothing goes to them. A packet sees the program before or after the
// transaction, never a missing chain.

// progKind says how a program ends and what Allow means in it.
type progKind int

const (
	// kindReturn programs run from a dispatch map and return to the base
	// chain on Allow, so the other side of the packet can be checked too
	// (workload egress, then the destination's ingress); nothing allowed:
	// drop. Workload programs and host endpoint applyOnForward programs.
	kindReturn progKind = iota
	// kindAccept programs decide alone: Allow accepts (host endpoint input
	// and output).
	kindAccept
	// kindPreDNAT programs accept on Allow, drop on Deny, and return to
	// normal processing when nothing decided: tiers have no default action
	// (as Calico's preDNAT policy).
	kindPreDNAT
	// kindUntracked programs mark and notrack on Allow (the filter chains
	// accept marked packets) and otherwise behave like kindPreDNAT.
	kindUntracked
	// kindReturnMarked is a workload's egress program when flow logs number
	// egress decisions in the packet mark (Config.FlowMarks): as kindReturn,
	// but an Allow writes its rule's number into the mark instead of
	// logging (flowlog.Marks says why).
	kindReturnMarked
)

// block is a tier or a profile: its rules, then what happens when none
// decided.
type block struct {
	name string
	// parts are the block's rules, a slice per policy (the compiled
	// rules are shared with the program cache, not copied).
	parts [][]compiledRule
	// drop: nothing decided in this block drops (a tier with Deny default
	// action, a missing profile); otherwise evaluation goes on.
	drop       bool
	endComment string
	// endFlow is the flow log identifier of that drop (flow logs on).
	endFlow string
}

// program is the kernel objects of one compiled program.
type program struct {
	// name is the entry chain, named by what the program is compiled from
	// (programName): it is updated in place when a policy changes.
	name  string
	entry []ruleT
	// chains are the class chains, named by the program and where their
	// class starts (classChainName).
	chains map[string][]ruleT
	// classMap holds the elements of the class map, nil when the program
	// has no port classes.
	classMap []elemT
	// classKeys are elemKey of each element of classMap.
	classKeys []string
	// mapName is the class map's name: programClassMap(name) as built,
	// programClassMapAlt(name) once install moved it (useClassMap).
	mapName string
	// dispatch is what digest is the hash of (without the map's name).
	dispatch string
	// digest identifies entry and classMap (see entryComment).
	digest string
	memo   *classMemo
	// from and touched: when the program was compiled from the previous
	// version (from) by recompiling some classes only, touched are the
	// names of the class chains that may differ between the two (added,
	// changed or gone); install(from, p) looks at those alone.
	from    *program
	touched []string
}

// classMemo remembers how a program's classes compiled, so that compiling
// it again after one policy changed builds only the classes whose rules
// changed. A class is known by its protocol and its rules (block and
// compiledRule.id, which a new version of a policy does not reuse), valid
// for the same block shape (kind is part of the program's name).
//
// It also keeps the partition and the dispatch it was built with: when a
// change leaves every rule's admission (protocol and ports) where it was,
// the partition is the same, and only the classes that have a changed rule
// are compiled again (reuse); when their targets did not change either,
// the dispatch is the same too.
type classMemo struct {
	blocks string
	// merged are the program's merged rules by id (merge.go): built
	// again only when their members change.
	merged map[uint64]*compiledRule
	// As compiled, by flat rule: admission, block and compiledRule.id.
	adms    []admission
	blockOf []int
	ids     []uint64
	// The partition; per class its memo key, result and target.
	classes []portClass
	spans   []span
	keys    []string
	results []classResult
	targets []string
	// byFlat lists the classes each flat rule is a member of (made on
	// the first reuse, shared by the memos of the same partition).
	byFlat [][]int32
	// The dispatch as dispatchClasses built it (before useClassMap).
	entry     []ruleT
	mapName   string
	classMap  []elemT
	classKeys []string
	dispatch  string
	digest    string
}

type classResult struct {
	target string
	chains []namedChain
}

type namedChain struct {
	name  string
	rules []ruleT
}

// blockShape is what of blocks a class chain depends on besides its rules.
func blockShape(blocks []block) string {
	var b strings.Builder
	for _, bl := range blocks {
		fmt.Fprintf(&b, "%q %v %q %q\n", bl.name, bl.drop, bl.endComment, bl.endFlow)
	}
	return b.String()
}

// verdicts of a program kind: what Allow does, what happens when nothing
// decided, and whether those two can be map values.
func verdicts(k progKind, mark uint32) (allow, final string, mappable bool) {
	switch k {
	case kindReturn, kindReturnMarked:
		return "return", "drop", true
	case kindAccept:
		return "accept", "drop", true
	case kindPreDNAT:
		return "accept", "return", true
	default:
		return fmt.Sprintf("meta mark set meta mark | %#x notrack accept", mark), "return", false
	}
}

// buildProgram compiles blocks into a program in three steps: the class
// partition of its rules (partition), each class's chains or constant
// verdict (compileClass; classes compiled for the same rules and place
// last time are taken from old's memo), and the dispatch of the entry
// chain and class map (dispatchClasses). When old has the same partition,
// reuse does it by difference instead.
func buildProgram(name string, k progKind, dir calc.Direction, blocks []block, cfg *Config, old *program) *program {
	var lastMerged map[uint64]*compiledRule
	if old != nil && old.memo != nil {
		lastMerged = old.memo.merged
	}
	b := newProgramBuilder(name, k, dir, blocks, cfg, lastMerged)
	memo := &classMemo{blocks: blockShape(blocks), merged: b.merged}
	memo.adms = make([]admission, len(b.flat))
	memo.blockOf = make([]int, len(b.flat))
	memo.ids = make([]uint64, len(b.flat))
	for i, f := range b.flat {
		memo.adms[i], memo.blockOf[i], memo.ids[i] = f.rule.adm, f.block, f.rule.id
	}
	var om *classMemo
	if old != nil && old.memo != nil && old.memo.blocks == memo.blocks {
		om = old.memo
		if p := reuse(b, memo, old); p != nil {
			return p
		}
		if p := stick(b, memo, old); p != nil {
			return p
		}
	}
	classes, spans := partition(memo.adms)
	var byKey map[string]int
	if om != nil {
		byKey = make(map[string]int, len(om.keys))
		for i, k := range om.keys {
			byKey[k] = i
		}
	}
	memo.classes, memo.spans = classes, spans
	memo.keys = make([]string, len(classes))
	memo.results = make([]classResult, len(classes))
	prog := &program{name: name, chains: make(map[string][]ruleT, len(classes)), memo: memo}
	// target is what the dispatch does with a class: its constant verdict,
	// or a goto to its first chain.
	target := make([]string, len(classes))
	for ci, c := range classes {
		// A class's chains are named by where it starts: its memo entry
		// is valid only there.
		key := b.memoKey(c)
		var res classResult
		if oi, ok := byKey[key]; ok {
			res = om.results[oi]
		} else {
			res = b.compileClass(c)
		}
		memo.keys[ci], memo.results[ci] = key, res
		target[ci] = res.target
		for _, ch := range res.chains {
			prog.chains[ch.name] = ch.rules
		}
	}
	memo.targets = target
	prog.dispatchClasses(spans, target)
	memo.keepDispatch(prog)
	return prog
}

// keepDispatch remembers p's dispatch as dispatchClasses built it.
func (m *classMemo) keepDispatch(p *program) {
	m.entry, m.mapName, m.classMap, m.classKeys = slices.Clone(p.entry), p.mapName, p.classMap, p.classKeys
	m.dispatch, m.digest = p.dispatch, p.digest
}

// reuse compiles the program again from old by difference when every flat
// rule kept its admission and block (so the partition is old's): only the
// classes with a rule whose id changed are compiled, and the dispatch is
// old's unless one of their targets changed. nil when it does not apply.
func reuse(b *programBuilder, memo *classMemo, old *program) *program {
	om := old.memo
	if len(memo.adms) != len(om.adms) || om.classes == nil {
		return nil
	}
	var changed []int
	for i := range memo.adms {
		if memo.blockOf[i] != om.blockOf[i] || !memo.adms[i].equal(om.adms[i]) {
			return nil
		}
		if memo.ids[i] != om.ids[i] {
			changed = append(changed, i)
		}
	}
	if om.byFlat == nil {
		om.byFlat = make([][]int32, len(om.adms))
		for ci, c := range om.classes {
			for _, m := range c.members {
				om.byFlat[m] = append(om.byFlat[m], int32(ci))
			}
		}
	}
	affected := map[int32]struct{}{}
	for _, i := range changed {
		for _, ci := range om.byFlat[i] {
			affected[ci] = struct{}{}
		}
	}
	memo.classes, memo.spans, memo.byFlat = om.classes, om.spans, om.byFlat
	memo.keys, memo.results, memo.targets = slices.Clone(om.keys), slices.Clone(om.results), slices.Clone(om.targets)
	prog := &program{name: old.name, chains: maps.Clone(old.chains), memo: memo, from: old}
	targetsChanged := false
	for _, ci := range slices.Sorted(maps.Keys(affected)) {
		c := memo.classes[ci]
		was := memo.results[ci]
		res := b.compileClass(c)
		memo.keys[ci], memo.results[ci] = b.memoKey(c), res
		prog.replaceClass(was, res)
		if res.target != memo.targets[ci] {
			memo.targets[ci] = res.target
			targetsChanged = true
		}
	}
	prog.finishDispatch(memo, om, targetsChanged)
	return prog
}

// replaceClass puts the chains of a class compiled again (res) in place of
// those it had (was), noting them as touched.
func (p *program) replaceClass(was, res classResult) {
	for _, ch := range was.chains {
		delete(p.chains, ch.name)
		p.touched = append(p.touched, ch.name)
	}
	for _, ch := range res.chains {
		p.chains[ch.name] = ch.rules
		p.touched = append(p.touched, ch.name)
	}
}

// finishDispatch gives p, compiled on om's partition, its dispatch: built
// again when a class's target changed, om's otherwise. (And it sorts the
// names of the chains touched.)
func (p *program) finishDispatch(memo, om *classMemo, targetsChanged bool) {
	slices.Sort(p.touched)
	p.touched = slices.Compact(p.touched)
	if targetsChanged {
		p.dispatchClasses(memo.spans, memo.targets)
		memo.keepDispatch(p)
		return
	}
	memo.entry, memo.mapName, memo.classMap, memo.classKeys = om.entry, om.mapName, om.classMap, om.classKeys
	memo.dispatch, memo.digest = om.dispatch, om.digest
	p.entry, p.mapName, p.classMap, p.classKeys = slices.Clone(om.entry), om.mapName, om.classMap, om.classKeys
	p.dispatch, p.digest = om.dispatch, om.digest
}

// ruleRef is a rule of a program's blocks.
type ruleRef struct {
	block int
	rule  *compiledRule
}

// programBuilder is what compiling a program's classes needs.
type programBuilder struct {
	name   string
	kind   progKind
	blocks []block
	cfg    *Config
	// flat are the rules of all blocks in evaluation order.
	flat []ruleRef
	// allow is what Allow does, final what happens when nothing decided;
	// mappable: both can be class map values.
	allow, final string
	mappable     bool
	// flows: every deciding rule logs first (Config.FlowLogGroup), and
	// finalFlow is the identifier of final's drop.
	flows     bool
	finalFlow string
	// merged are the merged rules of flat by id.
	merged map[uint64]*compiledRule
}

// newProgramBuilder flattens blocks and merges their runs, taking merged
// rules whose members did not change from lastMerged.
func newProgramBuilder(name string, k progKind, dir calc.Direction, blocks []block, cfg *Config, lastMerged map[uint64]*compiledRule) *programBuilder {
	b := &programBuilder{name: name, kind: k, blocks: blocks, cfg: cfg}
	b.allow, b.final, b.mappable = verdicts(k, cfg.UntrackedMark)
	if flowLogged(k, cfg) {
		b.flows = true
		b.finalFlow = flowlog.NothingAllowedID(dir)
	}
	n := 0
	for _, bl := range blocks {
		for _, part := range bl.parts {
			n += len(part)
		}
	}
	b.flat = make([]ruleRef, 0, n)
	for bi := range blocks {
		for _, part := range blocks[bi].parts {
			for ri := range part {
				b.flat = append(b.flat, ruleRef{bi, &part[ri]})
			}
		}
	}
	if !b.flows {
		b.flat, b.merged = mergeRuns(b.flat, lastMerged)
	}
	return b
}

// memoKey identifies how class c compiles: its protocol, where it starts
// (its chains are named by that) and its rules (block and compiledRule.id).
func (b *programBuilder) memoKey(c portClass) string {
	kb := []byte{c.proto}
	kb = binary.AppendUvarint(kb, uint64(c.first))
	for j, i := range c.members {
		kb = binary.AppendUvarint(kb, uint64(b.flat[i].block))
		kb = binary.AppendUvarint(kb, b.flat[i].rule.id)
		if c.partial != nil && c.partial[j] {
			kb = append(kb, 'p')
		}
	}
	return string(kb)
}

// compileClass is the outcome of class c: a constant verdict when it
// depends on nothing but the class, otherwise its chains, one per segment
// (a Pass in block i continues at block i+1, so a chain starts there),
// built last first, as each goes to the next.
func (b *programBuilder) compileClass(c portClass) classResult {
	inBlock := make([][]*compiledRule, len(b.blocks))
	for j, i := range c.members {
		r := b.flat[i].rule
		if c.partial != nil && c.partial[j] {
			// It matches some of the class's ports only: its lines keep
			// the port condition, and it decides nothing alone.
			cp := *r
			cp.inClass, cp.uncond = cp.full, false
			r = &cp
		}
		inBlock[b.flat[i].block] = append(inBlock[b.flat[i].block], r)
	}
	if b.mappable && !b.flows {
		if v, ok := constantVerdict(b.blocks, inBlock, c.proto, b.allow, b.final); ok {
			return classResult{target: v}
		}
	}
	starts := []int{0}
	for bi, rs := range inBlock {
		if slices.ContainsFunc(rs, func(r *compiledRule) bool { return r.rule.Action == calc.Pass }) && !slices.Contains(starts, bi+1) {
			starts = append(starts, bi+1)
		}
	}
	slices.Sort(starts)
	var res classResult
	segName := make(map[int]string, len(starts))
	for si := len(starts) - 1; si >= 0; si-- {
		s, end := starts[si], len(b.blocks)
		if si+1 < len(starts) {
			end = starts[si+1]
		}
		n := classChainName(b.name, c.proto, c.first, s)
		segName[s] = n
		res.chains = append(res.chains, namedChain{n, b.segmentRules(inBlock, c.proto, s, end, segName)})
	}
	res.target = "goto " + segName[0]
	return res
}

// segmentRules are the rules of the chain of one segment of a class:
// the class's rules of blocks s to end-1, each block's default drop, and
// at the end a goto to the next segment (segName, built already) or the
// program's final verdict.
func (b *programBuilder) segmentRules(inBlock [][]*compiledRule, proto uint8, s, end int, segName map[int]string) []ruleT {
	var rules []ruleT
	dropped := false
	for bi := s; bi < end && !dropped; bi++ {
		for _, r := range inBlock[bi] {
			lines := r.full
			if proto != 0 {
				lines = r.inClass
			}
			var v string
			switch r.rule.Action {
			case calc.Allow:
				v = b.flowAllow(flowlog.RuleID(r.rule.LogPrefix, calc.Allow))
			case calc.Deny:
				v = b.flowLog(flowlog.RuleID(r.rule.LogPrefix, calc.Deny)) + "drop"
			case calc.Pass:
				v = "goto " + segName[bi+1]
			case calc.Log:
				v = fmt.Sprintf("log prefix %s group %d", quote(r.rule.LogPrefix), b.cfg.LogGroup)
			default:
				continue
			}
			for _, l := range lines {
				rules = append(rules, ruleT{text: strings.TrimSpace(l + " " + v), comment: r.rule.LogPrefix})
			}
		}
		if b.blocks[bi].drop {
			rules = append(rules, ruleT{text: b.flowLog(b.blocks[bi].endFlow) + "drop", comment: b.blocks[bi].endComment})
			dropped = true
		}
	}
	if !dropped {
		if end < len(b.blocks) {
			rules = append(rules, ruleT{text: "goto " + segName[end], comment: "continue with " + b.blocks[end].name})
		} else {
			final := b.final
			if final == "drop" {
				final = b.flowLog(b.finalFlow) + final
			}
			rules = append(rules, ruleT{text: final, comment: finalComment(b.kind)})
		}
	}
	// The last rule's comment carries a digest of the chain's rules: the
	// kernel lists comments but not rule text, and a chain named by place
	// (not content) must show a restarted driver that its rules changed.
	var sb strings.Builder
	for _, r := range rules {
		sb.WriteString(r.text)
		sb.WriteByte('\t')
		sb.WriteString(r.comment)
		sb.WriteByte('\n')
	}
	last := &rules[len(rules)-1]
	last.comment = "[" + hashName(sb.String(), 10) + "] " + last.comment
	return rules
}

// dispatchClasses writes the program's entry chain and class map: the
// spans of each protocol as map elements to their class's target
// (neighbours with the same target merged), the default class's target
// last, and the digest of both.
func (p *program) dispatchClasses(spans []span, target []string) {
	var sb strings.Builder
	if len(spans) > 0 {
		p.mapName = programClassMap(p.name)
		p.entry = append(p.entry, ruleT{
			text:    classLookup(p.mapName),
			comment: "port classes: only the rules that can match this protocol and port",
		})
		var merged []span
		for _, s := range spans {
			if n := len(merged); n > 0 && merged[n-1].proto == s.proto && target[merged[n-1].class] == target[s.class] {
				merged[n-1].last = s.last
				continue
			}
			merged = append(merged, s)
		}
		p.classMap = make([]elemT, 0, len(merged))
		p.classKeys = make([]string, 0, len(merged))
		for _, s := range merged {
			port := strconv.Itoa(s.first)
			if s.last != s.first {
				port += "-" + strconv.Itoa(s.last)
			}
			e := elemT{key: []string{port, protoName(s.proto)}, value: []string{target[s.class]}}
			p.classMap = append(p.classMap, e)
			key := port + " . " + e.key[1] // as elemKey(e.key)
			p.classKeys = append(p.classKeys, key)
			sb.WriteString(key + " : " + e.value[0] + "\n")
		}
	}
	sb.WriteString(target[0])
	// The entry chain's last comment carries a digest of the program's
	// dispatch (class map and default target). The kernel lists rule
	// comments but neither rule text nor, for this map, element keys: the
	// digest is how a full sync (after a restart) sees that a program
	// changed in place.
	p.dispatch = sb.String()
	p.digest = hashName(p.dispatch, 16)
	p.entry = append(p.entry, ruleT{text: target[0], comment: entryComment + p.digest + ")"})
}

// classLookup is the entry chain's rule that looks a packet up in class
// map m.
func classLookup(m string) string { return "th dport . meta l4proto vmap @" + m }

// useClassMap makes the program dispatch through class map m (one of its
// two names). The digest covers the name when it is the other one, so a
// full sync (a restarted driver builds programs with the first name) sees
// that the entry chain must change; with the first name it is as built.
func (p *program) useClassMap(m string) {
	if p.mapName == "" || p.mapName == m {
		return
	}
	p.mapName = m
	p.entry[0].text = classLookup(m)
	p.digest = hashName(p.dispatch, 16)
	if m != programClassMap(p.name) {
		p.digest = hashName(p.dispatch+"\nmap "+m, 16)
	}
	last := &p.entry[len(p.entry)-1]
	last.comment = entryComment + p.digest + ")"
}

// constantVerdict evaluates a class whose outcome depends on nothing but
// the class itself.
func constantVerdict(blocks []block, inBlock [][]*compiledRule, proto uint8, allowV, finalV string) (string, bool) {
next:
	for b := range blocks {
		for _, r := range inBlock[b] {
			if r.rule.Action == calc.Log || !r.uncond || !(r.adm.all || (proto != 0 && r.adm.proto == proto)) {
				return "", false
			}
			switch r.rule.Action {
			case calc.Allow:
				return allowV, true
			case calc.Deny:
				return "drop", true
			case calc.Pass:
				continue next
			}
		}
		if blocks[b].drop {
			return "drop", true
		}
	}
	return finalV, true
}

func finalComment(k progKind) string {
	switch k {
	case kindPreDNAT, kindUntracked:
		return "no policy decided: continue with normal processing"
	}
	return "no policy or profile allowed: drop"
}

// flowLogged reports whether programs of kind k log their decisions: the
// workload and host endpoint programs, when flow logs are on. (PreDNAT and
// untracked policy see packets before connection tracking decides what is
// new.)
func flowLogged(k progKind, cfg *Config) bool {
	return cfg.FlowLogGroup != 0 && (k == kindReturn || k == kindAccept || k == kindReturnMarked)
}

// flowAllow is what an Allow rule identified by id does: in a marked
// program, write id's number into the mark field and return (the next
// message about the packet carries it); otherwise log, if flow logs are
// on, and allow.
func (b *programBuilder) flowAllow(id string) string {
	if b.kind == kindReturnMarked {
		if v, ok := b.cfg.FlowMarks.Value(id); ok {
			return markSet(b.cfg.FlowMarks.Mask(), v) + " " + b.allow
		}
	}
	return b.flowLog(id) + b.allow
}

// markSet is the statement that sets the field mask of the packet mark to
// v (0: clears it).
func markSet(mask, v uint32) string {
	if v == 0 {
		return fmt.Sprintf("meta mark set meta mark & %#x", ^mask)
	}
	return fmt.Sprintf("meta mark set meta mark & %#x | %#x", ^mask, v)
}

// flowLog is the statement that sends a deciding rule's packet to the flow
// log group with the rule's identifier, followed by a space; "" when flow
// logs are off or id is "".
func (b *programBuilder) flowLog(id string) string {
	if !b.flows || id == "" {
		return ""
	}
	return fmt.Sprintf("log prefix %s group %d snaplen %d ", quote(id), b.cfg.FlowLogGroup, b.cfg.FlowLogSnaplen)
}

// quote makes s an nft string literal (nft strings cannot contain quotes).
func quote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, "'") + `"`
}
