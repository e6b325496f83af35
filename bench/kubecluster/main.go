// Command kubecluster benchmarks tortie installed in a real Kubernetes
// cluster on this machine (`tortie lab up --kubernetes`, pkg/lab/cluster.go):
// every lab host a node (containerd, kubelet, nftables kube-proxy), a
// control plane in the root namespace on the lab's etcd, tortie installed
// by `kubectl apply -f deploy/tortie.yaml` alone. It measures:
//
//  1. `lab up --kubernetes --hosts 3` wall time, -ups times (every run but
//     the last is taken down again, and its `lab down` timed), with the
//     time of each of Up's steps; then, once up (after -settle), memory:
//     the summed VmRSS of the control plane and datastore (the lab's own
//     processes), and per node of every process of the node (its cgroup
//     tree in every hierarchy, containerd's shims, and the node's recorded
//     processes), split by program (containerd, kubelet, kube-proxy, shims,
//     pause, tortie-node, tortie-kube-controllers, ...). The same again
//     with the pods of 2. running.
//  2. pod created → Ready, and → its address set: a Deployment of the
//     echoserver image spread over the nodes (a topology spread constraint)
//     scaled from 0 in steps of -step up to -pods, each step waiting until
//     every pod is Ready. Per pod, from the pod's appearance in a watch of
//     the API (client-go, millisecond resolution) to the watch showing its
//     status.podIP, its Ready condition True and tortie-cni's
//     cni.projectcalico.org/podIP annotation; and from the API's own
//     stamps (creationTimestamp → the Ready condition's
//     lastTransitionTime, which Kubernetes keeps in whole seconds). Then the
//     Deployment is deleted and every address it had is checked free with
//     `tortie ipam show` (the pool's in-use count back where it was, then
//     `--ip` for each address) and `tortie ipam check`.
//  3. a NetworkPolicy `kubectl apply` → enforced between pods on different
//     nodes: a server pod on the first node, a client pod on the second, a
//     policy selecting the server toggled -changes times between allowing
//     the client on TCP 8080 and allowing nothing, each change timed from
//     the start of `kubectl apply` to the first probe that sees the new
//     verdict (bench/internal/probe: a connection attempt every millisecond
//     from the client pod's network namespace). That namespace is found
//     through the pod's cgroup: kubelet (cgroupfs driver) puts every
//     process of the pod (pause and the containers) under a cgroup named
//     pod<UID> in the node's cgroup root; any of them whose network
//     namespace is not the node's is the pod's, and it must hold the pod's
//     address (checked) — the pod's UID is the API's, so no container
//     runtime call is needed and no process is guessed by its command line.
//
// At the end it reports each of tortie's pods' restarts and the ERROR and
// WARN lines of its logs.
//
// It needs root, the Kubernetes binaries (scripts/build-kubernetes.sh),
// containerd, runc, nsenter and the CNI loopback plugin (make deps). It
// builds what it runs itself (`make build`'s binaries and `make images`'
// images, into a temporary directory), names every lab uniquely, and removes
// its lab at the end, on failure and on SIGINT/SIGTERM.
//
//	go run ./bench/kubecluster [-ups 3] [-pods 100] [-step 10] [-changes 30]
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/probe"
	"github.com/tortie/tortie/bench/internal/procstat"
	"github.com/tortie/tortie/bench/internal/verdicts"
	"github.com/tortie/tortie/pkg/apis/k8s"
	"github.com/tortie/tortie/pkg/images"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/kube/node"
	"github.com/tortie/tortie/pkg/lab"
)

const (
	benchNS   = "bench"
	echoImage = "docker.io/tortie/echoserver:v0.1.0-dev"
	echoPort  = 8080
)

var runner = labrun.New("bench/kubecluster")

func logf(format string, args ...any) { runner.Logf(format, args...) }

func fatalf(format string, args ...any) { runner.Fatalf(format, args...) }

func main() {
	ups := flag.Int("ups", 3, "lab up --kubernetes runs timed (all but the last are taken down again)")
	hosts := flag.Int("hosts", 3, "nodes of the cluster")
	pods := flag.Int("pods", 100, "echoserver pods of the Deployment")
	step := flag.Int("step", 10, "the Deployment is scaled up by this many pods at a time, each step waiting until all are Ready")
	changes := flag.Int("changes", 30, "NetworkPolicy changes timed")
	settle := flag.Duration("settle", 10*time.Second, "wait after lab up (and after the last pod is Ready) before memory is read")
	binDir := flag.String("bin-dir", "", "where tortie, tortie-datastore, tortie-node, tortie-cni and tortie-kube-controllers are (default: built from this module)")
	imagesDir := flag.String("images", "", "the images directory of `make images` (default: built from this module)")
	keep := flag.Bool("keep", false, "leave the last lab up at the end (remove it with `tortie lab down --name NAME`)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/kubecluster: needs root (network namespaces, cgroups, containerd)")
		os.Exit(2)
	}
	if *ups < 1 || *hosts < 2 || *pods < 1 || *step < 1 || *changes < 2 {
		fmt.Fprintln(os.Stderr, "bench/kubecluster: want -ups ≥ 1, -hosts ≥ 2, -pods ≥ 1, -step ≥ 1, -changes ≥ 2")
		os.Exit(2)
	}
	if err := preflight(); err != nil {
		fmt.Fprintf(os.Stderr, "bench/kubecluster: %v\n", err)
		os.Exit(2)
	}
	// Interrupted, lab.Up removes what it made by itself; after it, a
	// command or wait fails and fatalf runs the cleanups.
	ctx, stop := runner.Interruptible("interrupted: removing what was made")
	defer stop()
	r := &results{start: time.Now(), load0: labrun.LoadAverage(), hosts: *hosts, nPods: *pods, step: *step, settle: *settle}
	b := &bench{ctx: ctx, r: r, changesN: *changes}
	b.run(*binDir, *imagesDir, *ups, *keep)
	r.load1 = labrun.LoadAverage()
	runner.Finish()
	r.print(os.Stdout)
}

