package node

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/knftables"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/calc"
	"github.com/tortie/tortie/pkg/dataplane/nft"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/syncer"
)

// PolicyConfig configures the policy component.
type PolicyConfig struct {
	// NodeName selects the endpoints this host enforces policy for.
	NodeName string
	// NFT is the nftables interface for table Driver.TableName, family
	// inet (knftables.New in the host's network namespace, or
	// knftables.NewFake in tests).
	NFT knftables.Interface
	// Driver is the nftables driver's configuration (TableName defaults to
	// "tortie").
	Driver nft.Config
	// Netlink, when set, writes changes straight over netlink (in the same
	// network namespace as NFT; nft still writes what it cannot, such as
	// the table's base chains); nil: every change runs nft.
	Netlink *nft.Netlink
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// FlowIndex, when set, is kept up to date with the rules the driver
	// programs, for the flow log component (Driver.FlowLogGroup on).
	FlowIndex *flowlog.Index
}

// policyKinds are what the calculation graph consumes, plus IP pools for
// natOutgoing. Staged policies are never enforced, so not watched.
var policyKinds = []string{
	v3.KindWorkloadEndpoint, v3.KindHostEndpoint, v3.KindNetworkSet, v3.KindGlobalNetworkSet,
	v3.KindProfile, v3.KindTier, v3.KindNetworkPolicy, v3.KindGlobalNetworkPolicy,
	v3.KindIPPool,
}

// logEachUpTo is how many object changes one apply logs one by one; a
// bigger burst (a cold start) is logged as counts, and object by object
// only at debug level.
const logEachUpTo = 32

// Policy is the policy dataplane: the calculation graph turns resources into
// this host's desired policy, the nftables driver programs it.
type Policy struct {
	graph *calc.Graph
	drv   *nft.Driver
	log   *slog.Logger
	flows *flowlog.Index

	pools      map[string]nft.Pool // by IPPool name
	poolsDirty bool
	// driverFull says the driver's next Apply is a full sync by itself (a
	// new driver, or one whose last write failed), so a full apply need not
	// list the table a second time.
	driverFull bool
	// applied: an Apply has succeeded (the first writes everything).
	applied bool

	// What has been handed to the driver, for the active-object gauges.
	endpoints map[calc.EndpointID]struct{}
	policies  map[calc.PolicyID]struct{}
	profiles  map[string]struct{}
	ipsets    map[string]struct{}

	activeEndpoints prometheus.Gauge
	activePolicies  prometheus.Gauge
	activeProfiles  prometheus.Gauge
	activeIPSets    prometheus.Gauge
	txns            *prometheus.CounterVec
	txnFailures     *prometheus.CounterVec
	txnDuration     *prometheus.HistogramVec
	nlFallbacks     prometheus.Counter
	collectors      []prometheus.Collector
}

var (
	_ Component            = (*Policy)(nil)
	_ prometheus.Collector = (*Policy)(nil)
)

// NewPolicy makes the policy component. It touches nothing in the kernel
// until its first Apply.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	if cfg.NodeName == "" {
		return nil, fmt.Errorf("policy: node name is empty")
	}
	if cfg.NFT == nil {
		return nil, fmt.Errorf("policy: no nftables interface")
	}
	dc := cfg.Driver.Defaults()
	if err := dc.Validate(); err != nil {
		return nil, fmt.Errorf("policy: nftables driver: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Policy{
		graph:      calc.New(calc.Config{NodeName: cfg.NodeName}),
		flows:      cfg.FlowIndex,
		log:        cfg.Logger.With("component", "policy", "table", dc.TableName),
		driverFull: true,
		pools:      map[string]nft.Pool{}, endpoints: map[calc.EndpointID]struct{}{},
		policies: map[calc.PolicyID]struct{}{}, profiles: map[string]struct{}{}, ipsets: map[string]struct{}{},
		activeEndpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "active_endpoints", Help: "Local workload and host endpoints programmed.",
		}),
		activePolicies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "active_policies", Help: "Policies programmed (those selecting a local endpoint).",
		}),
		activeProfiles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "active_profiles", Help: "Profiles programmed.",
		}),
		activeIPSets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "active_ip_sets", Help: "IP sets (selector and named-port sets) programmed.",
		}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "nft_transactions_total",
			Help: "nftables transactions written, by path: nft (nft -f) or netlink (direct; a cold start's table and base chains go through nft first).",
		}, []string{"path"}),
		txnFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "nft_transaction_failures_total", Help: "nftables transactions the kernel or nft refused, by path.",
		}, []string{"path"}),
		txnDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: metricPrefix + "nft_transaction_duration_seconds", Help: "Duration of one nftables transaction, by path.",
			Buckets: latencyBuckets,
		}, []string{"path"}),
		nlFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "nft_netlink_fallbacks_total",
			Help: "Transactions written through nft because an operation had no netlink form or they were too big (over 16,384 messages).",
		}),
	}
	for _, path := range []string{"nft", "netlink"} {
		p.txns.WithLabelValues(path)
		p.txnFailures.WithLabelValues(path)
	}
	p.collectors = []prometheus.Collector{p.activeEndpoints, p.activePolicies, p.activeProfiles, p.activeIPSets,
		p.txns, p.txnFailures, p.txnDuration, p.nlFallbacks}
	p.drv = nft.New(&countingNFT{Interface: cfg.NFT, p: p}, dc)
	if cfg.Netlink != nil {
		cfg.Netlink.SetObserver(func(d time.Duration, err error) { p.observeTxn("netlink", d, err) },
			func(err error) {
				p.nlFallbacks.Inc()
				p.log.Debug("transaction written through nft", "reason", err)
			})
		p.drv.SetNetlink(cfg.Netlink)
	}
	return p, nil
}

