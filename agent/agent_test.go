package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newAgent(t *testing.T, sources ...string) *Agent {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Sources = sources
	cfg.StateDir = t.TempDir()
	cfg.HTTP = "127.0.0.1:0"
	cfg.DNS.Addr = ""
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

func TestStatusReadinessAndMetrics(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.yaml")
	os.WriteFile(path, []byte("services:\n  web:\n    - {id: w1, address: 10.0.1.5, port: 8080}\n"), 0o644)
	a := newAgent(t, "file://"+path)
	h := a.Handler()
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no source has reported yet") {
		t.Errorf("readyz before any report: %d %s", code, body)
	}
	l, err := a.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, l); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := get(t, h, "/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not become ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, body := get(t, h, "/v1/agent/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != http.StatusOK {
		t.Fatalf("status: %d %v\n%s", code, err, body)
	}
	if len(st.Sources) != 1 || !st.Sources[0].Healthy || len(st.Services) != 1 || st.Services[0].Backends[0].ID != "w1" {
		t.Errorf("status: %s", body)
	}
	if code, body := get(t, h, "/nope"); code != http.StatusNotFound || !strings.Contains(body, "/v1/agent/status") {
		t.Errorf("unknown path: %d %s", code, body)
	}

	// Every disco_ metric the agent exports is documented.
	families, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "disco_") && !strings.Contains(string(doc), "`"+f.GetName()+"`") {
			t.Errorf("%s is not in docs/metrics.md", f.GetName())
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Sources = []string{"nosuch://x"} }, `unknown scheme "nosuch"`},
		{func(c *Config) { c.Sources = []string{"file:///a", "file:///a"} }, "given twice"},
		{func(c *Config) { c.HTTP = "7701" }, `http address "7701"`},
		{func(c *Config) { c.Refresh = 0 }, "refresh must be at least 1s"},
		{func(c *Config) { c.DNS.Domains = nil }, "dns-domain"},
	} {
		cfg := DefaultConfig()
		cfg.StateDir = t.TempDir()
		tc.mod(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error containing %q", err, tc.want)
		}
	}
}
