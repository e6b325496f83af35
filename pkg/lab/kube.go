package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
	"github.com/tortie/tortie/pkg/kube/apiserver"
)

// A lab with Options.KubeAPI (`tortie lab up --kube-api`) is a Calico
// cluster in etcd mode on a real Kubernetes API: a kube-apiserver whose
// storage is the lab's own etcd (under /registry), a Kubernetes Node per
// host, tortie-kube-controllers turning namespaces, service accounts,
// network policies and pod labels into Calico resources, and every
// workload a Pod that the CNI plugin reads (policy type k8s). There is no
// kubelet or scheduler: the lab plays the kubelet's part (it creates the
// pod already bound to its host's node, calls the CNI plugin, and deletes
// the pod at once), and the part of kube-controller-manager's service
// account controller that pods need (a namespace's "default" account).

// Process roles of a Kubernetes lab.
const (
	roleKubeAPIServer   = "kube-apiserver"
	roleKubeControllers = "kube-controllers"
)

// KubeState is the lab's Kubernetes API.
type KubeState struct {
	// Server is the API's URL, on the root namespace's lab address, which
	// every host namespace reaches.
	Server string `json:"server"`
	Port   int    `json:"port"`
	// Dir holds the API server's PKI, token file and kubeconfigs.
	Dir string `json:"dir"`
	// Kubeconfig is the admin's (system:masters), for kubectl and the
	// lab's own requests; the controllers and the CNI plugin use it too.
	Kubeconfig string `json:"kubeconfig"`
	// ControllersHealth is where tortie-kube-controllers answers
	// /readiness (host:port on the root namespace's lab address).
	ControllersHealth string `json:"controllersHealth,omitempty"`
	// Nodes are a --kubernetes lab's nodes, recorded before they start.
	Nodes []KubeNode `json:"nodes,omitempty"`
}

// KubeconfigFile is where a Kubernetes lab keeps its admin kubeconfig.
func KubeconfigFile(lab string) string { return filepath.Join(Dir(lab), "kubeconfig") }

func kubeDir(lab string) string { return filepath.Join(Dir(lab), "kube") }

// resolveKube finds the Kubernetes binaries: kube-apiserver and kubectl in
// the cache scripts/build-kubernetes.sh fills (apiserver.Binary), given or
// found as the other binaries are; tortie-kube-controllers beside tortie,
// else on PATH.
func (b *Binaries) resolveKube() error {
	for _, f := range []struct {
		p    *string
		name string
	}{{&b.KubeAPIServer, "kube-apiserver"}, {&b.Kubectl, "kubectl"}} {
		if *f.p != "" {
			if !isExec(*f.p) {
				return fmt.Errorf("%s: not an executable", *f.p)
			}
			continue
		}
		p, err := apiserver.Binary(f.name)
		if err != nil {
			return fmt.Errorf("--kube-api: %w", err)
		}
		*f.p = p
	}
	if b.KubeControllers == "" {
		if c := filepath.Join(filepath.Dir(b.Tortie), "tortie-kube-controllers"); isExec(c) {
			b.KubeControllers = c
		} else if found, err := exec.LookPath("tortie-kube-controllers"); err == nil {
			b.KubeControllers, _ = filepath.Abs(found)
		} else {
			return fmt.Errorf("--kube-api: cannot find tortie-kube-controllers beside %s or on PATH (run `make build`)", b.Tortie)
		}
	}
	if !isExec(b.KubeControllers) {
		return fmt.Errorf("--kube-api: %s: not an executable", b.KubeControllers)
	}
	return nil
}

