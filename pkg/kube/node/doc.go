// Package node runs one Kubernetes node on this machine: containerd and a
// kubelet (and, optionally, an nftables kube-proxy) inside an existing
// network namespace (one `ip netns add` made), so that several nodes and
// the control plane (package apiserver) share one machine.
//
// Every node has its own:
//
//   - mount namespace, pinned at Dir/mntns, made once by Setup: a sysfs of
//     the node's network namespace (kubelet sees the node's interfaces), a
//     tmpfs on /sys/fs/cgroup with every cgroup hierarchy mounted again,
//     and bind mounts of per-node directories over the paths kubelet,
//     containerd, CNI and tortie's DaemonSets hard-code or mount by
//     hostPath: /var/lib/kubelet (the device-plugin socket),
//     /var/log/containers, /run/containerd (shim sockets, fifos),
//     /var/lib/cni, /var/lib/tortie, and /etc/cni/net.d and /opt/cni/bin
//     (so that an install-cni container writing to its hostPaths writes
//     into the node's CNI directories, which the node's containerd reads);
//   - containerd: root, state, sockets and runc root under Dir, with
//     restrict_oom_score_adj (without CAP_SYS_RESOURCE runc cannot lower a
//     sandbox's oom_score_adj);
//   - cgroup root (kubelet's cgroupRoot, default /tortie-<Name>) in every
//     cgroup v1 hierarchy; containerd, and so every shim and pod, runs
//     under it, which is how Down finds everything the node started;
//   - kubelet root, certificate and pod-log directories, and ports.
//
// The processes outlive the Go program that starts them if it wants: Plan
// gives each one's command line (nsenter into the node's network and
// mount namespaces), a caller such as the lab starts them itself and
// records PID and start time (Proc), and Down, given the Record, stops
// them and removes every trace (containers, shims, the mount namespace,
// cgroups) from any later process. Start is the same for tests, in one
// call.
//
// The machine this was built for runs cgroup v1: kubelet needs
// failCgroupV1: false, and containerd 1.6 (Debian 12). Kubernetes 1.38
// will need containerd 2 (the CRI RuntimeConfig call).
package node
