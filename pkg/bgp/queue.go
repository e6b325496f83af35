package bgp

import "sync"

// eventQueue decouples GoBGP's watcher from the consumer of Routes(): pushes
// never block (the agent may be busy programming the kernel), nothing is
// dropped while the speaker runs, and order is kept. After close, pending
// events are dropped and out is closed, so a consumer that has stopped
// reading does not pin a goroutine.
type eventQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []RouteEvent
	closed bool
	done   chan struct{}
	out    chan RouteEvent
}

func newEventQueue() *eventQueue {
	q := &eventQueue{out: make(chan RouteEvent), done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

func (q *eventQueue) push(evs ...RouteEvent) {
	if len(evs) == 0 {
		return
	}
	q.mu.Lock()
	if !q.closed {
		q.items = append(q.items, evs...)
		q.cond.Signal()
	}
	q.mu.Unlock()
}

func (q *eventQueue) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.done)
		q.cond.Signal()
	}
	q.mu.Unlock()
}

func (q *eventQueue) run() {
	defer close(q.out)
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return
		}
		batch := q.items
		q.items = nil
		q.mu.Unlock()
		for _, ev := range batch {
			select {
			case q.out <- ev:
			case <-q.done:
				return
			}
		}
	}
}