// freeTCPPort asks the kernel for a TCP port free on addr.
func freeTCPPort(addr string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startKubeAPI starts the lab's kube-apiserver as a lab process (stopped
// by Down, like the datastore; recorded as soon as it runs) on the root
// namespace's lab address, which every host reaches, with its storage in
// the lab's etcd under /registry, and waits until it is ready. Its PKI,
// tokens and kubeconfigs are under the lab's kube directory; the admin
// kubeconfig is copied to KubeconfigFile.
func (l *Lab) startKubeAPI(ctx context.Context, users []apiserver.User) (*apiserver.Prepared, error) {
	st := l.st
	addr := subnetAddr(st.Octet, 0, rootHost).String()
	timeout := st.Options.Timeout + time.Minute // a cold kube-apiserver on a busy machine is slow
	for attempt := 1; ; attempt++ {
		port, err := freeTCPPort(addr)
		if err != nil {
			return nil, err
		}
		st.Kube = &KubeState{Server: "https://" + net.JoinHostPort(addr, strconv.Itoa(port)), Port: port,
			Dir: kubeDir(st.Name), Kubeconfig: KubeconfigFile(st.Name)}
		if err := l.save(); err != nil {
			return nil, err
		}
		prep, err := apiserver.Prepare(apiserver.Config{Dir: st.Kube.Dir, EtcdServers: []string{st.Endpoint},
			EtcdPrefix: "/registry", BindAddress: addr, AdvertiseAddress: addr, Port: port,
			Binary: st.Options.Bins.KubeAPIServer, Users: users})
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(prep.AdminKubeconfig)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(st.Kube.Kubeconfig, b, 0o600); err != nil {
			return nil, err
		}
		p, err := spawn(ctx, roleKubeAPIServer, "apiserver", "", prep.LogFile, nil, prep.Argv...)
		if err != nil {
			return nil, err
		}
		st.Procs = append(st.Procs, p)
		if err := l.save(); err != nil {
			return nil, err
		}
		err = l.waitKubeReady(ctx, p, timeout)
		var ee *exitedError
		if errors.As(err, &ee) && strings.Contains(ee.msg, "address already in use") && attempt < 3 {
			// The free port was taken before the server bound it.
			l.dropProc(p)
			continue
		}
		if err != nil {
			return nil, err
		}
		l.logf("kube-apiserver: %s (pid %d); KUBECONFIG=%s", st.Kube.Server, p.PID, st.Kube.Kubeconfig)
		return prep, nil
	}
}

// waitKubeReady polls the API server's /readyz until it answers 200.
func (l *Lab) waitKubeReady(ctx context.Context, p Proc, timeout time.Duration) error {
	kc, err := l.kube()
	if err != nil {
		return err
	}
	defer kc.close()
	deadline := time.Now().Add(timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := kc.ready(rctx)
		cancel()
		if err == nil {
			return nil
		}
		if !p.alive() {
			return exited(p)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready at %s within %v: %v%s", l.st.Kube.Server, timeout, err, logTail(p))
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return interrupted(ctx)
		}
	}
}

// dropProc forgets a process that has ended.
func (l *Lab) dropProc(p Proc) {
	procs := l.st.Procs[:0]
	for _, q := range l.st.Procs {
		if q.PID != p.PID || q.Role != p.Role {
			procs = append(procs, q)
		}
	}
	l.st.Procs = procs
	_ = l.save()
}

// kube opens the lab's Kubernetes API.
func (l *Lab) kube() (*kubeClient, error) {
	if l.st.Kube == nil {
		return nil, fmt.Errorf("lab %s has no Kubernetes API (up it with --kube-api)", l.st.Name)
	}
	return newKubeClient(l.st.Kube.Kubeconfig)
}

// createKubeNodes makes a Kubernetes Node per host, named as the host's
// Calico Node, as its kubelet would register it.
func (l *Lab) createKubeNodes(ctx context.Context) error {
	kc, err := l.kube()
	if err != nil {
		return err
	}
	defer kc.close()
	for _, h := range l.st.Hosts {
		n := &corev1.Node{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
			ObjectMeta: metav1.ObjectMeta{Name: h.Node, Labels: map[string]string{
				"kubernetes.io/hostname": h.Node, "kubernetes.io/os": "linux", "tortie.dev/lab-host": h.Name}},
		}
		if err := kc.create(ctx, "/api/v1/nodes", n, true); err != nil {
			return err
		}
	}
	return nil
}

// startKubeControllers runs tortie-kube-controllers against the lab's
// etcd and Kubernetes API (all its controllers, or those enabled names:
// ENABLED_CONTROLLERS), and waits until it is ready and has written the
// profile of the "default" namespace: it is watching.
func (l *Lab) startKubeControllers(ctx context.Context, enabled string) error {
	st := l.st
	logPath := filepath.Join(Dir(st.Name), "kube-controllers.log")
	// Its health on the lab's own root address (its default is the root
	// namespace's loopback, which other labs and the machine share).
	addr := subnetAddr(st.Octet, 0, rootHost).String()
	port, err := freeTCPPort(addr)
	if err != nil {
		return err
	}
	st.Kube.ControllersHealth = net.JoinHostPort(addr, strconv.Itoa(port))
	env := []string{"ETCD_ENDPOINTS=" + st.Endpoint, "DATASTORE_TYPE=etcdv3", "LOG_LEVEL=info"}
	if enabled != "" {
		env = append(env, "ENABLED_CONTROLLERS="+enabled)
	}
	// One replica: no leader Lease to wait for.
	p, err := spawn(ctx, roleKubeControllers, "controllers", "", logPath, env,
		st.Options.Bins.KubeControllers, "--kubeconfig", st.Kube.Kubeconfig, "--leader-elect=false",
		"--health-addr", st.Kube.ControllersHealth)
	if err != nil {
		return err
	}
	st.Procs = append(st.Procs, p)
	if err := l.save(); err != nil {
		return err
	}
	// Options.Timeout is not kept in the state: a restart has the default.
	timeout := st.Options.Timeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for !l.controllersReady(ctx) {
		if !p.alive() {
			return exited(p)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tortie-kube-controllers not ready within %v%s", timeout, logTail(p))
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return interrupted(ctx)
		}
	}
	return l.waitProfiles(ctx, timeout, k8s.NamespaceProfileName("default"))
}

// controllersReady asks the controllers' /readiness.
func (l *Lab) controllersReady(ctx context.Context) bool {
	if l.st.Kube == nil || l.st.Kube.ControllersHealth == "" {
		return false
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.st.Kube.ControllersHealth+"/readiness", nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// RestartKubeControllers stops tortie-kube-controllers and starts it again
// with only the enabled controllers (ENABLED_CONTROLLERS, comma
// separated; "" for all), and waits until it is ready. A benchmark turns
// the workloadendpoint controller off to write endpoint labels itself
// (the controller puts the pod's back).
func (l *Lab) RestartKubeControllers(ctx context.Context, enabled string) error {
	unlock, err := lockLab(ctx, l.st.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := l.reload(); err != nil {
		return err
	}
	if l.st.Kube == nil {
		return fmt.Errorf("lab %s has no Kubernetes API (up it with --kube-api)", l.st.Name)
	}
	for _, p := range l.st.Procs {
		if p.Role == roleKubeControllers {
			p.stop(ctx, 5*time.Second)
			l.dropProc(p)
		}
	}
	return l.startKubeControllers(ctx, enabled)
}

// waitProfiles waits until every named profile exists: the controllers
// write them.
func (l *Lab) waitProfiles(ctx context.Context, timeout time.Duration, names ...string) error {
	c, done, err := l.connect()
	if err != nil {
		return err
	}
	defer done()
	k, _ := v3.KindByKind(v3.KindProfile)
	deadline := time.Now().Add(timeout)
	for _, name := range names {
		for {
			_, err := c.Get(ctx, k, "", name)
			if err == nil {
				break
			}
			if !errors.Is(err, datastore.ErrNotFound) {
				if ctx.Err() != nil {
					return fmt.Errorf("waiting for profile %s: %w", name, interrupted(ctx))
				}
				return err
			}
			for _, p := range l.st.Procs {
				if p.Role == roleKubeControllers && !p.alive() {
					return exited(p)
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("profile %s not written by tortie-kube-controllers within %v (its log: %s)", name, timeout, filepath.Join(Dir(l.st.Name), "kube-controllers.log"))
			}
			if !sleep(ctx, 50*time.Millisecond) {
				return fmt.Errorf("waiting for profile %s: %w", name, interrupted(ctx))
			}
		}
	}
	return nil
}

// ensureKubeNamespace creates a Kubernetes namespace unless it exists, and
// its "default" ServiceAccount, which kube-controller-manager would make
// (the API server refuses a pod whose account does not exist).
func (l *Lab) ensureKubeNamespace(ctx context.Context, kc *kubeClient, ns string) error {
	err := kc.do(ctx, http.MethodGet, "/api/v1/namespaces/"+ns, nil, nil)
	if kubeCode(err) == http.StatusNotFound {
		err = kc.create(ctx, "/api/v1/namespaces", &corev1.Namespace{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: ns}}, true)
	}
	if err != nil {
		return err
	}
	return kc.create(ctx, "/api/v1/namespaces/"+ns+"/serviceaccounts", &corev1.ServiceAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}, true)
}

// PortName is the name of a workload's container port in its pod: what
// Kubernetes' network policy tests call theirs ("serve-80-tcp"), so that a
// policy can name it.
func PortName(port int, proto string) string {
	return fmt.Sprintf("serve-%d-%s", port, strings.ToLower(proto))
}

// workloadPod is the Pod of a workload: bound to its host's node, with its
// labels, and one container whose ports are the workload's --listen ports,
// named by PortName.
func workloadPod(w *Workload, node string) *corev1.Pod {
	c := corev1.Container{Name: "serve", Image: "tortie.invalid/lab-serve",
		Command: []string{"tortie", "lab", "serve", "--listen", strings.Join(w.Listen, ",")}}
	for _, it := range w.Listen {
		proto, port, _ := strings.Cut(it, ":")
		n, _ := strconv.Atoi(port)
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: PortName(n, proto), ContainerPort: int32(n),
			Protocol: corev1.Protocol(strings.ToUpper(proto))})
	}
	no := false
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: w.Namespace, Labels: w.Labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{c},
			AutomountServiceAccountToken: &no},
	}
}

