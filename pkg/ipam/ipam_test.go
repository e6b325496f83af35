package ipam

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// The block value observed on real Calico (etcd-layout.md section 4),
// verbatim: decoding and re-encoding it must give the same bytes.
const calicoBlock = `{"cidr":"10.65.192.128/26","affinity":"host:h1","affinity_claim_time":"2026-11-22T00:04:28Z","allocations":[0,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null,null],"unallocated":[2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,1],"attributes":[{"handle_id":"cp-net.c0ffee0001","secondary":{"namespace":"default","node":"h1","pod":"w1","timestamp":"2026-11-22 00:04:28.250324935 +0000 UTC"}}],"sequenceNumber":1795305868265467842,"sequenceNumberForAllocation":{"0":1795305868265467839},"deleted":false}`

func TestCalicoBlockJSONRoundTrip(t *testing.T) {
	b, err := decodeBlock("k", []byte(calicoBlock))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b.encode()); got != calicoBlock {
		t.Errorf("re-encoded block differs:\n got %s\nwant %s", got, calicoBlock)
	}
	if b.host() != "h1" || b.inUse() != 1 || b.handleOf(0) != "cp-net.c0ffee0001" {
		t.Errorf("decoded host=%q inUse=%d handle=%q", b.host(), b.inUse(), b.handleOf(0))
	}
	for _, c := range []struct {
		v    any
		want string
	}{
		{affinity{State: statePending}, `{"state":"pending","deleted":false}`},
		{handle{Block: map[string]int{"10.65.192.128/26": 1}}, `{"block":{"10.65.192.128/26":1},"deleted":false}`},
		{storedConfig{AutoAllocateBlocks: true, KubeVirtVMAddressPersistence: "Enabled"}, `{"auto_allocate_blocks":true,"kubeVirtVMAddressPersistence":"Enabled"}`},
		{storedConfig{StrictAffinity: true, AutoAllocateBlocks: true, MaxBlocksPerHost: 4, KubeVirtVMAddressPersistence: "Enabled"}, `{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":4,"kubeVirtVMAddressPersistence":"Enabled"}`},
	} {
		if got := string(mustJSON(c.v)); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}

// Host h1 in pool 10.65.0.0/16 with /26 blocks starts at 10.65.192.128/26,
// as real Calico does on a fresh datastore; the walk then goes upward and
// wraps, visiting every block once.
func TestBlockGeneratorMatchesCalico(t *testing.T) {
	p := &pool{name: "p", cidr: netip.MustParsePrefix("10.65.0.0/16"), blockBits: 26}
	next := blockGenerator(p, "h1", time.Now())
	first, _ := next()
	if first.String() != "10.65.192.128/26" {
		t.Fatalf("first block for h1 = %s, want 10.65.192.128/26", first)
	}
	second, _ := next()
	if second.String() != "10.65.192.192/26" {
		t.Errorf("second block = %s", second)
	}
	seen := map[netip.Prefix]bool{first: true, second: true}
	for blk, ok := next(); ok; blk, ok = next() {
		if seen[blk] || !p.cidr.Contains(blk.Addr()) || blk.Bits() != 26 {
			t.Fatalf("bad or repeated block %s", blk)
		}
		seen[blk] = true
	}
	if len(seen) != 1024 {
		t.Errorf("walked %d blocks, want 1024", len(seen))
	}
}

