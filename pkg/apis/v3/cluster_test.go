package v3

import (
	"encoding/json"
	"strings"
	"testing"
)

// infraDoc builds a manifest of kind with the given name and spec (YAML,
// already indented by two spaces per level below spec).
func infraDoc(kind, name, spec string) string {
	doc := "apiVersion: projectcalico.org/v3\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n"
	if spec != "" {
		doc += "spec:\n" + indent(spec, "  ")
	}
	return doc
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = by + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

// infraBad is one invalid document and the error it must produce.
type infraBad struct {
	name  string
	doc   string
	field string // exact field path
	msg   string // substring of the detail
}

// runInfraBad decodes, defaults and validates each case and requires an
// error at exactly the expected path whose detail contains msg.
func runInfraBad(t *testing.T, cases []infraBad) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Decode([]byte(c.doc))
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, c.doc)
			}
			SetDefaults(r)
			err = Validate(r)
			if err == nil {
				t.Fatalf("expected an error at %s, got none\n%s", c.field, c.doc)
			}
			for _, fe := range err.(ErrorList) {
				if fe.Field == c.field && strings.Contains(fe.Detail, c.msg) {
					return
				}
			}
			t.Fatalf("no error at %s containing %q; got: %v", c.field, c.msg, err)
		})
	}
}

// runInfraGood requires each document to decode, default, validate, and
// round-trip through its own JSON unchanged.
func runInfraGood(t *testing.T, docs map[string]string) {
	t.Helper()
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			r, err := Decode([]byte(doc))
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, doc)
			}
			SetDefaults(r)
			if err := Validate(r); err != nil {
				t.Fatalf("validate: %v\n%s", err, doc)
			}
			b, _ := json.Marshal(r)
			again, err := Decode(b)
			if err != nil {
				t.Fatalf("decode own JSON: %v\n%s", err, b)
			}
			SetDefaults(again)
			if b2, _ := json.Marshal(again); string(b2) != string(b) {
				t.Fatalf("round trip changed the object:\n%s\n%s", b, b2)
			}
		})
	}
}

func TestClusterKindsValidation(t *testing.T) {
	runInfraBad(t, []infraBad{
		{"clusterinfo name", infraDoc("ClusterInformation", "other", "clusterGUID: abc"), "metadata.name", `the only valid name is "default"`},
		{"ipamconfig name", infraDoc("IPAMConfiguration", "ipam", "strictAffinity: true"), "metadata.name", `only valid name`},
		{"ipamconfig negative max", infraDoc("IPAMConfiguration", "default", "strictAffinity: true\nmaxBlocksPerHost: -1"), "spec.maxBlocksPerHost", "must not be negative"},
		{"ipamconfig kubevirt", infraDoc("IPAMConfiguration", "default", "strictAffinity: false\nkubeVirtVMAddressPersistence: Maybe"), "spec.kubeVirtVMAddressPersistence", "not one of Enabled, Disabled"},
		{"kcc name", infraDoc("KubeControllersConfiguration", "kcc", "controllers: {}"), "metadata.name", "only valid name"},
		{"kcc log level", infraDoc("KubeControllersConfiguration", "default", "logSeverityScreen: Loud\ncontrollers: {}"), "spec.logSeverityScreen", `"Loud" is not one of`},
		{"kcc health checks", infraDoc("KubeControllersConfiguration", "default", "healthChecks: Sometimes\ncontrollers: {}"), "spec.healthChecks", "not one of Enabled, Disabled"},
		{"kcc node sync labels", infraDoc("KubeControllersConfiguration", "default", "controllers:\n  node:\n    syncLabels: yes-please"), "spec.controllers.node.syncLabels", "not one of"},
		{"kcc template selector", infraDoc("KubeControllersConfiguration", "default", "controllers:\n  node:\n    hostEndpoint:\n      templates:\n      - interfacePattern: eth0\n        nodeSelector: \"a ==\""), "spec.controllers.node.hostEndpoint.templates[0].nodeSelector", "invalid selector"},
		{"kcc template empty", infraDoc("KubeControllersConfiguration", "default", "controllers:\n  node:\n    hostEndpoint:\n      templates:\n      - generateName: x"), "spec.controllers.node.hostEndpoint.templates[0]", "at least one of interfaceCIDRs and interfacePattern"},
		{"kcc metrics port", infraDoc("KubeControllersConfiguration", "default", "prometheusMetricsPort: 70000\ncontrollers: {}"), "spec.prometheusMetricsPort", "out of range"},
	})
	runInfraGood(t, map[string]string{
		"clusterinfo": infraDoc("ClusterInformation", "default", "clusterGUID: e4d33af1616349b98beb2ad527b538b9\nclusterType: k8s,bgp\ncalicoVersion: v3.31.0\ndatastoreReady: true\nvariant: Calico"),
		"ipamconfig":  infraDoc("IPAMConfiguration", "default", "strictAffinity: true\nmaxBlocksPerHost: 4\nautoAllocateBlocks: true\nkubeVirtVMAddressPersistence: Enabled"),
		"kcc": infraDoc("KubeControllersConfiguration", "default", `logSeverityScreen: Info
healthChecks: Enabled
etcdV3CompactionPeriod: 10m
prometheusMetricsPort: 9094
controllers:
  node:
    reconcilerPeriod: 5m
    syncLabels: Enabled
    leakGracePeriod: 15m
    hostEndpoint:
      autoCreate: Enabled
      createDefaultHostEndpoint: Disabled
      templates:
      - generateName: eth
        interfaceCIDRs: ["10.0.0.0/8"]
        labels: {role: host}
        nodeSelector: has(edge)
  policy: {reconcilerPeriod: 5m}
  workloadEndpoint: {reconcilerPeriod: 5m}
  serviceAccount: {reconcilerPeriod: 5m}
  namespace: {reconcilerPeriod: 5m}
  loadBalancer: {assignIPs: AllServices}
  policyMigration: {enabled: Enabled}`),
	})
}

func TestClusterKindsJSON(t *testing.T) {
	// strictAffinity is always written (no omitempty in Calico); the
	// controllers object and KCC status are always present.
	r, err := Decode([]byte(infraDoc("IPAMConfiguration", "default", "maxBlocksPerHost: 0")))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(r); !strings.Contains(string(b), `"spec":{"strictAffinity":false}`) {
		t.Errorf("got %s", b)
	}
	r, err = Decode([]byte(infraDoc("KubeControllersConfiguration", "default", "")))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(r); !strings.HasSuffix(string(b), `"spec":{"controllers":{}},"status":{}}`) {
		t.Errorf("got %s", b)
	}
}
