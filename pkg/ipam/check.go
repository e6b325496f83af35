package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// DefaultLeakGracePeriod is how old a leaked allocation must be before
// ReleaseLeaks frees it (Calico's garbage collector waits as long): an
// address is allocated before its workload endpoint is written, so a young
// "leak" is usually a workload being set up.
const DefaultLeakGracePeriod = 15 * time.Minute

// Leak is an allocated address that no workload endpoint and no node uses.
type Leak struct {
	Addr           netip.Addr
	Block          netip.Prefix
	Handle         string
	Attrs          map[string]string
	SequenceNumber uint64
	// Allocated is when (from the timestamp attribute); zero if unknown.
	Allocated time.Time
}

// HandleProblem is a handle key that disagrees with the blocks.
type HandleProblem struct {
	Handle string
	// Stored is what the handle key says per block (nil: no key); Actual is
	// what the blocks hold.
	Stored, Actual map[string]int
}

// BlockProblem is a block affine to a node that does not exist.
type BlockProblem struct {
	Block netip.Prefix
	Node  string
	InUse int
}

// AffinityProblem is an affinity that is not a confirmed claim of an
// existing block by its node, or a block whose node has no affinity key.
type AffinityProblem struct {
	Node  string
	Block netip.Prefix
	State string // the affinity's state; "" when the key is missing
	// BlockOwner is the block's affinity ("" when the block does not exist
	// or has none).
	BlockOwner  string
	BlockExists bool
}

// InUseProblem is an address a workload or node uses that is inside an
// enabled pool but not allocated.
type InUseProblem struct {
	Addr  netip.Addr
	Owner string
}

// Report is the result of Check.
type Report struct {
	Blocks, Allocations, Handles int
	// InUse is how many allocated addresses have an owner.
	InUse            int
	Leaks            []Leak
	HandleProblems   []HandleProblem
	OrphanBlocks     []BlockProblem
	AffinityProblems []AffinityProblem
	// Duplicates are addresses allocated in more than one block (only
	// overlapping blocks can do that).
	Duplicates  []netip.Addr
	Unallocated []InUseProblem

	revs   map[string]int64 // keys of the snapshot and their revisions
	blocks map[string]*block
}

// Problems is the number of things the report lists.
func (r *Report) Problems() int {
	return len(r.Leaks) + len(r.HandleProblems) + len(r.OrphanBlocks) + len(r.AffinityProblems) + len(r.Duplicates) + len(r.Unallocated)
}