// preflight checks what a --kubernetes lab needs before anything is built.
func preflight() error {
	if _, err := apiserver.BinDir(); err != nil {
		return err
	}
	for _, n := range []string{"kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler"} {
		if _, err := apiserver.Binary(n); err != nil {
			return err
		}
	}
	for _, n := range []string{"containerd", "ctr", "runc", "nsenter"} {
		if _, err := exec.LookPath(n); err != nil {
			return fmt.Errorf("%s not found (scripts/install-deps.sh)", n)
		}
	}
	return nil
}

// moduleRoot is the directory of this module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not in the tortie module: run it from the repository (go run ./bench/kubecluster)")
	}
	return filepath.Dir(mod), nil
}

type upRun struct {
	name  string
	total time.Duration
	steps []stepTime
	down  time.Duration // 0: the lab kept for the rest
}

type stepTime struct {
	what string
	d    time.Duration
}

// stepLog is lab.Up's progress writer: every line to stderr with the
// time since the start, and Up's steps (lines ending "...") timed.
type stepLog struct {
	mu    sync.Mutex
	t0    time.Time
	buf   []byte
	lines []stepAt
}

type stepAt struct {
	at   time.Time
	what string
}

func (s *stepLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		line := string(s.buf[:i])
		s.buf = s.buf[i+1:]
		now := time.Now()
		fmt.Fprintf(os.Stderr, "  [%6.1fs] %s\n", now.Sub(s.t0).Seconds(), line)
		if strings.HasSuffix(line, "...") {
			s.lines = append(s.lines, stepAt{now, strings.TrimSuffix(line, "...")})
		}
	}
	return len(p), nil
}

// steps are the steps' durations, the last until end; the time before
// the first step is "preparing".
func (s *stepLog) steps(end time.Time) []stepTime {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []stepTime
	if len(s.lines) > 0 {
		out = append(out, stepTime{"preparing", s.lines[0].at.Sub(s.t0)})
	}
	for i, l := range s.lines {
		next := end
		if i+1 < len(s.lines) {
			next = s.lines[i+1].at
		}
		out = append(out, stepTime{l.what, next.Sub(l.at)})
	}
	return out
}

// classMem is the summed RSS of the processes of one kind.
type classMem struct {
	kib int64
	n   int
}

type nodeMem struct {
	host, node string
	by         map[string]classMem
	others     map[string]int // "other" processes by name
	total      int64
}

type memSnap struct {
	load    string
	cp      []roleMem
	cpTotal int64
	nodes   []nodeMem
	total   int64
	pods    int // test pods running
}

type roleMem struct {
	role string
	pid  int
	kib  int64
}

// podRec is what the watch saw of one pod.
type podRec struct {
	name, node, ip string
	created        time.Time // creationTimestamp (whole seconds)
	readyAPI       time.Time // the Ready condition's lastTransitionTime (whole seconds)
	seen           time.Time // first in the watch
	seenIP         time.Time // status.podIP first set in the watch
	seenCNI        time.Time // the CNI plugin's cni.projectcalico.org/podIP annotation first in the watch
	seenReady      time.Time // Ready True first in the watch
	readyNow       bool
	terminating    bool
	deleted        time.Time
	fromList       bool // first seen in a (re)list, not as it was created
}

type podResults struct {
	steps        []time.Duration // scale command start → every pod of the step Ready
	total        time.Duration   // first scale → the last pod Ready
	readyWatch   []time.Duration // per pod: seen → Ready, by the watch
	ipWatch      []time.Duration // per pod: seen → podIP set
	cniWatch     []time.Duration // per pod: seen → the CNI plugin's podIP annotation
	readyAPI     []time.Duration // per pod: creationTimestamp → Ready lastTransitionTime
	perNode      map[string]int
	fromList     int
	inUseBefore  int
	inUseWith    int
	inUseAfter   int
	podsGone     time.Duration // delete start → every pod gone from the API
	released     time.Duration // delete start → the pool's in-use count back
	notFreed     []string      // addresses `ipam show --ip` still shows assigned
	ipamCheck    string
	ipamCheckErr bool
	ips          int
}

// series is what a run of changes measured.
type series = verdicts.Series

type results struct {
	start        time.Time
	load0, load1 string
	hosts        int
	nPods, step  int
	settle       time.Duration
	archives     string
	ups          []upRun
	finalDown    time.Duration
	memUp        memSnap
	memPods      memSnap
	pods         podResults
	loadPods     string // after the pods are up
	np           series
	loadNP0      string // before the policy changes
	loadNP       string // after the policy changes
	serverNode   string
	clientNode   string
	clientNetns  string
	health       []podHealth
}

type bench struct {
	ctx      context.Context
	r        *results
	changesN int
	l        *lab.Lab
	dir      string
	tortie   string
	kc       kubernetes.Interface
}

