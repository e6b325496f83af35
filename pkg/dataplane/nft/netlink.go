package nft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Netlink writes the driver's incremental transactions straight to the
// kernel over one long-lived nfnetlink socket, as the same expressions nft
// would send (nlencode.go), but without running nft. What that saves is
// nft's cache: before any transaction that names the table, nft dumps every
// chain and set of it (and the elements of the sets it touches), which with
// a program of 10,000 rules is 20–45 ms of the 25–50 ms a one-rule change
// costs through nft. Over netlink the same change is the kernel's commit
// alone.
//
// The driver uses it only for incremental syncs (the table exists and the
// driver knows what it holds) whose every operation has a netlink form: new
// chains, rules, flushes and deletions of chains, sets and maps created and
// deleted, elements added or deleted (in messages of at most
// elemsPerMessage, as nft splits them). Creating a base chain, rule text
// the encoder does not know, and full syncs go through nft, so a gap in the
// encoder costs speed, never correctness.
type Netlink struct {
	opts []nftables.ConnOption

	mu   sync.Mutex
	conn *nftables.Conn
	// sock is conn's socket (set when it is dialled): each transaction
	// gets a deadline, so a kernel that never answers cannot hang the
	// agent.
	sock      *netlink.Conn
	onRun     func(time.Duration, error)
	onNotEnco func(error)
}

// NewNetlink opens the socket (nftables.WithNetNSFd selects a network
// namespace; the default is the caller's).
func NewNetlink(opts ...nftables.ConnOption) (*Netlink, error) {
	n := &Netlink{}
	n.opts = append(slices.Clone(opts), nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		n.sock = c
		return bigBuffers(c)
	}))
	c, err := nftables.New(n.opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	n.conn = c
	return n, nil
}

// The kernel acknowledges every message of a batch at once; acks that do
// not fit the socket's receive buffer are lost (ENOBUFS). The default
// buffer (rmem_default, about 200 KiB) holds a few hundred; 4 MiB holds
// more than maxDirectMessages with room to spare.
const receiveBuffer = 4 << 20

// sendBuffer bounds one batch, which goes to the kernel in one sendmsg:
// the default (wmem_default, about 200 KiB) is a few thousand elements;
// 64 MiB is some hundred thousand, more than a table of this driver holds.
// The kernel allocates what a batch needs, not the bound.
const sendBuffer = 64 << 20

// flushTimeout bounds one transaction over netlink.
const flushTimeout = 10 * time.Second

// bigBuffers sets the socket's receive and send buffers to receiveBuffer
// and sendBuffer, past rmem_max and wmem_max when the process may
// (CAP_NET_ADMIN, which nftables needs anyway).
func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	set := func(fd int, force, plain, size int) {
		if serr != nil {
			return
		}
		if serr = unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size); serr != nil {
			serr = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
		}
	}
	if err := raw.Control(func(fd uintptr) {
		set(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, receiveBuffer)
		set(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, sendBuffer)
	}); err != nil {
		return err
	}
	return serr
}

// SetObserver sets what is called after each transaction written over
// netlink (its duration and error) and for each one that went to nft
// because an operation had no netlink form. Either may be nil.
func (n *Netlink) SetObserver(run func(time.Duration, error), notEncodable func(error)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onRun, n.onNotEnco = run, notEncodable
}

// Close closes the socket.
func (n *Netlink) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		return nil
	}
	err := n.conn.CloseLasting()
	n.conn = nil
	return err
}

func (n *Netlink) observe(d time.Duration, err error) {
	if n.onRun != nil {
		n.onRun(d, err)
	}
}

func (n *Netlink) notEncodable(err error) {
	if n.onNotEnco != nil {
		n.onNotEnco(err)
	}
}

// SetNetlink makes the driver write incremental transactions over n (nil:
// everything through nft).
func (d *Driver) SetNetlink(n *Netlink) { d.nl = n }

// nlStep is one operation in its netlink form.
type nlStep struct {
	kind  opKind
	name  string
	rule  *nlRule
	udata []byte
	set   *nftables.Set
	elems []nftables.SetElement
}

