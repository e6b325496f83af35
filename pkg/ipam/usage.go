package ipam

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"sort"

	"github.com/tortie/tortie/pkg/datastore"
)

// BlockUsage is one block's occupancy.
type BlockUsage struct {
	CIDR     netip.Prefix
	Node     string // affinity; "" for none
	Capacity int
	InUse    int
}

// PoolUsage is one pool's occupancy; the group of blocks that are in no
// pool has a zero CIDR and no name.
type PoolUsage struct {
	Name     string
	CIDR     netip.Prefix
	Capacity float64 // addresses in the pool (IPv6 pools exceed any int)
	InUse    int
	Blocks   []BlockUsage
}

// Usage reports, per pool in name order, how many addresses are allocated,
// as `calicoctl ipam show` counts them: an address is in use when its
// block records it allocated.
func (a *IPAM) Usage(ctx context.Context) ([]PoolUsage, error) {
	v, err := a.readView(ctx)
	if err != nil {
		return nil, err
	}
	var out []PoolUsage
	idx := map[string]int{}
	for _, p := range v.pools {
		idx[p.name] = len(out)
		out = append(out, PoolUsage{Name: p.name, CIDR: p.cidr, Capacity: math.Pow(2, float64(p.cidr.Addr().BitLen()-p.cidr.Bits()))})
	}
	orphan := PoolUsage{}
	for _, version := range []int{4, 6} {
		blocks, err := a.listBlocks(ctx, version)
		if err != nil {
			return nil, err
		}
		for _, blk := range sortedPrefixes(blocks) {
			b := blocks[blk].block()
			u := BlockUsage{CIDR: blk, Node: b.host(), Capacity: len(b.Allocations), InUse: b.inUse()}
			if p := v.poolFor(blk.Addr()); p != nil {
				pu := &out[idx[p.name]]
				pu.InUse += u.InUse
				pu.Blocks = append(pu.Blocks, u)
			} else {
				orphan.InUse += u.InUse
				orphan.Capacity += float64(u.Capacity)
				orphan.Blocks = append(orphan.Blocks, u)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(orphan.Blocks) > 0 {
		out = append(out, orphan)
	}
	return out, nil
}

// AllocationInfo says who holds an address.
type AllocationInfo struct {
	Addr           netip.Addr
	Block          netip.Prefix
	BlockNode      string // the block's affinity
	Handle         string
	Attrs          map[string]string
	SequenceNumber uint64
}

// Lookup returns who holds ip, or nil when it is not allocated.
func (a *IPAM) Lookup(ctx context.Context, ip netip.Addr) (*AllocationInfo, error) {
	v, err := a.readView(ctx)
	if err != nil {
		return nil, err
	}
	var candidates []netip.Prefix
	if p := v.poolFor(ip); p != nil {
		candidates = append(candidates, p.blockFor(ip))
	} else {
		blocks, err := a.listBlocks(ctx, ipVersion(ip))
		if err != nil {
			return nil, err
		}
		for blk := range blocks {
			if blk.Contains(ip) {
				candidates = append(candidates, blk)
			}
		}
	}
	for _, blk := range candidates {
		kv, err := a.be.Get(ctx, blockKey(blk))
		if errors.Is(err, datastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		b, err := decodeBlock(kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		ord, ok := b.ordinal(ip)
		if !ok || b.Allocations[ord] == nil {
			continue
		}
		return &AllocationInfo{
			Addr: ip, Block: blk, BlockNode: b.host(), Handle: b.handleOf(ord),
			Attrs: b.Attributes[*b.Allocations[ord]].Secondary, SequenceNumber: b.seqFor(ord),
		}, nil
	}
	return nil, nil
}
