// Command tortie-netpol-e2e runs Kubernetes' own network policy e2e tests
// (k8s.io/kubernetes/test/e2e/network/netpol, in the e2e.test binary that
// scripts/build-kubernetes.sh builds) against a cluster, and prints one line
// per spec: PASS, FAIL (with the failure's first line) or SKIP (with the
// reason). docs/netpol-e2e.md tells the whole procedure.
//
//	tortie-netpol-e2e images
//	    writes the images the tests pull (agnhost) to
//	    ${TORTIE_CACHE}/kubernetes/v1.37.2/images/*.tar and prints them
//	tortie-netpol-e2e list [--focus RE] [--skip RE]
//	    a dry run: the specs a run would run, and those --skip leaves out;
//	    needs no cluster
//	tortie-netpol-e2e run --kubeconfig FILE [--report-dir DIR] [--timeout D]
//	                      [--focus RE] [--skip RE] [-v] [-- e2e.test flags]
//	    runs them; exits 0 only when no spec failed
//
// The focus is [Feature:NetworkPolicy]; the skip is
// [Feature:SCTPConnectivity], the specs that need SCTP in the pods' network
// (not the two that only put protocol: SCTP in a policy and check that TCP
// stays blocked: those apply to every plugin and run).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/tortie/tortie/pkg/images"
)

