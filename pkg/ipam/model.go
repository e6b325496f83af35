package ipam

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Keys under /calico/ipam/v2/, exactly as Calico's etcdv3 backend writes them
// (libcalico-go model BlockKey, BlockAffinityKey, IPAMHandleKey,
// IPAMConfigKey).
const (
	ipamPrefix       = "/calico/ipam/v2/"
	assignmentPrefix = ipamPrefix + "assignment/"
	hostPrefix       = ipamPrefix + "host/"
	handlePrefix     = ipamPrefix + "handle/"
	configKey        = ipamPrefix + "config"

	// affinityHostType is the affinity type of blocks claimed by nodes
	// ("virtual" exists in Calico for KubeVirt and is left alone here).
	affinityHostType = "host"
)

// Affinity states, as Calico spells them.
const (
	statePending         = "pending"
	stateConfirmed       = "confirmed"
	statePendingDeletion = "pendingDeletion"
)

// Attribute names Calico's CNI plugin and calico-node put in an allocation's
// secondary attributes.
const (
	AttrNode      = "node"
	AttrNamespace = "namespace"
	AttrPod       = "pod"
	AttrType      = "type"
	AttrTimestamp = "timestamp"
)

// timestampLayout is how Calico's CNI plugin writes the timestamp
// attribute: Go's time.Time.String() of a UTC time.
const timestampLayout = "2006-01-02 15:04:05.999999999 -0700 MST"

func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// cidrSegment is a CIDR as it appears in a key: "/" becomes "-".
func cidrSegment(p netip.Prefix) string {
	return strings.Replace(p.String(), "/", "-", 1)
}

func blockKey(p netip.Prefix) string {
	return fmt.Sprintf("%sipv%d/block/%s", assignmentPrefix, ipVersion(p.Addr()), cidrSegment(p))
}

func blockPrefix(version int) string {
	return fmt.Sprintf("%sipv%d/block/", assignmentPrefix, version)
}

func affinityKey(node string, p netip.Prefix) string {
	return fmt.Sprintf("%s%s/ipv%d/block/%s", hostPrefix, node, ipVersion(p.Addr()), cidrSegment(p))
}

func affinityPrefix(node string, version int) string {
	if version == 0 {
		return hostPrefix + node + "/"
	}
	return fmt.Sprintf("%s%s/ipv%d/block/", hostPrefix, node, version)
}

func handleKey(id string) string { return handlePrefix + id }

// parseBlockKey returns the CIDR a block key names.
func parseBlockKey(key string) (netip.Prefix, bool) {
	rest, ok := strings.CutPrefix(key, assignmentPrefix)
	if !ok {
		return netip.Prefix{}, false
	}
	i := strings.LastIndex(rest, "/block/")
	if i < 0 {
		return netip.Prefix{}, false
	}
	return parseCIDRSegment(rest[i+len("/block/"):])
}

// parseAffinityKey splits /calico/ipam/v2/host/<node>/ipv4/block/<cidr>.
func parseAffinityKey(key string) (node string, cidr netip.Prefix, ok bool) {
	rest, ok := strings.CutPrefix(key, hostPrefix)
	if !ok {
		return "", netip.Prefix{}, false
	}
	i := strings.LastIndex(rest, "/block/")
	if i < 0 {
		return "", netip.Prefix{}, false
	}
	head := rest[:i] // <node>/ipv4
	j := strings.LastIndex(head, "/")
	if j < 0 {
		return "", netip.Prefix{}, false
	}
	cidr, ok = parseCIDRSegment(rest[i+len("/block/"):])
	return head[:j], cidr, ok
}

func parseCIDRSegment(s string) (netip.Prefix, bool) {
	i := strings.LastIndex(s, "-")
	if i < 0 {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s[:i] + "/" + s[i+1:])
	if err != nil || p.Masked() != p {
		return netip.Prefix{}, false
	}
	return p, true
}

// block is model.AllocationBlock: field names, order and null-ness as
// Calico's Go encoding writes them.
type block struct {
	CIDR              string  `json:"cidr"`
	Affinity          *string `json:"affinity"`
	AffinityClaimTime *string `json:"affinity_claim_time,omitempty"`
	// Allocations[ordinal] is an index into Attributes, or nil when free.
	Allocations []*int `json:"allocations"`
	// Unallocated are the free ordinals, in the order they are handed out;
	// a released ordinal goes to the end.
	Unallocated    []int       `json:"unallocated"`
	Attributes     []attribute `json:"attributes"`
	SequenceNumber uint64      `json:"sequenceNumber"`
	// SequenceNumberForAllocation maps an allocated ordinal (as a decimal
	// string) to the block's sequence number when it was allocated.
	SequenceNumberForAllocation map[string]uint64 `json:"sequenceNumberForAllocation"`
	Deleted                     bool              `json:"deleted"`
	// HostAffinity is the pre-v3 spelling of Affinity, read for old data.
	HostAffinity *string `json:"hostAffinity,omitempty"`

	prefix netip.Prefix
}

type attribute struct {
	HandleID  *string           `json:"handle_id"`
	Secondary map[string]string `json:"secondary"`
}

