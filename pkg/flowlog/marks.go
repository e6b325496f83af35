package flowlog

import (
	"fmt"
	"math/bits"
	"sync"
)

// A connection between two workloads of one host meets two programs: the
// client's egress and the server's ingress. Logging each decision on its
// own costs the kernel two NFLOG messages per connection. Instead, an
// egress program's Allow can write a number for its rule into a field of
// the packet mark, and the one message that follows carries both: the
// server's ingress decision (its prefix) and the client's egress decision
// (the mark, which NFLOG reports). When the packet does not go on to a
// local workload, one rule after the egress programs logs it with
// MarkedEgressID and clears the field.
//
// Marks numbers the identifiers. A number, once given, stays with its
// identifier for the life of the process, so rules compiled with it never
// go stale; when the field's numbers are all given, further identifiers
// get none and their rules log on their own as before (one message more,
// nothing lost).

// MarkedEgressID is the prefix of the rule that logs a packet whose
// egress decision is in the mark alone.
const MarkedEgressID = IDPrefix + "egress-mark"

// DefaultMarkMask is the packet mark field tortie-node numbers egress
// Allow rules in: 11 bits, 2,047 numbers, clear of the untracked policy
// bit (0x100000) and of kube-proxy's (0x4000, 0x8000).
const DefaultMarkMask uint32 = 0xffe00000

// Marks numbers identifiers within a mark field. Safe for concurrent use.
type Marks struct {
	mask  uint32
	shift int
	mu    sync.RWMutex
	num   map[string]uint32
	ids   []string // ids[n-1] has number n
}

// NewMarks numbers identifiers in the field mask, which must be one run
// of set bits.
func NewMarks(mask uint32) (*Marks, error) {
	shift := bits.TrailingZeros32(mask)
	if run := mask >> shift; mask == 0 || run&(run+1) != 0 {
		return nil, fmt.Errorf("flow mark mask %#x: want one run of set bits", mask)
	}
	return &Marks{mask: mask, shift: shift, num: map[string]uint32{}}, nil
}

// Mask is the field.
func (m *Marks) Mask() uint32 { return m.mask }

// Value is the mark field's value for id, numbering it if it has no number
// yet; false when the field is full.
func (m *Marks) Value(id string) (uint32, bool) {
	m.mu.RLock()
	n, ok := m.num[id]
	m.mu.RUnlock()
	if !ok {
		m.mu.Lock()
		if n, ok = m.num[id]; !ok {
			if uint32(len(m.ids)) >= m.mask>>m.shift {
				m.mu.Unlock()
				return 0, false
			}
			m.ids = append(m.ids, id)
			n = uint32(len(m.ids))
			m.num[id] = n
		}
		m.mu.Unlock()
	}
	return n << m.shift, true
}

// Len is how many identifiers have a number.
func (m *Marks) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.ids)
}

// Decisions are the identifiers one logged packet stands for, in the
// order the packet met them: the egress decision in the mark, if any,
// then the logging rule's own (none for MarkedEgressID). A mark whose
// field holds no number given is reported as ok false. They are appended
// to ids (pass a reused buffer, cut to 0). m may be nil (no numbering:
// the prefix alone).
func (m *Marks) Decisions(prefix string, mark uint32, ids []string) ([]string, bool) {
	start := len(ids)
	if m != nil {
		if n := (mark & m.mask) >> m.shift; n != 0 {
			m.mu.RLock()
			if int(n) <= len(m.ids) {
				ids = append(ids, m.ids[n-1])
			}
			m.mu.RUnlock()
			if len(ids) == start {
				return ids, false
			}
		}
	}
	if prefix != MarkedEgressID {
		ids = append(ids, prefix)
	}
	return ids, len(ids) > start
}
