package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/lab"
	"github.com/tortie/tortie/pkg/syncer"
)

// movesOptions say how addresses move.
type movesOptions struct {
	hosts, moves int
}

// moveCase is one lab's moves: BGP (the node-to-node mesh) or VXLAN.
type moveCase struct {
	name  string
	encap string // lab.Options.Encap
	// routed is, per move, from the datastore commit of the address's
	// allocation to the new host (CNI ADD) to every other host routing it
	// there; total from the old workload's DEL starting.
	routed, total []time.Duration
	up            time.Duration
}

// movesBenchmark moves one workload's address between the hosts of a lab,
// o.moves times, to a host chosen at random each time (another than where
// it is): the workload is deleted (CNI DEL frees the address) and one is
// added on the new host asking for that address (CNI_ARGS IP), as when a
// VM migrates or an address is re-assigned. From before the ADD, every
// other host is polled over netlink, every millisecond, until its route to
// the address leads to the new host: natively via its address (BGP), or
// through the VXLAN device via its tunnel address. Nothing is simulated:
// the hosts are a real lab (namespaces, agents, GoBGP, the CNI plugin).
func movesBenchmark(ctx context.Context, o movesOptions, binDir string) []*moveCase {
	cases := []*moveCase{{name: "BGP mesh", encap: lab.EncapNone}, {name: "VXLAN", encap: lab.EncapVXLAN}}
	for _, c := range cases {
		c.run(ctx, o, binDir)
	}
	return cases
}

func (c *moveCase) run(ctx context.Context, o movesOptions, binDir string) {
	name := fmt.Sprintf("tsm%06x", rand.Uint32()&0xffffff)
	t0 := time.Now()
	l, _, err := lab.Up(ctx, lab.Options{Name: name, Hosts: o.hosts, Encap: c.encap, Log: io.Discard,
		Bins: lab.Binaries{Tortie: filepath.Join(binDir, "tortie"), Node: filepath.Join(binDir, "tortie-node"), CNI: filepath.Join(binDir, "tortie-cni")}})
	if err != nil {
		run.Fatalf("lab up (%s): %v", c.name, err)
	}
	c.up = time.Since(t0)
	defer func() {
		if err := lab.Down(context.Background(), name, io.Discard); err != nil {
			run.Logf("lab down %s: %v", name, err)
		}
	}()
	if err := l.WaitConverged(ctx, 90*time.Second); err != nil {
		run.Fatalf("lab %s (%s) never converged: %v", name, c.name, err)
	}
	hosts := l.State().Hosts
	handles := make(map[string]*netlink.Handle, len(hosts))
	for _, h := range hosts {
		nsh, err := netns.GetFromPath(filepath.Join("/run/netns", h.Netns))
		if err != nil {
			run.Fatalf("%v", err)
		}
		hd, err := netlink.NewHandleAt(nsh)
		nsh.Close()
		if err != nil {
			run.Fatalf("netlink in %s: %v", h.Netns, err)
		}
		defer hd.Close()
		handles[h.Name] = hd
	}
	// Where each host is reached: its fabric address, and its VXLAN
	// tunnel address once it has one.
	via := func(host string) []netip.Addr {
		var out []netip.Addr
		for _, h := range hosts {
			if h.Name != host {
				continue
			}
			if a, err := netip.ParseAddr(h.Addr); err == nil {
				out = append(out, a)
			}
			if lk, err := handles[host].LinkByName("vxlan.calico"); err == nil {
				if as, err := handles[host].AddrList(lk, netlink.FAMILY_V4); err == nil {
					for _, a := range as {
						if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
							out = append(out, ip)
						}
					}
				}
			}
		}
		return out
	}
	// The address starts on the first host, in that host's block; it then
	// moves among the others, where it is always a borrowed address that
	// the host holding it advertises as a /32 (moving it back into its
	// block's host would be routed there as soon as the DEL withdrew the
	// /32, before any ADD).
	w, err := l.AddWorkload(ctx, lab.WorkloadSpec{Name: "mover0", Host: hosts[0].Name, Listen: []string{"tcp:80"}})
	if err != nil {
		run.Fatalf("%v", err)
	}
	ip, ok := w.Addr(4)
	if !ok {
		run.Fatalf("workload %s has no IPv4 address", w.ID())
	}
	// When the allocation of each ADD is committed: the first change of
	// an IPAM block after the ADD starts (the DEL's release came before).
	be, err := datastore.New(datastore.Config{Endpoints: []string{l.Endpoint()}})
	if err != nil {
		run.Fatalf("%v", err)
	}
	defer be.Close()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	blockChanged := make(chan time.Time, 64)
	synced := make(chan struct{})
	go func() {
		for ev := range be.Watch(wctx, syncer.IPAMBlockPrefix, 0) {
			switch ev.Type {
			case datastore.EventInSync:
				close(synced)
			case datastore.EventModified, datastore.EventAdded:
				select {
				case blockChanged <- time.Now():
				default:
				}
			}
		}
	}()
	<-synced
	at := hosts[0].Name
	run.Logf("%s: lab %s up in %v; moving %s %d times over %d hosts", c.name, name, c.up.Round(time.Millisecond), ip, o.moves, o.hosts)
	for i := 1; i <= o.moves; i++ {
		to := at
		for to == at || to == hosts[0].Name {
			to = hosts[rand.IntN(len(hosts))].Name
		}
		start := time.Now()
		if err := l.DelWorkload(ctx, w.ID()); err != nil {
			run.Fatalf("move %d: %v", i, err)
		}
		for len(blockChanged) > 0 {
			<-blockChanged
		}
		// Poll from before the ADD: the routes may change before it
		// returns (it also starts the workload's server).
		want := via(to)
		routed := make(chan time.Time, 1)
		go func() {
			pending := map[string]bool{}
			for _, h := range hosts {
				if h.Name != to {
					pending[h.Name] = true
				}
			}
			deadline := time.Now().Add(30 * time.Second)
			for len(pending) > 0 && time.Now().Before(deadline) {
				for h := range pending {
					if routesTo(handles[h], ip, want) {
						delete(pending, h)
					}
				}
				if len(pending) > 0 {
					time.Sleep(time.Millisecond)
				}
			}
			if len(pending) > 0 {
				run.Fatalf("move %d of %s to %s: after 30 s %v still do not route it there", i, ip, to, slices.Sorted(maps.Keys(pending)))
			}
			routed <- time.Now()
		}()
		if w, err = l.AddWorkload(ctx, lab.WorkloadSpec{Name: fmt.Sprintf("mover%d", i), Host: to, Listen: []string{"tcp:80"}, IP: ip.String()}); err != nil {
			run.Fatalf("move %d: %v", i, err)
		}
		done := <-routed
		var assigned time.Time
		select {
		case assigned = <-blockChanged:
		case <-time.After(5 * time.Second):
			run.Fatalf("move %d: no IPAM block change seen for the ADD", i)
		}
		c.routed = append(c.routed, max(done.Sub(assigned), 0))
		c.total = append(c.total, done.Sub(start))
		at = to
	}
}

