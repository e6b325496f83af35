package lab

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/client"
	"github.com/tortie/tortie/pkg/datastore"
)

// Options say what lab to build.
type Options struct {
	Name     string `json:"name"`
	Hosts    int    `json:"hosts"`
	Topology string `json:"topology"`
	Encap    string `json:"encap"`
	// Encryption is none or wireguard: FelixConfiguration default's
	// wireguardEnabled, each host's key in the lab's directory.
	Encryption string `json:"encryption,omitempty"`
	Pool       string `json:"pool"`
	Pool6      string `json:"pool6,omitempty"`
	IPv6       bool   `json:"ipv6,omitempty"`
	// KubeAPI runs a Kubernetes API server on the lab's etcd, with
	// tortie-kube-controllers, and makes every workload a pod (kube.go).
	KubeAPI bool `json:"kubeAPI,omitempty"`
	// Kubernetes makes every host a Kubernetes node and installs tortie
	// with kubectl apply -f deploy/tortie.yaml (cluster.go).
	Kubernetes bool `json:"kubernetes,omitempty"`
	// Images is the directory of the archives every node of a
	// --kubernetes lab imports (default: images beside tortie, which
	// `make images` fills).
	Images string   `json:"images,omitempty"`
	Bins   Binaries `json:"binaries"`
	// Timeout bounds the wait for agents and sessions (default 90s; with
	// Kubernetes, each wait of the cluster's, default 5 minutes).
	Timeout time.Duration `json:"-"`
	// Log receives progress lines (default: nowhere).
	Log io.Writer `json:"-"`
}

// Binaries are the programs the lab runs.
type Binaries struct {
	Tortie string `json:"tortie"` // datastore serve, lab serve
	Node   string `json:"node"`
	CNI    string `json:"cni"`
	Bird   string `json:"bird,omitempty"`
	// With --kube-api.
	KubeAPIServer   string `json:"kubeAPIServer,omitempty"`
	Kubectl         string `json:"kubectl,omitempty"`
	KubeControllers string `json:"kubeControllers,omitempty"`
	// With --kubernetes: the CNI loopback plugin every node's containerd
	// calls.
	Loopback string `json:"loopback,omitempty"`
}

// defaults fills in what was left out and checks the rest.
func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if err := ValidName(o.Name); err != nil {
		return err
	}
	if o.Hosts == 0 {
		o.Hosts = 3
	}
	if o.Hosts < 1 || o.Hosts > 60 {
		return fmt.Errorf("--hosts %d: want 1 to 60", o.Hosts)
	}
	if o.Topology == "" {
		o.Topology = TopologyMesh
	}
	if o.Encap == "" {
		o.Encap = EncapNone
	}
	if o.Encryption == "" {
		o.Encryption = EncryptionNone
	}
	switch o.Encryption {
	case EncryptionNone, EncryptionWireguard:
	default:
		return fmt.Errorf("--encryption %q: want none or wireguard", o.Encryption)
	}
	switch o.Topology {
	case TopologyMesh, TopologyToR, TopologyRR:
	default:
		return fmt.Errorf("--topology %q: want mesh, tor or rr", o.Topology)
	}
	switch o.Encap {
	case EncapNone, EncapVXLAN, EncapCrossSubnet:
	default:
		return fmt.Errorf("--encap %q: want none, vxlan or vxlan-crosssubnet", o.Encap)
	}
	if o.Topology == TopologyRR && o.Hosts < 2 {
		return errors.New("--topology rr needs at least 2 hosts")
	}
	if o.Encap == EncapCrossSubnet && o.Hosts < 2 {
		return errors.New("--encap vxlan-crosssubnet needs at least 2 hosts (they are split over two subnets)")
	}
	if o.Pool == "" {
		o.Pool = DefaultPool
	}
	if p, err := netip.ParsePrefix(o.Pool); err != nil || !p.Addr().Is4() {
		return fmt.Errorf("--pool %q: want an IPv4 CIDR", o.Pool)
	}
	if o.IPv6 && o.Pool6 == "" {
		o.Pool6 = DefaultPool6
	}
	if o.Pool6 != "" {
		if p, err := netip.ParsePrefix(o.Pool6); err != nil || !p.Addr().Is6() {
			return fmt.Errorf("--pool6 %q: want an IPv6 CIDR", o.Pool6)
		}
		o.IPv6 = true
	}
	if o.Timeout == 0 && !o.Kubernetes {
		o.Timeout = 90 * time.Second
	}
	if err := o.Bins.resolve(o.Topology == TopologyToR); err != nil {
		return err
	}
	if o.Kubernetes {
		return o.resolveCluster()
	}
	if o.KubeAPI {
		return o.Bins.resolveKube()
	}
	return nil
}

