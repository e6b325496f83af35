package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"

	v3 "github.com/tortie/tortie/pkg/apis/v3"
	"github.com/tortie/tortie/pkg/dataplane/nflog"
	"github.com/tortie/tortie/pkg/flowlog"
	"github.com/tortie/tortie/pkg/syncer"
)

// FlowsConfig configures the flow log component.
type FlowsConfig struct {
	NodeName string
	// Group and Snaplen are the NFLOG group the policy programs log
	// their decisions to (nft.Config.FlowLogGroup) and how much of each
	// packet they copy.
	Group   uint16
	Snaplen uint32
	// Index maps the logged identifiers to rules; the policy component
	// keeps it up to date (PolicyConfig.FlowIndex).
	Index *flowlog.Index
	// Marks decode the workload egress decisions the policy programs
	// number in the packet mark (nft.Config.FlowMarks; nil: none).
	Marks *flowlog.Marks
	// FlushInterval is the aggregation interval (default 15s).
	FlushInterval time.Duration
	// RingSize is how many recent records are kept (default 100,000).
	RingSize int
	// MaxKeys bounds the flows of one interval (default 100,000).
	MaxKeys int
	// MaxRate bounds the logged packets handled per second (default
	// 50,000); the rest are counted and dropped, so a flood of new
	// connections cannot take the agent's CPU.
	MaxRate int
	// Token, when set, lets a client that presents it
	// ("Authorization: Bearer TOKEN") read the records from anywhere:
	// the cluster's aggregator (tortie flows serve). Without it only
	// loopback clients may.
	Token string
	// Totals adds each connection's packets and bytes to its flow when it
	// ends (conntrack accounting and destroy events). It costs the agent
	// about 6 µs of CPU per connection, so it is asked for.
	Totals bool
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Flows is the flow log component: it reads the packets the policy
// programs log when they decide (the first of each connection, on each
// side), names the deciding rule and the two ends, folds them into
// records per interval, keeps the recent ones, and serves them on the
// health address at /status/flows to loopback clients.
type Flows struct {
	cfg FlowsConfig
	log *slog.Logger
	hub *flowlog.Hub

	// mu guards names and staged, written by the agent's loop and read
	// by the reading goroutine.
	mu     sync.RWMutex
	names  endpointNames
	staged *stagedView

	aggMu sync.Mutex
	agg   *flowlog.Aggregator

	// Counters, for metrics and the status page.
	messages, lost, rateLimited, unknown, unparsable, records prometheus.Counter
	overflow                                                  prometheus.Counter
	ruleConns                                                 *prometheus.CounterVec
	bound                                                     prometheus.Gauge
	ended, ctEvents                                           prometheus.Counter
	held                                                      prometheus.GaugeFunc
	// lastOverflow is the aggregator's Overflow already counted.
	lastOverflow uint64
	// ruleCounter caches ruleConns' counter of each identifier (read
	// and written by the reading goroutine only): one map lookup a packet
	// instead of hashing six label values.
	ruleCounter map[string]prometheus.Counter
	// ids is the reading goroutine's buffer of a message's decisions.
	ids []string
}

var (
	_ Component            = (*Flows)(nil)
	_ Runner               = (*Flows)(nil)
	_ StatusHandler        = (*Flows)(nil)
	_ prometheus.Collector = (*Flows)(nil)
)

// NewFlows makes the flow log component.
func NewFlows(cfg FlowsConfig) (*Flows, error) {
	if cfg.Group == 0 {
		return nil, fmt.Errorf("flows: no NFLOG group")
	}
	if cfg.Index == nil {
		return nil, fmt.Errorf("flows: no rule index")
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 15 * time.Second
	}
	if cfg.RingSize <= 0 {
		cfg.RingSize = 100_000
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	if cfg.MaxRate <= 0 {
		cfg.MaxRate = 50_000
	}
	if cfg.Snaplen == 0 {
		cfg.Snaplen = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: metricPrefix + "flowlog_" + name, Help: help})
	}
	f := &Flows{
		cfg: cfg, log: cfg.Logger.With("component", "flows"),
		hub:         flowlog.NewHub(cfg.RingSize),
		names:       newEndpointNames(),
		staged:      newStagedView(cfg.NodeName, cfg.Logger.With("component", "flows")),
		ruleCounter: map[string]prometheus.Counter{},
		agg:         flowlog.NewAggregator(cfg.MaxKeys),
		messages:    counter("packets_total", "Logged first packets read from the flow log group."),
		lost:        counter("packets_lost_total", "Logged packets the kernel could not deliver (the socket's buffer was full)."),
		rateLimited: counter("packets_rate_limited_total", "Logged packets dropped unread over the rate limit."),
		unknown:     counter("packets_unknown_rule_total", "Logged packets whose rule identifier the agent did not know (a policy changed meanwhile)."),
		unparsable:  counter("packets_unparsable_total", "Logged packets whose headers could not be read."),
		records:     counter("records_total", "Flow records published."),
		overflow:    counter("packets_over_max_flows_total", "Logged packets of new flows beyond the per-interval bound, in no record."),
		ended:       counter("connections_ended_total", "Connections of flow records whose packet and byte totals were added when they ended."),
		ctEvents:    counter("conntrack_destroy_events_total", "Connections that ended (conntrack destroy events read), of flow records or not."),
		ruleConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "policy_rule_connections_total",
			Help: "New connections decided, by the deciding tier, policy (or profile) and rule, direction and action.",
		}, []string{"direction", "action", "kind", "tier", "policy", "rule"}),
		bound: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "flowlog_group_bound", Help: "1 while the agent reads its flow log NFLOG group.",
		}),
	}
	f.held = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricPrefix + "flowlog_records_held", Help: "Flow records in the ring of recent ones.",
	}, func() float64 { return float64(f.hub.Stats().Held) })
	return f, nil
}

