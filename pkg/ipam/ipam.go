package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

// EmptyBlockMinReclaimAge is how long after its claim an empty block of
// another node may be taken over by a node that finds no unclaimed block
// (Calico's value): younger blocks are left alone so two nodes cannot keep
// stealing one block from each other.
const EmptyBlockMinReclaimAge = time.Minute

// Options tune an IPAM client.
type Options struct {
	// ViewTTL is how long the pools and reservations read by one call may
	// be reused by later calls. 0 (the default) reads them on every call, so
	// a pool disabled a moment ago is never used again; a long-lived
	// allocator (the node agent) may trade that for one round trip less.
	ViewTTL time.Duration
	// MaxRetries bounds compare-and-swap retries of one write (default 100).
	MaxRetries int
	Logger     *slog.Logger
	// Clock replaces time.Now (tests).
	Clock func() time.Time
}

// IPAM allocates addresses from IP pools in per-node blocks. It is safe for
// concurrent use, and any number of IPAM clients (tortie's or Calico's) may
// work on one datastore at once.
type IPAM struct {
	be   datastore.Backend
	c    *client.Client
	opts Options
	log  *slog.Logger

	mu   sync.Mutex
	view *view
	// blocks caches block KVs last read or written. A cached block is only
	// ever a guess: every write is a compare-and-swap on its revision, and
	// a failed one re-reads.
	blocks map[string]*cachedBlock
	// affine caches each node's affinities per IP version, with the same
	// caveat; it is re-listed before any new block is claimed.
	affine map[string][]affEntry
}

type affEntry struct {
	cidr  netip.Prefix
	state string
	rev   int64
}

// New returns an IPAM client on be.
func New(be datastore.Backend, opts Options) *IPAM {
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 100
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &IPAM{
		be: be, c: client.New(be), opts: opts, log: opts.Logger,
		blocks: map[string]*cachedBlock{},
		affine: map[string][]affEntry{},
	}
}

func (a *IPAM) now() time.Time {
	if a.opts.Clock != nil {
		return a.opts.Clock()
	}
	return time.Now()
}

// AutoAssignArgs asks for addresses for one handle.
type AutoAssignArgs struct {
	// HandleID owns the addresses; the CNI plugin uses
	// "<network name>.<container ID>". Required.
	HandleID string
	// Attrs are stored with each address (namespace, pod, node, ...). The
	// node attribute defaults to Node and a timestamp is added.
	Attrs      map[string]string
	Num4, Num6 int
	// Node the addresses are for; its blocks are used first. Required.
	Node string
	// IPv4Pools, IPv6Pools restrict the pools (by CIDR); a pool named here
	// is used even when its nodeSelector does not match or its
	// assignmentMode is Manual.
	IPv4Pools, IPv6Pools []netip.Prefix
	// IntendedUse must be allowed by the pool (default Workload).
	IntendedUse v3.IPPoolAllowedUse
}

// Assignment is what AutoAssign handed out. Each address carries its
// block's prefix length, as Calico's CNI result does.
type Assignment struct {
	IPv4, IPv6 []netip.Prefix
}

// Addrs lists every address of the assignment.
func (as *Assignment) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range slices.Concat(as.IPv4, as.IPv6) {
		out = append(out, p.Addr())
	}
	return out
}

