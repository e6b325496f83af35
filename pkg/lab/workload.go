package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tortie/tortie/pkg/apis/k8s"
	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/datastore"
)

// WorkloadSpec says what workload to add.
type WorkloadSpec struct {
	Name      string
	Host      string
	Namespace string            // Kubernetes namespace (default "default")
	Labels    map[string]string // pod labels
	// Listen are the ports the built-in server answers: "tcp:80", "udp:53".
	Listen []string
	// IP, when set, are the addresses (comma-separated, at most one per
	// family) the CNI plugin is asked for (CNI_ARGS IP), as when an
	// address moves here from another workload or host.
	IP string
}

// DefaultListen is what a workload answers when not told.
var DefaultListen = []string{"tcp:80", "tcp:81", "udp:80", "udp:81"}

// ParseListen checks "proto:port" items.
func ParseListen(items []string) ([]string, error) {
	var out []string
	for _, it := range items {
		it = strings.ToLower(strings.TrimSpace(it))
		if it == "" {
			continue
		}
		proto, port, ok := strings.Cut(it, ":")
		n, err := strconv.Atoi(port)
		if !ok || (proto != "tcp" && proto != "udp") || err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("listen %q: want tcp:PORT or udp:PORT", it)
		}
		out = append(out, proto+":"+strconv.Itoa(n))
	}
	return out, nil
}

// Workloads returns the lab's workloads.
func (l *Lab) Workloads() []*Workload { return l.st.Workloads }