func (p *Policy) observeTxn(path string, d time.Duration, err error) {
	p.txnDuration.WithLabelValues(path).Observe(d.Seconds())
	p.txns.WithLabelValues(path).Inc()
	if err != nil {
		p.txnFailures.WithLabelValues(path).Inc()
	}
}

// Name implements Component.
func (p *Policy) Name() string { return "policy" }

// Kinds implements Component.
func (p *Policy) Kinds() []string { return slices.Clone(policyKinds) }

// OnUpdate implements Component.
func (p *Policy) OnUpdate(u syncer.Update) {
	if u.Kind == v3.KindIPPool {
		p.updatePool(u)
		return
	}
	p.graph.OnUpdate(calc.Update{Kind: u.Kind, Namespace: u.Namespace, Name: u.Name, Resource: u.Resource})
}

func (p *Policy) updatePool(u syncer.Update) {
	old, had := p.pools[u.Name]
	if u.Resource == nil {
		if had {
			delete(p.pools, u.Name)
			p.poolsDirty = true
		}
		return
	}
	pool, ok := u.Resource.(*v3.IPPool)
	if !ok {
		return
	}
	cidr, err := netip.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		p.log.Warn("IP pool with an unreadable CIDR, ignored", "pool", u.Name, "cidr", pool.Spec.CIDR, "err", err)
		if had {
			delete(p.pools, u.Name)
			p.poolsDirty = true
		}
		return
	}
	next := nft.Pool{CIDR: cidr.Masked(), NATOutgoing: pool.Spec.NATOutgoing}
	if !had || old != next {
		p.pools[u.Name] = next
		p.poolsDirty = true
	}
}

// OnInSync implements Component.
func (p *Policy) OnInSync() { p.graph.OnInSync() }

// Apply implements Component: the graph's changes go to the driver as one
// transaction; a full apply then lists the table and repairs drift.
func (p *Policy) Apply(ctx context.Context, full bool) error {
	if p.poolsDirty {
		p.drv.SetPools(p.sortedPools())
		p.poolsDirty = false
		p.log.Info("IP pools changed", "pools", len(p.pools))
	}
	c := p.graph.Flush()
	// The driver folds c into its desired state before it writes, so c is
	// not lost when the write fails: the retry (a full sync) includes it.
	wasFull := p.driverFull
	if ix := p.flows; ix != nil {
		// The new identifiers are known before the kernel can log them;
		// the ones that went are forgotten after (record).
		for _, pol := range c.PolicyUpdates {
			ix.SetPolicy(pol)
		}
		for _, pr := range c.ProfileUpdates {
			ix.SetProfile(pr)
		}
		for _, ep := range c.EndpointUpdates {
			ix.SetEndpoint(ep)
		}
	}
	if !p.applied {
		// The first write is the whole table: at 100,000 endpoints, over
		// netlink, it allocates some 100 MB of short-lived messages in
		// under a second. With the collector's usual headroom (GOGC) the
		// heap grows to twice what is live meanwhile; with half of it,
		// the agent's peak stays under 270 MB (bench/policy: 251–268 MB
		// over nine cold starts, 279–302 MB without), for about 0.2 s
		// more of collecting.
		defer halveGC()()
	}
	err := p.drv.Apply(ctx, c)
	p.record(ctx, c)
	if err != nil {
		p.driverFull = true
		return err
	}
	p.driverFull, p.applied = false, true
	if full && !wasFull {
		if err := p.drv.Resync(ctx); err != nil {
			p.driverFull = true
			return err
		}
	}
	return nil
}

// halveGC halves the collector's target percentage (GOGC) until the
// func it returns is called; with the collector off (GOGC=off) it does
// nothing.
func halveGC() (restore func()) {
	old := debug.SetGCPercent(-1)
	if old <= 0 {
		debug.SetGCPercent(old)
		return func() {}
	}
	debug.SetGCPercent(max(old/2, 1))
	return func() { debug.SetGCPercent(old) }
}

