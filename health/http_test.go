package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/google/go-cmp/cmp"
)

// judged is the part of a Result that tests compare exactly; Output is
// checked by substrings.
type judged struct {
	Status catalog.Status
	Vitals *catalog.Vitals
}

func judge(r Result) judged { return judged{r.Status, r.Vitals} }

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// checkWithin runs c against target with the given timeout.
func checkWithin(t *testing.T, c Checker, target string, timeout time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	return c.Check(ctx, target)
}

// wantOutput reports on t when out lacks one of want or is too long.
func wantOutput(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("Output = %q, want it to contain %q", out, w)
		}
	}
	if len(out) > MaxOutput {
		t.Errorf("Output is %d bytes, want at most %d", len(out), MaxOutput)
	}
}

func newHTTPBackend(t *testing.T) *httptest.Server {
	t.Helper()
	stop := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "fine") })
	mux.HandleFunc("/nocontent", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/busy", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "slow down", http.StatusTooManyRequests)
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "database down\n\tretry\x00 later\n")
	})
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte(strings.Repeat("é", 1<<19))) // 1 MiB
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	// /headers answers 200 only to a request that asks to close the
	// connection and names itself.
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		if r.UserAgent() != "disco-health/1" || !r.Close {
			http.Error(w, fmt.Sprintf("user-agent=%q close=%v", r.UserAgent(), r.Close), http.StatusBadRequest)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // runs first: lets /slow return
	return srv
}

func TestHTTP(t *testing.T) {
	srv := newHTTPBackend(t)
	refused := "http://" + closedAddr(t) + "/health"
	tests := []struct {
		name    string
		target  string
		timeout time.Duration
		want    catalog.Status
		output  []string
	}{
		{"200", srv.URL + "/ok", 0, catalog.Passing, []string{"HTTP GET " + srv.URL + "/ok: 200 OK"}},
		{"204", srv.URL + "/nocontent", 0, catalog.Passing, []string{"204 No Content"}},
		{"302 to 200", srv.URL + "/moved", 0, catalog.Passing, []string{"200 OK (redirected to " + srv.URL + "/ok)"}},
		{"redirect loop", srv.URL + "/loop", 0, catalog.Critical, []string{"stopped after 10 redirects"}},
		{"429", srv.URL + "/busy", 0, catalog.Warning, []string{"429 Too Many Requests: slow down"}},
		{"500 quotes body", srv.URL + "/fail", 0, catalog.Critical, []string{"500 Internal Server Error: database down retry later"}},
		{"huge body", srv.URL + "/huge", 0, catalog.Critical, []string{"502 Bad Gateway: éé", "…"}},
		{"404", srv.URL + "/nowhere", 0, catalog.Critical, []string{"404 Not Found: 404 page not found"}},
		{"user agent, no keep-alive", srv.URL + "/headers", 0, catalog.Passing, []string{"200 OK"}},
		{"slow beyond timeout", srv.URL + "/slow", 100 * time.Millisecond, catalog.Critical, []string{"HTTP GET " + srv.URL + "/slow: no answer within 100ms"}},
		{"connection refused", refused, 0, catalog.Critical, []string{"HTTP GET " + refused + ": dial tcp", "connection refused"}},
		{"bad URL", "://nope", 0, catalog.Critical, []string{"missing protocol scheme"}},
		{"bad scheme", "ftp://127.0.0.1/", 0, catalog.Critical, []string{"unsupported protocol scheme"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			got := checkWithin(t, HTTP{}, tt.target, timeout)
			if diff := cmp.Diff(judged{Status: tt.want}, judge(got)); diff != "" {
				t.Errorf("Check(%s) mismatch (-want +got):\n%s\nOutput: %s", tt.target, diff, got.Output)
			}
			wantOutput(t, got.Output, tt.output...)
		})
	}
}

// TestHTTPExcerptIsShort checks that a failing check quotes little of a
// large body.
func TestHTTPExcerptIsShort(t *testing.T) {
	srv := newHTTPBackend(t)
	got := checkWithin(t, HTTP{}, srv.URL+"/huge", 5*time.Second)
	_, quoted, _ := strings.Cut(got.Output, "Bad Gateway: ")
	if len(quoted) > maxExcerpt {
		t.Errorf("excerpt is %d bytes, want at most %d", len(quoted), maxExcerpt)
	}
}

func TestExcerpt(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{" \n\t ", ""},
		{"  a\r\n\tb\x00\x01c  ", "a b c"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{strings.Repeat("ab ", 400), strings.TrimSpace(clipTo(strings.Repeat("ab ", 400), maxExcerpt-len("…"))) + "…"},
	}
	for _, tt := range tests {
		if got := excerpt([]byte(tt.in)); got != tt.want {
			t.Errorf("excerpt(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
