package main_test

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/ti-mo/conntrack"

	"github.com/tortie/tortie/pkg/flowlog"
)

// TestAgentFlowLogs runs tortie-node with flow logs on and `tortie flows
// -f` beside it, in the host namespace as an operator would: connections
// allowed and denied by a policy rule, a tier's end and a profile each come
// out as records naming the deciding rule, within a second of the
// connection; a filter keeps what it should; the per-rule counters count.
//
// A staged policy that would deny a's connections to b shows in every
// record what it would have done.
func TestAgentFlowLogs(t *testing.T) {
	l, _, cl := newAgentLab(t)
	cli := buildCLI(t)
	apply(t, cl, profile, wep("a", ipA, "a"), wep("b", ipB, "server"), wep("c", ipC, "c"), allowFrom("a"), stagedDenyA)
	l.serve(&server{})
	l.startAgentWith(9099, []string{"FELIX_FLOWLOGSLOCALREPORTER=Enabled", "FELIX_FLOWLOGSFLUSHINTERVAL=2s", "TORTIE_FLOW_TOTALS=true"},
		"--health-addr", ":9099", "--metrics-addr", ":9091")

	flows := exec.Command("ip", "netns", "exec", l.host, cli, "flows", "-f", "--last", "0", "--namespace", "ns1", "-o", "json")
	out, err := flows.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	flows.Stderr = &stderr
	if err := flows.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = flows.Process.Kill(); _ = flows.Wait() })
	type arrival struct {
		rec flowlog.Record
		at  time.Time
	}
	recs := make(chan arrival, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var r flowlog.Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Errorf("tortie flows -o json wrote %q: %v", sc.Text(), err)
				continue
			}
			recs <- arrival{r, time.Now()}
		}
		close(recs)
	}()
	time.Sleep(300 * time.Millisecond) // the follower's request is in

	// Each connection is logged on both sides: the client's egress, the
	// server's ingress.
	type want struct {
		dir, action, decision string
		staged                string // "" when the staged policy changes nothing there
	}
	cases := []struct {
		from, to, name string
		connects       bool
		want           []want
	}{
		{"calia", ipB + ":80", "a -> b:80", true, []want{
			{"Egress", "Allow", "profile kns.ns1, rule 0", "Allow by profile kns.ns1, rule 0"},
			{"Ingress", "Allow", "tier default, policy ns1/web, rule 0", "Deny by tier default, staged policy ns1/web, rule 0"}}},
		{"calic", ipB + ":80", "c -> b:80", false, []want{
			{"Egress", "Allow", "profile kns.ns1, rule 0", "Allow by profile kns.ns1, rule 0"},
			{"Ingress", "Deny", "end of tier default (no policy in it decided)", "Deny by end of tier default (no policy in it decided)"}}},
		{"calib", ipA + ":80", "b -> a:80", false, []want{
			{"Egress", "Allow", "profile kns.ns1, rule 0", "Allow by profile kns.ns1, rule 0"},
			{"Ingress", "Allow", "profile kns.ns1, rule 0", "Allow by profile kns.ns1, rule 0"}}},
	}
	for _, c := range cases {
		t0 := time.Now()
		if got := l.connects(c.from, c.to, 300*time.Millisecond); got != c.connects && c.name != "b -> a:80" {
			t.Fatalf("%s: connects %v, want %v", c.name, got, c.connects)
		}
		for _, w := range c.want {
			select {
			case a, ok := <-recs:
				if !ok {
					t.Fatalf("tortie flows ended: %s", stderr.String())
				}
				r := a.rec
				got := want{string(r.Direction), string(r.Action), r.Decision.String(), ""}
				if r.Staged != nil {
					got.staged = string(r.Staged.Action) + " by " + r.Staged.Decision.String()
				}
				if got != w {
					t.Errorf("%s: record %+v, want %+v\n%+v", c.name, got, w, r)
				}
				if r.Connections != 1 || r.Node != "host1" || r.Src.Namespace != "ns1" || r.Dst.Port != 80 {
					t.Errorf("%s: record %+v", c.name, r)
				}
				lat := a.at.Sub(t0)
				t.Logf("%s %s: %s %s by %s, printed by tortie flows -f %v after the connect began", c.name, w.dir, r.Src, r.Action, r.Decision, lat.Round(time.Millisecond))
				if lat > time.Second {
					t.Errorf("%s: the record came %v after the connection, want within 1s", c.name, lat)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("%s: no %s record within 3s (stderr %q)", c.name, w.dir, stderr.String())
			}
		}
	}

	// The allowed connection's packets and bytes, when it leaves conntrack
	// (flushed here: closed connections otherwise wait for conntrack's
	// garbage collection, up to a minute): in a later record of the same
	// flow, both sides, no connection folded in it.
	hostNS, err := ns.GetNS("/var/run/netns/" + l.host)
	if err != nil {
		t.Fatal(err)
	}
	defer hostNS.Close()
	err = hostNS.Do(func(ns.NetNS) error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Flush()
	})
	if err != nil {
		t.Fatalf("flushing conntrack: %v", err)
	}
	deadline := time.After(10 * time.Second)
	totals := map[string]flowlog.Record{}
	for len(totals) < 2 {
		select {
		case a, ok := <-recs:
			if !ok {
				t.Fatalf("tortie flows ended: %s", stderr.String())
			}
			r := a.rec
			if r.Src.Addr.String() == ipA && r.Dst.Port == 80 && r.PacketsOut > 0 {
				totals[string(r.Direction)] = r
			}
		case <-deadline:
			_, metrics := l.httpGet(9091, "/metrics")
			t.Fatalf("no packet and byte totals for a -> b:80 within 10s (got %v); %s; %s", totals, grepLine(metrics, "tortie_flowlog_connections_ended_total"), grepLine(metrics, "tortie_flowlog_conntrack_destroy_events_total"))
		}
	}
	for dir, r := range totals {
		// SYN, ACK, FIN, ACK at least one way; SYN-ACK, FIN-ACK back.
		if r.Connections != 0 || r.PacketsOut < 3 || r.PacketsIn < 2 || r.BytesOut < 120 || r.Action != "Allow" {
			t.Errorf("%s totals record %+v", dir, r)
		}
		t.Logf("a -> b:80 %s: %d packets / %d bytes out, %d / %d back", dir, r.PacketsOut, r.BytesOut, r.PacketsIn, r.BytesIn)
	}

	// A filter, from the ring: only the denied one.
	last, err := exec.Command("ip", "netns", "exec", l.host, cli, "flows", "--last", "10", "--action", "deny", "--namespace", "ns1").CombinedOutput()
	if err != nil {
		t.Fatalf("tortie flows --action deny: %v\n%s", err, last)
	}
	lines := strings.Split(strings.TrimSpace(string(last)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "ns1/c (10.65.0.4:") || !strings.Contains(lines[0], "-> ns1/b (10.65.0.3:80) TCP ingress DENIED by end of tier default") {
		t.Errorf("tortie flows --action deny:\n%s", last)
	}
	if out, err := exec.Command(cli, "flows", "--port", "x").CombinedOutput(); err == nil || !strings.Contains(string(out), `bad filter: --port "x": want a number 1-65535`) {
		t.Errorf("a bad filter: %v %s", err, out)
	}
	// From outside the host (not loopback): refused.
	if code, body := l.httpGet(9099, "/status/flows"); code != 403 {
		t.Errorf("flows from a remote address: %d %s, want 403", code, body)
	}
	_, metrics := l.httpGet(9091, "/metrics")
	// (The host's own IPv6 multicast listener reports to the workloads are
	// denied by the server's tier too, so that count is not exact.)
	for _, want := range []string{
		`tortie_policy_rule_connections_total{action="Allow",direction="Ingress",kind="rule",policy="ns1/web",rule="0",tier="default"} 1`,
		`tortie_policy_rule_connections_total{action="Deny",direction="Ingress",kind="tier default",policy="",rule="",tier="default"} `,
		`tortie_flowlog_packets_lost_total 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics: no %s in\n%s", want, grepLine(metrics, "tortie_policy_rule")+"\n"+grepLine(metrics, "tortie_flowlog"))
		}
	}
}

// buildCLI builds the tortie CLI for a test.
func buildCLI(t *testing.T) string {
	t.Helper()
	cli := filepath.Join(t.TempDir(), "tortie")
	if out, err := exec.Command("go", "build", "-o", cli, "github.com/tortie/tortie/cmd/tortie").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return cli
}

// stagedDenyA would replace the server's policy web with one that denies
// a (stagedAction Set, the default).
const stagedDenyA = `
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {namespace: ns1, name: web}
spec:
  selector: "role == 'server'"
  types: [Ingress]
  ingress: [{action: Deny, protocol: TCP, source: {selector: "role == 'a'"}}]
`
