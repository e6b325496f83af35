package kubecontrollers

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metricPrefix starts every metric of the controllers.
const metricPrefix = "tortie_kube_controllers_"

type metrics struct {
	leader       prometheus.Gauge
	terms        prometheus.Counter
	syncs        *prometheus.CounterVec
	syncDuration *prometheus.HistogramVec
	writes       *prometheus.CounterVec
	queueDepth   *prometheus.GaugeVec
	firstSync    *prometheus.GaugeVec
	fullSyncs    *prometheus.CounterVec
	ipamReleased *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "leader",
			Help: "1 while this instance holds the leader lease and runs the controllers.",
		}),
		terms: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "leader_terms_total",
			Help: "Times this instance became leader.",
		}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "syncs_total",
			Help: "Keys reconciled, by controller and result (ok or error).",
		}, []string{"controller", "result"}),
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricPrefix + "sync_duration_seconds",
			Help:    "Time to reconcile one key.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"controller"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "writes_total",
			Help: "Writes to the datastore, by controller, kind and operation (create, update, delete, release).",
		}, []string{"controller", "kind", "op"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricPrefix + "queue_depth",
			Help: "Keys waiting in each controller's queue.",
		}, []string{"controller"}),
		firstSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricPrefix + "first_sync_seconds",
			Help: "Time from the start of the leadership term to the end of each controller's first full reconcile.",
		}, []string{"controller"}),
		fullSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "full_reconciles_total",
			Help: "Full reconciles started (every key queued again), by controller.",
		}, []string{"controller"}),
		ipamReleased: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "ipam_released_total",
			Help: "IPAM garbage released: addresses and block affinities.",
		}, []string{"what"}),
	}
	reg.MustRegister(m.leader, m.terms, m.syncs, m.syncDuration, m.writes, m.queueDepth, m.firstSync, m.fullSyncs, m.ipamReleased,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
