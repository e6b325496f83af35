package main_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
	"github.com/tortie/tortie/pkg/mtu"
)

// TestAgentWireguardOnOff: FelixConfiguration wireguardEnabled turns a real
// agent's WireGuard on (it restarts itself, makes its key file, publishes
// the public key, gets a tunnel address, makes the device and the rule into
// table 1) and off again (it removes all of that), each within one restart.
func TestAgentWireguardOnOff(t *testing.T) {
	l, _, cl := newAgentLab(t)
	keyFile := filepath.Join(t.TempDir(), "wg.key")
	apply(t, cl, profile, `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: wg-pool}
spec: {cidr: 10.66.0.0/16}
`)
	l.startAgentWith(9099, nil, "--no-bgp", "--ip", l.hostIP.String()+"/30", "--health-addr", ":9099", "--wireguard-key-file", keyFile)
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Fatalf("a key file with WireGuard off: %v", err)
	}
	restarts := func() int { return strings.Count(l.log(), `msg=restarting`) }
	// The workload MTU for the CNI plugin: the host's (its veth's 1500)
	// with no tunnel, WireGuard's 60 bytes less with it.
	workloadMTU := func(want int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("workload MTU %d in %s", want, l.mtuFile), func() bool {
			v, err := mtu.Read(l.mtuFile)
			return err == nil && v == want
		})
	}
	l.waitReadyOn(9099, 30*time.Second)
	workloadMTU(1500)

	// With wireguardEnabledV6, which tortie does not do: said, not ignored.
	apply(t, cl, felixConfig("node.host1", `{wireguardEnabled: true, wireguardEnabledV6: true}`))
	waitFor(t, "the agent's restart for wireguardEnabled", func() bool { return restarts() == 1 })
	l.waitReadyOn(9099, 30*time.Second)
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	b, _ := os.ReadFile(keyFile)
	key, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	n := node(t, cl)
	if n.Status.WireguardPublicKey != key.PublicKey().String() || n.Spec.Wireguard == nil ||
		!netip.MustParsePrefix("10.66.0.0/16").Contains(netip.MustParseAddr(n.Spec.Wireguard.InterfaceIPv4Address)) {
		t.Fatalf("Node with WireGuard on: status %+v, spec.wireguard %+v", n.Status, n.Spec.Wireguard)
	}
	waitFor(t, "the device with the Node's address", func() bool {
		out, _ := testenv.ShOut("ip", "-n", l.host, "-o", "addr", "show", "dev", "wireguard.cali")
		return strings.Contains(out, n.Spec.Wireguard.InterfaceIPv4Address+"/32")
	})
	if out := testenv.Sh(t, "ip", "-n", l.host, "rule"); !strings.Contains(out, "not from all fwmark 0x100000/0x100000 lookup 1") {
		t.Errorf("rules:\n%s", out)
	}
	if code, body := l.httpGet(9099, "/status/routing"); code != 200 || !strings.Contains(body, `"publicKey": "`+key.PublicKey().String()) {
		t.Errorf("status: %d\n%s", code, body)
	}
	workloadMTU(1500 - wireguard.Overhead)
	const v6 = "wireguardEnabledV6 is true, but tortie encrypts IPv4 only: IPv6 traffic between hosts is NOT encrypted"
	if _, body := l.httpGet(9099, "/status/routing"); !strings.Contains(body, v6) || !strings.Contains(l.log(), v6) {
		t.Errorf("no warning that IPv6 is not encrypted in the status or the log:\n%s", body)
	}
	if _, body := l.httpGet(9099, "/status/routing"); !strings.Contains(body, fmt.Sprintf(`"workloadMTU": %d`, 1500-wireguard.Overhead)) {
		t.Errorf("status without the workload MTU:\n%s", body)
	}

	apply(t, cl, felixConfig("node.host1", `{wireguardEnabled: false}`))
	waitFor(t, "the agent's restart for wireguardEnabled false", func() bool { return restarts() == 2 })
	l.waitReadyOn(9099, 30*time.Second)
	waitFor(t, "no device", func() bool {
		_, err := testenv.ShOut("ip", "-n", l.host, "link", "show", "wireguard.cali")
		return err != nil
	})
	if out := testenv.Sh(t, "ip", "-n", l.host, "rule"); strings.Contains(out, "lookup 1") {
		t.Errorf("rules after off:\n%s", out)
	}
	if out, err := testenv.ShOut("ip", "-n", l.host, "route", "show", "table", "1"); strings.TrimSpace(out) != "" && !strings.Contains(out, "does not exist") {
		t.Errorf("table 1 after off (%v):\n%s", err, out)
	}
	if n := node(t, cl); n.Status.WireguardPublicKey != "" || n.Spec.Wireguard != nil {
		t.Errorf("Node with WireGuard off: status %+v, spec.wireguard %+v", n.Status, n.Spec.Wireguard)
	}
	workloadMTU(1500)
	if b2, _ := os.ReadFile(keyFile); string(b2) != string(b) {
		t.Error("the key file changed; it is kept for when WireGuard comes back")
	}
}

func node(t *testing.T, cl *client.Client) *v3.Node {
	t.Helper()
	k, _ := v3.KindByKind(v3.KindNode)
	r, err := cl.Get(context.Background(), k, "", "host1")
	if err != nil {
		t.Fatal(err)
	}
	return r.(*v3.Node)
}
