package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// userAgent identifies the registry's checks in backends' access logs.
const userAgent = "disco-health/1"

// maxExcerpt is the most body text a failed HTTP check quotes in its output.
const maxExcerpt = 512

// client is the HTTP client of the http and vitals checks. It is not
// http.DefaultClient, whose settings anything in the process may change.
//
//   - Keep-alives are off: a check must prove the backend still accepts new
//     connections, not that an old one is still open.
//   - No proxy: a check probes the backend itself, whatever HTTP_PROXY says.
//   - No client timeout: each run's context carries the check's Timeout,
//     which bounds dialling, TLS, headers and body alike.
//   - Redirects are followed as Go does by default, at most 10.
var client = &http.Client{
	Transport: &http.Transport{
		Proxy:                  nil,
		DialContext:            (&net.Dialer{}).DialContext,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	},
}

// get sends GET target with the checks' headers. The caller must close the
// response body. A non-nil error is already phrased for a Result's Output,
// e.g. "HTTP GET http://10.0.1.5:8080/health: dial tcp 10.0.1.5:8080:
// connect: connection refused".
func get(ctx context.Context, target, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("HTTP GET %s: %w", target, unwrapURL(err))
	}
	req.Header.Set("User-Agent", userAgent)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	var budget time.Duration
	if dl, ok := ctx.Deadline(); ok {
		budget = time.Until(dl)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("HTTP GET %s: %w", target, describe(ctx, err, budget))
	}
	return resp, nil
}

// describe makes err from a run say plainly when the run's time was up.
func describe(ctx context.Context, err error, budget time.Duration) error {
	err = unwrapURL(err)
	if budget > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %v (%w)", budget.Round(time.Millisecond), err)
	}
	return err
}

// unwrapURL drops the *url.Error wrapper, which would repeat the method and
// the URL the output already names.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// statusLine describes resp's status line, naming where a redirect led.
func statusLine(target string, resp *http.Response) string {
	s := "HTTP GET " + target + ": " + resp.Status
	if resp.Request != nil && resp.Request.URL != nil {
		if final := resp.Request.URL.String(); final != target {
			s += " (redirected to " + final + ")"
		}
	}
	return s
}

// is2xx reports whether code is a success status.
func is2xx(code int) bool { return code >= 200 && code <= 299 }

// excerpt turns the start of a response body into one short line: control
// characters and runs of white space become one space, invalid UTF-8 becomes
// U+FFFD, and the text is cut to maxExcerpt bytes.
func excerpt(body []byte) string {
	var b strings.Builder
	space := false
	for _, r := range strings.ToValidUTF8(string(body), "\uFFFD") {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() > maxExcerpt {
			break
		}
	}
	s := b.String()
	if len(s) > maxExcerpt {
		s = clipTo(s, maxExcerpt-len("…")) + "…"
	}
	return s
}

// readAtMost reads up to n bytes of r and reports whether r held more. A read
// error is returned with whatever arrived before it.
func readAtMost(r io.Reader, n int64) (data []byte, more bool, err error) {
	data, err = io.ReadAll(io.LimitReader(r, n+1))
	if int64(len(data)) > n {
		return data[:n], true, nil
	}
	return data, false, err
}
