package routing

// The lab: hosts made of network namespaces on a bridge, each running
// startup and the routing Component in a child process (this test binary
// again, under `ip netns exec`: a BGP speaker lives in its process's
// namespace, see pkg/bgp), all against one embedded etcd in the test
// process, reached over a veth into the root namespace.
//
//	root ns: etcd at 198.18.R.254 ── veth ──┐
//	sw ns:   br0 (198.18.R.0/24)  ──────────┼── h1, h2, … (eth0 at 198.18.R.i)
//	                                        ├── rt (router, .253; default gateway of the hosts)
//	         br1 (198.19.R.0/24, optional) ─┴── rt (.253) and hosts of the second subnet
//
// R is random per run, every namespace name carries a random run id, and
// everything is deleted when the test ends. The router knows the two
// underlay subnets and nothing else: workload addresses are routed only by
// what the agents program.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tortie/tortie/internal/testenv"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/dataplane/routes"
	"github.com/tortie/tortie/pkg/dataplane/wireguard"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/datastore/embedded"
	"github.com/tortie/tortie/pkg/datastore/etcdtest"
	"github.com/tortie/tortie/pkg/ipam"
	nodeagent "github.com/tortie/tortie/pkg/node"
	"github.com/tortie/tortie/pkg/startup"
)

const childEnv = "TORTIE_ROUTING_TEST_CHILD"

// Timers short enough for a suite of minutes.
const (
	labHold      = 6 * time.Second
	labKeepalive = 2 * time.Second
	labRestart   = 40 * time.Second
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// childMain is one host's agent: startup, then the routing component,
// with its status on 127.0.0.1:9099 of its own namespace. stdin lines:
// "status" (replies with Status JSON on stdout), "stop" (graceful exit).
func childMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	node := os.Getenv("TRT_NODE")
	be, err := datastore.New(datastore.Config{Endpoints: []string{os.Getenv("TRT_ETCD")}, Logger: log})
	if err != nil {
		log.Error("datastore", "err", err)
		return 1
	}
	defer be.Close()
	t0 := time.Now()
	res, err := startup.Run(ctx, client.New(be), startup.Config{
		NodeName: node, IPv4Method: "interface=eth0", NodenameFile: filepath.Join(os.Getenv("TRT_DIR"), node+".nodename"),
		Logger: log,
	})
	if err != nil {
		log.Error("startup", "err", err)
		return 1
	}
	log.Info("startup done", "took", time.Since(t0), "ipv4", res.IPv4, "tunnel", res.VXLANTunnelAddr)
	// WireGuard as tortie-node sets it up: the key from a file, published
	// in the Node (or removed from it when off).
	var wg WireguardConfig
	if on := os.Getenv("TRT_WIREGUARD"); on != "" {
		pub := ""
		if on == "on" {
			key, _, err := wireguard.LoadOrCreateKey(filepath.Join(os.Getenv("TRT_DIR"), node+".wgkey"))
			if err != nil {
				log.Error("wireguard key", "err", err)
				return 1
			}
			wg = WireguardConfig{Enabled: true, PrivateKey: key, Mode: wireguard.Mode(os.Getenv("TRT_WIREGUARD_MODE"))}
			pub = key.PublicKey().String()
		}
		if err := startup.SetWireguardKey(ctx, client.New(be), res, pub, log); err != nil {
			log.Error("wireguard key", "err", err)
			return 1
		}
	}
	comp, err := New(Config{
		NodeName: node, HoldTime: labHold, KeepaliveTime: labKeepalive,
		ConnectRetry: 2 * time.Second, RestartTime: labRestart, Warnings: res.Warnings,
		Secrets: FileSecrets(os.Getenv("TRT_SECRETS")), Wireguard: wg, Logger: log,
	})
	if err != nil {
		log.Error("routing", "err", err)
		return 1
	}
	// The agent's loop drives the component, as in tortie-node; its health
	// address serves the status at StatusPath.
	agent, err := nodeagent.New(nodeagent.Config{NodeName: node, HealthAddr: DefaultStatusAddr, Logger: log}, be, comp)
	if err != nil {
		log.Error("agent", "err", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	enc := json.NewEncoder(os.Stdout)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Error("routing", "err", err)
				return 1
			}
			return 0
		case l, ok := <-lines:
			switch {
			case !ok || l == "stop":
				cancel()
				err := <-done
				if err != nil {
					log.Error("routing", "err", err)
					return 1
				}
				return 0
			case l == "status":
				enc.Encode(comp.Status())
			}
		}
	}
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type lab struct {
	t      testing.TB
	id     string
	r      byte // third octet of the underlay subnets
	sw     string
	rt     string
	rootIf string
	nss    []string // every namespace made, for cleanup
	etcd   *embedded.Server
	be     *datastore.Etcd
	c      *client.Client
	dir    string
	hosts  map[string]*host
}

