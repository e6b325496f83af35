package nft

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/dataplane/nflog"
	"github.com/tortie/tortie/pkg/flowlog"
)

// BenchmarkKernelFlowLogCost measures what flow logs cost a connection in
// the kernel alone: TCP connects (closed with RST) from one workload to
// another through a host namespace, with flow logs off, on with nothing
// reading the group (the log statements and chains only), on with a
// reader draining it (NFLOG delivery too: two messages a connection), and
// on with the client's egress decision numbered in the mark and a reader
// (one message), as sub-benchmarks.
func BenchmarkKernelFlowLogCost(b *testing.B) {
	testenv.RequireRoot(b)
	for _, mode := range []string{"off", "on-unread", "on-read", "marked-read"} {
		b.Run(mode, func(b *testing.B) {
			tp := newTopology(b, map[string]string{"calia": "10.0.0.2", "calib": "10.0.0.3"})
			cfg := Config{}
			if mode != "off" {
				cfg.FlowLogGroup = DefaultFlowLogGroup
			}
			if mode == "marked-read" {
				cfg.FlowMarks, _ = flowlog.NewMarks(flowlog.DefaultMarkMask)
			}
			st := kernelState()
			// b's ingress allows TCP 8080 from anywhere (kernelState's
			// policy); a's egress is its profile.
			for _, ep := range st.Endpoints {
				if ep.InterfaceName == "calia" {
					ep.Addresses = []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}
				} else {
					ep.Addresses = []netip.Prefix{netip.MustParsePrefix("10.0.0.3/32")}
				}
			}
			d := New(newNSNFT(b, tp.host), cfg)
			if err := d.Apply(b.Context(), changesOf(st)); err != nil {
				b.Fatal(err)
			}
			listen(b, tp.wls["calib"], "tcp", "10.0.0.3:8080")
			if mode == "on-read" || mode == "marked-read" {
				var c *nflog.Conn
				if err := tp.host.Do(func(ns.NetNS) (err error) { c, err = nflog.Open(DefaultFlowLogGroup, 64); return err }); err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				go func() {
					for {
						if _, err := c.Receive(); err != nil && nflog.IsClosed(err) {
							return
						}
					}
				}()
			}
			sa := &unix.SockaddrInet4{Port: 8080, Addr: [4]byte{10, 0, 0, 3}}
			b.ResetTimer()
			t0 := time.Now()
			err := tp.wls["calia"].Do(func(ns.NetNS) error {
				for range b.N {
					fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						return err
					}
					if err := unix.Connect(fd, sa); err != nil {
						unix.Close(fd)
						return fmt.Errorf("connect: %w", err)
					}
					_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
					unix.Close(fd)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "conns/s")
			_ = calc.ProtoTCP
		})
	}
}