// Name implements Component.
func (f *Flows) Name() string { return "flows" }

// Kinds implements Component: what names the ends of flows, and what the
// policy would be with the staged policies in force.
func (f *Flows) Kinds() []string {
	return append([]string{v3.KindWorkloadEndpoint, v3.KindHostEndpoint, v3.KindNetworkSet, v3.KindGlobalNetworkSet}, stagedKinds...)
}

// OnUpdate implements Component.
func (f *Flows) OnUpdate(u syncer.Update) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch u.Kind {
	case v3.KindWorkloadEndpoint, v3.KindHostEndpoint, v3.KindNetworkSet, v3.KindGlobalNetworkSet:
		f.names.update(u)
	}
	f.staged.update(u)
}

// OnInSync implements Component.
func (f *Flows) OnInSync() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.staged.graph.OnInSync()
}

// Apply implements Component: flows program nothing in the kernel; the
// staged view catches up with the datastore.
func (f *Flows) Apply(context.Context, bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.staged.apply()
	return nil
}

// Hub is where the records go (for tests and other consumers).
func (f *Flows) Hub() *flowlog.Hub { return f.hub }

// Run implements Runner: it reads the group until ctx ends, and flushes
// each interval. A group it cannot bind is retried every 10 s, logged
// and shown in the metrics: flow logs are not worth stopping the agent.
func (f *Flows) Run(ctx context.Context) error {
	ticker := time.NewTicker(f.cfg.FlushInterval)
	defer ticker.Stop()
	if f.cfg.Totals {
		f.aggMu.Lock()
		f.agg.Totals = true
		f.aggMu.Unlock()
		go func() {
			if err := f.readConntrack(ctx); err != nil && ctx.Err() == nil {
				f.log.Warn("flow logs: no packet and byte totals: cannot read conntrack's events", "err", err)
			}
		}()
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				f.flush()
			}
		}
	}()
	for {
		err := f.read(ctx)
		if ctx.Err() != nil {
			return nil
		}
		f.log.Error("flow logs: cannot read the NFLOG group; retrying in 10s", "group", f.cfg.Group, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Second):
		}
	}
}

// read binds the group and handles its packets until ctx ends or the
// socket fails.
func (f *Flows) read(ctx context.Context) error {
	c, err := nflog.Open(f.cfg.Group, f.cfg.Snaplen)
	if err != nil {
		return err
	}
	_ = c.SetReadBuffer(8 << 20)
	f.bound.Set(1)
	defer f.bound.Set(0)
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	f.log.Info("flow logs: reading", "group", f.cfg.Group, "interval", f.cfg.FlushInterval)
	var (
		seq      uint32
		haveSeq  bool
		second   = time.Now()
		inSecond int
	)
	for {
		msgs, err := c.Receive()
		switch {
		case errors.Is(err, nflog.ErrOverrun):
			continue // the sequence gap counts what was lost
		case err != nil:
			if ctx.Err() != nil || nflog.IsClosed(err) {
				return ctx.Err()
			}
			_ = c.Close()
			return err
		}
		now := time.Now()
		for _, m := range msgs {
			if !strings.HasPrefix(m.Prefix, flowlog.IDPrefix) {
				continue
			}
			if haveSeq && m.Seq != seq+1 && m.Seq > seq {
				f.lost.Add(float64(m.Seq - seq - 1))
			}
			seq, haveSeq = m.Seq, true
			f.messages.Inc()
			if now.Sub(second) >= time.Second {
				second, inSecond = now, 0
			}
			if inSecond++; inSecond > f.cfg.MaxRate {
				f.rateLimited.Inc()
				continue
			}
			f.handle(m, now)
		}
	}
}

