package flowlog

import (
	"sync"
)

// Hub keeps the most recent records in a ring of fixed size and passes
// every new one to its subscribers. Publishing never blocks: a subscriber
// that does not keep up loses records (counted in its Dropped), never
// slows the publisher or the other subscribers.
type Hub struct {
	mu    sync.Mutex
	ring  []Record
	next  int // where the next record goes
	full  bool
	total uint64
	subs  map[*Sub]struct{}
}

// NewHub returns a hub that keeps the last size records.
func NewHub(size int) *Hub {
	return &Hub{ring: make([]Record, max(size, 1)), subs: map[*Sub]struct{}{}}
}

// Sub is a subscription.
type Sub struct {
	c       chan Record
	h       *Hub
	dropped uint64
}

// C delivers the records published after Subscribe.
func (s *Sub) C() <-chan Record { return s.c }

// Dropped is how many records did not fit in the subscription's buffer.
func (s *Sub) Dropped() uint64 {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.dropped
}

// Close ends the subscription.
func (s *Sub) Close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	delete(s.h.subs, s)
}

// Subscribe starts a subscription with a buffer of buf records.
func (h *Hub) Subscribe(buf int) *Sub {
	s := &Sub{c: make(chan Record, max(buf, 1)), h: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s] = struct{}{}
	return s
}

// Publish adds records to the ring and offers each to every subscriber.
func (h *Hub) Publish(rs ...Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range rs {
		h.ring[h.next] = r
		h.next++
		h.total++
		if h.next == len(h.ring) {
			h.next, h.full = 0, true
		}
		for s := range h.subs {
			select {
			case s.c <- r:
			default:
				s.dropped++
			}
		}
	}
}

// Last returns up to n of the most recent records that f keeps, oldest
// first (n <= 0: all the ring holds).
func (h *Hub) Last(n int, f Filter) []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	size := h.next
	if h.full {
		size = len(h.ring)
	}
	var out []Record
	for i := 1; i <= size && (n <= 0 || len(out) < n); i++ {
		r := &h.ring[(h.next-i+len(h.ring))%len(h.ring)]
		if f.Match(r) {
			out = append(out, *r)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Stats are the hub's counts.
type Stats struct {
	Published   uint64 `json:"published"`
	Held        int    `json:"held"`
	Subscribers int    `json:"subscribers"`
}

// Stats returns the hub's counts.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	held := h.next
	if h.full {
		held = len(h.ring)
	}
	return Stats{Published: h.total, Held: held, Subscribers: len(h.subs)}
}
