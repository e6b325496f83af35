package cnpconformance

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	api "sigs.k8s.io/network-policy-api/apis/v1beta1"
	confv1a1 "sigs.k8s.io/network-policy-api/conformance/apis/v1alpha1"
	"sigs.k8s.io/network-policy-api/conformance/tests"
	"sigs.k8s.io/network-policy-api/conformance/utils/config"
	"sigs.k8s.io/network-policy-api/conformance/utils/suite"
	"sigs.k8s.io/network-policy-api/pkg/consts"

	"github.com/tortie/tortie/pkg/version"
)

// crdName is the ClusterNetworkPolicy CRD (deploy/crds/).
const crdName = "clusternetworkpolicies.policy.networking.k8s.io"

// baseManifestsPath is where the runner's HTTPS server serves
// BaseManifests.
const baseManifestsPath = "/base/manifests.yaml"

// TestCNPConformance runs the suite's tests (tests.ConformanceTests, in
// the suite's order) against the cluster of TORTIE_CNP_KUBECONFIG, each as
// a subtest of its short name (go test -run 'TestCNPConformance/NAME$'
// picks some), after the suite's setup (the base namespaces and pods,
// ready). A test the run leaves out (Config.Exclusions) or that needs a
// feature not claimed skips, with the reason. The Report goes to
// TORTIE_CNP_REPORT, whatever happens.
func TestCNPConformance(t *testing.T) {
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubeconfig == "" {
		t.Skipf("%s is not set (docs/cnp-conformance.md)", EnvKubeconfig)
	}

	claimed := sets.New(suite.SupportClusterNetworkPolicy)
	for _, f := range cfg.Features {
		if !suite.AllFeatures.Has(suite.SupportedFeature(f)) {
			t.Fatalf("%s: no feature %q (the suite's: %v)", EnvFeatures, f, sets.List(suite.AllFeatures))
		}
		claimed.Insert(suite.SupportedFeature(f))
	}
	known := map[string]bool{}
	for _, ct := range tests.ConformanceTests {
		known[ct.ShortName] = true
	}
	exclusions := cfg.Exclusions()
	for n := range exclusions {
		if !known[n] {
			t.Fatalf("no test %q in the suite (%s or SCTPTests)", n, EnvSkip)
		}
	}

	report := &Report{
		Suite:           "sigs.k8s.io/network-policy-api/conformance",
		SuiteVersion:    UpstreamVersion,
		Kubeconfig:      cfg.Kubeconfig,
		Started:         time.Now().UTC(),
		Features:        featureNames(claimed),
		SCTP:            cfg.SCTP,
		HostNetworkPort: cfg.HostNetworkPort,
		Setup:           "not done",
	}
	for _, ct := range tests.ConformanceTests {
		report.Tests = append(report.Tests, TestResult{
			Name:         ct.ShortName,
			Description:  ct.Description,
			Features:     featureNames(sets.New(ct.Features...)),
			Experimental: experimental(ct),
			Result:       ResultNotRun,
		})
	}
	defer func() {
		report.Finish(time.Now().UTC())
		report.Profile = ProfileReport(report.Tests, implementation(), report.CRDBundleVersion,
			experimentalFeatures(claimed, true), experimentalFeatures(claimed, false), report.Finished)
		if report.Profile == nil {
			report.ProfileNote = "not every test ran (go test -run/-skip, or a failed setup): a partial run has no profile report"
		}
		t.Logf("results: %v; passed: %v", report.Counts, report.Passed)
		if cfg.Report == "" {
			return
		}
		if err := report.Write(cfg.Report); err != nil {
			t.Errorf("writing the report: %v", err)
			return
		}
		t.Logf("report: %s", cfg.Report)
	}()

	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		report.Setup = err.Error()
		t.Fatalf("%s: %v", EnvKubeconfig, err)
	}
	// controller-runtime's client logs through its own logger, which
	// otherwise complains, after 30s, that none was set.
	ctrllog.SetLogger(logr.Discard())
	c, err := client.New(restCfg, client.Options{})
	if err != nil {
		report.Setup = err.Error()
		t.Fatal(err)
	}
	if err := api.Install(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	clientset, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		report.Setup = err.Error()
		t.Fatal(err)
	}

	// The CRD the suite's policies need, of the suite's version (what the
	// suite's ConformanceProfileTestSuite checks too).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var crd apiextensionsv1.CustomResourceDefinition
	if err := c.Get(ctx, types.NamespacedName{Name: crdName}, &crd); err != nil {
		report.Setup = fmt.Sprintf("the ClusterNetworkPolicy CRD: %v", err)
		t.Fatalf("%s (apply deploy/crds/policy.networking.k8s.io_clusternetworkpolicies.yaml)", report.Setup)
	}
	report.CRDBundleVersion = crd.Annotations[consts.BundleVersionAnnotation]
	report.CRDChannel = crd.Annotations[consts.ChannelAnnotation]
	if report.CRDBundleVersion != consts.BundleVersion {
		report.Setup = fmt.Sprintf("the ClusterNetworkPolicy CRD is of bundle version %q, the suite of %s", report.CRDBundleVersion, consts.BundleVersion)
		t.Fatal(report.Setup)
	}

	// The base manifests, less the SCTP servers unless SCTP: the suite
	// reads a base manifest from its embedded files or from an https://
	// URL (with http.DefaultClient), so they are served from here.
	base, dropped, err := BaseManifests(cfg.SCTP)
	if err != nil {
		t.Fatal(err)
	}
	report.DroppedContainers = dropped
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != baseManifestsPath {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		fmt.Fprint(w, base)
	}))
	defer srv.Close()

	timeouts := config.DefaultTimeoutConfig()
	if cfg.ReadyTimeout != 0 {
		timeouts.NamespacesMustBeReady = cfg.ReadyTimeout
	}
	s := suite.New(suite.Options{
		Client:                    c,
		ClientSet:                 clientset,
		KubeConfig:                *restCfg,
		Debug:                     cfg.Debug,
		BaseManifests:             srv.URL + baseManifestsPath,
		NamespaceLabels:           cfg.NamespaceLabels,
		HostNetworkPortRangeStart: cfg.HostNetworkPort,
		HostNetworkPortRangeEnd:   cfg.HostNetworkPort + HostNetworkPorts - 1,
		CleanupBaseResources:      !cfg.Keep,
		SupportedFeatures:         claimed.Clone(),
		TimeoutConfig:             timeouts,
	})
	left := make([]string, 0, len(exclusions))
	for n := range exclusions {
		left = append(left, n)
	}
	sort.Strings(left)
	t.Logf("suite %s: features %v; left out %v; base containers dropped %v", UpstreamVersion, report.Features, left, dropped)
	if d, ok := t.Deadline(); ok && time.Until(d) < time.Hour {
		t.Logf("WARNING: go test's -timeout ends the run in %v; a whole run takes longer (use -timeout 2h)", time.Until(d).Round(time.Second))
	}
	setupStart := time.Now()
	func() {
		defaultClient := http.DefaultClient
		http.DefaultClient = srv.Client()
		defer func() { http.DefaultClient = defaultClient }()
		report.Setup = "failed or timed out: applying the base manifests and waiting for their pods (see the test log)"
		s.Setup(t)
	}()
	report.Setup = "ok"
	t.Logf("setup took %v", time.Since(setupStart).Round(time.Second))

	for i, ct := range tests.ConformanceTests {
		res := &report.Tests[i]
		started := false
		var reason string
		var skipped bool
		start := time.Now()
		ok := t.Run(ct.ShortName, func(t *testing.T) {
			started = true
			defer func() { skipped = t.Skipped() }()
			for _, f := range ct.Features {
				if !claimed.Has(f) {
					reason = fmt.Sprintf("needs %s, which the run does not claim (%s)", f, EnvFeatures)
					res.Result = ResultNotSupported
					t.Skip(reason)
				}
			}
			if r, ex := exclusions[ct.ShortName]; ex {
				reason = r
				res.Result = ResultSkipped
				t.Skip(reason)
			}
			ct.Run(t, s)
		})
		switch {
		case !started:
			res.Result = ResultNotRun
			continue
		case !ok:
			res.Result = ResultFailed
		case res.Result == ResultNotSupported || res.Result == ResultSkipped:
		case skipped:
			// The suite's own skip (its feature check, which ours
			// precedes).
			res.Result = ResultSkipped
		default:
			res.Result = ResultPassed
		}
		res.Reason = reason
		res.Seconds = time.Since(start).Round(time.Millisecond).Seconds()
	}
}