// routesTo reports whether h's route to ip goes via one of want.
func routesTo(h *netlink.Handle, ip net.IP, want []netip.Addr) bool {
	rs, err := h.RouteGet(ip)
	if err != nil || len(rs) == 0 {
		return false
	}
	gw, ok := netip.AddrFromSlice(rs[0].Gw.To4())
	return ok && slices.Contains(want, gw)
}

func printMoves(w *os.File, o movesOptions, cases []*moveCase) {
	fmt.Fprintf(w, "### Address moves: %d moves between %d hosts (load average %s)\n\n", o.moves, o.hosts, labrun.LoadAverage())
	row := sideBySide(w, cases, func(c *moveCase) string { return c.name })
	row("every other host routes to the new host, from the commit of the address's allocation to it: p50 / p99 / max", func(c *moveCase) string {
		return fmt.Sprintf("%s / **%s** / %s", msOf(pct(c.routed, 0.5)), msOf(pct(c.routed, 0.99)), msOf(pct(c.routed, 1)))
	})
	row("the whole move, from the old workload's CNI DEL: p50 / p99", func(c *moveCase) string {
		return fmt.Sprintf("%s / %s", msOf(pct(c.total, 0.5)), msOf(pct(c.total, 0.99)))
	})
	fmt.Fprintln(w)
}

// sideBySide prints a markdown table's header, a column per case, and
// returns what prints one row: a cell per case.
func sideBySide[T any](w io.Writer, cases []T, name func(T) string) func(what string, cell func(T) string) {
	fmt.Fprintf(w, "| measurement |")
	for _, c := range cases {
		fmt.Fprintf(w, " %s |", name(c))
	}
	fmt.Fprintf(w, "\n|---|")
	for range cases {
		fmt.Fprintf(w, "---|")
	}
	fmt.Fprintln(w)
	return func(what string, cell func(T) string) {
		fmt.Fprintf(w, "| %s |", what)
		for _, c := range cases {
			fmt.Fprintf(w, " %s |", cell(c))
		}
		fmt.Fprintln(w)
	}
}

// pct is the p-th (0..1) of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	return rank(slices.Sorted(slices.Values(ds)), p)
}

// rank is the p-th (0..1) of sorted: the value at index p×len, the last
// for p = 1; 0 when there is none.
func rank(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func msOf(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}
