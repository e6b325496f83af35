package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/procstat"
	"github.com/tortie/tortie/pkg/datastore/embedded"
)

var runner = labrun.New("bench/policy")

// fatalf cleans up and exits.
func fatalf(format string, args ...any) { runner.Fatalf(format, args...) }

func run(args ...string) string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Client and server workload addresses; they exist only inside this run's
// namespaces.
var (
	clientIP = netip.MustParseAddr("10.65.0.2")
	serverIP = netip.MustParseAddr("10.65.0.3") // the server the 10,000 rules select
	plainIP  = netip.MustParseAddr("10.65.0.4") // a server no policy selects
	// remoteIP is a client workload of another node: its namespace hangs
	// off the host by a plain (not workload) interface, as traffic routed
	// in from another host arrives, and only the server's side of its
	// connections meets this host's policy.
	remoteIP = netip.MustParseAddr("10.67.0.2")
)

// lab is one "host" network namespace (where tortie-node runs), linked to
// the root namespace by a veth with a /30 out of 198.18.0.0/15, three
// workload namespaces plumbed as Calico's CNI plugin would, and a remote
// client's namespace behind a plain interface.
type lab struct {
	id             string
	host           string // netns names
	client, server string
	plain, remote  string
	clientNS       ns.NetNS
	serverNS       ns.NetNS
	plainNS        ns.NetNS
	remoteNS       ns.NetNS
	rootIP, hostIP netip.Addr
	clientIf       string // host-side interfaces
	serverIf       string
	plainIf        string
	dir            string // temp dir: binaries, data, logs
}

