package router

import (
	"bytes"
	"html/template"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/internal/httpjson"
)

// AdminHandler serves the admin port: the announce protocol (POST
// /register, DELETE /register/{id}), GET /backends, GET /routes, /metrics,
// /healthz, /readyz, a page showing routes and backends at /, and with
// Config.Pprof Go's profiler at /debug/pprof/.
func (r *Router) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /register", r.handleRegister)
	mux.HandleFunc("DELETE /register/{id}", r.handleDeregister)
	mux.HandleFunc("GET /backends", func(w http.ResponseWriter, req *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"backends": r.Backends()})
	})
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, req *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"routes": r.Routes()})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, req *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		if r.guard != nil {
			r.mu.Lock()
			ready := r.ready
			r.mu.Unlock()
			if !ready {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "no source has reported yet and there is no last-known-good state"})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", r.page)
	endpoints := "POST /register, DELETE /register/{id}, GET /backends, /routes, /metrics, /healthz, /readyz and the page at /"
	if r.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		endpoints += ", and Go's profiler at /debug/pprof/"
	} else {
		endpoints += " (Go's profiler at /debug/pprof/ with --pprof)"
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint: the admin port serves " + endpoints})
	})
	return mux
}

// BackendStatus is one backend in GET /backends.
type BackendStatus struct {
	ID          string `json:"id"`
	Service     string `json:"service"`
	Address     string `json:"address"`
	Source      string `json:"source"` // registry or announce
	InFlight    int64  `json:"in_flight"`
	MaxInFlight int    `json:"max_in_flight"`
	// VitalsFactor is the share of its weight the vitals leave it: 0 when
	// not ready, 1 in full health or without vitals.
	VitalsFactor float64          `json:"vitals_factor"`
	MetricsURL   string           `json:"metrics_url,omitempty"`
	Vitals       *catalog.Vitals  `json:"vitals,omitempty"`
	VitalsError  string           `json:"vitals_error,omitempty"`
	VitalsAt     *time.Time       `json:"vitals_at,omitempty"`
	Routes       []BackendInRoute `json:"routes"`
}

// BackendInRoute is a backend's standing in one route.
type BackendInRoute struct {
	Route string `json:"route"`
	// Weight is its registered share of the route; Effective what the
	// pool gives it now (vitals, panic mode), before ejection and slow
	// start.
	Weight         float64    `json:"weight"`
	Effective      float64    `json:"effective_weight"`
	InFlight       int64      `json:"in_flight"`
	LatencyMS      float64    `json:"latency_ms"`
	Ejected        bool       `json:"ejected"`
	EjectedUntil   *time.Time `json:"ejected_until,omitempty"`
	EjectionReason string     `json:"ejection_reason,omitempty"`
	Panic          bool       `json:"panic,omitempty"`
}