// resolve finds the binaries: given, else beside the running tortie, else
// on PATH.
func (b *Binaries) resolve(bird bool) error {
	self, _ := os.Executable()
	dir := filepath.Dir(self)
	find := func(p *string, name string) error {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			*p = abs
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}
		if self != "" {
			if c := filepath.Join(dir, name); isExec(c) {
				*p = c
				return nil
			}
		}
		found, err := exec.LookPath(name)
		if err != nil {
			return fmt.Errorf("cannot find %s beside %s or on PATH (run `make build`)", name, self)
		}
		*p, _ = filepath.Abs(found)
		return nil
	}
	if b.Tortie == "" && strings.HasPrefix(filepath.Base(self), "tortie") && !strings.HasSuffix(self, ".test") {
		b.Tortie = self
	}
	for _, f := range []struct {
		p    *string
		name string
	}{{&b.Tortie, "tortie"}, {&b.Node, "tortie-node"}, {&b.CNI, "tortie-cni"}} {
		if err := find(f.p, f.name); err != nil {
			return err
		}
	}
	// `tortie datastore serve` becomes tortie-datastore, found beside the
	// tortie the lab runs.
	if ds := filepath.Join(filepath.Dir(b.Tortie), "tortie-datastore"); !isExec(ds) {
		if _, err := exec.LookPath("tortie-datastore"); err != nil {
			return fmt.Errorf("cannot find tortie-datastore beside %s or on PATH (run `make build`)", b.Tortie)
		}
	}
	if bird {
		if b.Bird == "" {
			b.Bird = "/usr/sbin/bird"
		}
		if !isExec(b.Bird) {
			return fmt.Errorf("--topology tor needs BIRD 2 (%s; Debian package bird2)", b.Bird)
		}
	}
	return nil
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// Lab is a lab that exists, with its state.
type Lab struct {
	st  *State
	log io.Writer
	// doing is what Up is at, for its error when it is interrupted.
	doing string
}

// State returns a copy of the lab's state.
func (l *Lab) State() State { return *l.st }

// Name is the lab's name.
func (l *Lab) Name() string { return l.st.Name }

// Endpoint is the lab's datastore URL.
func (l *Lab) Endpoint() string { return l.st.Endpoint }

func (l *Lab) logf(format string, args ...any) {
	if l.log != nil {
		fmt.Fprintf(l.log, format+"\n", args...)
	}
}

// step says what Up does next, in the log and in its error if it is
// interrupted there.
func (l *Lab) step(what string) {
	l.doing = what
	l.logf("%s...", what)
}

// Open loads an existing lab.
func Open(name string) (*Lab, error) {
	if name == "" {
		var err error
		if name, err = defaultLab(); err != nil {
			return nil, err
		}
	}
	st, err := loadState(name)
	if err != nil {
		return nil, err
	}
	return &Lab{st: st}, nil
}

