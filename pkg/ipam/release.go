package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/tortie/tortie/pkg/datastore"
)

// Config reads the IPAM configuration (Calico's defaults when unset).
func (a *IPAM) Config(ctx context.Context) (Config, error) {
	cfg, _, err := a.readConfig(ctx)
	return cfg, err
}

func (a *IPAM) readConfig(ctx context.Context) (Config, int64, error) {
	kv, err := a.be.Get(ctx, configKey)
	if errors.Is(err, datastore.ErrNotFound) {
		return DefaultConfig(), 0, nil
	}
	if err != nil {
		return Config{}, 0, fmt.Errorf("reading IPAM config: %w", err)
	}
	var sc storedConfig
	if err := json.Unmarshal(kv.Value, &sc); err != nil {
		return Config{}, 0, fmt.Errorf("IPAM config at %s: %w", configKey, err)
	}
	return Config{
		StrictAffinity:               sc.StrictAffinity,
		AutoAllocateBlocks:           sc.AutoAllocateBlocks,
		MaxBlocksPerHost:             sc.MaxBlocksPerHost,
		KubeVirtVMAddressPersistence: sc.KubeVirtVMAddressPersistence,
	}, kv.Revision, nil
}

// UpdateConfig applies change to the stored IPAM configuration with a
// compare-and-swap, retrying on conflict, and returns the result.
func (a *IPAM) UpdateConfig(ctx context.Context, change func(*Config)) (Config, error) {
	for attempt := 0; attempt < a.opts.MaxRetries; attempt++ {
		cfg, rev, err := a.readConfig(ctx)
		if err != nil {
			return Config{}, err
		}
		change(&cfg)
		if cfg.MaxBlocksPerHost < 0 {
			return Config{}, fmt.Errorf("maxBlocksPerHost must not be negative, got %d", cfg.MaxBlocksPerHost)
		}
		val := mustJSON(storedConfig{
			StrictAffinity:               cfg.StrictAffinity,
			AutoAllocateBlocks:           cfg.AutoAllocateBlocks,
			MaxBlocksPerHost:             cfg.MaxBlocksPerHost,
			KubeVirtVMAddressPersistence: cfg.KubeVirtVMAddressPersistence,
		})
		if rev == 0 {
			_, err = a.be.Create(ctx, configKey, val)
		} else {
			_, err = a.be.Update(ctx, configKey, val, rev)
		}
		if errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrAlreadyExists) || errors.Is(err, datastore.ErrNotFound) {
			continue
		}
		return cfg, err
	}
	return Config{}, fmt.Errorf("%w: IPAM config", ErrContention)
}

// ReleaseOptions names one address to release. Handle and SequenceNumber,
// when set, must match the allocation, or nothing is released: they keep a
// stale request (a leak report, a late CNI DEL) from freeing an address
// that has been handed to someone else since.
type ReleaseOptions struct {
	Address        netip.Addr
	Handle         string
	SequenceNumber *uint64
}

// ErrMismatch: ReleaseIPs with a handle or sequence number that no longer
// matches the allocation.
var ErrMismatch = errors.New("allocation changed since it was read")

// ReleaseIPs frees addresses. It returns those that were not allocated.
// Each block's change and the matching handle changes are one transaction.
func (a *IPAM) ReleaseIPs(ctx context.Context, opts ...ReleaseOptions) ([]netip.Addr, error) {
	v, err := a.readView(ctx)
	if err != nil {
		return nil, err
	}
	byBlock := map[netip.Prefix][]ReleaseOptions{}
	var lost []ReleaseOptions
	for _, o := range opts {
		if p := v.poolFor(o.Address); p != nil {
			blk := p.blockFor(o.Address)
			byBlock[blk] = append(byBlock[blk], o)
		} else {
			lost = append(lost, o)
		}
	}
	var unallocated []netip.Addr
	if len(lost) > 0 {
		// No pool says which block: look the blocks up.
		for _, version := range []int{4, 6} {
			blocks, err := a.listBlocks(ctx, version)
			if err != nil {
				return nil, err
			}
			for _, o := range lost {
				found := false
				for blk := range blocks {
					if blk.Contains(o.Address) {
						byBlock[blk] = append(byBlock[blk], o)
						found = true
					}
				}
				if !found && ipVersion(o.Address) == version {
					unallocated = append(unallocated, o.Address)
				}
			}
		}
	}
	for _, blk := range sortedPrefixes(byBlock) {
		un, err := a.releaseFromBlock(ctx, blk, byBlock[blk])
		unallocated = append(unallocated, un...)
		if err != nil {
			return unallocated, err
		}
	}
	return unallocated, nil
}

