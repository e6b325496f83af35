package node

import (
	"context"
	"net/http"

	"github.com/tortie/tortie/pkg/syncer"
)

// Component is one part of the dataplane the agent keeps in step with the
// datastore: policy (nftables) today; routes and BGP next. The agent calls
// every method from its one loop goroutine, never concurrently.
type Component interface {
	// Name is used in logs and as the "component" metric label.
	Name() string
	// Kinds are the resource kinds ("WorkloadEndpoint", "IPPool", ...) the
	// component needs; the agent watches the union of every component's
	// kinds and gives each component only its own.
	Kinds() []string
	// OnUpdate folds one datastore change into the component's desired
	// state. It must not block or touch the kernel: that is Apply's job.
	OnUpdate(u syncer.Update)
	// OnInSync says that every watched kind has delivered its first
	// snapshot. It is called once, before the first Apply.
	OnInSync()
	// Apply brings the kernel to the desired state. With full set (the
	// first apply, the periodic resync, a retry after a failure) it must
	// compare with what the kernel really has and repair any difference;
	// otherwise it may write only what changed since the previous Apply.
	// It is called only after OnInSync, and only when an update reached
	// the component or a full apply is due.
	Apply(ctx context.Context, full bool) error
}

// Runner is implemented by a component that also needs a goroutine of its
// own (a BGP speaker serving sessions, a netlink subscription). The agent
// starts Run when it starts and stops it by cancelling ctx; an error from
// Run stops the agent. Run must not call the component's other methods'
// state without its own synchronisation: those run on the agent's loop.
type Runner interface {
	Run(ctx context.Context) error
}

// StatusHandler is implemented by a component that has more to say than
// healthy or not (the BGP sessions for `tortie node status`). The agent
// serves it on the health address at /status/<Name()>. It runs on HTTP
// goroutines, not the loop: the component synchronises what it reads.
type StatusHandler interface {
	ServeStatus(w http.ResponseWriter, r *http.Request)
}
