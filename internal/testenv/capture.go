package testenv

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Capture records every frame seen on one interface of a network namespace
// (an AF_PACKET socket, as tcpdump uses) from StartCapture until the test
// ends.
type Capture struct {
	mu     sync.Mutex
	frames [][]byte
}

// StartCapture starts recording the frames of interface ifname in the
// namespace at nsPath.
func StartCapture(tb testing.TB, nsPath, ifname string) *Capture {
	tb.Helper()
	c := &Capture{}
	WatchFrames(tb, nsPath, ifname, nil, func(f []byte) {
		c.mu.Lock()
		c.frames = append(c.frames, bytes.Clone(f))
		c.mu.Unlock()
	})
	return c
}

// WatchFrames calls fn, on a goroutine of its own, with every frame seen on
// interface ifname in the namespace at nsPath that filter (a classic BPF
// program, as tcpdump compiles; nil: every frame) passes, until the test
// ends. The frame's bytes are only valid during the call. For captures too
// long to keep (StartCapture keeps every frame): a filter leaves the kernel
// to skip the frames of no interest.
func WatchFrames(tb testing.TB, nsPath, ifname string, filter []bpf.Instruction, fn func(frame []byte)) {
	tb.Helper()
	var fd int
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) (err error) {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		// Protocol 0 until bound: the socket sees no frame before its
		// filter is in place and it is bound to the one interface.
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				unix.Close(fd)
			}
		}()
		tv := unix.Timeval{Usec: 100_000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		if filter != nil {
			raw, err := bpf.Assemble(filter)
			if err != nil {
				return err
			}
			prog := make([]unix.SockFilter, len(raw))
			for i, r := range raw {
				prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
			}
			if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
				&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
				return err
			}
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		tb.Fatalf("capture on %s in %s: %v", ifname, nsPath, err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // the timeout: look at stop again
			}
			fn(buf[:n])
		}
	}()
	tb.Cleanup(func() {
		close(stop)
		<-done
		unix.Close(fd)
	})
}

// Frames are the frames recorded so far.
func (c *Capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
}

// IPv4Between is a filter for WatchFrames that passes the Ethernet frames
// of IPv4 packets whose source and destination are both in p (an IPv4
// prefix).
func IPv4Between(p netip.Prefix) []bpf.Instruction {
	a := p.Masked().Addr().As4()
	net, mask := binary.BigEndian.Uint32(a[:]), uint32(0xffffffff)<<(32-p.Bits())
	if p.Bits() == 0 {
		mask = 0
	}
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IP, SkipTrue: 7}, // to the drop
		bpf.LoadAbsolute{Off: 26, Size: 4},                                  // source
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: net, SkipTrue: 4},
		bpf.LoadAbsolute{Off: 30, Size: 4}, // destination
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: net, SkipTrue: 1},
		bpf.RetConstant{Val: 65535},
		bpf.RetConstant{Val: 0},
	}
}

// IPv4Packet is what a captured Ethernet frame says of its IPv4 packet.
type IPv4Packet struct {
	Src, Dst         [4]byte
	Proto            uint8
	SrcPort, DstPort uint16 // UDP and TCP
	Payload          []byte // after the IPv4 header
}

// ParseIPv4 reads an Ethernet frame carrying IPv4; ok is false for anything
// else (ARP, IPv6).
func ParseIPv4(f []byte) (p IPv4Packet, ok bool) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP {
		return p, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0xf) * 4
	if ihl < 20 || len(ip) < ihl {
		return p, false
	}
	copy(p.Src[:], ip[12:16])
	copy(p.Dst[:], ip[16:20])
	p.Proto, p.Payload = ip[9], ip[ihl:]
	if (p.Proto == unix.IPPROTO_UDP || p.Proto == unix.IPPROTO_TCP) && len(p.Payload) >= 4 {
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(p.Payload), binary.BigEndian.Uint16(p.Payload[2:])
	}
	return p, true
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
