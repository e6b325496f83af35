package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/lab"
)

// LabOptions configure NewLab.
type LabOptions struct {
	// BinDir holds tortie, tortie-node and tortie-cni.
	BinDir string
	// Hosts (default 3), Topology and Encap as `tortie lab up` takes them.
	Hosts           int
	Topology, Encap string
	// Encryption as `tortie lab up --encryption` takes it.
	Encryption string
	// PoolCIDR is the IPv4 pool the workloads get addresses from.
	PoolCIDR string
	// Logf receives progress messages (default: none).
	Logf func(format string, args ...any)
}

// LabCluster is a Cluster on a multi-host lab (pkg/lab): one tortie-node
// per host namespace, BGP between them, workloads made by the lab through
// the real CNI plugin and spread over the hosts.
//
// The datastore side of the Cluster (Apply, Delete, Patch, Get, Reset, the
// pods' endpoint changes) is SingleHost's, pointed at the lab's datastore:
// it is the same code against the same kind of datastore. What differs is
// said here: how pods are made and where, the hosts, the rulesets, and
// Settle, which waits for every host's agent.
type LabCluster struct {
	*SingleHost

	opts  LabOptions
	lab   *lab.Lab
	name  string
	hosts []*Host
	// outside is the lab's router namespace (every host's default
	// gateway, outside every pool): the scenarios' Outside.
	outside *Place
	rtNetns string
	// nsOrder is the order in which Kubernetes namespaces got their first
	// pod: placement rotates with it (see AddPod).
	nsOrder []string
	nsPods  map[string]int

	marks  []metricsSample // per host, at the last change
	markAt time.Time
}

var _ Cluster = (*LabCluster)(nil)

// labPrefix starts the name of every lab the suite makes: "te2e-<id>".
const labPrefix = "te2e-"