// The first allocation for h1 writes exactly Calico's keys and values; a
// release appends the ordinal at the end of unallocated, drops its
// attribute and sequence entry, bumps the sequence number and deletes the
// handle.
func TestCalicoLayoutAfterAssignAndRelease(t *testing.T) {
	e := newTestEnv(t)
	e.pool("cp-pool1", "10.65.0.0/16", 26)
	attrs := func(pod string) map[string]string {
		return map[string]string{"namespace": "default", "node": "h1", "pod": pod}
	}
	a1, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "cp-net.c0ffee0001", Node: "h1", Num4: 1, Attrs: attrs("w1")})
	if err != nil {
		t.Fatal(err)
	}
	if len(a1.IPv4) != 1 || a1.IPv4[0].String() != "10.65.192.128/26" {
		t.Fatalf("first address = %v, want 10.65.192.128/26", a1.IPv4)
	}
	a2, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "cp-net.c0ffee0002", Node: "h1", Num4: 1, Attrs: attrs("w2")})
	if err != nil {
		t.Fatal(err)
	}
	if a2.IPv4[0].Addr().String() != "10.65.192.129" {
		t.Fatalf("second address = %v", a2.IPv4)
	}
	if got := e.get("/calico/ipam/v2/host/h1/ipv4/block/10.65.192.128-26"); got != `{"state":"confirmed","deleted":false}` {
		t.Errorf("affinity = %s", got)
	}
	if got := e.get("/calico/ipam/v2/handle/cp-net.c0ffee0001"); got != `{"block":{"10.65.192.128/26":1},"deleted":false}` {
		t.Errorf("handle = %s", got)
	}
	created := blockAt(t, e, "/calico/ipam/v2/assignment/ipv4/block/10.65.192.128-26")
	if _, err := e.ipam.ReleaseByHandle(e.ctx, "cp-net.c0ffee0002"); err != nil {
		t.Fatal(err)
	}
	if e.exists("/calico/ipam/v2/handle/cp-net.c0ffee0002") {
		t.Error("released handle still exists")
	}
	raw := e.get("/calico/ipam/v2/assignment/ipv4/block/10.65.192.128-26")
	b := blockAt(t, e, "/calico/ipam/v2/assignment/ipv4/block/10.65.192.128-26")
	if !strings.HasPrefix(raw, `{"cidr":"10.65.192.128/26","affinity":"host:h1","affinity_claim_time":"`) ||
		!strings.Contains(raw, `"allocations":[0,null,null,`) ||
		!strings.Contains(raw, `"unallocated":[2,3,4,`) || !strings.Contains(raw, `61,62,63,1],"attributes":[{"handle_id":"cp-net.c0ffee0001","secondary":{"namespace":"default","node":"h1","pod":"w1","timestamp":"`) ||
		!strings.HasSuffix(raw, `},"deleted":false}`) {
		t.Errorf("block after release does not have Calico's shape:\n%s", raw)
	}
	// Created at seq S; allocation 0 stamped S; three writes since.
	if b.SequenceNumber != created.SequenceNumber+1 || b.seqFor(0) != created.seqFor(0) || len(b.SequenceNumberForAllocation) != 1 {
		t.Errorf("sequence numbers: %d (was %d), per allocation %v", b.SequenceNumber, created.SequenceNumber, b.SequenceNumberForAllocation)
	}
	if b.seqFor(0)+3 != b.SequenceNumber {
		t.Errorf("sequenceNumber %d, allocation 0 at %d: want 3 writes apart", b.SequenceNumber, b.seqFor(0))
	}
	if b.claimTime().IsZero() {
		t.Error("no affinity_claim_time")
	}
	auditBlocks(e.ctx, t, e.be)
}

