// Package cnpconformance runs the network-policy-api conformance suite
// (sigs.k8s.io/network-policy-api/conformance, the version go.mod requires:
// v0.3.0) against a Kubernetes cluster that runs tortie, in-process, as a
// Go test: TestCNPConformance. docs/cnp-conformance.md tells the whole
// procedure.
//
// The test skips unless TORTIE_CNP_KUBECONFIG names a kubeconfig, so that
// `go test ./...` stays fast (pkg/lab's TestLabKubernetesConformance runs
// it against a lab cluster). This file, importable by other tests, is
// what needs no cluster and not the suite: the settings,
// the tests left out and why, the base manifests without their SCTP
// servers, and the report.
package cnpconformance

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/network-policy-api/conformance"
	confv1a1 "sigs.k8s.io/network-policy-api/conformance/apis/v1alpha1"
)

// The environment the runner reads.
const (
	// EnvKubeconfig names the admin kubeconfig of the cluster to test.
	// Unset: TestCNPConformance skips.
	EnvKubeconfig = "TORTIE_CNP_KUBECONFIG"
	// EnvReport names the file the JSON Report is written to, when set.
	EnvReport = "TORTIE_CNP_REPORT"
	// EnvFeatures is a comma-separated list of the suite's features
	// claimed besides ClusterNetworkPolicy (the standard one), such as
	// ClusterNetworkPolicyNamedPorts. Default: none.
	EnvFeatures = "TORTIE_CNP_FEATURES"
	// EnvSkip is a comma-separated list of further tests (short names,
	// CNPAdminTierIngressTCP) to leave out; they are reported skipped.
	EnvSkip = "TORTIE_CNP_SKIP"
	// EnvSCTP set to 1 keeps the tests that need SCTP and the base pods'
	// SCTP servers: for nodes whose kernel has SCTP.
	EnvSCTP = "TORTIE_CNP_SCTP"
	// EnvHostNetworkPort is the first of the 8 ports the suite's
	// host-network pods listen on (default 34345, the suite's).
	EnvHostNetworkPort = "TORTIE_CNP_HOST_NETWORK_PORT"
	// EnvNamespaceLabels is a comma-separated list of key=value labels put
	// on the suite's namespaces (for a cluster whose Pod Security
	// admission would refuse the host-network pods:
	// pod-security.kubernetes.io/enforce=privileged).
	EnvNamespaceLabels = "TORTIE_CNP_NAMESPACE_LABELS"
	// EnvKeep set to 1 leaves the base namespaces and pods in the cluster
	// after the run (the suite's cleanup-base-resources=false).
	EnvKeep = "TORTIE_CNP_KEEP"
	// EnvDebug set to 1 turns on the suite's debug logs.
	EnvDebug = "TORTIE_CNP_DEBUG"
	// EnvReadyTimeout is how long the setup waits for the base pods to be
	// ready (a Go duration; default the suite's 300s).
	EnvReadyTimeout = "TORTIE_CNP_READY_TIMEOUT"
)

// UpstreamVersion is the suite's module version, which go.mod requires.
const UpstreamVersion = "v0.3.0"

// DefaultHostNetworkPort is the suite's default first host-network port.
const DefaultHostNetworkPort = 34345

// HostNetworkPorts is how many ports the suite's host-network pods use.
const HostNetworkPorts = 8

// Config is the run's settings, from the environment.
type Config struct {
	Kubeconfig      string
	Report          string
	Features        []string
	Skip            []string
	SCTP            bool
	HostNetworkPort int
	NamespaceLabels map[string]string
	Keep            bool
	Debug           bool
	// ReadyTimeout, when not 0, replaces the suite's NamespacesMustBeReady.
	ReadyTimeout time.Duration
}

// ConfigFromEnv reads the settings; getenv is os.Getenv but for tests.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		Kubeconfig:      getenv(EnvKubeconfig),
		Report:          getenv(EnvReport),
		Features:        splitList(getenv(EnvFeatures)),
		Skip:            splitList(getenv(EnvSkip)),
		SCTP:            getenv(EnvSCTP) == "1",
		HostNetworkPort: DefaultHostNetworkPort,
		Keep:            getenv(EnvKeep) == "1",
		Debug:           getenv(EnvDebug) == "1",
	}
	if p := getenv(EnvHostNetworkPort); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n+HostNetworkPorts-1 > 65535 {
			return c, fmt.Errorf("%s=%q: want a port from 1 to %d", EnvHostNetworkPort, p, 65535-HostNetworkPorts+1)
		}
		c.HostNetworkPort = n
	}
	if d := getenv(EnvReadyTimeout); d != "" {
		v, err := time.ParseDuration(d)
		if err != nil || v <= 0 {
			return c, fmt.Errorf("%s=%q: want a positive Go duration (10m)", EnvReadyTimeout, d)
		}
		c.ReadyTimeout = v
	}
	for _, kv := range splitList(getenv(EnvNamespaceLabels)) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return c, fmt.Errorf("%s: %q is not key=value", EnvNamespaceLabels, kv)
		}
		if c.NamespaceLabels == nil {
			c.NamespaceLabels = map[string]string{}
		}
		c.NamespaceLabels[k] = v
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// SCTPTests are the suite's tests that send SCTP: the two per tier named
// so, and those that mix SCTP probes with TCP and UDP ones. On a kernel
// without SCTP (no sctp in /proc/net/protocols, as on tortie's lab
// machines) each such probe fails, whatever the policy, so they are left
// out as a whole: leaving out only the SCTP subtests would also leave out
// the policy changes the later subtests build on.
var SCTPTests = []string{
	"CNPAdminTierEgressSCTP",
	"CNPAdminTierIngressSCTP",
	"CNPAdminTierGress",
	"CNPAdminTierEgressInlineCIDRPeers",
	"CNPAdminTierPortRange",
	"CNPAdminTierEgressNodePeers",
	"CNPBaselineTierEgressSCTP",
	"CNPBaselineTierIngressSCTP",
	"CNPBaselineTierGress",
	"CNPBaselineTierEgressInlineCIDRPeers",
	"CNPBaselineTierPortRange",
	"CNPBaselineTierEgressNodePeers",
}

