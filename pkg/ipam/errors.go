package ipam

import "errors"

// Sentinel errors; returned errors wrap them with the details an operator
// needs (pool, node, address), so test with errors.Is.
var (
	// ErrNoFreeAddresses: the usable pools have no address this node may
	// take. The message names each pool and why.
	ErrNoFreeAddresses = errors.New("no free addresses")
	// ErrNoPools: no pool of the asked IP version is usable by the node.
	ErrNoPools = errors.New("no usable IP pool")
	// ErrAlreadyAssigned: AssignIP of an address another handle holds.
	ErrAlreadyAssigned = errors.New("address already assigned")
	// ErrNotInPool: the address is in no enabled pool.
	ErrNotInPool = errors.New("address not in an enabled IP pool")
	// ErrHandleNotFound: ReleaseByHandle or IPsByHandle of an unknown handle.
	ErrHandleNotFound = errors.New("IPAM handle not found")
	// ErrContention: a write lost its compare-and-swap too many times in a
	// row; the caller may retry.
	ErrContention = errors.New("IPAM: too much contention, giving up")
)

var (
	// errHandleExists: AutoAssign found its handle already holds addresses
	// (a retried request); it recounts them instead of allocating anew.
	errHandleExists = errors.New("handle exists")
	// errNotAffine: a block thought to be this node's belongs to another.
	errNotAffine = errors.New("block not affine to this node")
	// errClaimConflict: another node created the block first.
	errClaimConflict = errors.New("block claimed by another node")
)
