package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
)

// epoch is where virtual time stands when a test server starts serving: a
// synctest bubble starts at 2000-01-01 UTC, and start waits for this moment
// so that timestamps in golden files do not depend on how long the raft
// election took.
var epoch = time.Date(2000, 1, 1, 0, 1, 0, 0, time.UTC)

// start opens a one-node server in a temp dir with raft in memory and waits
// until it leads. Inside a synctest bubble it also moves virtual time to
// epoch.
func start(t testing.TB, tweak ...func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Raft = ""
	cfg.RaftMultiplier = 1
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitFor(t, "leadership", func() bool { return s.duties.isLeader() })
	if d := time.Until(epoch); d > 0 && time.Now().Year() == 2000 {
		time.Sleep(d)
	}
	return s
}

// waitFor polls cond until it holds, failing after a deadline. In a
// synctest bubble the deadline is virtual time.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// call sends one request to the server's handler, in process.
func call(s *Server, method, path, body string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

// mustCall is call that fails the test on an unexpected status.
func mustCall(t *testing.T, s *Server, want int, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := call(s, method, path, body)
	if rec.Code != want {
		t.Fatalf("%s %s: %d %s; want %d", method, path, rec.Code, rec.Body, want)
	}
	return rec
}

// instance reads one instance through the API.
func instance(t *testing.T, s *Server, service, id string) *catalog.Instance {
	t.Helper()
	rec := call(s, "GET", "/v1/services/"+service+"/instances/"+id, "")
	if rec.Code == http.StatusNotFound {
		return nil
	}
	var in catalog.Instance
	if err := json.Unmarshal(rec.Body.Bytes(), &in); err != nil {
		t.Fatalf("decode instance: %v: %s", err, rec.Body)
	}
	return &in
}

func status(t *testing.T, s *Server, service, id string) catalog.Status {
	t.Helper()
	in := instance(t, s, service, id)
	if in == nil {
		return "absent"
	}
	return in.Status
}

// transcript records requests and answers in the golden-file format.
type transcript struct {
	bytes.Buffer
	s *Server
}

// do sends a request and appends it and its answer to the transcript.
func (tr *transcript) do(title, method, path, body string) *httptest.ResponseRecorder {
	rec := call(tr.s, method, path, body)
	fmt.Fprintf(tr, "### %s\n%s %s\n", title, method, path)
	if body != "" {
		fmt.Fprintf(tr, "%s\n", body)
	}
	fmt.Fprintf(tr, "--> %d %s\n", rec.Code, http.StatusText(rec.Code))
	for _, h := range []string{"Content-Type", "X-Disco-Index", "Allow", "Retry-After"} {
		if v := rec.Header().Get(h); v != "" {
			fmt.Fprintf(tr, "%s: %s\n", h, v)
		}
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, rec.Body.Bytes(), "", "  ") == nil {
		tr.Write(pretty.Bytes())
	} else {
		tr.Write(rec.Body.Bytes())
	}
	tr.WriteString("\n")
	return rec
}