func (a *IPAM) releaseFromBlock(ctx context.Context, blk netip.Prefix, opts []ReleaseOptions) ([]netip.Addr, error) {
	key := blockKey(blk)
	for attempt := 0; attempt < a.opts.MaxRetries; attempt++ {
		kv, b, _, err := a.getBlock(ctx, key, fromStore)
		if errors.Is(err, datastore.ErrNotFound) {
			var un []netip.Addr
			for _, o := range opts {
				un = append(un, o.Address)
			}
			return un, nil
		}
		if err != nil {
			return nil, err
		}
		var un []netip.Addr
		var ords []int
		perHandle := map[string]int{}
		seen := map[int]bool{}
		for _, o := range opts {
			ord, _ := b.ordinal(o.Address)
			if seen[ord] {
				continue
			}
			seen[ord] = true
			if b.Allocations[ord] == nil {
				un = append(un, o.Address)
				continue
			}
			h := b.handleOf(ord)
			if (o.Handle != "" && o.Handle != h) || (o.SequenceNumber != nil && *o.SequenceNumber != b.seqFor(ord)) {
				return nil, fmt.Errorf("%w: %s (now handle %q, sequence number %d)", ErrMismatch, o.Address, h, b.seqFor(ord))
			}
			ords = append(ords, ord)
			if h != "" {
				perHandle[h]++
			}
		}
		if len(ords) == 0 {
			return un, nil
		}
		b.release(ords)
		ops, err := a.blockWriteOps(ctx, key, b, kv.Revision)
		if err != nil {
			return nil, err
		}
		for _, h := range slices.Sorted(maps.Keys(perHandle)) {
			op, ok, err := a.handleDecrement(ctx, h, b.CIDR, perHandle[h])
			if err != nil {
				return nil, err
			}
			if ok {
				ops = append(ops, op)
			}
		}
		if _, err := a.be.Txn(ctx, ops); err != nil {
			var te *datastore.TxnError
			if errors.As(err, &te) {
				a.forgetBlock(key)
				a.backoff(attempt)
				continue
			}
			return nil, err
		}
		a.forgetBlock(key)
		return un, nil
	}
	return nil, fmt.Errorf("%w: releasing from block %s", ErrContention, blk)
}

// blockWriteOps writes a changed block: deleted when it is empty and no
// node's (as Calico does), else updated with its sequence number bumped.
func (a *IPAM) blockWriteOps(ctx context.Context, key string, b *block, rev int64) ([]datastore.Op, error) {
	if b.empty() && b.Affinity == nil {
		return []datastore.Op{{Type: datastore.OpDelete, Key: key, Rev: rev}}, nil
	}
	b.SequenceNumber++
	return []datastore.Op{{Type: datastore.OpUpdate, Key: key, Value: b.encode(), Rev: rev}}, nil
}

// handleDecrement is the write taking n addresses of block cidr off a
// handle (ok is false when the handle key does not exist: data written by
// a crashed non-transactional writer).
func (a *IPAM) handleDecrement(ctx context.Context, id, cidr string, n int) (datastore.Op, bool, error) {
	hs := &handleState{id: id}
	if err := a.readHandle(ctx, hs); err != nil {
		return datastore.Op{}, false, err
	}
	if hs.rev == 0 {
		return datastore.Op{}, false, nil
	}
	op, _ := hs.op(cidr, -n)
	return op, true, nil
}

