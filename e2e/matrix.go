package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Case is one port and protocol of a reachability matrix.
type Case struct {
	Port  int
	Proto string // "tcp", "udp"
}

func (c Case) String() string { return fmt.Sprintf("%s/%d", c.Proto, c.Port) }

// AllCases are the model's four: ports 80 and 81, TCP and UDP.
var AllCases = []Case{{80, "tcp"}, {81, "tcp"}, {80, "udp"}, {81, "udp"}}

// Expectation says whether from should reach to for case c.
type Expectation func(from, to *Pod, c Case) bool

// AllowAll expects everything to connect.
func AllowAll(_, _ *Pod, _ Case) bool { return true }

// Timing of the reachability checks. A poll round uses a short timeout (an
// allowed connection on veths takes well under a millisecond; a denied one
// costs the whole timeout); the final confirmation a longer one.
var (
	PollTimeout    = 100 * time.Millisecond
	ConfirmTimeout = 600 * time.Millisecond
	// RecheckTimeout is for the confirming round's blocked cells that were
	// expected to connect, probed again a few at a time: on a busy machine a
	// probe can time out although the path is open. A connection that was
	// expected blocked is never probed again: load cannot make a blocked
	// path connect.
	RecheckTimeout     = 5 * time.Second
	RecheckParallelism = 8
	ConvergeWithin     = 20 * time.Second
	// Parallelism bounds the probes in flight.
	Parallelism = 160
)

// EncryptedPollTimeout is PollTimeout on a cluster whose agents encrypt
// traffic between hosts in userspace (WireGuard without the kernel's
// module): there each probe's packets go through two agents' processes,
// which share the machine's CPU with the probes, and under load an open
// path can take longer than PollTimeout to answer.
var EncryptedPollTimeout = 400 * time.Millisecond

// encrypting is a cluster whose agents encrypt in userspace.
type encrypting interface{ EncryptsInUserspace() bool }

func pollTimeout(cl Cluster) time.Duration {
	if e, ok := cl.(encrypting); ok && e.EncryptsInUserspace() {
		return EncryptedPollTimeout
	}
	return PollTimeout
}

type cell struct {
	from, to *Pod
	c        Case
}

// Matrix is a reachability matrix over pods × cases; self pairs are left
// out (loopback never leaves the pod, as upstream ignores it).
type Matrix struct {
	Pods  []*Pod
	Cases []Case
	cells []cell
	val   []bool
	errs  []string
}

func newMatrix(pods []*Pod, cases []Case) *Matrix {
	m := &Matrix{Pods: pods, Cases: cases}
	for _, c := range cases {
		for _, f := range pods {
			for _, t := range pods {
				if f != t {
					m.cells = append(m.cells, cell{f, t, c})
				}
			}
		}
	}
	m.val = make([]bool, len(m.cells))
	m.errs = make([]string, len(m.cells))
	return m
}

// Expected is the matrix an expectation describes.
func Expected(pods []*Pod, cases []Case, want Expectation) *Matrix {
	m := newMatrix(pods, cases)
	for i, c := range m.cells {
		m.val[i] = want(c.from, c.to, c.c)
	}
	return m
}

// Observe probes every cell in parallel.
func Observe(cl Cluster, pods []*Pod, cases []Case, timeout time.Duration) *Matrix {
	m := newMatrix(pods, cases)
	m.probe(cl, func(int) bool { return true }, timeout, Parallelism)
	return m
}

// probe probes the cells that pick selects, parallel at most at a time.
func (m *Matrix) probe(cl Cluster, pick func(i int) bool, timeout time.Duration, parallel int) {
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, c := range m.cells {
		if !pick(i) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			m.val[i] = cl.Probe(c.from, c.to, c.c.Port, c.c.Proto, timeout)
		}()
	}
	wg.Wait()
}

// recheckBlocked probes again, with RecheckTimeout and few at a time, the
// cells that were blocked but expected to connect.
func (m *Matrix) recheckBlocked(cl Cluster, want *Matrix) {
	m.probe(cl, func(i int) bool { return !m.val[i] && want.val[i] }, RecheckTimeout, RecheckParallelism)
}

// Diff counts the cells where two matrices over the same pods and cases
// differ.
func (m *Matrix) Diff(o *Matrix) int {
	n := 0
	for i := range m.val {
		if m.val[i] != o.val[i] {
			n++
		}
	}
	return n
}

