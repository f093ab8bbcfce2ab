package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discotech/disco/catalog"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	rejected *prometheus.CounterVec
	watchers *prometheus.GaugeVec

	heartbeatRenewed, heartbeatRevived, heartbeatUnknown prometheus.Counter
	leaseExpired                                         prometheus.Counter
	reaped                                               prometheus.Counter

	checks       *prometheus.CounterVec
	checkSeconds *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	heartbeats := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "disco_lease_heartbeats_total",
		Help: "TTL heartbeats, by result: renewed, revived (the lease had expired), unknown (404).",
	}, []string{"result"})
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_server_http_requests_total",
			Help: "HTTP API requests, by route pattern and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "disco_server_http_request_seconds",
			Help:    "HTTP API request duration, by route pattern (blocking queries include their wait).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"route"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_server_rejected_total",
			Help: "Requests answered with a 4xx, by reason (invalid, malformed, unknown_field, too_large, not_found, ...).",
		}, []string{"reason"}),
		watchers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "disco_server_watchers",
			Help: "Open watchers, by kind: blocking (long-poll queries) and stream (/v1/watch).",
		}, []string{"kind"}),
		heartbeatRenewed: heartbeats.WithLabelValues("renewed"),
		heartbeatRevived: heartbeats.WithLabelValues("revived"),
		heartbeatUnknown: heartbeats.WithLabelValues("unknown"),
		leaseExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "disco_lease_expired_total",
			Help: "TTL leases that ran out without a heartbeat.",
		}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "disco_server_reaped_total",
			Help: "Instances removed for staying critical past deregister_after.",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_health_checks_total",
			Help: "Health check runs, by check type and result status.",
		}, []string{"type", "status"}),
		checkSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "disco_health_check_seconds",
			Help:    "Health check run duration, by check type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"type"}),
	}
	reg.MustRegister(m.requests, m.latency, m.rejected, m.watchers, heartbeats, m.leaseExpired, m.reaped, m.checks, m.checkSeconds)
	// Export every known series from the start, at zero, so rate() and
	// alerts work before the first event.
	for _, kind := range []string{"blocking", "stream"} {
		m.watchers.WithLabelValues(kind)
	}
	for _, typ := range []string{"http", "tcp", "vitals"} {
		m.checkSeconds.WithLabelValues(typ)
		for _, st := range []catalog.Status{catalog.Passing, catalog.Warning, catalog.Critical} {
			m.checks.WithLabelValues(typ, string(st))
		}
	}
	return m
}

func (m *metrics) checkResult(typ string, status catalog.Status, took time.Duration) {
	m.checks.WithLabelValues(typ, string(status)).Inc()
	m.checkSeconds.WithLabelValues(typ).Observe(took.Seconds())
}
