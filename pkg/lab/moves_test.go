package lab_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/lab"
)

// TestAddressMoves: a workload's address moves to another host (the
// workload deleted, one added elsewhere with its address, as a VM
// migrating or an address re-assigned) and back, over BGP and over VXLAN.
// Every other host routes it to the new host (the /32 the new host
// advertises for an address of another host's block, withdrawn when it
// moves back), and a client reaches it there.
func TestAddressMoves(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"bgp-mesh", nil},
		{"vxlan", []string{"--encap", "vxlan"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := upLab(t, append([]string{"--hosts", "3"}, c.args...)...)
			addWorkload(t, name, "default", "mover", "h1", "")
			addWorkload(t, name, "default", "client", "h3", "")
			l, err := lab.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			w, err := l.Workload("mover")
			if err != nil {
				t.Fatal(err)
			}
			addr, _, _ := strings.Cut(w.IPs[0], "/")
			hostAddr := map[string]string{}
			for _, h := range l.State().Hosts {
				hostAddr[h.Name] = h.Addr
			}
			ctx := context.Background()
			reach := func(to string) time.Duration {
				t.Helper()
				t0 := time.Now()
				for deadline := t0.Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					r, err := l.Probe(ctx, "client", to, 80, "tcp", 4, 300*time.Millisecond)
					if err != nil {
						t.Fatal(err)
					}
					if r.Connected {
						return time.Since(t0)
					}
				}
				t.Fatalf("client never reached %s at %s", to, addr)
				return 0
			}
			// routedVia waits until host h routes addr to host via.
			routedVia := func(h, via string) {
				t.Helper()
				var out string
				for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
					b, err := exec.Command("ip", "-n", name+"-"+h, "route", "get", addr).CombinedOutput()
					if out = string(b); err == nil && routesTo(out, name, via, hostAddr[via]) {
						return
					}
				}
				t.Fatalf("%s routes %s: %s; want it through %s (%s)", h, addr, out, via, hostAddr[via])
			}
			reach("mover")

			move := func(from, to, newName string) {
				t.Helper()
				t0 := time.Now()
				mustTortie(t, "lab", "--name", name, "workload", "del", from)
				mustTortie(t, "lab", "--name", name, "workload", "add", newName, "--host", to, "--ip", addr)
				if l, err = lab.Open(name); err != nil { // it knows the new workload
					t.Fatal(err)
				}
				took := reach(newName)
				t.Logf("timing: %s: %s moved to %s, client reaches it after %v (%v since the delete)", c.name, addr, to, took.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
				for _, h := range []string{"h1", "h2", "h3"} {
					if h != to {
						routedVia(h, to)
					}
				}
			}
			move("mover", "h2", "moved")
			// Back home, into its own host's block: the /32 is withdrawn
			// and the block's route leads there again.
			move("moved", "h1", "home")
		})
	}
}

// routesTo reports whether `ip route get` output leads to host (of lab
// labName) whose fabric address is hostAddr: via it natively, or through
// the VXLAN device via its tunnel address (the address of its
// vxlan.calico).
func routesTo(out, labName, host, hostAddr string) bool {
	if strings.Contains(out, "via "+hostAddr+" ") {
		return true
	}
	if !strings.Contains(out, "dev vxlan.calico") {
		return false
	}
	b, err := exec.Command("ip", "-n", labName+"-"+host, "-4", "-o", "addr", "show", "dev", "vxlan.calico").Output()
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			tun, _, _ := strings.Cut(f[i+1], "/")
			return strings.Contains(out, "via "+tun+" ")
		}
	}
	return false
}
