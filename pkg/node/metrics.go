package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metric names are prefixed with this.
const metricPrefix = "tortie_"

// latencyBuckets cover 1ms to ~16s: an incremental apply takes
// milliseconds, a cold start with a big datastore seconds.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// agentMetrics are the agent's own metrics; components register theirs.
type agentMetrics struct {
	inSync        prometheus.Gauge
	ready         prometheus.Gauge
	firstSync     prometheus.Gauge
	programmed    prometheus.Gauge
	resyncs       prometheus.Counter
	updates       *prometheus.CounterVec
	undecodable   prometheus.Counter
	syncLatency   prometheus.Histogram
	applyDuration *prometheus.HistogramVec
	applyFailures *prometheus.CounterVec
}

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "datastore_in_sync",
			Help: "1 once every watched kind has delivered its first snapshot.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "ready",
			Help: "1 when in sync and the last apply of every component succeeded (what /readiness says).",
		}),
		firstSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "datastore_first_sync_seconds",
			Help: "Time from agent start to the first complete snapshot of the datastore.",
		}),
		programmed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "dataplane_first_programmed_seconds",
			Help: "Time from agent start to the first successful apply of every component after the first snapshot (cold start).",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "datastore_resyncs_total",
			Help: "Times a watched kind listed the datastore again after its first snapshot (compaction, lost watch).",
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "datastore_updates_total",
			Help: "Resource changes received from the datastore, by kind.",
		}, []string{"kind"}),
		undecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "datastore_undecodable_total",
			Help: "Stored values that could not be decoded and were skipped.",
		}),
		syncLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricPrefix + "sync_latency_seconds",
			Help:    "Time from the arrival of a datastore update to the end of the apply that programmed it (the oldest update of each burst).",
			Buckets: latencyBuckets,
		}),
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricPrefix + "apply_duration_seconds",
			Help:    "Duration of one component's apply; mode is incremental or full.",
			Buckets: latencyBuckets,
		}, []string{"component", "mode"}),
		applyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "apply_failures_total",
			Help: "Applies that failed (and will be retried as full applies), by component.",
		}, []string{"component"}),
	}
	reg.MustRegister(m.inSync, m.ready, m.firstSync, m.programmed, m.resyncs, m.updates, m.undecodable,
		m.syncLatency, m.applyDuration, m.applyFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