// NewLab brings up a lab named after a new run ID and waits until its
// agents are ready and their BGP sessions Established. On error everything
// made so far is removed.
func NewLab(opts LabOptions) (_ *LabCluster, err error) {
	if opts.Hosts == 0 {
		opts.Hosts = 3
	}
	if opts.PoolCIDR == "" {
		opts.PoolCIDR = "10.247.0.0/16"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	id := randID(3)
	c := &LabCluster{
		SingleHost: &SingleHost{id: id, poolName: "lab-ipv4"},
		opts:       opts, name: labPrefix + id, nsPods: map[string]int{},
	}
	c.SingleHost.opts.Logf = opts.Logf
	if c.pool, err = netip.ParsePrefix(opts.PoolCIDR); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	// The marker first (a run killed from here on is cleaned up by the
	// next), naming the lab.
	if err := c.writeMarker(); err != nil {
		return nil, err
	}
	if err := appendMarker(id, "lab="+c.name); err != nil {
		return nil, err
	}
	// The lab's CLI config stays in the lab's own directory: the suite
	// must not point the machine's CLI (/etc/tortie/tortie.cfg) at a lab
	// that lives for one run.
	lab.CLIConfigFile = filepath.Join(lab.Dir(c.name), "cli", "tortie.cfg")
	c.onClose(func() {
		if err := lab.Down(context.Background(), c.name, nil); err != nil {
			opts.Logf("lab %s down: %v", c.name, err)
		}
	})
	var upLog bytes.Buffer
	l, _, err := lab.Up(context.Background(), lab.Options{
		Name: c.name, Hosts: opts.Hosts, Topology: opts.Topology, Encap: opts.Encap, Encryption: opts.Encryption, Pool: opts.PoolCIDR,
		Bins: lab.Binaries{
			Tortie: filepath.Join(opts.BinDir, "tortie"),
			Node:   filepath.Join(opts.BinDir, "tortie-node"),
			CNI:    filepath.Join(opts.BinDir, "tortie-cni"),
		},
		Timeout: 60 * time.Second, Log: &upLog,
	})
	if err != nil {
		return nil, fmt.Errorf("lab up: %w\n%s", err, upLog.String())
	}
	c.lab = l
	st := l.State()
	for _, h := range st.Hosts {
		n, err := ns.GetNS(filepath.Join("/run/netns", h.Netns))
		if err != nil {
			return nil, err
		}
		c.onClose(func() { n.Close() })
		c.hosts = append(c.hosts, &Host{
			Place: Place{Name: h.Node, IP: netip.MustParseAddr(h.Addr), netns: n}, Node: h.Node, Uplink: "eth0"})
	}
	// The router is the lab's place outside the cluster (doc.go: NAME-rt,
	// .253 of the underlay). It knows the underlay only; AddPod gives it a
	// route to every pod via the pod's host, as an upstream router peered
	// with the cluster would have, so that outside traffic to a pod and
	// the pod's answer (through its host's default route) take one path.
	c.rtNetns = c.name + "-rt"
	rt, err := ns.GetNS(filepath.Join("/run/netns", c.rtNetns))
	if err != nil {
		return nil, err
	}
	c.onClose(func() { rt.Close() })
	c.outside = &Place{Name: "outside (router " + c.rtNetns + ")",
		IP: netip.AddrFrom4([4]byte{198, 18, byte(st.Octet), 253}), netns: rt}
	c.etcdURL = l.Endpoint()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	be, err := datastore.New(datastore.Config{Endpoints: []string{c.etcdURL}, Logger: logger})
	if err != nil {
		return nil, err
	}
	c.be = be
	c.onClose(func() { be.Close() })
	c.cl = client.New(be)
	// The workloads' listeners close before the lab goes (they hold its
	// namespaces).
	c.onClose(c.servers.Close)
	return c, nil
}

func appendMarker(id, line string) error {
	f, err := os.OpenFile(filepath.Join(MarkerDir, id), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, line)
	return err
}

// CleanStaleLabs takes down the labs of suites killed before their cleanup:
// a lab named te2e-<id> whose marker names a test process that is gone, or
// that has no marker any more. Run it before CleanStale, which removes the
// markers.
func CleanStaleLabs(logf func(string, ...any)) {
	names, _ := lab.Names()
	for _, name := range names {
		id, ok := strings.CutPrefix(name, labPrefix)
		if !ok {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(MarkerDir, id)); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				if pid, err := strconv.Atoi(f[0]); err == nil && pidAlive(pid) {
					continue // its suite still runs
				}
			}
		}
		logf("taking down lab %s of a killed run", name)
		if err := lab.Down(context.Background(), name, nil); err != nil {
			logf("lab %s down: %v", name, err)
			continue
		}
		// The marker was the lab's only (CleanStale would keep it while
		// the killed process is a zombie).
		os.Remove(filepath.Join(MarkerDir, id))
	}
}

// pidAlive: the process exists and is not a zombie (a killed suite whose
// parent is gone can stay a zombie for a while when init is slow to reap).
func pidAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

// restartClock makes now the last change (the harness calls it when the
// suite comes back to a cluster after running on another).
func (c *SingleHost) restartClock() {
	c.mu.Lock()
	c.lastChange = time.Now()
	c.mu.Unlock()
}

// Lab is the lab under the cluster.
func (c *LabCluster) Lab() *lab.Lab { return c.lab }

func (c *LabCluster) Hosts() []*Host { return c.hosts }

// EncryptsInUserspace: a lab with WireGuard on, on a kernel without its
// module (this machine's), runs WireGuard in the agents.
func (c *LabCluster) EncryptsInUserspace() bool {
	if c.opts.Encryption != lab.EncryptionWireguard {
		return false
	}
	for _, hs := range c.lab.Status(context.Background()).Hosts {
		if hs.Wireguard != nil && hs.Wireguard.Kind == "userspace" {
			return true
		}
	}
	return false
}