func podPath(w *Workload) string {
	return "/api/v1/namespaces/" + w.Namespace + "/pods/" + url.PathEscape(w.Name)
}

// createPod makes the workload's namespace (if missing) and pod. The pod
// is recorded before it is made.
func (l *Lab) createPod(ctx context.Context, h *Host, w *Workload) error {
	kc, err := l.kube()
	if err != nil {
		return err
	}
	defer kc.close()
	if err := l.ensureKubeNamespace(ctx, kc, w.Namespace); err != nil {
		return err
	}
	w.Pod = true
	if err := l.save(); err != nil {
		return err
	}
	return kc.create(ctx, "/api/v1/namespaces/"+w.Namespace+"/pods", workloadPod(w, h.Node), false)
}

// deletePod deletes the workload's pod at once (grace period 0: no kubelet
// is there to confirm a graceful end).
func (l *Lab) deletePod(ctx context.Context, w *Workload) error {
	if !w.Pod {
		return nil
	}
	kc, err := l.kube()
	if err != nil {
		return err
	}
	defer kc.close()
	zero := int64(0)
	err = kc.do(ctx, http.MethodDelete, podPath(w), &metav1.DeleteOptions{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "DeleteOptions"}, GracePeriodSeconds: &zero}, nil)
	if kubeCode(err) == http.StatusNotFound {
		err = nil
	}
	if err == nil {
		w.Pod = false
	}
	return err
}