// defaultLab is the only lab there is, or DefaultName.
func defaultLab() (string, error) {
	names, err := Names()
	if err != nil {
		return "", err
	}
	if len(names) == 1 {
		return names[0], nil
	}
	for _, n := range names {
		if n == DefaultName {
			return n, nil
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no lab is up (start one with `tortie lab up`)")
	}
	return "", fmt.Errorf("several labs are up (%s): say which with --name", strings.Join(names, ", "))
}

// ErrExists is wrapped by Up's error when the lab is already up.
var ErrExists = errors.New("lab already up")

// Up builds a lab and returns when every agent is ready and every BGP
// session Established. A lab that is already up is returned as it is,
// with existed true.
//
// When ctx ends (Ctrl-C) or anything fails on the way, Up removes what it
// had made, as Down does and with Down's own code, before it returns; the
// error wraps ErrInterrupted when ctx ended. That removal is not cut short
// by ctx: it is what leaves nothing half made. Only if the removal itself
// fails does the state file stay, for `tortie lab down` to finish.
func Up(ctx context.Context, o Options) (l *Lab, existed bool, err error) {
	if err := o.defaults(); err != nil {
		return nil, false, err
	}
	unlock, err := lockLab(ctx, o.Name)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	if st, err := loadState(o.Name); err == nil {
		l := &Lab{st: st, log: o.Log}
		if st.Phase != PhaseUp {
			return nil, false, fmt.Errorf("lab %q is half made (a crash?): remove it with `tortie lab down --name %s`", o.Name, o.Name)
		}
		if dead := l.deadProcs(); len(dead) > 0 {
			return l, true, fmt.Errorf("lab %q is up but %s stopped: `tortie lab down --name %s` and up again", o.Name, strings.Join(dead, ", "), o.Name)
		}
		return l, true, nil
	} else if !errors.Is(err, ErrNoLab) {
		return nil, false, err
	}

	l = &Lab{st: &State{Name: o.Name, Phase: PhaseCreating, Created: time.Now().UTC(), Options: o}, log: o.Log}
	if err := l.build(ctx); err != nil {
		return nil, false, l.undo(ctx, err)
	}
	return l, false, nil
}

// undo removes what a failed or interrupted build made, with Down's
// teardown run to the end whatever ctx says, and returns Up's error.
func (l *Lab) undo(ctx context.Context, err error) error {
	name := l.st.Name
	wasInterrupted := ctx.Err() != nil || errors.Is(err, ErrInterrupted)
	tail := ""
	if !wasInterrupted {
		// Read before the teardown removes the logs; a log the error
		// quotes already is not quoted twice.
		quoted := ""
		if ee := (*exitedError)(nil); errors.As(err, &ee) {
			quoted = ee.log
		}
		tail = l.logTails(quoted)
	}
	first, _, _ := strings.Cut(err.Error(), "\n") // the logs go with the error
	l.logf("lab %s: %s; removing what was made", name, first)
	derr := l.teardown(context.WithoutCancel(ctx))
	if wasInterrupted {
		why := ErrInterrupted
		if ctx.Err() != nil {
			why = interrupted(ctx)
		}
		if derr != nil {
			return fmt.Errorf("lab up %s: %w while %s; removing what it had made failed: %v", name, why, l.doing, derr)
		}
		return fmt.Errorf("lab up %s: %w while %s; everything it had made is removed", name, why, l.doing)
	}
	if derr != nil {
		err = fmt.Errorf("%w (and removing what was made: %v)", err, derr)
	}
	return fmt.Errorf("%w%s", err, tail)
}

func (l *Lab) deadProcs() []string {
	var dead []string
	for _, p := range l.st.Procs {
		if !p.alive() {
			how := ""
			if st := p.exitStatus(); st != "" {
				how = ", " + st
			}
			dead = append(dead, fmt.Sprintf("%s %s (pid %d%s)", p.Role, p.Name, p.PID, how))
		}
	}
	return dead
}

// logTails is the end of every agent's and the datastore's log but the
// one at path except, for an error message.
func (l *Lab) logTails(except string) string {
	var b strings.Builder
	for _, p := range l.st.Procs {
		if p.Role == "server" || p.Log == except {
			continue
		}
		if fi, err := os.Stat(p.Log); err == nil && fi.Size() > 0 {
			b.WriteString(logTail(p))
		}
	}
	return b.String()
}

func (l *Lab) save() error { return l.st.save() }

// addNetns records, then makes, a namespace with its loopback up.
func (l *Lab) addNetns(ctx context.Context, name string) error {
	path := filepath.Join("/run/netns", name)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("network namespace %s exists already and is not this lab's", name)
	}
	l.st.Netns = append(l.st.Netns, name)
	if err := l.save(); err != nil {
		return err
	}
	if err := ipn(ctx, "", "netns", "add", name); err != nil {
		// Interrupted, `ip netns add` may have made it all the same: then
		// the record stays, for the teardown.
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			l.dropNetns(name)
		}
		return err
	}
	return ipn(ctx, name, "link", "set", "lo", "up")
}

