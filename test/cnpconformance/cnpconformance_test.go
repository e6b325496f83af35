package cnpconformance

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/network-policy-api/conformance"
	confv1a1 "sigs.k8s.io/network-policy-api/conformance/apis/v1alpha1"
	"sigs.k8s.io/yaml"
)

// suiteTest is one test as the suite's sources (embedded in its module
// with the manifests) define it.
type suiteTest struct {
	name     string
	features []string
	sctp     bool // some probe of it uses protocol "sctp"
}

var (
	testDef    = regexp.MustCompile(`(?m)^var \w+ = suite\.ConformanceTest\{`)
	shortName  = regexp.MustCompile(`ShortName:\s*"(\w+)"`)
	featureRef = regexp.MustCompile(`suite\.(Support[A-Z]\w*)`)
)

// suiteTests reads the suite's tests from its sources.
func suiteTests(t *testing.T) []suiteTest {
	t.Helper()
	files, err := fs.Glob(conformance.Manifests, "tests/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("the suite's test sources: %v %v", files, err)
	}
	var out []suiteTest
	for _, f := range files {
		b, err := conformance.Manifests.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		starts := testDef.FindAllStringIndex(src, -1)
		for i, s := range starts {
			end := len(src)
			if i+1 < len(starts) {
				end = starts[i+1][0]
			}
			def := src[s[0]:end]
			n := shortName.FindStringSubmatch(def)
			if n == nil {
				t.Fatalf("%s: a test without a ShortName", f)
			}
			st := suiteTest{name: n[1], sctp: strings.Contains(def, `"sctp"`)}
			feats := def[strings.Index(def, "Features:"):]
			feats = feats[:strings.Index(feats, "}")]
			for _, m := range featureRef.FindAllStringSubmatch(feats, -1) {
				st.features = append(st.features, m[1])
			}
			out = append(out, st)
		}
	}
	return out
}

// TestSCTPTestsAreTheSuites: SCTPTests are exactly the suite's tests that
// send SCTP, and every test of the suite is found.
func TestSCTPTestsAreTheSuites(t *testing.T) {
	tests := suiteTests(t)
	if len(tests) != 30 {
		t.Errorf("%d tests in the suite's sources, want v0.3.0's 30", len(tests))
	}
	var sctp []string
	for _, st := range tests {
		if len(st.features) == 0 || st.features[0] != "SupportClusterNetworkPolicy" {
			t.Errorf("%s: features %v, want SupportClusterNetworkPolicy first", st.name, st.features)
		}
		if st.sctp {
			sctp = append(sctp, st.name)
		}
	}
	want := append([]string(nil), SCTPTests...)
	sort.Strings(sctp)
	sort.Strings(want)
	if !reflect.DeepEqual(sctp, want) {
		t.Errorf("the suite's tests that send SCTP: %v\nSCTPTests: %v", sctp, want)
	}
}

