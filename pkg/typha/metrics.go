package typha

import "github.com/prometheus/client_golang/prometheus"

// metrics are a server's Prometheus metrics.
type metrics struct {
	connections      prometheus.Gauge
	accepted         prometheus.Counter
	disconnects      *prometheus.CounterVec
	inSync           prometheus.Gauge
	keys             prometheus.Gauge
	logEntries       prometheus.Gauge
	snapshotKeys     prometheus.Gauge
	snapshotBytes    prometheus.Gauge
	snapshotSeconds  prometheus.Histogram
	snapshotsEncoded prometheus.Counter
	sendLatency      prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tortie_typha_connections",
			Help: "Agents connected now (past the hello)."}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Name: "tortie_typha_connections_accepted_total",
			Help: "TCP connections accepted."}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tortie_typha_disconnects_total",
			Help: "Connections ended, by reason: handshake, bad hello, write failed (the agent left or a write timed out), too slow, shutdown."}, []string{"reason"}),
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tortie_typha_in_sync",
			Help: "1 once every prefix delivered its first snapshot from the datastore."}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tortie_typha_keys",
			Help: "Datastore keys held."}),
		logEntries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tortie_typha_log_entries",
			Help: "Changes kept for agents that are behind."}),
		snapshotKeys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tortie_typha_snapshot_keys",
			Help: "Keys in the last snapshot sent."}),
		snapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tortie_typha_snapshot_bytes",
			Help: "Bytes of the last snapshot sent."}),
		snapshotSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tortie_typha_snapshot_seconds",
			Help: "Time to send an agent its snapshot.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		snapshotsEncoded: prometheus.NewCounter(prometheus.CounterOpts{Name: "tortie_typha_snapshots_encoded_total",
			Help: "Snapshots encoded; agents connecting close together share one."}),
		sendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tortie_typha_send_latency_seconds",
			Help: "From a change reaching the typha to its being written to an agent.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
	}
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.connections, m.accepted, m.disconnects, m.inSync, m.keys, m.logEntries,
		m.snapshotKeys, m.snapshotBytes, m.snapshotSeconds, m.snapshotsEncoded, m.sendLatency}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.all() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.all() {
		c.Collect(ch)
	}
}