// Table prints, for each case, upstream's truth table: rows are sources,
// columns destinations, "." connected, "X" blocked; with want given, a
// mismatch is marked "!" (should connect, did not) or "?" (should not, did).
func (m *Matrix) Table(want *Matrix) string {
	var b strings.Builder
	idx := map[cell]int{}
	for i, c := range m.cells {
		idx[c] = i
	}
	for _, c := range m.Cases {
		fmt.Fprintf(&b, "%s (rows: from, columns: to; . connected, X blocked", c)
		if want != nil {
			b.WriteString(", ! expected to connect but blocked, ? expected blocked but connected")
		}
		b.WriteString(")\n     ")
		for _, t := range m.Pods {
			fmt.Fprintf(&b, " %-4s", t.Short())
		}
		b.WriteString("\n")
		for _, f := range m.Pods {
			fmt.Fprintf(&b, "%-5s", f.Short())
			for _, t := range m.Pods {
				s := "-"
				if f != t {
					i := idx[cell{f, t, c}]
					got := m.val[i]
					switch {
					case want != nil && want.val[i] && !got:
						s = "!"
					case want != nil && !want.val[i] && got:
						s = "?"
					case got:
						s = "."
					default:
						s = "X"
					}
				}
				fmt.Fprintf(&b, " %-4s", s)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Convergence records how long changes took to be enforced.
type Convergence struct {
	mu sync.Mutex
	// Matrix: from the start of a change to the end of the first probe
	// round that observed the expected matrix (round granularity).
	Matrix []time.Duration
	// Programmed: from the start of a change until the agents reported
	// an apply after it (Settle).
	Programmed []time.Duration
}

// Stats is the suite-wide record.
var Stats Convergence

func (c *Convergence) add(matrix, programmed time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Matrix = append(c.Matrix, matrix)
	if programmed > 0 {
		c.Programmed = append(c.Programmed, programmed)
	}
}

// Summary is p50/p90/max of both measures.
func (c *Convergence) Summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("change to expected matrix observed: %s; change to agent apply: %s",
		pct(c.Matrix), pct(c.Programmed))
}

func pct(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(float64(len(s))*p))] }
	return fmt.Sprintf("n=%d p50 %v p90 %v max %v", len(s), at(0.5).Round(time.Millisecond),
		at(0.9).Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// ExpectMatrix waits until the cluster shows the expected reachability over
// pods × cases, then probes once more with the longer timeout and asserts
// it. On a mismatch the observed table is printed with the differences
// marked.
func ExpectMatrix(t testing.TB, cl Cluster, what string, pods []*Pod, cases []Case, want Expectation) {
	t.Helper()
	start := cl.LastChange()
	exp := Expected(pods, cases, want)
	// First the agents' own report that they applied something after the
	// change (traffic cannot be enforced before that), then probing: a
	// step whose matrix equals the previous one is not passed by the old
	// state.
	cl.Settle(t)
	programmed := time.Since(start)
	deadline := time.Now().Add(ConvergeWithin)
	rounds := 0
	pt := pollTimeout(cl)
	var got *Matrix
	for {
		got = Observe(cl, pods, cases, pt)
		rounds++
		if got.Diff(exp) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the expected matrix was not observed within %v (%d rounds); last observation, %d cells differ:\n%s",
				what, ConvergeWithin, rounds, got.Diff(exp), got.Table(exp))
		}
	}
	took := time.Since(start)
	Stats.add(took, programmed)
	final := Observe(cl, pods, cases, ConfirmTimeout)
	if n := final.Diff(exp); n > 0 {
		final.recheckBlocked(cl, exp)
	}
	if n := final.Diff(exp); n > 0 {
		t.Fatalf("%s: observed once after %v, but the confirming probe differs in %d cells:\n%s",
			what, took, n, final.Table(exp))
	}
	t.Logf("%s: enforced %v after the change (agent applied after %v; %d poll rounds)", what,
		took.Round(time.Millisecond), programmed.Round(time.Millisecond), rounds)
}

// Eventually polls cond (every 50ms) until it holds or within passes, and
// records the convergence from the cluster's last change.
func Eventually(t testing.TB, cl Cluster, what string, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	start := cl.LastChange()
	cl.Settle(t)
	programmed := time.Since(start)
	deadline := time.Now().Add(within)
	for {
		ok, detail := cond()
		if ok {
			Stats.add(time.Since(start), programmed)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v: %s", what, within, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