func (l *Lab) build(ctx context.Context) error {
	o := &l.st.Options
	if err := os.MkdirAll(Dir(o.Name), 0o755); err != nil {
		return err
	}
	// The underlay octet, chosen under a machine-wide lock and recorded
	// before the lock is released, so that two labs never share it.
	l.doing = "choosing the underlay subnets"
	unlock, err := lockAlloc(ctx)
	if err != nil {
		return err
	}
	l.st.Octet, err = pickOctet(ctx, o.Name)
	if err == nil {
		err = l.save()
	}
	unlock()
	if err != nil {
		return err
	}
	t0 := time.Now()
	l.step("creating the namespaces and the fabric")
	if err := l.buildFabric(ctx); err != nil {
		return err
	}
	l.step("starting the datastore")
	if err := l.startDatastore(ctx); err != nil {
		return err
	}
	l.step("configuring the datastore")
	if err := l.configure(ctx); err != nil {
		return err
	}
	if o.KubeAPI {
		if err := l.buildKube(ctx); err != nil {
			return err
		}
	}
	if o.Topology == TopologyToR {
		l.step("starting BIRD")
		if err := l.startBird(ctx); err != nil {
			return err
		}
	}
	if o.Kubernetes {
		if err := l.buildCluster(ctx); err != nil {
			return err
		}
	} else {
		if err := l.makeCNIPath(); err != nil {
			return err
		}
		l.step(fmt.Sprintf("starting %d agents", len(l.st.Hosts)))
		for _, h := range l.st.Hosts {
			if err := l.startAgent(ctx, h); err != nil {
				return err
			}
		}
		l.step(fmt.Sprintf("waiting for %d agents to be ready and their BGP sessions Established", len(l.st.Hosts)))
		if err := l.waitConverged(ctx, o.Timeout); err != nil {
			return err
		}
	}
	l.doing = "writing the CLI config"
	if err := l.writeCLIConfig(); err != nil {
		return err
	}
	l.st.Phase = PhaseUp
	if err := l.save(); err != nil {
		return err
	}
	l.logf("lab %s up in %v", o.Name, time.Since(t0).Round(time.Millisecond))
	return nil
}

// pickOctet chooses R for 198.18.R.0/24 and 198.19.R.0/24: starting from
// a hash of the name, the first that neither another lab nor anything in
// the root namespace uses.
func pickOctet(ctx context.Context, name string) (int, error) {
	used := map[int]bool{}
	names, _ := Names()
	for _, n := range names {
		if st, err := loadState(n); err == nil && n != name {
			used[st.Octet] = true
		}
	}
	addrs, err := run(ctx, "ip", "-o", "addr")
	if err != nil {
		return 0, err
	}
	routes4, err := run(ctx, "ip", "-4", "route", "show", "table", "all")
	if err != nil {
		return 0, err
	}
	all := addrs + routes4
	h := fnv.New32a()
	h.Write([]byte(name))
	start := int(h.Sum32() % 240)
	for k := 0; k < 240; k++ {
		r := 8 + (start+k)%240
		if used[r] || strings.Contains(all, fmt.Sprintf("198.18.%d.", r)) || strings.Contains(all, fmt.Sprintf("198.19.%d.", r)) {
			continue
		}
		return r, nil
	}
	return 0, errors.New("no free 198.18.x.0/24 for the lab's underlay")
}

// subnets is how many underlay subnets the lab has.
func (o *Options) subnets() int {
	if o.Encap == EncapCrossSubnet {
		return 2
	}
	return 1
}

// hostSubnet puts the second half of the hosts in subnet 1 when there are two.
func (o *Options) hostSubnet(i int) int {
	if o.subnets() == 2 && i > (o.Hosts+1)/2 {
		return 1
	}
	return 0
}

