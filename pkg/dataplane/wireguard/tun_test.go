package wireguard

import (
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tortie/tortie/internal/testenv"
)

// TestNSTUN makes a TUN interface in a namespace other than the test's and
// checks what the userspace device would see of it through nsTUN, from
// goroutines that are not in that namespace: the interface coming up is not
// passed on (Ensure brings the device up itself), an MTU change is, and the
// MTU is read from the right interface.
func TestNSTUN(t *testing.T) {
	testenv.RequireRoot(t)
	n, name := testenv.NewNS(t)
	var raw tun.Device
	if err := n.Do(func(ns.NetNS) error {
		f, err := openTUN("wgtun")
		if err != nil {
			return err
		}
		raw, err = tun.CreateTUNFromFile(f, 1420)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Persistent: the namespace's removal deletes it.
	inNS := func(f func() error) error { return ns.WithNetNSPath(n.Path(), func(ns.NetNS) error { return f() }) }
	w := newNSTUN(raw, inNS)
	t.Cleanup(func() { _ = w.Close() })

	if _, err := raw.MTU(); err == nil {
		t.Log("the interface's MTU is readable from the test's namespace too; the check below proves less")
	}
	testenv.Sh(t, "ip", "-n", name, "link", "set", "wgtun", "up")
	testenv.Sh(t, "ip", "-n", name, "link", "set", "wgtun", "mtu", "1380")
	// WireGuard's own watcher reports the interface up from netlink (once
	// it is running) and from polling it every second: 2 s sees both.
	end := time.After(2 * time.Second)
	got := 0
	for {
		select {
		case e := <-w.Events():
			if e&(tun.EventUp|tun.EventDown) != 0 {
				t.Fatalf("event %d passed on: the device would be brought up or down outside its namespace", e)
			}
			if e&tun.EventMTUUpdate == 0 {
				continue
			}
			mtu, err := w.MTU()
			if err != nil {
				t.Fatalf("reading the MTU after an update: %v", err)
			}
			got = mtu
		case <-end:
			if got != 1380 {
				t.Fatalf("MTU after the updates passed on: %d, want 1380", got)
			}
			return
		}
	}
}
