// Command kube benchmarks tortie on a real Kubernetes API in etcd mode
// (issue 13): how long a change made through Kubernetes takes to be
// enforced, beside the same change written as a Calico resource directly,
// in the same run, so that the Kubernetes path's overhead shows:
//
//  1. a NetworkPolicy toggled between allowing and denying the measured
//     flow: `kubectl apply` of the Kubernetes NetworkPolicy (the API
//     server, tortie-kube-controllers, etcd, the agent) against `tortie
//     apply` of a Calico NetworkPolicy of the same meaning;
//  2. the client pod's label toggled between one the policy allows and one
//     it does not: `kubectl label pod` (the controllers copy it to the
//     WorkloadEndpoint) against `tortie label workloadendpoint` (with the
//     controllers restarted without their workloadendpoint controller,
//     which would put the pod's labels back).
//
// Each change is timed from the start of the command to the first probe
// that sees the new verdict (bench/internal/probe: a connection attempt
// every millisecond from the client workload's namespace). Optionally
// 10,000 rules of background policy (100 NetworkPolicies of 100 rules that
// select the server and match nothing the client sends) are in place.
//
// It needs root and the Kubernetes binaries (scripts/build-kubernetes.sh):
// it builds tortie's binaries, brings up a `tortie lab up --kube-api` lab
// of its own (2 hosts; a unique name, so every namespace, interface and
// port is the run's) with a server pod on h1 and a client pod on h2, and
// removes the lab at the end, on failure and on SIGINT/SIGTERM.
//
//	go run ./bench/kube [-changes 50] [-rules=false]
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/tortie/tortie/bench/internal/labrun"
	"github.com/tortie/tortie/bench/internal/probe"
	"github.com/tortie/tortie/bench/internal/verdicts"
	"github.com/tortie/tortie/pkg/apis/k8s"
	"github.com/tortie/tortie/pkg/kube/apiserver"
	"github.com/tortie/tortie/pkg/kubecontrollers"
	"github.com/tortie/tortie/pkg/lab"
)

const benchNS = "bench"

var runner = labrun.New("bench/kube")

func logf(format string, args ...any) { runner.Logf(format, args...) }

func fatalf(format string, args ...any) { runner.Fatalf(format, args...) }

func main() {
	changes := flag.Int("changes", 50, "changes timed per path")
	rules := flag.Bool("rules", true, "10,000 rules of background policy (100 NetworkPolicies × 100 rules) selecting the server")
	binDir := flag.String("bin-dir", "", "where tortie, tortie-datastore, tortie-node, tortie-cni and tortie-kube-controllers are (default: built from this module)")
	keep := flag.Bool("keep", false, "leave the lab up at the end (remove it with `tortie lab down --name NAME`)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench/kube: needs root (network namespaces, nftables)")
		os.Exit(2)
	}
	if _, err := apiserver.BinDir(); err != nil {
		fmt.Fprintf(os.Stderr, "bench/kube: %v\n", err)
		os.Exit(2)
	}
	// Interrupted, lab.Up removes what it made by itself; after it, a
	// command or probe fails and fatalf runs the cleanups.
	ctx, stop := runner.Interruptible("")
	defer stop()
	r := &results{start: time.Now(), load0: labrun.LoadAverage(), rules: *rules}
	b := &bench{ctx: ctx, n: *changes, r: r}
	b.run(*binDir, *keep)
	r.load1 = labrun.LoadAverage()
	runner.Finish()
	r.print(os.Stdout)
}

// series is what a run of changes measured.
type series = verdicts.Series

type results struct {
	start        time.Time
	load0, load1 string
	rules        bool
	up           time.Duration
	rulesApplied time.Duration // background apply → enforced
	npKube       series
	npCalico     series
	labelKube    series
	labelCalico  series
}

type bench struct {
	ctx      context.Context
	n        int
	r        *results
	l        *lab.Lab
	dir      string
	tortie   string
	clientNS ns.NetNS
	server   netip.Addr
	wep      string // the client's WorkloadEndpoint
}