// Kubeconfig is the lab's admin kubeconfig ("" without --kube-api).
func (l *Lab) Kubeconfig() string {
	if l.st.Kube == nil {
		return ""
	}
	return l.st.Kube.Kubeconfig
}

// Kubectl is the kubectl the lab uses ("" without --kube-api).
func (l *Lab) Kubectl() string {
	if l.st.Kube == nil {
		return ""
	}
	return l.st.Options.Bins.Kubectl
}

// KubectlCommand is kubectl ARGS with the lab's kubeconfig.
func (l *Lab) KubectlCommand(ctx context.Context, args ...string) (*exec.Cmd, error) {
	if l.st.Kube == nil {
		return nil, fmt.Errorf("lab %s has no Kubernetes API (up it with --kube-api)", l.st.Name)
	}
	kubectl := l.st.Options.Bins.Kubectl
	if !isExec(kubectl) {
		return nil, fmt.Errorf("kubectl %s: not found", kubectl)
	}
	cmd := exec.CommandContext(ctx, kubectl, args...)
	// Its discovery cache goes with the lab, not to ~/.kube/cache.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+l.st.Kube.Kubeconfig, "KUBECACHEDIR="+filepath.Join(l.st.Kube.Dir, "kubectl-cache"))
	return cmd, nil
}

// KubeStatus is the Kubernetes part of a lab's status.
type KubeStatus struct {
	Server           string `json:"server"`
	Kubeconfig       string `json:"kubeconfig"`
	APIServerAlive   bool   `json:"apiServerAlive"`
	Ready            bool   `json:"ready"`
	ControllersAlive bool   `json:"controllersAlive"`
	ControllersReady bool   `json:"controllersReady"`
	// Cluster: a --kubernetes lab (its controllers are a pod).
	Cluster bool   `json:"cluster,omitempty"`
	Error   string `json:"error,omitempty"`
}

func (l *Lab) kubeStatus(ctx context.Context) *KubeStatus {
	if l.st.Kube == nil {
		return nil
	}
	ks := &KubeStatus{Server: l.st.Kube.Server, Kubeconfig: l.st.Kube.Kubeconfig, Cluster: l.st.Options.Kubernetes}
	for _, p := range l.st.Procs {
		switch p.Role {
		case roleKubeAPIServer:
			ks.APIServerAlive = p.alive()
		case roleKubeControllers:
			ks.ControllersAlive = p.alive()
		}
	}
	ks.ControllersReady = ks.ControllersAlive && l.controllersReady(ctx)
	if ks.APIServerAlive {
		kc, err := l.kube()
		if err == nil {
			defer kc.close()
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			err = kc.ready(rctx)
		}
		ks.Ready = err == nil
		if err != nil {
			ks.Error = err.Error()
		}
	}
	return ks
}

// buildKube is Up's Kubernetes part, after the datastore: the API server,
// a Node per host, the controllers.
func (l *Lab) buildKube(ctx context.Context) error {
	l.step("starting the Kubernetes API server")
	if _, err := l.startKubeAPI(ctx, nil); err != nil {
		return err
	}
	l.step(fmt.Sprintf("creating %d Kubernetes nodes", len(l.st.Hosts)))
	if err := l.createKubeNodes(ctx); err != nil {
		return err
	}
	l.step("starting tortie-kube-controllers")
	return l.startKubeControllers(ctx, "")
}
