package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Paths inside the node's mount namespace that are bind mounts of the
// node's own directories (Plan.Binds).
const (
	CNIConfDir = "/etc/cni/net.d"
	CNIBinDir  = "/opt/cni/bin"
)

// Component is one process of the node.
type Component struct {
	// Role: containerd, kubelet or kube-proxy.
	Role string
	// Argv is the full command line: nsenter into the node's network and
	// mount namespaces, then the program. Run it from the root namespaces
	// (not through `ip netns exec`, which would make another mount
	// namespace).
	Argv []string
	// LogFile is where its output should go (Dir/log/<Role>.log).
	LogFile string
}

// Bind is a per-node directory mounted over a host path in the node's
// mount namespace.
type Bind struct {
	Source, Target string
}

// Plan is a node ready to run: its files written by Prepare, its
// processes' command lines.
type Plan struct {
	// Config is defaulted.
	Config Config
	// MountNS is the file the node's mount namespace is pinned on.
	MountNS string
	// ContainerdSocket is containerd's gRPC socket (a path that works
	// from the root mount namespace too).
	ContainerdSocket string
	// CNIConfDir and CNIBinDir are the node's CNI directories as seen from
	// the root mount namespace (the node sees them at /etc/cni/net.d and
	// /opt/cni/bin).
	CNIConfDir, CNIBinDir string
	// Binds are the node's bind mounts.
	Binds []Bind
	// Containerd, Kubelet and (with KubeProxyKubeconfig) KubeProxy, in
	// the order to start them.
	Containerd, Kubelet Component
	KubeProxy           *Component
}

// Prepare checks cfg and writes the node's configuration files under
// cfg.Dir; it changes nothing outside Dir. Setup then makes the cgroups
// and the mount namespace.
func Prepare(cfg Config) (*Plan, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	d := cfg.Dir
	p := &Plan{
		Config:           cfg,
		MountNS:          filepath.Join(d, "mntns"),
		ContainerdSocket: filepath.Join(d, "containerd", "containerd.sock"),
		CNIConfDir:       filepath.Join(d, "cni", "net.d"),
		CNIBinDir:        filepath.Join(d, "cni", "bin"),
	}
	// A unix socket's path holds at most 107 bytes.
	if len(p.ContainerdSocket) > 100 {
		return nil, fmt.Errorf("node config: Dir: %s is too long for containerd's socket path %s", d, p.ContainerdSocket)
	}
	p.Binds = []Bind{
		{filepath.Join(d, "host", "var-lib-kubelet"), "/var/lib/kubelet"},
		{filepath.Join(d, "host", "var-log-containers"), "/var/log/containers"},
		{filepath.Join(d, "host", "run-containerd"), "/run/containerd"},
		{filepath.Join(d, "host", "var-lib-cni"), "/var/lib/cni"},
		{filepath.Join(d, "host", "var-lib-tortie"), "/var/lib/tortie"},
		{p.CNIConfDir, CNIConfDir},
		{p.CNIBinDir, CNIBinDir},
	}
	dirs := []string{filepath.Join(d, "log"), filepath.Join(d, "kubelet"), filepath.Join(d, "pod-logs"),
		filepath.Join(d, "containerd", "root"), filepath.Join(d, "containerd", "state")}
	for _, b := range p.Binds {
		dirs = append(dirs, b.Source)
	}
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	if err := writeFile(filepath.Join(d, "containerd.toml"), []byte(p.containerdConfig())); err != nil {
		return nil, err
	}
	kc, err := p.kubeletConfig()
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(d, "kubelet.yaml"), kc); err != nil {
		return nil, err
	}
	// No cluster DNS: pods get the node's resolver, which is none.
	if err := writeFile(filepath.Join(d, "resolv.conf"), []byte("nameserver 127.0.0.1\n")); err != nil {
		return nil, err
	}
	enter := []string{cfg.Nsenter, "--net=" + cfg.Netns, "--mount=" + p.MountNS, "--"}
	cmd := func(role string, argv ...string) Component {
		return Component{Role: role, Argv: append(append([]string(nil), enter...), argv...), LogFile: filepath.Join(d, "log", role+".log")}
	}
	p.Containerd = cmd("containerd", cfg.Containerd, "--config="+filepath.Join(d, "containerd.toml"))
	kargs := []string{cfg.Kubelet,
		"--config=" + filepath.Join(d, "kubelet.yaml"),
		"--kubeconfig=" + cfg.Kubeconfig,
		"--root-dir=" + filepath.Join(d, "kubelet"),
		"--cert-dir=" + filepath.Join(d, "kubelet", "pki"),
		"--hostname-override=" + cfg.Name,
		"--node-ip=" + cfg.NodeIP,
		"--v=1",
	}
	if len(cfg.NodeLabels) > 0 {
		kargs = append(kargs, "--node-labels="+strings.Join(cfg.NodeLabels, ","))
	}
	p.Kubelet = cmd("kubelet", kargs...)
	if cfg.KubeProxyKubeconfig != "" {
		a := []string{cfg.KubeProxy,
			"--kubeconfig=" + cfg.KubeProxyKubeconfig,
			"--proxy-mode=nftables",
			"--hostname-override=" + cfg.Name,
			// Leave the machine-wide conntrack sysctls alone.
			"--conntrack-max-per-core=0",
			"--conntrack-tcp-timeout-established=0",
			"--conntrack-tcp-timeout-close-wait=0",
			// The node's own loopback: one per network namespace.
			"--metrics-bind-address=127.0.0.1:10249",
			"--healthz-bind-address=127.0.0.1:10256",
			"--v=1",
		}
		if cfg.ClusterCIDR != "" {
			a = append(a, "--cluster-cidr="+cfg.ClusterCIDR)
		}
		kp := cmd("kube-proxy", a...)
		p.KubeProxy = &kp
	}
	return p, nil
}