// Check compares IPAM's records with themselves and with the workload
// endpoints and nodes that use addresses. All of /calico/ipam/v2/ is read
// in one consistent snapshot first, then endpoints and nodes: so an
// address allocated and given to a workload while Check runs is never
// reported, and one released meanwhile may be (ReleaseLeaks then finds it
// already free).
func (a *IPAM) Check(ctx context.Context) (*Report, error) {
	kvs, _, err := a.be.List(ctx, ipamPrefix)
	if err != nil {
		return nil, fmt.Errorf("reading IPAM data: %w", err)
	}
	r := &Report{revs: map[string]int64{}, blocks: map[string]*block{}}
	handles := map[string]*handle{}
	affs := map[string]map[netip.Prefix]string{} // node -> block -> state
	for _, kv := range kvs {
		r.revs[kv.Key] = kv.Revision
		switch {
		case strings.HasPrefix(kv.Key, assignmentPrefix):
			b, err := decodeBlock(kv.Key, kv.Value)
			if err != nil {
				return nil, err
			}
			r.blocks[kv.Key] = b
		case strings.HasPrefix(kv.Key, handlePrefix):
			var h handle
			if err := json.Unmarshal(kv.Value, &h); err != nil {
				return nil, fmt.Errorf("IPAM handle %s: %w", kv.Key, err)
			}
			handles[strings.TrimPrefix(kv.Key, handlePrefix)] = &h
		case strings.HasPrefix(kv.Key, hostPrefix):
			node, cidr, ok := parseAffinityKey(kv.Key)
			if !ok {
				continue
			}
			var af affinity
			if err := json.Unmarshal(kv.Value, &af); err != nil {
				return nil, fmt.Errorf("IPAM affinity %s: %w", kv.Key, err)
			}
			if affs[node] == nil {
				affs[node] = map[netip.Prefix]string{}
			}
			affs[node][cidr] = af.State
		}
	}

	// Who uses which address.
	owners := map[netip.Addr]string{}
	nodes := map[string]bool{}
	nodeObjs, _, err := a.c.List(ctx, kindOf(v3.KindNode), "")
	if err != nil {
		return nil, err
	}
	for _, o := range nodeObjs {
		n := o.(*v3.Node)
		nodes[n.Name] = true
		for _, s := range nodeTunnelAddrs(n) {
			if ad, err := parseAddrOrCIDR(s); err == nil {
				owners[ad] = "Node(" + n.Name + ")"
			}
		}
	}
	weps, _, err := a.c.List(ctx, kindOf(v3.KindWorkloadEndpoint), "")
	if err != nil {
		return nil, err
	}
	for _, o := range weps {
		w := o.(*v3.WorkloadEndpoint)
		for _, s := range w.Spec.IPNetworks {
			if ad, err := parseAddrOrCIDR(s); err == nil {
				owners[ad] = "Workload(" + w.Namespace + "/" + w.Name + ")"
			}
		}
	}
	v, err := a.readView(ctx)
	if err != nil {
		return nil, err
	}

	// Walk the blocks.
	allocated := map[netip.Addr]bool{}
	actual := map[string]map[string]int{}
	for _, key := range slices.Sorted(maps.Keys(r.blocks)) {
		b := r.blocks[key]
		r.Blocks++
		if host := b.host(); host != "" {
			if !nodes[host] {
				r.OrphanBlocks = append(r.OrphanBlocks, BlockProblem{Block: b.prefix, Node: host, InUse: b.inUse()})
			} else if _, ok := affs[host][b.prefix]; !ok {
				r.AffinityProblems = append(r.AffinityProblems, AffinityProblem{Node: host, Block: b.prefix, BlockOwner: host, BlockExists: true})
			}
		}
		for ord, idx := range b.Allocations {
			if idx == nil {
				continue
			}
			r.Allocations++
			ad := b.addr(ord)
			if allocated[ad] {
				r.Duplicates = append(r.Duplicates, ad)
			}
			allocated[ad] = true
			h := b.handleOf(ord)
			if h != "" {
				if actual[h] == nil {
					actual[h] = map[string]int{}
				}
				actual[h][b.CIDR]++
			}
			if _, ok := owners[ad]; ok {
				r.InUse++
				continue
			}
			attrs := b.Attributes[*idx].Secondary
			l := Leak{Addr: ad, Block: b.prefix, Handle: h, Attrs: attrs, SequenceNumber: b.seqFor(ord)}
			if ts, err := time.Parse(timestampLayout, attrs[AttrTimestamp]); err == nil {
				l.Allocated = ts
			}
			r.Leaks = append(r.Leaks, l)
		}
	}
	for ad, owner := range owners {
		if allocated[ad] {
			continue
		}
		if p := v.poolFor(ad); p != nil && !p.disabled {
			r.Unallocated = append(r.Unallocated, InUseProblem{Addr: ad, Owner: owner})
		}
	}
	sort.Slice(r.Unallocated, func(i, j int) bool { return r.Unallocated[i].Addr.Less(r.Unallocated[j].Addr) })

	// Handles against blocks.
	r.Handles = len(handles)
	for _, id := range slices.Sorted(maps.Keys(handles)) {
		if !maps.Equal(handles[id].Block, actual[id]) && !(len(handles[id].Block) == 0 && len(actual[id]) == 0) {
			r.HandleProblems = append(r.HandleProblems, HandleProblem{Handle: id, Stored: handles[id].Block, Actual: actual[id]})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(actual)) {
		if handles[id] == nil {
			r.HandleProblems = append(r.HandleProblems, HandleProblem{Handle: id, Actual: actual[id]})
		}
	}

	// Affinities against blocks.
	for _, node := range slices.Sorted(maps.Keys(affs)) {
		for _, cidr := range sortedPrefixes(affs[node]) {
			state := affs[node][cidr]
			b := r.blocks[blockKey(cidr)]
			if b != nil && b.host() == node && state == stateConfirmed {
				continue
			}
			p := AffinityProblem{Node: node, Block: cidr, State: state, BlockExists: b != nil}
			if b != nil {
				p.BlockOwner = b.host()
			}
			r.AffinityProblems = append(r.AffinityProblems, p)
		}
	}
	return r, nil
}

// nodeTunnelAddrs are the Node's tunnel addresses, each allocated from
// IPAM: VXLAN, IP-in-IP and WireGuard.
func nodeTunnelAddrs(n *v3.Node) []string {
	out := []string{n.Spec.IPv4VXLANTunnelAddr, n.Spec.IPv6VXLANTunnelAddr}
	if n.Spec.BGP != nil {
		out = append(out, n.Spec.BGP.IPv4IPIPTunnelAddr)
	}
	if w := n.Spec.Wireguard; w != nil {
		out = append(out, w.InterfaceIPv4Address, w.InterfaceIPv6Address)
	}
	return out
}

func parseAddrOrCIDR(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("empty")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Addr(), err
	}
	return netip.ParseAddr(s)
}

// RepairResult counts what ReleaseLeaks did.
type RepairResult struct {
	ReleasedIPs     int
	SkippedYoung    int // leaks younger than the grace period (or of unknown age)
	Changed         int // leaks that changed since the report (left alone)
	ReleasedNodes   int // departed nodes whose blocks were let go
	FixedAffinities int
	FixedHandles    int
	Errors          []error
}

