package lab_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/images"
	"github.com/tortie/tortie/pkg/lab"
	"github.com/tortie/tortie/test/cnpconformance"
)

// TestLabKubernetesConformance runs the suites Kubernetes and its network
// policy working group wrote to judge network plugins against a 3-node
// `lab up --kubernetes` cluster (tortie installed by kubectl apply alone):
//
//   - Kubernetes' own network policy e2e tests (the [Feature:NetworkPolicy]
//     specs of e2e.test v1.37.2 but the 3 that send SCTP, which this
//     kernel lacks; internal/cmd/tortie-netpol-e2e, docs/netpol-e2e.md):
//     every one must pass;
//   - the network-policy-api v0.3.0 conformance suite for
//     ClusterNetworkPolicy (test/cnpconformance, docs/cnp-conformance.md):
//     every test in scope must pass.
//
// The list of each, with its result, is in the test's log.
func TestLabKubernetesConformance(t *testing.T) {
	_, imgs := clusterBins(t)
	cache := images.KubernetesCache(images.KubernetesVersion)
	if _, err := os.Stat(filepath.Join(cache, "bin", "e2e.test")); err != nil {
		testenv.Missing(t, "Kubernetes' e2e.test (scripts/build-kubernetes.sh e2e.test agnhost)")
	}
	// The suites' images, written into the cache, where lab up finds them.
	if _, err := images.WriteE2EImages(cache); err != nil {
		testenv.Missing(t, err.Error())
	}
	if _, err := images.WriteCNPConformanceImages(cache, ""); err != nil {
		testenv.Missing(t, err.Error())
	}
	runner := filepath.Join(t.TempDir(), "tortie-netpol-e2e")
	if out, err := exec.Command("go", "build", "-o", runner, "github.com/tortie/tortie/internal/cmd/tortie-netpol-e2e").CombinedOutput(); err != nil {
		t.Fatalf("go build tortie-netpol-e2e: %v\n%s", err, out)
	}
	name := upLab(t, "--kubernetes", "--hosts", "3", "--images", imgs)
	kubeconfig := lab.KubeconfigFile(name)

	t.Run("netpol-e2e", func(t *testing.T) {
		t0 := time.Now()
		cmd := exec.Command(runner, "run", "--kubeconfig", kubeconfig, "--report-dir", t.TempDir(), "--timeout", "40m")
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		// One line per spec (PASS/FAIL/SKIP), then the count.
		summary := regexp.MustCompile(`(?m)^netpol: (\d+) passed, (\d+) failed, (\d+) skipped$`).FindStringSubmatch(string(out))
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "PASS ") || strings.HasPrefix(l, "FAIL ") || strings.HasPrefix(l, "SKIP ") || strings.HasPrefix(l, "netpol") {
				t.Log(l)
			}
		}
		t.Logf("timing: Kubernetes' network policy e2e tests in %v", time.Since(t0).Round(time.Second))
		if err != nil || summary == nil || summary[2] != "0" {
			t.Fatalf("tortie-netpol-e2e run: %v\n%s", err, lastBytes(string(out), 4000))
		}
		if summary[1] != "46" {
			t.Errorf("%s specs passed, want the 46 [Feature:NetworkPolicy] specs without SCTP", summary[1])
		}
	})

	t.Run("cnp-conformance", func(t *testing.T) {
		t0 := time.Now()
		report := filepath.Join(t.TempDir(), "cnp.json")
		cmd := exec.Command("go", "test", "-count=1", "-v", "-run", "^TestCNPConformance$", "-timeout", "40m", "./test/cnpconformance")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), cnpconformance.EnvKubeconfig+"="+kubeconfig, cnpconformance.EnvReport+"="+report)
		out, err := cmd.CombinedOutput()
		var r cnpconformance.Report
		b, rerr := os.ReadFile(report)
		if rerr == nil {
			rerr = json.Unmarshal(b, &r)
		}
		if rerr != nil {
			t.Fatalf("the conformance report: %v (go test: %v)\n%s", rerr, err, lastBytes(string(out), 4000))
		}
		for _, tr := range r.Tests {
			line := tr.Result + "  " + tr.Name
			if tr.Reason != "" {
				line += ": " + tr.Reason
			}
			t.Log(line)
		}
		t.Logf("setup %s; counts %v; timing: %v", r.Setup, r.Counts, time.Since(t0).Round(time.Second))
		if err != nil || !r.Passed || r.Counts[cnpconformance.ResultFailed] > 0 {
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			var fails []string
			for sc.Scan() {
				if l := sc.Text(); strings.Contains(l, "--- FAIL") || strings.Contains(l, "Error") {
					fails = append(fails, l)
				}
			}
			t.Fatalf("ClusterNetworkPolicy conformance did not pass (go test: %v):\n%s\n%s", err, strings.Join(fails, "\n"), lastBytes(string(out), 4000))
		}
	})
}
