package guard

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	services, backends, held, holds prometheus.Gauge
	changes                         *prometheus.CounterVec
	sourceHealthy                   *prometheus.GaugeVec
	sourceUpdates, sourceFailures   *prometheus.CounterVec
	lkgLoaded                       prometheus.Gauge
	lkgWrites                       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		services: prometheus.NewGauge(prometheus.GaugeOpts{Name: "disco_guard_services", Help: "Services in the table the guard lets through."}),
		backends: prometheus.NewGauge(prometheus.GaugeOpts{Name: "disco_guard_backends", Help: "Backends in the table, held ones included."}),
		held:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "disco_guard_held_backends", Help: "Backends a source no longer lists that the guard keeps while a removal is held."}),
		holds:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "disco_guard_holds", Help: "Services with a large removal held."}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_guard_changes_total",
			Help: "What the guard did with removals: removed (small, at once), held (a large one), confirmed (after the window or by probes), withdrawn (the source took it back), probed_dead (a held backend failed the agent's probes).",
		}, []string{"kind"}),
		sourceHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "disco_source_healthy", Help: "1 while a source reports, 0 after it failed (its last report stands)."}, []string{"source"}),
		sourceUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "disco_source_updates_total", Help: "Reports from each source."}, []string{"source"}),
		sourceFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_source_failures_total",
			Help: "Failures of each source: unreachable, timed out, or returned something unusable.",
		}, []string{"source"}),
		lkgLoaded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "disco_guard_lkg_active", Help: "1 while the last-known-good state loaded at start stands in for sources that have not reported yet."}),
		lkgWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "disco_guard_lkg_writes_total", Help: "Writes of the last-known-good state, by result (ok, error)."}, []string{"result"}),
	}
	for _, k := range []string{"removed", "held", "confirmed", "withdrawn", "probed_dead"} {
		m.changes.WithLabelValues(k)
	}
	if reg != nil {
		reg.MustRegister(m.services, m.backends, m.held, m.holds, m.changes, m.sourceHealthy, m.sourceUpdates, m.sourceFailures, m.lkgLoaded, m.lkgWrites)
	}
	return m
}