// affinity is model.BlockAffinity.
type affinity struct {
	State   string `json:"state"`
	Deleted bool   `json:"deleted"`
}

// handle is model.IPAMHandle: how many addresses the handle holds per block.
type handle struct {
	Block   map[string]int `json:"block"`
	Deleted bool           `json:"deleted"`
}

// storedConfig is model.IPAMConfig as stored at /calico/ipam/v2/config.
type storedConfig struct {
	StrictAffinity               bool   `json:"strict_affinity,omitempty"`
	AutoAllocateBlocks           bool   `json:"auto_allocate_blocks,omitempty"`
	MaxBlocksPerHost             int    `json:"maxBlocksPerHost,omitempty"`
	KubeVirtVMAddressPersistence string `json:"kubeVirtVMAddressPersistence,omitempty"`
}

// Config is the cluster-wide IPAM configuration.
type Config struct {
	// StrictAffinity forbids borrowing addresses from blocks affine to other
	// nodes.
	StrictAffinity bool
	// AutoAllocateBlocks lets nodes claim new blocks (Calico's default: true).
	AutoAllocateBlocks bool
	// MaxBlocksPerHost caps the blocks one node may claim per IP version; 0
	// means no limit.
	MaxBlocksPerHost int
	// KubeVirtVMAddressPersistence is carried through unchanged.
	KubeVirtVMAddressPersistence string
}

// DefaultConfig is what applies when /calico/ipam/v2/config does not exist.
func DefaultConfig() Config {
	return Config{AutoAllocateBlocks: true, KubeVirtVMAddressPersistence: "Enabled"}
}

func newBlock(p netip.Prefix, node string, now time.Time) *block {
	n := blockAddrs(p)
	b := &block{
		CIDR:                        p.String(),
		Allocations:                 make([]*int, n),
		Unallocated:                 make([]int, n),
		SequenceNumber:              uint64(now.UnixNano()),
		SequenceNumberForAllocation: map[string]uint64{},
		prefix:                      p,
	}
	for i := range b.Unallocated {
		b.Unallocated[i] = i
	}
	if node != "" {
		aff := affinityHostType + ":" + node
		t := now.UTC().Format(time.RFC3339)
		b.Affinity, b.AffinityClaimTime = &aff, &t
	}
	return b
}

func decodeBlock(key string, value []byte) (*block, error) {
	var b block
	if err := json.Unmarshal(value, &b); err != nil {
		return nil, fmt.Errorf("IPAM block %s: %w", key, err)
	}
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("IPAM block %s: bad cidr: %w", key, err)
	}
	b.prefix = p.Masked()
	if b.Affinity == nil && b.HostAffinity != nil {
		aff := affinityHostType + ":" + *b.HostAffinity
		b.Affinity, b.HostAffinity = &aff, nil
	}
	n := blockAddrs(b.prefix)
	if len(b.Allocations) != n {
		return nil, fmt.Errorf("IPAM block %s: %d allocation slots for %d addresses", key, len(b.Allocations), n)
	}
	for ord, idx := range b.Allocations {
		if idx != nil && (*idx < 0 || *idx >= len(b.Attributes)) {
			return nil, fmt.Errorf("IPAM block %s: ordinal %d refers to attribute %d of %d", key, ord, *idx, len(b.Attributes))
		}
	}
	return &b, nil
}

// clone copies what allocating and releasing change (they replace the
// *int entries of Allocations, never write through them).
func (b *block) clone() *block {
	c := *b
	c.Allocations = slices.Clone(b.Allocations)
	c.Unallocated = slices.Clone(b.Unallocated)
	c.Attributes = slices.Clone(b.Attributes)
	c.SequenceNumberForAllocation = maps.Clone(b.SequenceNumberForAllocation)
	return &c
}

func (b *block) encode() []byte {
	v, err := json.Marshal(b)
	if err != nil {
		panic(err) // only strings, ints and maps of them
	}
	return v
}

// host returns the node the block is affine to, or "".
func (b *block) host() string {
	if b.Affinity != nil {
		if h, ok := strings.CutPrefix(*b.Affinity, affinityHostType+":"); ok {
			return h
		}
	}
	return ""
}

func (b *block) claimTime() time.Time {
	if b.AffinityClaimTime == nil {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339, *b.AffinityClaimTime)
	return t
}

func (b *block) inUse() int {
	n := 0
	for _, a := range b.Allocations {
		if a != nil {
			n++
		}
	}
	return n
}

func (b *block) empty() bool { return b.inUse() == 0 }

func (b *block) addr(ord int) netip.Addr { return addrAdd(b.prefix.Addr(), uint64(ord)) }

func (b *block) ordinal(a netip.Addr) (int, bool) {
	if !b.prefix.Contains(a) {
		return 0, false
	}
	return int(addrDiff(a, b.prefix.Addr())), true
}

// handleOf returns the handle of an allocated ordinal ("" if none).
func (b *block) handleOf(ord int) string {
	idx := b.Allocations[ord]
	if idx == nil || b.Attributes[*idx].HandleID == nil {
		return ""
	}
	return sanitizeHandle(*b.Attributes[*idx].HandleID)
}

