package testenv

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Capture records every frame seen on one interface of a network namespace
// (an AF_PACKET socket, as tcpdump uses) from StartCapture until the test
// ends.
type Capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
}

// StartCapture starts recording the frames of interface ifname in the
// namespace at nsPath.
func StartCapture(tb testing.TB, nsPath, ifname string) *Capture {
	tb.Helper()
	c := &Capture{}
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		if c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto)); err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 100_000}
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(c.fd)
			return err
		}
		if err := unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(c.fd)
			return err
		}
		return nil
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
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue // the timeout: look at stop again
			}
			c.mu.Lock()
			c.frames = append(c.frames, bytes.Clone(buf[:n]))
			c.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		close(stop)
		<-done
		unix.Close(c.fd)
	})
	return c
}

// Frames are the frames recorded so far.
func (c *Capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
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
