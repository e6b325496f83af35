package routes

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options configure a Reconciler.
type Options struct {
	// Protocol marks the routes the reconciler owns. Zero means ProtocolTortie.
	// Two reconcilers on one table must use different protocols, or they will
	// delete each other's routes.
	Protocol netlink.RouteProtocol
	// Table is the routing table. Zero means main (254).
	Table int
	// Logger receives one line per change and per problem. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Stats count what one Apply did.
type Stats struct {
	Added     int // desired routes that were missing
	Replaced  int // our routes that differed from the desired ones
	Deleted   int // our routes that are no longer desired
	Unchanged int // desired routes that were already right
	// Pending counts desired routes whose device does not exist or is down;
	// they are retried on every Apply and are not an error.
	Pending int
	// Failed counts desired routes that could not be programmed (invalid, in
	// conflict with a route that is not ours, or refused by the kernel).
	// Apply's error has the details.
	Failed int
}

// Changes is the number of kernel writes Apply made.
func (s Stats) Changes() int { return s.Added + s.Replaced + s.Deleted }

// RouteError is why one route could not be programmed or removed.
type RouteError struct {
	Route Route
	Op    string // "add", "replace", "delete", "validate"
	Err   error
}

func (e *RouteError) Error() string { return fmt.Sprintf("%s route %s: %v", e.Op, e.Route, e.Err) }
func (e *RouteError) Unwrap() error { return e.Err }

// ErrConflict means a desired route's slot (table, destination, metric) is
// held by a route that is not ours, which the reconciler never touches.
var ErrConflict = errors.New("destination is held by a route with another protocol")

// Reconciler keeps the routes with its protocol in one table of one network
// namespace equal to a desired set. It is safe for concurrent use; Apply calls
// are serialised.
type Reconciler struct {
	h     *netlink.Handle
	proto netlink.RouteProtocol
	table int
	log   *slog.Logger

	mu      sync.Mutex
	desired map[netip.Prefix]Route // nil until the first Set

	applyMu sync.Mutex
	// pendingDevs remembers the devices reported missing by the last Apply
	// so that a missing device is logged when it goes missing, not on every
	// Apply.
	pendingDevs map[string]bool
}

// NewReconciler returns a reconciler working through h, which must be a
// handle opened in the target network namespace. Until the first Set, Apply
// does nothing: a restarted agent must not remove routes before it knows
// which ones it wants (Set(nil) means "none").
func NewReconciler(h *netlink.Handle, opts Options) *Reconciler {
	if opts.Protocol == 0 {
		opts.Protocol = ProtocolTortie
	}
	if opts.Table == 0 {
		opts.Table = unix.RT_TABLE_MAIN
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Reconciler{
		h:           h,
		proto:       opts.Protocol,
		table:       opts.Table,
		log:         opts.Logger.With("table", opts.Table, "protocol", int(opts.Protocol)),
		pendingDevs: map[string]bool{},
	}
}

// Set replaces the desired set. It does no I/O; Apply programs it. Routes are
// keyed by destination: when two have the same destination, the later wins.
func (r *Reconciler) Set(desired []Route) {
	m := make(map[netip.Prefix]Route, len(desired))
	for _, rt := range desired {
		m[dstKey(rt.Dst)] = rt
	}
	r.mu.Lock()
	r.desired = m
	r.mu.Unlock()
}

// Apply makes the kernel match the desired set: it adds missing routes,
// replaces ours that differ, and deletes ours that are not desired. Routes
// with another protocol are never modified. It reads the table afresh each
// time, so calling it periodically repairs routes changed or deleted by hand.
//
// A route whose device is missing or down is counted as Pending and retried
// next time; it does not stop the others. The error joins a *RouteError for
// each route that failed and each stale route that could not be deleted; it
// is nil when only pending routes remain.
func (r *Reconciler) Apply() (Stats, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()

	r.mu.Lock()
	desired := r.desired // never mutated after Set, so no copy needed
	r.mu.Unlock()

	var stats Stats
	var errs []error
	if desired == nil {
		r.log.Debug("no desired routes set yet; not touching the kernel")
		return stats, nil
	}

	links, err := r.linkIndexes(desired)
	if err != nil {
		return stats, err
	}
	ours, foreign, err := r.dump(desired)
	if err != nil {
		return stats, err
	}

	pendingDevs := map[string]bool{}
	for dst := range desired {
		existing := ours[dst]
		delete(ours, dst)
		want, err := desired[dst].normalise()
		if err != nil {
			// Leave whatever we programmed before: a bad update should not
			// take a working route away.
			stats.Failed++
			errs = append(errs, &RouteError{Route: desired[dst], Op: "validate", Err: err})
			continue
		}

		linkIndex := 0
		if want.Type == Unicast && want.Dev != "" {
			l, ok := links[want.Dev]
			if !ok || !l.up {
				stats.Pending++
				pendingDevs[want.Dev] = true
				// The kernel already removed routes through a vanished or
				// downed device; any left are stale.
				r.deleteAll(existing, &stats, &errs)
				continue
			}
			linkIndex = l.index
		}

		if i := slices.IndexFunc(existing, func(k netlink.Route) bool { return want.matches(linkIndex, &k) }); i >= 0 {
			stats.Unchanged++
			// Extra routes of ours to the same destination (another metric,
			// added by hand) would shadow or be shadowed; remove them.
			r.deleteAll(slices.Delete(slices.Clone(existing), i, i+1), &stats, &errs)
			continue
		}
		if slices.ContainsFunc(foreign[dst], func(k netlink.Route) bool { return want.matches(linkIndex, &k) }) {
			// Another owner programmed exactly this route (the CNI plugin
			// adds a workload's host route when it plumbs the workload): what
			// is wanted holds, and it is not ours to replace.
			stats.Unchanged++
			r.deleteAll(existing, &stats, &errs)
			continue
		}

		nr := want.toNetlink(linkIndex, r.table, r.proto)
		op := "add"
		switch {
		case len(existing) == 1 && len(foreign[dst]) == 0 && existing[0].Priority == defaultMetric(want):
			// Replace matches on (destination, metric): the one route of
			// ours is the one replaced, with no moment without a route.
			op = "replace"
			err = r.h.RouteReplace(nr)
		default:
			// Nothing of ours to replace, or a replace could miss ours
			// (another metric) or hit a foreign route sharing the slot:
			// delete ours and add exclusively, so that the kernel refuses
			// rather than overwrites what is not ours.
			r.deleteAll(existing, &stats, &errs)
			err = r.h.RouteAdd(nr)
		}
		switch {
		case err == nil && op == "replace":
			stats.Replaced++
			r.log.Debug("replaced route", "route", want.String(), "was", existing[0].String())
		case err == nil:
			stats.Added++
			r.log.Debug("added route", "route", want.String())
		case errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENETDOWN):
			// The device went away or down between the link dump and now.
			stats.Pending++
			if want.Dev != "" {
				pendingDevs[want.Dev] = true
			}
		case errors.Is(err, unix.EEXIST):
			stats.Failed++
			errs = append(errs, &RouteError{Route: want, Op: op, Err: ErrConflict})
		default:
			stats.Failed++
			errs = append(errs, &RouteError{Route: want, Op: op, Err: err})
		}
	}

	// What is left of ours is not desired.
	for _, existing := range ours {
		r.deleteAll(existing, &stats, &errs)
	}

	for dev := range pendingDevs {
		if !r.pendingDevs[dev] {
			r.log.Info("routes wait for device", "dev", dev)
		}
	}
	for dev := range r.pendingDevs {
		if !pendingDevs[dev] {
			r.log.Info("device no longer awaited", "dev", dev)
		}
	}
	r.pendingDevs = pendingDevs

	// Map order is random; sorted errors make reports reproducible.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	for _, err := range errs {
		r.log.Warn("route not programmed", "err", err)
	}
	if stats.Changes() > 0 || stats.Failed > 0 {
		r.log.Info("routes applied", "added", stats.Added, "replaced", stats.Replaced, "deleted", stats.Deleted,
			"unchanged", stats.Unchanged, "pending", stats.Pending, "failed", stats.Failed)
	}
	return stats, errors.Join(errs...)
}

