package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/bench/internal/probe"
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
			runner.AddCleanup(func() { ln.Close() })
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
	return crrFrom(l.clientNS, ip, port, max, d)
}

// crrFrom is crr from the namespace from.
func crrFrom(from ns.NetNS, ip netip.Addr, port, max int, d time.Duration) crrResult {
	var r crrResult
	sa := probe.Sockaddr(ip, port)
	err := from.Do(func(ns.NetNS) error {
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
			_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, probe.RSTLinger)
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

// firstVerdict is probe.FirstVerdict from the client to the server.
func (l *lab) firstVerdict(port int, want bool, t0 time.Time, timeout time.Duration) (time.Time, int, error) {
	return probe.FirstVerdict(l.clientNS, serverIP, port, want, t0, timeout)
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
