package main_test

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tortie/tortie/pkg/flowlog"
)

// kindsPolicies put every kind of deciding rule in front of the server b:
// a net rule in a first tier whose last rule passes to the default tier,
// where a selector-and-port rule, a named-port rule and an ICMP rule
// allow, and the tier's end denies; the clients' egress is their
// profile's. A staged policy would replace the default tier's policy with
// one that denies a.
const kindsPolicies = `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.quarantine}
spec:
  tier: security
  order: 10
  selector: "role == 'server'"
  types: [Ingress]
  ingress:
  - {action: Deny, protocol: TCP, source: {nets: [10.65.0.4/32]}, destination: {ports: [81]}}
  - {action: Pass}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: ns1, name: web}
spec:
  selector: "role == 'server'"
  types: [Ingress]
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: "role == 'a'"}, destination: {ports: [80]}}
  - {action: Allow, protocol: TCP, destination: {ports: [http]}}
  - {action: Allow, protocol: ICMP, icmp: {type: 8}}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {namespace: ns1, name: web}
spec:
  selector: "role == 'server'"
  types: [Ingress]
  ingress:
  - {action: Deny, source: {selector: "role == 'a'"}}
  - {action: Allow}
`

// serverWithNamedPort is b with a named port http = TCP 8080.
const serverWithNamedPort = `
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: ns1, labels: {role: server}}
spec: {node: host1, orchestrator: k8s, pod: b, endpoint: eth0, interfaceName: calib, ipNetworks: [10.65.0.3/32], profiles: [kns.ns1],
  ports: [{name: http, protocol: TCP, port: 8080}]}
`