func (l *Lab) buildFabric(ctx context.Context) error {
	o, st := &l.st.Options, l.st
	fab, rt := fabricNetns(o.Name), routerNetns(o.Name)
	if err := l.addNetns(ctx, fab); err != nil {
		return err
	}
	if err := l.addNetns(ctx, rt); err != nil {
		return err
	}
	for s := 0; s < o.subnets(); s++ {
		br := fmt.Sprintf("%s%d", bridgePrefix, s)
		if err := ipn(ctx, fab, "link", "add", br, "type", "bridge"); err != nil {
			return err
		}
		if err := ipn(ctx, fab, "link", "set", br, "up"); err != nil {
			return err
		}
	}
	// The router: every host's default gateway; it knows the underlay
	// subnets and nothing else.
	for s := 0; s < o.subnets(); s++ {
		a6 := netip.Addr{}
		if o.IPv6 {
			a6 = subnetAddr6(st.Octet, s, routerHost)
		}
		if err := l.plug(ctx, rt, fmt.Sprintf("eth%d", s), fmt.Sprintf("p-rt%d", s), s, subnetAddr(st.Octet, s, routerHost), a6); err != nil {
			return err
		}
	}
	kv := []string{"net.ipv4.ip_forward=1"}
	if o.IPv6 {
		kv = append(kv, "net.ipv6.conf.all.forwarding=1")
	}
	if err := sysctl(ctx, rt, kv...); err != nil {
		return err
	}

	// The root namespace's leg, for the datastore.
	root := rootLinkName(o.Name)
	if linkExists(root) {
		return fmt.Errorf("interface %s exists already and is not this lab's", root)
	}
	st.RootLink = root
	if err := l.save(); err != nil {
		return err
	}
	if err := ipn(ctx, "", "link", "add", root, "type", "veth", "peer", "name", "p-root", "netns", fab); err != nil {
		return err
	}
	if err := ipn(ctx, fab, "link", "set", "p-root", "master", bridgePrefix+"0", "up"); err != nil {
		return err
	}
	if err := ipn(ctx, "", "addr", "add", subnetAddr(st.Octet, 0, rootHost).String()+"/24", "dev", root); err != nil {
		return err
	}
	if err := ipn(ctx, "", "link", "set", root, "up"); err != nil {
		return err
	}
	if o.subnets() > 1 {
		// Replies to the hosts of the second subnet, through the router;
		// the route goes with the interface.
		if err := ipn(ctx, "", "route", "add", fmt.Sprintf("198.19.%d.0/24", st.Octet), "via", subnetAddr(st.Octet, 0, routerHost).String(), "dev", root); err != nil {
			return err
		}
	}

	for i := 1; i <= o.Hosts; i++ {
		s := o.hostSubnet(i)
		h := Host{Name: hostName(i), Node: hostNetns(o.Name, i), Netns: hostNetns(o.Name, i),
			Addr: subnetAddr(st.Octet, s, i).String(), Subnet: s, Port: "p-" + hostName(i)}
		if o.IPv6 {
			h.Addr6 = subnetAddr6(st.Octet, s, i).String()
		}
		st.Hosts = append(st.Hosts, h)
		if err := l.addNetns(ctx, h.Netns); err != nil {
			return err
		}
		var a6 netip.Addr
		if o.IPv6 {
			a6 = subnetAddr6(st.Octet, s, i)
		}
		if err := l.plug(ctx, h.Netns, "eth0", h.Port, s, subnetAddr(st.Octet, s, i), a6); err != nil {
			return err
		}
		// The default route is also what makes proxy ARP answer for
		// 169.254.1.1 (a route to it through another device than the
		// workload's; see pkg/cni).
		if err := ipn(ctx, h.Netns, "route", "add", "default", "via", subnetAddr(st.Octet, s, routerHost).String()); err != nil {
			return err
		}
		kv := []string{"net.ipv4.ip_forward=1"}
		if o.IPv6 {
			kv = append(kv, "net.ipv6.conf.all.forwarding=1")
			if err := ipn(ctx, h.Netns, "-6", "route", "add", "default", "via", subnetAddr6(st.Octet, s, routerHost).String()); err != nil {
				return err
			}
		}
		if err := sysctl(ctx, h.Netns, kv...); err != nil {
			return err
		}
	}
	return l.save()
}

// plug connects namespace ns to subnet s's bridge: port in the fabric, dev
// in ns with addr/24 (and addr6/64).
func (l *Lab) plug(ctx context.Context, ns, dev, port string, s int, addr, addr6 netip.Addr) error {
	fab := fabricNetns(l.st.Name)
	if err := ipn(ctx, fab, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns); err != nil {
		return err
	}
	if err := ipn(ctx, fab, "link", "set", port, "master", fmt.Sprintf("%s%d", bridgePrefix, s), "up"); err != nil {
		return err
	}
	if err := ipn(ctx, ns, "addr", "add", addr.String()+"/24", "dev", dev); err != nil {
		return err
	}
	if addr6.IsValid() {
		if err := ipn(ctx, ns, "addr", "add", addr6.String()+"/64", "dev", dev, "nodad"); err != nil {
			return err
		}
	}
	return ipn(ctx, ns, "link", "set", dev, "up")
}

var servingRE = regexp.MustCompile(`serving on (\S+)`)