type host struct {
	name   string
	ns     string
	addr   netip.Addr
	subnet int
	agent  *agent
	nl     *netlink.Handle
	// secrets is the agent's secrets directory (default <lab dir>/secrets).
	secrets string
	// wireguard is "on", "off" (the key is removed from the Node) or ""
	// (WireGuard is not touched): the agent's next start takes it.
	wireguard string
	wl        []workload
}

type workload struct {
	ns   string
	addr netip.Addr
}

func (l *lab) subnetAddr(subnet, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, byte(18 + subnet), l.r, byte(i)})
}

// newLab makes the switch, the router and the etcd; hosts come with addHost.
func newLab(t testing.TB, subnets int) *lab {
	t.Helper()
	testenv.RequireRoot(t)
	b := make([]byte, 3)
	rand.Read(b)
	l := &lab{t: t, id: hex.EncodeToString(b), hosts: map[string]*host{}, dir: t.TempDir()}
	l.r = pickOctet(t)
	l.sw, l.rt = "trt"+l.id+"sw", "trt"+l.id+"rt"
	l.rootIf = "trt" + l.id + "r"
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", l.rootIf).Run()
		for i := len(l.nss) - 1; i >= 0; i-- {
			exec.Command("ip", "netns", "del", l.nss[i]).Run()
		}
	})
	l.addNS(l.sw)
	l.addNS(l.rt)
	run(t, "ip", "netns", "exec", l.rt, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for s := 0; s < subnets; s++ {
		br := fmt.Sprintf("br%d", s)
		run(t, "ip", "-n", l.sw, "link", "add", br, "type", "bridge")
		run(t, "ip", "-n", l.sw, "link", "set", br, "up")
		l.plug(l.rt, fmt.Sprintf("eth%d", s), s, l.subnetAddr(s, 253))
	}
	// The root namespace's leg, for etcd.
	run(t, "ip", "link", "add", l.rootIf, "type", "veth", "peer", "name", "root", "netns", l.sw)
	run(t, "ip", "-n", l.sw, "link", "set", "root", "master", "br0", "up")
	run(t, "ip", "addr", "add", l.subnetAddr(0, 254).String()+"/24", "dev", l.rootIf)
	run(t, "ip", "link", "set", l.rootIf, "up")
	if subnets > 1 {
		run(t, "ip", "route", "add", fmt.Sprintf("198.19.%d.0/24", l.r), "via", l.subnetAddr(0, 253).String(), "dev", l.rootIf)
	}
	l.etcd = etcdtest.StartWith(t, embedded.ServeConfig{ListenClientURL: "http://" + l.subnetAddr(0, 254).String() + ":0"})
	l.be = etcdtest.NewClient(t, l.etcd)
	l.c = client.New(l.be)
	if err := l.c.EnsureInitialized(context.Background()); err != nil {
		t.Fatal(err)
	}
	return l
}

// pickOctet finds a third octet whose 198.18.R/24 and 198.19.R/24 nothing
// in the root namespace uses.
func pickOctet(t testing.TB) byte {
	out, _ := exec.Command("ip", "-4", "-o", "addr").CombinedOutput()
	routes, _ := exec.Command("ip", "-4", "route").CombinedOutput()
	all := string(out) + string(routes)
	for range 100 {
		b := make([]byte, 1)
		rand.Read(b)
		if b[0] < 2 || b[0] > 250 {
			continue
		}
		if !strings.Contains(all, fmt.Sprintf("198.18.%d.", b[0])) && !strings.Contains(all, fmt.Sprintf("198.19.%d.", b[0])) {
			return b[0]
		}
	}
	t.Fatal("no free 198.18.x.0/24")
	return 0
}