// TestFlowLogsRuleKinds probes the server through every kind of deciding
// rule (TCP, UDP and ICMP echo) and checks that the agent's flow record of
// each connection names the rule the policies say, on both sides, with
// what the staged policy would have done.
func TestFlowLogsRuleKinds(t *testing.T) {
	l, _, cl := newAgentLab(t)
	cli := buildCLI(t)
	docs := []string{profile, wep("a", ipA, "a"), serverWithNamedPort, wep("c", ipC, "c")}
	docs = append(docs, strings.Split(kindsPolicies, "\n---\n")...)
	apply(t, cl, docs...)
	l.serve(&server{})
	err := l.wls["calib"].Do(func(ns.NetNS) error {
		ln, err := net.Listen("tcp", net.JoinHostPort(ipB, "8080"))
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l.startAgentWith(9099, []string{"FELIX_FLOWLOGSLOCALREPORTER=Enabled"}, "--health-addr", ":9099")

	type want struct{ action, decision, staged string }
	const (
		profileAllow = "Allow by profile kns.ns1, rule 0"
		stagedAllow  = "Allow by tier default, staged policy ns1/web, rule 1"
		stagedDenyA  = "Deny by tier default, staged policy ns1/web, rule 0"
	)
	cases := []struct {
		name, from, proto string
		port              int
		connects          bool
		egress, ingress   want
	}{
		{"selector and port", "calia", "tcp", 80, true,
			want{"Allow", "profile kns.ns1, rule 0", profileAllow},
			want{"Allow", "tier default, policy ns1/web, rule 0", stagedDenyA}},
		{"net, first tier", "calic", "tcp", 81, false,
			want{"Allow", "profile kns.ns1, rule 0", profileAllow},
			want{"Deny", "tier security, policy security.quarantine, rule 0", "Deny by tier security, policy security.quarantine, rule 0"}},
		{"named port, after a pass", "calic", "tcp", 8080, true,
			want{"Allow", "profile kns.ns1, rule 0", profileAllow},
			want{"Allow", "tier default, policy ns1/web, rule 1", stagedAllow}},
		{"icmp", "calia", "icmp", 0, true,
			want{"Allow", "profile kns.ns1, rule 0", profileAllow},
			want{"Allow", "tier default, policy ns1/web, rule 2", stagedDenyA}},
		{"end of tier", "calic", "udp", 53, false,
			want{"Allow", "profile kns.ns1, rule 0", profileAllow},
			want{"Deny", "end of tier default (no policy in it decided)", stagedAllow}},
	}
	src := map[string]string{"calia": ipA, "calic": ipC}
	for _, c := range cases {
		if got := probeKind(t, l, c.from, c.proto, c.port); got != c.connects && c.proto != "udp" {
			t.Fatalf("%s: %s to b:%d got through %v, want %v", c.name, c.proto, c.port, got, c.connects)
		}
	}
	// Away from local workloads, the client's egress decision (numbered
	// in the mark) is logged by the base chains: to the host (input; the
	// endpoint-to-host action then drops it) and through it (forward).
	away := map[string]string{"to the host": l.hostIP.String(), "through the host": l.rootIP.String()}
	for _, addr := range away {
		l.connects("calia", net.JoinHostPort(addr, "9"), 300*time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the records of the last probe are read
	out, err := exec.Command("ip", "netns", "exec", l.host, cli, "flows", "--last", "1000", "--namespace", "ns1", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("tortie flows: %v\n%s", err, out)
	}
	var recs []flowlog.Record
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r flowlog.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		recs = append(recs, r)
	}
	for what, addr := range away {
		n := 0
		for _, r := range recs {
			if r.Src.Addr.String() == ipA && r.Dst.Addr.String() == addr && r.Dst.Port == 9 {
				n++
				if got := string(r.Direction) + " " + string(r.Action) + " by " + r.Decision.String(); got != "Egress "+profileAllow {
					t.Errorf("a %s: %s, want Egress %s", what, got, profileAllow)
				}
			}
		}
		if n != 1 {
			t.Errorf("a %s (%s:9): %d records, want 1 (all: %+v)", what, addr, n, recs)
		}
	}
	for _, c := range cases {
		for _, side := range []struct {
			dir string
			w   want
		}{{"Egress", c.egress}, {"Ingress", c.ingress}} {
			var found []flowlog.Record
			for _, r := range recs {
				proto := map[string]string{"tcp": "TCP", "udp": "UDP", "icmp": "ICMP"}[c.proto]
				if r.Src.Addr.String() == src[c.from] && r.Dst.Addr.String() == ipB && r.Protocol == proto &&
					int(r.Dst.Port) == c.port && string(r.Direction) == side.dir {
					found = append(found, r)
				}
			}
			if len(found) != 1 {
				t.Errorf("%s, %s: %d records, want 1 (all: %+v)", c.name, side.dir, len(found), recs)
				continue
			}
			r := found[0]
			got := want{string(r.Action), r.Decision.String(), ""}
			if r.Staged != nil {
				got.staged = string(r.Staged.Action) + " by " + r.Staged.Decision.String()
			}
			if got != side.w {
				t.Errorf("%s, %s:\n got  %+v\n want %+v", c.name, side.dir, got, side.w)
			}
		}
	}
}

// probeKind sends one connection's first packet from a client workload to
// b: a TCP connect, a UDP datagram (reports false: there is no answer to
// wait for), or an ICMP echo (true when the reply came).
func probeKind(t *testing.T, l *lab, from, proto string, port int) bool {
	t.Helper()
	switch proto {
	case "tcp":
		return l.connects(from, net.JoinHostPort(ipB, strconv.Itoa(port)), 300*time.Millisecond)
	case "udp":
		_ = l.wls[from].Do(func(ns.NetNS) error {
			c, err := net.Dial("udp", net.JoinHostPort(ipB, strconv.Itoa(port)))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("probe"))
			return err
		})
		return false
	}
	ok := false
	err := l.wls[from].Do(func(ns.NetNS) error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1} // echo request, id 0x1234, seq 1
		sum := 0
		for i := 0; i < len(msg); i += 2 {
			sum += int(binary.BigEndian.Uint16(msg[i:]))
		}
		sum = (sum >> 16) + (sum & 0xffff)
		binary.BigEndian.PutUint16(msg[2:], ^uint16(sum+(sum>>16)))
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: net.ParseIP(ipB)}); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 128)
		for {
			n, peer, err := c.ReadFrom(buf)
			if err != nil {
				return nil
			}
			if peer.String() == ipB && n >= 8 && buf[0] == 0 {
				ok = true
				return nil
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