func (b *bench) run(binDir, imagesDir string, ups int, keep bool) {
	dir, err := os.MkdirTemp("", "tortie-bench-kubecluster.")
	if err != nil {
		fatalf("%v", err)
	}
	b.dir = dir
	runner.AddCleanup(func() { os.RemoveAll(dir) })
	root, err := moduleRoot()
	if err != nil {
		fatalf("%v", err)
	}
	if binDir == "" {
		binDir = filepath.Join(dir, "bin")
		for _, c := range []string{"tortie", "tortie-node", "tortie-cni", "tortie-datastore", "tortie-kube-controllers"} {
			logf("building %s", c)
			cmd := exec.CommandContext(b.ctx, "go", "build", "-o", filepath.Join(binDir, c), "./cmd/"+c)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				fatalf("go build %s: %v\n%s", c, err, out)
			}
		}
	}
	b.tortie = filepath.Join(binDir, "tortie")
	if imagesDir == "" {
		logf("building the images' static programs (as make images)")
		static := filepath.Join(dir, "static")
		if err := images.BuildPrograms(b.ctx, root, static, nil); err != nil {
			fatalf("%v", err)
		}
		imagesDir = filepath.Join(dir, "images")
		built, err := images.WriteAll(static, imagesDir, images.DefaultRegistry, images.DefaultTag)
		if err != nil {
			fatalf("writing the images: %v", err)
		}
		for _, im := range built {
			logf("image %s", im.Path)
		}
	}
	loopback := ""
	for _, c := range []string{filepath.Join(binDir, "loopback"), filepath.Join(root, "bin", "loopback"), filepath.Join(node.CNIBinDir, "loopback")} {
		if fi, err := os.Stat(c); err == nil && fi.Mode()&0o111 != 0 {
			loopback = c
			break
		}
	}
	if loopback == "" {
		fatalf("no CNI loopback plugin in %s, %s or %s: run `make deps`", binDir, filepath.Join(root, "bin"), node.CNIBinDir)
	}

	for i := range ups {
		id := make([]byte, 3)
		rand.Read(id)
		name := "tkc" + hex.EncodeToString(id)
		logf("lab up --kubernetes --hosts %d, run %d of %d: lab %s (load %s)", b.r.hosts, i+1, ups, name, labrun.LoadAverage())
		sl := &stepLog{t0: time.Now()}
		t0 := time.Now()
		l, _, err := lab.Up(b.ctx, lab.Options{Name: name, Hosts: b.r.hosts, Kubernetes: true, Images: imagesDir, Log: sl,
			Bins: lab.Binaries{Tortie: b.tortie, Node: filepath.Join(binDir, "tortie-node"), CNI: filepath.Join(binDir, "tortie-cni"), Loopback: loopback}})
		end := time.Now()
		if err != nil {
			fatalf("lab up: %v", err)
		}
		run := upRun{name: name, total: end.Sub(t0), steps: sl.steps(end)}
		for _, s := range run.steps {
			if strings.HasPrefix(s.what, "starting ") && strings.Contains(s.what, "importing") {
				b.r.archives = s.what
			}
		}
		logf("lab %s up in %v", name, run.total.Round(time.Millisecond))
		if i < ups-1 {
			t1 := time.Now()
			if err := lab.Down(context.WithoutCancel(b.ctx), name, io.Discard); err != nil {
				fatalf("lab down %s: %v", name, err)
			}
			run.down = time.Since(t1)
			logf("lab %s down in %v", name, run.down.Round(time.Millisecond))
			b.r.ups = append(b.r.ups, run)
			if b.ctx.Err() != nil {
				fatalf("interrupted")
			}
			continue
		}
		b.r.ups = append(b.r.ups, run)
		b.l = l
		if keep {
			logf("-keep: the lab %s stays up", name)
		} else {
			runner.AddCleanup(func() {
				t1 := time.Now()
				if err := lab.Down(context.Background(), name, io.Discard); err != nil {
					logf("lab down %s: %v", name, err)
					return
				}
				b.r.finalDown = time.Since(t1)
				logf("lab %s down in %v", name, b.r.finalDown.Round(time.Millisecond))
			})
		}
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", lab.KubeconfigFile(b.l.Name()))
	if err != nil {
		fatalf("kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	if b.kc, err = kubernetes.NewForConfig(cfg); err != nil {
		fatalf("%v", err)
	}

	logf("waiting %v, then reading memory", b.r.settle)
	b.sleep(b.r.settle)
	b.r.memUp = b.memory(0)
	logf("memory once up: %s total (load %s)", mib(b.r.memUp.total), b.r.memUp.load)

	b.podsPhase()
	b.policyPhase()
	b.tortieHealth()
}

// tortieHealth records, for each of tortie's pods at the end, its
// restarts and the ERROR and WARN lines of its logs (slog's level=).
func (b *bench) tortieHealth() {
	pods, err := b.kc.CoreV1().Pods(lab.TortieNamespace).List(b.ctx, metav1.ListOptions{LabelSelector: "k8s-app in (tortie-node,tortie-kube-controllers)"})
	if err != nil {
		fatalf("listing tortie's pods: %v", err)
	}
	for _, p := range pods.Items {
		h := podHealth{name: p.Name, node: p.Spec.NodeName}
		for _, c := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			h.restarts += c.RestartCount
		}
		out, err := b.kubectl("logs", "-n", lab.TortieNamespace, p.Name, "--all-containers").CombinedOutput()
		if err != nil {
			logf("kubectl logs %s: %v\n%s", p.Name, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.TrimSpace(l) != "" {
				h.lines++
			}
			switch {
			case strings.Contains(l, "level=ERROR"):
				h.errors++
				if len(h.samples) < 3 {
					h.samples = append(h.samples, l)
				}
			case strings.Contains(l, "level=WARN"):
				h.warns++
				if len(h.samples) < 3 {
					h.samples = append(h.samples, l)
				}
			}
		}
		b.r.health = append(b.r.health, h)
	}
	sort.Slice(b.r.health, func(i, j int) bool { return b.r.health[i].name < b.r.health[j].name })
}

type podHealth struct {
	name, node    string
	restarts      int32
	lines         int
	errors, warns int
	samples       []string
}

func (b *bench) sleep(d time.Duration) {
	select {
	case <-b.ctx.Done():
		fatalf("interrupted")
	case <-time.After(d):
	}
}

// --- memory ---

// rssKiB is VmRSS of pid (0 when it is gone or a kernel thread).
func rssKiB(pid int) int64 {
	n, _ := procstat.StatusKB(pid, "VmRSS")
	return n
}

// progName is the base name of pid's argv[0] (its comm if it has none).
func progName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err == nil && len(b) > 0 {
		a0, _, _ := bytes.Cut(b, []byte{0})
		if n := filepath.Base(string(a0)); n != "" && n != "." {
			return n
		}
	}
	c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(c))
}