// Outside is the lab's router: beyond every host's uplink, outside every
// pool, with a route to every pod through the pod's host.
func (c *LabCluster) Outside() *Place { return c.outside }

// AgentLogTail is the end of every host's agent log.
func (c *LabCluster) AgentLogTail(n int) string {
	var b strings.Builder
	for _, h := range c.lab.State().Hosts {
		data, _ := os.ReadFile(filepath.Join(lab.Dir(c.name), "hosts", h.Name+".log"))
		if len(data) > n {
			data = data[len(data)-n:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s", h.Name, data)
	}
	return b.String()
}

// Ruleset is every host's table, each under a header naming the host.
func (c *LabCluster) Ruleset(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, h := range c.lab.State().Hosts {
		out, err := exec.Command("ip", "netns", "exec", h.Netns, "nft", "list", "table", "inet", "tortie").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list table on %s: %v\n%s", h.Name, err, out)
		}
		fmt.Fprintf(&b, "# host %s\n%s", h.Name, out)
	}
	return b.String()
}

// AddPod makes the pod through the lab (CNI ADD on its host) without the
// lab's own server: the harness's echo servers answer in it, as on
// SingleHost. Placement: the k-th pod of the n-th namespace goes to host
// (n+k) mod hosts, so that the pods of one namespace are on different
// hosts, and so are pods of one name in different namespaces.
func (c *LabCluster) AddPod(t testing.TB, nsName, name string, labels map[string]string, ports []Port) *Pod {
	t.Helper()
	c.mu.Lock()
	ord := -1
	for i, n := range c.nsOrder {
		if n == nsName {
			ord = i
		}
	}
	if ord < 0 {
		ord = len(c.nsOrder)
		c.nsOrder = append(c.nsOrder, nsName)
	}
	k := c.nsPods[nsName]
	c.nsPods[nsName]++
	c.mu.Unlock()
	host := c.lab.State().Hosts[(ord+k)%len(c.hosts)]
	w, err := c.lab.AddWorkload(context.Background(), lab.WorkloadSpec{
		Name: name, Host: host.Name, Namespace: nsName, Labels: labels, Listen: []string{},
	})
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(lab.Dir(c.name), "cni.log"))
		if len(b) > 2048 {
			b = b[len(b)-2048:]
		}
		t.Fatalf("pod %s/%s on %s: %v\nCNI log:\n%s", nsName, name, host.Name, err, b)
	}
	n, err := ns.GetNS(filepath.Join("/run/netns", w.Netns))
	if err != nil {
		t.Fatalf("pod %s/%s: %v", nsName, name, err)
	}
	c.onClose(func() { n.Close() })
	p := &Pod{Namespace: nsName, Name: name, Node: host.Node, Labels: labels, Ports: ports, netns: n,
		Interface: w.Interface, Endpoint: v3.WorkloadEndpointName(host.Node, v3.OrchestratorKubernetes, name, "eth0")}
	if ip, ok := w.Addr(4); ok {
		p.IP, _ = netip.AddrFromSlice(ip.To4())
	}
	if !p.IP.IsValid() {
		t.Fatalf("pod %s/%s: the lab gave it no IPv4 address (%v)", nsName, name, w.IPs)
	}
	if err := run("ip", "-n", c.rtNetns, "route", "add", netip.PrefixFrom(p.IP, 32).String(), "via", host.Addr); err != nil {
		t.Fatalf("pod %s: route on the router: %v", p, err)
	}
	if len(ports) > 0 {
		if err := c.updateWEP(p, func(w *v3.WorkloadEndpoint) { w.Spec.Ports = wepPorts(ports) }); err != nil {
			t.Fatalf("pod %s: declaring named ports: %v", p, err)
		}
	}
	if err := c.servers.ServeEcho(n, ports); err != nil {
		t.Fatalf("pod %s: servers: %v", p, err)
	}
	c.mu.Lock()
	c.pods = append(c.pods, p)
	c.mu.Unlock()
	return p
}

// ---- changes and Settle: every host's agent ----