func (l *Lab) startDatastore(ctx context.Context) error {
	dir := Dir(l.st.Name)
	logPath := filepath.Join(dir, "datastore.log")
	url := fmt.Sprintf("http://%s:0", subnetAddr(l.st.Octet, 0, rootHost))
	p, err := spawn(ctx, "datastore", "etcd", "", logPath, nil, l.st.Options.Bins.Tortie,
		"datastore", "serve", "--data-dir", filepath.Join(dir, "etcd"), "--listen-client", url,
		// A lab's data goes with it: a disk stalled by other work must not
		// stall the lab (etcd's fsync, not the lab, is what would wait).
		"--unsafe-no-fsync")
	if err != nil {
		return err
	}
	l.st.Procs = append(l.st.Procs, p)
	if err := l.save(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(logPath); len(b) > 0 {
			if m := servingRE.FindSubmatch(b); m != nil {
				l.st.Endpoint = string(m[1])
				l.logf("datastore: %s (pid %d)", l.st.Endpoint, p.PID)
				return l.save()
			}
		}
		if !p.alive() {
			return exited(p)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return interrupted(ctx)
		}
	}
	return fmt.Errorf("the datastore did not say where it serves within 30s%s", logTail(p))
}

// exitedError is a lab process's end while Up waited for it: how it ended
// and the end of its log, read when it is made (the teardown removes the
// log).
type exitedError struct {
	log string // the log quoted
	msg string
}

func exited(p Proc) error {
	how := p.exitStatus()
	if how != "" {
		how = ": " + how
	}
	return &exitedError{log: p.Log, msg: fmt.Sprintf("the %s (pid %d) exited%s%s", p.Role, p.PID, how, logTail(p))}
}

func (e *exitedError) Error() string { return e.msg }

// logTail is the end of p's log as a block for an error message, or says
// that the log is empty.
func logTail(p Proc) string {
	data, err := os.ReadFile(p.Log)
	switch {
	case err != nil:
		return fmt.Sprintf(" (its log: %v)", err)
	case len(data) == 0:
		return fmt.Sprintf(" (its log %s is empty)", p.Log)
	}
	if len(data) > 1500 {
		data = data[len(data)-1500:]
	}
	return fmt.Sprintf("\n--- %s %s log (%s), last lines ---\n%s", p.Role, p.Name, p.Log, data)
}

// connect opens the lab's datastore.
func (l *Lab) connect() (*client.Client, func(), error) {
	be, err := datastore.New(datastore.Config{Endpoints: []string{l.st.Endpoint}})
	if err != nil {
		return nil, nil, err
	}
	return client.New(be), func() { be.Close() }, nil
}

// applyYAML applies documents in order.
func applyYAML(ctx context.Context, c *client.Client, docs ...string) error {
	for _, d := range docs {
		r, err := v3.Decode([]byte(d))
		if err != nil {
			return fmt.Errorf("lab resource %s: %w", d, err)
		}
		if _, err := c.Apply(ctx, r); err != nil {
			return fmt.Errorf("applying %s: %w", d, err)
		}
	}
	return nil
}

// configure writes what the agents need before they start: the BGP
// configuration, the pools, the peers of the topology.
func (l *Lab) configure(ctx context.Context) error {
	o, st := &l.st.Options, l.st
	c, done, err := l.connect()
	if err != nil {
		return err
	}
	defer done()
	if err := c.EnsureInitialized(ctx); err != nil {
		return err
	}
	mesh := o.Topology == TopologyMesh
	docs := []string{fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: %v, asNumber: %d}
`, mesh, DefaultAS)}
	vx := map[string]string{EncapNone: "Never", EncapVXLAN: "Always", EncapCrossSubnet: "CrossSubnet"}[o.Encap]
	docs = append(docs, fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lab-ipv4}
spec: {cidr: %q, vxlanMode: %s, natOutgoing: %v, nodeSelector: all()}
`, o.Pool, vx, o.Kubernetes))
	if o.IPv6 {
		docs = append(docs, fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: lab-ipv6}
spec: {cidr: %q, natOutgoing: false, nodeSelector: all()}
`, o.Pool6))
	}
	if o.Encryption == EncryptionWireguard {
		docs = append(docs, `
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {wireguardEnabled: true}
`)
	}
	switch o.Topology {
	case TopologyToR:
		docs = append(docs, fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: %q, asNumber: %d}
`, subnetAddr(st.Octet, 0, routerHost), DefaultAS))
		if o.IPv6 {
			docs = append(docs, fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-v6}
spec: {peerIP: %q, asNumber: %d}
`, subnetAddr6(st.Octet, 0, routerHost), DefaultAS))
		}
	case TopologyRR:
		// The first host reflects; its Node is made before its agent
		// starts (startup keeps what it does not own).
		docs = append(docs, fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: %s, labels: {route-reflector: "true"}}
spec: {bgp: {routeReflectorClusterID: 224.0.0.1}}
`, st.Hosts[0].Node), `
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec: {nodeSelector: all(), peerSelector: "route-reflector == 'true'"}
`)
	}
	return applyYAML(ctx, c, docs...)
}

