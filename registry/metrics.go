package registry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/discotech/disco/catalog"
)

type metrics struct {
	writes *prometheus.CounterVec
	apply  prometheus.Histogram
	leader prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, s *Store) *metrics {
	m := &metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_registry_writes_total",
			Help: "Writes proposed to raft, by operation (register, deregister, status) and result (ok, rejected, error).",
		}, []string{"op", "result"}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "disco_registry_raft_apply_seconds",
			Help:    "Time from proposing a write to raft until it is committed and applied.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "disco_registry_raft_leader",
			Help: "1 while this server is the raft leader.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.writes, m.apply, m.leader, &stateCollector{s: s})
	}
	return m
}

// stateCollector reads gauges from the state at scrape time, so the apply
// path does no metric work for them.
type stateCollector struct{ s *Store }

var (
	instancesDesc = prometheus.NewDesc("disco_registry_instances",
		"Registered instances, by status.", []string{"status"}, nil)
	servicesDesc = prometheus.NewDesc("disco_registry_services",
		"Services with at least one instance.", nil, nil)
	indexDesc = prometheus.NewDesc("disco_registry_index",
		"Highest index at which any service changed.", nil, nil)
	appliedDesc = prometheus.NewDesc("disco_registry_raft_applied_index",
		"Last raft log index applied to the catalog.", nil, nil)
	lastDesc = prometheus.NewDesc("disco_registry_raft_last_index",
		"Last raft log index stored.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- instancesDesc
	ch <- servicesDesc
	ch <- indexDesc
	ch <- appliedDesc
	ch <- lastDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.state
	counts := st.Counts()
	for _, status := range []catalog.Status{catalog.Passing, catalog.Warning, catalog.Critical} {
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(counts[status]), string(status))
	}
	services, index := st.Services()
	ch <- prometheus.MustNewConstMetric(servicesDesc, prometheus.GaugeValue, float64(len(services)))
	ch <- prometheus.MustNewConstMetric(indexDesc, prometheus.GaugeValue, float64(index))
	ch <- prometheus.MustNewConstMetric(appliedDesc, prometheus.GaugeValue, float64(st.Applied()))
	if c.s.raft != nil {
		ch <- prometheus.MustNewConstMetric(lastDesc, prometheus.GaugeValue, float64(c.s.raft.LastIndex()))
	}
}
