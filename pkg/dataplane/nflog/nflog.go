// Package nflog reads packets that nftables `log group N` statements send
// to userspace over nfnetlink_log: it binds one group, asks for the
// packets (cut to a snap length) with their prefixes and sequence
// numbers, and hands them out as they come. It does I/O and nothing else.
package nflog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_log's protocol (linux/netfilter/nfnetlink_log.h).
const (
	subsysULOG    = 4
	msgPacket     = 0
	msgConfig     = 1
	cfgCmd        = 1
	cfgMode       = 2
	cfgNLBufSiz   = 3
	cfgTimeout    = 4
	cfgQThresh    = 5
	cfgFlags      = 6
	cmdBind       = 1
	copyPacket    = 2
	flagSeq       = 1
	attrPacketHdr = 1
	attrMark      = 2
	attrInDev     = 4
	attrOutDev    = 5
	attrPayload   = 9
	attrPrefix    = 10
	attrSeq       = 12
)

// Message is one logged packet.
type Message struct {
	// Prefix is the log statement's prefix.
	Prefix string
	// Payload is the packet from its network header on, cut to the snap
	// length.
	Payload []byte
	// Seq counts the group's messages from 0: a gap is messages the
	// kernel could not deliver (the socket's buffer was full).
	Seq uint32
	// Hook is the netfilter hook (NF_INET_*) the packet was logged in.
	Hook uint8
	// InDev and OutDev are interface indexes, 0 when none.
	InDev, OutDev uint32
	// Mark is the packet's mark when it was logged (0: none).
	Mark uint32
}

// Conn is a socket bound to one NFLOG group.
type Conn struct {
	c        *netlink.Conn
	raw      syscall.RawConn
	group    uint16
	prefixes map[string]string
	buf      []byte
	msgs     []Message
	closed   atomic.Bool
}

// Open binds group, asking for up to snaplen bytes of each packet, in
// the calling thread's network namespace. Only one socket can bind a
// group: a second is refused (EPERM, as without CAP_NET_ADMIN), which Open
// says plainly.
func Open(group uint16, snaplen uint32) (*Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nflog: netlink socket: %w", err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: %w", err)
	}
	// A batch (NFULA_CFG_NLBUFSIZ below) fits the buffer whole.
	nc := &Conn{c: c, raw: raw, group: group, prefixes: map[string]string{}, buf: make([]byte, 256<<10)}
	if err := nc.config(func(ae *netlink.AttributeEncoder) { ae.Bytes(cfgCmd, []byte{cmdBind}) }); err != nil {
		c.Close()
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("nflog: group %d is bound by another process (or this one lacks CAP_NET_ADMIN): %w", group, err)
		}
		return nil, fmt.Errorf("nflog: binding group %d: %w", group, err)
	}
	err = nc.config(func(ae *netlink.AttributeEncoder) {
		mode := binary.BigEndian.AppendUint32(nil, snaplen)
		ae.Bytes(cfgMode, append(mode, copyPacket, 0))
		ae.Uint16(cfgFlags, flagSeq)
		// Batched: the kernel sends when 256 messages wait, its buffer is
		// full, or 20 ms passed since the first (one wakeup and one read
		// for many connections, instead of one each).
		ae.Uint32(cfgQThresh, 256)
		ae.Uint32(cfgTimeout, 2)
		ae.Uint32(cfgNLBufSiz, 128<<10)
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nflog: configuring group %d: %w", group, err)
	}
	return nc, nil
}

func (c *Conn) config(attrs func(*netlink.AttributeEncoder)) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_UNSPEC, 0, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], c.group)
	_, err = c.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsysULOG<<8 | msgConfig), Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, b...),
	})
	return err
}

// SetReadBuffer sets the socket's receive buffer: what a burst can queue
// before the kernel drops messages.
func (c *Conn) SetReadBuffer(n int) error { return c.c.SetReadBuffer(n) }

// ErrOverrun is returned by Receive when the kernel dropped messages
// because the socket's buffer was full; reading can go on (the sequence
// numbers say how many were lost).
var ErrOverrun = errors.New("nflog: receive buffer overrun, messages lost")

// Receive blocks until messages arrive, and returns them. A busy group's
// messages cost little but the read: one recvfrom into the connection's
// own buffer, netlink headers and attributes read in place, prefixes
// interned. A Message's Payload points into that buffer: it is valid until
// the next Receive. Receive is not safe for concurrent use.
func (c *Conn) Receive() ([]Message, error) {
	n, err := c.recv()
	if err != nil {
		switch {
		case c.closed.Load():
			return nil, ErrClosed
		case errors.Is(err, unix.ENOBUFS):
			return nil, ErrOverrun
		}
		return nil, err
	}
	out := c.msgs[:0]
	for b := c.buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return out, fmt.Errorf("nflog: netlink message of length %d in %d bytes", l, len(b))
		}
		data := b[unix.NLMSG_HDRLEN:l]
		b = b[min((l+3)&^3, len(b)):]
		if typ != subsysULOG<<8|msgPacket || len(data) < 4 {
			continue
		}
		var msg Message
		b := data[4:]
		for len(b) >= 4 {
			l := int(binary.NativeEndian.Uint16(b[0:2]))
			typ := binary.NativeEndian.Uint16(b[2:4]) & 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
			if l < 4 || l > len(b) {
				return out, fmt.Errorf("nflog: attribute of length %d in %d bytes", l, len(b))
			}
			v := b[4:l]
			switch typ {
			case attrPacketHdr:
				if len(v) >= 3 {
					msg.Hook = v[2]
				}
			case attrPrefix:
				msg.Prefix = c.intern(v)
			case attrPayload:
				msg.Payload = v
			case attrSeq:
				if len(v) >= 4 {
					msg.Seq = binary.BigEndian.Uint32(v)
				}
			case attrInDev:
				if len(v) >= 4 {
					msg.InDev = binary.BigEndian.Uint32(v)
				}
			case attrOutDev:
				if len(v) >= 4 {
					msg.OutDev = binary.BigEndian.Uint32(v)
				}
			case attrMark:
				if len(v) >= 4 {
					msg.Mark = binary.BigEndian.Uint32(v)
				}
			}
			l = (l + 3) &^ 3
			if l > len(b) {
				break
			}
			b = b[l:]
		}
		out = append(out, msg)
	}
	c.msgs = out
	return out, nil
}

// recv reads one datagram into c.buf, waiting in the runtime's poller.
func (c *Conn) recv() (int, error) {
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), c.buf, 0)
		return rerr != unix.EAGAIN && rerr != unix.EWOULDBLOCK
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// intern returns the prefix in b (NUL-terminated) as a string, the same
// string for the same prefix: a lookup, not an allocation, after the
// first time (up to 65,536 distinct prefixes).
func (c *Conn) intern(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if s, ok := c.prefixes[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(c.prefixes) < 1<<16 {
		c.prefixes[s] = s
	}
	return s
}

// Close closes the socket, which unbinds the group (the kernel lets go of
// a group when its socket goes); a Receive blocked in another goroutine
// returns ErrClosed.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.c.Close()
}

// ErrClosed is what Receive returns once Close ran.
var ErrClosed = errors.New("nflog: connection closed")

// IsClosed reports whether err is what Receive returns once Close ran.
func IsClosed(err error) bool {
	return errors.Is(err, ErrClosed) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EBADF)
}