// makeCNIPath is the CNI_PATH: the plugin under both its names.
func (l *Lab) makeCNIPath() error {
	dir := filepath.Join(Dir(l.st.Name), "cni")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, n := range []string{"tortie", "tortie-ipam"} {
		p := filepath.Join(dir, n)
		_ = os.Remove(p)
		if err := os.Symlink(l.st.Options.Bins.CNI, p); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) hostDir() string { return filepath.Join(Dir(l.st.Name), "hosts") }

// mtuFile is where h's agent keeps the workload MTU and the plugin reads
// it: the hosts share this machine's filesystem.
func (l *Lab) mtuFile(h *Host) string { return filepath.Join(l.hostDir(), h.Name+".mtu") }

func (l *Lab) startAgent(ctx context.Context, h Host) error {
	if err := os.MkdirAll(l.hostDir(), 0o755); err != nil {
		return err
	}
	o := &l.st.Options
	args := []string{o.Bins.Node,
		"--node-name", h.Node, "--etcd-endpoints", l.st.Endpoint,
		"--ip", "autodetect", "--ip-autodetection-method", "interface=eth0",
		"--nodename-file", filepath.Join(l.hostDir(), h.Name+".nodename"),
		"--mtu-file", l.mtuFile(&h),
		"--health-addr", fmt.Sprintf(":%d", HealthPort), "--metrics-addr", fmt.Sprintf(":%d", MetricsPort),
		// Each host's own key: the hosts share this machine's filesystem.
		"--wireguard-key-file", filepath.Join(l.hostDir(), h.Name+".wgkey"),
	}
	if o.IPv6 {
		args = append(args, "--ip6", "autodetect", "--ip6-autodetection-method", "interface=eth0")
	}
	p, err := spawn(ctx, "agent", h.Name, h.Netns, filepath.Join(l.hostDir(), h.Name+".log"), []string{"NODENAME=" + h.Node}, args...)
	if err != nil {
		return err
	}
	// Replace the host's old agent record, if any (a restart).
	procs := l.st.Procs[:0]
	for _, q := range l.st.Procs {
		if !(q.Role == "agent" && q.Name == h.Name) {
			procs = append(procs, q)
		}
	}
	l.st.Procs = append(procs, p)
	return l.save()
}

// startBird runs BIRD 2 in the router namespace as the hosts' route
// reflector (the mesh is off in the tor topology).
func (l *Lab) startBird(ctx context.Context) error {
	o, st := &l.st.Options, l.st
	dir := filepath.Join(Dir(o.Name), "bird")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	rt := subnetAddr(st.Octet, 0, routerHost)
	fmt.Fprintf(&b, "router id %s;\nlog stderr all;\nprotocol device { scan time 2; }\nprotocol direct { ipv4; %s}\n", rt, map[bool]string{true: "ipv6; ", false: ""}[o.IPv6])
	for _, h := range st.Hosts {
		fmt.Fprintf(&b, `protocol bgp %s {
	local %s as %d;
	neighbor %s as %d;
	rr client;
	direct;
	hold time 9; keepalive time 3; connect delay time 1; connect retry time 2; error wait time 1, 5;
	ipv4 { import all; export all; next hop keep; gateway direct; };
}
`, h.Name, subnetAddr(st.Octet, h.Subnet, routerHost), DefaultAS, h.Addr, DefaultAS)
		if o.IPv6 {
			fmt.Fprintf(&b, `protocol bgp %s_v6 {
	local %s as %d;
	neighbor %s as %d;
	rr client;
	direct;
	hold time 9; keepalive time 3; connect delay time 1; connect retry time 2; error wait time 1, 5;
	ipv6 { import all; export all; next hop keep; gateway direct; };
}
`, h.Name, subnetAddr6(st.Octet, h.Subnet, routerHost), DefaultAS, h.Addr6, DefaultAS)
		}
	}
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return err
	}
	p, err := spawn(ctx, "bird", "router", routerNetns(o.Name), filepath.Join(dir, "bird.log"), nil,
		o.Bins.Bird, "-f", "-c", conf, "-s", BirdSocket(o.Name))
	if err != nil {
		return err
	}
	st.Procs = append(st.Procs, p)
	return l.save()
}

