// Package e2e is tortie's end-to-end network policy suite and the harness it
// runs on.
//
// The scenarios (the upstream Kubernetes network policy e2e list, plus
// Calico-specific ones) are written against the Cluster interface only, so
// the same suite can run on any backend that gives it real workloads:
//
//   - SingleHost (this package): one "host" network namespace running the
//     real tortie-node binary against an embedded etcd reachable over a
//     veth, workloads in their own namespaces created by the real CNI plugin
//     (through libcni, as a container runtime would), a second namespace
//     "outside" the cluster behind the host's uplink.
//   - LabCluster (lab.go): a 3-host lab (pkg/lab: one real tortie-node per
//     host namespace, BGP mesh, pods through the real CNI plugin), the 9 pods
//     spread so that every namespace spans all three hosts. Tests named
//     TestLab* run on it (TestLab runs the whole suite there); a scenario
//     that needs the single host's layout is listed in singleHostOnly with
//     its reason.
//
// Probing is real: a TCP connect plus an echo, a UDP datagram and its echo,
// or an ICMP echo, from inside the source's network namespace, with a short
// timeout; a whole matrix (every pod pair × ports × protocols) is probed in
// parallel. After every change the suite polls until the expected matrix is
// observed (with a deadline), then probes once more with a longer timeout and
// asserts (a cell that connects where it should not fails at once; one that
// is blocked where it should connect is probed again, a few at a time, with
// a much longer timeout, since on a busy machine a probe can time out on an
// open path); the time from the change to the matching observation is recorded
// (see ConvergenceStats).
//
// Everything the harness makes carries a per-run ID (namespaces, interfaces
// in the root namespace, datastore namespaces and node names) and is removed
// when the run ends, also when it fails; a run killed outright leaves a
// marker under /run/tortie-e2e that the next run uses to clean up after it.
//
// Running, as root: `go test ./e2e/` (about 2.5 minutes here; `-run TestLab` for
// the lab only, `-skip TestLab` for the single host only). Without root it skips,
// unless CI is set, when it fails. It builds cmd/tortie-node and
// cmd/tortie-cni from the tree; TORTIE_E2E_BIN=<dir> uses binaries from
// there instead. TORTIE_E2E_RESYNC=<duration> passes --resync-interval to
// the agent (e.g. 1s, to run every scenario across the agent's periodic
// full resyncs).
package e2e