func (l *lab) addNS(name string) {
	run(l.t, "ip", "netns", "add", name)
	l.nss = append(l.nss, name)
	run(l.t, "ip", "-n", name, "link", "set", "lo", "up")
}

// plug connects ns to subnet's bridge as dev with addr/24.
func (l *lab) plug(ns, dev string, subnet int, a netip.Addr) {
	port := fmt.Sprintf("p%s%d", strings.TrimPrefix(ns, "trt"+l.id), subnet)
	run(l.t, "ip", "-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns)
	run(l.t, "ip", "-n", l.sw, "link", "set", port, "master", fmt.Sprintf("br%d", subnet), "up")
	run(l.t, "ip", "-n", ns, "addr", "add", a.String()+"/24", "dev", dev)
	run(l.t, "ip", "-n", ns, "link", "set", dev, "up")
}

// addHost makes host i in subnet, with eth0 and a default route to the router.
func (l *lab) addHost(i, subnet int) *host {
	h := &host{name: fmt.Sprintf("h%d", i), ns: fmt.Sprintf("trt%sh%d", l.id, i), addr: l.subnetAddr(subnet, i), subnet: subnet}
	l.addNS(h.ns)
	l.plug(h.ns, "eth0", subnet, h.addr)
	run(l.t, "ip", "-n", h.ns, "route", "add", "default", "via", l.subnetAddr(subnet, 253).String())
	nsh, err := netns.GetFromName(h.ns)
	if err != nil {
		l.t.Fatal(err)
	}
	h.nl, err = netlink.NewHandleAt(nsh)
	nsh.Close()
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(h.nl.Close)
	l.hosts[h.name] = h
	return h
}

// hostPort is the switch port of a host (for cutting its link).
func (l *lab) hostPort(h *host) string {
	return fmt.Sprintf("p%s%d", strings.TrimPrefix(h.ns, "trt"+l.id), h.subnet)
}

func (l *lab) createPool(name, cidr string, mod func(*v3.IPPoolSpec)) {
	k, _ := v3.KindByKind(v3.KindIPPool)
	p := k.NewObject().(*v3.IPPool)
	p.Name = name
	p.Spec.CIDR = cidr
	if mod != nil {
		mod(&p.Spec)
	}
	if _, err := l.c.Create(context.Background(), p); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lab) create(r v3.Resource) {
	l.t.Helper()
	if _, err := l.c.Create(context.Background(), r); err != nil {
		l.t.Fatal(err)
	}
}

// addWorkload plumbs a workload on h as the CNI plugin would (veth cali…,
// proxy ARP, /32 in the workload, default via 169.254.1.1), takes its
// address from IPAM and writes its WorkloadEndpoint. The host route is
// left to the agent.
func (l *lab) addWorkload(h *host, pools ...netip.Prefix) workload {
	l.t.Helper()
	n := len(h.wl) + 1
	w := workload{ns: fmt.Sprintf("trt%sw%s%d", l.id, h.name, n)}
	as, err := ipam.New(l.be, ipam.Options{}).AutoAssign(context.Background(), ipam.AutoAssignArgs{
		HandleID: "lab." + w.ns, Num4: 1, Node: h.name, IPv4Pools: pools,
		Attrs: map[string]string{ipam.AttrNamespace: "default", ipam.AttrPod: w.ns},
	})
	if err != nil {
		l.t.Fatal(err)
	}
	w.addr = as.IPv4[0].Addr()
	hostIf := fmt.Sprintf("cali%s%d", h.name, n)
	l.addNS(w.ns)
	run(l.t, "ip", "-n", h.ns, "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", w.ns)
	run(l.t, "ip", "-n", h.ns, "link", "set", hostIf, "address", "ee:ee:ee:ee:ee:ee", "up")
	run(l.t, "ip", "netns", "exec", h.ns, "sysctl", "-qw", "net.ipv4.conf."+hostIf+".proxy_arp=1", "net.ipv4.neigh."+hostIf+".proxy_delay=0")
	run(l.t, "ip", "-n", w.ns, "link", "set", "eth0", "up")
	run(l.t, "ip", "-n", w.ns, "addr", "add", w.addr.String()+"/32", "dev", "eth0")
	run(l.t, "ip", "-n", w.ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
	run(l.t, "ip", "-n", w.ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
	k, _ := v3.KindByKind(v3.KindWorkloadEndpoint)
	wep := k.NewObject().(*v3.WorkloadEndpoint)
	wep.Namespace = "default"
	wep.Spec = v3.WorkloadEndpointSpec{Orchestrator: "k8s", Node: h.name, Pod: w.ns, Endpoint: "eth0",
		InterfaceName: hostIf, IPNetworks: []string{w.addr.String() + "/32"}, Profiles: []string{"kns.default"}}
	l.create(wep)
	h.wl = append(h.wl, w)
	return w
}

// agent is a child process running startup and the component.
type agent struct {
	t      testing.TB
	h      *host
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *json.Decoder
	mu     sync.Mutex
	exited chan struct{}
	logf   string
}

func (l *lab) start(h *host) *agent {
	t := l.t
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{t: t, h: h, exited: make(chan struct{})}
	a.logf = filepath.Join(l.dir, fmt.Sprintf("%s.%d.log", h.name, time.Now().UnixNano()))
	logFile, err := os.Create(a.logf)
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command("ip", "netns", "exec", h.ns, exe, "-test.run=^$")
	secrets := h.secrets
	if secrets == "" {
		secrets = filepath.Join(l.dir, "secrets")
	}
	a.cmd.Env = append(os.Environ(), childEnv+"=1", "TRT_NODE="+h.name, "TRT_ETCD="+l.etcd.Endpoint(), "TRT_DIR="+l.dir, "TRT_SECRETS="+secrets,
		"TRT_WIREGUARD="+h.wireguard)
	a.cmd.Stderr = logFile
	a.stdin, _ = a.cmd.StdinPipe()
	stdout, _ := a.cmd.StdoutPipe()
	a.out = json.NewDecoder(stdout)
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.cmd.Wait()
		logFile.Close()
		close(a.exited)
	}()
	h.agent = a
	t.Cleanup(func() {
		a.kill()
		if t.Failed() {
			b, _ := os.ReadFile(a.logf)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- %s agent log tail ---\n%s", h.name, b)
			if h.wireguard == "on" {
				t.Logf("--- %s agent log, WireGuard lines ---\n%s", h.name, grepLines(a.logf, 80, "wireguard", "peer(", "andshake"))
			}
		}
	})
	return a
}

// grepLines returns the last max lines of file that contain any of words.
func grepLines(file string, max int, words ...string) string {
	b, _ := os.ReadFile(file)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return strings.Join(out, "\n")
}

func (a *agent) kill() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.exited
}

// stop asks for a graceful exit and waits for it.
func (a *agent) stop() {
	a.t.Helper()
	io.WriteString(a.stdin, "stop\n")
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		a.t.Fatalf("%s: agent did not stop", a.h.name)
	}
}