// ReasonSCTP is why an SCTPTests test is left out.
const ReasonSCTP = "sends SCTP, which the nodes' kernel does not have (set " + EnvSCTP + "=1 on nodes that do)"

// ReasonSkipped is why an EnvSkip test is left out.
const ReasonSkipped = "left out by " + EnvSkip

// Exclusions are the tests left out of the run, with the reason: the
// SCTPTests unless sctp, and skip.
func (c Config) Exclusions() map[string]string {
	out := map[string]string{}
	if !c.SCTP {
		for _, n := range SCTPTests {
			out[n] = ReasonSCTP
		}
	}
	for _, n := range c.Skip {
		out[n] = ReasonSkipped
	}
	return out
}

// UpstreamBaseManifests is the suite's base/manifests.yaml (a text/template
// of the host-network ports), as the suite embeds it.
func UpstreamBaseManifests() (string, error) {
	b, err := conformance.Manifests.ReadFile("base/manifests.yaml")
	return string(b), err
}

// BaseManifests is the suite's base/manifests.yaml, less the containers
// that serve SCTP (porter with only SERVE_SCTP_PORT_ variables) unless
// sctp. Without SCTP in the kernel porter exits at once ("Failed to listen
// SCTP"), so those containers never become ready, the pods never do, and
// the suite's setup times out before any test. No test left in the run
// probes them. dropped names the containers taken out.
func BaseManifests(sctp bool) (manifest string, dropped []string, err error) {
	m, err := UpstreamBaseManifests()
	if err != nil || sctp {
		return m, nil, err
	}
	m, dropped = dropSCTPServers(m)
	return m, dropped, nil
}

var (
	listItem = regexp.MustCompile(`^( *)- `)
	itemName = regexp.MustCompile(`^ *- name: *(.*?) *$`)
)

// dropSCTPServers removes, from a YAML text, each list item that is a
// container (it has an image: key) and serves SCTP (SERVE_SCTP_PORT_ in
// its block). It works on the text, not on parsed YAML, because the
// manifest is a template whose {{ }} are not YAML; a container's block is
// its "- " line and the lines indented deeper than the dash that follow it.
func dropSCTPServers(text string) (string, []string) {
	lines := strings.SplitAfter(text, "\n")
	var out strings.Builder
	var dropped []string
	for i := 0; i < len(lines); {
		m := listItem.FindStringSubmatch(lines[i])
		if m == nil {
			out.WriteString(lines[i])
			i++
			continue
		}
		indent := len(m[1])
		j := i + 1
		for j < len(lines) && strings.TrimRight(lines[j], "\n") != "---" && (strings.TrimSpace(lines[j]) == "" || leading(lines[j]) > indent) {
			j++
		}
		block := strings.Join(lines[i:j], "")
		isContainer := strings.Contains(block, "\n"+strings.Repeat(" ", indent+2)+"image:")
		if isContainer && strings.Contains(block, "SERVE_SCTP_PORT_") {
			name := strings.TrimRight(lines[i], "\n")
			if n := itemName.FindStringSubmatch(name); n != nil {
				name = n[1]
			}
			dropped = append(dropped, name)
			i = j
			continue
		}
		out.WriteString(lines[i])
		i++
	}
	return out.String(), dropped
}

func leading(line string) int {
	return len(line) - len(strings.TrimLeft(line, " "))
}

// The results of a test.
const (
	// ResultPassed: it ran and passed.
	ResultPassed = "passed"
	// ResultFailed: it ran and failed (or its manifests failed to apply).
	ResultFailed = "failed"
	// ResultSkipped: left out, Reason says why (Exclusions).
	ResultSkipped = "skipped"
	// ResultNotSupported: it needs a feature the run does not claim.
	ResultNotSupported = "not-supported"
	// ResultNotRun: not started: go test's -run or -skip left it out, or
	// the setup failed.
	ResultNotRun = "not-run"
)