func blockAt(t *testing.T, e *testEnv, key string) *block {
	t.Helper()
	b, err := decodeBlock(key, []byte(e.get(key)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A second AutoAssign with the same handle returns the same addresses, for
// both families; nothing more is allocated.
func TestAutoAssignIdempotentDualStack(t *testing.T) {
	e := newTestEnv(t)
	e.pool("v4", "10.66.0.0/16", 26)
	e.pool("v6", "fd00:66::/48", 122)
	first := e.assign("net.c1", "n1", 2, 1)
	if len(first.IPv4) != 2 || len(first.IPv6) != 1 || first.IPv6[0].Bits() != 122 {
		t.Fatalf("got %v", first)
	}
	again := e.assign("net.c1", "n1", 2, 1)
	if !equalPrefixes(first.IPv4, again.IPv4) || !equalPrefixes(first.IPv6, again.IPv6) {
		t.Errorf("retry gave %v, first %v", again, first)
	}
	// A fresh client (a new CNI process) too.
	other := New(e.be, Options{})
	third, err := other.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "net.c1", Node: "n1", Num4: 2, Num6: 1})
	if err != nil || !equalPrefixes(first.IPv4, third.IPv4) || !equalPrefixes(first.IPv6, third.IPv6) {
		t.Errorf("fresh client gave %v, %v", third, err)
	}
	// Asking for one more IPv4 adds exactly one.
	more := e.assign("net.c1", "n1", 3, 1)
	if len(more.IPv4) != 3 || !equalPrefixes(more.IPv4[:2], first.IPv4) {
		t.Errorf("growing gave %v", more.IPv4)
	}
	held := auditBlocks(e.ctx, t, e.be)
	if len(held) != 4 {
		t.Errorf("%d addresses held, want 4", len(held))
	}
	blk := netip.PrefixFrom(first.IPv6[0].Addr(), 122).Masked()
	if !e.exists("/calico/ipam/v2/assignment/ipv6/block/"+cidrSegment(blk)) || !e.exists("/calico/ipam/v2/host/n1/ipv6/block/"+cidrSegment(blk)) {
		t.Error("IPv6 block or affinity not under an ipv6 key")
	}
	got, err := e.ipam.IPsByHandle(e.ctx, "net.c1")
	if err != nil || len(got) != 4 {
		t.Errorf("IPsByHandle = %v, %v", got, err)
	}
	rel, err := e.ipam.ReleaseByHandle(e.ctx, "net.c1")
	if err != nil || len(rel) != 4 {
		t.Errorf("ReleaseByHandle = %v, %v", rel, err)
	}
	if _, err := e.ipam.IPsByHandle(e.ctx, "net.c1"); !errors.Is(err, ErrHandleNotFound) {
		t.Errorf("IPsByHandle after release: %v", err)
	}
	if len(auditBlocks(e.ctx, t, e.be)) != 0 {
		t.Error("addresses left after release")
	}
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Reserved CIDRs and the pool's first and last addresses are never handed
// out; a pool that runs out says so by name.
func TestReservationsEdgesAndExhaustion(t *testing.T) {
	e := newTestEnv(t)
	e.pool("tiny", "10.70.0.0/28", 28)
	e.reservation("keep", "10.70.0.4/30", "10.70.0.9")
	got := map[netip.Addr]bool{}
	for i := 0; i < 9; i++ {
		as := e.assign("h"+string(rune('a'+i)), "n1", 1, 0)
		got[as.IPv4[0].Addr()] = true
	}
	for _, bad := range []string{"10.70.0.0", "10.70.0.15", "10.70.0.4", "10.70.0.5", "10.70.0.6", "10.70.0.7", "10.70.0.9"} {
		if got[netip.MustParseAddr(bad)] {
			t.Errorf("%s was handed out", bad)
		}
	}
	_, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "hz", Node: "n1", Num4: 1})
	if !errors.Is(err, ErrNoFreeAddresses) || !strings.Contains(err.Error(), "tiny (10.70.0.0/28)") {
		t.Errorf("exhausted pool: %v", err)
	}
	if err := e.ipam.AssignIP(e.ctx, AssignIPArgs{IP: netip.MustParseAddr("10.70.0.5"), HandleID: "hx", Node: "n1"}); err == nil {
		t.Error("AssignIP of a reserved address succeeded")
	}
}

// A disabled pool hands out nothing new; what it handed out stays valid
// and can be released.
func TestDisabledPool(t *testing.T) {
	e := newTestEnv(t)
	p := e.pool("p1", "10.71.0.0/24", 26)
	as := e.assign("h1", "n1", 1, 0)
	p.Spec.Disabled = true
	if _, err := e.c.Update(e.ctx, p); err != nil {
		t.Fatal(err)
	}
	_, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "h2", Node: "n1", Num4: 1})
	if !errors.Is(err, ErrNoPools) || !strings.Contains(err.Error(), "p1 (10.71.0.0/24) is disabled") {
		t.Errorf("AutoAssign with the pool disabled: %v", err)
	}
	if err := e.ipam.AssignIP(e.ctx, AssignIPArgs{IP: netip.MustParseAddr("10.71.0.200"), HandleID: "h3", Node: "n1"}); !errors.Is(err, ErrNotInPool) {
		t.Errorf("AssignIP in a disabled pool: %v", err)
	}
	info, err := e.ipam.Lookup(e.ctx, as.IPv4[0].Addr())
	if err != nil || info == nil || info.Handle != "h1" {
		t.Errorf("existing allocation: %+v %v", info, err)
	}
	if un, err := e.ipam.ReleaseIPs(e.ctx, ReleaseOptions{Address: as.IPv4[0].Addr()}); err != nil || len(un) != 0 {
		t.Errorf("release: %v %v", un, err)
	}
}