// AutoAssign hands out Num4 IPv4 and Num6 IPv6 addresses to a handle: from
// the node's own blocks, then from newly claimed blocks, then (unless
// strictAffinity) from other nodes' blocks. A handle that already holds
// addresses gets those back first, so a retried request allocates nothing
// new. On failure it returns what it did assign along with the error; the
// caller releases them by handle.
func (a *IPAM) AutoAssign(ctx context.Context, args AutoAssignArgs) (*Assignment, error) {
	if args.HandleID == "" || strings.Contains(args.HandleID, "/") {
		return nil, fmt.Errorf("ipam: handle ID %q must be non-empty and contain no '/'", args.HandleID)
	}
	if args.Node == "" {
		return nil, errors.New("ipam: node is required")
	}
	if args.Num4 < 0 || args.Num6 < 0 {
		return nil, errors.New("ipam: negative number of addresses")
	}
	if args.IntendedUse == "" {
		args.IntendedUse = v3.AllowedUseWorkload
	}
	attrs := maps.Clone(args.Attrs)
	if attrs == nil {
		attrs = map[string]string{}
	}
	if attrs[AttrNode] == "" {
		attrs[AttrNode] = args.Node
	}
	if attrs[AttrTimestamp] == "" {
		attrs[AttrTimestamp] = a.now().UTC().Format(timestampLayout)
	}
	v, err := a.readView(ctx)
	if err != nil {
		return nil, err
	}
	hs := &handleState{id: args.HandleID}
	out := &Assignment{}
	for _, f := range []struct {
		version int
		num     int
		pools   []netip.Prefix
		dst     *[]netip.Prefix
	}{{4, args.Num4, args.IPv4Pools, &out.IPv4}, {6, args.Num6, args.IPv6Pools, &out.IPv6}} {
		if f.num == 0 {
			continue
		}
		got, err := a.autoAssignFamily(ctx, v, hs, f.version, f.num, f.pools, args, attrs)
		*f.dst = got
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (a *IPAM) autoAssignFamily(ctx context.Context, v *view, hs *handleState, version, num int, requested []netip.Prefix, args AutoAssignArgs, attrs map[string]string) ([]netip.Prefix, error) {
	pools, err := a.candidatePools(ctx, v, version, args.Node, requested, args.IntendedUse)
	if err != nil {
		return nil, err
	}
	var held []netip.Prefix
	if hs.known && hs.rev != 0 {
		if held, err = a.handleAddrs(ctx, hs.id, hs.h, version); err != nil {
			return nil, err
		}
	}
	for {
		if len(held) >= num {
			return held[:num], nil
		}
		got, err := a.allocate(ctx, v, pools, hs, version, num-len(held), args.Node, attrs)
		if errors.Is(err, errHandleExists) {
			// A retried request: count what the handle already holds.
			if held, err = a.handleAddrs(ctx, hs.id, hs.h, version); err != nil {
				return nil, err
			}
			continue
		}
		return append(held, got...), err
	}
}

// allocate takes want addresses for a handle from the pools.
func (a *IPAM) allocate(ctx context.Context, v *view, pools []*pool, hs *handleState, version, want int, node string, attrs map[string]string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	take := func(p *pool, blk netip.Prefix, use blockUse, from readFrom) error {
		got, err := a.assignFromBlock(ctx, v, p, blk, want, hs, attrs, node, use, from)
		for _, g := range got {
			out = append(out, netip.PrefixFrom(g, blk.Bits()))
		}
		want -= len(got)
		return err
	}

	// 1. The node's own blocks: first as cached (skipping blocks the cache
	// says are full), then, before claiming anything new, every one of
	// them freshly read (addresses may have been released elsewhere).
	tried := map[netip.Prefix]bool{}
	ownBlocks := 0
	for _, from := range []readFrom{fromCache, fromStore} {
		affs, err := a.affinities(ctx, node, version, from)
		if err != nil {
			return out, err
		}
		ownBlocks = 0
		for _, e := range affs {
			if e.state != statePendingDeletion {
				ownBlocks++
			}
			if want == 0 || tried[e.cidr] || e.state == statePendingDeletion {
				continue
			}
			p := poolOf(pools, e.cidr)
			if p == nil {
				continue // its pool is gone, disabled or not for this node
			}
			if from == fromCache && a.cachedFree(blockKey(e.cidr), node, v.usable(p)) == 0 {
				continue
			}
			tried[e.cidr] = true
			err := take(p, e.cidr, ownBlock, from)
			if errors.Is(err, errNotAffine) {
				a.dropStaleAffinity(ctx, node, e)
				continue
			}
			if err != nil {
				return out, err
			}
			if e.state != stateConfirmed {
				a.confirmAffinity(ctx, node, e.cidr)
			}
		}
		if want == 0 {
			return out, nil
		}
	}

	// 2. Claim new blocks.
	cfg, err := a.Config(ctx)
	if err != nil {
		return out, err
	}
	var reasons []string
	var blocks map[netip.Prefix]*blockInfo
	stalled := 0
	for want > 0 {
		if !cfg.AutoAllocateBlocks {
			reasons = append(reasons, "autoAllocateBlocks is off")
			break
		}
		if cfg.MaxBlocksPerHost > 0 && ownBlocks >= cfg.MaxBlocksPerHost {
			reasons = append(reasons, fmt.Sprintf("node %s already has maxBlocksPerHost (%d) IPv%d blocks and they are full", node, cfg.MaxBlocksPerHost, version))
			break
		}
		blk, p, infos, err := a.claimBlock(ctx, v, pools, node, version)
		blocks = infos
		if errors.Is(err, errNoFreeBlocks) {
			break
		}
		if err != nil {
			return out, err
		}
		if !tried[blk] {
			ownBlocks++
		}
		tried[blk] = true
		before := want
		if err := take(p, blk, ownBlock, fromCache); err != nil && !errors.Is(err, errNotAffine) {
			return out, err
		}
		if want == before {
			// The block filled up (or went to another node) between the
			// list and the write; a fresh list sees that. Give up after
			// a few rounds without progress rather than spin.
			if stalled++; stalled > 3 {
				reasons = append(reasons, "blocks kept filling up under contention")
				break
			}
		}
	}
	if want == 0 {
		return out, nil
	}

	// 3. Borrow from other nodes' blocks.
	if !cfg.StrictAffinity {
		if blocks == nil {
			if blocks, err = a.listBlocks(ctx, version); err != nil {
				return out, err
			}
		}
		for _, blk := range sortedPrefixes(blocks) {
			info := blocks[blk]
			p := poolOf(pools, blk)
			if want == 0 || p == nil || tried[blk] || info.block().host() == node || info.block().free(v.usable(p)) == 0 {
				continue
			}
			if err := take(p, blk, borrowedBlock, fromStore); err != nil {
				return out, err
			}
		}
		if want == 0 {
			return out, nil
		}
	}
	if blocks == nil {
		if blocks, err = a.listBlocks(ctx, version); err != nil {
			return out, err
		}
	}
	return out, a.exhausted(v, pools, blocks, node, cfg, reasons)
}

// exhausted explains, per pool, why nothing was left for node.
func (a *IPAM) exhausted(v *view, pools []*pool, blocks map[netip.Prefix]*blockInfo, node string, cfg Config, reasons []string) error {
	var parts []string
	for _, p := range pools {
		total := p.numBlocks()
		own, others := 0, 0
		for blk, info := range blocks {
			if !p.cidr.Contains(blk.Addr()) {
				continue
			}
			if info.block().host() == node {
				own++
			} else {
				others++
			}
		}
		var why string
		switch {
		case cfg.StrictAffinity && total.IsInt64() && int64(own+others) >= total.Int64() && own == 0:
			why = fmt.Sprintf("all %s blocks are claimed by other nodes and strict affinity forbids borrowing", total)
		case cfg.StrictAffinity && total.IsInt64() && int64(own+others) >= total.Int64():
			why = fmt.Sprintf("node %s's %d blocks are full, the other %d of %s blocks are claimed by other nodes and strict affinity forbids borrowing", node, own, others, total)
		case cfg.StrictAffinity:
			why = fmt.Sprintf("node %s may not claim another block (%s) and strict affinity forbids borrowing", node, strings.Join(reasons, "; "))
		default:
			why = "every address is in use or reserved"
			if len(reasons) > 0 {
				why += " (" + strings.Join(reasons, "; ") + ")"
			}
		}
		parts = append(parts, fmt.Sprintf("pool %s: %s", p, why))
	}
	if len(pools) == 1 {
		return fmt.Errorf("%w in pool %s", ErrNoFreeAddresses, strings.TrimPrefix(parts[0], "pool "))
	}
	return fmt.Errorf("%w for node %s: %s", ErrNoFreeAddresses, node, strings.Join(parts, "; "))
}

func poolOf(pools []*pool, blk netip.Prefix) *pool {
	for _, p := range pools {
		if p.cidr.Contains(blk.Addr()) && p.blockBits == blk.Bits() {
			return p
		}
	}
	return nil
}

// handleState follows one handle's key through an AutoAssign call.
type handleState struct {
	id    string
	known bool    // read or written during this call
	rev   int64   // its mod revision; 0 when it does not exist
	h     *handle // its value when it exists
}

// op is the handle write that adds delta addresses in block cidr.
func (hs *handleState) op(cidr string, delta int) (datastore.Op, *handle) {
	h := &handle{Block: map[string]int{}}
	if hs.h != nil {
		maps.Copy(h.Block, hs.h.Block)
	}
	h.Block[cidr] += delta
	if h.Block[cidr] <= 0 {
		delete(h.Block, cidr)
	}
	key := handleKey(hs.id)
	switch {
	case !hs.known || hs.rev == 0:
		return datastore.Op{Type: datastore.OpCreate, Key: key, Value: mustJSON(h)}, h
	case len(h.Block) == 0:
		return datastore.Op{Type: datastore.OpDelete, Key: key, Rev: hs.rev}, nil
	default:
		return datastore.Op{Type: datastore.OpUpdate, Key: key, Value: mustJSON(h), Rev: hs.rev}, h
	}
}

func (hs *handleState) wrote(kv *datastore.KV, h *handle) {
	hs.known = true
	if h == nil {
		hs.rev, hs.h = 0, nil
		return
	}
	hs.rev, hs.h = kv.Revision, h
}

func (a *IPAM) readHandle(ctx context.Context, hs *handleState) error {
	kv, err := a.be.Get(ctx, handleKey(hs.id))
	hs.known = true
	if errors.Is(err, datastore.ErrNotFound) {
		hs.rev, hs.h = 0, nil
		return nil
	}
	if err != nil {
		return err
	}
	var h handle
	if err := json.Unmarshal(kv.Value, &h); err != nil {
		return fmt.Errorf("IPAM handle %s: %w", hs.id, err)
	}
	hs.rev, hs.h = kv.Revision, &h
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// blockUse says whose block an allocation may take from.
type blockUse uint8

const (
	// ownBlock: the node's own; a block affine to another node is
	// errNotAffine.
	ownBlock blockUse = iota
	// borrowedBlock: any node's (borrowing single addresses).
	borrowedBlock
)

// assignFromBlock allocates up to num addresses of one block to the handle:
// one transaction writes the block and the handle together.
func (a *IPAM) assignFromBlock(ctx context.Context, v *view, p *pool, blk netip.Prefix, num int, hs *handleState, attrs map[string]string, node string, use blockUse, from readFrom) ([]netip.Addr, error) {
	key := blockKey(blk)
	for attempt := 0; attempt < a.opts.MaxRetries; attempt++ {
		kv, b, cached, err := a.getBlock(ctx, key, from)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if use == ownBlock && b.host() != node {
			if cached {
				from = fromStore
				continue
			}
			return nil, errNotAffine
		}
		got := b.take(num, hs.id, attrs, v.usable(p))
		if len(got) == 0 {
			if cached {
				from = fromStore // it may have room by now
				continue
			}
			return nil, nil
		}
		b.SequenceNumber++
		hop, h := hs.op(b.CIDR, len(got))
		res, err := a.be.Txn(ctx, []datastore.Op{
			{Type: datastore.OpUpdate, Key: key, Value: b.encode(), Rev: kv.Revision},
			hop,
		})
		if err == nil {
			a.cacheBlock(res[0], b)
			hs.wrote(res[1], h)
			return got, nil
		}
		var te *datastore.TxnError
		if !errors.As(err, &te) {
			return nil, err
		}
		if te.Index == 0 {
			from = fromStore
			a.backoff(attempt)
			continue
		}
		wasKnown := hs.known
		if err := a.readHandle(ctx, hs); err != nil {
			return nil, err
		}
		if !wasKnown && hs.rev != 0 {
			return nil, errHandleExists
		}
	}
	return nil, fmt.Errorf("%w: block %s", ErrContention, blk)
}

func (a *IPAM) backoff(attempt int) {
	if attempt < 3 {
		return
	}
	time.Sleep(time.Duration(rand.IntN(1+min(attempt, 20))) * time.Millisecond)
}

// cachedBlock is a block as last read or written, decoded.
type cachedBlock struct {
	kv *datastore.KV
	b  *block
}

// readFrom says where a read of a block or of a node's affinities may come
// from.
type readFrom uint8

const (
	// fromStore reads the datastore (and refreshes the cache).
	fromStore readFrom = iota
	// fromCache takes the cached copy when there is one, else reads the
	// datastore.
	fromCache
)

// getBlock reads a block, or takes it from the cache when from says so and
// the cache holds it (the third result says which). The block returned is
// the caller's to change.
func (a *IPAM) getBlock(ctx context.Context, key string, from readFrom) (*datastore.KV, *block, bool, error) {
	if from == fromCache {
		a.mu.Lock()
		cb := a.blocks[key]
		a.mu.Unlock()
		if cb != nil {
			return cb.kv, cb.b.clone(), true, nil
		}
	}
	kv, err := a.be.Get(ctx, key)
	if errors.Is(err, datastore.ErrNotFound) {
		a.forgetBlock(key)
	}
	if err != nil {
		return nil, nil, false, err
	}
	b, err := decodeBlock(key, kv.Value)
	if err != nil {
		return nil, nil, false, err
	}
	a.cacheBlock(kv, b.clone())
	return kv, b, false, nil
}

// cachedFree says how many usable addresses the cached copy of a block has
// (-1: not cached or not node's).
func (a *IPAM) cachedFree(key, node string, usable func(netip.Addr) bool) int {
	a.mu.Lock()
	cb := a.blocks[key]
	a.mu.Unlock()
	if cb == nil || cb.b.host() != node {
		return -1
	}
	return cb.b.free(usable)
}

// cacheBlock remembers a block; b must not be changed afterwards.
func (a *IPAM) cacheBlock(kv *datastore.KV, b *block) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if old := a.blocks[kv.Key]; old == nil || old.kv.Revision < kv.Revision {
		a.blocks[kv.Key] = &cachedBlock{kv: kv, b: b}
	}
}

func (a *IPAM) forgetBlock(key string) {
	a.mu.Lock()
	delete(a.blocks, key)
	a.mu.Unlock()
}

// affinities lists a node's affinities of one IP version, from the cache
// when from says so and it holds them, else from the datastore.
func (a *IPAM) affinities(ctx context.Context, node string, version int, from readFrom) ([]affEntry, error) {
	ck := fmt.Sprintf("%s/%d", node, version)
	if from == fromCache {
		a.mu.Lock()
		list, ok := a.affine[ck]
		a.mu.Unlock()
		if ok {
			return list, nil
		}
	}
	kvs, _, err := a.be.List(ctx, affinityPrefix(node, version))
	if err != nil {
		return nil, fmt.Errorf("listing affinities of node %s: %w", node, err)
	}
	var list []affEntry
	for _, kv := range kvs {
		_, cidr, ok := parseAffinityKey(kv.Key)
		if !ok {
			continue
		}
		var af affinity
		if err := json.Unmarshal(kv.Value, &af); err != nil {
			a.log.Warn("ignoring unreadable block affinity", "key", kv.Key, "err", err)
			continue
		}
		list = append(list, affEntry{cidr: cidr, state: af.State, rev: kv.Revision})
	}
	a.mu.Lock()
	a.affine[ck] = list
	a.mu.Unlock()
	return list, nil
}

func (a *IPAM) forgetAffinities(node string) {
	a.mu.Lock()
	delete(a.affine, node+"/4")
	delete(a.affine, node+"/6")
	a.mu.Unlock()
}

// dropStaleAffinity deletes an affinity whose block belongs to another node
// (or to none): left over by a claim that lost its race or crashed.
func (a *IPAM) dropStaleAffinity(ctx context.Context, node string, e affEntry) {
	a.forgetAffinities(node)
	kv, err := a.be.Get(ctx, affinityKey(node, e.cidr))
	if err != nil {
		return
	}
	bkv, err := a.be.Get(ctx, blockKey(e.cidr))
	if err == nil {
		if b, err := decodeBlock(bkv.Key, bkv.Value); err == nil && b.host() != node {
			if _, err := a.be.Delete(ctx, kv.Key, kv.Revision); err == nil {
				a.log.Info("deleted stale block affinity", "node", node, "block", e.cidr, "owner", b.host())
			}
		}
	}
}

// confirmAffinity marks a node's affinity confirmed when its block is the
// node's: finishing a claim that was interrupted after the block was made.
func (a *IPAM) confirmAffinity(ctx context.Context, node string, cidr netip.Prefix) {
	key := affinityKey(node, cidr)
	kv, err := a.be.Get(ctx, key)
	if err != nil {
		return
	}
	var af affinity
	if json.Unmarshal(kv.Value, &af) != nil || af.State == stateConfirmed {
		return
	}
	if _, err := a.be.Update(ctx, key, mustJSON(affinity{State: stateConfirmed}), kv.Revision); err == nil {
		a.log.Info("confirmed pending block affinity", "node", node, "block", cidr)
	}
	a.forgetAffinities(node)
}

// blockInfo is a block read by a List, decoded when first looked at:
// a claim walks few of the blocks it lists.
type blockInfo struct {
	kv  *datastore.KV
	dec *block
	log *slog.Logger
}

func (bi *blockInfo) block() *block {
	if bi.dec == nil {
		b, err := decodeBlock(bi.kv.Key, bi.kv.Value)
		if err != nil {
			// Unreadable: treat it as full and nobody's, so it is never
			// used, claimed or reclaimed.
			bi.log.Warn("ignoring unreadable IPAM block", "key", bi.kv.Key, "err", err)
			p, _ := parseBlockKey(bi.kv.Key)
			b = &block{prefix: p}
		}
		bi.dec = b
	}
	return bi.dec
}

func (a *IPAM) listBlocks(ctx context.Context, version int) (map[netip.Prefix]*blockInfo, error) {
	kvs, _, err := a.be.List(ctx, blockPrefix(version))
	if err != nil {
		return nil, fmt.Errorf("listing IPAM blocks: %w", err)
	}
	out := make(map[netip.Prefix]*blockInfo, len(kvs))
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, kv := range kvs {
		p, ok := parseBlockKey(kv.Key)
		if !ok {
			a.log.Warn("ignoring IPAM block with a bad key", "key", kv.Key)
			continue
		}
		bi := &blockInfo{kv: kv, log: a.log}
		if cb := a.blocks[kv.Key]; cb != nil && cb.kv.Revision == kv.Revision {
			bi.dec = cb.b // already decoded; blockInfo never changes it
		}
		out[p] = bi
	}
	return out, nil
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := slices.Collect(maps.Keys(m))
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

var errNoFreeBlocks = errors.New("no free blocks")

// testHookAfterPendingAffinity, when set (by tests only), runs between the
// two steps of a claim: the crash test widens that window with it.
var testHookAfterPendingAffinity func()

// claimBlock finds a block for node, in Calico's order, and claims it. It
// returns the blocks it listed, for borrowing and error messages.
func (a *IPAM) claimBlock(ctx context.Context, v *view, pools []*pool, node string, version int) (netip.Prefix, *pool, map[netip.Prefix]*blockInfo, error) {
	blocks, err := a.listBlocks(ctx, version)
	if err != nil {
		return netip.Prefix{}, nil, nil, err
	}
	var empties []netip.Prefix
	for _, p := range pools {
		next := blockGenerator(p, node, a.now())
		for blk, ok := next(); ok; blk, ok = next() {
			if v.wholeReserved(blk) {
				continue
			}
			info, exists := blocks[blk]
			if !exists {
				err := a.claim(ctx, blk, node)
				if errors.Is(err, errClaimConflict) {
					continue
				}
				if err != nil {
					return netip.Prefix{}, nil, blocks, err
				}
				return blk, p, blocks, nil
			}
			if info.block().host() == node && info.block().free(v.usable(p)) > 0 {
				// Ours, with room, but not in our affinity list: a claim
				// that crashed before confirming. Finish it.
				a.ensureAffinity(ctx, node, blk)
				return blk, p, blocks, nil
			}
			if info.block().host() != node && info.block().empty() && info.block().free(v.usable(p)) > 0 {
				empties = append(empties, blk)
			}
		}
	}
	// No unclaimed block: take over an empty one another node claimed long
	// enough ago.
	for _, blk := range empties {
		info := blocks[blk]
		if a.now().Sub(info.block().claimTime()) < EmptyBlockMinReclaimAge {
			continue
		}
		if err := a.reclaimEmpty(ctx, blk, info); err != nil {
			a.log.Info("could not reclaim empty block", "block", blk, "err", err)
			continue
		}
		delete(blocks, blk)
		err := a.claim(ctx, blk, node)
		if errors.Is(err, errClaimConflict) {
			continue
		}
		if err != nil {
			return netip.Prefix{}, nil, blocks, err
		}
		return blk, poolOf(pools, blk), blocks, nil
	}
	return netip.Prefix{}, nil, blocks, errNoFreeBlocks
}

// reclaimEmpty deletes another node's empty block and its affinity in one
// transaction, both at the revisions read.
func (a *IPAM) reclaimEmpty(ctx context.Context, blk netip.Prefix, info *blockInfo) error {
	ops := []datastore.Op{{Type: datastore.OpDelete, Key: blockKey(blk), Rev: info.kv.Revision}}
	if owner := info.block().host(); owner != "" {
		if kv, err := a.be.Get(ctx, affinityKey(owner, blk)); err == nil {
			ops = append(ops, datastore.Op{Type: datastore.OpDelete, Key: kv.Key, Rev: kv.Revision})
		}
	}
	_, err := a.be.Txn(ctx, ops)
	if err == nil {
		a.forgetBlock(blockKey(blk))
		a.log.Info("reclaimed empty block", "block", blk, "from", info.block().host())
	}
	return err
}

// claim makes blk node's, in Calico's order: a pending affinity first, then
// the block is created (failing if it exists) and the affinity confirmed —
// these two in one transaction, so a crash leaves at most a pending
// affinity without a block, which this node's next claim of the same block
// (it walks blocks in the same order every time) or `ipam check` resolves.
func (a *IPAM) claim(ctx context.Context, blk netip.Prefix, node string) error {
	defer a.forgetAffinities(node)
	akey, bkey := affinityKey(node, blk), blockKey(blk)
	pending := mustJSON(affinity{State: statePending})
	for attempt := 0; attempt < a.opts.MaxRetries; attempt++ {
		// 1. Pending affinity.
		akv, err := a.be.Create(ctx, akey, pending)
		if errors.Is(err, datastore.ErrAlreadyExists) {
			if akv, err = a.be.Get(ctx, akey); errors.Is(err, datastore.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			var af affinity
			if err := json.Unmarshal(akv.Value, &af); err != nil || af.State != stateConfirmed {
				if akv, err = a.be.Update(ctx, akey, pending, akv.Revision); err != nil {
					if errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrNotFound) {
						continue
					}
					return err
				}
			}
		} else if err != nil {
			return err
		}
		if testHookAfterPendingAffinity != nil {
			testHookAfterPendingAffinity()
		}

		// 2+3. Create the block and confirm the affinity.
		b := newBlock(blk, node, a.now())
		res, err := a.be.Txn(ctx, []datastore.Op{
			{Type: datastore.OpCreate, Key: bkey, Value: b.encode()},
			{Type: datastore.OpUpdate, Key: akey, Value: mustJSON(affinity{State: stateConfirmed}), Rev: akv.Revision},
		})
		if err == nil {
			a.cacheBlock(res[0], b)
			a.log.Debug("claimed block", "node", node, "block", blk)
			return nil
		}
		var te *datastore.TxnError
		if !errors.As(err, &te) {
			return err
		}
		if te.Index == 1 && !errors.Is(te.Err, datastore.ErrAlreadyExists) {
			continue // our affinity changed under us: start again
		}
		// The block exists.
		bkv, err := a.be.Get(ctx, bkey)
		if errors.Is(err, datastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		eb, err := decodeBlock(bkey, bkv.Value)
		if err != nil {
			return err
		}
		a.cacheBlock(bkv, eb.clone())
		if eb.host() == node {
			a.confirmAffinity(ctx, node, blk)
			return nil
		}
		if _, err := a.be.Delete(ctx, akey, akv.Revision); err != nil && !errors.Is(err, datastore.ErrNotFound) && !errors.Is(err, datastore.ErrConflict) {
			a.log.Warn("could not delete pending affinity after losing a block", "node", node, "block", blk, "err", err)
		}
		return errClaimConflict
	}
	return fmt.Errorf("%w: claiming block %s", ErrContention, blk)
}

// ensureAffinity makes sure node has a confirmed affinity for a block that
// says it is node's.
func (a *IPAM) ensureAffinity(ctx context.Context, node string, blk netip.Prefix) {
	defer a.forgetAffinities(node)
	_, err := a.be.Create(ctx, affinityKey(node, blk), mustJSON(affinity{State: stateConfirmed}))
	if errors.Is(err, datastore.ErrAlreadyExists) {
		a.confirmAffinity(ctx, node, blk)
	}
}

// handleAddrs lists the addresses of one IP version a handle holds, by
// reading the blocks its key names.
func (a *IPAM) handleAddrs(ctx context.Context, id string, h *handle, version int) ([]netip.Prefix, error) {
	if h == nil {
		return nil, nil
	}
	var out []netip.Prefix
	for _, cidr := range slices.Sorted(maps.Keys(h.Block)) {
		p, err := netip.ParsePrefix(cidr)
		if err != nil || ipVersion(p.Addr()) != version {
			continue
		}
		_, b, _, err := a.getBlock(ctx, blockKey(p.Masked()), fromStore)
		if errors.Is(err, datastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for ord := range b.Allocations {
			if b.Allocations[ord] != nil && b.handleOf(ord) == id {
				out = append(out, netip.PrefixFrom(b.addr(ord), b.prefix.Bits()))
			}
		}
	}
	return out, nil
}
