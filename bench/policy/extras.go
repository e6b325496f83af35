package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tortie/tortie/pkg/datastore"
)

// startBusy starts n processes that spin at normal priority until the run
// ends, so that every run measures the same busy machine (issue 15: the
// goals hold with other work on the machine, not only on an idle one).
func startBusy(n int) {
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			fatalf("busy loop: %v", err)
		}
		runner.AddCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
}

// commitWatch reports when the datastore committed each change of one key:
// its watch event's arrival in this process, which the agent's own watch
// sees at the same moment (both are clients of the same etcd). From there
// to enforcement is the agent's part alone.
type commitWatch struct {
	at chan time.Time
}

func watchCommits(ctx context.Context, endpoint, key string) *commitWatch {
	be, err := datastore.New(datastore.Config{Endpoints: []string{endpoint}})
	if err != nil {
		fatalf("%v", err)
	}
	runner.AddCleanup(func() { be.Close() })
	w := &commitWatch{at: make(chan time.Time, 16)}
	synced := make(chan struct{})
	go func() {
		inSync := false
		for ev := range be.Watch(ctx, key, 0) {
			now := time.Now()
			switch ev.Type {
			case datastore.EventInSync:
				if !inSync {
					inSync = true
					close(synced)
				}
			case datastore.EventAdded, datastore.EventModified:
				if inSync && ev.KV.Key == key {
					select {
					case w.at <- now:
					default:
					}
				}
			}
		}
	}()
	select {
	case <-synced:
	case <-time.After(10 * time.Second):
		fatalf("watch of %s never in sync", key)
	}
	return w
}

// drain forgets commits seen so far.
func (w *commitWatch) drain() {
	for {
		select {
		case <-w.at:
		default:
			return
		}
	}
}

// next is the time of the next commit, or an error after timeout.
func (w *commitWatch) next(timeout time.Duration) (time.Time, error) {
	select {
	case t := <-w.at:
		return t, nil
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("no commit seen within %v", timeout)
	}
}

// profiler collects the agent's Go profiles (tortie-node's debugPort,
// FelixConfiguration debugHost/debugPort) into a directory, for -profile.
type profiler struct {
	dir  string
	lab  *lab
	port int
}

const profilerPort = 6060

// agentEnv is the agent's environment: with -profile, its profiler on.
func (p *profiler) agentEnv() []string {
	if p == nil {
		return nil
	}
	return []string{"FELIX_DEBUGHOST=0.0.0.0", fmt.Sprintf("FELIX_DEBUGPORT=%d", p.port)}
}

// cpu starts a CPU profile and an execution trace of the agent; the
// returned func waits for them and writes DIR/NAME.cpu.pprof and
// DIR/NAME.trace. They last at most max.
func (p *profiler) cpu(name string, maxDur time.Duration) func() {
	if p == nil {
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		p.save(name+".cpu.pprof", fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(maxDur.Seconds())), maxDur+10*time.Second)
	})
	// An execution trace of the same time (go tool trace): where the
	// agent waited, not only where it spent CPU.
	wg.Go(func() {
		p.save(name+".trace", fmt.Sprintf("/debug/pprof/trace?seconds=%d", int(maxDur.Seconds())), maxDur+10*time.Second)
	})
	return wg.Wait
}

// cpuFromStart is cpu for an agent just started: it waits (up to 5 s) for
// the agent's profiler to listen first.
func (p *profiler) cpuFromStart(name string, maxDur time.Duration) func() {
	if p == nil {
		return func() {}
	}
	addr := net.JoinHostPort(p.lab.hostIP.String(), fmt.Sprint(p.port))
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			break
		}
	}
	return p.cpu(name, maxDur)
}

// heap writes the agent's heap profile to DIR/NAME.heap.pprof.
func (p *profiler) heap(name string) {
	if p != nil {
		p.save(name+".heap.pprof", "/debug/pprof/heap?gc=1", 30*time.Second)
	}
}

func (p *profiler) save(file, path string, timeout time.Duration) {
	url := fmt.Sprintf("http://%s:%d%s", p.lab.hostIP, p.port, path)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fatalf("%v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		logf("profile %s: %v", file, err)
		return
	}
	defer resp.Body.Close()
	out := filepath.Join(p.dir, file)
	f, err := os.Create(out)
	if err != nil {
		logf("profile %s: %v", file, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		logf("profile %s: %v", file, err)
		return
	}
	how := "go tool pprof -top"
	if strings.HasSuffix(file, ".trace") {
		how = "go tool trace"
	}
	logf("wrote %s (%s %s)", out, how, out)
}
