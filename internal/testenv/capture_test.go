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
// prefix, in clear or inside VXLAN, and nothing else.
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
	var in, inVXLAN, out atomic.Int64
	pool := netip.MustParsePrefix("10.9.0.0/24")
	between := func(p IPv4Packet) bool {
		return pool.Contains(netip.AddrFrom4(p.Src)) && pool.Contains(netip.AddrFrom4(p.Dst))
	}
	WatchFrames(t, a.Path(), "v0", IPv4Between(pool), func(f []byte) {
		p, ok := ParseIPv4(f)
		inner, isVXLAN := p.VXLANInner()
		switch {
		case ok && between(p):
			in.Add(1)
		case ok && isVXLAN && between(inner):
			inVXLAN.Add(1)
		default:
			out.Add(1)
		}
	})
	var sendTo func(from, to string, port int, payload []byte)
	send := func(from, to string) { sendTo(from, to, 9, []byte("x")) }
	// vxlan sends, between the hosts' addresses, what a VXLAN device would
	// for an IPv4 packet from src to dst, to port.
	vxlan := func(src, dst string, port int) {
		b := []byte{0x08, 0, 0, 0, 0, 0x10, 0, 0, // flags, VNI 4096
			0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x08, 0x00, // inner Ethernet
			0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0} // inner IPv4 up to its addresses
		s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
		sendTo("192.0.2.1", "192.0.2.2", port, append(append(b, s[:]...), d[:]...))
	}
	sendTo = func(from, to string, port int, payload []byte) {
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
				if _, err := c.WriteToUDP(payload, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(to), uint16(port)))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	send("10.9.0.1", "10.9.0.2")              // in
	send("192.0.2.1", "192.0.2.2")            // out
	send("192.0.2.1", "10.9.0.2")             // out: the source is not in the prefix
	vxlan("10.9.0.7", "10.9.0.8", VXLANPort)  // in: inside VXLAN
	vxlan("10.9.0.7", "192.0.2.9", VXLANPort) // out
	vxlan("10.9.0.7", "10.9.0.8", 4790)       // out: not VXLAN's port
	deadline := time.Now().Add(2 * time.Second)
	for (in.Load() < 5 || inVXLAN.Load() < 5) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if in.Load() < 5 || inVXLAN.Load() < 5 || out.Load() != 0 {
		t.Fatalf("passed %d frames between addresses of %s (want at least 5), %d with VXLAN (want at least 5) and %d others (want 0)",
			in.Load(), pool, inVXLAN.Load(), out.Load())
	}
}
