package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
)

// A ginkgo JSON report as e2e.test writes it, cut to a spec of each kind:
// passed, failed, left out by --skip, skipped at run time, not focused.
const sampleReport = `[{"SuiteDescription":"Kubernetes e2e suite","SuiteSucceeded":false,"PreRunStats":{"TotalSpecs":3208,"SpecsThatWillRun":3},"SpecReports":[
 {"ContainerHierarchyTexts":null,"LeafNodeType":"SynchronizedBeforeSuite","LeafNodeText":"","State":"passed","RunTime":1000},
 {"ContainerHierarchyTexts":["[sig-network] Netpol","NetworkPolicy between server and client"],"LeafNodeType":"It","LeafNodeText":"should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]","State":"passed","RunTime":61000000000},
 {"ContainerHierarchyTexts":["[sig-network] Netpol","NetworkPolicy between server and client"],"LeafNodeType":"It","LeafNodeText":"should enforce egress policy [Feature:NetworkPolicy]","State":"failed","RunTime":2000000000,"Failure":{"Message":"Told to stop trying\nmore","Location":{"FileName":"x.go"}}},
 {"ContainerHierarchyTexts":["[sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly]","NetworkPolicy between server and client using SCTP"],"LeafNodeType":"It","LeafNodeText":"should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]","State":"skipped","RunTime":0},
 {"ContainerHierarchyTexts":["[sig-network] Netpol [LinuxOnly]","NetworkPolicy between server and client using UDP"],"LeafNodeType":"It","LeafNodeText":"should enforce policy based on Ports [Feature:NetworkPolicy]","State":"skipped","RunTime":0,"Failure":{"Message":"Only supported for node OS distro [linux]"}},
 {"ContainerHierarchyTexts":["[sig-storage] Something"],"LeafNodeType":"It","LeafNodeText":"works","State":"skipped","RunTime":0},
 {"ContainerHierarchyTexts":null,"LeafNodeType":"ReportAfterSuite","LeafNodeText":"","State":"passed","RunTime":1000}
]}]`

// A report whose setup timed out: no spec ran, and none is in it.
const failedSetupReport = `[{"SuiteDescription":"Kubernetes e2e suite","SuiteSucceeded":false,"SpecialSuiteFailureReasons":["Suite Timeout Elapsed"],"PreRunStats":{"TotalSpecs":3208,"SpecsThatWillRun":46},"SpecReports":[
 {"ContainerHierarchyTexts":null,"LeafNodeType":"SynchronizedBeforeSuite","LeafNodeText":"","State":"timedout","RunTime":60000000000,"Failure":{"Message":"A suite timeout occurred"}}
]}]`

func summarize(t *testing.T, report string) (string, [3]int) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(p, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := ReadReport(p)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	pass, fail, skip := Summarize(&out, r, DefaultFocus, DefaultSkip)
	return out.String(), [3]int{pass, fail, skip}
}

func TestSummarize(t *testing.T) {
	out, n := summarize(t, sampleReport)
	want := `PASS  [sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy] (1m1s)
FAIL  [sig-network] Netpol NetworkPolicy between server and client should enforce egress policy [Feature:NetworkPolicy] (failed, 2s): Told to stop trying
SKIP  [sig-network] Netpol [LinuxOnly] NetworkPolicy between server and client using UDP should enforce policy based on Ports [Feature:NetworkPolicy]: Only supported for node OS distro [linux]
`
	if out != want || n != [3]int{1, 1, 1} {
		t.Errorf("Summarize: %v\n%s\nwant [1 1 1]\n%s", n, out, want)
	}

	out, n = summarize(t, failedSetupReport)
	want = `FAIL  [SynchronizedBeforeSuite] (timedout): A suite timeout occurred
FAIL  46 of the 46 selected specs did not run (Suite Timeout Elapsed)
`
	if out != want || n != [3]int{0, 47, 0} {
		t.Errorf("Summarize of a failed setup: %v\n%s\nwant [0 47 0]\n%s", n, out, want)
	}
}

