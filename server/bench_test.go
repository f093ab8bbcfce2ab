package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// discard is a ResponseWriter that keeps nothing, so the benchmarks measure
// the handler, not a recorder.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkHeartbeat is the server's hottest path: routing, metrics and
// the lease renewal, without the network.
func BenchmarkHeartbeat(b *testing.B) {
	s := start(b)
	const n = 1000
	reqs := make([]*http.Request, n)
	for i := range n {
		call(s, "PUT", fmt.Sprintf("/v1/services/web/instances/w%d", i), `{"address":"10.0.0.1","port":80,"ttl":"1m"}`)
		reqs[i] = httptest.NewRequest("PUT", fmt.Sprintf("/v1/services/web/instances/w%d/heartbeat", i), nil)
	}
	h := s.Handler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discard{h: http.Header{}}
		i := 0
		for pb.Next() {
			h.ServeHTTP(w, reqs[i%n])
			i++
		}
	})
}

// BenchmarkGetService reads a 100-instance service.
func BenchmarkGetService(b *testing.B) {
	s := start(b)
	for i := range 100 {
		call(s, "PUT", fmt.Sprintf("/v1/services/web/instances/w%d", i), `{"address":"10.0.0.1","port":80,"tags":["v1"]}`)
	}
	req := httptest.NewRequest("GET", "/v1/services/web", nil)
	h := s.Handler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discard{h: http.Header{}}
		for pb.Next() {
			h.ServeHTTP(w, req)
		}
	})
}

// BenchmarkHeartbeatBatch renews 1,000 leases per request.
func BenchmarkHeartbeatBatch(b *testing.B) {
	s := start(b)
	const n = 1000
	keys := make([]string, n)
	for i := range n {
		call(s, "PUT", fmt.Sprintf("/v1/services/web/instances/w%d", i), `{"address":"10.0.0.1","port":80,"ttl":"1m"}`)
		keys[i] = fmt.Sprintf("%q", fmt.Sprintf("web/w%d", i))
	}
	body := `{"instances":[` + strings.Join(keys, ",") + `]}`
	h := s.Handler()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.ServeHTTP(&discard{h: http.Header{}}, httptest.NewRequest("PUT", "/v1/heartbeats", strings.NewReader(body)))
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "heartbeats/s")
}