// Kinds of a node's processes, in the order printed.
var kinds = []string{"containerd", "kubelet", "kube-proxy", "shims", "pause", "tortie-node", "tortie-kube-controllers", "echoserver", "other"}

func kindOf(prog string) string {
	switch prog {
	case "containerd", "kubelet", "kube-proxy", "pause", "tortie-node", "tortie-kube-controllers", "echoserver":
		return prog
	case "containerd-shim-runc-v2", "containerd-shim":
		return "shims"
	}
	return "other"
}

// memory reads the RSS of the lab's processes and of every node's.
func (b *bench) memory(testPods int) memSnap {
	l, err := lab.Open(b.l.Name())
	if err != nil {
		fatalf("%v", err)
	}
	st := l.State()
	m := memSnap{load: labrun.LoadAverage(), pods: testPods}
	for _, p := range st.Procs {
		k := rssKiB(p.PID)
		m.cp = append(m.cp, roleMem{role: p.Role, pid: p.PID, kib: k})
		m.cpTotal += k
	}
	if st.Kube == nil {
		fatalf("lab %s has no Kubernetes state", st.Name)
	}
	counted := map[int]bool{}
	for _, kn := range st.Kube.Nodes {
		nm := nodeMem{host: kn.Host, node: kn.Record.Name, by: map[string]classMem{}, others: map[string]int{}}
		pids, err := node.TreePIDs(kn.Record)
		if err != nil {
			fatalf("node %s: %v", kn.Record.Name, err)
		}
		for _, p := range kn.Record.Procs {
			if p.Alive() {
				pids = append(pids, p.PID)
			}
		}
		for _, pid := range pids {
			if counted[pid] || pid == os.Getpid() {
				continue
			}
			counted[pid] = true
			k := rssKiB(pid)
			if k == 0 {
				continue
			}
			prog := progName(pid)
			kind := kindOf(prog)
			if kind == "other" {
				nm.others[prog]++
			}
			c := nm.by[kind]
			c.kib += k
			c.n++
			nm.by[kind] = c
			nm.total += k
		}
		m.nodes = append(m.nodes, nm)
	}
	sort.Slice(m.nodes, func(i, j int) bool { return m.nodes[i].host < m.nodes[j].host })
	m.total = m.cpTotal
	for _, n := range m.nodes {
		m.total += n.total
	}
	return m
}

// --- pods ---

// watcher follows the pods of a label selector.
type watcher struct {
	mu   sync.Mutex
	pods map[types.UID]*podRec
}

func readyOf(p *corev1.Pod) (bool, time.Time) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue, c.LastTransitionTime.Time
		}
	}
	return false, time.Time{}
}

func (w *watcher) update(p *corev1.Pod, now time.Time, deleted, fromList bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.pods[p.UID]
	if r == nil {
		r = &podRec{name: p.Name, seen: now, created: p.CreationTimestamp.Time, fromList: fromList}
		w.pods[p.UID] = r
	}
	if p.Spec.NodeName != "" {
		r.node = p.Spec.NodeName
	}
	if p.Status.PodIP != "" {
		if r.seenIP.IsZero() {
			r.seenIP = now
		}
		r.ip = p.Status.PodIP
	}
	if p.Annotations[k8s.AnnotationPodIP] != "" && r.seenCNI.IsZero() {
		r.seenCNI = now
	}
	ready, at := readyOf(p)
	r.readyNow = ready
	if ready && r.seenReady.IsZero() {
		r.seenReady, r.readyAPI = now, at
	}
	r.terminating = p.DeletionTimestamp != nil
	if deleted && r.deleted.IsZero() {
		r.deleted = now
	}
}

// run lists and watches until ctx ends, listing again whenever the watch
// ends.
func (w *watcher) run(ctx context.Context, kc kubernetes.Interface, selector string) {
	for ctx.Err() == nil {
		list, err := kc.CoreV1().Pods(benchNS).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			if ctx.Err() == nil {
				logf("listing pods: %v", err)
				time.Sleep(time.Second)
			}
			continue
		}
		now := time.Now()
		live := map[types.UID]bool{}
		for i := range list.Items {
			live[list.Items[i].UID] = true
			w.update(&list.Items[i], now, false, true)
		}
		w.mu.Lock()
		for uid, r := range w.pods {
			if !live[uid] && r.deleted.IsZero() {
				r.deleted = now
			}
		}
		w.mu.Unlock()
		wi, err := kc.CoreV1().Pods(benchNS).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
		if err != nil {
			if ctx.Err() == nil {
				logf("watching pods: %v", err)
				time.Sleep(time.Second)
			}
			continue
		}
		for ev := range wi.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				break // an error event: list again
			}
			now := time.Now()
			switch ev.Type {
			case watch.Added, watch.Modified:
				w.update(p, now, false, false)
			case watch.Deleted:
				w.update(p, now, true, false)
			}
		}
		wi.Stop()
	}
}

// counts are the pods not deleted, and those of them Ready.
func (w *watcher) counts() (live, ready int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.pods {
		if r.deleted.IsZero() {
			live++
			if r.readyNow && !r.terminating {
				ready++
			}
		}
	}
	return live, ready
}

