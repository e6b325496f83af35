// Package cni is tortie's CNI plugin (spec 0.3.0, 0.3.1, 0.4.0, 1.0.0 and
// 1.1.0, each with its own result format and commands): it puts a
// workload (a Kubernetes pod, a plain containerd or podman container, a VM's
// network namespace) on the tortie network the way Calico's plugin does,
// and records it as a WorkloadEndpoint so that the node agent can apply
// policy to it.
//
// One binary plays two roles, chosen by the name it was called by: under
// tortie's names or Calico's, so that an operator migrating from Calico can
// link it in place of Calico's binaries and keep the conflist. Any other
// name is refused.
//
//   - tortie or calico: ADD, DEL, CHECK, STATUS, GC of a workload
//     interface. It asks IPAM for addresses (tortie's IPAM in-process when
//     ipam.type is tortie-ipam or calico-ipam, else the delegated IPAM
//     plugin such as host-local, never itself), creates the veth pair with
//     Calico's plumbing (see dataplane.go), and writes the WorkloadEndpoint.
//   - tortie-ipam or calico-ipam: an IPAM plugin alone: addresses for the
//     handle "<network>.<containerID>" from tortie's block allocator.
//
// Every key of the network config it reads, Calico's and its own, and what
// it does with the Calico keys it accepts without acting on them or refuses,
// is in docs/cni-config.md (calico.go for the reasons in code).
//
// What it must never do:
//
//   - write to stdout anything but the CNI result or error, or to stderr
//     anything but errors (logs go to a file, log_file_path, rotated as
//     Calico rotates it: see logfile.go);
//   - release an address held by another container's handle, or delete an
//     interface or WorkloadEndpoint that belongs to another container (a
//     pod's sandbox may have been recreated under the same names);
//   - leave anything behind after a failed ADD: every stage undoes what
//     earlier stages did, in reverse order;
//   - touch host-wide settings: it changes only the sysctls of the veths it
//     creates (forwarding, proxy ARP/NDP); the host's own forwarding and
//     its route to 169.254.1.1 are the operator's or node agent's job.
package cni
