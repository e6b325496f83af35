package nft

import (
	"context"
	"slices"

	"sigs.k8s.io/knftables"

	"github.com/tortie/tortie/pkg/calc"
)

// Driver programs one inet table from calc's desired state. It is not safe
// for concurrent use: the agent calls Apply after each calc Flush and
// Resync periodically, from one goroutine.
//
// Its concerns live in their own files: the desired state it keeps here;
// the table models and the sync that writes their difference (model.go,
// sync.go, txn.go, netlink.go); the IP sets and the cover of their members
// (ipsets.go, setcover.go); the endpoints and what they use (endpoints.go);
// the compiled programs (progcache.go, program.go, partition.go); the
// static chains and sets (static.go).
type Driver struct {
	nft knftables.Interface
	nl  *Netlink // nil: every transaction through nft
	cfg Config
	// mergeElems: nft scripts list many elements per statement (knft),
	// except for knftables' fake (listsElements).
	mergeElems bool

	// The desired state as far as rendering needs it (IP set members live
	// in cover and in want, not here).
	ipsets    map[string]*calc.IPSet
	policies  map[calc.PolicyID]*calc.Policy
	profiles  map[string]*calc.Profile
	endpoints map[calc.EndpointID]*calc.Endpoint
	inSync    bool
	pools     []Pool

	want, have *tableModel
	dirty      *dirtySet
	// pending are objects no longer wanted but still in the kernel: they
	// are deleted by the next sync, when nothing references them any more.
	pending map[string]bool // name → is a chain
	// synced is false until a full sync succeeded, and after any failure:
	// the next sync is then a full one.
	synced bool

	cover setCover      // address-set members by kernel set
	eps   endpointIndex // what each endpoint uses, where it is dispatched
	progs programCache  // compiled rules and programs, class chain references
}

// Unwrapper is a knftables.Interface that passes transactions on to
// another (one that counts or records them). The driver looks through it
// to what writes them in the end.
type Unwrapper interface{ Unwrap() knftables.Interface }

// listsElements tells whether nft, looked at through any Unwrappers, takes
// element statements that list many elements. The real nft does;
// knftables' fake does not parse them and would keep the list as one
// element.
func listsElements(nft knftables.Interface) bool {
	for {
		switch x := nft.(type) {
		case *knftables.Fake:
			return false
		case Unwrapper:
			nft = x.Unwrap()
		default:
			return true
		}
	}
}

// New returns a driver for the table cfg.TableName (nft must be an
// Interface for that table, family inet). It touches nothing until the
// first Apply or Resync.
func New(nft knftables.Interface, cfg Config) *Driver {
	cfg = cfg.Defaults()
	return &Driver{
		nft: nft, cfg: cfg, pools: slices.Clone(cfg.Pools), mergeElems: listsElements(nft),
		ipsets: map[string]*calc.IPSet{}, policies: map[calc.PolicyID]*calc.Policy{},
		profiles: map[string]*calc.Profile{}, endpoints: map[calc.EndpointID]*calc.Endpoint{},
		want: newTableModel(), have: newTableModel(), dirty: newDirty(), pending: map[string]bool{},
		cover: newSetCover(), eps: newEndpointIndex(), progs: newProgramCache(),
	}
}

// SetPools replaces the IP pools (natOutgoing); the next Apply or Resync
// programs them.
func (d *Driver) SetPools(pools []Pool) { d.pools = slices.Clone(pools) }

// Apply folds changes into the desired state and brings the kernel to it
// with the smallest transaction it can: only the dirty objects and
// elements. Before the graph is in sync it programs nothing. After a failed
// transaction, and on a new Driver, it does a full sync instead.
//
// ctx bounds the kernel I/O. The changes are folded in whatever happens,
// and the write is one transaction: a ctx done before it returns ctx.Err()
// having written nothing, and a failed or cancelled write leaves the
// kernel as it was (the next sync is then a full one).
func (d *Driver) Apply(ctx context.Context, c *calc.Changes) error {
	if c.InSync {
		d.inSync = true
	}
	if !d.inSync {
		return nil
	}
	d.renderStatic()
	d.progs.beginApply()
	defer d.progs.endApply()
	dirtyEps := map[calc.EndpointID]struct{}{}
	users := func(m map[calc.EndpointID]struct{}) {
		for id := range m {
			dirtyEps[id] = struct{}{}
		}
	}
	for _, u := range c.IPSetUpdates {
		d.updateIPSet(u.Set, u.Members)
	}
	for _, md := range c.MemberDeltas {
		if s := d.ipsets[md.SetID]; s != nil {
			d.changeMembers(s, md.Added, md.Removed)
		}
	}
	for _, p := range c.PolicyUpdates {
		d.policies[p.ID] = p
		d.progs.forgetPolicy(p.ID)
		users(d.eps.policyUsers[p.ID])
	}
	for _, p := range c.ProfileUpdates {
		d.profiles[p.Name] = p
		d.progs.forgetProfile(p.Name)
		users(d.eps.profileUsers[p.Name])
	}
	for _, e := range c.EndpointUpdates {
		d.endpoints[e.ID] = e
		dirtyEps[e.ID] = struct{}{}
	}
	for _, id := range c.EndpointRemoves {
		delete(d.endpoints, id)
		dirtyEps[id] = struct{}{}
	}
	for _, n := range c.ProfileRemoves {
		delete(d.profiles, n)
		d.progs.forgetProfile(n)
		users(d.eps.profileUsers[n])
	}
	for _, id := range c.PolicyRemoves {
		delete(d.policies, id)
		d.progs.forgetPolicy(id)
		users(d.eps.policyUsers[id])
	}
	ids := make([]calc.EndpointID, 0, len(dirtyEps))
	for id := range dirtyEps {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, calc.CompareEndpointIDs)
	for _, id := range ids {
		d.renderEndpoint(id)
	}
	for _, id := range c.IPSetRemoves {
		d.removeIPSet(id)
	}
	scope := syncDirty
	if !d.synced {
		scope = syncFull
	}
	return d.sync(ctx, scope)
}

// Resync compares the whole table with what the kernel has and repairs
// any difference (a rule deleted by hand, a missing element). It never
// flushes the table; objects that should not be there are deleted by the
// following sync. ctx bounds the kernel I/O, as for Apply.
func (d *Driver) Resync(ctx context.Context) error {
	if !d.inSync {
		return nil
	}
	return d.sync(ctx, syncFull)
}