// With strictAffinity a node never borrows: once every block is someone
// else's, it gets an error naming the pool. Without it, it borrows single
// addresses and the blocks keep their owners.
func TestStrictAffinityNeverBorrows(t *testing.T) {
	e := newTestEnv(t)
	e.pool("small", "10.72.0.0/26", 28) // 4 blocks
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		e.assign("h-"+n, n, 1, 0)
	}
	if _, err := e.ipam.UpdateConfig(e.ctx, func(c *Config) { c.StrictAffinity = true }); err != nil {
		t.Fatal(err)
	}
	_, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "h-n5", Node: "n5", Num4: 1})
	want := "no free addresses in pool small (10.72.0.0/26): all 4 blocks are claimed by other nodes and strict affinity forbids borrowing"
	if err == nil || err.Error() != want {
		t.Errorf("strict: got %v\nwant %s", err, want)
	}
	if len(auditBlocks(e.ctx, t, e.be)) != 4 {
		t.Error("strict affinity allocated something")
	}
	// n1 fills its own block, then cannot go further.
	filled := 0
	for ; filled < 20; filled++ {
		if _, err = e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "fill" + string(rune('a'+filled)), Node: "n1", Num4: 1}); err != nil {
			break
		}
	}
	if filled < 14 || filled > 15 || !errors.Is(err, ErrNoFreeAddresses) || !strings.Contains(err.Error(), "strict affinity forbids borrowing") {
		t.Errorf("full node under strict affinity, after %d more: %v", filled, err)
	}

	if _, err := e.ipam.UpdateConfig(e.ctx, func(c *Config) { c.StrictAffinity = false }); err != nil {
		t.Fatal(err)
	}
	as := e.assign("h-n5", "n5", 1, 0)
	info, err := e.ipam.Lookup(e.ctx, as.IPv4[0].Addr())
	if err != nil || info.BlockNode == "n5" || info.BlockNode == "" || info.Attrs[AttrNode] != "n5" {
		t.Errorf("borrowed address: %+v %v", info, err)
	}
	if e.exists("/calico/ipam/v2/host/n5/ipv4/block/" + cidrSegment(info.Block)) {
		t.Error("borrowing created an affinity")
	}
}

// maxBlocksPerHost caps claims; with strict affinity the node then fails.
func TestMaxBlocksPerHost(t *testing.T) {
	e := newTestEnv(t)
	e.pool("p", "10.73.0.0/24", 29)
	if _, err := e.ipam.UpdateConfig(e.ctx, func(c *Config) { c.StrictAffinity = true; c.MaxBlocksPerHost = 2 }); err != nil {
		t.Fatal(err)
	}
	if got := e.get(configKey); got != `{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":2,"kubeVirtVMAddressPersistence":"Enabled"}` {
		t.Errorf("config = %s", got)
	}
	n := 0
	var err error
	for ; n < 40; n++ {
		if _, err = e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "h" + string(rune('A'+n)), Node: "n1", Num4: 1}); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrNoFreeAddresses) || !strings.Contains(err.Error(), "maxBlocksPerHost (2)") {
		t.Errorf("after %d: %v", n, err)
	}
	kvs, _, _ := e.be.List(e.ctx, affinityPrefix("n1", 4))
	if len(kvs) != 2 || n > 16 {
		t.Errorf("%d affinities, %d addresses", len(kvs), n)
	}
}

