//go:build !cnpconformance

package cnpconformance

import (
	"os"
	"testing"
)

// TestCNPConformance, built without -tags cnpconformance: it skips without
// a cluster, and with one says how to build the runner (run_test.go).
func TestCNPConformance(t *testing.T) {
	if os.Getenv(EnvKubeconfig) == "" {
		t.Skipf("%s is not set (docs/cnp-conformance.md)", EnvKubeconfig)
	}
	t.Fatalf("the runner is built with -tags cnpconformance only: it imports the suite, which needs " +
		"sigs.k8s.io/controller-runtime, k8s.io/apiextensions-apiserver and github.com/stretchr/testify in go.mod " +
		"(docs/cnp-conformance.md)")
}