// ReleaseByHandle frees every address a handle holds and deletes the handle.
func (a *IPAM) ReleaseByHandle(ctx context.Context, handleID string) ([]netip.Addr, error) {
	var released []netip.Addr
	for attempt := 0; attempt < a.opts.MaxRetries; {
		hs := &handleState{id: handleID}
		if err := a.readHandle(ctx, hs); err != nil {
			return released, err
		}
		if hs.rev == 0 {
			if len(released) > 0 {
				return released, nil
			}
			return nil, fmt.Errorf("%w: %s", ErrHandleNotFound, handleID)
		}
		cidr := slices.Sorted(maps.Keys(hs.h.Block))
		if len(cidr) == 0 {
			// An empty handle: just delete it.
			if _, err := a.be.Delete(ctx, handleKey(handleID), hs.rev); err != nil && !errors.Is(err, datastore.ErrConflict) && !errors.Is(err, datastore.ErrNotFound) {
				return released, err
			}
			attempt++
			continue
		}
		p, err := netip.ParsePrefix(cidr[0])
		if err != nil {
			return released, fmt.Errorf("IPAM handle %s names bad block %q", handleID, cidr[0])
		}
		got, err := a.releaseHandleInBlock(ctx, hs, p.Masked(), cidr[0])
		released = append(released, got...)
		if err != nil && !errors.Is(err, errRetry) {
			return released, err
		}
		if err != nil {
			a.backoff(attempt)
			attempt++
		}
	}
	return released, fmt.Errorf("%w: releasing handle %s", ErrContention, handleID)
}

var errRetry = errors.New("retry")

// releaseHandleInBlock frees the handle's addresses in one block and takes
// the block off the handle, in one transaction.
func (a *IPAM) releaseHandleInBlock(ctx context.Context, hs *handleState, blk netip.Prefix, cidr string) ([]netip.Addr, error) {
	key := blockKey(blk)
	kv, b, _, err := a.getBlock(ctx, key, fromStore)
	var ops []datastore.Op
	var got []netip.Addr
	if err == nil {
		var ords []int
		for ord := range b.Allocations {
			if b.Allocations[ord] != nil && b.handleOf(ord) == hs.id {
				ords = append(ords, ord)
				got = append(got, b.addr(ord))
			}
		}
		if len(ords) > 0 {
			b.release(ords)
			if ops, err = a.blockWriteOps(ctx, key, b, kv.Revision); err != nil {
				return nil, err
			}
		}
	} else if !errors.Is(err, datastore.ErrNotFound) {
		return nil, err
	}
	op, _ := hs.op(cidr, -hs.h.Block[cidr])
	ops = append(ops, op)
	if _, err := a.be.Txn(ctx, ops); err != nil {
		var te *datastore.TxnError
		if errors.As(err, &te) {
			a.forgetBlock(key)
			return nil, errRetry
		}
		return nil, err
	}
	a.forgetBlock(key)
	return got, nil
}

