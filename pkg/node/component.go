package node

import (
	"context"
	"net/http"
	"time"

	"github.com/tortie/tortie/pkg/syncer"
)

// Component is one part of the dataplane the agent keeps in step with the
// datastore: policy (nftables), routing (routes, VXLAN, BGP), and whatever
// comes next. Felix's managers are the model: updates are folded into the
// component's desired state as they arrive, and the kernel is written in
// Apply. The agent calls every method from its one loop goroutine, never
// concurrently, so state that lives across applies lives in the component's
// struct without locks (unless an HTTP handler or a goroutine of its own
// reads it too).
type Component interface {
	// Name is used in logs, readiness and as the "component" metric label.
	Name() string
	// Kinds are the resource kinds ("WorkloadEndpoint", "IPPool", or a raw
	// kind such as syncer.KindIPAMBlock) the component needs; the agent
	// watches the union of every component's kinds and gives each
	// component only its own.
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
	// the component, it asked to be applied (Waker), or a full apply is
	// due. A failed Apply is retried, full, with backoff; the component
	// stays not ready until one succeeds. ctx ends when the agent stops.
	Apply(ctx context.Context, full bool) error
}

// Waker is implemented by a component whose desired state also changes
// from outside the datastore (routes learned over BGP, a BGP peer's hold
// timer): a value on Wake asks the loop to Apply it, as an update would.
// Several values may share one Apply.
type Waker interface {
	Wake() <-chan struct{}
}

// Resyncer is implemented by a component that wants its periodic full
// apply at another interval than the agent's Config.ResyncInterval (routes
// are cheap to compare and compared more often than the nftables table). A
// value <= 0 means the agent's.
type Resyncer interface {
	ResyncInterval() time.Duration
}

// Runner is implemented by a component that also needs a goroutine of its
// own (a netlink subscription, a timer of its own). The agent starts Run
// when it starts and stops it by cancelling ctx; an error from Run stops
// the agent. Run must not touch the component's loop-owned state without
// its own synchronisation: the other methods run on the agent's loop.
type Runner interface {
	Run(ctx context.Context) error
}

// Closer is implemented by a component that holds something to let go of
// when the agent stops (a BGP speaker to stop gracefully, a netlink
// handle). The agent calls Close on its loop goroutine after the last
// Apply, so Close needs no synchronisation with Apply. Closing must leave
// the kernel as programmed: a restart reconciles in place.
type Closer interface {
	Close() error
}

// StatusHandler is implemented by a component that has more to say than
// ready or not (the BGP sessions for `tortie node status`). The agent
// serves it on the health address at /status/<Name()>. It runs on HTTP
// goroutines, not the loop: the component synchronises what it reads.
type StatusHandler interface {
	ServeStatus(w http.ResponseWriter, r *http.Request)
}