// encodeOps turns operations into netlink steps, touching nothing: an
// error (wrapping errNotEncodable) means the transaction is nft's.
// Consecutive element additions (or deletions) in one set become one step.
func encodeOps(tbl *nftables.Table, ops []op) ([]nlStep, error) {
	steps := make([]nlStep, 0, len(ops))
	for i := range ops {
		o := &ops[i]
		s := nlStep{kind: o.kind, name: o.name}
		switch o.kind {
		case opAddTable:
			continue // the table exists: the sync is incremental
		case opAddSet:
			ks, err := kernelSet(tbl, o.name, o.set.setShape)
			if err != nil {
				return nil, notEncodableErr(err)
			}
			ks.Comment = o.set.comment
			s.set = ks
		case opAddChain:
			if o.chain.base != nil {
				return nil, fmt.Errorf("%w: creating base chain %s", errNotEncodable, o.name)
			}
		case opAddRule:
			r, err := encodeRule(tbl, o.rule.text)
			if err != nil {
				return nil, notEncodableErr(err)
			}
			s.rule, s.udata = r, ruleUserData(o.rule.comment)
		case opAddElem, opDelElem, opFlushSet, opDelSet:
			ks, err := kernelSet(tbl, o.name, o.set.setShape)
			if err != nil {
				return nil, notEncodableErr(err)
			}
			s.set = ks
			if o.kind == opAddElem || o.kind == opDelElem {
				els, err := encodeElem(o.set.setShape, o.elem)
				if err != nil {
					return nil, notEncodableErr(err)
				}
				if n := len(steps); n > 0 && steps[n-1].kind == o.kind && steps[n-1].name == o.name {
					steps[n-1].elems = append(steps[n-1].elems, els...)
					continue
				}
				s.elems = els
			}
		}
		steps = append(steps, s)
	}
	return steps, nil
}

func notEncodableErr(err error) error {
	if errors.Is(err, errNotEncodable) {
		return err
	}
	return fmt.Errorf("%w: %v", errNotEncodable, err)
}

