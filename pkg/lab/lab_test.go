package lab_test

// These tests drive the real binaries (built here) as a user would:
// `tortie lab up`, `workload add`, `matrix -o json`, `tortie apply`, `lab
// down`, and check what the machine looks like before and after.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/lab"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// bins builds tortie, tortie-datastore, tortie-node and tortie-cni once per
// test binary.
func bins(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tortie-lab-test-bin-")
		if buildErr != nil {
			return
		}
		for _, c := range []string{"tortie", "tortie-datastore", "tortie-node", "tortie-cni"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, c), "github.com/tortie/tortie/cmd/"+c).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", c, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// tortie runs the CLI (without ETCD_ENDPOINTS, so that the config file
// decides) and returns its stdout and exit status.
func tortie(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, errOut, code := tortieStreams(t, args...)
	if code != 0 && errOut != "" {
		t.Logf("tortie %s: stderr: %s", strings.Join(args, " "), lastBytes(errOut, 3000))
	}
	return out, code
}

// tortieStreams is tortie with stderr as well.
func tortieStreams(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bins(t), "tortie"), args...)
	cmd.Env = envWithoutEtcd()
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return o.String(), e.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("tortie %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), 0
}

func envWithoutEtcd() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "ETCD_") {
			env = append(env, e)
		}
	}
	return env
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func mustTortie(t *testing.T, args ...string) string {
	t.Helper()
	out, code := tortie(t, args...)
	if code != 0 {
		t.Fatalf("tortie %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func randName(t *testing.T) string {
	b := make([]byte, 3)
	rand.Read(b)
	return "tl" + hex.EncodeToString(b)
}

// upLab brings a lab up and registers its removal; it returns the name.
func upLab(t *testing.T, args ...string) string {
	t.Helper()
	name := randName(t)
	t0 := time.Now()
	t.Cleanup(func() {
		if _, err := os.Stat(lab.Dir(name)); err == nil {
			if out, code := tortie(t, "lab", "down", "--name", name); code != 0 {
				t.Errorf("lab down %s: %s", name, out)
			}
		}
	})
	out := mustTortie(t, append([]string{"lab", "up", "--name", name, "--bin-dir", bins(t)}, args...)...)
	t.Logf("timing: lab up %s (%s) took %v", name, strings.Join(args, " "), time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(out, "lab "+name+" is up") {
		t.Fatalf("lab up said:\n%s", out)
	}
	return name
}

func addWorkload(t *testing.T, labName, ns, name, host, labels string) {
	t.Helper()
	args := []string{"lab", "--name", labName, "workload", "add", name, "--host", host, "--namespace", ns}
	if labels != "" {
		args = append(args, "--labels", labels)
	}
	mustTortie(t, args...)
}

func matrix(t *testing.T, labName string, args ...string) []lab.Result {
	t.Helper()
	out := mustTortie(t, append([]string{"lab", "--name", labName, "matrix", "-o", "json"}, args...)...)
	var rs []lab.Result
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("matrix -o json: %v\n%s", err, out)
	}
	return rs
}

// mismatches lists the results that differ from want.
func mismatches(rs []lab.Result, want func(lab.Result) bool) []lab.Result {
	var bad []lab.Result
	for _, r := range rs {
		if r.Connected != want(r) {
			bad = append(bad, r)
		}
	}
	return bad
}

func describe(rs []lab.Result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s → %s %s/%d connected=%v", r.From, r.To, r.Protocol, r.Port, r.Connected))
	}
	return out
}

// confirmTimeout is how long a confirming probe's first try waits for an
// echo (the probe tries three times, the timeout doubling: 14 s in all for
// a flow that stays silent).
const confirmTimeout = 2 * time.Second

// confirmed drops from bad the flows that should connect, did not answer
// the matrix's 1 s probe, and do answer one probe made alone with
// confirmTimeout, four at a time: on a busy machine a probe among dozens
// in parallel can miss an open path's echo. A flow that connects where it
// should not is never dropped: load does not open a path.
func confirmed(labName string, bad []lab.Result, ipv6 bool) []lab.Result {
	var mu sync.Mutex
	var still []lab.Result
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, r := range bad {
		if r.Connected {
			still = append(still, r)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			args := []string{"lab", "--name", labName, "probe", r.From, r.To, "--port", fmt.Sprint(r.Port), "--protocol", r.Protocol, "--timeout", confirmTimeout.String()}
			if ipv6 {
				args = append(args, "--ipv6")
			}
			cmd := exec.Command(filepath.Join(binDir, "tortie"), args...)
			cmd.Env = envWithoutEtcd()
			if cmd.Run() != nil {
				mu.Lock()
				still = append(still, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return still
}

// wrong is what of a matrix differs from want, once confirmed.
func wrong(labName string, rs []lab.Result, want func(lab.Result) bool, args ...string) []string {
	return describe(confirmed(labName, mismatches(rs, want), slices.Contains(args, "--ipv6")))
}

// waitMatrix re-probes until the matrix is as wanted; it returns how long
// that took and the last matrix's duration. A matrix that differs only by
// a few flows that should connect is confirmed (see confirmed) before
// another round.
func waitMatrix(t *testing.T, labName string, timeout time.Duration, want func(lab.Result) bool, args ...string) (time.Duration, time.Duration) {
	t.Helper()
	t0 := time.Now()
	for {
		m0 := time.Now()
		rs := matrix(t, labName, args...)
		took := time.Since(m0)
		bad := mismatches(rs, want)
		if len(bad) > 0 && len(bad) <= 4 && !slices.ContainsFunc(bad, func(r lab.Result) bool { return r.Connected }) {
			if n := len(bad); len(confirmed(labName, bad, slices.Contains(args, "--ipv6"))) == 0 {
				t.Logf("%d flows silent in the matrix connected when probed alone with %v", n, confirmTimeout)
				bad = nil
			}
		}
		if len(bad) == 0 {
			return time.Since(t0), took
		}
		if time.Since(t0) > timeout {
			t.Fatalf("matrix not as expected after %v: %d flows differ:\n%s", timeout, len(bad), strings.Join(describe(bad), "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func all(lab.Result) bool { return true }

var fullPorts = []string{"--ports", "80,81", "--protocols", "tcp,udp"}

// policyWant is what examples/lab/policy.yaml allows: shop/db only from
// shop/web on TCP 80; shop/web only from namespace shop; the rest open.
func policyWant(r lab.Result) bool {
	switch r.To {
	case "shop/db":
		return r.From == "shop/web" && r.Protocol == "tcp" && r.Port == 80
	case "shop/web":
		return strings.HasPrefix(r.From, "shop/")
	}
	return true
}

// snapshot is what the machine looks like from the root namespace.
type snapshot struct {
	netns, links, nft, procs []string
	cfg                      string
}

func lines(t *testing.T, args ...string) []string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var ls []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			ls = append(ls, f[0])
		}
	}
	slices.Sort(ls)
	return ls
}

func takeSnapshot(t *testing.T) snapshot {
	s := snapshot{netns: lines(t, "ip", "netns", "list"), links: rootLinks(t)}
	s.nft = strings.Split(strings.TrimSpace(mustRun(t, "nft", "list", "tables")), "\n")
	slices.Sort(s.nft)
	// Processes running one of the test's binaries, or BIRD on a lab's config.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.HasPrefix(exe, bins(t)) || strings.Contains(string(cmdline), lab.RunDir) {
			s.procs = append(s.procs, e.Name()+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	b, _ := os.ReadFile(lab.CLIConfigFile)
	s.cfg = string(b)
	return s
}

// rootLinks are the names of the root namespace's interfaces, sorted.
func rootLinks(t *testing.T) []string {
	var links []string
	for _, l := range strings.Split(strings.TrimSpace(mustRun(t, "ip", "-o", "link")), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			links = append(links, name)
		}
	}
	slices.Sort(links)
	return links
}

func mustRun(t *testing.T, args ...string) string {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// diff returns what is in b and not in a.
func diff(a, b []string) []string {
	var out []string
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, x)
		}
	}
	return out
}

// compareSnapshots fails on anything a lab left; other changes (other
// programs on the machine) are only logged.
func compareSnapshots(t *testing.T, before, after snapshot, labNames ...string) {
	t.Helper()
	// Other labs may be up meanwhile (the e2e suite runs on one, in
	// parallel with this package under `go test ./...`): only what is
	// named from this test's labs is this test's business.
	ours := func(s string) bool {
		for _, n := range labNames {
			if strings.Contains(s, n) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		what string
		a, b []string
	}{{"netns", before.netns, after.netns}, {"links", before.links, after.links}, {"nft tables", before.nft, after.nft}} {
		for _, x := range diff(c.a, c.b) {
			if ours(x) {
				t.Errorf("after lab down, new %s: %s", c.what, x)
			} else {
				t.Logf("after lab down, new %s not named from a lab (another program's?): %s", c.what, x)
			}
		}
		for _, x := range diff(c.b, c.a) {
			// Nothing of the machine's is the lab's to remove.
			t.Logf("after lab down, %s %s is gone (another program's doing?)", c.what, x)
		}
	}
	for _, p := range after.procs {
		if ours(p) {
			t.Errorf("process left: %s", p)
		}
	}
	if before.cfg != after.cfg && (ours(before.cfg) || ours(after.cfg)) {
		t.Errorf("%s changed:\nbefore: %q\nafter: %q", lab.CLIConfigFile, before.cfg, after.cfg)
	}
	// RunDir and its allocation lock are every lab's: another may be
	// coming up. What is named from ours is ours.
	ents, _ := os.ReadDir(lab.RunDir)
	for _, e := range ents {
		if ours(e.Name()) {
			t.Errorf("%s left behind", filepath.Join(lab.RunDir, e.Name()))
		}
	}
}

// TestLab: a 3-host mesh; workloads on every host reach each other; the
// example policy changes the matrix as it says; a second lab coexists; an
// agent restart and a host link flap while the matrix is re-probed; lab
// down leaves the machine as it was.
func TestLab(t *testing.T) {
	testenv.RequireRoot(t)
	bins(t)
	before := takeSnapshot(t)
	a := upLab(t, "--hosts", "3")
	if out := mustTortie(t, "lab", "up", "--name", a, "--bin-dir", bins(t)); !strings.Contains(out, "already up") {
		t.Errorf("second up: %s", out)
	}
	t0 := time.Now()
	addWorkload(t, a, "shop", "web", "h1", "app=web")
	addWorkload(t, a, "shop", "db", "h2", "app=db")
	addWorkload(t, a, "other", "client", "h3", "app=client")
	addWorkload(t, a, "other", "batch", "h1", "app=batch")
	t.Logf("timing: 4 workloads added in %v", time.Since(t0).Round(time.Millisecond))
	conv, took := waitMatrix(t, a, time.Minute, all, fullPorts...)
	t.Logf("timing: all connected %v after the last workload; one 4×4 matrix, 4 port/protocols (48 probes): %v", conv.Round(time.Millisecond), took.Round(time.Millisecond))

	// The CLI finds the lab by itself, when the lab could write its config.
	cfgFlag := []string{"--config", lab.ConfigFile(a)}
	if b, _ := os.ReadFile(lab.CLIConfigFile); strings.Contains(string(b), "for lab "+a+";") {
		cfgFlag = nil
		if out := mustTortie(t, "get", "workloadendpoints", "-A"); strings.Count(out, "cali") != 4 {
			t.Errorf("tortie get workloadendpoints -A (no flags):\n%s", out)
		}
	} else {
		t.Logf("%s is not a lab's: using --config", lab.CLIConfigFile)
	}
	mustTortie(t, append(cfgFlag, "apply", "-f", "../../examples/lab/policy.yaml")...)
	conv, _ = waitMatrix(t, a, time.Minute, policyWant, fullPorts...)
	t.Logf("timing: policy applied → matrix as the policy says after %v", conv.Round(time.Millisecond))

	// Probe's exit statuses (the connected one given time to answer on a
	// busy machine; the blocked ones are silent whatever the wait).
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"shop/web", "shop/db", "--port", "80", "--timeout", confirmTimeout.String()}, 0},
		{[]string{"client", "db", "--port", "80"}, 1},
		{[]string{"web", "db", "--port", "81", "--protocol", "udp"}, 1},
		{[]string{"client", "nosuch", "--port", "80"}, 2},
	} {
		if _, code := tortie(t, append([]string{"lab", "--name", a, "probe"}, c.args...)...); code != c.code {
			t.Errorf("probe %v: exit %d, want %d", c.args, code, c.code)
		}
	}
	if out := mustTortie(t, "lab", "--name", a, "exec", "h1", "--", filepath.Join(bins(t), "tortie"), "node", "status"); !strings.Contains(out, "Established") {
		t.Errorf("tortie node status in h1:\n%s", out)
	}
	if _, code := tortie(t, "lab", "--name", a, "exec", "web", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exec exit status %d, want 7", code)
	}

	t.Run("second-lab", func(t *testing.T) {
		b := upLab(t, "--hosts", "2")
		addWorkload(t, b, "default", "x", "h1", "")
		addWorkload(t, b, "default", "y", "h2", "")
		waitMatrix(t, b, time.Minute, all)
		if bad := wrong(a, matrix(t, a, fullPorts...), policyWant); len(bad) > 0 {
			t.Errorf("lab %s changed while %s came up: %v", a, b, bad)
		}
		mustTortie(t, "lab", "down", "--name", b)
		for _, n := range lines(t, "ip", "netns", "list") {
			if strings.HasPrefix(n, b+"-") {
				t.Errorf("namespace %s left", n)
			}
		}
	})

	t.Run("agent-restart", func(t *testing.T) {
		done := make(chan string)
		go func() {
			out, code := tortie(t, "lab", "--name", a, "agent", "restart", "h2")
			done <- fmt.Sprintf("exit %d: %s", code, out)
		}()
		rounds := 0
		for {
			select {
			case res := <-done:
				if !strings.HasPrefix(res, "exit 0") {
					t.Fatalf("agent restart: %s", res)
				}
				t.Logf("%d matrices probed during h2's agent restart, all as the policy says", rounds)
				waitMatrix(t, a, time.Minute, policyWant, fullPorts...)
				return
			default:
			}
			// Policy stays in the kernel and routes stay on the others
			// (graceful restart): nothing changes while the agent is away.
			if bad := wrong(a, matrix(t, a, fullPorts...), policyWant); len(bad) > 0 {
				t.Errorf("during the restart: %v", bad)
			}
			rounds++
		}
	})

	t.Run("link-flap", func(t *testing.T) {
		mustTortie(t, "lab", "--name", a, "link", "h3", "down")
		// other/client is on h3: it reaches nobody and nobody reaches it.
		cut := func(r lab.Result) bool {
			return r.From != "other/client" && r.To != "other/client" && policyWant(r)
		}
		waitMatrix(t, a, time.Minute, cut, fullPorts...)
		mustTortie(t, "lab", "--name", a, "link", "h3", "up")
		back, _ := waitMatrix(t, a, 2*time.Minute, policyWant, fullPorts...)
		t.Logf("timing: h3's link restored → matrix back after %v", back.Round(time.Millisecond))
	})

	mustTortie(t, "lab", "workload", "--name", a, "del", "other/batch")
	if out := mustTortie(t, "lab", "--name", a, "workload", "list"); strings.Contains(out, "batch") {
		t.Errorf("deleted workload still listed:\n%s", out)
	}
	mustTortie(t, "lab", "down", "--name", a)
	compareSnapshots(t, before, takeSnapshot(t), a)
}

// TestLabTopologies: every topology and encapsulation, every workload
// pair connected.
func TestLabTopologies(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []struct {
		name  string
		args  []string
		hosts int
		check func(t *testing.T, name string)
	}{
		{"tor", []string{"--topology", "tor"}, 3, func(t *testing.T, name string) {
			out := mustRun(t, "birdc", "-s", lab.BirdSocket(name), "show", "route")
			if n := strings.Count(out, "/26"); n < 3 {
				t.Errorf("BIRD knows %d blocks, want 3:\n%s", n, out)
			}
		}},
		{"rr", []string{"--topology", "rr", "--hosts", "4"}, 4, func(t *testing.T, name string) {
			// Asked again while an agent's answer is late (status gives
			// each 2 s): what it says must come right, not come fast.
			var bad []string
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
				var st lab.Status
				if err := json.Unmarshal([]byte(mustTortie(t, "lab", "--name", name, "status", "-o", "json")), &st); err != nil {
					t.Fatal(err)
				}
				bad = nil
				for _, h := range st.Hosts {
					want := 1
					if h.Name == "h1" {
						want = 3
					}
					if h.Peers != want || h.Established != want {
						bad = append(bad, fmt.Sprintf("%s: %d sessions (%d Established), want %d %s", h.Name, h.Peers, h.Established, want, h.Error))
					}
				}
				if len(bad) == 0 || time.Now().After(deadline) {
					break
				}
			}
			for _, b := range bad {
				t.Error(b)
			}
		}},
		{"vxlan-crosssubnet", []string{"--encap", "vxlan-crosssubnet"}, 3, func(t *testing.T, name string) {
			// h1 and h2 share a subnet, h3 is behind the router: h1 routes
			// to h3's block through the tunnel, to h2's natively.
			out := mustRun(t, "ip", "-n", name+"-h1", "route")
			if !strings.Contains(out, "dev vxlan.calico") || !strings.Contains(out, "via 198.18.") {
				t.Errorf("h1's routes:\n%s", out)
			}
		}},
		{"vxlan", []string{"--encap", "vxlan", "--hosts", "2"}, 2, nil},
		{"ipv6", []string{"--ipv6", "--hosts", "2"}, 2, func(t *testing.T, name string) {
			waitMatrix(t, name, time.Minute, all, "--ipv6", "--protocols", "tcp,udp")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if !slices.Contains(args, "--hosts") {
				args = append(args, "--hosts", fmt.Sprint(c.hosts))
			}
			name := upLab(t, args...)
			for i := 1; i <= c.hosts; i++ {
				addWorkload(t, name, "default", fmt.Sprintf("w%d", i), fmt.Sprintf("h%d", i), "")
			}
			conv, took := waitMatrix(t, name, 90*time.Second, all, "--protocols", "tcp,udp")
			t.Logf("timing: %s: all connected after %v (matrix %v)", c.name, conv.Round(time.Millisecond), took.Round(time.Millisecond))
			if c.check != nil {
				c.check(t, name)
			}
			mustTortie(t, "lab", "down", "--name", name)
		})
	}
}

// TestLabDownAfterCrash: `lab up` killed halfway; `lab down` still removes
// everything it made.
func TestLabDownAfterCrash(t *testing.T) {
	testenv.RequireRoot(t)
	bins(t)
	name := randName(t)
	cmd := exec.Command(filepath.Join(bins(t), "tortie"), "lab", "up", "--name", name, "--hosts", "3", "--bin-dir", bins(t))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command(filepath.Join(bins(t), "tortie"), "lab", "down", "--name", name).Run() })
	// Kill it once an agent runs: namespaces, the datastore and agents exist.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(filepath.Join(lab.Dir(name), "state.json"))
		if strings.Contains(string(b), `"role": "agent"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lab up never started an agent: %s", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if out, code := tortie(t, "lab", "up", "--name", name, "--bin-dir", bins(t)); code == 0 {
		_ = out
		t.Errorf("up of a half-made lab: exit %d, want a refusal", code)
	}
	mustTortie(t, "lab", "down", "--name", name)
	for _, n := range lines(t, "ip", "netns", "list") {
		if strings.HasPrefix(n, name+"-") {
			t.Errorf("namespace %s left", n)
		}
	}
	if _, err := exec.Command("ip", "link", "show", name+"-ds").CombinedOutput(); err == nil {
		t.Errorf("interface %s-ds left", name)
	}
	for _, p := range takeSnapshot(t).procs {
		if strings.Contains(p, name) {
			t.Errorf("process left: %s", p)
		}
	}
	if _, err := os.Stat(lab.Dir(name)); err == nil {
		t.Errorf("%s left", lab.Dir(name))
	}
}
