// Package probe is what the benchmarks share to see a policy change
// enforced: connection attempts from a workload's network namespace, one
// every millisecond, until one sees the new verdict.
package probe

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Sockaddr is ip:port for unix.Connect.
func Sockaddr(ip netip.Addr, port int) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: port, Addr: ip.As4()}
}

// RSTLinger closes a socket with one RST: no TIME_WAIT on either side.
var RSTLinger = &unix.Linger{Onoff: 1, Linger: 0}

// probe is one non-blocking connect.
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

// FirstVerdict opens a connection attempt to address to, port port, every
// millisecond from t0 (one thread in namespace from, non-blocking sockets,
// poll) until one sees verdict want (allowed: the handshake completes;
// denied: no SYN-ACK within 25 ms) and every earlier probe has its verdict
// too. It
// returns the time that probe's SYN was sent (when the kernel judged it),
// and how many probes after it still saw the old verdict.
func FirstVerdict(from ns.NetNS, to netip.Addr, port int, want bool, t0 time.Time, timeout time.Duration) (time.Time, int, error) {
	sa := Sockaddr(to, port)
	var (
		first time.Time
		flaps int
	)
	err := from.Do(func(ns.NetNS) error {
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
					_ = unix.SetsockoptLinger(p.fd, unix.SOL_SOCKET, unix.SO_LINGER, RSTLinger)
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

// Percentile is the p-th (0..1) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.5) - 1
	return s[min(len(s)-1, max(0, i))]
}
