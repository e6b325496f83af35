package apiserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The control plane's users. Give ControlPlaneUsers in Config.Users (the
// token file is read only when kube-apiserver starts) and the controller
// manager and scheduler run as themselves, with the permissions the RBAC
// bootstrap policy gives them; without, they run as the admin.
const (
	ControllerManagerUser = "system:kube-controller-manager"
	SchedulerUser         = "system:kube-scheduler"
)

// ControlPlaneUsers are the users to add to Config.Users for
// ControlPlane.
func ControlPlaneUsers() []User {
	return []User{{Name: ControllerManagerUser}, {Name: SchedulerUser}}
}

// ControlPlaneConfig says how to run kube-controller-manager and
// kube-scheduler beside a kube-apiserver.
type ControlPlaneConfig struct {
	// ClusterCIDR, when set, makes the controller manager allocate each
	// Node a pod CIDR (spec.podCIDR) of NodeCIDRMaskSize bits from it
	// (--allocate-node-cidrs).
	ClusterCIDR string
	// NodeCIDRMaskSize is the size of each node's pod CIDR (default 24).
	NodeCIDRMaskSize int
	// Detach runs them in sessions of their own that outlive this process.
	Detach bool
	// ReadyTimeout bounds the wait for /healthz (default 2 minutes).
	ReadyTimeout time.Duration
	// StopGrace is the wait between SIGTERM and SIGKILL (default 15 s).
	StopGrace time.Duration
	// ControllerManagerArgs and SchedulerArgs are appended to their
	// command lines.
	ControllerManagerArgs []string
	SchedulerArgs         []string
}

// Component is one prepared control-plane process.
type Component struct {
	// Name is kube-controller-manager or kube-scheduler.
	Name string
	// Argv is the command line (Argv[0] the binary).
	Argv []string
	// LogFile is where its output goes (Dir/<Name>.log).
	LogFile string
	// HealthzURL answers 200 once it runs (a self-signed certificate).
	HealthzURL string
}

// ControlPlane prepares kube-controller-manager and kube-scheduler for
// the apiserver p prepared (the lab: it starts them itself, like the
// apiserver). Ports are picked free on 127.0.0.1 now.
func (p *Prepared) ControlPlane(cfg ControlPlaneConfig) ([]Component, error) {
	return controlPlane(p.Config, p.Kubeconfigs, cfg)
}