func newLab(dir string) *lab {
	id := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	l := &lab{
		id:     id,
		host:   "tpb-" + id + "-host",
		client: "tpb-" + id + "-cli",
		server: "tpb-" + id + "-srv",
		plain:  "tpb-" + id + "-pln",
		remote: "tpb-" + id + "-rem",
		dir:    dir,
	}
	l.clientIf = fmt.Sprintf("cali%011x", rand.Uint64()&(1<<44-1))
	l.serverIf = fmt.Sprintf("cali%011x", rand.Uint64()&(1<<44-1))
	l.plainIf = fmt.Sprintf("cali%011x", rand.Uint64()&(1<<44-1))
	for _, n := range []string{l.host, l.client, l.server, l.plain, l.remote} {
		run("ip", "netns", "add", n)
		runner.AddCleanup(func() { _ = exec.Command("ip", "netns", "del", n).Run() })
	}
	hn := l.host
	run("ip", "-n", hn, "link", "set", "lo", "up")
	run("ip", "netns", "exec", hn, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	k := rand.IntN(1 << 15)
	base := netip.AddrFrom4([4]byte{198, 18 + byte(k>>14), byte(k >> 6), byte(k<<2) & 0xfc})
	l.rootIP, l.hostIP = base.Next(), base.Next().Next()
	root := "tpb" + id
	run("ip", "link", "add", root, "type", "veth", "peer", "name", "up0", "netns", hn)
	runner.AddCleanup(func() { _ = exec.Command("ip", "link", "del", root).Run() })
	run("ip", "addr", "add", l.rootIP.String()+"/30", "dev", root)
	run("ip", "link", "set", root, "up")
	run("ip", "-n", hn, "addr", "add", l.hostIP.String()+"/30", "dev", "up0")
	run("ip", "-n", hn, "link", "set", "up0", "up")

	// Proxy ARP answers only when the host has a route to 169.254.1.1
	// through another device.
	run("ip", "-n", hn, "link", "add", "dummyhost", "type", "veth", "peer", "name", "dummypeer")
	run("ip", "-n", hn, "link", "set", "dummyhost", "up")
	run("ip", "-n", hn, "link", "set", "dummypeer", "up")
	run("ip", "-n", hn, "route", "add", "169.254.1.1/32", "dev", "dummyhost")

	for _, w := range []struct {
		netns, iface string
		ip           netip.Addr
	}{{l.client, l.clientIf, clientIP}, {l.server, l.serverIf, serverIP}, {l.plain, l.plainIf, plainIP},
		{l.remote, "remote0", remoteIP}} {
		run("ip", "-n", hn, "link", "add", w.iface, "type", "veth", "peer", "name", "eth0", "netns", w.netns)
		run("ip", "-n", hn, "link", "set", w.iface, "address", "ee:ee:ee:ee:ee:ee", "up")
		run("ip", "netns", "exec", hn, "sysctl", "-qw", "net.ipv4.conf."+w.iface+".proxy_arp=1")
		run("ip", "netns", "exec", hn, "sysctl", "-qw", "net.ipv4.neigh."+w.iface+".proxy_delay=0")
		run("ip", "-n", hn, "route", "add", w.ip.String()+"/32", "dev", w.iface, "scope", "link")
		run("ip", "-n", w.netns, "link", "set", "lo", "up")
		run("ip", "-n", w.netns, "link", "set", "eth0", "up")
		run("ip", "-n", w.netns, "addr", "add", w.ip.String()+"/32", "dev", "eth0")
		run("ip", "-n", w.netns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		run("ip", "-n", w.netns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")
	}
	// The client makes tens of thousands of connections: all ports, and
	// no TIME_WAIT (it closes with RST, see crr) to run out of them.
	for _, n := range []string{l.client, l.remote} {
		run("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")
	}
	var err error
	if l.clientNS, err = ns.GetNS("/run/netns/" + l.client); err != nil {
		fatalf("%v", err)
	}
	if l.serverNS, err = ns.GetNS("/run/netns/" + l.server); err != nil {
		fatalf("%v", err)
	}
	if l.plainNS, err = ns.GetNS("/run/netns/" + l.plain); err != nil {
		fatalf("%v", err)
	}
	if l.remoteNS, err = ns.GetNS("/run/netns/" + l.remote); err != nil {
		fatalf("%v", err)
	}
	runner.AddCleanup(func() { l.clientNS.Close(); l.serverNS.Close(); l.plainNS.Close(); l.remoteNS.Close() })
	return l
}

// serveEtcd starts an embedded etcd (in this process) on the root side of
// the veth, on a free port, with its data under the lab's dir.
func (l *lab) serveEtcd(name string) *embedded.Server {
	data := filepath.Join(l.dir, name)
	srv, err := embedded.Serve(context.Background(), embedded.ServeConfig{
		DataDir:         data,
		ListenClientURL: "http://" + net.JoinHostPort(l.rootIP.String(), "0"),
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fatalf("etcd: %v", err)
	}
	runner.AddCleanup(func() { srv.Close(); _ = os.RemoveAll(data) })
	return srv
}

// agent is a running tortie-node in the host namespace.
type agent struct {
	cmd    *exec.Cmd
	pid    int
	log    string
	exited chan struct{}
	once   sync.Once
}

var (
	agentStarts   int
	agentLogLevel = "info"
)

// startAgent execs tortie-node in the host namespace (ip netns exec execs
// the binary in place, so the pid is the agent's).
func (l *lab) startAgent(bin, etcdURL string, env ...string) *agent {
	agentStarts++
	logPath := filepath.Join(l.dir, fmt.Sprintf("agent-%d.log", agentStarts))
	logf, err := os.Create(logPath)
	if err != nil {
		fatalf("%v", err)
	}
	cmd := exec.Command("ip", "netns", "exec", l.host, bin,
		"--node-name", "host1", "--etcd-endpoints", etcdURL, "--log-level", agentLogLevel,
		"--health-addr", ":9099", "--metrics-addr", ":9091")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		fatalf("start agent: %v", err)
	}
	logf.Close()
	a := &agent{cmd: cmd, pid: cmd.Process.Pid, log: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(a.exited) }()
	runner.AddCleanup(a.stop)
	return a
}

// stop ends the agent (SIGTERM, then SIGKILL after 5 s) and waits.
func (a *agent) stop() {
	a.once.Do(func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(5 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.exited
		}
	})
}

func (a *agent) logTail() string {
	b, _ := os.ReadFile(a.log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// settledRSS is the process's VmRSS in kB once it had 2 s to settle after
// what it was doing.
func settledRSS(pid int) int64 {
	time.Sleep(2 * time.Second)
	kb, err := procstat.StatusKB(pid, "VmRSS")
	if err != nil {
		fatalf("%v", err)
	}
	return kb
}

// resetPeak makes the process's VmHWM start again from its VmRSS
// (clear_refs 5), so a later VmHWM is the peak of what followed.
func resetPeak(pid int) {
	if err := procstat.ResetPeak(pid); err != nil {
		fatalf("reset the peak memory of %d: %v", pid, err)
	}
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

var httpc = &http.Client{Timeout: 500 * time.Millisecond}

func (l *lab) httpGet(port int, path string) (int, string) {
	resp, err := httpc.Get("http://" + net.JoinHostPort(l.hostIP.String(), strconv.Itoa(port)) + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady polls /readiness every 2 ms and returns when it said 200.
func (l *lab) waitReady(a *agent, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		if code, _ := l.httpGet(9099, "/readiness"); code == http.StatusOK {
			return time.Now(), nil
		}
		select {
		case <-a.exited:
			return time.Time{}, fmt.Errorf("agent exited; log tail:\n%s", a.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("agent not ready after %v; log tail:\n%s", timeout, a.logTail())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// metric returns the value of an unlabelled metric from the agent.
func (l *lab) metric(name string) (float64, error) {
	code, body := l.httpGet(9091, "/metrics")
	if code != http.StatusOK {
		return 0, fmt.Errorf("metrics: %d %s", code, body)
	}
	// A name without labels sums the metric over all its label values.
	var sum float64
	found := false
	for _, line := range strings.Split(body, "\n") {
		v, ok := strings.CutPrefix(line, name+" ")
		if !ok && !strings.Contains(name, "{") && strings.HasPrefix(line, name+"{") {
			_, v, ok = strings.Cut(line, "} ")
		}
		if ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("metric %s: %w", name, err)
			}
			sum, found = sum+f, true
		}
	}
	if !found {
		return 0, errors.New("no metric " + name)
	}
	return sum, nil
}
