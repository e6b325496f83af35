package main_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tortie/tortie/internal/testenv"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/flowui"
)

// TestFlowViewInBrowser: tortie-node keeps flow logs and serves them to
// a remote collector that presents the flow token; the collector and web
// view (flowui, what `tortie ui` runs) serve them; a real headless
// Chromium loads the page, sees the flows of two probes appear live,
// filters to the denied one, and looks at the graph and the policy board.
// Screenshots go to the test's artifact directory (go test -artifacts),
// and to $TORTIE_SCREENSHOTS when set (the README's come from there).
func TestFlowViewInBrowser(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Missing(t, "Debian's chromium (scripts/install-deps.sh installs it)")
	}
	l, _, cl := newAgentLab(t)
	apply(t, cl, profile, wep("a", ipA, "a"), wep("b", ipB, "server"), wep("c", ipC, "c"), allowFrom("a"))
	l.serve(&server{})
	tokenFile := filepath.Join(t.TempDir(), "flow-token")
	if err := os.WriteFile(tokenFile, []byte("e2e-"+t.Name()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.startAgentWith(9099, []string{"FELIX_FLOWLOGSLOCALREPORTER=Enabled", "TORTIE_FLOW_TOKEN_FILE=" + tokenFile},
		"--health-addr", ":9099", "--metrics-addr", ":9091")

	// The collector is in this process, in the root namespace: to the
	// agent a remote client, let in by the token alone.
	hub := flowlog.NewHub(1000)
	agentAddr := net.JoinHostPort(l.hostIP.String(), "9099")
	col := flowui.NewCollector([]string{agentAddr}, "e2e-"+t.Name(), hub, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go col.Run(ctx)
	srv := &flowui.Server{Hub: hub, Collector: col}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	url := "http://" + ln.Addr().String() + "/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1400, 900), chromedp.UserDataDir(t.TempDir()))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	bctx, tcancel := context.WithTimeout(bctx, 90*time.Second)
	defer tcancel()
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		for _, dir := range []string{t.ArtifactDir(), os.Getenv("TORTIE_SCREENSHOTS")} {
			if dir == "" {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("screenshot: %s", filepath.Join(dir, name))
		}
	}
	// poll waits until a JavaScript expression holds.
	poll := func(expr string, d time.Duration) error {
		_, err := chromedp.Run(bctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d)))
		return err
	}
	// rows waits until pred, a JavaScript expression over rows (the texts
	// of the flow table's rows), holds.
	rows := func(pred string) error {
		return poll(`(() => { const rows = [...document.querySelectorAll("#flows tbody tr")].map(r => r.innerText); return `+pred+`; })()`, 10*time.Second)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#flows"))); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	if err := poll(`document.querySelector("#agents").textContent.startsWith("1/1 agents")`, 10*time.Second); err != nil {
		t.Fatalf("the collector never followed the agent: %v (%+v)", err, col.Agents())
	}

	// Two probes: a -> b:80 allowed by the policy's rule, c -> b:80
	// denied at the end of the default tier. Their records arrive live.
	t0 := time.Now()
	if !l.connects("calia", ipB+":80", time.Second) || l.connects("calic", ipB+":80", 300*time.Millisecond) {
		t.Fatal("the probes did not go as the policy says")
	}
	err = rows(`rows.some(r => r.includes("ns1/a (10.65.0.2:") && r.includes("ns1/b (10.65.0.3:80)") && r.includes("allowed") && r.includes("tier default, policy ns1/web, rule 0"))
		&& rows.some(r => r.includes("ns1/c (10.65.0.4:") && r.includes("denied") && r.includes("end of tier default"))`)
	if err != nil {
		// Where the records stopped: the agent's stream (the collector's
		// count), the hub, or the page.
		var held []string
		for _, r := range hub.Last(20, flowlog.Filter{}) {
			held = append(held, fmt.Sprintf("%s -> %s %v", r.Src, r.Dst, r.Action))
		}
		t.Fatalf("the flows never showed in the page: %v\ncollector: %+v\nthe hub's last records: %q", err, col.Agents(), held)
	}
	t.Logf("both flows in the page %v after the probes began", time.Since(t0).Round(time.Millisecond))

	// Filter: denied only, in namespace ns1 (the host's own IPv6 multicast
	// listener reports to the workloads are denied too).
	if err := chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS("#f-action"), "deny"), chromedp.SetValue(chromedp.CSS("#f-namespace"), "ns1"),
		chromedp.Click(chromedp.CSS("#apply"))); err != nil {
		t.Fatal(err)
	}
	if err := rows(`rows.length > 0 && rows.every(r => r.includes("denied")) && rows.some(r => r.includes("ns1/c"))`); err != nil {
		t.Fatalf("filtering to denied flows: %v", err)
	}
	shot("flow-view.png")

	// A bad filter: the page says which part is bad.
	if err := chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS("#f-port"), "eighty"), chromedp.Click(chromedp.CSS("#apply"))); err != nil {
		t.Fatal(err)
	}
	if err := poll(`!document.querySelector("#error").hidden`, 5*time.Second); err != nil {
		t.Fatalf("no error shown for a bad filter: %v", err)
	}
	if msg, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#error"))); err != nil || !strings.Contains(msg, `port "eighty": want a number 1-65535`) {
		t.Errorf("a bad filter: %v, page says %q", err, msg)
	}

	// The graph: a red edge c -> b; clicking it lists the deciding rule.
	err = chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#clear")), chromedp.Click(chromedp.CSS(`nav button[data-tab="graph"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#graph line.deny[data-src="ns1/c"][data-dst="ns1/b"]`)),
		chromedp.Click(chromedp.CSS(`#graph line.deny[data-src="ns1/c"][data-dst="ns1/b"]`)))
	if err != nil {
		t.Fatalf("the graph: %v", err)
	}
	if err := poll(`document.querySelector("#edge").innerText.includes("end of tier default")`, 5*time.Second); err != nil {
		t.Fatalf("the edge panel: %v", err)
	}
	if edge, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#edge"))); err != nil || !strings.Contains(edge, "ns1/c → ns1/b") {
		t.Errorf("the edge panel: %v %q", err, edge)
	}
	shot("flow-graph.png")

	// The board: the tier's end decided connections (no datastore here:
	// the policies the records name).
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`nav button[data-tab="board"]`))); err != nil {
		t.Fatal(err)
	}
	if err := poll(`document.querySelector("#board").innerText.includes("ns1/web")`, 5*time.Second); err != nil {
		t.Fatalf("the board: %v", err)
	}
	if board, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#board"))); err != nil || !regexp.MustCompile(`[1-9][0-9]* connection\(s\) decided by the tier's end`).MatchString(board) {
		t.Errorf("the board: %v\n%s", err, board)
	}
	shot("flow-board.png")
}