// ReleaseLeaks repairs what a report found. Leaked addresses at least
// grace old are released, each only if it still has the handle and
// sequence number the report saw; leaks of unknown age only when grace is
// 0. Blocks of departed nodes lose their affinity (ReleaseAffinity).
// Affinities are fixed: a pending one whose block is the node's is
// confirmed, one whose block is missing or someone else's is deleted, a
// missing one is recreated. Handle keys are rewritten to what the blocks
// hold, each in a transaction pinned to the revisions of those blocks.
func (a *IPAM) ReleaseLeaks(ctx context.Context, r *Report, grace time.Duration) (*RepairResult, error) {
	res := &RepairResult{}
	now := a.now()
	for _, l := range r.Leaks {
		if grace > 0 && (l.Allocated.IsZero() || now.Sub(l.Allocated) < grace) {
			res.SkippedYoung++
			continue
		}
		seq := l.SequenceNumber
		un, err := a.ReleaseIPs(ctx, ReleaseOptions{Address: l.Addr, Handle: l.Handle, SequenceNumber: &seq})
		switch {
		case errors.Is(err, ErrMismatch):
			res.Changed++
		case err != nil:
			return res, err
		case len(un) > 0:
			res.Changed++
		default:
			res.ReleasedIPs++
		}
	}
	departed := map[string]bool{}
	for _, ob := range r.OrphanBlocks {
		departed[ob.Node] = true
	}
	for _, node := range slices.Sorted(maps.Keys(departed)) {
		if err := a.ReleaseAffinity(ctx, node); err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("releasing blocks of departed node %s: %w", node, err))
			continue
		}
		res.ReleasedNodes++
	}
	for _, p := range r.AffinityProblems {
		if departed[p.Node] {
			continue
		}
		if err := a.fixAffinity(ctx, r, p); err != nil {
			if !errors.Is(err, datastore.ErrConflict) && !errors.Is(err, datastore.ErrNotFound) && !errors.Is(err, datastore.ErrAlreadyExists) {
				res.Errors = append(res.Errors, err)
			}
			continue
		}
		res.FixedAffinities++
	}
	for _, p := range r.HandleProblems {
		if err := a.fixHandle(ctx, r, p); err != nil {
			var te *datastore.TxnError
			if !errors.As(err, &te) {
				res.Errors = append(res.Errors, err)
			}
			continue
		}
		res.FixedHandles++
	}
	return res, nil
}

func (a *IPAM) fixAffinity(ctx context.Context, r *Report, p AffinityProblem) error {
	defer a.forgetAffinities(p.Node)
	akey := affinityKey(p.Node, p.Block)
	switch {
	case p.State == "":
		_, err := a.be.Create(ctx, akey, mustJSON(affinity{State: stateConfirmed}))
		return err
	case p.BlockExists && p.BlockOwner == p.Node:
		_, err := a.be.Update(ctx, akey, mustJSON(affinity{State: stateConfirmed}), r.revs[akey])
		return err
	default:
		// No block, or someone else's: a claim that lost or crashed. A live
		// tortie claim whose affinity goes away restarts (its block create
		// is conditional on the affinity's revision).
		_, err := a.be.Delete(ctx, akey, r.revs[akey])
		return err
	}
}

func (a *IPAM) fixHandle(ctx context.Context, r *Report, p HandleProblem) error {
	var ops []datastore.Op
	// Pin the blocks the handle's counts come from: rewrite them unchanged
	// but for the sequence number, at the revision the report read.
	for _, cidr := range slices.Sorted(maps.Keys(p.Actual)) {
		pfx, err := netip.ParsePrefix(cidr)
		if err != nil {
			return err
		}
		key := blockKey(pfx.Masked())
		b := r.blocks[key]
		b.SequenceNumber++
		ops = append(ops, datastore.Op{Type: datastore.OpUpdate, Key: key, Value: b.encode(), Rev: r.revs[key]})
	}
	hkey := handleKey(p.Handle)
	switch {
	case p.Stored == nil:
		ops = append(ops, datastore.Op{Type: datastore.OpCreate, Key: hkey, Value: mustJSON(handle{Block: p.Actual})})
	case len(p.Actual) == 0:
		ops = append(ops, datastore.Op{Type: datastore.OpDelete, Key: hkey, Rev: r.revs[hkey]})
	default:
		ops = append(ops, datastore.Op{Type: datastore.OpUpdate, Key: hkey, Value: mustJSON(handle{Block: p.Actual}), Rev: r.revs[hkey]})
	}
	kvs, err := a.be.Txn(ctx, ops)
	for i, op := range ops {
		a.forgetBlock(op.Key)
		if err == nil && op.Type != datastore.OpDelete {
			r.revs[op.Key] = kvs[i].Revision // later fixes pin the new revision
		}
	}
	return err
}