// TestResult is one of the suite's tests.
type TestResult struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Features    []string `json:"features"`
	// Experimental: it needs an experimental feature of the profile.
	Experimental bool    `json:"experimental"`
	Result       string  `json:"result"`
	Reason       string  `json:"reason,omitempty"`
	Seconds      float64 `json:"seconds,omitempty"`
}

// Report is what TORTIE_CNP_REPORT receives.
type Report struct {
	Suite           string    `json:"suite"`
	SuiteVersion    string    `json:"suiteVersion"`
	Kubeconfig      string    `json:"kubeconfig"`
	Started         time.Time `json:"started"`
	Finished        time.Time `json:"finished"`
	Features        []string  `json:"features"`
	SCTP            bool      `json:"sctp"`
	HostNetworkPort int       `json:"hostNetworkPort"`
	// CRDBundleVersion and CRDChannel are the installed ClusterNetworkPolicy
	// CRD's annotations.
	CRDBundleVersion string `json:"crdBundleVersion,omitempty"`
	CRDChannel       string `json:"crdChannel,omitempty"`
	// DroppedContainers are the base manifests' containers taken out
	// (BaseManifests).
	DroppedContainers []string `json:"droppedContainers,omitempty"`
	// Setup is "ok", or what went wrong before the tests (then every test
	// is not-run).
	Setup  string         `json:"setup"`
	Tests  []TestResult   `json:"tests"`
	Counts map[string]int `json:"counts"`
	// Passed: every test that ran passed, and at least one ran.
	Passed bool `json:"passed"`
	// Profile is the upstream conformance report of the
	// ClusterNetworkPolicy profile (the suite's own schema), for a run of
	// the whole suite only; ProfileNote says why there is none.
	Profile     *confv1a1.ConformanceReport `json:"profile,omitempty"`
	ProfileNote string                      `json:"profileNote,omitempty"`
}

// Finish counts the results and decides Passed.
func (r *Report) Finish(now time.Time) {
	r.Finished = now
	r.Counts = map[string]int{}
	ran := 0
	failed := false
	for _, t := range r.Tests {
		r.Counts[t.Result]++
		switch t.Result {
		case ResultPassed:
			ran++
		case ResultFailed:
			ran++
			failed = true
		}
	}
	r.Passed = r.Setup == "ok" && ran > 0 && !failed
}

// Write writes the report as indented JSON to path, through a temporary
// file in the same directory.
func (r *Report) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ProfileName is the suite's one conformance profile.
const ProfileName = "ClusterNetworkPolicy"

// ProfileReport is the suite's conformance report of the
// ClusterNetworkPolicy profile for these results, as the suite's own
// ConformanceProfileTestSuite.Report computes it: a test counts as
// experimental when it needs an experimental feature; passed, failed and
// skipped (left out) tests are counted, those needing a feature not
// claimed are not; a support level fails when a test failed or a test was
// skipped (the profile has no optional tests). experimentalSupported and
// experimentalUnsupported are the profile's experimental features claimed
// and not. It is nil when a test did not run (a partial run certifies
// nothing).
func ProfileReport(results []TestResult, impl confv1a1.Implementation, bundleVersion string, experimentalSupported, experimentalUnsupported []string, now time.Time) *confv1a1.ConformanceReport {
	p := confv1a1.ProfileReport{Name: ProfileName}
	for _, t := range results {
		if t.Result == ResultNotRun {
			return nil
		}
		var st *confv1a1.Status
		if t.Experimental {
			if p.Experimental == nil {
				p.Experimental = &confv1a1.ExperimentalStatus{}
			}
			st = &p.Experimental.Status
		} else {
			st = &p.Standard
		}
		switch t.Result {
		case ResultPassed:
			st.Passed++
		case ResultFailed:
			st.Failed++
			st.FailedTests = append(st.FailedTests, t.Name)
		case ResultSkipped:
			st.Skipped++
			st.SkippedTests = append(st.SkippedTests, t.Name)
		}
	}
	compile := func(st *confv1a1.Status) {
		switch {
		case st.Failed > 0:
			st.Result = confv1a1.Failure
		case len(st.SkippedTests) > 0:
			st.Result = confv1a1.Failure
			st.Summary = "required tests skipped: " + strings.Join(st.SkippedTests, ", ")
		default:
			st.Result = confv1a1.Success
		}
	}
	compile(&p.Standard)
	if p.Experimental != nil {
		compile(&p.Experimental.Status)
		p.Experimental.SupportedFeatures = sorted(experimentalSupported)
		p.Experimental.UnsupportedFeatures = sorted(experimentalUnsupported)
	}
	r := &confv1a1.ConformanceReport{
		Implementation:             impl,
		Date:                       now.Format(time.RFC3339),
		NetworkPolicyBundleVersion: bundleVersion,
		ProfileReports:             []confv1a1.ProfileReport{p},
	}
	r.APIVersion = "policy.networking.k8s.io/v1alpha1"
	r.Kind = "ConformanceReport"
	return r
}

func sorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