// experimental is whether a test needs one of the profile's experimental
// features (the suite's rule).
func experimental(ct suite.ConformanceTest) bool {
	for _, f := range ct.Features {
		if suite.CNPConformanceProfile.ExperimentalFeatures.Has(f) {
			return true
		}
	}
	return false
}

// experimentalFeatures are the profile's experimental features claimed
// (or, !supported, not).
func experimentalFeatures(claimed sets.Set[suite.SupportedFeature], supported bool) []string {
	var out []string
	for f := range suite.CNPConformanceProfile.ExperimentalFeatures {
		if claimed.Has(f) == supported {
			out = append(out, string(f))
		}
	}
	sort.Strings(out)
	return out
}

func featureNames(s sets.Set[suite.SupportedFeature]) []string {
	out := make([]string, 0, s.Len())
	for f := range s {
		out = append(out, string(f))
	}
	sort.Strings(out)
	return out
}

func implementation() confv1a1.Implementation {
	return confv1a1.Implementation{
		Organization:          "tortie",
		Project:               "tortie",
		URL:                   "https://github.com/tortie/tortie",
		Version:               version.Get().String(),
		Contact:               []string{"https://github.com/tortie/tortie/issues"},
		AdditionalInformation: "go test ./test/cnpconformance (docs/cnp-conformance.md)",
	}
}
