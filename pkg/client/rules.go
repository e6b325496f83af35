package client

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// Datastore rules: what Calico's client refuses on top of a resource's own
// validation, because it depends on what is stored (the object being
// replaced, other objects). They are checked against a snapshot read in
// the same attempt as the write, and the write is conditional on the
// snapshot still holding (datastore.OpUnchangedSince on every prefix read),
// so no concurrent writer can slip in between the check and the write.
//
// Each rule names where Calico has it (libcalico-go lib/clientv3) and keeps
// Calico's wording.

// ErrNotSupported is wrapped by refusals of operations Calico does not
// allow on an object at all (deleting a built-in tier, changing the built-in
// profile).
var ErrNotSupported = errors.New("operation not supported")

// calicoError is one of Calico's refusals, in its
// words, matching the datastore sentinel it is closest to.
type calicoError struct {
	msg      string
	sentinel error
}

func (e *calicoError) Error() string { return e.msg }
func (e *calicoError) Unwrap() error { return e.sentinel }

// change is one document of a batch as the rules see it.
type change struct {
	index int
	op    Op
	k     *v3.KindInfo
	r     v3.Resource // what is written (for a delete: the name given)
	cur   v3.Resource // what is stored now; nil if nothing (or not read)
	key   string
}

// snapshot is what the rules of one batch attempt read, each prefix at one
// revision, remembered so that the write can be made conditional on it.
type snapshot struct {
	be    datastore.Backend
	lists map[string]*listing
}

type listing struct {
	kvs     []*datastore.KV
	rev     int64
	guarded bool
}

func newSnapshot(be datastore.Backend) *snapshot {
	return &snapshot{be: be, lists: map[string]*listing{}}
}

// list reads every key under prefix; the write will be conditional on
// nothing under it having been created or changed since.
func (s *snapshot) list(ctx context.Context, prefix string) ([]*datastore.KV, error) {
	return s.read(ctx, prefix, true)
}

// listUnguarded reads every key under prefix without conditioning the write
// on it (for data that changes all the time and whose relevant changes are
// excluded by a guarded read; see checkPoolBlocks).
func (s *snapshot) listUnguarded(ctx context.Context, prefix string) ([]*datastore.KV, error) {
	return s.read(ctx, prefix, false)
}

func (s *snapshot) read(ctx context.Context, prefix string, guard bool) ([]*datastore.KV, error) {
	if l, ok := s.lists[prefix]; ok {
		l.guarded = l.guarded || guard
		return l.kvs, nil
	}
	kvs, rev, err := s.be.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", prefix, err)
	}
	s.lists[prefix] = &listing{kvs: kvs, rev: rev, guarded: guard}
	return kvs, nil
}

// conditions are the transaction conditions that keep the snapshot true.
func (s *snapshot) conditions() []datastore.Op {
	var ops []datastore.Op
	for prefix, l := range s.lists {
		if l.guarded {
			ops = append(ops, datastore.Op{Type: datastore.OpUnchangedSince, Key: prefix, Rev: l.rev})
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Key < ops[j].Key })
	return ops
}

// checkRules applies the datastore rules to one change; earlier are the
// changes before it in the same batch (Calico's CLI applies a file's
// documents one after another, so a document sees the ones before it).
func checkRules(ctx context.Context, sn *snapshot, ch *change, earlier []*change) error {
	switch ch.k.Kind {
	case v3.KindIPPool:
		if ch.op != OpDelete {
			return checkIPPool(ctx, sn, ch, earlier)
		}
	case v3.KindTier:
		if ch.op == OpDelete {
			return checkTierDelete(ctx, sn, ch, earlier)
		}
	}
	return nil
}