// Workload finds a workload by NAMESPACE/NAME, or by NAME when only one
// has it.
func (l *Lab) Workload(id string) (*Workload, error) {
	ns, name, hasNS := strings.Cut(id, "/")
	var found []*Workload
	for _, w := range l.st.Workloads {
		if hasNS && w.Namespace == ns && w.Name == name || !hasNS && w.Name == id {
			found = append(found, w)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("lab %s has no workload %q (see `tortie lab workload list`)", l.st.Name, id)
	}
	return nil, fmt.Errorf("workload name %q is ambiguous: say NAMESPACE/%s", id, id)
}

// AddWorkload creates a workload namespace on a host, puts it on the
// network through the real CNI plugin (ADD, run in the host's namespace)
// and starts the built-in server in it. Failed or interrupted (ctx ends),
// it removes what it made of the workload, as DelWorkload does, before it
// returns.
func (l *Lab) AddWorkload(ctx context.Context, spec WorkloadSpec) (*Workload, error) {
	unlock, err := lockLab(ctx, l.st.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := l.reload(); err != nil {
		return nil, err
	}
	if l.st.Options.Kubernetes {
		return nil, fmt.Errorf("lab %s is a Kubernetes cluster: its workloads are pods (`tortie lab kubectl --name %s run ...`, or a Deployment)", l.st.Name, l.st.Name)
	}
	if spec.Namespace == "" {
		spec.Namespace = "default"
	}
	if err := ValidName(spec.Name); err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	if err := ValidName(spec.Namespace); err != nil {
		return nil, fmt.Errorf("workload namespace: %w", err)
	}
	listen := spec.Listen
	if listen == nil {
		listen = DefaultListen
	}
	if listen, err = ParseListen(listen); err != nil {
		return nil, err
	}
	h, err := l.host(spec.Host)
	if err != nil {
		return nil, err
	}
	if spec.IP != "" {
		for _, a := range strings.Split(spec.IP, ",") {
			if _, err := netip.ParseAddr(strings.TrimSpace(a)); err != nil {
				return nil, fmt.Errorf("workload %s: --ip %q: %q is not an IP address", spec.Name, spec.IP, strings.TrimSpace(a))
			}
		}
	}
	for _, w := range l.st.Workloads {
		if w.Namespace == spec.Namespace && w.Name == spec.Name {
			return nil, fmt.Errorf("workload %s exists already (on %s)", w.ID(), w.Host)
		}
	}
	kube := l.st.Kube != nil
	if !kube {
		if err := l.ensureNamespaceProfile(ctx, spec.Namespace); err != nil {
			return nil, err
		}
	}
	w := &Workload{Name: spec.Name, Namespace: spec.Namespace, Host: h.Name,
		Netns: workloadNetns(l.st.Name, spec.Namespace, spec.Name), ContainerID: cniContainerID(l.st.Name, spec.Namespace, spec.Name),
		Labels: spec.Labels, Listen: listen, RequestedIP: spec.IP}
	l.st.Workloads = append(l.st.Workloads, w)
	fail := func(err error) (*Workload, error) {
		if rerr := l.removeWorkload(context.WithoutCancel(ctx), w); rerr != nil {
			err = fmt.Errorf("%w (and removing what was made of it: %v)", err, rerr)
		}
		return nil, err
	}
	if err := l.addNetns(ctx, w.Netns); err != nil {
		if slices.Contains(l.st.Netns, w.Netns) {
			return fail(err) // made, or maybe made (interrupted)
		}
		l.dropWorkload(w) // not made; perhaps not ours to touch
		return nil, err
	}
	if kube {
		// The pod first: the CNI plugin reads it.
		if err := l.createPod(ctx, h, w); err != nil {
			return fail(err)
		}
	}
	out, err := l.cni(ctx, "ADD", h, w)
	if err != nil {
		return fail(err)
	}
	var res struct {
		Interfaces []struct {
			Name    string `json:"name"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fail(fmt.Errorf("CNI ADD result %q: %w", out, err))
	}
	for _, ip := range res.IPs {
		a, _, _ := strings.Cut(ip.Address, "/")
		w.IPs = append(w.IPs, a)
	}
	for _, it := range res.Interfaces {
		if it.Sandbox == "" {
			w.Interface = it.Name
		}
	}
	if len(w.IPs) == 0 {
		return fail(fmt.Errorf("CNI ADD gave %s no address", w.ID()))
	}
	if err := l.startServer(ctx, w); err != nil {
		return fail(err)
	}
	if kube {
		// tortie-kube-controllers writes the pod's profiles (for a new
		// namespace, a moment after it is made).
		if err := l.waitProfiles(ctx, time.Minute, k8s.NamespaceProfileName(w.Namespace), k8s.ServiceAccountProfileName(w.Namespace, "default")); err != nil {
			return fail(err)
		}
	}
	return w, l.save()
}

func (l *Lab) dropWorkload(w *Workload) {
	out := l.st.Workloads[:0]
	for _, x := range l.st.Workloads {
		if x != w {
			out = append(out, x)
		}
	}
	l.st.Workloads = out
	_ = l.save()
}

func (l *Lab) dropNetns(name string) {
	out := l.st.Netns[:0]
	for _, n := range l.st.Netns {
		if n != name {
			out = append(out, n)
		}
	}
	l.st.Netns = out
	_ = l.save()
}

// ensureNamespaceProfile writes kns.<ns> as Calico's controllers do for a
// Kubernetes namespace (allow all; the namespace's name as a label), unless
// it exists (applied as a Namespace, with labels, say).
func (l *Lab) ensureNamespaceProfile(ctx context.Context, ns string) error {
	c, done, err := l.connect()
	if err != nil {
		return err
	}
	defer done()
	k, _ := v3.KindByKind(v3.KindProfile)
	if _, err := c.Get(ctx, k, "", k8s.ProfileNamePrefix+ns); err == nil {
		return nil
	} else if !errors.Is(err, datastore.ErrNotFound) {
		return err
	}
	p, err := k8s.NamespaceToProfile(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if err != nil {
		return err
	}
	_, err = c.Create(ctx, p)
	if errors.Is(err, datastore.ErrAlreadyExists) {
		return nil
	}
	return err
}

// cniConf is the network config the lab hands the plugin.
func (l *Lab) cniConf(h *Host, w *Workload) []byte {
	ipamConf := map[string]any{"type": "tortie-ipam"}
	if l.st.Options.IPv6 {
		ipamConf["assign_ipv6"] = "true"
	}
	conf := map[string]any{
		"cniVersion":     "1.0.0",
		"name":           NetworkName,
		"type":           "tortie",
		"etcd_endpoints": l.st.Endpoint,
		"nodename":       h.Node,
		"mtu_file":       l.mtuFile(h),
		"log_file_path":  filepath.Join(Dir(l.st.Name), "cni.log"),
		"ipam":           ipamConf,
	}
	switch {
	case l.st.Kube != nil:
		// Calico's Kubernetes mode: the plugin reads the pod (labels,
		// service account, named ports) and writes its annotations.
		conf["kubernetes"] = map[string]any{"kubeconfig": l.st.Kube.Kubeconfig}
		conf["policy"] = map[string]any{"type": "k8s"}
	case len(w.Labels) > 0:
		conf["runtimeConfig"] = map[string]any{"labels": w.Labels}
	}
	b, _ := json.Marshal(conf)
	return b
}

// cni runs the plugin in the host's namespace, as a runtime on that host
// would.
func (l *Lab) cni(ctx context.Context, command string, h *Host, w *Workload) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.Netns, filepath.Join(Dir(l.st.Name), "cni", "tortie"))
	args := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s", w.Namespace, w.Name)
	if w.RequestedIP != "" {
		args += ";IP=" + w.RequestedIP
	}
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+w.ContainerID,
		"CNI_NETNS="+filepath.Join("/run/netns", w.Netns),
		"CNI_IFNAME=eth0",
		"CNI_PATH="+filepath.Join(Dir(l.st.Name), "cni"),
		"CNI_ARGS="+args,
	)
	cmd.Stdin = bytes.NewReader(l.cniConf(h, w))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil || signalled(err) {
			return nil, fmt.Errorf("CNI %s of %s on %s: %w", command, w.ID(), h.Name, ErrInterrupted)
		}
		return nil, fmt.Errorf("CNI %s of %s on %s: %v: %s %s", command, w.ID(), h.Name, err,
			strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// startServer runs `tortie lab serve` in the workload and waits until it
// listens.
func (l *Lab) startServer(ctx context.Context, w *Workload) error {
	logPath := filepath.Join(Dir(l.st.Name), "workloads", w.Namespace+"."+w.Name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	if len(w.Listen) == 0 {
		return nil
	}
	p, err := spawn(ctx, "server", w.ID(), w.Netns, logPath, nil, l.st.Options.Bins.Tortie, "lab", "serve", "--listen", strings.Join(w.Listen, ","))
	if err != nil {
		return err
	}
	l.st.Procs = append(l.st.Procs, p)
	if err := l.save(); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte(ServeReadyLine)) {
			return nil
		}
		if !p.alive() {
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("the server of %s exited: %s", w.ID(), b)
		}
		if !sleep(ctx, 10*time.Millisecond) {
			return fmt.Errorf("waiting for the server of %s: %w", w.ID(), interrupted(ctx))
		}
	}
	return fmt.Errorf("the server of %s did not listen within 10s", w.ID())
}

// DelWorkload stops a workload's server, runs CNI DEL and deletes its
// namespace.
func (l *Lab) DelWorkload(ctx context.Context, id string) error {
	unlock, err := lockLab(ctx, l.st.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := l.reload(); err != nil {
		return err
	}
	w, err := l.Workload(id)
	if err != nil {
		return err
	}
	return l.removeWorkload(ctx, w)
}

// removeWorkload undoes what AddWorkload made of w, whatever it got to:
// its server and anything else running in its namespace, its CNI ADD,
// its namespace (only if recorded: the lab's), its records. A namespace
// that could not be deleted stays recorded, for Down.
func (l *Lab) removeWorkload(ctx context.Context, w *Workload) error {
	procs := l.st.Procs[:0]
	for _, p := range l.st.Procs {
		if p.Role == "server" && p.Name == w.ID() {
			p.stop(ctx, 2*time.Second)
			continue
		}
		procs = append(procs, p)
	}
	l.st.Procs = procs
	for _, p := range procsInNetns([]string{w.Netns}) {
		p.stop(ctx, 2*time.Second)
	}
	var errs []error
	if h, err := l.host(w.Host); err == nil {
		if _, err := l.cni(ctx, "DEL", h, w); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.deletePod(ctx, w); err != nil {
		errs = append(errs, err)
	}
	path := filepath.Join("/run/netns", w.Netns)
	if _, err := os.Stat(path); err == nil && slices.Contains(l.st.Netns, w.Netns) {
		if err := ipn(ctx, "", "netns", "del", w.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		l.dropNetns(w.Netns)
	}
	l.dropWorkload(w)
	return errors.Join(errs...)
}

// SortedWorkloads are the workloads by namespace and name.
func (l *Lab) SortedWorkloads() []*Workload {
	out := append([]*Workload(nil), l.st.Workloads...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// Addr is a workload's first address of the family (4 or 6).
func (w *Workload) Addr(family int) (net.IP, bool) {
	for _, s := range w.IPs {
		ip := net.ParseIP(s)
		if ip != nil && (ip.To4() != nil) == (family == 4) {
			return ip, true
		}
	}
	return nil, false
}