// Components are the node's processes in the order to start them.
func (p *Plan) Components() []Component {
	c := []Component{p.Containerd, p.Kubelet}
	if p.KubeProxy != nil {
		c = append(c, *p.KubeProxy)
	}
	return c
}

// containerdConfig is containerd 1.6's configuration (version 2) for the
// node: everything under Dir, CRI with the node's CNI directories.
func (p *Plan) containerdConfig() string {
	c, d := p.Config, p.Config.Dir
	q := strconv.Quote
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# containerd of node %s (written by tortie's pkg/kube/node)", c.Name)
	w("version = 2")
	w("root = %s", q(filepath.Join(d, "containerd", "root")))
	w("state = %s", q(filepath.Join(d, "containerd", "state")))
	w("oom_score = 0")
	w(`disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]`)
	w("[grpc]\n  address = %s", q(p.ContainerdSocket))
	w("[ttrpc]\n  address = %s", q(filepath.Join(d, "containerd", "ttrpc.sock")))
	w("[metrics]\n  address = \"\"")
	w("[plugins]")
	w("  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = %s", q(filepath.Join(d, "containerd", "opt")))
	w("  [plugins.\"io.containerd.grpc.v1.cri\"]")
	w("    sandbox_image = %s", q(c.SandboxImage))
	w("    disable_apparmor = true")
	// Without CAP_SYS_RESOURCE runc cannot give a sandbox the
	// oom_score_adj kubelet asks for (-998): clamp to containerd's own.
	w("    restrict_oom_score_adj = true")
	w("    netns_mounts_under_state_dir = true")
	w("    enable_unprivileged_ports = true")
	w("    enable_unprivileged_icmp = true")
	w("    tolerate_missing_hugetlb_controller = true")
	w("    stream_server_address = \"127.0.0.1\"")
	w("    stream_server_port = \"0\"")
	w("    [plugins.\"io.containerd.grpc.v1.cri\".cni]")
	w("      bin_dir = %s", q(CNIBinDir))
	w("      conf_dir = %s", q(CNIConfDir))
	w("      max_conf_num = 1")
	w("    [plugins.\"io.containerd.grpc.v1.cri\".containerd]")
	w("      snapshotter = \"overlayfs\"")
	w("      default_runtime_name = \"runc\"")
	w("      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]")
	w("        runtime_type = \"io.containerd.runc.v2\"")
	w("        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]")
	w("          BinaryName = %s", q(c.Runc))
	w("          Root = %s", q(filepath.Join(d, "runc")))
	w("          SystemdCgroup = false")
	return b.String()
}

// kubeletConfig is the KubeletConfiguration of the node.
func (p *Plan) kubeletConfig() ([]byte, error) {
	c, d := p.Config, p.Config.Dir
	sock := "unix://" + p.ContainerdSocket
	kc := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"failCgroupV1":             false, // this machine runs cgroup v1
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               c.CgroupRoot,
		"cgroupsPerQOS":            true,
		"failSwapOn":               false,
		"containerRuntimeEndpoint": sock,
		"imageServiceEndpoint":     sock,
		"address":                  c.NodeIP,
		"port":                     c.KubeletPort,
		"healthzBindAddress":       c.NodeIP,
		"healthzPort":              c.HealthzPort,
		"readOnlyPort":             0,
		"podLogsDir":               filepath.Join(d, "pod-logs"),
		"staticPodPath":            "",
		// The API server reaches the kubelet without a client certificate:
		// kubectl logs and exec work through an anonymous, allowed caller.
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
		},
		"authorization":       map[string]any{"mode": "AlwaysAllow"},
		"clusterDomain":       "cluster.local",
		"resolvConf":          filepath.Join(d, "resolv.conf"),
		"serializeImagePulls": false,
		// Imported images cannot be pulled again: never collect them.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available":  "100Mi",
			"nodefs.available":  "1%",
			"imagefs.available": "1%",
			"nodefs.inodesFree": "1%",
		},
		"protectKernelDefaults":     false,
		"makeIPTablesUtilChains":    false,
		"nodeStatusReportFrequency": "10s",
		"syncFrequency":             "10s",
		"maxPods":                   c.MaxPods,
	}
	return yaml.Marshal(kc)
}

func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
