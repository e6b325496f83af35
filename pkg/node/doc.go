// Package node is the wiring of tortie-node, the per-host agent: one
// syncer (pkg/syncer) watches what every component needs, one loop feeds
// its updates to the components and applies them, and the agent reports
// health (/liveness, /readiness, /status/<component>) and Prometheus
// metrics.
//
// Every part of the agent is a Component (component.go), as Felix's
// managers are: OnUpdate folds a datastore change into the component's
// desired state, Apply(ctx, full) programs the kernel. Two exist:
//
//   - policy (policy.go): the calculation graph (pkg/calc) feeding the
//     nftables driver (pkg/dataplane/nft);
//   - routing (pkg/routing): kernel routes, VXLAN and the BGP speaker.
//
// One goroutine (Agent.Run's loop) owns every component. It routes each
// update to the components whose Kinds asked for it (raw kinds such as
// IPAM blocks included), applies the components that changed at most once
// per MinApplyInterval (a burst of updates becomes one kernel
// transaction), retries a failed apply in full with doubling backoff while
// the other components go on applying, and gives each component a full
// apply every ResyncInterval (or the component's own, Resyncer) to repair
// drift. A component whose state also changes from outside the datastore
// (routes learned over BGP) asks for an apply through Waker; one that needs
// a goroutine of its own is a Runner; one that holds resources is a
// Closer, closed on the loop after the last apply. The loop counts
// updates, applies, their durations and failures per component in one set
// of metrics (metrics.go), and /readiness names every component that is
// not ready and why.
//
// Node startup (pkg/startup: address, Node resource, default pool) is a
// step before Run, in cmd/tortie-node.
//
// It must never program anything before every watched kind has delivered
// its first snapshot, never flush or recreate kernel state on start (a
// restart reconciles in place: the drivers diff against what the kernel
// has), never call a component from more than one goroutine, and never
// decide policy or routes itself: that is pkg/calc's, pkg/routing's and the
// drivers' job.
package node
