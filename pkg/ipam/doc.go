// Package ipam is tortie's IP address management: Calico's block allocator
// on Calico's etcd layout, so that Calico's IPAM and tortie's can share one
// datastore.
//
// Pools are cut into blocks of blockSize addresses. A node claims blocks
// (an affinity) from the pools whose nodeSelector matches it and that are
// not disabled; it allocates from its own blocks first, then from a newly
// claimed block, then, unless strictAffinity is set, single addresses from
// other nodes' blocks. Every address belongs to a handle (the CNI plugin's
// "<network>.<containerID>"); a handle that asks again gets what it holds.
// A pool's first and last addresses and IPReservation CIDRs are never
// handed out.
//
// Storage, under /calico/ipam/v2/ (see section 4 of
// testdata/shared/reference/etcd-layout.md at the repository root): blocks
// at assignment/ipv4|ipv6/block/<net>-<len> (Calico's AllocationBlock JSON,
// field for field), affinities at host/<node>/ipv4|ipv6/block/<net>-<len>
// ({"state":..,"deleted":false}), handles at handle/<id>
// ({"block":{"<cidr>":<count>},"deleted":false}) and the configuration at
// config.
//
// Every write is a compare-and-swap on the key's etcd revision (or a create
// that fails if the key exists); a lost race re-reads and tries again.
// There is no lock: nodes allocate from their own blocks and rarely touch
// the same key. Several keys that must change together change in one etcd
// transaction:
//
//   - an allocation or release writes its block and its handle(s) together,
//     so a block never records an address its handle does not count, nor
//     the other way round;
//   - a claim writes a pending affinity, then creates the block and
//     confirms the affinity in one transaction (the block create fails if
//     the block exists, the confirm if the affinity changed);
//   - releasing a node's affinity deletes (or un-affines) the block and
//     deletes the affinity together.
//
// What a crash can still leave behind, and what repairs it:
//
//   - A pending affinity without a block (crash between the two claim
//     steps). The node's next claim walks the pool's blocks in the same
//     order (seeded by its hostname), finds the pending affinity and
//     finishes the claim; `ipam check` reports it and --release-leaks
//     deletes it (safe even while a claim is live: the claim's block create
//     is conditional on the affinity's revision and starts over).
//   - An allocation whose workload endpoint was never written (crash of
//     the caller after AutoAssign). `ipam check` reports it as a leak and
//     --release-leaks frees it once older than the grace period, only if
//     it still has the same handle and sequence number.
//   - A retried CNI ADD after a crash gets the handle's addresses back
//     instead of new ones.
//
// Data written by Calico's own, non-transactional sequence (handle, then
// block) may also hold a handle count that disagrees with the blocks or an
// affinity whose block says otherwise; `ipam check` reports those too and
// --release-leaks rewrites the handle to what the blocks hold, pinned to
// the blocks' revisions.
//
// This package must never write a block or handle without a
// compare-and-swap, never hand out an address twice, and never release an
// address on the strength of a stale read.
package ipam
