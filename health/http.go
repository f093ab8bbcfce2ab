package health

import (
	"context"
	"io"

	"github.com/discotech/disco/catalog"
)

func init() { Register("http", HTTP{}) }

// maxHTTPBody is the most of a response body an http check reads.
const maxHTTPBody = 4 << 10

// HTTP is the "http" check: GET the target URL.
//
// A 2xx answer is Passing, 429 Too Many Requests is Warning (the backend is up
// but asks for less traffic), and any other status, a transport error or the
// run's timeout is Critical. Redirects are followed, at most 10. The output of
// a non-2xx answer quotes the start of its body (of which at most 4 KiB is
// read).
//
// Connections are never reused, so every run proves the backend still
// accepts new ones. For the same reason the unread rest of a body is not
// drained: closing it closes the connection, and draining would only let a
// backend that streams forever hold the run until its timeout.
type HTTP struct{}

// Check GETs target.
func (HTTP) Check(ctx context.Context, target string) Result {
	resp, err := get(ctx, target, "")
	if err != nil {
		return Result{Status: catalog.Critical, Output: clip(err.Error())}
	}
	defer resp.Body.Close()
	out := statusLine(target, resp)
	switch {
	case is2xx(resp.StatusCode):
		return Result{Status: catalog.Passing, Output: clip(out)}
	case resp.StatusCode == 429:
		return Result{Status: catalog.Warning, Output: clip(withBody(out, resp.Body))}
	default:
		return Result{Status: catalog.Critical, Output: clip(withBody(out, resp.Body))}
	}
}

// withBody appends an excerpt of body to out, if the body has any text.
func withBody(out string, body io.Reader) string {
	data, _, _ := readAtMost(body, maxHTTPBody)
	if ex := excerpt(data); ex != "" {
		out += ": " + ex
	}
	return out
}

var _ Checker = HTTP{}