// TestBaseManifests: without SCTP, the base manifests still make the five
// namespaces and five StatefulSets the suite's setup waits for, each
// container left an agnhost that serves no SCTP, and only the SCTP
// servers go; with SCTP they are the suite's own.
func TestBaseManifests(t *testing.T) {
	upstream, err := UpstreamBaseManifests()
	if err != nil {
		t.Fatal(err)
	}
	same, dropped, err := BaseManifests(true)
	if err != nil || same != upstream || dropped != nil {
		t.Errorf("BaseManifests(true) changed the manifests (dropped %v, %v)", dropped, err)
	}
	m, dropped, err := BaseManifests(false)
	if err != nil {
		t.Fatal(err)
	}
	wantDropped := []string{}
	for _, s := range []string{"harry-potter", "draco-malfoy", "cedric-diggory", "luna-lovegood"} {
		wantDropped = append(wantDropped, s+"-9003", s+"-9005")
	}
	wantDropped = append(wantDropped, "centaur-{{ index .HostNetworkPorts 6 }}", "centaur-{{ index .HostNetworkPorts 7 }}")
	if !reflect.DeepEqual(dropped, wantDropped) {
		t.Errorf("dropped %q, want %q", dropped, wantDropped)
	}

	up := render(t, upstream)
	got := render(t, m)
	if len(got) != len(up) {
		t.Fatalf("%d objects, the suite's manifests have %d", len(got), len(up))
	}
	kinds := map[string][]string{}
	for i, o := range got {
		kinds[o.GetKind()] = append(kinds[o.GetKind()], o.GetNamespace()+"/"+o.GetName())
		if o.GetKind() != "StatefulSet" {
			if !reflect.DeepEqual(o.Object, up[i].Object) {
				t.Errorf("%s %s changed", o.GetKind(), o.GetName())
			}
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		upContainers, _, _ := unstructured.NestedSlice(up[i].Object, "spec", "template", "spec", "containers")
		if len(containers) != 5 || len(upContainers) != 7 {
			t.Errorf("%s: %d containers of the suite's %d, want 5 of 7", o.GetName(), len(containers), len(upContainers))
		}
		kept := map[string]bool{}
		for _, c := range containers {
			b, _ := json.Marshal(c)
			if bytes.Contains(b, []byte("SCTP")) {
				t.Errorf("%s: container %s has SCTP", o.GetName(), b)
			}
			if !bytes.Contains(b, []byte(`"registry.k8s.io/e2e-test-images/agnhost:2.45"`)) {
				t.Errorf("%s: container %s is not the suite's agnhost", o.GetName(), b)
			}
			kept[c.(map[string]any)["name"].(string)] = true
		}
		// What went is exactly porter serving SCTP alone.
		for _, c := range upContainers {
			cm := c.(map[string]any)
			if kept[cm["name"].(string)] {
				if !reflect.DeepEqual(cm, findContainer(containers, cm["name"].(string))) {
					t.Errorf("%s: container %s changed", o.GetName(), cm["name"])
				}
				continue
			}
			env, _, _ := unstructured.NestedSlice(cm, "env")
			cmd, _, _ := unstructured.NestedStringSlice(cm, "command")
			if len(env) != 1 || !strings.HasPrefix(env[0].(map[string]any)["name"].(string), "SERVE_SCTP_PORT_") || strings.Join(cmd, " ") != "/bin/bash -c /agnhost porter" {
				t.Errorf("%s: dropped container %v is not an SCTP-only porter", o.GetName(), cm)
			}
		}
	}
	if len(kinds["Namespace"]) != 5 || len(kinds["StatefulSet"]) != 5 || len(kinds) != 2 {
		t.Errorf("objects %v, want 5 namespaces and 5 StatefulSets", kinds)
	}
}

func findContainer(cs []any, name string) map[string]any {
	for _, c := range cs {
		if cm := c.(map[string]any); cm["name"] == name {
			return cm
		}
	}
	return nil
}

// render executes the manifests' template as the suite's Applier does
// (with the default host-network ports) and decodes the documents.
func render(t *testing.T, manifest string) []unstructured.Unstructured {
	t.Helper()
	tmpl, err := template.New("m").Parse(manifest)
	if err != nil {
		t.Fatal(err)
	}
	ports := make([]int, HostNetworkPorts)
	for i := range ports {
		ports[i] = DefaultHostNetworkPort + i
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, struct{ HostNetworkPorts []int }{ports}); err != nil {
		t.Fatal(err)
	}
	var out []unstructured.Unstructured
	for _, doc := range strings.Split(buf.String(), "\n---\n") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if len(o) > 0 {
			out = append(out, unstructured.Unstructured{Object: o})
		}
	}
	return out
}

