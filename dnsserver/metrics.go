package dnsserver

import (
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	queries   *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	truncated *prometheus.CounterVec
	dropped   *prometheus.CounterVec

	// The common children, resolved once: a query should not pay for a
	// label lookup.
	noerror, nxdomain [2]map[uint16]prometheus.Counter // by transport, qtype
	seconds           [2]prometheus.Observer
}

// qtypes are the query types counted under their own name; the rest are
// "other", to bound the label's values.
var qtypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeANY, dns.TypeSOA, dns.TypeNS, dns.TypeCNAME, dns.TypeTXT, dns.TypePTR}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_dnsserver_queries_total",
			Help: "DNS queries answered, by transport (udp, tcp), query type and response code.",
		}, []string{"transport", "type", "rcode"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "disco_dnsserver_query_seconds",
			Help:    "Time to answer a DNS query, from the packet read to the answer packed, by transport.",
			Buckets: []float64{5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3},
		}, []string{"transport"}),
		truncated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_dnsserver_truncated_total",
			Help: "Answers cut to fit, by transport: on udp at the client's buffer (TC set when an answer record had to go), on tcp at the 64 KiB limit.",
		}, []string{"transport"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_dnsserver_dropped_total",
			Help: "Packets dropped without an answer, by reason: malformed (not a DNS message), response (a response sent to us), tcp_limit (too many TCP connections).",
		}, []string{"reason"}),
	}
	for i, transport := range []string{"udp", "tcp"} {
		m.noerror[i] = map[uint16]prometheus.Counter{}
		m.nxdomain[i] = map[uint16]prometheus.Counter{}
		for _, t := range qtypes {
			m.noerror[i][t] = m.queries.WithLabelValues(transport, dns.TypeToString[t], "NOERROR")
			m.nxdomain[i][t] = m.queries.WithLabelValues(transport, dns.TypeToString[t], "NXDOMAIN")
		}
		m.seconds[i] = m.latency.WithLabelValues(transport)
	}
	for _, r := range []string{"malformed", "response", "tcp_limit"} {
		m.dropped.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.queries, m.latency, m.truncated, m.dropped)
	}
	return m
}

func (m *metrics) observe(req, resp *dns.Msg, transport string, truncated bool, took time.Duration) {
	i := 0
	if transport == "tcp" {
		i = 1
	}
	m.seconds[i].Observe(took.Seconds())
	if truncated {
		m.truncated.WithLabelValues(transport).Inc()
	}
	qtype := uint16(0)
	if len(req.Question) == 1 {
		qtype = req.Question[0].Qtype
	}
	var c prometheus.Counter
	switch resp.Rcode {
	case dns.RcodeSuccess:
		c = m.noerror[i][qtype]
	case dns.RcodeNameError:
		c = m.nxdomain[i][qtype]
	}
	if c == nil {
		name, ok := dns.TypeToString[qtype]
		if _, counted := m.noerror[i][qtype]; !counted || !ok {
			name = "other"
		}
		c = m.queries.WithLabelValues(transport, name, dns.RcodeToString[resp.Rcode])
	}
	c.Inc()
}
