package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tortie/tortie/pkg/images"
	"github.com/tortie/tortie/pkg/kube/apiserver"
)

// Defaults.
const (
	DefaultKubeletPort = 10250
	DefaultHealthzPort = 10248
	DefaultMaxPods     = 50
	DefaultStopGrace   = 10 * time.Second
)

// Config says how to run one node.
type Config struct {
	// Name is the Kubernetes Node's name; required.
	Name string
	// Dir holds everything of the node (configs, containerd's root and
	// state, kubelet's root, logs, the pinned mount namespace); required,
	// made if missing. Down leaves it (logs), without mounts.
	Dir string
	// Netns is the network namespace the node runs in: a name under
	// /run/netns (as `ip netns add` makes) or an absolute path; required.
	Netns string
	// NodeIP is the node's address in Netns (kubelet --node-ip, the
	// address its API listens on); required.
	NodeIP string
	// Kubeconfig is kubelet's kubeconfig (the token of user
	// system:node:<Name> in group system:nodes); its server must be
	// reachable from Netns (not 127.0.0.1). Required.
	Kubeconfig string
	// KubeProxyKubeconfig, when set, runs an nftables kube-proxy in the
	// node with it (user system:kube-proxy; not a loopback server).
	KubeProxyKubeconfig string
	// ClusterCIDR is kube-proxy's --cluster-cidr (optional).
	ClusterCIDR string
	// CgroupRoot is kubelet's cgroupRoot, made in every cgroup v1
	// hierarchy (default /tortie-<Name>); unique per node.
	CgroupRoot string
	// KubeletPort and HealthzPort (defaults 10250 and 10248: a node of
	// its own network namespace can keep them).
	KubeletPort, HealthzPort int
	// MaxPods (default 50).
	MaxPods int
	// NodeLabels are kubelet's --node-labels (key=value).
	NodeLabels []string
	// CNIPlugins are CNI plugin binaries copied into the node's
	// /opt/cni/bin at Setup (containerd needs "loopback" there).
	CNIPlugins []string
	// CNIConfig, when set, is written to the node's /etc/cni/net.d as
	// 10-tortie.conflist at Setup; else whatever installs a CNI writes
	// there (SetCNIConfig, or a DaemonSet's hostPath).
	CNIConfig []byte
	// SandboxImage is containerd's sandbox_image (default images.PauseRef).
	SandboxImage string
	// Containerd, Ctr, Runc, Kubelet, KubeProxy, Nsenter are the binaries
	// (defaults: PATH, and apiserver.Binary for kubelet and kube-proxy).
	Containerd, Ctr, Runc, Kubelet, KubeProxy, Nsenter string
	// StopGrace is the wait between SIGTERM and SIGKILL in Down (default
	// 10 s).
	StopGrace time.Duration
}

// Defaults fills in what is not set; binaries are looked up.
func (c *Config) Defaults() {
	if c.CgroupRoot == "" && c.Name != "" {
		c.CgroupRoot = "/tortie-" + c.Name
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = DefaultKubeletPort
	}
	if c.HealthzPort == 0 {
		c.HealthzPort = DefaultHealthzPort
	}
	if c.MaxPods == 0 {
		c.MaxPods = DefaultMaxPods
	}
	if c.SandboxImage == "" {
		c.SandboxImage = images.PauseRef
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	look := func(p *string, name string) {
		if *p == "" {
			if f, err := exec.LookPath(name); err == nil {
				*p = f
			} else {
				*p = name
			}
		}
	}
	look(&c.Containerd, "containerd")
	look(&c.Ctr, "ctr")
	look(&c.Runc, "runc")
	look(&c.Nsenter, "nsenter")
	if c.Kubelet == "" {
		c.Kubelet, _ = apiserver.Binary("kubelet")
	}
	if c.KubeProxy == "" && c.KubeProxyKubeconfig != "" {
		c.KubeProxy, _ = apiserver.Binary("kube-proxy")
	}
	if c.Netns != "" && !filepath.IsAbs(c.Netns) {
		c.Netns = filepath.Join("/run/netns", c.Netns)
	}
	if c.Dir != "" {
		if d, err := filepath.Abs(c.Dir); err == nil {
			c.Dir = d
		}
	}
}

// Validate checks a defaulted Config.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Name == "" || strings.ContainsAny(c.Name, "/ \t\n,") {
		bad("Name: %q: required, without slashes, commas or spaces", c.Name)
	}
	if c.Dir == "" {
		bad("Dir: required")
	}
	if c.Netns == "" {
		bad("Netns: required")
	} else if _, err := os.Stat(c.Netns); err != nil {
		bad("Netns: %v", err)
	}
	if ip := net.ParseIP(c.NodeIP); ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
		bad("NodeIP: %q: required, an address of the node's namespace", c.NodeIP)
	}
	if c.Kubeconfig == "" {
		bad("Kubeconfig: required")
	}
	if !strings.HasPrefix(c.CgroupRoot, "/") || strings.Count(c.CgroupRoot, "/") != 1 || strings.Contains(c.CgroupRoot, "..") {
		bad("CgroupRoot: %q: want /NAME, one level under the hierarchies' roots", c.CgroupRoot)
	}
	for _, p := range []int{c.KubeletPort, c.HealthzPort} {
		if p <= 0 || p > 65535 {
			bad("ports: %d out of range", p)
		}
	}
	for _, b := range []struct{ name, path string }{{"Containerd", c.Containerd}, {"Ctr", c.Ctr}, {"Runc", c.Runc}, {"Nsenter", c.Nsenter}, {"Kubelet", c.Kubelet}} {
		if _, err := exec.LookPath(b.path); err != nil {
			bad("%s: %v", b.name, err)
		}
	}
	if c.KubeProxyKubeconfig != "" {
		if _, err := exec.LookPath(c.KubeProxy); err != nil {
			bad("KubeProxy: %v", err)
		}
	}
	for _, p := range c.CNIPlugins {
		if _, err := os.Stat(p); err != nil {
			bad("CNIPlugins: %v", err)
		}
	}
	return errors.Join(errs...)
}