func (c *LabCluster) sampleHost(h *Host) metricsSample {
	resp, err := httpClient.Get(fmt.Sprintf("http://%s/metrics", netip.AddrPortFrom(h.IP, lab.MetricsPort)))
	if err != nil {
		return metricsSample{}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return metricsSample{}
	}
	body, _ := io.ReadAll(resp.Body)
	return parseMetrics(string(body))
}

// parseMetrics sums the counters Settle compares.
func parseMetrics(body string) metricsSample {
	s := metricsSample{ok: true}
	for _, line := range strings.Split(body, "\n") {
		var target *float64
		switch {
		case strings.HasPrefix(line, "tortie_datastore_updates_total"):
			target = &s.updates
		case strings.HasPrefix(line, "tortie_sync_latency_seconds_count"):
			target = &s.syncs
		default:
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			*target += v
		}
	}
	return s
}

func (c *LabCluster) sampleAll() []metricsSample {
	out := make([]metricsSample, len(c.hosts))
	done := make(chan struct{})
	for i, h := range c.hosts {
		go func() { out[i] = c.sampleHost(h); done <- struct{}{} }()
	}
	for range c.hosts {
		<-done
	}
	return out
}

// changing records every agent's counters before a write (SingleHost's
// own bookkeeping, which only knows one host, runs as well and keeps
// LastChange).
func (c *LabCluster) changing() {
	m := c.sampleAll()
	c.mu.Lock()
	c.marks, c.markAt = m, time.Now()
	c.mu.Unlock()
}

// Settle waits until every host's agent received and applied something
// after the last change (bounded, best effort: the probes decide).
func (c *LabCluster) Settle(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	marks, at := c.marks, c.markAt
	c.mu.Unlock()
	if marks == nil || c.LastChange().Before(at) {
		return // nothing was written since the mark (a Reset with nothing to do)
	}
	deadline := time.Now().Add(3 * time.Second)
	pending := map[int]bool{}
	for i, m := range marks {
		if m.ok {
			pending[i] = true
		}
	}
	for len(pending) > 0 && time.Now().Before(deadline) {
		for i := range pending {
			s := c.sampleHost(c.hosts[i])
			if s.ok && s.updates > marks[i].updates && s.syncs > marks[i].syncs {
				delete(pending, i)
			}
		}
		if len(pending) > 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if len(pending) > 0 {
		var hs []string
		for i := range pending {
			hs = append(hs, c.hosts[i].Node)
		}
		t.Logf("settle: %s reported no apply after the last change within 3s (going on: the probes decide)", strings.Join(hs, ", "))
	}
}

func (c *LabCluster) Apply(t testing.TB, manifest string) {
	t.Helper()
	c.changing()
	c.SingleHost.Apply(t, manifest)
}

func (c *LabCluster) Delete(t testing.TB, manifest string) {
	t.Helper()
	c.changing()
	c.SingleHost.Delete(t, manifest)
}

func (c *LabCluster) Patch(t testing.TB, kind, namespace, name, patch string) {
	t.Helper()
	c.changing()
	c.SingleHost.Patch(t, kind, namespace, name, patch)
}

func (c *LabCluster) SetPodLabels(t testing.TB, p *Pod, labels map[string]string) {
	t.Helper()
	c.changing()
	c.SingleHost.SetPodLabels(t, p, labels)
}

func (c *LabCluster) SetPodPorts(t testing.TB, p *Pod, ports []Port) {
	t.Helper()
	c.changing()
	c.SingleHost.SetPodPorts(t, p, ports)
}

func (c *LabCluster) SetPodProfiles(t testing.TB, p *Pod, profiles []string) {
	t.Helper()
	c.changing()
	c.SingleHost.SetPodProfiles(t, p, profiles)
}

func (c *LabCluster) Reset(t testing.TB) {
	t.Helper()
	c.changing()
	c.SingleHost.Reset(t)
}