func (a *agent) status() Status {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := io.WriteString(a.stdin, "status\n"); err != nil {
		a.t.Fatalf("%s: agent gone: %v", a.h.name, err)
	}
	var st Status
	if err := a.out.Decode(&st); err != nil {
		a.t.Fatalf("%s: status: %v", a.h.name, err)
	}
	return st
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %s: %s", what, timeout, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kernelRoutes lists a host's routes with tortie's protocol, as
// "dst type/gateway/dev".
func (h *host) kernelRoutes() map[netip.Prefix]netlink.Route {
	out := map[netip.Prefix]netlink.Route{}
	rs, err := h.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: routes.ProtocolTortie},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return out
	}
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		a, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out[netip.PrefixFrom(a.Unmap(), ones)] = r
	}
	return out
}

// blocksOf returns the blocks affine to node, from etcd.
func (l *lab) blocksOf(node string) []netip.Prefix {
	kvs, _, err := l.be.List(context.Background(), BlockPrefix)
	if err != nil {
		l.t.Fatal(err)
	}
	var out []netip.Prefix
	for _, kv := range kvs {
		b, err := ParseBlock(kv.Value)
		if err == nil && b.Affinity == node {
			out = append(out, b.CIDR)
		}
	}
	return out
}

// routedAll reports whether every host has a tortie route to every other
// host's blocks and a blackhole for each of its own.
func (l *lab) routedAll(hs []*host) (bool, string) {
	for _, h := range hs {
		krs := h.kernelRoutes()
		for _, o := range hs {
			for _, b := range l.blocksOf(o.name) {
				r, ok := krs[b]
				switch {
				case !ok:
					return false, fmt.Sprintf("%s has no route to %s's block %s", h.name, o.name, b)
				case o == h && r.Type != unix.RTN_BLACKHOLE:
					return false, fmt.Sprintf("%s: own block %s is not a blackhole: %v", h.name, b, r)
				}
			}
		}
	}
	return true, ""
}

