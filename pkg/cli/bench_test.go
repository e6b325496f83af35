package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tortie/tortie/pkg/datastore/etcdtest"
)

// rulePoliciesManifest is bench/policy's 100 NetworkPolicies of 100 ingress
// rules each (one file, one transaction): selector and /24 sources, one port
// each; the last rule of policy i allows port sentinel+i.
func rulePoliciesManifest(sentinel int) string {
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, `---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: bench, name: svc-%03d}
spec:
  order: %d
  selector: "role == 'server'"
  types: [Ingress]
  ingress:
`, i, 100+i)
		for j := range 100 {
			port := fmt.Sprint(20000 + 100*i + j)
			var src string
			if j%2 == 0 {
				src = fmt.Sprintf(`selector: "app == 'svc-%d'"`, (i+j)%100)
			} else {
				src = fmt.Sprintf("nets: [172.%d.%d.0/24]", 16+i%16, j)
			}
			if j == 99 {
				src, port = `selector: "role == 'client'"`, fmt.Sprint(sentinel+i)
			}
			fmt.Fprintf(&b, "    - {action: Allow, protocol: TCP, source: {%s}, destination: {ports: [%s]}}\n", src, port)
		}
	}
	return b.String()
}

// benchApply runs `tortie apply -f FILE` in process, alternating between
// the files (so every apply replaces what the previous one wrote).
func benchApply(b *testing.B, manifests ...string) {
	srv := etcdtest.Start(b)
	dir := b.TempDir()
	files := make([]string, len(manifests))
	for i, m := range manifests {
		files[i] = filepath.Join(dir, fmt.Sprintf("m%d.yaml", i))
		if err := os.WriteFile(files[i], []byte(m), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var out, errw bytes.Buffer
		root := NewRootCommand(strings.NewReader(""), &out, &errw)
		root.SetArgs([]string{"--etcd-endpoints", srv.Endpoint(), "--config", os.DevNull, "apply", "-f", files[i%len(files)]})
		if err := root.Execute(); err != nil {
			b.Fatalf("%v\n%s", err, errw.String())
		}
		if !strings.HasPrefix(out.String(), "Successfully applied") {
			b.Fatalf("apply said %q", out.String())
		}
	}
}

// BenchmarkApply100x100 is `tortie apply -f` of bench/policy's manifest of
// 100 NetworkPolicies × 100 rules, replacing the previous apply's each time.
func BenchmarkApply100x100(b *testing.B) {
	benchApply(b, rulePoliciesManifest(30000), rulePoliciesManifest(31000))
}

// BenchmarkApplyOnePolicy is `tortie apply -f` of one small NetworkPolicy.
func BenchmarkApplyOnePolicy(b *testing.B) {
	doc := func(action string) string {
		return `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: bench, name: allow-client}
spec:
  order: 1000
  selector: "role == 'server'"
  types: [Ingress]
  ingress:
    - {action: ` + action + `, protocol: TCP, source: {selector: "role == 'client'"}, destination: {ports: [80]}}
`
	}
	benchApply(b, doc("Allow"), doc("Deny"))
}
