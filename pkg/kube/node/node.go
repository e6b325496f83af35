package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tortie/tortie/pkg/images"
)

// DefaultContainerdTimeout bounds the wait for containerd's socket.
const DefaultContainerdTimeout = time.Minute

// Ctr runs ctr against the node's containerd in namespace k8s.io (the
// CRI's) and returns its output.
func (p *Plan) Ctr(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--address", p.ContainerdSocket, "--namespace", "k8s.io"}, args...)
	cmd := exec.CommandContext(ctx, p.Config.Ctr, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// WaitContainerd waits until the node's containerd answers (ctr version).
func (p *Plan) WaitContainerd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultContainerdTimeout)
	defer cancel()
	var err error
	for {
		if _, serr := os.Stat(p.ContainerdSocket); serr == nil {
			if _, err = p.Ctr(ctx, "version"); err == nil {
				return nil
			}
		} else {
			err = serr
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: containerd not answering (%v); see %s", p.Config.Name, err, p.Containerd.LogFile)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ImportImages imports OCI archives (pkg/images) into the node's
// containerd, where kubelet finds them (never pulling a tag other than
// latest with IfNotPresent).
func (p *Plan) ImportImages(ctx context.Context, archives ...string) error {
	for _, a := range archives {
		if _, err := p.Ctr(ctx, "images", "import", a); err != nil {
			return fmt.Errorf("node %s: importing %s: %w", p.Config.Name, a, err)
		}
	}
	return nil
}

// Node is a node started by Start.
type Node struct {
	Plan  *Plan
	mu    sync.Mutex
	procs []Proc
}

// Start runs a node in one call (tests): Prepare, Setup, containerd
// (adopted into the cgroup root), the images imported, kubelet and, if
// configured, kube-proxy. It returns once they run, not once the Node is
// Ready (that needs a CNI configuration: WaitReady). Detached, the
// processes outlive this process (then keep Record for Down). On failure
// the node is taken down.
func Start(ctx context.Context, cfg Config, detach bool, archives ...string) (*Node, error) {
	plan, err := Prepare(cfg)
	if err != nil {
		return nil, err
	}
	n := &Node{Plan: plan}
	fail := func(err error) (*Node, error) {
		if derr := n.Stop(context.Background()); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	if err := plan.Setup(ctx); err != nil {
		return fail(err)
	}
	for _, c := range plan.Components() {
		p, done, err := launch(c, detach)
		if err != nil {
			return fail(err)
		}
		n.mu.Lock()
		n.procs = append(n.procs, p)
		n.mu.Unlock()
		if err := plan.Adopt(c.Role, p.PID); err != nil {
			return fail(err)
		}
		if c.Role == "containerd" {
			if err := plan.WaitContainerd(ctx); err != nil {
				return fail(err)
			}
			if err := plan.ImportImages(ctx, archives...); err != nil {
				return fail(err)
			}
		}
		select {
		case <-done:
			return fail(fmt.Errorf("node %s: %s exited at once; end of %s:\n%s", cfg.Name, c.Role, c.LogFile, tail(c.LogFile, 20)))
		default:
		}
	}
	return n, nil
}

// Record is what Down needs.
func (n *Node) Record() Record {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.Plan.Record(n.procs...)
}

// Procs are the node's processes.
func (n *Node) Procs() []Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Proc(nil), n.procs...)
}

// Stop is Down of the node's Record.
func (n *Node) Stop(ctx context.Context) error {
	return Down(ctx, n.Record())
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestImages are the archives of the pause and test images.
type TestImages struct {
	Pause, EchoServer images.Built
}

// Archives are the archives' paths.
func (t TestImages) Archives() []string { return []string{t.Pause.Path, t.EchoServer.Path} }

// BuildTestImages builds the pause image (images.PauseRef) and the test
// image (images.EchoServerRef) into dir: their static programs are built
// from this module's source with go (so the working directory must be in
// the module, as in its tests and `make`).
func BuildTestImages(ctx context.Context, dir string) (TestImages, error) {
	bins := filepath.Join(dir, "bin")
	if err := images.BuildPrograms(ctx, "", bins, nil, images.PauseName, images.EchoServerName); err != nil {
		return TestImages{}, err
	}
	var t TestImages
	var err error
	if t.Pause, err = images.WritePause(dir, filepath.Join(bins, images.PauseName)); err != nil {
		return t, err
	}
	t.EchoServer, err = images.WriteEchoServer(dir, filepath.Join(bins, images.EchoServerName))
	return t, err
}