func (p *Policy) sortedPools() []nft.Pool {
	out := make([]nft.Pool, 0, len(p.pools))
	for _, pl := range p.pools {
		out = append(out, pl)
	}
	slices.SortFunc(out, func(a, b nft.Pool) int {
		return cmp.Or(a.CIDR.Addr().Compare(b.CIDR.Addr()), cmp.Compare(a.CIDR.Bits(), b.CIDR.Bits()))
	})
	return slices.CompactFunc(out, func(a, b nft.Pool) bool { return a == b })
}

// record keeps the active-object gauges and logs what changed, by name.
func (p *Policy) record(ctx context.Context, c *calc.Changes) {
	n := len(c.EndpointUpdates) + len(c.EndpointRemoves) + len(c.PolicyUpdates) + len(c.PolicyRemoves) +
		len(c.ProfileUpdates) + len(c.ProfileRemoves) + len(c.IPSetUpdates) + len(c.IPSetRemoves)
	each := slog.LevelInfo
	if n > logEachUpTo {
		each = slog.LevelDebug
		p.log.Info("programming a burst of changes",
			"endpointUpdates", len(c.EndpointUpdates), "endpointRemoves", len(c.EndpointRemoves),
			"policyUpdates", len(c.PolicyUpdates), "policyRemoves", len(c.PolicyRemoves),
			"profileUpdates", len(c.ProfileUpdates), "profileRemoves", len(c.ProfileRemoves),
			"ipSetUpdates", len(c.IPSetUpdates), "ipSetRemoves", len(c.IPSetRemoves),
			"memberDeltas", len(c.MemberDeltas))
	}
	for _, s := range c.IPSetUpdates {
		p.ipsets[s.Set.ID] = struct{}{}
		p.log.Log(ctx, each, "IP set programmed", "set", s.Set.ID, "selector", s.Set.Selector, "members", len(s.Members))
	}
	for _, id := range c.IPSetRemoves {
		delete(p.ipsets, id)
		p.log.Log(ctx, each, "IP set removed", "set", id)
	}
	for _, pol := range c.PolicyUpdates {
		p.policies[pol.ID] = struct{}{}
		p.log.Log(ctx, each, "policy programmed", "kind", pol.ID.Kind, "policy", pol.ID.String(), "tier", pol.Tier,
			"ingressRules", len(pol.Ingress), "egressRules", len(pol.Egress))
	}
	for _, id := range c.PolicyRemoves {
		delete(p.policies, id)
		p.log.Log(ctx, each, "policy removed", "kind", id.Kind, "policy", id.String())
	}
	for _, pr := range c.ProfileUpdates {
		p.profiles[pr.Name] = struct{}{}
		p.log.Log(ctx, each, "profile programmed", "profile", pr.Name)
	}
	for _, name := range c.ProfileRemoves {
		delete(p.profiles, name)
		p.log.Log(ctx, each, "profile removed", "profile", name)
	}
	for _, ep := range c.EndpointUpdates {
		p.endpoints[ep.ID] = struct{}{}
		p.log.Log(ctx, each, "endpoint programmed", "endpoint", ep.ID.String(), "interface", ep.InterfaceName,
			"ingressTiers", len(ep.Ingress), "egressTiers", len(ep.Egress), "profiles", len(ep.Profiles))
	}
	for _, id := range c.EndpointRemoves {
		delete(p.endpoints, id)
		p.log.Log(ctx, each, "endpoint removed", "endpoint", id.String())
	}
	if ix := p.flows; ix != nil {
		for _, id := range c.PolicyRemoves {
			ix.RemovePolicy(id)
		}
		for _, name := range c.ProfileRemoves {
			ix.RemoveProfile(name)
		}
	}
	p.activeEndpoints.Set(float64(len(p.endpoints)))
	p.activePolicies.Set(float64(len(p.policies)))
	p.activeProfiles.Set(float64(len(p.profiles)))
	p.activeIPSets.Set(float64(len(p.ipsets)))
}

// Describe implements prometheus.Collector.
func (p *Policy) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range p.collectors {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (p *Policy) Collect(ch chan<- prometheus.Metric) {
	for _, c := range p.collectors {
		c.Collect(ch)
	}
}

// countingNFT counts the transactions the driver runs.
type countingNFT struct {
	knftables.Interface
	p *Policy
}

// Unwrap implements nft.Unwrapper.
func (c *countingNFT) Unwrap() knftables.Interface { return c.Interface }

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	t0 := time.Now()
	err := c.Interface.Run(ctx, tx)
	c.p.observeTxn("nft", time.Since(t0), err)
	return err
}