// The default spec selection.
const (
	DefaultFocus = `\[Feature:NetworkPolicy\]`
	DefaultSkip  = `\[Feature:SCTPConnectivity\]`
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "images":
		err = cmdImages(os.Args[2:])
	case "list":
		err = cmdList(os.Args[2:])
	case "run":
		err = cmdRun(os.Args[2:])
	default:
		usage()
	}
	var exit exitError
	if errors.As(err, &exit) {
		os.Exit(int(exit))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tortie-netpol-e2e: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  tortie-netpol-e2e images
  tortie-netpol-e2e list [--e2e FILE] [--focus RE] [--skip RE]
  tortie-netpol-e2e run --kubeconfig FILE [--e2e FILE] [--report-dir DIR] [--timeout D] [--focus RE] [--skip RE] [-v] [-- e2e.test flags]
`)
	os.Exit(2)
}

// exitError is an exit status whose reason was printed already.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// cache is the cache of the Kubernetes release the tests are from.
func cache() string { return images.KubernetesCache(images.KubernetesVersion) }

func cmdImages(args []string) error {
	fs := flag.NewFlagSet("images", flag.ExitOnError)
	dir := fs.String("cache", cache(), "the release's cache (scripts/build-kubernetes.sh agnhost fills it)")
	fs.Parse(args)
	built, err := images.WriteE2EImages(*dir)
	if err != nil {
		return err
	}
	for _, b := range built {
		fmt.Printf("%-50s %s %6.1f MB %s\n", b.Ref, b.Digest, float64(b.Size)/1e6, b.Path)
	}
	return nil
}

// selection is the flags every command that picks specs has.
type selection struct {
	e2e, focus, skip string
}

func (s *selection) register(fs *flag.FlagSet) {
	fs.StringVar(&s.e2e, "e2e", filepath.Join(cache(), "bin", "e2e.test"), "the e2e.test binary (scripts/build-kubernetes.sh e2e.test)")
	fs.StringVar(&s.focus, "focus", DefaultFocus, "regular expression of the specs to run (--ginkgo.focus)")
	fs.StringVar(&s.skip, "skip", DefaultSkip, "regular expression of the focused specs to leave out (--ginkgo.skip)")
}

func (s *selection) check() error {
	if _, err := regexp.Compile(s.focus); err != nil {
		return fmt.Errorf("--focus: %w", err)
	}
	if s.skip != "" {
		if _, err := regexp.Compile(s.skip); err != nil {
			return fmt.Errorf("--skip: %w", err)
		}
	}
	if _, err := os.Stat(s.e2e); err != nil {
		return fmt.Errorf("%w (scripts/build-kubernetes.sh e2e.test builds it)", err)
	}
	return nil
}

func cmdList(args []string) error {
	fs := flag.NewFlagSet("list", flag.ExitOnError)
	var sel selection
	sel.register(fs)
	fs.Parse(args)
	if err := sel.check(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tortie-netpol-e2e-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	run, skipped, err := DryRun(sel.e2e, sel.focus, sel.skip, dir)
	if err != nil {
		return err
	}
	for _, s := range run {
		fmt.Println("RUN  ", s)
	}
	for _, s := range skipped {
		fmt.Println("SKIP ", s)
	}
	fmt.Printf("%d specs match %s: %d to run, %d left out by %s\n", len(run)+len(skipped), sel.focus, len(run), len(skipped), sel.skip)
	return nil
}

// DryRun lists the specs of e2e whose text matches focus, as e2e.test's
// ginkgo dry run reports them: those a run would run and those skip leaves
// out, each sorted. dir holds the report.
func DryRun(e2e, focus, skip, dir string) (run, skipped []string, err error) {
	report := filepath.Join(dir, "dry-run.json")
	cmd := exec.Command(e2e, "--ginkgo.dry-run", "--ginkgo.no-color", "--ginkgo.focus="+focus, "--ginkgo.json-report="+report)
	// The framework reads no cluster in a dry run, but refuses to start
	// without somewhere to write and a provider to name.
	cmd.Args = append(cmd.Args, "--provider=skeleton", "--report-dir="+dir, "--e2e-output-dir="+dir)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, tail(out, 40))
	}
	r, err := ReadReport(report)
	if err != nil {
		return nil, nil, err
	}
	focused := regexp.MustCompile(focus)
	for _, s := range r.Specs {
		if s.LeafNodeType != "It" || !focused.MatchString(s.matchText) {
			continue
		}
		if skip != "" && regexp.MustCompile(skip).MatchString(s.matchText) {
			skipped = append(skipped, s.Name)
		} else {
			run = append(run, s.Name)
		}
	}
	sort.Strings(run)
	sort.Strings(skipped)
	return run, skipped, nil
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var sel selection
	sel.register(fs)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "the cluster's kubeconfig (default $KUBECONFIG)")
	reportDir := fs.String("report-dir", "netpol-e2e-report", "where e2e.log, the JUnit and ginkgo JSON reports go")
	timeout := fs.Duration("timeout", 3*time.Hour, "the whole run's limit (--ginkgo.timeout); serial, a spec takes about a minute")
	verbose := fs.Bool("v", false, "also print e2e.test's output (always in <report-dir>/e2e.log)")
	kubectl := fs.String("kubectl", filepath.Join(cache(), "bin", "kubectl"), "kubectl the framework runs when dumping a failure, if it exists")
	fs.Parse(args)
	if err := sel.check(); err != nil {
		return err
	}
	if *kubeconfig == "" {
		return errors.New("--kubeconfig (or $KUBECONFIG) names the cluster")
	}
	if _, err := os.Stat(*kubeconfig); err != nil {
		return err
	}
	dir, err := filepath.Abs(*reportDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	report := filepath.Join(dir, "netpol.json")
	os.Remove(report)
	argv := RunArgs(*kubeconfig, dir, sel.focus, sel.skip, *timeout)
	if st, err := os.Stat(*kubectl); err == nil && !st.IsDir() {
		argv = append(argv, "--kubectl-path="+*kubectl)
	}
	argv = append(argv, fs.Args()...)
	logPath := filepath.Join(dir, "e2e.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(sel.e2e, argv...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if *verbose {
		w := io.MultiWriter(logf, os.Stdout)
		cmd.Stdout, cmd.Stderr = w, w
	}
	fmt.Fprintf(os.Stderr, "tortie-netpol-e2e: %s %s\ntortie-netpol-e2e: output in %s\n", sel.e2e, strings.Join(argv, " "), logPath)
	start := time.Now()
	runErr := cmd.Run()
	r, err := ReadReport(report)
	if err != nil {
		logf.Sync()
		b, _ := os.ReadFile(logPath)
		return fmt.Errorf("e2e.test (%v) wrote no report: %v\n%s", runErr, err, tail(b, 40))
	}
	pass, fail, skip := Summarize(os.Stdout, r, sel.focus, sel.skip)
	fmt.Printf("netpol e2e in %s, report in %s\n", time.Since(start).Round(time.Second), dir)
	fmt.Printf("netpol: %d passed, %d failed, %d skipped\n", pass, fail, skip)
	if fail > 0 || runErr != nil {
		if fail == 0 {
			fmt.Fprintf(os.Stderr, "tortie-netpol-e2e: e2e.test: %v (see %s)\n", runErr, logPath)
		}
		return exitError(1)
	}
	return nil
}

// Summarize prints a line for each spec of r that focus selects and skip
// does not, PASS, FAIL or SKIP, and one for each of the suite's own nodes
// that failed and for the selected specs the report lacks (a failed setup
// keeps every spec from starting), and counts them.
func Summarize(w io.Writer, r Report, focus, skip string) (pass, fail, skipped int) {
	focused := regexp.MustCompile(focus)
	var skipRE *regexp.Regexp
	if skip != "" {
		skipRE = regexp.MustCompile(skip)
	}
	var specs int
	for _, s := range r.Specs {
		if s.LeafNodeType != "It" {
			// The suite's own nodes (SynchronizedBeforeSuite: the cluster's
			// nodes and kube-system pods ready) fail the run too.
			if s.State != "passed" {
				fail++
				fmt.Fprintf(w, "FAIL  [%s] (%s): %s\n", s.LeafNodeType, s.State, firstLine(s.Failure.Message, s.State))
			}
			continue
		}
		if !focused.MatchString(s.matchText) || skipRE != nil && skipRE.MatchString(s.matchText) {
			continue
		}
		specs++
		switch s.State {
		case "passed":
			pass++
			fmt.Fprintf(w, "PASS  %s (%s)\n", s.Name, s.RunTime.Round(time.Second))
		case "skipped", "pending":
			skipped++
			fmt.Fprintf(w, "SKIP  %s: %s\n", s.Name, firstLine(s.Failure.Message, "not run"))
		default:
			fail++
			fmt.Fprintf(w, "FAIL  %s (%s, %s): %s\n", s.Name, s.State, s.RunTime.Round(time.Second), firstLine(s.Failure.Message, s.State))
		}
	}
	if missing := r.PreRunStats.SpecsThatWillRun - specs; missing > 0 {
		// Specs a failed suite setup or the timeout kept from starting are
		// not in the report at all.
		fail += missing
		fmt.Fprintf(w, "FAIL  %d of the %d selected specs did not run (%s)\n", missing, r.PreRunStats.SpecsThatWillRun, strings.Join(r.SpecialSuiteFailureReasons, "; "))
	}
	return pass, fail, skipped
}

// RunArgs are e2e.test's flags for a run against the cluster of
// kubeconfig, which has no cloud provider: the skeleton provider, no log
// dump of the nodes (it needs a provider's scripts), reports in dir
// (JUnit from the framework, netpol.json from ginkgo), every spec's output.
func RunArgs(kubeconfig, dir, focus, skip string, timeout time.Duration) []string {
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--provider=skeleton",
		"--disable-log-dump",
		"--report-dir=" + dir,
		"--e2e-output-dir=" + dir,
		"--ginkgo.focus=" + focus,
		"--ginkgo.timeout=" + timeout.String(),
		"--ginkgo.json-report=" + filepath.Join(dir, "netpol.json"),
		"--ginkgo.no-color",
		"--ginkgo.v",
	}
	if skip != "" {
		args = append(args, "--ginkgo.skip="+skip)
	}
	return args
}

// Report is what the runner reads of a ginkgo JSON report
// (--ginkgo.json-report) of one suite.
type Report struct {
	SuiteDescription           string
	SuiteSucceeded             bool
	SpecialSuiteFailureReasons []string
	PreRunStats                struct{ TotalSpecs, SpecsThatWillRun int }
	Specs                      []Spec `json:"SpecReports"`
}

// Spec is one spec of a Report, or one of the suite's own nodes
// (LeafNodeType SynchronizedBeforeSuite, ReportAfterSuite...).
type Spec struct {
	ContainerHierarchyTexts []string
	LeafNodeType            string
	LeafNodeText            string
	State                   string
	RunTime                 time.Duration
	Failure                 struct{ Message string }
	// Name is the spec's full text, its containers' and its own.
	Name string `json:"-"`
	// matchText is what ginkgo's --focus and --skip match: the suite's
	// description and the name.
	matchText string
}

// ReadReport reads a ginkgo JSON report of one suite (e2e.test's).
func ReadReport(path string) (Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Report{}, err
	}
	var reports []Report
	if err := json.Unmarshal(b, &reports); err != nil {
		return Report{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(reports) != 1 {
		return Report{}, fmt.Errorf("%s: %d suites, want 1", path, len(reports))
	}
	r := reports[0]
	for i, s := range r.Specs {
		var texts []string
		for _, t := range append(s.ContainerHierarchyTexts, s.LeafNodeText) {
			if t != "" {
				texts = append(texts, t)
			}
		}
		r.Specs[i].Name = strings.Join(texts, " ")
		r.Specs[i].matchText = r.SuiteDescription + " " + r.Specs[i].Name
	}
	return r, nil
}

func firstLine(s, otherwise string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return otherwise
	}
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
