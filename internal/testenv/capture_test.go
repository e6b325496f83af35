package testenv

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// TestIPv4Between: the filter passes packets between two addresses of the
// prefix, and nothing else.
func TestIPv4Between(t *testing.T) {
	RequireRoot(t)
	a, an := NewNS(t)
	_, bn := NewNS(t)
	Sh(t, "ip", "-n", an, "link", "add", "v0", "type", "veth", "peer", "name", "v0", "netns", bn)
	for i, n := range []string{an, bn} {
		Sh(t, "ip", "-n", n, "addr", "add", []string{"10.9.0.1/24", "10.9.0.2/24"}[i], "dev", "v0")
		Sh(t, "ip", "-n", n, "addr", "add", []string{"192.0.2.1/24", "192.0.2.2/24"}[i], "dev", "v0")
		Sh(t, "ip", "-n", n, "link", "set", "v0", "up")
	}
	var in, out atomic.Int64
	pool := netip.MustParsePrefix("10.9.0.0/24")
	WatchFrames(t, a.Path(), "v0", IPv4Between(pool), func(f []byte) {
		p, ok := ParseIPv4(f)
		if ok && pool.Contains(netip.AddrFrom4(p.Src)) && pool.Contains(netip.AddrFrom4(p.Dst)) {
			in.Add(1)
		} else {
			out.Add(1)
		}
	})
	send := func(from, to string) {
		t.Helper()
		err := a.Do(func(ns.NetNS) error {
			// Not connected: the port unreachable that comes back is
			// not an error of the next write.
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(from+":0")))
			if err != nil {
				return err
			}
			defer c.Close()
			for range 5 {
				if _, err := c.WriteToUDP([]byte("x"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to+":9"))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	send("10.9.0.1", "10.9.0.2")   // in
	send("192.0.2.1", "192.0.2.2") // out
	send("192.0.2.1", "10.9.0.2")  // out: the source is not in the prefix
	deadline := time.Now().Add(2 * time.Second)
	for in.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if in.Load() < 5 || out.Load() != 0 {
		t.Fatalf("passed %d frames between addresses of %s (want at least 5) and %d others (want 0)", in.Load(), pool, out.Load())
	}
}
