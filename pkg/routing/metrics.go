package routing

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// The WireGuard metrics, named as Calico's agent names them, read from the
// device at each scrape. None while WireGuard is off.
var (
	wgLabels    = []string{"hostname", "public_key", "peer_key", "peer_endpoint", "peer_node"}
	wgMetaDesc  = prometheus.NewDesc("wireguard_meta", "The WireGuard device: 1, with its name, kind (kernel or userspace), public key and port.", []string{"hostname", "iface", "kind", "public_key", "listen_port"}, nil)
	wgRecvDesc  = prometheus.NewDesc("wireguard_bytes_rcvd", "Bytes received from the peer through the WireGuard device.", wgLabels, nil)
	wgSentDesc  = prometheus.NewDesc("wireguard_bytes_sent", "Bytes sent to the peer through the WireGuard device.", wgLabels, nil)
	wgShakeDesc = prometheus.NewDesc("wireguard_latest_handshake_seconds", "When the latest handshake with the peer happened, in seconds since 1970 (0: never).", wgLabels, nil)
)

var _ prometheus.Collector = (*Component)(nil)

// Describe implements prometheus.Collector.
func (c *Component) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{wgMetaDesc, wgRecvDesc, wgSentDesc, wgShakeDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the WireGuard device's peers.
func (c *Component) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	dev, nodes := c.wg, c.wgNodes
	c.mu.Unlock()
	if dev == nil {
		return
	}
	d, err := dev.Status()
	if err != nil {
		return // closed meanwhile, or unreadable: Status says why
	}
	host, pub := c.cfg.NodeName, d.PublicKey.String()
	ch <- prometheus.MustNewConstMetric(wgMetaDesc, prometheus.GaugeValue, 1,
		host, d.Name, d.Type.String(), pub, strconv.Itoa(d.ListenPort))
	for _, p := range d.Peers {
		ep := ""
		if p.Endpoint != nil {
			ep = p.Endpoint.String()
		}
		labels := []string{host, pub, p.PublicKey.String(), ep, nodes[p.PublicKey]}
		ch <- prometheus.MustNewConstMetric(wgRecvDesc, prometheus.CounterValue, float64(p.ReceiveBytes), labels...)
		ch <- prometheus.MustNewConstMetric(wgSentDesc, prometheus.CounterValue, float64(p.TransmitBytes), labels...)
		shake := 0.0
		if !p.LastHandshakeTime.IsZero() {
			shake = float64(p.LastHandshakeTime.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(wgShakeDesc, prometheus.GaugeValue, shake, labels...)
	}
}