func TestDropSCTPServers(t *testing.T) {
	in := `kind: X
spec:
  list:
    - name: keep
      image: a
      env:
      - name: SERVE_TCP_PORT_1
    - name: sctp
      image: a

      env:
      - name: SERVE_SCTP_PORT_2
        value: "foo"
    - notacontainer: SERVE_SCTP_PORT_3
  after: 1
---
- name: last
  image: b
  env:
  - name: SERVE_SCTP_PORT_4
`
	want := `kind: X
spec:
  list:
    - name: keep
      image: a
      env:
      - name: SERVE_TCP_PORT_1
    - notacontainer: SERVE_SCTP_PORT_3
  after: 1
---
`
	got, dropped := dropSCTPServers(in)
	if got != want || !reflect.DeepEqual(dropped, []string{"sctp", "last"}) {
		t.Errorf("got dropped %q and\n%s\nwant\n%s", dropped, got, want)
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := ConfigFromEnv(env(nil))
	if err != nil || c.Kubeconfig != "" || c.HostNetworkPort != DefaultHostNetworkPort || c.SCTP || c.Keep {
		t.Errorf("empty environment: %+v, %v", c, err)
	}
	if ex := c.Exclusions(); len(ex) != len(SCTPTests) || ex["CNPAdminTierGress"] != ReasonSCTP {
		t.Errorf("default exclusions %v", ex)
	}
	c, err = ConfigFromEnv(env(map[string]string{
		EnvKubeconfig:      "/k",
		EnvReport:          "/r.json",
		EnvFeatures:        " ClusterNetworkPolicyNamedPorts ,",
		EnvSkip:            "CNPAdminTierIngressTCP,CNPAdminTierGress",
		EnvSCTP:            "1",
		EnvHostNetworkPort: "40000",
		EnvNamespaceLabels: "a=b,pod-security.kubernetes.io/enforce=privileged",
		EnvKeep:            "1",
		EnvReadyTimeout:    "10m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Kubeconfig: "/k", Report: "/r.json",
		Features: []string{"ClusterNetworkPolicyNamedPorts"}, Skip: []string{"CNPAdminTierIngressTCP", "CNPAdminTierGress"},
		SCTP: true, HostNetworkPort: 40000, Keep: true, ReadyTimeout: 10 * time.Minute,
		NamespaceLabels: map[string]string{"a": "b", "pod-security.kubernetes.io/enforce": "privileged"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
	if ex := c.Exclusions(); !reflect.DeepEqual(ex, map[string]string{"CNPAdminTierIngressTCP": ReasonSkipped, "CNPAdminTierGress": ReasonSkipped}) {
		t.Errorf("exclusions with SCTP and a skip list: %v", ex)
	}
	for _, bad := range []map[string]string{
		{EnvHostNetworkPort: "65530"},
		{EnvHostNetworkPort: "x"},
		{EnvNamespaceLabels: "novalue"},
		{EnvReadyTimeout: "300"},
	} {
		if _, err := ConfigFromEnv(env(bad)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestReport(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	results := []TestResult{
		{Name: "A", Result: ResultPassed},
		{Name: "B", Result: ResultFailed},
		{Name: "C", Result: ResultSkipped, Reason: ReasonSCTP},
		{Name: "D", Result: ResultNotSupported, Experimental: true},
		{Name: "E", Result: ResultPassed, Experimental: true},
	}
	impl := confv1a1.Implementation{Organization: "tortie", Project: "tortie"}
	p := ProfileReport(results, impl, "v0.3.0", []string{"ClusterNetworkPolicyNamedPorts"}, []string{"ClusterNetworkPolicyEgressNodePeers"}, now)
	if p == nil || len(p.ProfileReports) != 1 {
		t.Fatalf("profile report %+v", p)
	}
	pr := p.ProfileReports[0]
	if pr.Name != "ClusterNetworkPolicy" || pr.Standard.Result != confv1a1.Failure ||
		pr.Standard.Passed != 1 || pr.Standard.Failed != 1 || pr.Standard.Skipped != 1 ||
		!reflect.DeepEqual(pr.Standard.FailedTests, []string{"B"}) || !reflect.DeepEqual(pr.Standard.SkippedTests, []string{"C"}) {
		t.Errorf("standard %+v", pr.Standard)
	}
	if pr.Experimental == nil || pr.Experimental.Result != confv1a1.Success || pr.Experimental.Passed != 1 ||
		!reflect.DeepEqual(pr.Experimental.SupportedFeatures, []string{"ClusterNetworkPolicyNamedPorts"}) {
		t.Errorf("experimental %+v", pr.Experimental)
	}
	if p.Kind != "ConformanceReport" || p.NetworkPolicyBundleVersion != "v0.3.0" || p.Date != now.Format(time.RFC3339) {
		t.Errorf("report %+v", p)
	}
	// Only skips: the standard level fails, naming them.
	p = ProfileReport([]TestResult{{Name: "A", Result: ResultPassed}, {Name: "C", Result: ResultSkipped}}, impl, "v0.3.0", nil, nil, now)
	if st := p.ProfileReports[0].Standard; st.Result != confv1a1.Failure || st.Summary != "required tests skipped: C" {
		t.Errorf("standard with a skip: %+v", st)
	}
	if p.ProfileReports[0].Experimental != nil {
		t.Errorf("experimental without experimental tests: %+v", p.ProfileReports[0].Experimental)
	}
	if ProfileReport(append(results, TestResult{Name: "F", Result: ResultNotRun}), impl, "v0.3.0", nil, nil, now) != nil {
		t.Error("a profile report for a partial run")
	}

	r := &Report{Setup: "ok", Tests: results, Profile: p}
	r.Finish(now)
	if r.Passed || r.Counts[ResultPassed] != 2 || r.Counts[ResultFailed] != 1 || r.Counts[ResultNotSupported] != 1 {
		t.Errorf("finished %+v", r)
	}
	r.Tests = results[2:]
	if r.Finish(now); !r.Passed {
		t.Error("a run whose tests that ran all passed did not pass")
	}
	r.Setup = "timed out"
	if r.Finish(now); r.Passed {
		t.Error("a run whose setup failed passed")
	}
	path := filepath.Join(t.TempDir(), "report.json")
	if err := r.Write(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Tests) != 3 || back.Tests[0].Name != "C" || back.Tests[0].Reason != ReasonSCTP || back.Profile == nil {
		t.Errorf("read back %+v", back)
	}
}