// handle turns one logged packet into a record per decision it carries
// (two for a connection between local workloads when the client's egress
// decision came in the mark), or folds them into records.
func (f *Flows) handle(m nflog.Message, now time.Time) {
	var ok bool
	if f.ids, ok = f.cfg.Marks.Decisions(m.Prefix, m.Mark, f.ids[:0]); !ok {
		f.unknown.Inc()
		return
	}
	p, err := flowlog.ParsePacket(m.Payload)
	if err != nil {
		f.unparsable.Inc()
		return
	}
	for _, id := range f.ids {
		f.decided(id, p, now)
	}
}

// decided records that the rule identified by id decided the connection
// of packet p.
func (f *Flows) decided(id string, p flowlog.Packet, now time.Time) {
	ref, ok := f.cfg.Index.Lookup(id)
	if !ok {
		f.unknown.Inc()
		return
	}
	ctr := f.ruleCounter[id]
	if ctr == nil {
		d := ref.Decision
		rule := ""
		if d.Kind == "rule" || d.Kind == "profile rule" {
			rule = strconv.Itoa(d.Rule)
		}
		ctr = f.ruleConns.WithLabelValues(string(ref.Direction), string(ref.Action), d.Kind, d.Tier, policyOrProfile(d.Policy, d.Profile), rule)
		f.ruleCounter[id] = ctr
	}
	ctr.Inc()
	f.aggMu.Lock()
	f.mu.RLock()
	rec := f.agg.Add(p, id, ref, now, f.names.describe, func(r *flowlog.Record) { r.Staged = f.staged.verdict(r, p) })
	f.mu.RUnlock()
	if n := f.agg.Overflow; n > f.lastOverflow {
		f.overflow.Add(float64(n - f.lastOverflow))
		f.lastOverflow = n
	}
	f.aggMu.Unlock()
	if rec != nil {
		rec.Node = f.cfg.NodeName
		f.records.Inc()
		f.hub.Publish(*rec)
	}
}

func policyOrProfile(policy, profile string) string {
	if policy != "" {
		return policy
	}
	return profile
}

// flush ends an aggregation interval.
func (f *Flows) flush() {
	f.aggMu.Lock()
	rs := f.agg.Flush()
	f.aggMu.Unlock()
	for i := range rs {
		rs[i].Node = f.cfg.NodeName
	}
	f.records.Add(float64(len(rs)))
	f.hub.Publish(rs...)
}

