package cnpconformance

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/kube/kubetest"
)

// TestRunnerAgainstBareAPIServer runs TestCNPConformance (this test
// binary, again) against a kube-apiserver with no nodes and no controllers
// (kubetest) and the ClusterNetworkPolicy CRD of deploy/crds: the runner
// connects, checks the CRD, applies the base manifests (less the SCTP
// servers) from its HTTPS server, then its setup times out waiting for
// pods that never come. The report says so, with every test not run. It
// is left out of a real run (TORTIE_CNP_KUBECONFIG set).
func TestRunnerAgainstBareAPIServer(t *testing.T) {
	if os.Getenv(EnvKubeconfig) != "" {
		t.Skipf("%s is set: a real run", EnvKubeconfig)
	}
	c := kubetest.Start(t)
	crd, err := os.ReadFile(filepath.Join("..", "..", "deploy", "crds", "policy.networking.k8s.io_clusternetworkpolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.Apply(t, string(crd))
	c.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+crdName)

	report := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCNPConformance$", "-test.v")
	cmd.Env = append(os.Environ(),
		EnvKubeconfig+"="+c.Server.AdminKubeconfig(),
		EnvReport+"="+report,
		EnvReadyTimeout+"=10s",
		EnvKeep+"=1",
	)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Errorf("the run passed without nodes:\n%s", out)
	}
	for _, want := range []string{
		"Creating network-policy-conformance-gryffindor Namespace",
		"Creating centaur StatefulSet",
		"error waiting for network-policy-conformance-gryffindor",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the run's output has no %q", want)
		}
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("no report: %v\n%s", err, out)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Setup, "failed or timed out") || r.Passed || r.CRDBundleVersion != "v0.3.0" || r.CRDChannel != "standard" ||
		len(r.Tests) != 30 || r.Counts[ResultNotRun] != 30 || r.Profile != nil || len(r.DroppedContainers) != 10 {
		t.Errorf("report %s", b)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("the run's output:\n%s", out)
	}

	// What the setup made, left there (TORTIE_CNP_KEEP).
	for ns, sts := range map[string]string{
		"network-policy-conformance-gryffindor":        "harry-potter",
		"network-policy-conformance-slytherin":         "draco-malfoy",
		"network-policy-conformance-hufflepuff":        "cedric-diggory",
		"network-policy-conformance-ravenclaw":         "luna-lovegood",
		"network-policy-conformance-forbidden-forrest": "centaur",
	} {
		if _, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			t.Error(err)
			continue
		}
		s, err := c.Client.AppsV1().StatefulSets(ns).Get(ctx, sts, metav1.GetOptions{})
		if err != nil {
			t.Error(err)
			continue
		}
		cs := s.Spec.Template.Spec.Containers
		if len(cs) != 5 {
			t.Errorf("%s/%s: %d containers, want 5 (7 less the SCTP servers)", ns, sts, len(cs))
		}
		for _, ctr := range cs {
			if ctr.Image != "registry.k8s.io/e2e-test-images/agnhost:2.45" {
				t.Errorf("%s/%s: container %s image %s", ns, sts, ctr.Name, ctr.Image)
			}
			for _, e := range ctr.Env {
				if strings.HasPrefix(e.Name, "SERVE_SCTP_PORT_") {
					t.Errorf("%s/%s: container %s serves SCTP", ns, sts, ctr.Name)
				}
			}
		}
		if sts == "centaur" && (!s.Spec.Template.Spec.HostNetwork || cs[1].Ports[0].ContainerPort != DefaultHostNetworkPort) {
			t.Errorf("centaur: host network %v, first server port %v", s.Spec.Template.Spec.HostNetwork, cs[1].Ports)
		}
	}
}
