package main_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

func felixConfig(name, spec string) string {
	return fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: %s}\nspec: %s\n", name, spec)
}

// TestAgentHonoursFelixConfiguration: a real agent takes its settings
// from FelixConfiguration default and node.<name> and FELIX_* variables,
// with Calico's precedence, and the kernel and its endpoints follow: the
// failsafe ports, the endpoint-to-host action and the natOutgoing address
// in the nftables table, the health and metrics endpoints, the log level.
// The log level changes live; any other change restarts the agent in
// place; bpfEnabled keeps it not ready, saying why.
func TestAgentHonoursFelixConfiguration(t *testing.T) {
	l, _, cl := newAgentLab(t)
	health, metrics := freePort(t, l.rootIP), freePort(t, l.rootIP)
	apply(t, cl, profile, wep("a", ipA, "a"),
		felixConfig("default", fmt.Sprintf(`{logSeverityScreen: Debug, healthHost: 0.0.0.0, healthPort: %d,
  prometheusMetricsEnabled: true, prometheusMetricsPort: %d, failsafeInboundHostPorts: [{protocol: tcp, port: 2222}],
  defaultEndpointToHostAction: Accept, natOutgoingAddress: 192.0.2.77, interfacePrefix: "cali,tap"}`, health, metrics)),
		// The node's own wins over the global one, field by field.
		felixConfig("node.host1", `{failsafeInboundHostPorts: [{protocol: tcp, port: 3333}, {protocol: udp, port: 3334}]}`))

	// The environment wins over both.
	l.startAgentWith(health, []string{"FELIX_FAILSAFEOUTBOUNDHOSTPORTS=tcp:4444"}, "--no-routing")
	pid := l.agent.Process.Pid
	rs := l.ruleset()
	for _, want := range []string{"tcp . 3333", "udp . 3334", "tcp . 4444", `iifname "cali*" accept`, `iifname "tap*" accept`, "snat ip to 192.0.2.77"} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q", want)
		}
	}
	for _, gone := range []string{"tcp . 2222", "tcp . 22 ", "udp . 53", `iifname "cali*" drop`} {
		if strings.Contains(rs, gone) {
			t.Errorf("ruleset still has %q", gone)
		}
	}
	if code, body := l.httpGet(metrics, "/metrics"); code != 200 || !strings.Contains(body, "tortie_ready 1") {
		t.Errorf("metrics on the configured port: %d %q", code, grepLine(body, "tortie_ready"))
	}
	if code, _ := l.httpGet(9091, "/metrics"); code == 200 {
		t.Error("metrics also on the default port")
	}
	if !strings.Contains(l.log(), "level=DEBUG") {
		t.Error("no debug lines with logSeverityScreen Debug")
	}

	// Live: the log level, no restart.
	apply(t, cl, felixConfig("default", fmt.Sprintf(`{logSeverityScreen: Warning, healthHost: 0.0.0.0, healthPort: %d,
  prometheusMetricsEnabled: true, prometheusMetricsPort: %d, failsafeInboundHostPorts: [{protocol: tcp, port: 2222}],
  defaultEndpointToHostAction: Accept, natOutgoingAddress: 192.0.2.77, interfacePrefix: "cali,tap"}`, health, metrics)))
	l.waitLog(`msg="log level changed" component=config logSeverityScreen=Warning`)
	before := strings.Count(l.log(), "level=DEBUG")
	time.Sleep(300 * time.Millisecond)
	if after := strings.Count(l.log(), "level=DEBUG"); after != before {
		t.Errorf("%d debug lines after the level went to Warning", after-before)
	}

	// Anything else: the agent restarts itself (same process, exec) and the
	// table follows, without being flushed on the way.
	apply(t, cl, felixConfig("node.host1", `{failsafeInboundHostPorts: [{protocol: tcp, port: 5555}]}`))
	l.waitLog("failsafeInboundHostPorts (FelixConfiguration node.host1)")
	l.waitReadyOn(health, 30*time.Second)
	waitFor(t, "the new failsafe port", func() bool { return strings.Contains(l.ruleset(), "tcp . 5555") })
	if rs := l.ruleset(); strings.Contains(rs, "tcp . 3333") {
		t.Error("old failsafe port still there after the restart")
	}
	if l.agent.Process.Pid != pid {
		t.Errorf("pid %d, want the same process %d restarted in place", l.agent.Process.Pid, pid)
	}

	// bpfEnabled: not ready, and /readiness says why.
	apply(t, cl, felixConfig("node.host1", `{failsafeInboundHostPorts: [{protocol: tcp, port: 5555}], bpfEnabled: true}`))
	waitFor(t, "not ready for bpfEnabled", func() bool {
		code, body := l.httpGet(health, "/readiness")
		return code == 503 && strings.Contains(body, "bpfEnabled is true (FelixConfiguration node.host1)")
	})
	if !strings.Contains(l.ruleset(), "tcp . 5555") {
		t.Error("policy no longer programmed while bpfEnabled is refused")
	}
	apply(t, cl, felixConfig("node.host1", `{failsafeInboundHostPorts: [{protocol: tcp, port: 5555}], bpfEnabled: false}`))
	l.waitReadyOn(health, 30*time.Second)
}

func (l *lab) log() string {
	b, _ := os.ReadFile(l.agentLog)
	return string(b)
}

func (l *lab) waitLog(sub string) {
	l.t.Helper()
	waitFor(l.t, "log line "+sub, func() bool { return strings.Contains(l.log(), sub) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentSafeDefaults: with no flag and no FelixConfiguration saying
// otherwise, the health endpoint listens on the host's loopback only and
// metrics are not served at all.
func TestAgentSafeDefaults(t *testing.T) {
	l, _, cl := newAgentLab(t)
	apply(t, cl, profile, wep("a", ipA, "a"))
	l.starts++
	logf, err := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	l.agentLog = logf.Name()
	cmd := exec.Command("ip", "netns", "exec", l.host, l.bin, "--node-name", "host1", "--etcd-endpoints", l.etcdURL,
		"--nodename-file", "-", "--no-routing")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", tail([]byte(l.log()), 3000))
		}
	})

	hostNS, err := ns.GetNS("/run/netns/" + l.host)
	if err != nil {
		t.Fatal(err)
	}
	defer hostNS.Close()
	// inHost asks for /readiness from inside the host namespace (the
	// connection is opened on this locked thread, in that namespace).
	inHost := func(addr string) (int, error) {
		code := 0
		err := hostNS.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Second))
			if _, err := io.WriteString(c, "GET /readiness HTTP/1.0\r\n\r\n"); err != nil {
				return err
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return err
			}
			resp.Body.Close()
			code = resp.StatusCode
			return nil
		})
		return code, err
	}
	waitFor(t, "ready on the host's loopback", func() bool { code, _ := inHost("127.0.0.1:9099"); return code == http.StatusOK })
	if code, _ := l.httpGet(9099, "/readiness"); code != 0 {
		t.Errorf("health answered on the host's address (%d): want loopback only", code)
	}
	if _, err := inHost(net.JoinHostPort(l.hostIP.String(), "9091")); err == nil {
		t.Error("metrics served on 9091 without being asked for")
	}
	if _, err := inHost("127.0.0.1:9091"); err == nil {
		t.Error("metrics served on loopback 9091 without being asked for")
	}
}