func (b *bench) run(binDir string, keep bool) {
	dir, err := os.MkdirTemp("", "tortie-bench-kube.")
	if err != nil {
		fatalf("%v", err)
	}
	b.dir = dir
	runner.AddCleanup(func() { os.RemoveAll(dir) })
	if binDir == "" {
		binDir = filepath.Join(dir, "bin")
		for _, c := range []string{"tortie", "tortie-datastore", "tortie-node", "tortie-cni", "tortie-kube-controllers"} {
			logf("building %s", c)
			if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, c), "github.com/tortie/tortie/cmd/"+c).CombinedOutput(); err != nil {
				fatalf("go build %s: %v\n%s", c, err, out)
			}
		}
	}
	b.tortie = filepath.Join(binDir, "tortie")

	id := make([]byte, 3)
	rand.Read(id)
	name := "tkb" + hex.EncodeToString(id)
	t0 := time.Now()
	l, _, err := lab.Up(b.ctx, lab.Options{Name: name, Hosts: 2, KubeAPI: true, Log: os.Stderr,
		Bins: lab.Binaries{Tortie: b.tortie, Node: filepath.Join(binDir, "tortie-node"), CNI: filepath.Join(binDir, "tortie-cni")}})
	if err != nil {
		fatalf("lab up: %v", err)
	}
	b.r.up = time.Since(t0)
	b.l = l
	if keep {
		logf("-keep: the lab %s stays up", name)
	} else {
		runner.AddCleanup(func() {
			if err := lab.Down(context.Background(), name, io.Discard); err != nil {
				logf("lab down %s: %v", name, err)
			}
		})
	}
	srv, err := l.AddWorkload(b.ctx, lab.WorkloadSpec{Name: "server", Host: "h1", Namespace: benchNS, Labels: map[string]string{"app": "server"}, Listen: []string{"tcp:80"}})
	if err != nil {
		fatalf("%v", err)
	}
	cl, err := l.AddWorkload(b.ctx, lab.WorkloadSpec{Name: "client", Host: "h2", Namespace: benchNS, Labels: map[string]string{"app": "client"}, Listen: []string{"tcp:80"}})
	if err != nil {
		fatalf("%v", err)
	}
	ip, _ := srv.Addr(4)
	b.server, _ = netip.AddrFromSlice(ip.To4())
	if b.clientNS, err = ns.GetNS(filepath.Join("/run/netns", cl.Netns)); err != nil {
		fatalf("%v", err)
	}
	runner.AddCleanup(func() { b.clientNS.Close() })
	for _, h := range l.State().Hosts {
		if h.Name == cl.Host {
			b.wep = k8s.PodEndpointName(h.Node, cl.Name, "eth0")
		}
	}
	logf("lab %s up in %v: server %s on h1, client on h2 (WorkloadEndpoint %s)", name, b.r.up.Round(time.Millisecond), b.server, b.wep)
	b.waitVerdict(true, "the client reaching the server with no policy")

	files := map[string]string{
		"np-allow.yaml":  kubePolicy(true),
		"np-deny.yaml":   kubePolicy(false),
		"gnp-allow.yaml": calicoPolicy(true),
		"gnp-deny.yaml":  calicoPolicy(false),
		"rules.yaml":     backgroundRules(),
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
			fatalf("%v", err)
		}
	}
	// Without any policy the flow is allowed; with the background rules
	// (which select the server) it is denied until a policy allows it.
	base := true
	if b.r.rules {
		logf("tortie apply of 100 policies × 100 rules")
		t0 := time.Now()
		b.must(b.tortieCmd("apply", "-f", filepath.Join(dir, "rules.yaml")))
		b.waitVerdict(false, "the background rules")
		b.r.rulesApplied = time.Since(t0)
		base = false
	}

	logf("%d NetworkPolicy changes through kubectl apply", b.n)
	b.changes(&b.r.npKube, base, func(allow bool) *exec.Cmd {
		return b.kubectl("apply", "-f", filepath.Join(dir, map[bool]string{true: "np-allow.yaml", false: "np-deny.yaml"}[allow]))
	})
	b.must(b.kubectl("delete", "networkpolicy", "-n", benchNS, "bench"))
	b.waitVerdict(base, "the NetworkPolicy deleted")

	logf("%d Calico NetworkPolicy changes through tortie apply", b.n)
	b.changes(&b.r.npCalico, base, func(allow bool) *exec.Cmd {
		return b.tortieCmd("apply", "-f", filepath.Join(dir, map[bool]string{true: "gnp-allow.yaml", false: "gnp-deny.yaml"}[allow]))
	})
	b.must(b.tortieCmd("delete", "networkpolicy", "-n", benchNS, "bench-calico"))
	b.waitVerdict(base, "the Calico NetworkPolicy deleted")

	// Labels: the Kubernetes policy allows app=client.
	b.must(b.kubectl("apply", "-f", filepath.Join(dir, "np-allow.yaml")))
	b.waitVerdict(true, "the allowing NetworkPolicy")
	label := func(allow bool) string { return "app=" + map[bool]string{true: "client", false: "elsewhere"}[allow] }
	logf("%d pod label changes through kubectl label", b.n)
	end := b.changes(&b.r.labelKube, true, func(allow bool) *exec.Cmd {
		return b.kubectl("label", "pod", "-n", benchNS, "client", label(allow), "--overwrite")
	})
	if !end {
		b.must(b.kubectl("label", "pod", "-n", benchNS, "client", label(true), "--overwrite"))
		b.waitVerdict(true, "the pod labelled back")
	}
	// The workloadendpoint controller owns an endpoint's labels and puts
	// the pod's back: it is off while they are written directly.
	var others []string
	for _, c := range kubecontrollers.AllControllers {
		if c != kubecontrollers.ControllerWorkloadEndpoint {
			others = append(others, c)
		}
	}
	if err := b.l.RestartKubeControllers(b.ctx, strings.Join(others, ",")); err != nil {
		fatalf("restarting the controllers without %s: %v", kubecontrollers.ControllerWorkloadEndpoint, err)
	}
	logf("%d WorkloadEndpoint label changes through tortie label (controllers: %s)", b.n, strings.Join(others, ","))
	b.changes(&b.r.labelCalico, true, func(allow bool) *exec.Cmd {
		return b.tortieCmd("label", "workloadendpoint", "-n", benchNS, b.wep, label(allow), "--overwrite")
	})
}