// run writes ops as one transaction. It returns an error wrapping
// errNotEncodable, having sent nothing, when an operation has no netlink
// form, and ctx.Err(), having sent nothing, when ctx is done first.
//
// The batch goes to the kernel in one message, which it commits whole or
// not at all. ctx bounds the write: its deadline (if sooner than
// flushTimeout) is the socket's, and its cancellation interrupts the
// socket, so the batch is either not sent or sent whole, with its
// acknowledgements perhaps unread (an error: the driver's next sync is a
// full one and lists what the kernel has).
func (n *Netlink) run(ctx context.Context, table string, ops []op) error {
	// Every operation but an element's is a message of its own: when
	// those alone are too many, do not encode the transaction to find out
	// (a cost in time and memory for the biggest ones).
	own := 0
	for i := range ops {
		if ops[i].kind != opAddElem && ops[i].kind != opDelElem {
			own++
		}
	}
	if own > maxDirectMessages {
		return fmt.Errorf("%w: %d messages or more", errNotEncodable, own)
	}
	tbl := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	steps, err := encodeOps(tbl, ops)
	if err != nil {
		return err
	}
	if m := messages(steps); m > maxDirectMessages {
		return fmt.Errorf("%w: %d messages", errNotEncodable, m)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.conn == nil {
		c, err := nftables.New(n.opts...)
		if err != nil {
			return fmt.Errorf("nftables netlink socket: %w", err)
		}
		n.conn = c
	}
	err = n.queue(tbl, steps)
	if err == nil {
		err = n.flush(ctx)
	}
	if err != nil {
		// The connection may hold queued messages, a sticky encoding error
		// or unread acknowledgements: start the next one afresh.
		_ = n.conn.CloseLasting()
		n.conn, n.sock = nil, nil
	}
	return err
}

// flush sends the queued batch and reads its acknowledgements within
// ctx's deadline or flushTimeout, whichever is sooner; a ctx cancelled
// meanwhile interrupts it.
func (n *Netlink) flush(ctx context.Context) error {
	if n.sock == nil {
		return n.conn.Flush()
	}
	deadline := time.Now().Add(flushTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := n.sock.SetDeadline(deadline); err != nil {
		return err
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(interrupted)
		_ = n.sock.SetDeadline(time.Unix(1, 0)) // in the past: blocked I/O returns
	})
	err := n.conn.Flush()
	if !stop() {
		<-interrupted
		if err == nil {
			return nil // the kernel acknowledged the batch before ctx went
		}
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// maxDirectMessages bounds the transactions that go over netlink (each
// message is acknowledged: see receiveBuffer). Bigger ones (a cold start
// of thousands of programs) are nft's, which is as fast for them.
const maxDirectMessages = 4096

// elemsPerMessage is the most elements one message adds or deletes: the
// list of elements is one netlink attribute, whose length is 16 bits, and
// an element takes at most about 150 bytes (an interface name key and a
// verdict with a chain name; an IPv6 pair with its end).
const elemsPerMessage = 256

// chunks is how many messages n elements take.
func chunks(n int) int { return max(1, (n+elemsPerMessage-1)/elemsPerMessage) }

// messages is how many netlink messages steps make.
func messages(steps []nlStep) int {
	n := 0
	for _, s := range steps {
		switch {
		case s.kind == opAddElem || s.kind == opDelElem:
			n += chunks(len(s.elems))
		default:
			n++
		}
		if s.rule != nil {
			for _, a := range s.rule.anon {
				n += 1 + chunks(len(a.elems)) // the set and its elements
			}
		}
	}
	return n
}

// addAnonSets queues the anonymous sets of rule r, each with its first
// elements, the rest added to it (by its ID) before the rule binds it, as
// nft does, and points r's lookups at them.
func addAnonSets(c *nftables.Conn, r *nlRule) error {
	for _, a := range r.anon {
		first := a.elems[:min(len(a.elems), elemsPerMessage)]
		if err := c.AddSet(a.set, first); err != nil {
			return err
		}
		more := *a.set
		more.Anonymous = false // google/nftables adds elements only to sets it believes named
		if err := inChunks(a.elems[len(first):], func(es []nftables.SetElement) error { return c.SetAddElements(&more, es) }); err != nil {
			return err
		}
		a.lookup.SetID, a.lookup.SetName = a.set.ID, a.set.Name
	}
	return nil
}

// inChunks calls f with elems elemsPerMessage at a time.
func inChunks(elems []nftables.SetElement, f func([]nftables.SetElement) error) error {
	for len(elems) > 0 {
		n := min(len(elems), elemsPerMessage)
		if err := f(elems[:n]); err != nil {
			return err
		}
		elems = elems[n:]
	}
	return nil
}

func (n *Netlink) queue(tbl *nftables.Table, steps []nlStep) error {
	c := n.conn
	for _, s := range steps {
		switch s.kind {
		case opAddChain:
			c.AddChain(&nftables.Chain{Name: s.name, Table: tbl})
		case opFlushChain:
			c.FlushChain(&nftables.Chain{Name: s.name, Table: tbl})
		case opDelChain:
			c.DelChain(&nftables.Chain{Name: s.name, Table: tbl})
		case opAddSet:
			if err := c.AddSet(s.set, nil); err != nil {
				return fmt.Errorf("creating %s: %w", s.name, err)
			}
		case opAddRule:
			if err := addAnonSets(c, s.rule); err != nil {
				return fmt.Errorf("anonymous set of a rule in %s: %w", s.name, err)
			}
			c.AddRule(&nftables.Rule{Table: tbl, Chain: &nftables.Chain{Name: s.name, Table: tbl},
				Exprs: s.rule.exprs, UserData: s.udata})
		case opAddElem:
			if err := inChunks(s.elems, func(es []nftables.SetElement) error { return c.SetAddElements(s.set, es) }); err != nil {
				return fmt.Errorf("elements of %s: %w", s.name, err)
			}
		case opDelElem:
			if err := inChunks(s.elems, func(es []nftables.SetElement) error { return c.SetDeleteElements(s.set, es) }); err != nil {
				return fmt.Errorf("elements of %s: %w", s.name, err)
			}
		case opFlushSet:
			c.FlushSet(s.set)
		case opDelSet:
			c.DelSet(s.set)
		}
	}
	return nil
}
