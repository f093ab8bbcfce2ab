// Package httpjson decodes the JSON bodies of the HTTP APIs strictly (one
// value, no unknown fields, a size limit) into errors that say what to fix.
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/discotech/disco/catalog"
)

// Error is an error with the HTTP status it maps to and the reason label
// for the rejection metric.
type Error struct {
	Status int
	Reason string
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// BadRequest is a 400 Error.
func BadRequest(reason, format string, args ...any) error {
	return &Error{Status: http.StatusBadRequest, Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Decode reads r's JSON body into v strictly: one JSON value, no unknown
// fields, at most max bytes.
func Decode(w http.ResponseWriter, r *http.Request, max int64, v any) error {
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
		return &Error{Status: http.StatusRequestEntityTooLarge, Reason: "too_large",
			Msg: fmt.Sprintf("body: larger than %d bytes; send less", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return BadRequest("malformed", "body: empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return BadRequest("malformed", "body: invalid JSON: it ends before the object is complete")
	case errors.As(err, &syntax):
		return BadRequest("malformed", "body: invalid JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		if typ.Type == reflect.TypeFor[catalog.Duration]() {
			return BadRequest("malformed", "%s: want a duration string such as \"10s\" or \"1m30s\", got %s", field, typ.Value)
		}
		return BadRequest("malformed", "%s: want a JSON %s, got %s", field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return BadRequest("unknown_field", "body: unknown field %s; see docs/api.md for the fields", name)
	}
	// Errors from our own UnmarshalJSON methods (durations) say what to fix.
	return BadRequest("malformed", "body: %v", err)
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

// Write answers v as indented JSON with status code, for endpoints people
// read (status pages, admin ports).
func Write(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
