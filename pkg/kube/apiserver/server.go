package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

const (
	logFile      = "kube-apiserver.log"
	kubeconfigs  = "kubeconfig"
	portAttempts = 5
	// ServiceAccountIssuer is the issuer of service-account tokens (and
	// their default audience).
	ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
)

// Server is a running kube-apiserver started by Start.
type Server struct {
	cfg   Config // defaulted; Port is the one in use
	users []User // admin first
	caPEM []byte
	url   string // for clients
	probe string // for the readiness probe, always local
	argv  []string
	mu    sync.Mutex
	proc  *process // nil when stopped
}

// process is one run of the binary.
type process struct {
	cmd      *exec.Cmd
	done     chan struct{} // closed once reaped
	err      error         // Wait's, once done
	logStart int64         // where this run's output starts in the log
}

// Start runs kube-apiserver as cfg says and returns once it is ready
// (/readyz answers 200). ctx bounds the start only; the server runs until
// Stop. On failure nothing is left running and the error quotes the end of
// the server's log.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	s, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	pick := s.cfg.Port == 0
	for attempt := 1; ; attempt++ {
		if err := s.setPort(pick); err != nil {
			return nil, err
		}
		err = s.run(ctx)
		if err == nil {
			return s, nil
		}
		// A port found free can be taken before the server binds it.
		if !pick || attempt == portAttempts || !errors.Is(err, errPortInUse) {
			return nil, err
		}
	}
}

// prepare checks cfg and writes the PKI and tokens.
func prepare(cfg Config) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kube-apiserver config: %w", err)
	}
	if err := checkBinary(cfg.Binary); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if err := os.MkdirAll(filepath.Join(dir, kubeconfigs), 0o700); err != nil {
		return nil, err
	}
	sips, _ := serviceIPs(cfg.ServiceCIDR) // validated
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP(cfg.AdvertiseAddress)}
	if bind := net.ParseIP(cfg.BindAddress); !bind.IsUnspecified() {
		ips = append(ips, bind)
	} else if bind.To4() == nil {
		ips = append(ips, net.IPv6loopback)
	}
	for _, ip := range sips {
		ips = append(ips, ip.AsSlice())
	}
	if err := ensurePKI(dir, ips); err != nil {
		return nil, fmt.Errorf("kube-apiserver PKI in %s: %w", dir, err)
	}
	users, err := ensureTokens(dir, cfg.Users)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver tokens in %s: %w", dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, users: users, caPEM: caPEM}, nil
}

// setPort picks a free port if pick, then fixes the URLs, command line
// and kubeconfigs for the port.
func (s *Server) setPort(pick bool) error {
	if pick {
		port, err := freePort(s.cfg.BindAddress)
		if err != nil {
			return err
		}
		s.cfg.Port = port
	}
	s.setAddresses()
	return s.writeKubeconfigs()
}