func (w *watcher) snapshot() []podRec {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]podRec, 0, len(w.pods))
	for _, r := range w.pods {
		out = append(out, *r)
	}
	return out
}

func echoDeployment() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: %[1]s}
spec:
  replicas: 0
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
      - {name: echo, image: %[2]s, ports: [{containerPort: %[3]d, name: http}]}
`, benchNS, echoImage, echoPort)
}

func (b *bench) podsPhase() {
	r := &b.r.pods
	b.mustIn(echoDeployment(), "apply", "-f", "-")
	// The ReplicaSet cannot create pods before the namespace's default
	// ServiceAccount exists: wait for it, or the first step would time the
	// controller's back-off.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := b.kc.CoreV1().ServiceAccounts(benchNS).Get(b.ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			fatalf("namespace %s has no default ServiceAccount after 2 minutes", benchNS)
		}
		b.sleep(100 * time.Millisecond)
	}
	r.inUseBefore = b.ipamInUse()

	w := &watcher{pods: map[types.UID]*podRec{}}
	wctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	go w.run(wctx, b.kc, "app=echo")

	logf("scaling deployment echo to %d pods, %d at a time", b.r.nPods, b.r.step)
	t0 := time.Now()
	for n := min(b.r.step, b.r.nPods); ; n = min(n+b.r.step, b.r.nPods) {
		ts := time.Now()
		b.must(b.kubectl("scale", "deployment/echo", "-n", benchNS, fmt.Sprintf("--replicas=%d", n)))
		deadline := time.Now().Add(5 * time.Minute)
		for {
			_, ready := w.counts()
			if ready >= n {
				break
			}
			if time.Now().After(deadline) {
				b.dumpPods()
				fatalf("%d of %d pods Ready 5 minutes after the scale to %d", ready, n, n)
			}
			b.sleep(20 * time.Millisecond)
		}
		d := time.Since(ts)
		r.steps = append(r.steps, d)
		logf("  %d pods Ready (this step of %d: %v; load %s)", n, b.r.step, d.Round(time.Millisecond), labrun.LoadAverage())
		if n == b.r.nPods {
			break
		}
	}
	r.total = time.Since(t0)
	b.r.loadPods = labrun.LoadAverage()
	recs := w.snapshot()
	r.perNode = map[string]int{}
	var ips []string
	for _, p := range recs {
		if !p.deleted.IsZero() {
			continue
		}
		r.perNode[p.node]++
		if p.fromList {
			r.fromList++
			continue
		}
		r.readyWatch = append(r.readyWatch, p.seenReady.Sub(p.seen))
		r.ipWatch = append(r.ipWatch, p.seenIP.Sub(p.seen))
		if !p.seenCNI.IsZero() {
			r.cniWatch = append(r.cniWatch, p.seenCNI.Sub(p.seen))
		}
		r.readyAPI = append(r.readyAPI, p.readyAPI.Sub(p.created))
		if p.ip != "" {
			ips = append(ips, p.ip)
		}
	}
	r.ips = len(ips)
	r.inUseWith = b.ipamInUse()
	logf("%d pods Ready in %v: pool in use %d (was %d)", b.r.nPods, r.total.Round(time.Millisecond), r.inUseWith, r.inUseBefore)
	b.sleep(b.r.settle)
	b.r.memPods = b.memory(b.r.nPods)
	logf("memory with %d pods: %s total", b.r.nPods, mib(b.r.memPods.total))

	logf("deleting deployment echo")
	td := time.Now()
	b.must(b.kubectl("delete", "deployment", "echo", "-n", benchNS))
	deadline = time.Now().Add(5 * time.Minute)
	for {
		live, _ := w.counts()
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			fatalf("%d pods still there 5 minutes after the Deployment's deletion", live)
		}
		b.sleep(20 * time.Millisecond)
	}
	r.podsGone = time.Since(td)
	for {
		n := b.ipamInUse()
		if n <= r.inUseBefore {
			r.inUseAfter = n
			break
		}
		if time.Now().After(deadline) {
			r.inUseAfter = n
			logf("the pool still has %d addresses in use (was %d before the pods)", n, r.inUseBefore)
			break
		}
		b.sleep(100 * time.Millisecond)
	}
	r.released = time.Since(td)
	logf("pods gone %v, addresses released %v after the delete; checking each of %d addresses", r.podsGone.Round(time.Millisecond), r.released.Round(time.Millisecond), len(ips))
	for _, ip := range ips {
		out, err := b.tortieCmd("ipam", "show", "--ip", ip).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "is not assigned") {
			r.notFreed = append(r.notFreed, fmt.Sprintf("%s: %s", ip, strings.TrimSpace(string(out))))
		}
	}
	out, err := b.tortieCmd("ipam", "check").CombinedOutput()
	r.ipamCheckErr = err != nil
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(strings.ToLower(l), "problems") {
			r.ipamCheck = strings.TrimRight(strings.TrimSpace(l), ".")
		}
	}
	if r.ipamCheck == "" {
		r.ipamCheck = strings.TrimSpace(string(out))
	}
	if len(r.notFreed) > 0 || r.ipamCheckErr {
		logf("addresses not freed: %v; ipam check: %s", r.notFreed, out)
	}
	cancel()
}

// dumpPods logs the pods that are not Ready (a failed step).
func (b *bench) dumpPods() {
	out, _ := b.kubectl("get", "pods", "-n", benchNS, "-o", "wide").CombinedOutput()
	logf("pods:\n%s", out)
}

// ipamInUse is the lab pool's "IPS IN USE" of `tortie ipam show`.
func (b *bench) ipamInUse() int {
	out, err := b.tortieCmd("ipam", "show").CombinedOutput()
	if err != nil {
		fatalf("tortie ipam show: %v\n%s", err, out)
	}
	pool := b.l.State().Options.Pool
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, "IP Pool") || !strings.Contains(l, pool) {
			continue
		}
		var f []string
		for _, x := range strings.FieldsFunc(l, func(r rune) bool { return r == '|' || r == ' ' || r == '\t' }) {
			f = append(f, x)
		}
		// IP Pool CIDR TOTAL IN-USE ...
		if i := slices.Index(f, pool); i >= 0 && i+2 < len(f) {
			if n, err := strconv.Atoi(f[i+2]); err == nil {
				return n
			}
		}
	}
	fatalf("tortie ipam show: no row of the pool %s:\n%s", pool, out)
	return 0
}

// --- NetworkPolicy ---

func testPod(name, nodeName, labelKey, labelValue string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s: %s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers: [{name: echo, image: %s, ports: [{containerPort: %d}]}]
`, name, benchNS, labelKey, labelValue, nodeName, echoImage, echoPort)
}

