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
// buffer (rmem_default, about 200 KiB) holds a few hundred, 4 MiB about
// 4,000 (an ack takes about 1 KiB of it); 24 MiB holds maxDirectMessages
// with room to spare (TestKernelNetlinkMaxMessages). The kernel allocates
// the acks a batch makes, not the bound.
const receiveBuffer = 24 << 20

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
	// A step of elements: the operations (one set's, consecutive, of one
	// kind), their set's parsed type, and how many netlink elements they
	// make.
	ops      []op
	elemType setType
	count    int
}

// encodeOps turns operations into netlink steps, touching nothing: an
// error (wrapping errNotEncodable) means the transaction is nft's.
// Consecutive element additions (or deletions) in one set become one step.
// With baseWritten, the base chains ops creates are left out (written
// before, by nft); without, they make the transaction nft's.
func encodeOps(tbl *nftables.Table, ops []op, baseWritten bool) ([]nlStep, error) {
	steps := make([]nlStep, 0, len(ops))
	var scratch []nftables.SetElement
	for i := 0; i < len(ops); i++ {
		o := &ops[i]
		s := nlStep{kind: o.kind, name: o.name}
		switch o.kind {
		case opAddTable:
			continue // the table exists (run writes it with nft first when not)
		case opAddSet:
			ks, err := kernelSet(tbl, o.name, o.set.setShape)
			if err != nil {
				return nil, notEncodableErr(err)
			}
			ks.Comment = o.set.comment
			s.set = ks
		case opAddChain:
			if o.chain.base != nil && baseWritten {
				continue
			}
			if o.chain.base != nil {
				return nil, fmt.Errorf("%w: creating base chain %s", errNotEncodable, o.name)
			}
		case opAddRule:
			r, err := encodeRule(tbl, o.rule.text)
			if err != nil {
				return nil, notEncodableErr(err)
			}
			s.rule, s.udata = r, ruleUserData(o.rule.comment)
		case opAddElem, opDelElem:
			// A run of elements of one set is one step, which refers to
			// the run's operations: the elements are encoded here only to
			// check and count them, and again by queue, a message's worth
			// at a time (a cold start's 100,000 would otherwise be held
			// twice, as operations and as netlink elements).
			ks, err := kernelSet(tbl, o.name, o.set.setShape)
			if err != nil {
				return nil, notEncodableErr(err)
			}
			t, _ := parseSetType(o.set.typ, o.set.isMap) // kernelSet checked it
			j := i
			for ; j < len(ops) && ops[j].kind == o.kind && ops[j].name == o.name; j++ {
				if scratch, err = appendElem(scratch[:0], t, o.set.setShape, ops[j].elem); err != nil {
					return nil, notEncodableErr(err)
				}
				s.count += len(scratch)
			}
			s.set, s.elemType, s.ops = ks, t, ops[i:j]
			i = j - 1
		case opFlushSet, opDelSet:
			ks, err := kernelSet(tbl, o.name, o.set.setShape)
			if err != nil {
				return nil, notEncodableErr(err)
			}
			s.set = ks
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

// run writes ops as one transaction, but for the new sets of a big one
// (splitNewSets). It returns an error wrapping
// errNotEncodable, having sent nothing, when an operation has no netlink
// form, and ctx.Err(), having sent nothing, when ctx is done first.
//
// The batch goes to the kernel in one message, which it commits whole or
// not at all. ctx bounds the write: its deadline (if sooner than
// flushTimeout) is the socket's, and its cancellation interrupts the
// socket, so the batch is either not sent or sent whole, with its
// acknowledgements perhaps unread (an error: the driver's next sync is a
// full one and lists what the kernel has).
//
// writeBase, when not nil, writes the table and the base chains ops
// creates: they are left out of the batch, and writeBase is called once
// the rest is known to be encodable, before anything is sent. Its error
// is returned as is, with nothing sent.
func (n *Netlink) run(ctx context.Context, table string, ops []op, writeBase func() error) error {
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
	steps, err := encodeOps(tbl, ops, writeBase != nil)
	if err != nil {
		return err
	}
	if m := messages(steps); m > maxDirectMessages {
		return fmt.Errorf("%w: %d messages", errNotEncodable, m)
	}
	if writeBase != nil {
		if err := writeBase(); err != nil {
			return err
		}
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
	pre, steps := splitNewSets(steps)
	for _, batch := range append(pre, steps) {
		if err = n.queue(tbl, batch); err == nil {
			err = n.flush(ctx)
		}
		if err != nil {
			break
		}
	}
	if err != nil {
		// The connection may hold queued messages, a sticky encoding error
		// or unread acknowledgements: start the next one afresh.
		_ = n.conn.CloseLasting()
		n.conn, n.sock = nil, nil
	}
	return err
}

// preBatch is how many messages of new sets' elements make a transaction
// of their own ahead of the rest (splitNewSets), about 16,000 elements.
const preBatch = 64

// splitNewSets takes the sets the steps create (not maps), with their
// elements, out of the steps when those elements take preBatch messages or
// more, and groups them, whole sets, into transactions of about preBatch
// messages, to be written before the rest: no rule refers to a set before
// the transaction that creates the rule, so a set filled ahead changes no
// verdict. Each transaction is encoded and sent on its own, so a cold
// start's 100,000 elements are never all in memory as netlink messages at
// once (about 25 MB more at the agent's peak when they were, bench/policy). If one
// fails, the sets already written stay, unreferenced; the next sync is a
// full one, which lists them.
func splitNewSets(steps []nlStep) (pre [][]nlStep, rest []nlStep) {
	var created map[string]bool // most transactions create no set
	msgs := 0
	for _, s := range steps {
		switch {
		case s.kind == opAddSet && !s.set.IsMap:
			if created == nil {
				created = map[string]bool{}
			}
			created[s.name] = true
		case s.kind == opAddElem && created[s.name]:
			msgs += chunks(s.count)
		}
	}
	if msgs < preBatch {
		return nil, steps
	}
	bySet := map[string][]nlStep{}
	var order []string
	rest = make([]nlStep, 0, len(steps))
	for _, s := range steps {
		if (s.kind == opAddSet || s.kind == opAddElem) && created[s.name] {
			if bySet[s.name] == nil {
				order = append(order, s.name)
			}
			bySet[s.name] = append(bySet[s.name], s)
			continue
		}
		rest = append(rest, s)
	}
	var batch []nlStep
	for _, name := range order {
		batch = append(batch, bySet[name]...)
		if messages(batch) >= preBatch {
			pre, batch = append(pre, batch), nil
		}
	}
	if batch != nil {
		pre = append(pre, batch)
	}
	return pre, rest
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
// message is acknowledged: see receiveBuffer). Bigger ones are nft's. A
// cold start at bench/policy's 100,000 endpoints makes about 4,800: its
// rules and chains, and its set elements 256 to a message.
const maxDirectMessages = 16384

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
			n += chunks(s.count)
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

// sendElems encodes the elements of step s (checked by encodeOps) and
// hands them to send elemsPerMessage at a time, through buf, which it
// returns for the next step's use. A SetElement is some 200 bytes: buf
// grows to what the steps need, not to a message's worth for each (an
// incremental sync changes a few elements in each of many sets).
func sendElems(buf []nftables.SetElement, s nlStep, send func(*nftables.Set, []nftables.SetElement) error) ([]nftables.SetElement, error) {
	buf = buf[:0]
	if need := min(s.count, elemsPerMessage) + 1; cap(buf) < need { // an op makes at most 2
		buf = make([]nftables.SetElement, 0, need)
	}
	for i := range s.ops {
		var err error
		if buf, err = appendElem(buf, s.elemType, s.ops[i].set.setShape, s.ops[i].elem); err != nil {
			return buf, err
		}
		if len(buf) >= elemsPerMessage {
			if err := send(s.set, buf[:elemsPerMessage]); err != nil {
				return buf, err
			}
			buf = append(buf[:0], buf[elemsPerMessage:]...)
		}
	}
	if len(buf) > 0 {
		return buf, send(s.set, buf)
	}
	return buf, nil
}

func (n *Netlink) queue(tbl *nftables.Table, steps []nlStep) error {
	c := n.conn
	var buf []nftables.SetElement
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
		case opAddElem, opDelElem:
			send := c.SetAddElements
			if s.kind == opDelElem {
				send = c.SetDeleteElements
			}
			var err error
			if buf, err = sendElems(buf, s, send); err != nil {
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
