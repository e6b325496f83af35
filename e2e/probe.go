package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Probe is the probing every backend shares: every source is a network
// namespace on this machine. It reports whether from reaches to.
func Probe(from Source, to Target, port int, proto string, timeout time.Duration) bool {
	ok, _ := ProbeErr(from, to, port, proto, timeout)
	return ok
}

// ProbeErr is Probe with the reason of a failure.
func ProbeErr(from Source, to Target, port int, proto string, timeout time.Duration) (bool, error) {
	addr := net.JoinHostPort(to.Addr().String(), strconv.Itoa(port))
	switch proto {
	case "tcp", "TCP":
		return probeTCP(from.NetNS(), addr, timeout)
	case "udp", "UDP":
		return probeUDP(from.NetNS(), addr, timeout)
	case "icmp", "ICMP":
		return probeICMP(from.NetNS(), to.Addr(), timeout)
	}
	return false, fmt.Errorf("probe: protocol %q is not tcp, udp or icmp", proto)
}

func payload() []byte { return []byte(fmt.Sprintf("tortie-e2e %016x\n", rand.Uint64())) }

func probeTCP(n ns.NetNS, addr string, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		var err error
		d := net.Dialer{Deadline: deadline}
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	msg := payload()
	if _, err := c.Write(msg); err != nil {
		return false, err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return false, fmt.Errorf("connected, no echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return false, fmt.Errorf("echo %q, sent %q", got, msg)
	}
	return true, nil
}

// UDP probes take their source ports from a per-source sequence in
// [udpPortMin, udpPortMax] (below the kernel's ephemeral range), so that a
// probe never reuses the 5-tuple of an earlier one. With random ports it
// sometimes did, and then its datagram matched the conntrack entry of an
// earlier, allowed exchange (alive 30 to 120 s) and passed as established
// traffic although policy now denies new flows: correct kernel behaviour,
// but not what a probe is meant to measure.
const (
	udpPortMin = 15000
	udpPortMax = 32000
)

var udpPorts struct {
	sync.Mutex
	next map[string]int
}

func nextUDPPort(n ns.NetNS) int {
	udpPorts.Lock()
	defer udpPorts.Unlock()
	if udpPorts.next == nil {
		udpPorts.next = map[string]int{}
	}
	p, ok := udpPorts.next[n.Path()]
	switch {
	case !ok:
		p = udpPortMin + rand.IntN(udpPortMax-udpPortMin)
	case p >= udpPortMax:
		// Wrap around, not to a random place: a port comes back only
		// after the whole range, long after its conntrack entry expired.
		p = udpPortMin
	}
	udpPorts.next[n.Path()] = p + 1
	return p
}

// probeUDP sends a datagram every 50ms until the echo comes back or the
// timeout passes (a first datagram can wait for neighbour resolution).
func probeUDP(n ns.NetNS, addr string, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		var err error
		for range 50 {
			d := net.Dialer{LocalAddr: &net.UDPAddr{Port: nextUDPPort(n)}}
			if c, err = d.Dial("udp", addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
				return err
			}
		}
		return err
	})
	if err != nil {
		return false, err
	}
	defer c.Close()
	msg := payload()
	buf := make([]byte, 256)
	for time.Now().Before(deadline) {
		if _, err := c.Write(msg); err != nil {
			// ICMP errors of an earlier datagram surface here
			// (connection refused): the path exists, the port does not.
			return false, err
		}
		_ = c.SetReadDeadline(minTime(deadline, time.Now().Add(50*time.Millisecond)))
		nr, err := c.Read(buf)
		if err == nil {
			if bytes.Equal(buf[:nr], msg) {
				return true, nil
			}
			continue
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return false, err
		}
	}
	return false, os.ErrDeadlineExceeded
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// probeICMP sends ICMP echo requests from a raw socket in the source
// namespace and waits for a matching reply.
func probeICMP(n ns.NetNS, to netip.Addr, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	var pc *icmp.PacketConn
	err := n.Do(func(ns.NetNS) error {
		var err error
		pc, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return false, err
	}
	defer pc.Close()
	id := int(rand.Uint32() & 0xffff)
	buf := make([]byte, 1500)
	for seq := 1; time.Now().Before(deadline); seq++ {
		m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("tortie-e2e")}}
		b, _ := m.Marshal(nil)
		if _, err := pc.WriteTo(b, &net.IPAddr{IP: to.AsSlice()}); err != nil {
			return false, err
		}
		next := minTime(deadline, time.Now().Add(100*time.Millisecond))
		for {
			_ = pc.SetReadDeadline(next)
			nr, peer, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			if ip, ok := peer.(*net.IPAddr); !ok || !ip.IP.Equal(to.AsSlice()) {
				continue
			}
			rm, err := icmp.ParseMessage(1, buf[:nr])
			if err != nil || rm.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := rm.Body.(*icmp.Echo); ok && e.ID == id {
				return true, nil
			}
		}
	}
	return false, os.ErrDeadlineExceeded
}

// Servers are the listeners of one namespace.
type Servers struct {
	mu      sync.Mutex
	closers []io.Closer
}

// Close stops every listener.
func (s *Servers) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.closers {
		c.Close()
	}
	s.closers = nil
}

func (s *Servers) add(c io.Closer) {
	s.mu.Lock()
	s.closers = append(s.closers, c)
	s.mu.Unlock()
}

// ServeEcho listens on every port in n, on all addresses: TCP accepts and
// echoes, UDP echoes. SCTP ports are declared only (no SCTP sockets here).
func (s *Servers) ServeEcho(n ns.NetNS, ports []Port) error {
	return n.Do(func(ns.NetNS) error {
		for _, p := range ports {
			addr := ":" + strconv.Itoa(p.Port)
			switch p.Protocol {
			case "TCP":
				ln, err := net.Listen("tcp4", addr)
				if err != nil {
					return err
				}
				s.add(ln)
				go acceptLoop(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
			case "UDP":
				pc, err := net.ListenPacket("udp4", addr)
				if err != nil {
					return err
				}
				s.add(pc)
				go func() {
					buf := make([]byte, 2048)
					for {
						nr, from, err := pc.ReadFrom(buf)
						if err != nil {
							return
						}
						_, _ = pc.WriteTo(buf[:nr], from)
					}
				}()
			}
		}
		return nil
	})
}

// ServeWhoami listens on TCP port in n and answers every connection with
// the address it came from ("ip:port\n"), then closes it.
func (s *Servers) ServeWhoami(n ns.NetNS, port int) error {
	return n.Do(func(ns.NetNS) error {
		ln, err := net.Listen("tcp4", ":"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		s.add(ln)
		go acceptLoop(ln, func(c net.Conn) { fmt.Fprintf(c, "%s\n", c.RemoteAddr()) })
		return nil
	})
}

// ServeTCP listens on TCP port in n, accepting and echoing.
func (s *Servers) ServeTCP(n ns.NetNS, port int) error {
	return s.ServeEcho(n, []Port{{Protocol: "TCP", Port: port}})
}

func acceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			handle(c)
		}()
	}
}

// Whoami connects from src to a whoami server and returns the source
// address the server saw.
func Whoami(src Source, to Target, port int, timeout time.Duration) (netip.Addr, error) {
	var c net.Conn
	err := src.NetNS().Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", net.JoinHostPort(to.Addr().String(), strconv.Itoa(port)), timeout)
		return err
	})
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	if err != nil {
		return netip.Addr{}, err
	}
	ap, err := netip.ParseAddrPort(string(bytes.TrimSpace(b)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("whoami answered %q: %w", b, err)
	}
	return ap.Addr(), nil
}
