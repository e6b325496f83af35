package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestReflectorClientsStartingTogether: a route reflector whose clients
// all start at once, each advertising 100 blocks, gives every client every
// other client's blocks. GoBGP alone loses a route that arrives while
// another client's session comes up in about half such starts (see
// resendTo); three starts in a row catch that nearly always. Speakers run
// in this process on loopback addresses, so no root is needed.
func TestReflectorClientsStartingTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 63 speakers")
	}
	for round := range 3 {
		reflectorRound(t, round, 20, 100)
	}
}

func reflectorRound(t *testing.T, round, clients, blocks int) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// Clients on 127.X.Y.1..: X random per run, so that runs side by side
	// do not share addresses.
	base := [4]byte{127, byte(100 + rand.IntN(100)), byte(round), 0}
	clientAddr := func(i int) netip.Addr { b := base; b[3] = byte(i + 1); return netip.AddrFrom4(b) }
	block := func(i, j int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(round), byte(i), byte(j)}), 32)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	rrAddr := netip.MustParseAddr("127.0.0.1")
	rr, err := New(Config{RouterID: rrAddr, ListenPort: port, ListenAddrs: []netip.Addr{rrAddr}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var peers []Peer
	for i := range clients {
		peers = append(peers, Peer{Address: clientAddr(i), ASN: DefaultASN, RouteReflectorClient: true, Passive: true})
	}
	if err := rr.SetPeers(ctx, peers); err != nil {
		t.Fatal(err)
	}
	if err := rr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rr.Stop()
	go func() {
		for range rr.Routes() {
		}
	}()

	type client struct {
		sp      *Speaker
		mu      sync.Mutex
		learned map[netip.Prefix]bool
	}
	cs := make([]*client, clients)
	for i := range cs {
		c := &client{learned: map[netip.Prefix]bool{}}
		cs[i] = c
		if c.sp, err = New(Config{RouterID: clientAddr(i), ListenPort: -1, Logger: quiet}); err != nil {
			t.Fatal(err)
		}
		if err := c.sp.SetPeers(ctx, []Peer{{Address: rrAddr, Port: port, ASN: DefaultASN, SourceAddr: clientAddr(i)}}); err != nil {
			t.Fatal(err)
		}
		advs := make([]Advertisement, blocks)
		for j := range advs {
			advs[j] = Advertisement{Prefix: block(i, j)}
		}
		if err := c.sp.SetAdvertisements(advs); err != nil {
			t.Fatal(err)
		}
		if err := c.sp.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.sp.Stop()
		go func() {
			for ev := range c.sp.Routes() {
				c.mu.Lock()
				if ev.Withdrawn {
					delete(c.learned, ev.Route.Prefix)
				} else {
					c.learned[ev.Route.Prefix] = true
				}
				c.mu.Unlock()
			}
		}()
	}
	want := (clients - 1) * blocks
	deadline := time.Now().Add(30 * time.Second)
	for {
		var short []string
		for i, c := range cs {
			c.mu.Lock()
			if n := len(c.learned); n != want {
				var missing []netip.Prefix
				for k := range clients {
					for j := range blocks {
						if k != i && !c.learned[block(k, j)] && len(missing) < 3 {
							missing = append(missing, block(k, j))
						}
					}
				}
				short = append(short, fmt.Sprintf("client %d has %d routes, missing %v", i, n, missing))
			}
			c.mu.Unlock()
		}
		if len(short) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d: 30 s after %d clients started: %v", round, clients, short)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