// changes makes b.n changes from cur through the command do gives and
// times them (verdicts.Timer.Changes); it returns the last verdict.
func (b *bench) changes(s *series, cur bool, do func(allow bool) *exec.Cmd) bool {
	return b.timer().Changes(s, b.n, cur, do)
}

// timer times changes of the measured flow, client → server:80.
func (b *bench) timer() verdicts.Timer {
	return verdicts.Timer{Ctx: b.ctx, Run: runner, Flow: verdicts.Flow{From: b.clientNS, To: b.server, Port: 80}, Slow: 300 * time.Millisecond}
}

// must runs a command and fails the run when it fails.
func (b *bench) must(cmd *exec.Cmd) { verdicts.Must(runner, cmd) }

func (b *bench) kubectl(args ...string) *exec.Cmd {
	cmd, err := b.l.KubectlCommand(b.ctx, args...)
	if err != nil {
		fatalf("%v", err)
	}
	return cmd
}

func (b *bench) tortieCmd(args ...string) *exec.Cmd {
	return exec.CommandContext(b.ctx, b.tortie, append([]string{"--config", lab.ConfigFile(b.l.Name())}, args...)...)
}

// waitVerdict waits up to a minute until the flow has the verdict
// allowed, or the run is interrupted.
func (b *bench) waitVerdict(allowed bool, after string) { b.timer().Wait(allowed, after) }

