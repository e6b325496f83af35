package e2e

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"syscall"

	"golang.org/x/sys/unix"
)

// NFLogPacket is one packet an NFLOG rule sent to userspace.
type NFLogPacket struct {
	Prefix   string
	Src, Dst netip.Addr
}

// NFLog is a subscription to one NFLOG group in a network namespace, the
// way ulogd or Calico's flow logs read what `log group N` sends: a
// NETLINK_NETFILTER socket bound to the group.
type NFLog struct {
	fd   int
	mu   sync.Mutex
	pkts []NFLogPacket
	err  error
	done chan struct{}
	stop chan struct{}
}

// nfnetlink_log constants (linux/netfilter/nfnetlink_log.h).
const (
	nfnlSubsysULOG   = 4
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulaCfgQThresh  = 4
	nfulnlCfgCmdBind = 1
	nfulnlCopyPacket = 2
	nfulaPayload     = 9
	nfulaPrefix      = 10
)

// SubscribeNFLOG binds group in n and collects the packets it receives
// until Close.
func SubscribeNFLOG(n ns.NetNS, group uint16) (*NFLog, error) {
	l := &NFLog{fd: -1, done: make(chan struct{}), stop: make(chan struct{})}
	err := n.Do(func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		l.fd = fd
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	if err != nil {
		l.closeFD()
		return nil, fmt.Errorf("nflog socket: %w", err)
	}
	_ = unix.SetsockoptTimeval(l.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	_ = unix.SetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	// Bind the group, then ask for packets (with their first bytes).
	if err := l.config(group, nfulaCfgCmd, []byte{nfulnlCfgCmdBind}); err != nil {
		l.closeFD()
		return nil, fmt.Errorf("nflog bind group %d: %w", group, err)
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, 128)
	mode[4] = nfulnlCopyPacket
	if err := l.config(group, nfulaCfgMode, mode); err != nil {
		l.closeFD()
		return nil, fmt.Errorf("nflog copy mode: %w", err)
	}
	// Deliver every packet at once (the kernel's default batches up to
	// 100 packets or one second).
	qthresh := make([]byte, 4)
	binary.BigEndian.PutUint32(qthresh, 1)
	if err := l.config(group, nfulaCfgQThresh, qthresh); err != nil {
		l.closeFD()
		return nil, fmt.Errorf("nflog queue threshold: %w", err)
	}
	go l.loop()
	return l, nil
}

func (l *NFLog) closeFD() {
	if l.fd >= 0 {
		unix.Close(l.fd)
		l.fd = -1
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

// config sends one NFULNL_MSG_CONFIG with one attribute and waits for the
// acknowledgement.
func (l *NFLog) config(group uint16, attr uint16, val []byte) error {
	alen := 4 + len(val)
	msgLen := unix.NLMSG_HDRLEN + 4 + align4(alen)
	b := make([]byte, msgLen)
	binary.NativeEndian.PutUint32(b[0:], uint32(msgLen))
	binary.NativeEndian.PutUint16(b[4:], nfnlSubsysULOG<<8|nfulnlMsgConfig)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:], 1) // seq
	// nfgenmsg: family AF_UNSPEC, version 0, res_id = group (big endian)
	b[16] = unix.AF_UNSPEC
	b[17] = 0
	binary.BigEndian.PutUint16(b[18:], group)
	binary.NativeEndian.PutUint16(b[20:], uint16(alen))
	binary.NativeEndian.PutUint16(b[22:], attr)
	copy(b[24:], val)
	if err := unix.Sendto(l.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(l.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
				if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
					return unix.Errno(-code)
				}
				return nil
			}
		}
	}
	return fmt.Errorf("no acknowledgement")
}

func (l *NFLog) loop() {
	defer close(l.done)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(l.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != nfnlSubsysULOG<<8|nfulnlMsgPacket || len(m.Data) < 4 {
				continue
			}
			l.record(parseNFLogPacket(m.Data[4:]))
		}
	}
}

func parseNFLogPacket(attrs []byte) NFLogPacket {
	var p NFLogPacket
	for len(attrs) >= 4 {
		alen := int(binary.NativeEndian.Uint16(attrs))
		typ := binary.NativeEndian.Uint16(attrs[2:]) & 0x3fff
		if alen < 4 || alen > len(attrs) {
			break
		}
		val := attrs[4:alen]
		switch typ {
		case nfulaPrefix:
			for i, c := range val {
				if c == 0 {
					val = val[:i]
					break
				}
			}
			p.Prefix = string(val)
		case nfulaPayload:
			if len(val) >= 20 && val[0]>>4 == 4 {
				p.Src = netip.AddrFrom4([4]byte(val[12:16]))
				p.Dst = netip.AddrFrom4([4]byte(val[16:20]))
			}
		}
		if align4(alen) >= len(attrs) {
			break
		}
		attrs = attrs[align4(alen):]
	}
	return p
}

func (l *NFLog) record(p NFLogPacket) {
	l.mu.Lock()
	l.pkts = append(l.pkts, p)
	l.mu.Unlock()
}

// Packets returns what was received so far, and the receive error if the
// subscription broke.
func (l *NFLog) Packets() ([]NFLogPacket, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]NFLogPacket(nil), l.pkts...), l.err
}

// Close ends the subscription.
func (l *NFLog) Close() {
	close(l.stop)
	<-l.done
	l.closeFD()
}