// checkIPPool: clientv3 ippool.go. On update the CIDR and block size cannot
// change (blocks already handed out are cut to them); on create the CIDR
// may not overlap another pool, nor blocks of another size that are still
// allocated in its range.
func checkIPPool(ctx context.Context, sn *snapshot, ch *change, earlier []*change) error {
	p := ch.r.(*v3.IPPool)
	pfx, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		return nil // validation has already refused it
	}
	spec := v3.Path("spec")
	if ch.cur != nil {
		old := ch.cur.(*v3.IPPool)
		var errs v3.ErrorList
		if oldPfx, err := netip.ParsePrefix(old.Spec.CIDR); err != nil || oldPfx.Masked() != pfx.Masked() {
			errs = append(errs, spec.Child("cidr").Errorf("IPPool CIDR cannot be modified (it is %s)", old.Spec.CIDR))
		}
		if oldSize := storedBlockSize(old); oldSize != p.Spec.BlockSize {
			errs = append(errs, spec.Child("blockSize").Errorf("IPPool BlockSize cannot be modified (it is %d)", oldSize))
		}
		return errs.ToError()
	}
	kvs, err := sn.list(ctx, KindPrefix(ch.k, ""))
	if err != nil {
		return err
	}
	var errs v3.ErrorList
	overlap := func(name, cidr string) {
		other, err := netip.ParsePrefix(cidr)
		if err == nil && name != p.Name && other.Overlaps(pfx) {
			errs = append(errs, spec.Child("cidr").Errorf("IPPool(%s) CIDR overlaps with IPPool(%s) CIDR %s", p.Name, name, cidr))
		}
	}
	for _, kv := range kvs {
		stored, err := decode(ch.k, kv)
		if err != nil {
			continue // Calico skips a pool it cannot read, too
		}
		overlap(stored.GetName(), stored.(*v3.IPPool).Spec.CIDR)
	}
	for _, e := range earlier {
		if e.k == ch.k && e.op != OpDelete && e.cur == nil {
			overlap(e.r.GetName(), e.r.(*v3.IPPool).Spec.CIDR)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return checkPoolBlocks(ctx, sn, p, pfx)
}

// storedBlockSize is a stored pool's block size as Calico reads it: a pool
// stored without one has the default of its family.
func storedBlockSize(p *v3.IPPool) int {
	if p.Spec.BlockSize != 0 {
		return p.Spec.BlockSize
	}
	if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil && pfx.Addr().Is6() {
		return v3.DefaultBlockSizeV6
	}
	return v3.DefaultBlockSizeV4
}

// IPAM blocks, by family, as Calico's etcd layout keys them
// (…/ipv4/block/10.65.192.128-26).
const ipamBlockPrefix = "/calico/ipam/v2/assignment/"

// checkPoolBlocks refuses a new pool over allocation blocks of another size
// (left by a deleted pool whose addresses are still in use). The read is
// not guarded: blocks change with every allocation, and a new block can
// only appear inside an existing pool, which the guarded pool read already
// makes this pool refuse to overlap.
func checkPoolBlocks(ctx context.Context, sn *snapshot, p *v3.IPPool, pfx netip.Prefix) error {
	family := "ipv4"
	if pfx.Addr().Is6() {
		family = "ipv6"
	}
	prefix := ipamBlockPrefix + family + "/block/"
	kvs, err := sn.listUnguarded(ctx, prefix)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		name := strings.TrimPrefix(kv.Key, prefix)
		i := strings.LastIndexByte(name, '-')
		if i < 0 {
			continue
		}
		bits, err1 := strconv.Atoi(name[i+1:])
		addr, err2 := netip.ParseAddr(name[:i])
		if err1 != nil || err2 != nil {
			continue
		}
		block := netip.PrefixFrom(addr, bits)
		if bits != p.Spec.BlockSize && block.Overlaps(pfx) {
			return v3.Path("spec").Child("blockSize").Errorf("IPPool blocksSize conflicts with existing allocations that use a different blockSize (block %s)", block)
		}
	}
	return nil
}

// checkTierDelete: clientv3 tier.go. The built-in tiers cannot be deleted,
// nor a tier that still holds a policy of any kind (it would be orphaned and
// never enforced). Policies deleted earlier in the same batch are gone.
func checkTierDelete(ctx context.Context, sn *snapshot, ch *change, earlier []*change) error {
	name := ch.r.GetName()
	if _, builtin := v3.LookupBuiltinTier(name); builtin {
		return &calicoError{fmt.Sprintf("operation Delete is not supported on %s: Cannot delete %s tier", name, name), ErrNotSupported}
	}
	gone := map[string]bool{}
	for _, e := range earlier {
		if e.op == OpDelete {
			gone[e.key] = true
		}
	}
	for _, pk := range v3.Kinds() {
		if !isPolicyKind(pk) {
			continue
		}
		kvs, err := sn.list(ctx, KindPrefix(pk, ""))
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			if gone[kv.Key] {
				continue
			}
			r, err := decode(pk, kv)
			if err != nil {
				return err
			}
			if r.(v3.Tiered).PolicyTier() == name {
				return &calicoError{fmt.Sprintf("operation delete is not supported on %s: Cannot delete a non-empty tier (it holds %s %s)", name, pk.Kind, nsName(r.GetNamespace(), r.GetName())), ErrNotSupported}
			}
		}
	}
	return nil
}