// Backends lists every backend in a route, sorted by service and id.
func (r *Router) Backends() []BackendStatus {
	now := time.Now()
	r.mu.Lock()
	ups := make([]*upstream, 0, len(r.upstreams))
	for _, up := range r.upstreams {
		ups = append(ups, up)
	}
	routes := map[*upstream][]*routeState{}
	for _, up := range ups {
		for _, st := range up.routes {
			routes[up] = append(routes[up], st)
		}
	}
	announced := map[string]bool{}
	for _, a := range r.announced {
		announced[upstreamKey(a.instance.Service, a.instance.ID, instanceAddr(a.instance))] = true
	}
	r.mu.Unlock()
	out := make([]BackendStatus, 0, len(ups))
	for _, up := range ups {
		bs := BackendStatus{ID: up.id, Service: up.service, Address: up.addr, Source: "registry",
			InFlight: up.inflight.Load(), MaxInFlight: r.cfg.MaxRequests, VitalsFactor: up.weightFactor(), MetricsURL: up.metricsURL, Routes: []BackendInRoute{}}
		if announced[up.key] {
			bs.Source = "announce"
		}
		up.mu.Lock()
		bs.Vitals, bs.VitalsError = up.last, up.problem
		if !up.polled.IsZero() {
			t := up.polled
			bs.VitalsAt = &t
		}
		up.mu.Unlock()
		for _, st := range routes[up] {
			pool := st.pool.Load()
			for i, b := range pool.Backends() {
				m := b.Value.(*member)
				if m.up != up {
					continue
				}
				br := BackendInRoute{Route: st.route.Key, Weight: m.weight, Effective: pool.Weight(i), InFlight: b.InFlight(),
					LatencyMS: float64(b.Latency()) / 1e6, Panic: pool.Panic()}
				if until, why, ok := b.Ejection(now); ok {
					br.Ejected, br.EjectionReason = true, why
					br.EjectedUntil = &until
				}
				bs.Routes = append(bs.Routes, br)
			}
		}
		slices.SortFunc(bs.Routes, func(a, b BackendInRoute) int { return strings.Compare(a.Route, b.Route) })
		out = append(out, bs)
	}
	slices.SortFunc(out, func(a, b BackendStatus) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// RouteStatus is one route in GET /routes.
type RouteStatus struct {
	Route    string         `json:"route"`
	Host     string         `json:"host,omitempty"`
	Prefix   string         `json:"prefix,omitempty"`
	Port     int            `json:"port,omitempty"`
	Proto    string         `json:"proto"`
	Strip    string         `json:"strip,omitempty"`
	Prepend  string         `json:"prepend,omitempty"`
	Backends []RouteBackend `json:"backends"`
}

// RouteBackend is a backend of a route in GET /routes.
type RouteBackend struct {
	Service string  `json:"service"`
	ID      string  `json:"id"`
	Address string  `json:"address"`
	Weight  float64 `json:"weight"`
}

// Routes lists the route table in match order.
func (r *Router) Routes() []RouteStatus {
	var out []RouteStatus
	for _, ro := range r.table.Load().Routes() {
		rs := RouteStatus{Route: ro.Key, Host: ro.Host, Prefix: ro.Prefix, Port: ro.Port, Proto: ro.Proto, Strip: ro.Strip, Prepend: ro.Prepend, Backends: []RouteBackend{}}
		for _, m := range ro.Members {
			rs.Backends = append(rs.Backends, RouteBackend{Service: m.Service, ID: m.ID, Address: m.Addr, Weight: m.Weight})
		}
		out = append(out, rs)
	}
	if out == nil {
		out = []RouteStatus{}
	}
	return out
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>disco router on {{.Host}}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}.out{color:#b00}</style></head>
<body><h1>disco router</h1><p>{{.Host}} · up since {{.Started.Format "2006-01-02 15:04:05 MST"}} · JSON: <a href="/routes">/routes</a> <a href="/backends">/backends</a> <a href="/metrics">/metrics</a></p>
<h2>Routes</h2><table><tr><th>route</th><th>proto</th><th>options</th><th>backends (service/id address weight)</th></tr>
{{range .Routes}}<tr><td>{{.Route}}</td><td>{{.Proto}}</td><td>{{if .Strip}}strip={{.Strip}} {{end}}{{if .Prepend}}prepend={{.Prepend}}{{end}}</td><td>{{range .Backends}}{{.Service}}/{{.ID}} {{.Address}} {{printf "%.3g" .Weight}}<br>{{end}}</td></tr>
{{end}}</table>
<h2>Backends</h2><table><tr><th>service/id</th><th>address</th><th>source</th><th>in flight</th><th>vitals</th><th>routes</th></tr>
{{range .Backends}}<tr><td>{{.Service}}/{{.ID}}</td><td>{{.Address}}</td><td>{{.Source}}</td><td>{{.InFlight}}</td><td>{{if .Vitals}}ready={{.Vitals.Ready}} cpu={{.Vitals.CPUUsage}} factor={{printf "%.2f" .VitalsFactor}}{{else if .VitalsError}}<span class="out">{{.VitalsError}}</span>{{else}}-{{end}}</td><td>{{range .Routes}}{{.Route}} w={{printf "%.3g" .Effective}} {{printf "%.2f" .LatencyMS}}ms{{if .Ejected}} <span class="out">ejected: {{.EjectionReason}}</span>{{end}}<br>{{end}}</td></tr>
{{end}}</table></body></html>
`))

func (r *Router) page(w http.ResponseWriter, req *http.Request) {
	var buf bytes.Buffer
	err := pageTemplate.Execute(&buf, map[string]any{"Host": hostname, "Started": r.started, "Routes": r.Routes(), "Backends": r.Backends()})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// writeJSON answers v as indented JSON.
func writeJSON(w http.ResponseWriter, code int, v any) { httpjson.Write(w, code, v) }
