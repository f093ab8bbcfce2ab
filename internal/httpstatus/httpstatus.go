// Package httpstatus remembers the status a handler answers with, for
// metrics and vitals.
package httpstatus

import "net/http"

// Writer is an http.ResponseWriter that remembers the status written
// through it; Status is 200 until a handler says otherwise.
type Writer struct {
	http.ResponseWriter
	Status int
	wrote  bool
}

// New wraps w.
func New(w http.ResponseWriter) *Writer { return &Writer{ResponseWriter: w, Status: http.StatusOK} }

// WriteHeader implements http.ResponseWriter.
func (w *Writer) WriteHeader(status int) {
	if !w.wrote {
		w.Status, w.wrote = status, true
	}
	w.ResponseWriter.WriteHeader(status)
}

// Write implements http.ResponseWriter.
func (w *Writer) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flush,
// hijack, deadlines).
func (w *Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