// sanitizeHandle drops the "\r..." tail some old host-local migrations left
// in handle IDs, as Calico does.
func sanitizeHandle(h string) string {
	h, _, _ = strings.Cut(h, "\r")
	return h
}

// attributeIndex finds an identical attribute or appends one.
func (b *block) attributeIndex(handleID string, attrs map[string]string) int {
	for i, a := range b.Attributes {
		if a.HandleID != nil && *a.HandleID == handleID && mapsEqual(a.Secondary, attrs) {
			return i
		}
	}
	h := handleID
	b.Attributes = append(b.Attributes, attribute{HandleID: &h, Secondary: attrs})
	return len(b.Attributes) - 1
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// take allocates up to num free ordinals that usable accepts, in the order
// of Unallocated, keeping the order of the rest. It returns the addresses.
func (b *block) take(num int, handleID string, attrs map[string]string, usable func(netip.Addr) bool) []netip.Addr {
	var got []netip.Addr
	kept := b.Unallocated[:0:0]
	idx := -1
	for i, ord := range b.Unallocated {
		if len(got) == num {
			kept = append(kept, b.Unallocated[i:]...)
			break
		}
		a := b.addr(ord)
		if !usable(a) {
			kept = append(kept, ord)
			continue
		}
		if idx < 0 {
			idx = b.attributeIndex(handleID, attrs)
		}
		v := idx
		b.Allocations[ord] = &v
		b.SequenceNumberForAllocation[strconv.Itoa(ord)] = b.SequenceNumber
		got = append(got, a)
	}
	b.Unallocated = kept
	return got
}

// free counts free ordinals that usable accepts.
func (b *block) free(usable func(netip.Addr) bool) int {
	n := 0
	for _, ord := range b.Unallocated {
		if usable(b.addr(ord)) {
			n++
		}
	}
	return n
}

// assign allocates one specific ordinal.
func (b *block) assign(ord int, handleID string, attrs map[string]string) {
	idx := b.attributeIndex(handleID, attrs)
	b.Allocations[ord] = &idx
	b.SequenceNumberForAllocation[strconv.Itoa(ord)] = b.SequenceNumber
	for i, o := range b.Unallocated {
		if o == ord {
			b.Unallocated = append(b.Unallocated[:i], b.Unallocated[i+1:]...)
			break
		}
	}
}

func (b *block) seqFor(ord int) uint64 { return b.SequenceNumberForAllocation[strconv.Itoa(ord)] }

// release frees ordinals (which must be allocated): their attributes go
// when no other allocation refers to them, the ordinals go to the end of
// Unallocated in the order given, as Calico does.
func (b *block) release(ords []int) {
	refs := map[int]int{}
	for _, a := range b.Allocations {
		if a != nil {
			refs[*a]++
		}
	}
	gone := map[int]int{}
	for _, o := range ords {
		gone[*b.Allocations[o]]++
	}
	var del []int
	for idx, n := range gone {
		if refs[idx] == n {
			del = append(del, idx)
		}
	}
	for _, o := range ords {
		b.Allocations[o] = nil
		b.Unallocated = append(b.Unallocated, o)
		delete(b.SequenceNumberForAllocation, strconv.Itoa(o))
	}
	if len(del) == 0 {
		return
	}
	// Renumber the remaining attributes (Calico writes [] rather than null
	// once attributes have been removed).
	newIdx := make([]int, len(b.Attributes))
	kept := []attribute{}
	for i, a := range b.Attributes {
		newIdx[i] = -1
		if !containsInt(del, i) {
			newIdx[i] = len(kept)
			kept = append(kept, a)
		}
	}
	b.Attributes = kept
	for o, a := range b.Allocations {
		if a != nil {
			v := newIdx[*a]
			b.Allocations[o] = &v
		}
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// blockAddrs is the number of addresses in a block (blocks are at most
// 2^12 addresses: Calico's smallest block sizes are /20 and /116).
func blockAddrs(p netip.Prefix) int {
	return 1 << (p.Addr().BitLen() - p.Bits())
}

func addrAdd(a netip.Addr, n uint64) netip.Addr {
	b := a.As16()
	carry := n
	for i := 15; i >= 0 && carry > 0; i-- {
		s := uint64(b[i]) + carry&0xff
		b[i] = byte(s)
		carry = carry>>8 + s>>8
	}
	r := netip.AddrFrom16(b)
	if a.Is4() {
		return r.Unmap()
	}
	return r
}

// addrDiff is a-base for addresses less than 2^64 apart.
func addrDiff(a, base netip.Addr) uint64 {
	x, y := a.As16(), base.As16()
	var d uint64
	var borrow int
	var out [16]byte
	for i := 15; i >= 0; i-- {
		v := int(x[i]) - int(y[i]) - borrow
		borrow = 0
		if v < 0 {
			v += 256
			borrow = 1
		}
		out[i] = byte(v)
	}
	for i := 8; i < 16; i++ {
		d = d<<8 | uint64(out[i])
	}
	return d
}
