// Package node is the wiring of tortie-node, the per-host agent: the
// syncer's updates go to the agent's dataplane components, each keeps its
// own desired state and programs the kernel in bursts, and the agent
// reports health (/liveness, /readiness) and Prometheus metrics.
//
// One goroutine (Agent.Run's loop) owns every component: it routes each
// datastore update to the components that asked for its kind, and applies
// the components that changed at most once per MinApplyInterval (a burst of
// updates becomes one kernel transaction), retries a failed apply with
// backoff, and asks for a full comparison with the kernel every
// ResyncInterval to repair drift. The policy component (policy.go) is the
// calculation graph (pkg/calc) feeding the nftables driver
// (pkg/dataplane/nft); routes and BGP are meant to be further Components
// (component.go; a Runner for a goroutine of their own, a StatusHandler for
// /status/<name>), and node startup (address, Node resource) a step before
// Run, without changing the loop.
//
// It must never program anything before every watched kind has delivered
// its first snapshot, never flush or recreate kernel state on start (a
// restart reconciles in place: the drivers diff against what the kernel
// has), never call a component from more than one goroutine, and never
// decide policy or routes itself: that is pkg/calc's and the drivers' job.
package node