func TestRunArgs(t *testing.T) {
	got := strings.Join(RunArgs("/k/config", "/r", DefaultFocus, DefaultSkip, 2*time.Hour), " ")
	for _, want := range []string{
		"--kubeconfig=/k/config", "--provider=skeleton", "--disable-log-dump", "--report-dir=/r",
		`--ginkgo.focus=\[Feature:NetworkPolicy\]`, `--ginkgo.skip=\[Feature:SCTPConnectivity\]`,
		"--ginkgo.timeout=2h0m0s", "--ginkgo.json-report=/r/netpol.json",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("e2e.test flags %q lack %q", got, want)
		}
	}
	if got := strings.Join(RunArgs("/k", "/r", DefaultFocus, "", time.Hour), " "); strings.Contains(got, "ginkgo.skip") {
		t.Errorf("an empty --skip gave %q", got)
	}
}

// The counts of v1.37.2's e2e.test: the [Feature:NetworkPolicy] specs, and
// those of them that need SCTP ([Feature:SCTPConnectivity]).
const (
	wantNetpolSpecs = 49
	wantSCTPSpecs   = 3
)

// TestDryRun lists the [Feature:NetworkPolicy] specs of the cached e2e.test
// with ginkgo's dry run (no cluster): every one that runs is a netpol spec
// that does not need SCTP, the SCTP ones are left out, and the two that put
// SCTP only in a policy (and apply to every plugin) stay in.
func TestDryRun(t *testing.T) {
	e2e := filepath.Join(cache(), "bin", "e2e.test")
	if _, err := os.Stat(filepath.Join(cache(), "bin", ".e2e.test.done")); err != nil {
		testenv.Missing(t, e2e+" (scripts/build-kubernetes.sh e2e.test)")
	}
	run, skipped, err := DryRun(e2e, DefaultFocus, DefaultSkip, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d [Feature:NetworkPolicy] specs: %d to run, %d need SCTP", len(run)+len(skipped), len(run), len(skipped))
	for _, s := range run {
		if !strings.Contains(s, "[Feature:NetworkPolicy]") || strings.Contains(s, "[Feature:SCTPConnectivity]") {
			t.Errorf("would run %q", s)
		}
	}
	for _, s := range skipped {
		if !strings.Contains(s, "[Feature:NetworkPolicy]") || !strings.Contains(s, "[Feature:SCTPConnectivity]") {
			t.Errorf("would leave out %q", s)
		}
	}
	for _, want := range []string{
		"should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
		"should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
	} {
		found := false
		for _, s := range run {
			found = found || strings.Contains(s, want)
		}
		if !found {
			t.Errorf("would not run the spec that %s", want)
		}
	}
	if len(run)+len(skipped) != wantNetpolSpecs || len(skipped) != wantSCTPSpecs {
		t.Errorf("%d specs, %d of them SCTP; v1.37.2 has %d and %d", len(run)+len(skipped), len(skipped), wantNetpolSpecs, wantSCTPSpecs)
	}

	// The same specs as the framework's own list (--list-tests: "file:line: name").
	out, err := exec.Command(e2e, "--list-tests").Output()
	if err != nil {
		t.Fatalf("e2e.test --list-tests: %v", err)
	}
	var listed []string
	for _, line := range strings.Split(string(out), "\n") {
		if m := listLine.FindStringSubmatch(line); m != nil && strings.Contains(m[1], "[Feature:NetworkPolicy]") {
			listed = append(listed, m[1])
		}
	}
	both := append(append([]string{}, run...), skipped...)
	sort.Strings(both)
	sort.Strings(listed)
	if strings.Join(both, "\n") != strings.Join(listed, "\n") {
		t.Errorf("the dry run's specs:\n%s\ne2e.test --list-tests:\n%s", strings.Join(both, "\n"), strings.Join(listed, "\n"))
	}
}

var listLine = regexp.MustCompile(`^\s*\S+\.go:\d+: (.*)$`)
