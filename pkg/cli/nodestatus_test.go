package cli

import (
	"bytes"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/pkg/nodestatus"
	"github.com/tortie/tortie/pkg/routing"
)

func TestNodeStatus(t *testing.T) {
	now := time.Now()
	since := time.Date(now.Year(), now.Month(), now.Day(), 0, 30, 4, 0, now.Location())
	st := routing.Status{
		NodeName: "h1", Ready: true, BGPEnabled: true,
		Peers: []routing.PeerStatus{
			{Address: "172.17.8.102", Family: routing.FamilyIPv4, Type: "node-to-node mesh", State: "Established", Since: since},
			{Address: "10.0.0.254", Family: routing.FamilyIPv4, Type: "global", State: "Active", Since: time.Date(2020, 1, 2, 3, 4, 5, 0, now.Location()),
				Info: "Connect: TCP MD5 authentication failed"},
		},
		Warnings: []string{"BGPPeer tor: password secret bgp key tor not found; session not configured"},
	}
	srv := httptest.NewServer(routing.StatusHandler(func() routing.Status { return st }))
	defer srv.Close()

	var out, errw bytes.Buffer
	root := NewRootCommand(strings.NewReader(""), &out, &errw)
	root.SetArgs([]string{"node", "status", "--agent-address", strings.TrimPrefix(srv.URL, "http://")})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	want := `tortie-node is running.

IPv4 BGP status
+--------------+-------------------+-------+------------+-----------------------------------------------+
| PEER ADDRESS |     PEER TYPE     | STATE |   SINCE    |                     INFO                      |
+--------------+-------------------+-------+------------+-----------------------------------------------+
| 172.17.8.102 | node-to-node mesh | up    | 00:30:04   | Established                                   |
| 10.0.0.254   | global            | start | 2020-01-02 | Active Connect: TCP MD5 authentication failed |
+--------------+-------------------+-------+------------+-----------------------------------------------+

IPv6 BGP status
No IPv6 peers found.

Warnings:
  - BGPPeer tor: password secret bgp key tor not found; session not configured

`
	if got := out.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// The layout of calicoctl's own example, cell for cell.
func TestNodeStatusCalicoLayout(t *testing.T) {
	var b bytes.Buffer
	writeBoxTable(&b, []string{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"},
		[][]string{{"172.17.8.102", "node-to-node mesh", "up", "23:30:04", "Established"}})
	want := `+--------------+-------------------+-------+----------+-------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |
+--------------+-------------------+-------+----------+-------------+
| 172.17.8.102 | node-to-node mesh | up    | 23:30:04 | Established |
+--------------+-------------------+-------+----------+-------------+
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestNodeStatusNotRunning(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	var out, errw bytes.Buffer
	root := NewRootCommand(strings.NewReader(""), &out, &errw)
	root.SetArgs([]string{"node", "status", "--agent-address", addr})
	err = root.Execute()
	if err == nil || !strings.Contains(err.Error(), "tortie-node is not running") {
		t.Errorf("err = %v", err)
	}
	// Main turns the error into exit status 1.
	if code := Main([]string{"node", "status", "--agent-address", addr}); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
}

func TestNodeStatusBGPOff(t *testing.T) {
	var b bytes.Buffer
	printNodeStatus(&b, &routing.Status{BGPDisabledReason: "the Node has no spec.bgp.ipv4Address"}, time.Now())
	if !strings.Contains(b.String(), "BGP is not running: the Node has no spec.bgp.ipv4Address") || !strings.Contains(b.String(), "No IPv4 peers found.") {
		t.Error(b.String())
	}
}

// Not ready: the last apply's error comes first, a line a cause, then the
// tables and the warnings as ever.
func TestNodeStatusNotReady(t *testing.T) {
	st := &routing.Status{
		NodeName: "h1", Ready: true, BGPEnabled: true,
		LastError: "this host's kernel has no IP-in-IP support (no ipip module): traffic to other hosts' blocks of " +
			"pool default-ipv4-ippool (10.48.0.0/16, ipipMode Always) is not routed; use vxlanMode instead\n" +
			"BGP speaker: listen tcp :179: address already in use",
		Warnings: []string{"BGPPeer tor: password secret bgp key tor not found; session not configured"},
	}
	var b bytes.Buffer
	printNodeStatus(&b, st, time.Now())
	want := `tortie-node is running.

Routing is not ready: its last apply failed:
  - this host's kernel has no IP-in-IP support (no ipip module): traffic to other hosts' blocks of pool default-ipv4-ippool (10.48.0.0/16, ipipMode Always) is not routed; use vxlanMode instead
  - BGP speaker: listen tcp :179: address already in use

IPv4 BGP status
No IPv4 peers found.

IPv6 BGP status
No IPv6 peers found.

Warnings:
  - BGPPeer tor: password secret bgp key tor not found; session not configured

`
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	// Before the first apply: not ready, nothing failed yet.
	b.Reset()
	printNodeStatus(&b, &routing.Status{BGPEnabled: true}, time.Now())
	if !strings.Contains(b.String(), "Routing is not ready: not programmed yet.") {
		t.Error(b.String())
	}
}

func TestNodeStatusWireguard(t *testing.T) {
	now := time.Now()
	st := &routing.Status{
		NodeName: "h1", Ready: true, BGPEnabled: true, WorkloadMTU: 1440, HostMTU: 1500, MTUFile: "/var/lib/tortie/mtu",
		Wireguard: &nodestatus.WireguardStatus{
			Device: "wireguard.cali", Kind: "userspace", PublicKey: "KEYA=", ListenPort: 51820, Addr: "10.244.0.1", MTU: 1440,
			Peers: []nodestatus.WireguardPeer{
				{Node: "h2", PublicKey: "KEYB=", Endpoint: "10.0.0.2:51820", AllowedIPs: []string{"10.244.0.65/32", "10.244.0.64/26"},
					LatestHandshake: now.Add(-42 * time.Second), ReceivedBytes: 1536, SentBytes: 3 << 20},
				{Node: "h3", PublicKey: "KEYC=", AllowedIPs: []string{"10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26", "10.244.4.0/26"}},
			},
			Unencrypted: []string{"h4: no WireGuard public key; its workloads are reached unencrypted"},
		},
	}
	var b bytes.Buffer
	printNodeStatus(&b, st, now)
	want := `
Workload MTU 1440 (host 1500), kept in /var/lib/tortie/mtu for the CNI plugin

WireGuard: userspace device wireguard.cali, port 51820, address 10.244.0.1, MTU 1440
public key KEYA=
+------+----------------+-----------------------------------------------------+------------------+----------+----------+
| NODE |    ENDPOINT    |                     ALLOWED IPS                     | LATEST HANDSHAKE | RECEIVED |   SENT   |
+------+----------------+-----------------------------------------------------+------------------+----------+----------+
| h2   | 10.0.0.2:51820 | 10.244.0.65/32,10.244.0.64/26                       | 42s ago          | 1.50 KiB | 3.00 MiB |
| h3   |                | 10.244.1.0/26,10.244.2.0/26,10.244.3.0/26 (+1 more) | never            | 0 B      | 0 B      |
+------+----------------+-----------------------------------------------------+------------------+----------+----------+
Reached unencrypted:
  - h4: no WireGuard public key; its workloads are reached unencrypted
`
	if got := b.String(); !strings.Contains(got, want) {
		t.Errorf("got:\n%s\nwant within it:\n%s", got, want)
	}
}