func checkBinary(path string) error {
	if path == filepath.Join(binDirPath(), "kube-apiserver") {
		_, err := Binary("kube-apiserver")
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("kube-apiserver binary: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("kube-apiserver binary %s: not an executable file", path)
	}
	return nil
}

func freePort(bind string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(bind, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", bind, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// setAddresses fixes the URLs and command line for s.cfg.Port.
func (s *Server) setAddresses() {
	port := strconv.Itoa(s.cfg.Port)
	host := s.cfg.BindAddress
	probe := host
	if ip := net.ParseIP(host); ip.IsUnspecified() {
		host = s.cfg.AdvertiseAddress
		probe = "127.0.0.1"
		if ip.To4() == nil {
			probe = "::1"
		}
	}
	s.url = "https://" + net.JoinHostPort(host, port)
	s.probe = "https://" + net.JoinHostPort(probe, port)
	s.argv = s.args()
}

// args is the kube-apiserver command line.
func (s *Server) args() []string {
	c := s.cfg
	p := func(f string) string { return filepath.Join(c.Dir, f) }
	a := []string{
		c.Binary,
		"--bind-address=" + c.BindAddress,
		"--secure-port=" + strconv.Itoa(c.Port),
		"--advertise-address=" + c.AdvertiseAddress,
		"--cert-dir=" + p(pkiDir),
		"--tls-cert-file=" + p(serveCertFile),
		"--tls-private-key-file=" + p(serveKeyFile),
		"--client-ca-file=" + p(caCertFile),
		"--token-auth-file=" + p(tokensFile),
		"--authorization-mode=Node,RBAC",
		// The defaults plus NodeRestriction, which Node authorization
		// presumes.
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + p(saPubFile),
		"--service-account-signing-key-file=" + p(saKeyFile),
		"--etcd-servers=" + strings.Join(c.EtcdServers, ","),
		"--etcd-prefix=" + c.EtcdPrefix,
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--profiling=false",
		"--v=1",
	}
	if net.ParseIP(c.AdvertiseAddress).IsLoopback() {
		// The kubernetes Service cannot have a loopback endpoint: nothing
		// keeps its endpoints (nothing off this machine could use them).
		a = append(a, "--endpoint-reconciler-type=none")
	}
	return append(a, c.ExtraArgs...)
}

// writeKubeconfigs writes one kubeconfig per user for the current URL.
func (s *Server) writeKubeconfigs() error {
	for _, u := range s.users {
		b, err := KubeconfigYAML(s.url, s.caPEM, u.Name, u.Token)
		if err != nil {
			return err
		}
		if err := writeFile(s.kubeconfigPath(u.Name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) kubeconfigPath(user string) string {
	return filepath.Join(s.cfg.Dir, kubeconfigs, user+".kubeconfig")
}

var errPortInUse = errors.New("port in use")

// run starts the binary and waits for it to be ready; on failure the
// process is gone when it returns.
func (s *Server) run(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	logPath := filepath.Join(s.cfg.Dir, logFile)
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	fmt.Fprintf(f, "--- tortie %s: %s\n", time.Now().Format(time.RFC3339), strings.Join(s.argv, " "))
	p := &process{done: make(chan struct{}), logStart: st.Size()}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Dir = s.cfg.Dir
	cmd.Stdout, cmd.Stderr = f, f
	if s.cfg.Log != nil {
		w := io.MultiWriter(f, s.cfg.Log)
		cmd.Stdout, cmd.Stderr = w, w
	}
	if s.cfg.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	p.cmd = cmd
	err = startOnSpawnThread(cmd)
	if err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", s.argv[0], err)
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	if err := s.waitReady(ctx, p); err != nil {
		s.kill(p, 0)
		s.mu.Lock()
		s.proc = nil
		s.mu.Unlock()
		return err
	}
	return nil
}

// waitReady polls /readyz until it answers 200, the process ends, ctx is
// done or ReadyTimeout passes.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	start := time.Now()
	readyCtx, cancelReady := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancelReady()
	// A probe in flight ends as soon as the process exits or time is up.
	probeCtx, cancel := context.WithCancel(readyCtx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-probeCtx.Done():
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		req, _ := http.NewRequestWithContext(probeCtx, http.MethodGet, s.probe+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.users[0].Token)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, lastLines(string(body), 8))
		} else if probeCtx.Err() == nil {
			last = err.Error()
		}
		select {
		case <-p.done:
			tail := s.logTail(p, 40)
			if strings.Contains(tail, "address already in use") {
				return fmt.Errorf("kube-apiserver on port %d: %w", s.cfg.Port, errPortInUse)
			}
			return fmt.Errorf("kube-apiserver exited before it was ready (%v); end of %s:\n%s", p.err, filepath.Join(s.cfg.Dir, logFile), tail)
		case <-readyCtx.Done():
			why := fmt.Sprint(ctx.Err())
			if ctx.Err() == nil {
				why = "ReadyTimeout " + s.cfg.ReadyTimeout.String()
			}
			return fmt.Errorf("kube-apiserver not ready after %s (%s; last /readyz: %s); end of %s:\n%s",
				time.Since(start).Round(time.Millisecond), why, last, filepath.Join(s.cfg.Dir, logFile), s.logTail(p, 40))
		case <-tick.C:
		}
	}
}

// logTail is the last n lines this run of the server wrote.
func (s *Server) logTail(p *process, n int) string {
	f, err := os.Open(filepath.Join(s.cfg.Dir, logFile))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	const most = 64 << 10
	off := p.logStart
	if st, err := f.Stat(); err == nil && st.Size()-off > most {
		off = st.Size() - most
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, off, most))
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kill ends p: SIGTERM, then SIGKILL after grace (at once when grace is
// 0), and waits until it is reaped.
func (s *Server) kill(p *process, grace time.Duration) {
	sig := syscall.SIGKILL
	if grace > 0 {
		sig = syscall.SIGTERM
	}
	_ = p.cmd.Process.Signal(sig)
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Stop ends the server: SIGTERM, then SIGKILL after Config.StopGrace or
// when ctx is done, whichever comes first; it returns once the process is
// reaped. Stopping a stopped server does nothing.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	grace := s.cfg.StopGrace
	if d, ok := ctx.Deadline(); ok && time.Until(d) < grace {
		grace = max(time.Until(d), time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
		case <-stopped:
		}
	}()
	s.kill(p, grace)
	close(stopped)
	return nil
}

// Restart stops the server and starts it again on the same Dir, port and
// PKI, so clients and kubeconfigs keep working; it returns once it is
// ready.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(ctx); err != nil {
		return err
	}
	return s.Start(ctx)
}

// Start starts a stopped server again (as Restart does after Stop).
func (s *Server) Start(ctx context.Context) error {
	if s.Running() {
		return errors.New("kube-apiserver: already running")
	}
	return s.run(ctx)
}

// Running reports whether the server process is up (started and not yet
// exited).
func (s *Server) Running() bool {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// PID is the server process's ID, 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// URL is the server's address for clients: https://BindAddress:Port, or
// the advertise address when bound to all addresses.
func (s *Server) URL() string { return s.url }

// Port is the secure port.
func (s *Server) Port() int { return s.cfg.Port }

// Dir is the state directory.
func (s *Server) Dir() string { return s.cfg.Dir }

// Config is the configuration in use (defaulted, with the port chosen).
func (s *Server) Config() Config { return s.cfg }

// LogFile is the file the server's output is appended to.
func (s *Server) LogFile() string { return filepath.Join(s.cfg.Dir, logFile) }

// CACertFile is the PEM file of the CA that signed the serving
// certificate (also the client CA).
func (s *Server) CACertFile() string { return filepath.Join(s.cfg.Dir, caCertFile) }

// CACert is the CA certificate, PEM.
func (s *Server) CACert() []byte { return append([]byte(nil), s.caPEM...) }

// CAKeyFile is the CA's private key, for whoever must issue client or
// kubelet certificates.
func (s *Server) CAKeyFile() string { return filepath.Join(s.cfg.Dir, caKeyFile) }

// ServiceAccountKeyFile is the service-account signing key (for a
// kube-controller-manager's --service-account-private-key-file).
func (s *Server) ServiceAccountKeyFile() string { return filepath.Join(s.cfg.Dir, saKeyFile) }

// Users are the users with static tokens, admin first.
func (s *Server) Users() []User {
	out := make([]User, len(s.users))
	for i, u := range s.users {
		u.Groups = append([]string(nil), u.Groups...)
		out[i] = u
	}
	return out
}

// AdminKubeconfig is the path of the admin's kubeconfig file.
func (s *Server) AdminKubeconfig() string { return s.kubeconfigPath(AdminUser) }

// Kubeconfig is the path of user's kubeconfig file (a user of
// Config.Users, or AdminUser).
func (s *Server) Kubeconfig(user string) (string, error) {
	for _, u := range s.users {
		if u.Name == user {
			return s.kubeconfigPath(user), nil
		}
	}
	return "", fmt.Errorf("kube-apiserver: no user %q with a token (give it in Config.Users)", user)
}

// RESTConfig is a client configuration for the admin (system:masters),
// a new copy each call. Client-side rate limits are high: tests make many
// requests.
func (s *Server) RESTConfig() *rest.Config {
	return s.restConfig(s.users[0].Token)
}

// UserConfig is a client configuration authenticating as user with its
// own token.
func (s *Server) UserConfig(user string) (*rest.Config, error) {
	for _, u := range s.users {
		if u.Name == user {
			return s.restConfig(u.Token), nil
		}
	}
	return nil, fmt.Errorf("kube-apiserver: no user %q with a token (give it in Config.Users)", user)
}

func (s *Server) restConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            s.url,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.CACert()},
		QPS:             200,
		Burst:           400,
		Timeout:         time.Minute,
	}
}

// ImpersonatingConfig is the admin's configuration acting as user in
// groups: requests are authorized exactly as user's own would be. An
// impersonated user other than system:anonymous is in
// system:authenticated whether or not groups says so.
func (s *Server) ImpersonatingConfig(user string, groups ...string) *rest.Config {
	c := s.RESTConfig()
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append([]string(nil), groups...)}
	return c
}

// ServiceAccountConfig is ImpersonatingConfig for ServiceAccount
// namespace/name: the user and groups its tokens carry.
func (s *Server) ServiceAccountConfig(namespace, name string) *rest.Config {
	user, groups := ServiceAccountUser(namespace, name)
	return s.ImpersonatingConfig(user, groups...)
}

// ServiceAccountUser is the user name and groups of ServiceAccount
// namespace/name.
func ServiceAccountUser(namespace, name string) (string, []string) {
	return "system:serviceaccount:" + namespace + ":" + name,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}
