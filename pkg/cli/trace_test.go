package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

const traceManifest = `
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.shop}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}], labelsToApply: {projectcalico.org/name: shop}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: shop, labels: {role: client}}
spec: {node: n1, orchestrator: k8s, pod: client, endpoint: eth0, interfaceName: cali1, ipNetworks: [10.1.0.1/32], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {namespace: shop, labels: {role: web}}
spec: {node: n2, orchestrator: k8s, pod: web, endpoint: eth0, interfaceName: cali2, ipNetworks: [10.1.0.2/32], profiles: [kns.shop]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {namespace: shop, name: web}
spec:
  selector: role == 'web'
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: role == 'client'}, destination: {ports: [80]}}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {namespace: shop, name: web}
spec:
  selector: role == 'web'
  ingress:
  - {action: Allow, protocol: TCP, source: {selector: role == 'client'}, destination: {ports: [443]}}
`

// TestPolicyTrace runs `tortie policy trace` against a datastore: the
// deciding rule by name, the staged what-if, JSON, and bad input.
func TestPolicyTrace(t *testing.T) {
	e := newEnv(t)
	if out, err := e.run(traceManifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out := e.mustRun("policy", "trace", "shop/client", "shop/web", "--port", "80")
	for _, want := range []string{
		"Packet:       TCP 10.1.0.1:40000 -> 10.1.0.2:80",
		"rule 0 Allow MATCH:   protocol TCP, source selected by selector",
		"Verdict: Allow\n  by ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: tier default, policy shop/web, rule 0",
		"policy shop/web (staged)\n      rule 0 Allow no match: destination port 80 is not in [443]",
		"Staged verdict: Deny\n  by ingress of WorkloadEndpoint:shop/n2-k8s-web-eth0: end of tier default",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// A staged Kubernetes policy is checked as the API server checks a
	// NetworkPolicy, stored, listed, and read by the trace.
	bad := `apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {namespace: shop, name: bad-ports}
spec:
  podSelector: {}
  ingress: [{ports: [{protocol: TCP, port: 0}]}]
`
	if out, err := e.run(bad, "apply", "-f", "-"); err == nil || !strings.Contains(err.Error()+out, "spec.ingress[0].ports[0].port") {
		t.Errorf("a staged Kubernetes policy the API server would refuse: %v\n%s", err, out)
	}
	good := `apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {namespace: shop, name: web-81}
spec:
  podSelector: {matchLabels: {role: web}}
  ingress: [{ports: [{protocol: TCP, port: 81}]}]
`
	if out, err := e.run(good, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply a StagedKubernetesNetworkPolicy: %v\n%s", err, out)
	}
	if out := e.mustRun("get", "sknp", "-n", "shop"); !strings.Contains(out, "web-81") || strings.Contains(out, "bad-ports") {
		t.Errorf("get sknp:\n%s", out)
	}
	if out := e.mustRun("policy", "trace", "shop/client", "shop/web", "--port", "81"); !strings.Contains(out,
		"policy shop/knp.default.web-81 (staged)") {
		t.Errorf("the staged Kubernetes policy is not in the trace:\n%s", out)
	}
	js := e.mustRun("policy", "trace", "10.1.0.1", "shop/web", "--port", "443", "-o", "json")
	var res struct {
		Verdict string
		Ingress struct{ Decision struct{ Kind, Tier string } }
		Staged  struct {
			Verdict string
			Ingress struct{ Decision struct{ Policy string } }
		}
	}
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	if res.Verdict != "Deny" || res.Ingress.Decision.Kind != "tier default" || res.Staged.Verdict != "Allow" || res.Staged.Ingress.Decision.Policy != "shop/web" {
		t.Errorf("json: %+v\n%s", res, js)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"shop/client", "shop/web"}, "--port is required for protocol TCP"},
		{[]string{"shop/client", "shop/web", "--protocol", "icmp", "--port", "80"}, "--port: protocol ICMP has no ports"},
		{[]string{"shop/client", "shop/web", "--protocol", "tcpp", "--port", "80"}, `--protocol: protocol "tcpp"`},
		{[]string{"shop/client", "shop/web", "--port", "70000"}, "--port 70000: want 1-65535"},
		{[]string{"shop/client", "shop/web", "--protocol", "icmp", "--icmp", "8/x"}, `--icmp "8/x": code "x" is not a number 0-255`},
		{[]string{"shop/client", "shop/nope", "--port", "80"}, `destination "shop/nope": no WorkloadEndpoint in namespace "shop"`},
		{[]string{"shop/client", "shop/web", "--port", "80", "-o", "yaml"}, `-o "yaml": want text or json`},
	} {
		out, err := e.run("", append([]string{"policy", "trace"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v (%s), want an error with %q", c.args, err, out, c.want)
		}
	}
}
