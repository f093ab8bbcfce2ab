package health

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/google/go-cmp/cmp"
)

const goodVitals = `{"ready":true,"requests_in_progress":42,"cpu_usage":35.2,"memory_usage":67.8,"gpu_usage":0.0,` +
	`"failed_responses":15,"connected_peers":3,"backoff_requests":0,"uptime_seconds":86400,"version":"1.0.0"}`

var goodFigures = catalog.Vitals{
	Ready:              true,
	RequestsInProgress: 42,
	CPUUsage:           35.2,
	MemoryUsage:        67.8,
	FailedResponses:    15,
	ConnectedPeers:     3,
	UptimeSeconds:      86400,
	Version:            "1.0.0",
}

// padTo pads a JSON object with trailing spaces to exactly n bytes.
func padTo(s string, n int) string { return s + strings.Repeat(" ", n-len(s)) }

func TestVitals(t *testing.T) {
	notReady := goodFigures
	notReady.Ready = false
	huge := `{"ready":true,"version":"` + strings.Repeat("x", MaxVitalsBody) + `"}`

	bodies := map[string]struct {
		code    int
		body    string
		chunked bool // no Content-Length: the check must stop reading by itself
	}{
		"/good":       {200, goodVitals, false},
		"/not-ready":  {200, strings.Replace(goodVitals, `"ready":true`, `"ready":false`, 1), false},
		"/extra":      {200, `{"ready":true,"queue_depth":7,"shards":[1,2],"build":{"go":"1.26"},"version":"2"}`, false},
		"/minimal":    {200, `{"ready":true}`, false},
		"/no-ready":   {200, `{"cpu_usage":35.2}`, false},
		"/null-ready": {200, `{"ready":null}`, false},
		"/str-ready":  {200, `{"ready":"yes"}`, false},
		"/frac":       {200, `{"ready":true,"requests_in_progress":4.5}`, false},
		"/negative":   {200, `{"ready":true,"failed_responses":-1}`, false},
		"/invalid":    {200, `{"ready":tru}`, false},
		"/trailing":   {200, `{"ready":true} {"ready":false}`, false},
		"/array":      {200, `[{"ready":true}]`, false},
		"/empty":      {200, ``, false},
		"/503":        {503, `{"ready":false,"reason":"draining"}`, false},
		"/huge":       {200, huge, false},
		"/huge-chunk": {200, huge, true},
		"/at-limit":   {200, padTo(`{"ready":true}`, MaxVitalsBody), false},
	}
	mux := http.NewServeMux()
	for path, b := range bodies {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Accept") != "application/json" || r.UserAgent() != "disco-health/1" {
				http.Error(w, "bad headers", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(b.code)
			if b.chunked {
				for rest := b.body; rest != ""; {
					n := min(len(rest), 4<<10)
					if _, err := w.Write([]byte(rest[:n])); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					rest = rest[n:]
				}
				return
			}
			w.Write([]byte(b.body))
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tests := []struct {
		path   string
		want   judged
		output []string
	}{
		{"/good", judged{catalog.Passing, &goodFigures}, []string{"vitals: ready=true"}},
		{"/not-ready", judged{catalog.Critical, &notReady}, []string{"vitals: ready=false"}},
		{"/extra", judged{catalog.Passing, &catalog.Vitals{Ready: true, Version: "2"}}, []string{"vitals: ready=true"}},
		{"/minimal", judged{catalog.Passing, &catalog.Vitals{Ready: true}}, []string{"vitals: ready=true"}},
		{"/at-limit", judged{catalog.Passing, &catalog.Vitals{Ready: true}}, []string{"vitals: ready=true"}},
		{"/no-ready", judged{Status: catalog.Critical}, []string{`vitals: "ready" is missing or null`}},
		{"/null-ready", judged{Status: catalog.Critical}, []string{`vitals: "ready" is missing or null`}},
		{"/str-ready", judged{Status: catalog.Critical}, []string{`vitals: "ready" is a JSON string; want true or false`}},
		{"/frac", judged{Status: catalog.Critical}, []string{`vitals: "requests_in_progress" is the number 4.5; want a whole number`}},
		{"/negative", judged{Status: catalog.Critical}, []string{`vitals: "failed_responses" is the number -1; want a whole number from 0`}},
		{"/invalid", judged{Status: catalog.Critical}, []string{"vitals: invalid JSON at byte 13: invalid character '}' in literal true"}},
		{"/trailing", judged{Status: catalog.Critical}, []string{"vitals: invalid JSON at byte 16: invalid character '{' after top-level value"}},
		{"/array", judged{Status: catalog.Critical}, []string{"vitals: body is a JSON array; want an object"}},
		{"/empty", judged{Status: catalog.Critical}, []string{"vitals: empty body"}},
		{"/503", judged{Status: catalog.Critical}, []string{"vitals: HTTP GET " + srv.URL + "/503: 503 Service Unavailable: {\"ready\":false,\"reason\":\"draining\"}"}},
		{"/huge", judged{Status: catalog.Critical}, []string{"vitals: body is larger than 64 KiB"}},
		{"/huge-chunk", judged{Status: catalog.Critical}, []string{"vitals: body is larger than 64 KiB"}},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.path, "/"), func(t *testing.T) {
			got := checkWithin(t, Vitals{}, srv.URL+tt.path, 5*time.Second)
			if diff := cmp.Diff(tt.want, judge(got)); diff != "" {
				t.Errorf("Check(%s) mismatch (-want +got):\n%s\nOutput: %s", tt.path, diff, got.Output)
			}
			wantOutput(t, got.Output, tt.output...)
		})
	}
}

func TestVitalsRefused(t *testing.T) {
	target := "http://" + closedAddr(t) + "/metrics"
	got := checkWithin(t, Vitals{}, target, 5*time.Second)
	if diff := cmp.Diff(judged{Status: catalog.Critical}, judge(got)); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	wantOutput(t, got.Output, "vitals: HTTP GET "+target+": dial tcp", "connection refused")
}

func BenchmarkVitalsDecode(b *testing.B) {
	body := []byte(goodVitals)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeVitals(body); err != nil {
			b.Fatal(err)
		}
	}
}
