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

// VXLANPort is the VXLAN port IPv4Between looks into (Linux's and Calico's
// default).
const VXLANPort = 4789

// IPv4Between is a filter for WatchFrames that passes the Ethernet frames
// of IPv4 packets whose source and destination are both in p (an IPv4
// prefix): in clear, or inside VXLAN (UDP to VXLANPort, an outer header of
// 20 bytes), which is just as readable on the wire.
func IPv4Between(p netip.Prefix) []bpf.Instruction {
	a := p.Masked().Addr().As4()
	net, mask := binary.BigEndian.Uint32(a[:]), uint32(0xffffffff)<<(32-p.Bits())
	if p.Bits() == 0 {
		mask = 0
	}
	// Offsets in the frame: outer IPv4 at 14; with VXLAN, the inner frame
	// at 14+20+8+8 = 50 and its IPv4 header at 64.
	const inner = 50
	// between passes a frame whose IPv4 header at off has both addresses
	// in p; any other goes on to the instruction after it.
	between := func(off uint32) []bpf.Instruction {
		return []bpf.Instruction{
			bpf.LoadAbsolute{Off: off + 26, Size: 4}, // source
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: net, SkipTrue: 4},
			bpf.LoadAbsolute{Off: off + 30, Size: 4}, // destination
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: net, SkipTrue: 1},
			bpf.RetConstant{Val: 65535},
		}
	}
	// Not IPv4, or not VXLAN carrying IPv4: to the drop, the last
	// instruction; skip counts from the instruction after the jump.
	const total = 2 + 7 + 8 + 7 + 1
	toDrop := func(at int) uint8 { return uint8(total - 1 - (at + 1)) }
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IP, SkipTrue: toDrop(1)},
	}
	prog = append(prog, between(0)...) // in clear
	prog = append(prog,
		bpf.LoadAbsolute{Off: 14, Size: 1}, // version and header length
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x45, SkipTrue: toDrop(10)},
		bpf.LoadAbsolute{Off: 23, Size: 1}, // protocol
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: toDrop(12)},
		bpf.LoadAbsolute{Off: 36, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: VXLANPort, SkipTrue: toDrop(14)},
		bpf.LoadAbsolute{Off: inner + 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IP, SkipTrue: toDrop(16)},
	)
	prog = append(prog, between(inner)...) // inside VXLAN
	prog = append(prog, bpf.RetConstant{Val: 0})
	if len(prog) != total {
		panic("IPv4Between: the program's length is not the one its jumps count on")
	}
	return prog
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

// VXLANInner is the packet a VXLAN packet (UDP to VXLANPort) carries; ok
// is false for any other packet.
func (p IPv4Packet) VXLANInner() (inner IPv4Packet, ok bool) {
	if p.Proto != unix.IPPROTO_UDP || p.DstPort != VXLANPort || len(p.Payload) < 8+8 {
		return inner, false
	}
	return ParseIPv4(p.Payload[8+8:])
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