// deleteAll deletes kernel routes of ours. Each carries our protocol, so the
// kernel cannot match and delete another route instead.
func (r *Reconciler) deleteAll(routes []netlink.Route, stats *Stats, errs *[]error) {
	for i := range routes {
		k := &routes[i]
		err := r.h.RouteDel(k)
		switch {
		case err == nil:
			stats.Deleted++
			r.log.Debug("deleted route", "route", k.String())
		case errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT):
			// Already gone (its device vanished meanwhile).
		default:
			dst, _ := kernelDst(k)
			*errs = append(*errs, &RouteError{Route: Route{Dst: dst}, Op: "delete", Err: err})
		}
	}
}

type linkState struct {
	index int
	up    bool
}

// linkIndexes resolves device names with one dump rather than one request per
// route.
func (r *Reconciler) linkIndexes(desired map[netip.Prefix]Route) (map[string]linkState, error) {
	need := false
	for _, rt := range desired {
		if rt.Dev != "" {
			need = true
			break
		}
	}
	links := map[string]linkState{}
	if !need {
		return links, nil
	}
	list, err := retryDump(func() ([]netlink.Link, error) { return r.h.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range list {
		a := l.Attrs()
		links[a.Name] = linkState{index: a.Index, up: a.Flags&net.FlagUp != 0}
	}
	return links, nil
}

// dump reads the reconciler's table: our routes by destination, and the
// destinations of desired routes that also have a route that is not ours.
func (r *Reconciler) dump(desired map[netip.Prefix]Route) (ours, foreign map[netip.Prefix][]netlink.Route, err error) {
	filter := &netlink.Route{Table: r.table}
	_, err = retryDump(func() (struct{}, error) {
		ours = make(map[netip.Prefix][]netlink.Route, len(desired))
		foreign = map[netip.Prefix][]netlink.Route{}
		err := r.h.RouteListFilteredIter(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE, func(k netlink.Route) bool {
			if k.Family != netlink.FAMILY_V4 && k.Family != netlink.FAMILY_V6 {
				return true
			}
			dst, ok := kernelDst(&k)
			if !ok {
				return true
			}
			if k.Protocol == r.proto {
				ours[dst] = append(ours[dst], k)
			} else if _, want := desired[dst]; want {
				foreign[dst] = append(foreign[dst], k)
			}
			return true
		})
		return struct{}{}, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing routes in table %d: %w", r.table, err)
	}
	return ours, foreign, nil
}

// retryDump repeats a dump the kernel reports as interrupted (the table
// changed while it was read), since acting on a torn read could delete a
// route that exists.
func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// defaultMetric is the metric the kernel gives a route added without one.
func defaultMetric(r Route) int {
	if r.Dst.Addr().Is4() {
		return 0
	}
	return 1024 // IP6_RT_PRIO_USER
}

// dstKey is the destination as the kernel reports it: IPv4 unmapped, host
// bits cleared.
func dstKey(p netip.Prefix) netip.Prefix {
	if !p.IsValid() {
		return p
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}