// A pool's nodeSelector picks the nodes that may use it, unless the caller
// names the pool.
func TestNodeSelector(t *testing.T) {
	e := newTestEnv(t)
	e.pool("rack1", "10.74.0.0/24", 26, func(p *v3.IPPool) { p.Spec.NodeSelector = "rack == 'r1'" })
	e.node("a", map[string]string{"rack": "r1"})
	e.node("b", map[string]string{"rack": "r2"})
	if as := e.assign("ha", "a", 1, 0); len(as.IPv4) != 1 {
		t.Fatal("node a got nothing")
	}
	_, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "hb", Node: "b", Num4: 1})
	if !errors.Is(err, ErrNoPools) || !strings.Contains(err.Error(), `nodeSelector "rack == \"r1\"" does not match node b`) {
		t.Errorf("node b: %v", err)
	}
	if _, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "hb", Node: "b", Num4: 1, IPv4Pools: []netip.Prefix{netip.MustParsePrefix("10.74.0.0/24")}}); err != nil {
		t.Errorf("node b naming the pool: %v", err)
	}
}

func TestAssignIP(t *testing.T) {
	e := newTestEnv(t)
	e.pool("p", "10.75.0.0/16", 26)
	ip := netip.MustParseAddr("10.75.3.7")
	if err := e.ipam.AssignIP(e.ctx, AssignIPArgs{IP: ip, HandleID: "h1", Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := e.ipam.AssignIP(e.ctx, AssignIPArgs{IP: ip, HandleID: "h1", Node: "n1"}); err != nil {
		t.Errorf("same handle again: %v", err)
	}
	if err := e.ipam.AssignIP(e.ctx, AssignIPArgs{IP: ip, HandleID: "h2", Node: "n1"}); !errors.Is(err, ErrAlreadyAssigned) {
		t.Errorf("other handle: %v", err)
	}
	if !e.exists("/calico/ipam/v2/host/n1/ipv4/block/10.75.3.0-26") {
		t.Error("AssignIP did not claim the block for the node")
	}
	if err := e.ipam.AssignIP(e.ctx, AssignIPArgs{IP: netip.MustParseAddr("10.76.0.1"), HandleID: "h3"}); !errors.Is(err, ErrNotInPool) {
		t.Errorf("outside pools: %v", err)
	}
	un, err := e.ipam.ReleaseIPs(e.ctx, ReleaseOptions{Address: ip, Handle: "other"})
	if !errors.Is(err, ErrMismatch) {
		t.Errorf("release with the wrong handle: %v %v", un, err)
	}
	un, err = e.ipam.ReleaseIPs(e.ctx, ReleaseOptions{Address: ip, Handle: "h1"}, ReleaseOptions{Address: netip.MustParseAddr("10.75.3.8")})
	if err != nil || len(un) != 1 || un[0].String() != "10.75.3.8" {
		t.Errorf("release: %v %v", un, err)
	}
	auditBlocks(e.ctx, t, e.be)
}

// A node leaving: its empty blocks go, its non-empty blocks lose their
// affinity and keep their addresses.
func TestReleaseAffinity(t *testing.T) {
	e := newTestEnv(t)
	e.pool("p", "10.77.0.0/24", 29)
	var hs []*Assignment
	for i := 0; i < 8; i++ { // 8-address blocks: two blocks (the pool's first address is skipped)
		hs = append(hs, e.assign("h"+string(rune('a'+i)), "gone", 1, 0))
	}
	blocks, _ := e.ipam.listBlocks(e.ctx, 4)
	if len(blocks) != 2 {
		t.Fatalf("%d blocks", len(blocks))
	}
	// Empty the second block.
	last := hs[7].IPv4[0]
	if _, err := e.ipam.ReleaseIPs(e.ctx, ReleaseOptions{Address: last.Addr()}); err != nil {
		t.Fatal(err)
	}
	if err := e.ipam.ReleaseAffinity(e.ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if kvs, _, _ := e.be.List(e.ctx, affinityPrefix("gone", 0)); len(kvs) != 0 {
		t.Errorf("%d affinities left", len(kvs))
	}
	blocks, _ = e.ipam.listBlocks(e.ctx, 4)
	if len(blocks) != 1 {
		t.Fatalf("%d blocks left, want the non-empty one", len(blocks))
	}
	for _, info := range blocks {
		if info.block().Affinity != nil || info.block().AffinityClaimTime != nil || info.block().inUse() != 7 {
			t.Errorf("kept block: affinity %v, %d in use", info.block().Affinity, info.block().inUse())
		}
	}
	// Its addresses are still held and releasable; the emptied unaffine
	// block is then deleted, as Calico does.
	for _, h := range hs[:7] {
		if _, err := e.ipam.ReleaseIPs(e.ctx, ReleaseOptions{Address: h.IPv4[0].Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	if blocks, _ = e.ipam.listBlocks(e.ctx, 4); len(blocks) != 0 {
		t.Errorf("%d blocks left after releasing everything", len(blocks))
	}
}

// The states a crash can leave are finished by the next claim or repaired
// by check.
func TestCrashLeftovers(t *testing.T) {
	e := newTestEnv(t)
	e.pool("cp-pool1", "10.65.0.0/16", 26)
	e.node("h1", nil)
	e.node("h2", nil)
	first := netip.MustParsePrefix("10.65.192.128/26")

	// 1. Crash after the pending affinity, before the block: h1's next
	// claim walks to the same block and finishes it.
	e.put(affinityKey("h1", first), affinity{State: statePending})
	rep, err := e.ipam.Check(e.ctx)
	if err != nil || len(rep.AffinityProblems) != 1 || rep.AffinityProblems[0].State != statePending || rep.AffinityProblems[0].BlockExists {
		t.Fatalf("check of a pending affinity: %+v %v", rep, err)
	}
	as := e.assign("h1-a", "h1", 1, 0)
	if as.IPv4[0].String() != "10.65.192.128/26" {
		t.Errorf("claim after crash went to %v", as.IPv4)
	}
	if got := e.get(affinityKey("h1", first)); got != `{"state":"confirmed","deleted":false}` {
		t.Errorf("affinity = %s", got)
	}

	// 2. A block of h1 whose affinity was left pending (a claim by a
	// writer without transactions): the next allocation confirms it.
	e.put(affinityKey("h1", first), affinity{State: statePending})
	e.ipam = New(e.be, Options{})
	e.assign("h1-b", "h1", 1, 0)
	if got := e.get(affinityKey("h1", first)); got != `{"state":"confirmed","deleted":false}` {
		t.Errorf("affinity not confirmed: %s", got)
	}

	// 3. h2 lost a race for h1's block and crashed before deleting its
	// pending affinity; and a handle whose key is missing.
	e.put(affinityKey("h2", first), affinity{State: statePending})
	if _, err := e.be.Delete(e.ctx, handleKey("h1-b"), 0); err != nil {
		t.Fatal(err)
	}
	rep, err = e.ipam.Check(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.AffinityProblems) != 1 || rep.AffinityProblems[0].Node != "h2" || rep.AffinityProblems[0].BlockOwner != "h1" {
		t.Errorf("affinity problems: %+v", rep.AffinityProblems)
	}
	if len(rep.HandleProblems) != 1 || rep.HandleProblems[0].Handle != "h1-b" || rep.HandleProblems[0].Stored != nil {
		t.Errorf("handle problems: %+v", rep.HandleProblems)
	}
	if len(rep.Leaks) != 2 {
		t.Errorf("leaks: %+v", rep.Leaks)
	}
	// Young leaks survive the grace period; the rest is repaired.
	res, err := e.ipam.ReleaseLeaks(e.ctx, rep, time.Hour)
	if err != nil || res.SkippedYoung != 2 || res.FixedAffinities != 1 || res.FixedHandles != 1 || len(res.Errors) > 0 {
		t.Errorf("repair: %+v %v", res, err)
	}
	if e.exists(affinityKey("h2", first)) {
		t.Error("stale affinity of h2 not deleted")
	}
	if got := e.get(handleKey("h1-b")); got != `{"block":{"10.65.192.128/26":1},"deleted":false}` {
		t.Errorf("recreated handle = %s", got)
	}
	auditBlocks(e.ctx, t, e.be)

	// 4. Two hours later the leaks go; a workload's address does not.
	later := New(e.be, Options{Clock: func() time.Time { return time.Now().Add(2 * time.Hour) }})
	owned := e.assign("h1-c", "h1", 1, 0).IPv4[0].Addr()
	if err := e.wep("h1", "c", owned); err != nil {
		t.Fatal(err)
	}
	rep, _ = later.Check(e.ctx)
	res, err = later.ReleaseLeaks(e.ctx, rep, DefaultLeakGracePeriod)
	if err != nil || res.ReleasedIPs != 2 {
		t.Errorf("release old leaks: %+v %v", res, err)
	}
	rep, _ = later.Check(e.ctx)
	if rep.Problems() != 0 || rep.InUse != 1 {
		t.Errorf("after repair: %d problems, %d in use: %+v", rep.Problems(), rep.InUse, rep)
	}

	// 5. A node that no longer exists: its blocks are reported and let go.
	e.assign("h3-a", "h3", 1, 0)
	rep, _ = e.ipam.Check(e.ctx)
	if len(rep.OrphanBlocks) != 1 || rep.OrphanBlocks[0].Node != "h3" {
		t.Errorf("orphan blocks: %+v", rep.OrphanBlocks)
	}
	if res, err = e.ipam.ReleaseLeaks(e.ctx, rep, 0); err != nil || res.ReleasedNodes != 1 || res.ReleasedIPs != 1 {
		t.Errorf("release departed node: %+v %v", res, err)
	}
	if rep, _ = e.ipam.Check(e.ctx); rep.Problems() != 0 {
		t.Errorf("after releasing h3: %+v", rep)
	}
}

// An empty block another node claimed over a minute ago is taken over when
// no unclaimed block is left.
func TestReclaimEmptyBlock(t *testing.T) {
	e := newTestEnv(t)
	e.pool("p", "10.78.0.0/28", 28) // one block
	as := e.assign("h1", "n1", 1, 0)
	if _, err := e.ipam.ReleaseByHandle(e.ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ipam.UpdateConfig(e.ctx, func(c *Config) { c.StrictAffinity = true }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ipam.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "h2", Node: "n2", Num4: 1}); !errors.Is(err, ErrNoFreeAddresses) {
		t.Errorf("young empty block was taken: %v", err)
	}
	later := New(e.be, Options{Clock: func() time.Time { return time.Now().Add(2 * EmptyBlockMinReclaimAge) }})
	got, err := later.AutoAssign(e.ctx, AutoAssignArgs{HandleID: "h2", Node: "n2", Num4: 1})
	if err != nil || got.IPv4[0] != as.IPv4[0] {
		t.Fatalf("reclaim: %v %v", got, err)
	}
	if e.exists(affinityKey("n1", got.IPv4[0].Masked())) || !e.exists(affinityKey("n2", got.IPv4[0].Masked())) {
		t.Error("affinity did not move to n2")
	}
	var b block
	json.Unmarshal([]byte(e.get(blockKey(got.IPv4[0].Masked()))), &b)
	if b.Affinity == nil || *b.Affinity != "host:n2" {
		t.Errorf("block affinity %v", b.Affinity)
	}
}

// A Node's tunnel addresses (VXLAN, IP-in-IP, WireGuard) are in use, not
// leaks.
func TestCheckNodeTunnelAddresses(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(n *v3.Node, a string)
	}{
		{"VXLAN", func(n *v3.Node, a string) { n.Spec.IPv4VXLANTunnelAddr = a }},
		{"IP-in-IP", func(n *v3.Node, a string) { n.Spec.BGP = &v3.NodeBGPSpec{IPv4IPIPTunnelAddr: a} }},
		{"WireGuard", func(n *v3.Node, a string) { n.Spec.Wireguard = &v3.NodeWireguardSpec{InterfaceIPv4Address: a} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.pool("tn-pool", "10.66.0.0/16", 26)
			n := kindOf(v3.KindNode).NewObject().(*v3.Node)
			n.Name = "h1"
			tc.set(n, e.assign("tunnel-h1", "h1", 1, 0).IPv4[0].Addr().String())
			if _, err := e.c.Create(e.ctx, n); err != nil {
				t.Fatal(err)
			}
			later := New(e.be, Options{Clock: func() time.Time { return time.Now().Add(2 * time.Hour) }})
			rep, err := later.Check(e.ctx)
			if err != nil || rep.Problems() != 0 || rep.InUse != 1 {
				t.Errorf("%d problems, %d in use (%v): %+v", rep.Problems(), rep.InUse, err, rep)
			}
		})
	}
}
