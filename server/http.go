package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/registry"
)

// apiError is an error with the HTTP status it maps to and the reason label
// for the rejection metric.
type apiError struct {
	status int
	reason string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(reason, format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// decodeBody reads r's JSON body into v strictly: one JSON value, no unknown
// fields, at most max bytes.
func decodeBody(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	body := http.MaxBytesReader(w, r.Body, max)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Exactly one value: trailing garbage is as wrong as a bad value.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("extra data after the JSON object")
		}
	}
	if err == nil {
		return nil
	}
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return &apiError{status: http.StatusRequestEntityTooLarge, reason: "too_large",
			msg: fmt.Sprintf("body: larger than %d bytes; send less", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return badRequest("malformed", "body: empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed", "body: invalid JSON: it ends before the object is complete")
	case errors.As(err, &syntax):
		return badRequest("malformed", "body: invalid JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		if typ.Type == reflect.TypeFor[catalog.Duration]() {
			return badRequest("malformed", "%s: want a duration string such as \"10s\" or \"1m30s\", got %s", field, typ.Value)
		}
		return badRequest("malformed", "%s: want a JSON %s, got %s", field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return badRequest("unknown_field", "body: unknown field %s; see docs/api.md for the fields", name)
	}
	// Errors from our own UnmarshalJSON methods (durations) say what to fix.
	return badRequest("malformed", "body: %v", err)
}

func jsonKind(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "number"
	case kind == "slice":
		return "array"
	case kind == "map", kind == "struct":
		return "object"
	case kind == "bool":
		return "boolean"
	}
	return kind
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
	w.Header().Set("Content-Type", "application/json")
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
		status, reason = ae.status, ae.reason
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

// instrument counts and times every request by route pattern, and turns the
// mux's plain-text 404 and 405 answers into the API's JSON errors.
func (s *Server) instrument(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, r: r, status: http.StatusOK}
		mux.ServeHTTP(sw, r) // sets r.Pattern and the path values
		pattern := r.Pattern
		if sw.intercepted {
			pattern = "unmatched"
			s.writeError(w, r, s.unmatchedError(r, sw.status, w.Header().Get("Allow")))
		}
		s.metrics.requests.WithLabelValues(pattern, strconv.Itoa(sw.status)).Inc()
		s.metrics.latency.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
	})
}

// unmatchedError explains why no route took r.
func (s *Server) unmatchedError(r *http.Request, status int, allow string) error {
	switch status {
	case http.StatusMethodNotAllowed:
		return &apiError{status: status, reason: "method", msg: fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, allow)}
	case http.StatusNotFound:
		return &apiError{status: status, reason: "no_route", msg: fmt.Sprintf("no API endpoint at %s; see docs/api.md", r.URL.Path)}
	}
	return &apiError{status: status, reason: "bad_request", msg: fmt.Sprintf("cannot serve %s %s", r.Method, r.URL.Path)}
}

// statusWriter records the status of a response. When the mux itself
// answers an error (no route matched), it swallows that plain-text answer so
// instrument can write the JSON one instead.
type statusWriter struct {
	http.ResponseWriter
	r           *http.Request
	status      int
	wrote       bool
	intercepted bool
}

func (w *statusWriter) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.status, w.wrote = status, true
	if status >= 400 && w.r.Pattern == "" {
		w.intercepted = true
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.intercepted {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and SetWriteDeadline.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