// IPsByHandle lists the addresses a handle holds.
func (a *IPAM) IPsByHandle(ctx context.Context, handleID string) ([]netip.Addr, error) {
	hs := &handleState{id: handleID}
	if err := a.readHandle(ctx, hs); err != nil {
		return nil, err
	}
	if hs.rev == 0 {
		return nil, fmt.Errorf("%w: %s", ErrHandleNotFound, handleID)
	}
	var out []netip.Addr
	for _, version := range []int{4, 6} {
		ps, err := a.handleAddrs(ctx, handleID, hs.h, version)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// ReleaseAffinity gives up every block a node has claimed (the node is
// leaving): an empty block is deleted, a block still holding addresses
// loses its affinity and keeps them (they stay valid, and other nodes may
// later borrow from it). Each block and its affinity change in one
// transaction.
func (a *IPAM) ReleaseAffinity(ctx context.Context, node string) error {
	defer a.forgetAffinities(node)
	kvs, _, err := a.be.List(ctx, affinityPrefix(node, 0))
	if err != nil {
		return fmt.Errorf("listing affinities of node %s: %w", node, err)
	}
	for _, akv := range kvs {
		_, cidr, ok := parseAffinityKey(akv.Key)
		if !ok {
			continue
		}
		if err := a.releaseOneAffinity(ctx, node, cidr, akv); err != nil {
			return err
		}
	}
	return nil
}

func (a *IPAM) releaseOneAffinity(ctx context.Context, node string, cidr netip.Prefix, akv *datastore.KV) error {
	key := blockKey(cidr)
	for attempt := 0; attempt < a.opts.MaxRetries; attempt++ {
		ops := []datastore.Op{{Type: datastore.OpDelete, Key: akv.Key, Rev: akv.Revision}}
		kv, err := a.be.Get(ctx, key)
		switch {
		case errors.Is(err, datastore.ErrNotFound):
		case err != nil:
			return err
		default:
			b, err := decodeBlock(key, kv.Value)
			if err != nil {
				return err
			}
			if b.host() == node {
				if b.empty() {
					ops = append(ops, datastore.Op{Type: datastore.OpDelete, Key: key, Rev: kv.Revision})
				} else {
					b.Affinity, b.AffinityClaimTime = nil, nil
					b.SequenceNumber++
					ops = append(ops, datastore.Op{Type: datastore.OpUpdate, Key: key, Value: b.encode(), Rev: kv.Revision})
				}
			}
		}
		_, err = a.be.Txn(ctx, ops)
		a.forgetBlock(key)
		if err == nil {
			a.log.Info("released block affinity", "node", node, "block", cidr)
			return nil
		}
		var te *datastore.TxnError
		if !errors.As(err, &te) {
			return err
		}
		if te.Index == 0 {
			if akv, err = a.be.Get(ctx, akv.Key); errors.Is(err, datastore.ErrNotFound) {
				return nil // someone else released it
			} else if err != nil {
				return err
			}
		}
		a.backoff(attempt)
	}
	return fmt.Errorf("%w: releasing affinity of %s for %s", ErrContention, node, cidr)
}

// AssignIPArgs asks for one specific address.
type AssignIPArgs struct {
	IP       netip.Addr
	HandleID string
	Attrs    map[string]string
	// Node is the node the address is for. If the address's block does not
	// exist yet, it is claimed for this node.
	Node string
}

// AssignIP gives one specific address to a handle. Assigning an address
// the handle already holds succeeds and changes nothing.
func (a *IPAM) AssignIP(ctx context.Context, args AssignIPArgs) error {
	if args.HandleID == "" {
		return errors.New("ipam: handle ID is required")
	}
	v, err := a.readView(ctx)
	if err != nil {
		return err
	}
	p := v.poolFor(args.IP)
	if p == nil || p.disabled {
		return fmt.Errorf("%w: %s", ErrNotInPool, args.IP)
	}
	if p.edge(args.IP) || v.reserved(args.IP) {
		return fmt.Errorf("ipam: %s is reserved (a pool's first and last addresses and IPReservation CIDRs are never handed out)", args.IP)
	}
	attrs := maps.Clone(args.Attrs)
	if attrs == nil {
		attrs = map[string]string{}
	}
	if args.Node != "" && attrs[AttrNode] == "" {
		attrs[AttrNode] = args.Node
	}
	if attrs[AttrTimestamp] == "" {
		attrs[AttrTimestamp] = a.now().UTC().Format(timestampLayout)
	}
	cfg, err := a.Config(ctx)
	if err != nil {
		return err
	}
	blk := p.blockFor(args.IP)
	key := blockKey(blk)
	hs := &handleState{id: args.HandleID}
	if err := a.readHandle(ctx, hs); err != nil {
		return err
	}
	for attempt := 0; attempt < a.opts.MaxRetries; attempt++ {
		kv, b, _, err := a.getBlock(ctx, key, fromStore)
		if errors.Is(err, datastore.ErrNotFound) {
			if args.Node == "" {
				return fmt.Errorf("ipam: block %s of %s does not exist and no node was given to claim it", blk, args.IP)
			}
			if err := a.claim(ctx, blk, args.Node); err != nil && !errors.Is(err, errClaimConflict) {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if cfg.StrictAffinity && b.host() != args.Node {
			return fmt.Errorf("ipam: %s is in block %s of node %q and strict affinity forbids node %q to use it", args.IP, blk, b.host(), args.Node)
		}
		ord, _ := b.ordinal(args.IP)
		if b.Allocations[ord] != nil {
			if b.handleOf(ord) == args.HandleID {
				return nil
			}
			return fmt.Errorf("%w: %s is held by handle %q", ErrAlreadyAssigned, args.IP, b.handleOf(ord))
		}
		b.assign(ord, args.HandleID, attrs)
		b.SequenceNumber++
		hop, h := hs.op(b.CIDR, 1)
		res, err := a.be.Txn(ctx, []datastore.Op{{Type: datastore.OpUpdate, Key: key, Value: b.encode(), Rev: kv.Revision}, hop})
		if err == nil {
			a.cacheBlock(res[0], b)
			hs.wrote(res[1], h)
			return nil
		}
		var te *datastore.TxnError
		if !errors.As(err, &te) {
			return err
		}
		if te.Index == 1 {
			if err := a.readHandle(ctx, hs); err != nil {
				return err
			}
		}
		a.backoff(attempt)
	}
	return fmt.Errorf("%w: assigning %s", ErrContention, args.IP)
}
