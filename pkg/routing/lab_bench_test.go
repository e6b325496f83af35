package routing

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
)

// BenchmarkThroughput compares bulk TCP throughput between workloads on two
// hosts of one subnet, routed natively and through VXLAN (vxlanMode
// Always), with the same hosts, agents and workloads otherwise. Each
// iteration sends 64 KiB; ns/op and MB/s are the numbers.
//
//	go test -run NONE -bench Throughput -benchtime 2000x ./pkg/routing (root)
func BenchmarkThroughput(b *testing.B) {
	for _, mode := range []v3.EncapsulationMode{v3.EncapNever, v3.EncapAlways} {
		name := "native"
		if mode == v3.EncapAlways {
			name = "vxlan"
		}
		b.Run(name, func(b *testing.B) {
			testenv.RequireRoot(b)
			l := newLab(b, 1)
			l.createPool("lab", labPool, func(p *v3.IPPoolSpec) { p.VXLANMode = mode })
			hs := []*host{l.addHost(1, 0), l.addHost(2, 0)}
			for _, h := range hs {
				l.addWorkload(h)
				l.start(h)
			}
			eventually(b, 40*time.Second, "all sessions Established", func() (bool, string) { return establishedAll(hs, meshWant(hs)) })
			eventually(b, 20*time.Second, "all routes programmed", func() (bool, string) { return l.routedAll(hs) })
			bulk(b, hs[0].wl[0], hs[1].wl[0])
		})
	}
}

// bulk sends b.N chunks of 64 KiB from workload a to a sink in workload c.
func bulk(b *testing.B, a, c workload) {
	portSeq.Lock()
	portSeq.n++
	port := portSeq.n
	portSeq.Unlock()
	addr := netip.AddrPortFrom(c.addr, uint16(port)).String()
	var ln net.Listener
	if err := inNS(b, c.ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer conn.Close()
		n, _ := io.Copy(io.Discard, conn)
		done <- n
	}()
	var conn net.Conn
	if err := inNS(b, a.ns, func() (err error) { conn, err = net.DialTimeout("tcp", addr, 3*time.Second); return err }); err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := conn.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	conn.Close()
	if n := <-done; n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("sink got %d bytes, sent %d", n, int64(b.N)*int64(len(chunk)))
	}
}