func establishedAll(hs []*host, want map[string]int) (bool, string) {
	for _, h := range hs {
		st := h.agent.status()
		n := 0
		for _, p := range st.Peers {
			if p.State != "Established" {
				return false, fmt.Sprintf("%s: %+v", h.name, st.Peers)
			}
			n++
		}
		if n != want[h.name] {
			return false, fmt.Sprintf("%s has %d sessions, want %d: %+v", h.name, n, want[h.name], st.Peers)
		}
	}
	return true, ""
}

// inNS runs fn on a thread in the named namespace; sockets fn creates stay
// in that namespace.
func inNS(t testing.TB, name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: it dies with the goroutine.
		t.Errorf("restoring namespace: %v", err)
		return ferr
	}
	runtime.UnlockOSThread()
	return ferr
}

var portSeq = struct {
	sync.Mutex
	n int
}{n: 20000}

// tcpCheck connects from workload a to workload b and echoes a line.
func tcpCheck(t testing.TB, a, b workload) error { return tcpLine(t, a, b, "hello") }

// tcpLine connects from workload a to workload b and echoes line.
func tcpLine(t testing.TB, a, b workload, line string) error {
	portSeq.Lock()
	portSeq.n++
	port := portSeq.n
	portSeq.Unlock()
	var ln net.Listener
	if err := inNS(t, b.ns, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(b.addr, uint16(port)).String())
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "echo "+line)
	}()
	var c net.Conn
	if err := inNS(t, a.ns, func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second}
		c, err = d.Dial("tcp", netip.AddrPortFrom(b.addr, uint16(port)).String())
		return err
	}); err != nil {
		return fmt.Errorf("%s → %s: %w", a.addr, b.addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, line+"\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || reply != "echo "+line+"\n" {
		return fmt.Errorf("%s → %s: reply %q, %v", a.addr, b.addr, reply, err)
	}
	return nil
}

// allPairs checks TCP between the first workloads of every pair of hosts.
func allPairs(t testing.TB, hs []*host) {
	t.Helper()
	for _, a := range hs {
		for _, b := range hs {
			if a == b {
				continue
			}
			if err := tcpCheck(t, a.wl[0], b.wl[0]); err != nil {
				t.Errorf("%s → %s: %v", a.name, b.name, err)
			}
		}
	}
}

// stream is a long-lived TCP connection between two workloads.
type stream struct {
	c  net.Conn
	rd *bufio.Reader
	ln net.Listener
}

func openStream(t testing.TB, a, b workload) *stream {
	t.Helper()
	portSeq.Lock()
	portSeq.n++
	port := portSeq.n
	portSeq.Unlock()
	s := &stream{}
	if err := inNS(t, b.ns, func() (err error) {
		s.ln, err = net.Listen("tcp", netip.AddrPortFrom(b.addr, uint16(port)).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		rd := bufio.NewReader(c)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(c, "echo "+line)
		}
	}()
	if err := inNS(t, a.ns, func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second}
		s.c, err = d.Dial("tcp", netip.AddrPortFrom(b.addr, uint16(port)).String())
		return err
	}); err != nil {
		s.ln.Close()
		t.Fatal(err)
	}
	s.rd = bufio.NewReader(s.c)
	if err := s.ping(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stream) ping() error {
	s.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(s.c, "ping\n"); err != nil {
		return err
	}
	line, err := s.rd.ReadString('\n')
	if err != nil || line != "echo ping\n" {
		return fmt.Errorf("reply %q: %v", line, err)
	}
	return nil
}

func (s *stream) close() { s.c.Close(); s.ln.Close() }
