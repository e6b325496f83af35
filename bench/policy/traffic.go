package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// serve listens on a server workload's ports and accepts and closes
// every connection (a Go accept loop in the server's namespace).
func serve(netns ns.NetNS, ip netip.Addr, ports ...int) {
	err := netns.Do(func(ns.NetNS) error {
		for _, port := range ports {
			ln, err := net.Listen("tcp4", net.JoinHostPort(ip.String(), fmt.Sprint(port)))
			if err != nil {
				return err
			}
			cleanup.add(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						if errors.Is(err, net.ErrClosed) {
							return
						}
						continue
					}
					c.Close()
				}
			}()
		}
		return nil
	})
	if err != nil {
		fatalf("server: %v", err)
	}
}

func sockaddr(ip netip.Addr, port int) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: port, Addr: ip.As4()}
}

var rstLinger = &unix.Linger{Onoff: 1, Linger: 0}

// crrResult is one connect/close loop.
type crrResult struct {
	n       int
	elapsed time.Duration
	lat     []time.Duration // connect() of each connection
	errors  int
}

func (r crrResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r *crrResult) add(o crrResult) {
	r.n += o.n
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	r.errors += o.errors
}

// crr connects to the server and closes, in a loop on one thread in the
// client namespace (netperf TCP_CRR without the request/response), until
// max connections or d elapsed. Each connection is a blocking connect() (SYN
// out, SYN-ACK back: the first packet is the one that meets policy) and a
// close with SO_LINGER 0, so it ends with one RST and leaves no TIME_WAIT on
// either side: the client never runs out of ports, the 2-core box spends
// nothing on FIN handshakes, and the policy's share of each connection is
// the largest it can be.
func (l *lab) crr(ip netip.Addr, port, max int, d time.Duration) crrResult {
	var r crrResult
	sa := sockaddr(ip, port)
	err := l.clientNS.Do(func(ns.NetNS) error {
		r.lat = make([]time.Duration, 0, max)
		t0 := time.Now()
		deadline := t0.Add(d)
		tv := unix.Timeval{Sec: 1}
		for i := 0; i < max; i++ {
			if i&63 == 0 && time.Now().After(deadline) {
				break
			}
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			// A dropped SYN fails after 1 s instead of the kernel's minutes.
			_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
			s := time.Now()
			err = unix.Connect(fd, sa)
			lat := time.Since(s)
			_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, rstLinger)
			unix.Close(fd)
			if err != nil {
				r.errors++
				if r.errors > 10 {
					return fmt.Errorf("connect %v: %v (%d errors)", sa.Addr, err, r.errors)
				}
				continue
			}
			r.lat = append(r.lat, lat)
			r.n++
		}
		r.elapsed = time.Since(t0)
		return nil
	})
	if err != nil {
		fatalf("crr to port %d: %v", port, err)
	}
	return r
}

// probe is one non-blocking connect from the client workload.
type probe struct {
	fd      int
	start   time.Time
	done    bool
	allowed bool
}

const (
	probeEvery   = time.Millisecond
	probeTimeout = 25 * time.Millisecond // a local handshake takes ~0.1 ms: no answer by then is a drop
)

// firstVerdict opens a connection attempt to port every millisecond from
// t0 (one thread in the client namespace, non-blocking sockets, poll) until
// one sees verdict want (allowed: the handshake completes; denied: no
// SYN-ACK within 25 ms) and every earlier probe has its verdict too. It
// returns the time that probe's SYN was sent (when the kernel judged it),
// and how many probes after it still saw the old verdict.
func (l *lab) firstVerdict(port int, want bool, t0 time.Time, timeout time.Duration) (time.Time, int, error) {
	sa := sockaddr(serverIP, port)
	var (
		first time.Time
		flaps int
	)
	err := l.clientNS.Do(func(ns.NetNS) error {
		var ps []*probe
		defer func() {
			for _, p := range ps {
				if !p.done {
					unix.Close(p.fd)
				}
			}
		}()
		next := t0
		deadline := t0.Add(timeout)
		pfds := make([]unix.PollFd, 0, 64)
		idx := make([]*probe, 0, 64)
		for {
			now := time.Now()
			if now.After(deadline) {
				return fmt.Errorf("no probe saw allowed=%v within %v", want, timeout)
			}
			if first.IsZero() && !now.Before(next) {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				p := &probe{fd: fd, start: time.Now()}
				if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
					unix.Close(fd)
					return fmt.Errorf("connect: %w", err)
				}
				ps = append(ps, p)
				next = next.Add(probeEvery)
				if next.Before(now) {
					next = now.Add(probeEvery)
				}
			}
			pfds, idx = pfds[:0], idx[:0]
			for _, p := range ps {
				if !p.done {
					pfds = append(pfds, unix.PollFd{Fd: int32(p.fd), Events: unix.POLLOUT})
					idx = append(idx, p)
				}
			}
			if len(pfds) > 0 {
				if _, err := unix.Poll(pfds, 1); err != nil && err != unix.EINTR {
					return err
				}
			} else {
				time.Sleep(200 * time.Microsecond)
			}
			now = time.Now()
			for i, p := range idx {
				switch {
				case pfds[i].Revents != 0:
					soerr, _ := unix.GetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_ERROR)
					p.done, p.allowed = true, soerr == 0
				case now.Sub(p.start) > probeTimeout:
					p.done, p.allowed = true, false
				default:
					continue
				}
				if p.allowed {
					_ = unix.SetsockoptLinger(p.fd, unix.SOL_SOCKET, unix.SO_LINGER, rstLinger)
				}
				unix.Close(p.fd)
			}
			// The earliest probe with the new verdict, once all before it
			// are decided.
			first = time.Time{}
			for _, p := range ps {
				if !p.done {
					break
				}
				if p.allowed == want {
					first = p.start
					break
				}
			}
			if !first.IsZero() && !slices.ContainsFunc(ps, func(p *probe) bool { return !p.done }) {
				for _, p := range ps {
					if p.start.After(first) && p.allowed != want {
						flaps++
					}
				}
				return nil
			}
		}
	})
	return first, flaps, err
}

// connects reports whether the client reaches port within 200 ms.
func (l *lab) connects(port int) bool {
	ok := false
	_ = l.clientNS.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", net.JoinHostPort(serverIP.String(), fmt.Sprint(port)), 200*time.Millisecond)
		if err == nil {
			ok = true
			c.Close()
		}
		return nil
	})
	return ok
}

// waitConnects probes port every 2 ms until it connects.
func (l *lab) waitConnects(port int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ok := false
		_ = l.clientNS.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp4", net.JoinHostPort(serverIP.String(), fmt.Sprint(port)), 2*time.Millisecond)
			if err == nil {
				ok = true
				c.Close()
			}
			return nil
		})
		if ok {
			return time.Now(), nil
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("port %d not reachable within %v", port, timeout)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.5) - 1
	return s[min(len(s)-1, max(0, i))]
}