// kubePolicy is the Kubernetes NetworkPolicy that decides the measured
// flow: the server takes TCP 80 from app=client pods, or nothing.
func kubePolicy(allow bool) string {
	ingress := "[]"
	if allow {
		ingress = "[{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{protocol: TCP, port: 80}]}]"
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

// calicoPolicy is kubePolicy's meaning as a Calico NetworkPolicy, at the
// order Calico gives a converted Kubernetes policy.
func calicoPolicy(allow bool) string {
	ingress := "[]"
	if allow {
		ingress = `[{action: Allow, protocol: TCP, source: {selector: "app == 'client'"}, destination: {ports: [80]}}]`
	}
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: bench-calico, namespace: %s}
spec:
  order: 1000
  selector: "app == 'server'"
  types: [Ingress]
  ingress: %s
`, benchNS, ingress)
}

// backgroundRules is 100 NetworkPolicies of 100 ingress rules selecting
// the server, each allowing TCP to its own port from its own /32 out of
// 172.16.0.0/16: nothing the client sends matches them.
func backgroundRules() string {
	var sb strings.Builder
	for p := range 100 {
		fmt.Fprintf(&sb, "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: background-%d, namespace: %s}\nspec:\n  order: %d\n  selector: \"app == 'server'\"\n  types: [Ingress]\n  ingress:\n", p, benchNS, 100+p)
		for r := range 100 {
			fmt.Fprintf(&sb, "  - {action: Allow, protocol: TCP, source: {nets: [172.16.%d.%d/32]}, destination: {ports: [%d]}}\n", p, r, 20000+100*p+r)
		}
	}
	return sb.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func cells(s series) string {
	if len(s.Enforced) == 0 {
		return "— | — | — | — | —"
	}
	extra := ""
	if s.Flaps > 0 || s.Fails > 0 {
		extra = fmt.Sprintf(" (%d probes saw the old verdict after the new, %d changes not seen within 20 s)", s.Flaps, s.Fails)
	}
	return fmt.Sprintf("**%s** | **%s** | %s | %s | %s%s", ms(probe.Percentile(s.Enforced, 0.5)), ms(probe.Percentile(s.Enforced, 0.99)),
		ms(slices.Max(s.Enforced)), ms(s.First), ms(probe.Percentile(s.Command, 0.5)), extra)
}

func (r *results) print(w io.Writer) {
	bg := "no background policy"
	if r.rules {
		bg = fmt.Sprintf("10,000 rules of background policy (applied and enforced in %s)", ms(r.rulesApplied))
	}
	fmt.Fprintf(w, "\n## tortie on a Kubernetes API (etcd mode), %s\n\nLoad average %s at the start, %s at the end; %d CPUs; `lab up --kube-api` of 2 hosts in %s; %s; %d changes per row, alternating.\n\n",
		r.start.Format("2006-01-02"), r.load0, r.load1, runtime.NumCPU(), r.up.Round(100*time.Millisecond), bg, len(r.npKube.Command))
	fmt.Fprintln(w, "| change | written by | enforced p50 | p99 | max | the first change | the command alone, p50 |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	fmt.Fprintf(w, "| policy: allow ↔ deny of client → server TCP 80 | `kubectl apply` of a Kubernetes NetworkPolicy (API server → tortie-kube-controllers → etcd → agent) | %s |\n", cells(r.npKube))
	fmt.Fprintf(w, "| same | `tortie apply` of the Calico NetworkPolicy of the same meaning | %s |\n", cells(r.npCalico))
	fmt.Fprintf(w, "| client label: allowed ↔ not | `kubectl label pod` (→ the controllers → its WorkloadEndpoint) | %s |\n", cells(r.labelKube))
	fmt.Fprintf(w, "| same | `tortie label workloadendpoint` (the workloadendpoint controller off: it puts the pod's labels back) | %s |\n", cells(r.labelCalico))
	over := func(k, c series) string {
		if len(k.Enforced) == 0 || len(c.Enforced) == 0 {
			return "—"
		}
		return ms(probe.Percentile(k.Enforced, 0.5) - probe.Percentile(c.Enforced, 0.5))
	}
	fmt.Fprintf(w, "\nThe Kubernetes path's overhead (p50 minus p50): policy %s, label %s. Enforced = from the start of the command to the first probe (one connection attempt every 1 ms from the client's namespace, \"denied\" = no SYN-ACK within 25 ms) with the new verdict; p50, p99 and max are over the changes after the first, which for a policy creates it and is shown alone.\n",
		over(r.npKube, r.npCalico), over(r.labelKube, r.labelCalico))
}