// kubePolicy is the NetworkPolicy that decides the measured flow: the
// server takes TCP 8080 from role=client pods, or nothing.
func kubePolicy(allow bool) string {
	ingress := "[]"
	if allow {
		ingress = fmt.Sprintf("[{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{protocol: TCP, port: %d}]}]", echoPort)
	}
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bench, namespace: %s}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress: %s
`, benchNS, ingress)
}

func (b *bench) policyPhase() {
	st := b.l.State()
	srvHost, clHost := st.Hosts[0], st.Hosts[1]
	b.r.serverNode, b.r.clientNode = srvHost.Node, clHost.Node
	b.mustIn(testPod("server", srvHost.Node, "app", "server")+"---\n"+testPod("client", clHost.Node, "role", "client"), "apply", "-f", "-")
	b.must(b.kubectl("wait", "-n", benchNS, "--for=condition=Ready", "pod/server", "pod/client", "--timeout", "3m"))
	srv, err := b.kc.CoreV1().Pods(benchNS).Get(b.ctx, "server", metav1.GetOptions{})
	if err != nil {
		fatalf("%v", err)
	}
	cl, err := b.kc.CoreV1().Pods(benchNS).Get(b.ctx, "client", metav1.GetOptions{})
	if err != nil {
		fatalf("%v", err)
	}
	server, err := netip.ParseAddr(srv.Status.PodIP)
	if err != nil || !server.Is4() {
		fatalf("server pod's address %q: want IPv4", srv.Status.PodIP)
	}
	var rec node.Record
	for _, kn := range st.Kube.Nodes {
		if kn.Host == clHost.Name {
			rec = kn.Record
		}
	}
	clientNS, pid, err := podNetns(rec, string(cl.UID), filepath.Join("/run/netns", clHost.Netns), cl.Status.PodIP)
	if err != nil {
		fatalf("the client pod's network namespace: %v", err)
	}
	runner.AddCleanup(func() { clientNS.Close() })
	b.r.clientNetns = fmt.Sprintf("/proc/%d/ns/net (%s, in cgroup pod%s)", pid, progName(pid), cl.UID)
	logf("server %s on %s, client %s on %s; probing from %s", server, srvHost.Node, cl.Status.PodIP, clHost.Node, b.r.clientNetns)
	t := verdicts.Timer{Ctx: b.ctx, Run: runner, Flow: verdicts.Flow{From: clientNS, To: server, Port: echoPort}, Slow: 500 * time.Millisecond}
	t.Wait(true, "the client reaching the server with no policy")

	files := map[bool]string{true: filepath.Join(b.dir, "np-allow.yaml"), false: filepath.Join(b.dir, "np-deny.yaml")}
	for allow, f := range files {
		if err := os.WriteFile(f, []byte(kubePolicy(allow)), 0o644); err != nil {
			fatalf("%v", err)
		}
	}
	b.r.loadNP0 = labrun.LoadAverage()
	logf("%d NetworkPolicy changes through kubectl apply (load %s)", b.changesN, b.r.loadNP0)
	t.Changes(&b.r.np, b.changesN, true /* no policy: allowed */, func(allow bool) *exec.Cmd {
		return b.kubectl("apply", "-f", files[allow])
	})
	b.r.loadNP = labrun.LoadAverage()
}

// podNetns opens the network namespace of the pod whose UID is uid on the
// node of rec: that of a process in the pod's cgroup (pod<UID> under the
// node's cgroup root; with the cgroupfs driver kubelet keeps the UID's
// dashes, with systemd's it makes them underscores) whose namespace is not
// the host's (hostNetns), checked to hold the pod's address ip.
func podNetns(rec node.Record, uid, hostNetns, ip string) (ns.NetNS, int, error) {
	names := []string{"pod" + uid, "pod" + strings.ReplaceAll(uid, "-", "_")}
	pids, err := node.CgroupPIDs(rec.CgroupRoot, func(n string) bool { return slices.Contains(names, n) })
	if err != nil {
		return nil, 0, err
	}
	if len(pids) == 0 {
		return nil, 0, fmt.Errorf("no process in a cgroup pod%s under %s", uid, rec.CgroupRoot)
	}
	hostIno := inode(hostNetns)
	if hostIno == 0 {
		return nil, 0, fmt.Errorf("%s: no namespace", hostNetns)
	}
	want, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, 0, fmt.Errorf("pod address %q: %v", ip, err)
	}
	var tried []string
	for _, pid := range pids {
		path := fmt.Sprintf("/proc/%d/ns/net", pid)
		ino := inode(path)
		if ino == 0 || ino == hostIno {
			continue
		}
		n, err := ns.GetNS(path)
		if err != nil {
			continue
		}
		var has bool
		_ = n.Do(func(ns.NetNS) error {
			addrs, err := net.InterfaceAddrs()
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if pn, ok := a.(*net.IPNet); ok {
					if got, ok := netip.AddrFromSlice(pn.IP); ok && got.Unmap() == want {
						has = true
					}
				}
			}
			return nil
		})
		if has {
			return n, pid, nil
		}
		n.Close()
		tried = append(tried, fmt.Sprintf("%d (%s)", pid, progName(pid)))
	}
	return nil, 0, fmt.Errorf("no process of cgroup pod%s is in a namespace holding %s (tried %v of %v)", uid, ip, tried, pids)
}

func inode(path string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// --- commands ---

// must runs a command and fails the run when it fails.
func (b *bench) must(cmd *exec.Cmd) { verdicts.Must(runner, cmd) }

// mustIn runs kubectl with stdin.
func (b *bench) mustIn(stdin string, args ...string) {
	cmd := b.kubectl(args...)
	cmd.Stdin = strings.NewReader(stdin)
	b.must(cmd)
}

func (b *bench) kubectl(args ...string) *exec.Cmd {
	cmd, err := b.l.KubectlCommand(b.ctx, args...)
	if err != nil {
		fatalf("%v", err)
	}
	return cmd
}

func (b *bench) tortieCmd(args ...string) *exec.Cmd {
	cmd := exec.CommandContext(b.ctx, b.tortie, append([]string{"--config", lab.ConfigFile(b.l.Name())}, args...)...)
	// The lab's config file decides, not an ETCD_ENDPOINTS of the caller.
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "ETCD_") && !strings.HasPrefix(e, "DATASTORE_TYPE=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	return cmd
}

// --- output ---

func ms(d time.Duration) string {
	return fmt.Sprintf("%s ms", thousands(int64(float64(d)/float64(time.Millisecond)+0.5)))
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func dist(ds []time.Duration, f func(time.Duration) string) string {
	if len(ds) == 0 {
		return "— | — | — | — "
	}
	return fmt.Sprintf("%s | %s | %s | %s", f(probe.Percentile(ds, 0.5)), f(probe.Percentile(ds, 0.9)), f(probe.Percentile(ds, 0.99)), f(slices.Max(ds)))
}

func (r *results) print(w io.Writer) {
	fmt.Fprintf(w, "\n## Kubernetes cluster (lab up --kubernetes), %s\n\n", r.start.Format("2006-01-02"))
	fmt.Fprintf(w, "%d CPUs (nproc); load average %s at the start, %s at the end.\n\n", runtime.NumCPU(), r.load0, r.load1)

	// 1. lab up.
	var totals []time.Duration
	for _, u := range r.ups {
		totals = append(totals, u.total)
	}
	fmt.Fprintf(w, "### lab up --kubernetes --hosts %d\n\n", r.hosts)
	if r.archives != "" {
		fmt.Fprintf(w, "(%s.)\n\n", r.archives)
	}
	fmt.Fprintln(w, "| run | lab | up, wall | lab down |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for i, u := range r.ups {
		down := secs(u.down)
		if u.down == 0 {
			down = "(kept for the rest"
			if r.finalDown > 0 {
				down += "; down at the end " + secs(r.finalDown)
			}
			down += ")"
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s |\n", i+1, u.name, secs(u.total), down)
	}
	fmt.Fprintf(w, "| **median** | | **%s** | |\n\n", secs(median(totals)))
	fmt.Fprintln(w, "Up's steps (each run, seconds):")
	fmt.Fprintln(w)
	if len(r.ups) > 0 {
		fmt.Fprint(w, "| step |")
		for i := range r.ups {
			fmt.Fprintf(w, " run %d |", i+1)
		}
		fmt.Fprintln(w)
		fmt.Fprint(w, "|---|")
		for range r.ups {
			fmt.Fprint(w, "---|")
		}
		fmt.Fprintln(w)
		for si, s := range r.ups[0].steps {
			what := s.what
			if i := strings.Index(what, " ("); i > 0 {
				what = what[:i]
			}
			fmt.Fprintf(w, "| %s |", what)
			for _, u := range r.ups {
				if si < len(u.steps) {
					fmt.Fprintf(w, " %.1f |", u.steps[si].d.Seconds())
				} else {
					fmt.Fprint(w, " — |")
				}
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}

	// Memory.
	for _, m := range []memSnap{r.memUp, r.memPods} {
		if m.total == 0 {
			continue
		}
		when := fmt.Sprintf("once up (%v after lab up returned)", r.settle)
		if m.pods > 0 {
			when = fmt.Sprintf("with the %d echoserver pods running (%v after the last was Ready)", m.pods, r.settle)
		}
		fmt.Fprintf(w, "### Memory %s, load average %s\n\n", when, m.load)
		fmt.Fprintln(w, "Summed VmRSS (/proc/PID/status; shared pages counted in every process).")
		fmt.Fprintln(w)
		cp := make([]string, 0, len(m.cp))
		for _, p := range m.cp {
			cp = append(cp, fmt.Sprintf("%s %s", p.role, mib(p.kib)))
		}
		fmt.Fprintf(w, "Control plane and datastore (the lab's processes, root namespace): **%s** — %s.\n\n", mib(m.cpTotal), strings.Join(cp, ", "))
		fmt.Fprint(w, "| node |")
		for _, k := range kinds {
			fmt.Fprintf(w, " %s |", k)
		}
		fmt.Fprintln(w, " node total |")
		fmt.Fprint(w, "|---|")
		for range kinds {
			fmt.Fprint(w, "---|")
		}
		fmt.Fprintln(w, "---|")
		var agents int64
		var ctrl int64
		for _, n := range m.nodes {
			fmt.Fprintf(w, "| %s (%s) |", n.node, n.host)
			for _, k := range kinds {
				c := n.by[k]
				switch {
				case c.n == 0:
					fmt.Fprint(w, " — |")
				case c.n == 1:
					fmt.Fprintf(w, " %s |", mib(c.kib))
				default:
					fmt.Fprintf(w, " %s (%d) |", mib(c.kib), c.n)
				}
			}
			fmt.Fprintf(w, " **%s** |\n", mib(n.total))
			agents += n.by["tortie-node"].kib
			ctrl += n.by["tortie-kube-controllers"].kib
		}
		fmt.Fprintln(w)
		var others []string
		for _, n := range m.nodes {
			for p, c := range n.others {
				others = append(others, fmt.Sprintf("%s: %s ×%d", n.host, p, c))
			}
		}
		sort.Strings(others)
		if len(others) > 0 {
			fmt.Fprintf(w, "\"other\": %s.\n\n", strings.Join(others, ", "))
		}
		fmt.Fprintf(w, "tortie's own: the agents (tortie-node) %s together (%s per node on average), tortie-kube-controllers %s. **Whole cluster: %s.**\n\n",
			mib(agents), mib(agents/int64(max(1, len(m.nodes)))), mib(ctrl), mib(m.total))
	}

	// 2. Pods.
	p := r.pods
	if len(p.steps) > 0 {
		fmt.Fprintf(w, "### Pod created → Ready, %d echoserver pods\n\n", r.nPods)
		fmt.Fprintf(w, "A Deployment (topology spread over the nodes, no readiness probe: Ready once the container runs) scaled from 0 by %d at a time, each step waiting until all its pods are Ready. Pods per node: %s. Load average %s after the last step.\n\n",
			r.step, fmtPerNode(p.perNode), r.loadPods)
		fmt.Fprintln(w, "| per pod | p50 | p90 | p99 | max |")
		fmt.Fprintln(w, "|---|---|---|---|---|")
		fmt.Fprintf(w, "| created → Ready (watch: pod first seen → Ready True seen) | %s |\n", dist(p.readyWatch, ms))
		fmt.Fprintf(w, "| created → address set (watch: first seen → status.podIP seen) | %s |\n", dist(p.ipWatch, ms))
		fmt.Fprintf(w, "| created → tortie-cni's address annotation (watch: first seen → cni.projectcalico.org/podIP seen; %d pods) | %s |\n", len(p.cniWatch), dist(p.cniWatch, ms))
		fmt.Fprintf(w, "| creationTimestamp → Ready lastTransitionTime (API stamps, whole seconds) | %s |\n", dist(p.readyAPI, secs))
		fmt.Fprintln(w)
		var st []string
		for _, d := range p.steps {
			st = append(st, fmt.Sprintf("%.1f", d.Seconds()))
		}
		fmt.Fprintf(w, "Total: 0 → %d Ready in **%s** (steps of %d: %s s, each from the `kubectl scale` to its last pod Ready).", r.nPods, secs(p.total), r.step, strings.Join(st, ", "))
		if p.fromList > 0 {
			fmt.Fprintf(w, " %d pods first seen in a relist (watch restarted) are left out of the per-pod rows.", p.fromList)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w)
		freed := "every one `not assigned` in `tortie ipam show --ip`"
		if len(p.notFreed) > 0 {
			freed = fmt.Sprintf("**%d still assigned**: %s", len(p.notFreed), strings.Join(p.notFreed, "; "))
		}
		fmt.Fprintf(w, "Deleted (`kubectl delete deployment`, grace 1 s): every pod gone from the API %s after the delete, the pool's in-use count back to %d (from %d; %d before the pods) %s after it; %d addresses checked, %s; `tortie ipam check`: %s.\n\n",
			secs(p.podsGone), p.inUseAfter, p.inUseWith, p.inUseBefore, secs(p.released), p.ips, freed, p.ipamCheck)
	}

	// 3. NetworkPolicy.
	s := r.np
	if len(s.Command) > 0 {
		fmt.Fprintf(w, "### NetworkPolicy kubectl apply → enforced across nodes\n\n")
		fmt.Fprintf(w, "Server pod on %s, client pod on %s; probes from the client pod's namespace (%s) to the server's TCP %d, one every 1 ms (\"denied\" = no SYN-ACK within 25 ms). %d changes alternating deny/allow; the first creates the policy and is shown alone. Load average %s before the changes, %s after.\n\n",
			r.serverNode, r.clientNode, r.clientNetns, echoPort, len(s.Command), r.loadNP0, r.loadNP)
		fmt.Fprintln(w, "| change | enforced p50 | p90 | p99 | max | the first change | kubectl apply alone, p50 |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
		fmt.Fprintf(w, "| NetworkPolicy allow ↔ deny, client → server on another node | %s | %s | %s |\n", dist(s.Enforced, ms), ms(s.First), ms(probe.Percentile(s.Command, 0.5)))
		fmt.Fprintln(w)
		if s.Flaps > 0 || s.Fails > 0 {
			fmt.Fprintf(w, "%d probes saw the old verdict after the new; %d changes not seen within 20 s.\n\n", s.Flaps, s.Fails)
		}
	}
	if len(r.health) > 0 {
		fmt.Fprintln(w, "### tortie's pods at the end")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| pod | node | restarts | log lines | of them level=ERROR | level=WARN |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
		var samples []string
		for _, h := range r.health {
			fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d |\n", h.name, h.node, h.restarts, h.lines, h.errors, h.warns)
			for _, l := range h.samples {
				samples = append(samples, h.name+": "+l)
			}
		}
		fmt.Fprintln(w)
		for _, l := range samples {
			fmt.Fprintf(w, "    %s\n", l)
		}
		if len(samples) > 0 {
			fmt.Fprintln(w)
		}
	}
}

func fmtPerNode(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var out []string
	for _, k := range ks {
		out = append(out, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(out, ", ")
}