// ServeStatus implements StatusHandler: GET /status/flows, to loopback
// clients and to those that present FlowsConfig.Token (records name
// workloads). ?last=N (default 100) returns the
// most recent records that pass the filters as JSON lines; ?follow=1 then
// keeps the response open and writes each new one as it comes. The
// filters: namespace, workload, selector, policy, action, port, protocol.
func (f *Flows) ServeStatus(w http.ResponseWriter, r *http.Request) {
	if !flowlog.Allowed(r.RemoteAddr, flowlog.BearerToken(r), f.cfg.Token) {
		http.Error(w, "flow records are served to loopback clients and to clients with the flow token only", http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	filter, err := flowlog.ParseFilter(q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	last := 100
	if s := q.Get("last"); s != "" {
		if last, err = strconv.Atoi(s); err != nil || last < 0 {
			http.Error(w, fmt.Sprintf("last %q: want a number of records, 0 or more", s), http.StatusBadRequest)
			return
		}
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	var sub *flowlog.Sub
	if follow {
		sub = f.hub.Subscribe(4096)
		defer sub.Close()
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if last > 0 {
		for _, rec := range f.hub.Last(last, filter) {
			if enc.Encode(rec) != nil {
				return
			}
		}
	}
	if !follow {
		return
	}
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case rec := <-sub.C():
			if !filter.Match(&rec) {
				continue
			}
			if enc.Encode(rec) != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}

// Describe implements prometheus.Collector.
func (f *Flows) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range f.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (f *Flows) Collect(ch chan<- prometheus.Metric) {
	for _, c := range f.collectors() {
		c.Collect(ch)
	}
}

func (f *Flows) collectors() []prometheus.Collector {
	return []prometheus.Collector{f.messages, f.lost, f.rateLimited, f.unknown, f.unparsable, f.records, f.overflow, f.ruleConns, f.bound, f.held, f.ended, f.ctEvents}
}

// endpointNames knows what each address is: a workload or host
// endpoint's address exactly, a network set's nets by longest prefix.
type endpointNames struct {
	byAddr map[netip.Addr]flowlog.Endpoint
	// addrsOf and netsOf are what each resource put in, to take it out.
	addrsOf map[string][]netip.Addr
	netsOf  map[string][]netip.Prefix
	// nets by prefix length, for longest-prefix lookups.
	nets map[int]map[netip.Prefix]flowlog.Endpoint
}

func newEndpointNames() endpointNames {
	return endpointNames{byAddr: map[netip.Addr]flowlog.Endpoint{}, addrsOf: map[string][]netip.Addr{},
		netsOf: map[string][]netip.Prefix{}, nets: map[int]map[netip.Prefix]flowlog.Endpoint{}}
}

func (n *endpointNames) update(u syncer.Update) {
	key := u.Kind + "/" + u.Namespace + "/" + u.Name
	for _, a := range n.addrsOf[key] {
		delete(n.byAddr, a)
	}
	for _, p := range n.netsOf[key] {
		delete(n.nets[p.Bits()], p)
	}
	delete(n.addrsOf, key)
	delete(n.netsOf, key)
	if u.Resource == nil {
		return
	}
	e := flowlog.Endpoint{Kind: u.Kind, Namespace: u.Namespace, Name: u.Name, Labels: u.Resource.GetLabels()}
	var addrs []string
	var nets []string
	switch r := u.Resource.(type) {
	case *v3.WorkloadEndpoint:
		addrs = r.Spec.IPNetworks
		e.Workload = r.Spec.Pod
		if e.Workload == "" {
			e.Workload = r.Spec.Workload
		}
	case *v3.HostEndpoint:
		addrs = r.Spec.ExpectedIPs
	case *v3.NetworkSet:
		nets = r.Spec.Nets
	case *v3.GlobalNetworkSet:
		nets = r.Spec.Nets
	}
	for _, s := range addrs {
		a, err := netip.ParseAddr(s)
		if p, perr := netip.ParsePrefix(s); perr == nil {
			a, err = p.Addr(), nil
		}
		if err != nil {
			continue
		}
		a = a.Unmap()
		n.byAddr[a] = e
		n.addrsOf[key] = append(n.addrsOf[key], a)
	}
	for _, s := range nets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			continue
		}
		p = p.Masked()
		m := n.nets[p.Bits()]
		if m == nil {
			m = map[netip.Prefix]flowlog.Endpoint{}
			n.nets[p.Bits()] = m
		}
		m[p] = e
		n.netsOf[key] = append(n.netsOf[key], p)
	}
}

// describe names address a (its endpoint, or the network set with the
// longest prefix holding it), or gives the address alone.
func (n *endpointNames) describe(a netip.Addr) flowlog.Endpoint {
	if e, ok := n.byAddr[a]; ok {
		e.Addr = a
		return e
	}
	for bits := a.BitLen(); bits >= 0; bits-- {
		m := n.nets[bits]
		if len(m) == 0 {
			continue
		}
		p, _ := a.Prefix(bits)
		if e, ok := m[p]; ok {
			e.Addr = a
			return e
		}
	}
	return flowlog.Endpoint{Addr: a}
}

// accountingSysctl turns conntrack's packet and byte counters on in the
// agent's network namespace.
const accountingSysctl = "/proc/sys/net/netfilter/nf_conntrack_acct"

// readConntrack adds each connection's packets and bytes to its flow when
// it ends (conntrack's destroy events), until ctx ends. A connection is
// found by its original tuple, or, when NAT changed it (a Service), by
// its reply tuple reversed: the addresses policy saw.
func (f *Flows) readConntrack(ctx context.Context) error {
	if err := os.WriteFile(accountingSysctl, []byte("1"), 0); err != nil {
		f.log.Warn("flow logs: cannot turn conntrack accounting on; packet and byte totals will be 0", "err", err)
	}
	c, err := conntrack.Dial(nil)
	if err != nil {
		return err
	}
	evs := make(chan conntrack.Event, 4096)
	errs, err := c.Listen(evs, 1, []netfilter.NetlinkGroup{netfilter.GroupCTDestroy})
	if err != nil {
		c.Close()
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case ev := <-evs:
			fl := ev.Flow
			if ev.Type != conntrack.EventDestroy || fl == nil {
				continue
			}
			f.ctEvents.Inc()
			o, r := fl.TupleOrig, fl.TupleReply
			orig := flowlog.ConnTuple{Src: o.IP.SourceAddress, Dst: o.IP.DestinationAddress, Protocol: o.Proto.Protocol,
				SrcPort: o.Proto.SourcePort, DstPort: o.Proto.DestinationPort}
			reply := flowlog.ConnTuple{Src: r.IP.DestinationAddress, Dst: r.IP.SourceAddress, Protocol: r.Proto.Protocol,
				SrcPort: r.Proto.DestinationPort, DstPort: r.Proto.SourcePort}
			out, in := fl.CountersOrig, fl.CountersReply
			f.aggMu.Lock()
			if f.agg.Ended(orig, out.Packets, out.Bytes, in.Packets, in.Bytes) ||
				f.agg.Ended(reply, out.Packets, out.Bytes, in.Packets, in.Bytes) {
				f.ended.Inc()
			}
			f.aggMu.Unlock()
		}
	}
}
