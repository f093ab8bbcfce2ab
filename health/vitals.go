package health

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/discotech/disco/catalog"
)

func init() { Register("vitals", Vitals{}) }

// MaxVitalsBody is the largest vitals body a vitals check accepts. The JSON
// is a dozen figures; anything near this size is a misconfigured endpoint.
const MaxVitalsBody = 64 << 10

// Vitals is the "vitals" check: GET the backend's vitals endpoint (e.g.
// http://10.0.1.5:9090/metrics) and read the catalog.Vitals JSON it serves.
//
// ready:true is Passing and ready:false Critical ("vitals: ready=false");
// both return the parsed figures in Result.Vitals. A non-2xx answer, a
// transport error, the run's timeout, a body over MaxVitalsBody, invalid
// JSON, a figure of the wrong type, or a body without "ready" is Critical
// with an output saying which. Fields the package does not know are ignored,
// so backends may report more.
type Vitals struct{}

// Check GETs target and judges the vitals it serves.
func (Vitals) Check(ctx context.Context, target string) Result {
	resp, err := get(ctx, target, "application/json")
	if err != nil {
		return Result{Status: catalog.Critical, Output: clip("vitals: " + err.Error())}
	}
	defer resp.Body.Close()
	if !is2xx(resp.StatusCode) {
		return Result{Status: catalog.Critical, Output: clip("vitals: " + withBody(statusLine(target, resp), resp.Body))}
	}
	if resp.ContentLength > MaxVitalsBody {
		return Result{Status: catalog.Critical, Output: tooLarge}
	}
	body, more, err := readAtMost(resp.Body, MaxVitalsBody)
	switch {
	case more:
		return Result{Status: catalog.Critical, Output: tooLarge}
	case err != nil:
		return Result{Status: catalog.Critical, Output: clip(fmt.Sprintf("vitals: reading the body of %s: %v", target, describe(ctx, err, 0)))}
	}
	v, err := decodeVitals(body)
	if err != nil {
		return Result{Status: catalog.Critical, Output: clip(err.Error())}
	}
	if !v.Ready {
		return Result{Status: catalog.Critical, Output: "vitals: ready=false", Vitals: v}
	}
	return Result{Status: catalog.Passing, Output: "vitals: ready=true", Vitals: v}
}

var tooLarge = fmt.Sprintf("vitals: body is larger than %d KiB; the endpoint must serve one small JSON object", MaxVitalsBody>>10)

// vitalsBody is the wire form of catalog.Vitals with Ready as a pointer, so
// that a body without "ready" can be told from ready:false. The outer Ready
// shadows the embedded one.
type vitalsBody struct {
	Ready *bool `json:"ready"`
	catalog.Vitals
}

// decodeVitals parses a vitals body. Its errors are phrased for a Result's
// Output, naming the field at fault.
func decodeVitals(body []byte) (*catalog.Vitals, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errors.New(`vitals: empty body; want a JSON object such as {"ready":true}`)
	}
	var w vitalsBody
	if err := json.Unmarshal(body, &w); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, fmt.Errorf("vitals: invalid JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ) && typ.Field == "":
			return nil, fmt.Errorf("vitals: body is a JSON %s; want an object such as {\"ready\":true}", typ.Value)
		case errors.As(err, &typ):
			field := strings.TrimPrefix(typ.Field, "Vitals.")
			return nil, fmt.Errorf("vitals: %q is %s; want %s", field, jsonValue(typ.Value), wantKind(typ.Type))
		default:
			return nil, fmt.Errorf("vitals: invalid JSON: %v", err)
		}
	}
	if w.Ready == nil {
		return nil, errors.New(`vitals: "ready" is missing or null; the body must say "ready":true or "ready":false`)
	}
	v := w.Vitals
	v.Ready = *w.Ready
	return &v, nil
}

// jsonValue turns UnmarshalTypeError.Value ("string", "number 42.5") into a
// phrase.
func jsonValue(v string) string {
	if strings.HasPrefix(v, "number ") {
		return "the number " + strings.TrimPrefix(v, "number ")
	}
	return "a JSON " + v
}

// wantKind says in words what a catalog.Vitals field holds.
func wantKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number that fits in 64 bits"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number from 0 that fits in 64 bits"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

var _ Checker = Vitals{}
