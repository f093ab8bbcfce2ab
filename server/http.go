package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/internal/httpjson"
	"github.com/discotech/disco/internal/httpstatus"
	"github.com/discotech/disco/registry"
)

// apiError is an error with the HTTP status it maps to and the reason label
// for the rejection metric.
type apiError = httpjson.Error

func badRequest(reason, format string, args ...any) error {
	return httpjson.BadRequest(reason, format, args...)
}

// decodeBody reads r's JSON body into v strictly (see httpjson.Decode).
func decodeBody(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	return httpjson.Decode(w, r, max, v)
}

// writeJSON writes v with status. Encoding errors cannot be reported to the
// client once the header is out, so they are only logged.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		s.log.Error("encode response", "err", err)
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"server: encode response failed"}` + "\n")
	}
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// writeError maps err to a status, logs it, counts it and writes
// {"error": "..."}.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, reason := http.StatusInternalServerError, "internal"
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		status, reason = ae.Status, ae.Reason
	case errors.Is(err, catalog.ErrInvalid):
		status, reason = http.StatusBadRequest, "invalid"
	case errors.Is(err, registry.ErrNotFound):
		status, reason = http.StatusNotFound, "not_found"
	case errors.Is(err, registry.ErrNotLeader), errors.Is(err, registry.ErrClosed):
		status, reason = http.StatusServiceUnavailable, "unavailable"
		w.Header().Set("Retry-After", "1")
	}
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	} else if status != http.StatusNotFound {
		s.log.Info("request rejected", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status < 500 {
		s.metrics.rejected.WithLabelValues(reason).Inc()
	}
	s.writeJSON(w, status, map[string]string{"error": err.Error()})
}

// measure wraps the handler of one route with its metrics, resolved once
// here rather than by label on every request.
func (s *Server) measure(route string, h http.HandlerFunc) http.Handler {
	latency := s.metrics.latency.WithLabelValues(route)
	var codes sync.Map // int → prometheus.Counter
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := httpstatus.New(w)
		h(sw, r)
		c, ok := codes.Load(sw.Status)
		if !ok {
			c, _ = codes.LoadOrStore(sw.Status, s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.Status)))
		}
		c.(prometheus.Counter).Inc()
		latency.Observe(time.Since(start).Seconds())
	})
}

// unmatched answers a request no route took: 405 with Allow when the path
// exists for other methods, else 404.
func (s *Server) unmatched(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeError(w, r, &apiError{Status: http.StatusMethodNotAllowed, Reason: "method",
			Msg: fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, ", "))})
		return
	}
	s.writeError(w, r, &apiError{Status: http.StatusNotFound, Reason: "no_route",
		Msg: fmt.Sprintf("no API endpoint at %s; see docs/api.md", r.URL.Path)})
}

// jsonType is the Content-Type of every JSON answer, set without the
// canonicalising Header.Set on hot paths.
var jsonType = []string{"application/json"}
