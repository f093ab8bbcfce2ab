package router

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the router's Prometheus metrics. Per-route and per-backend
// series are made on a route's first request, so that a table of 100,000
// routes costs nothing until they carry traffic.
type metrics struct {
	requests       *prometheus.CounterVec   // route, code
	duration       *prometheus.HistogramVec // route
	backend        *prometheus.CounterVec   // route, backend, outcome
	retriesVec     *prometheus.CounterVec   // route, reason
	refused        *prometheus.CounterVec   // route
	circuit        *prometheus.CounterVec   // route, backend
	noBackendVec   *prometheus.CounterVec   // route
	ejectionsVec   *prometheus.CounterVec   // route, backend, reason
	polls          *prometheus.CounterVec   // result
	tcpConns       *prometheus.CounterVec   // route, backend
	tcpBytes       *prometheus.CounterVec   // route, direction
	unrouted       prometheus.Counter
	upgrades       prometheus.Counter
	routeErrors    prometheus.Counter
	routes         prometheus.Gauge
	announceReject *prometheus.CounterVec // reason
	announceState  *prometheus.CounterVec // op: save, load
}

type routeMetrics struct {
	codes    [6]prometheus.Counter // 1xx … 5xx, and 499 (client gone)
	duration prometheus.Observer
}

type memberMetrics struct {
	ok, status5xx, failed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, r *Router) *metrics {
	f := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "disco", Subsystem: "router", Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	one := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "disco", Subsystem: "router", Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	m := &metrics{
		requests:       f("requests_total", "Requests answered, by route and status class (499: the client went away).", "route", "code"),
		backend:        f("backend_requests_total", "Tries sent to each backend of each route, by outcome (ok, 5xx, error).", "route", "backend", "outcome"),
		retriesVec:     f("retries_total", "Retries, by route and reason (connect, status, timeout).", "route", "reason"),
		refused:        f("retries_refused_total", "Retries not made because the route's retry budget was spent.", "route"),
		circuit:        f("circuit_open_total", "Picks skipped because the backend had max-requests in flight.", "route", "backend"),
		noBackendVec:   f("no_backend_total", "Requests answered 503 because no backend of the route was eligible.", "route"),
		ejectionsVec:   f("ejections_total", "Backends ejected by outlier detection, by reason.", "route", "backend", "reason"),
		polls:          f("vitals_polls_total", "Vitals readings, by result (ok, failed).", "result"),
		tcpConns:       f("tcp_connections_total", "Connections proxied on TCP routes.", "route", "backend"),
		tcpBytes:       f("tcp_bytes_total", "Bytes proxied on TCP routes, by direction (in: from clients, out: to clients).", "route", "direction"),
		announceReject: f("announce_rejected_total", "Announcements refused, by reason.", "reason"),
		announceState:  f("announce_state_errors_total", "Failures to save the announced backends to the state dir, or to load them from it, by op (save, load).", "op"),
		unrouted:       one("unrouted_total", "Requests that matched no route (404)."),
		upgrades:       one("upgrades_total", "Protocol upgrades (WebSocket) passed through."),
		routeErrors:    one("route_errors_total", "Route tags and overrides skipped as malformed or conflicting."),
	}
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "disco", Subsystem: "router", Name: "request_duration_seconds",
		Help:    "Time from a request's arrival to its answer's last byte, by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route"})
	m.routes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "disco", Subsystem: "router", Name: "routes", Help: "Routes in the table."})
	reg.MustRegister(m.duration, m.routes, &backendCollector{r: r})
	return m
}

var codeClasses = [6]string{"1xx", "2xx", "3xx", "4xx", "5xx", "499"}

func (m *metrics) route(st *routeState) *routeMetrics {
	if rm := st.m.Load(); rm != nil {
		return rm
	}
	rm := &routeMetrics{duration: m.duration.WithLabelValues(st.route.Key)}
	for i, c := range codeClasses {
		rm.codes[i] = m.requests.WithLabelValues(st.route.Key, c)
	}
	st.m.CompareAndSwap(nil, rm)
	return st.m.Load()
}

func (m *metrics) request(st *routeState, status int, d time.Duration) {
	rm := m.route(st)
	i := status/100 - 1
	if status == 499 {
		i = 5
	}
	if i >= 0 && i < len(rm.codes) {
		rm.codes[i].Inc()
	}
	rm.duration.Observe(d.Seconds())
}

func (m *metrics) member(st *routeState, mb *member) *memberMetrics {
	if mm := mb.m.Load(); mm != nil {
		return mm
	}
	k, a := st.route.Key, mb.up.addr
	mm := &memberMetrics{
		ok:        m.backend.WithLabelValues(k, a, "ok"),
		status5xx: m.backend.WithLabelValues(k, a, "5xx"),
		failed:    m.backend.WithLabelValues(k, a, "error"),
	}
	mb.m.CompareAndSwap(nil, mm)
	return mb.m.Load()
}

func (m *metrics) backendResult(st *routeState, mb *member, status int, err error) prometheus.Counter {
	mm := m.member(st, mb)
	switch {
	case err != nil:
		return mm.failed
	case status >= 500:
		return mm.status5xx
	}
	return mm.ok
}

func (m *metrics) retries(st *routeState, reason string) prometheus.Counter {
	return m.retriesVec.WithLabelValues(st.route.Key, reason)
}

func (m *metrics) retriesRefused(st *routeState) prometheus.Counter {
	return m.refused.WithLabelValues(st.route.Key)
}

func (m *metrics) circuitOpen(st *routeState, mb *member) prometheus.Counter {
	return m.circuit.WithLabelValues(st.route.Key, mb.up.addr)
}

func (m *metrics) noBackend(st *routeState) prometheus.Counter {
	return m.noBackendVec.WithLabelValues(st.route.Key)
}

func (m *metrics) ejections(st *routeState, mb *member, reason string) prometheus.Counter {
	return m.ejectionsVec.WithLabelValues(st.route.Key, mb.up.addr, reason)
}

func (m *metrics) vitalsPolls(ok bool) prometheus.Counter {
	if ok {
		return m.polls.WithLabelValues("ok")
	}
	return m.polls.WithLabelValues("failed")
}

// backendCollector reports each backend's live figures as gauges when
// scraped: requests in flight, its weight factor from the vitals, and
// whether it is ejected from any route.
type backendCollector struct{ r *Router }

var (
	inflightDesc = prometheus.NewDesc("disco_router_backend_in_flight", "Requests in flight to the backend, across routes.", []string{"service", "backend"}, nil)
	factorDesc   = prometheus.NewDesc("disco_router_backend_vitals_factor", "The share of its weight the backend's vitals leave it (0: not ready, 1: full).", []string{"service", "backend"}, nil)
	ejectedDesc  = prometheus.NewDesc("disco_router_backend_ejected", "1 while the backend is ejected from at least one route.", []string{"service", "backend"}, nil)
)

func (c *backendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inflightDesc
	ch <- factorDesc
	ch <- ejectedDesc
}

func (c *backendCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	for _, up := range c.r.upstreams {
		ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(up.inflight.Load()), up.service, up.addr)
		ch <- prometheus.MustNewConstMetric(factorDesc, prometheus.GaugeValue, up.weightFactor(), up.service, up.addr)
		ejected := 0.0
		for _, st := range up.routes {
			for _, m := range st.members {
				if m.up == up && m.b.Ejected(now) {
					ejected = 1
				}
			}
		}
		ch <- prometheus.MustNewConstMetric(ejectedDesc, prometheus.GaugeValue, ejected, up.service, up.addr)
	}
}