// BirdSocket is the control socket of a tor lab's BIRD (for birdc -s).
func BirdSocket(lab string) string { return filepath.Join(Dir(lab), "bird", "bird.ctl") }

// expectedPeers is how many IPv4 sessions each host should have.
func (l *Lab) expectedPeers(h Host) int {
	n := len(l.st.Hosts)
	switch l.st.Options.Topology {
	case TopologyToR:
		return 1
	case TopologyRR:
		if h.Name == l.st.Hosts[0].Name {
			return n - 1
		}
		return 1
	}
	return n - 1
}

// waitConverged waits until every agent is ready and every host has its
// sessions, all Established.
func (l *Lab) waitConverged(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var why string
	for {
		ok := true
		why = ""
		if dead := l.deadProcs(); len(dead) > 0 {
			return fmt.Errorf("%s stopped", strings.Join(dead, ", "))
		}
		for _, h := range l.st.Hosts {
			hs := l.hostStatus(ctx, h)
			if !hs.Ready {
				ok, why = false, h.Name+": agent not ready"
				break
			}
			if hs.Established != hs.Peers || hs.Peers4 != l.expectedPeers(h) {
				ok, why = false, fmt.Sprintf("%s: %d of %d sessions Established (want %d IPv4 sessions)", h.Name, hs.Established, hs.Peers, l.expectedPeers(h))
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not converged within %v: %s", timeout, why)
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return interrupted(ctx)
		}
	}
}

// WaitConverged is waitConverged for callers (after an agent restart).
func (l *Lab) WaitConverged(ctx context.Context, timeout time.Duration) error {
	return l.waitConverged(ctx, timeout)
}

// RestartAgent stops a host's agent (SIGTERM, so graceful restart applies)
// and starts it again.
func (l *Lab) RestartAgent(ctx context.Context, host string) error {
	unlock, err := lockLab(ctx, l.st.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := l.reload(); err != nil {
		return err
	}
	h, err := l.host(host)
	if err != nil {
		return err
	}
	for _, p := range l.st.Procs {
		if p.Role == "agent" && p.Name == h.Name {
			p.stop(ctx, 10*time.Second)
		}
	}
	return l.startAgent(ctx, *h)
}

func (l *Lab) reload() error {
	st, err := loadState(l.st.Name)
	if err != nil {
		return err
	}
	l.st = st
	return nil
}

// host finds a host by short name (h1), node name or namespace.
func (l *Lab) host(name string) (*Host, error) {
	for i := range l.st.Hosts {
		h := &l.st.Hosts[i]
		if name == h.Name || name == h.Node || name == h.Netns {
			return h, nil
		}
	}
	var names []string
	for _, h := range l.st.Hosts {
		names = append(names, h.Name)
	}
	return nil, fmt.Errorf("lab %s has no host %q (hosts: %s)", l.st.Name, name, strings.Join(names, ", "))
}

// LinkState is a host link's state on the fabric.
type LinkState string

// The states SetLink sets.
const (
	LinkUp   LinkState = "up"
	LinkDown LinkState = "down"
)

// ParseLinkState reads "up" or "down".
func ParseLinkState(s string) (LinkState, error) {
	switch st := LinkState(s); st {
	case LinkUp, LinkDown:
		return st, nil
	}
	return "", fmt.Errorf("%q: want up or down", s)
}

// SetLink sets a host's link on the fabric up or down (a cable pulled).
func (l *Lab) SetLink(ctx context.Context, host string, state LinkState) error {
	if _, err := ParseLinkState(string(state)); err != nil {
		return err
	}
	h, err := l.host(host)
	if err != nil {
		return err
	}
	return ipn(ctx, fabricNetns(l.st.Name), "link", "set", h.Port, string(state))
}