// controlPlane writes the components' directories and returns their
// command lines. The controller manager gets the apiserver's PKI: the
// service-account signing key (tokens of the token controller), the CA
// (published as kube-root-ca.crt in every namespace, and the signer of
// approved certificate requests).
func controlPlane(api Config, kubeconfigs map[string]string, cfg ControlPlaneConfig) ([]Component, error) {
	if cfg.NodeCIDRMaskSize == 0 {
		cfg.NodeCIDRMaskSize = 24
	}
	if cfg.ClusterCIDR != "" {
		pfx, err := netip.ParsePrefix(cfg.ClusterCIDR)
		if err != nil || pfx != pfx.Masked() {
			return nil, fmt.Errorf("control plane: ClusterCIDR %q is not a CIDR", cfg.ClusterCIDR)
		}
		if cfg.NodeCIDRMaskSize <= pfx.Bits() || cfg.NodeCIDRMaskSize > pfx.Addr().BitLen() {
			return nil, fmt.Errorf("control plane: NodeCIDRMaskSize %d does not fit in %s", cfg.NodeCIDRMaskSize, pfx)
		}
	}
	kubeconfig := func(user string) string {
		if k, ok := kubeconfigs[user]; ok {
			return k
		}
		return kubeconfigs[AdminUser]
	}
	pki := func(f string) string { return filepath.Join(api.Dir, f) }
	var out []Component
	for _, name := range []string{"kube-controller-manager", "kube-scheduler"} {
		bin, err := Binary(name)
		if err != nil {
			return nil, err
		}
		port, err := freePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		certDir := filepath.Join(api.Dir, name)
		if err := os.MkdirAll(certDir, 0o700); err != nil {
			return nil, err
		}
		argv := []string{bin,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + certDir,
			"--leader-elect=false",
			"--profiling=false",
			"--v=1",
		}
		switch name {
		case "kube-controller-manager":
			kc := kubeconfig(ControllerManagerUser)
			argv = append(argv,
				"--kubeconfig="+kc,
				"--authentication-kubeconfig="+kc,
				"--authorization-kubeconfig="+kc,
				// Every controller the release has, on by default or not.
				"--controllers=*",
				"--use-service-account-credentials=true",
				"--service-account-private-key-file="+pki(saKeyFile),
				"--root-ca-file="+pki(caCertFile),
				"--cluster-signing-cert-file="+pki(caCertFile),
				"--cluster-signing-key-file="+pki(caKeyFile),
				"--service-cluster-ip-range="+api.ServiceCIDR,
			)
			if cfg.ClusterCIDR != "" {
				argv = append(argv, "--allocate-node-cidrs=true", "--cluster-cidr="+cfg.ClusterCIDR,
					"--node-cidr-mask-size="+strconv.Itoa(cfg.NodeCIDRMaskSize))
			}
			argv = append(argv, cfg.ControllerManagerArgs...)
		case "kube-scheduler":
			kc := kubeconfig(SchedulerUser)
			argv = append(argv, "--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc)
			argv = append(argv, cfg.SchedulerArgs...)
		}
		out = append(out, Component{Name: name, Argv: argv, LogFile: filepath.Join(api.Dir, name+".log"),
			HealthzURL: "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/healthz"})
	}
	return out, nil
}

// WaitHealthy polls url (a component's /healthz, self-signed) until it
// answers 200 or ctx ends.
func WaitHealthy(ctx context.Context, url string) error {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true} //nolint:gosec // a self-signed local health endpoint
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	last := "no answer yet"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else if ctx.Err() == nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy (%v; last: %s)", url, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// StartCommand starts cmd from a thread that lives as long as this
// process, so that a Pdeathsig in cmd.SysProcAttr means "when this process
// dies", not "when the starting thread ends" (Go ends threads that
// namespace code locked). For children of this package's kind, started by
// other packages (kube/node).
func StartCommand(cmd *exec.Cmd) error { return startOnSpawnThread(cmd) }

// ControlPlane is a running kube-controller-manager and kube-scheduler.
type ControlPlane struct {
	// Components are what was started, in order.
	Components []Component
	grace      time.Duration
	mu         sync.Mutex
	procs      []*process
}

// StartControlPlane runs kube-controller-manager and kube-scheduler
// against s and returns once both answer /healthz. On failure nothing is
// left running and the error quotes the end of the failing one's log.
func (s *Server) StartControlPlane(ctx context.Context, cfg ControlPlaneConfig) (*ControlPlane, error) {
	kcs := map[string]string{}
	for _, u := range s.users {
		kcs[u.Name] = s.kubeconfigPath(u.Name)
	}
	comps, err := controlPlane(s.cfg, kcs, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 2 * time.Minute
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	cp := &ControlPlane{Components: comps, grace: cfg.StopGrace}
	for _, c := range comps {
		p, err := startComponent(c, cfg.Detach)
		if err != nil {
			_ = cp.Stop(context.Background())
			return nil, err
		}
		cp.mu.Lock()
		cp.procs = append(cp.procs, p)
		cp.mu.Unlock()
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	for i, c := range comps {
		err := waitComponent(wctx, c, cp.procs[i])
		if err != nil {
			_ = cp.Stop(context.Background())
			return nil, err
		}
	}
	return cp, nil
}

func startComponent(c Component, detach bool) (*process, error) {
	f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	st, _ := f.Stat()
	fmt.Fprintf(f, "--- tortie %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(c.Argv, " "))
	cmd := exec.Command(c.Argv[0], c.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := startOnSpawnThread(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", c.Name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), logStart: st.Size()}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// waitComponent waits for c's /healthz, or its end.
func waitComponent(ctx context.Context, c Component, p *process) error {
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-hctx.Done():
		}
	}()
	err := WaitHealthy(hctx, c.HealthzURL)
	if err == nil {
		return nil
	}
	tail := logTailOf(c.LogFile, p, 30)
	select {
	case <-p.done:
		return fmt.Errorf("%s exited before it was healthy (%v); end of %s:\n%s", c.Name, p.err, c.LogFile, tail)
	default:
	}
	return fmt.Errorf("%s: %w; end of %s:\n%s", c.Name, err, c.LogFile, tail)
}

// logTailOf is the last n lines of a log since p started.
func logTailOf(path string, p *process, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if p.logStart <= int64(len(b)) {
		b = b[p.logStart:]
	}
	return lastLines(string(b), n)
}

// PIDs are the components' process IDs (0 for one that has ended).
func (cp *ControlPlane) PIDs() []int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var pids []int
	for _, p := range cp.procs {
		select {
		case <-p.done:
			pids = append(pids, 0)
		default:
			pids = append(pids, p.cmd.Process.Pid)
		}
	}
	return pids
}

// Stop ends both: SIGTERM, then SIGKILL after the grace or when ctx is
// done; it returns once they are reaped.
func (cp *ControlPlane) Stop(ctx context.Context) error {
	cp.mu.Lock()
	procs := cp.procs
	cp.procs = nil
	cp.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(cp.grace)
			defer t.Stop()
			select {
			case <-p.done:
				return
			case <-t.C:
			case <-ctx.Done():
			}
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}()
	}
	wg.Wait()
	return nil
}
