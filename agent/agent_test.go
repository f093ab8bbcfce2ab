package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discotech/disco/internal/testpeer"
	"github.com/discotech/disco/shmtable"
)

// testConfig is an agent's configuration for a test: the sources given,
// its state and table in temporary directories, its ports chosen by the
// system, no DNS, quiet logs.
func testConfig(t *testing.T, sources ...string) Config {
	cfg := DefaultConfig()
	cfg.Sources = sources
	cfg.StateDir = t.TempDir()
	cfg.HTTP = "127.0.0.1:0"
	cfg.DNS.Addr = ""
	cfg.Table = filepath.Join(t.TempDir(), "disco.table")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

func newAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// serve runs a until the test ends.
func serve(t *testing.T, a *Agent) {
	t.Helper()
	l, err := a.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// runAgent starts an agent with cfg for the test.
func runAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a := newAgent(t, cfg)
	serve(t, a)
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
	a := newAgent(t, testConfig(t, "file://"+path))
	h := a.Handler()
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no source has reported yet") {
		t.Errorf("readyz before any report: %d %s", code, body)
	}
	serve(t, a)
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
		{func(c *Config) { c.ProxyPorts = []string{"web=0"} }, `proxy-port "web=0"`},
		{func(c *Config) { c.ProxyPorts = []string{"Web=80"} }, "not a service name"},
	} {
		cfg := DefaultConfig()
		cfg.StateDir = t.TempDir()
		tc.mod(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error containing %q", err, tc.want)
		}
	}
}

// TestNodeViewTableAndMagicDNS: the agent writes every service with its
// magic address and its IP backends to the shared-memory table, and, with
// dns-magic, its DNS answers a service's name with that address.
func TestNodeViewTableAndMagicDNS(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.yaml")
	os.WriteFile(path, []byte(`services:
  web:
    - {id: w1, address: 10.0.1.5, port: 8080, weight: 100}
    - {id: w2, address: 10.0.1.6, port: 8081, weight: 0}
    - {id: w3, address: web3.internal, port: 8080}
  db:
    - {id: d1, address: "2001:db8::1", port: 5432}
`), 0o644)
	cfg := testConfig(t, "file://"+path)
	cfg.DNS.Addr = "127.0.0.1:0"
	cfg.DNSMagic = true
	a := runAgent(t, cfg)

	want := []shmtable.Service{
		{Name: "db", Magic: netip.MustParseAddr("127.77.116.254"), Backends: []shmtable.Backend{{Addr: netip.MustParseAddr("2001:db8::1"), Port: 5432, Weight: 100}}},
		{Name: "web", Magic: netip.MustParseAddr("127.77.220.68"), Backends: []shmtable.Backend{
			{Addr: netip.MustParseAddr("10.0.1.5"), Port: 8080, Weight: 100},
			{Addr: netip.MustParseAddr("10.0.1.6"), Port: 8081, Weight: 0},
		}},
	}
	var got []shmtable.Service
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ = shmtable.Read(cfg.Table)
		if cmp.Equal(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("table (-want +got):\n%s", cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })))
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, a.DNSAddr())
	}}
	addrs, err := r.LookupHost(context.Background(), "web.service.disco")
	if err != nil || !slices.Equal(addrs, []string{"127.77.220.68"}) {
		t.Errorf("web.service.disco at the agent's DNS = %v, %v; want its magic address", addrs, err)
	}
	_, srvs, err := r.LookupSRV(context.Background(), "web", "tcp", "service.disco")
	if err != nil || len(srvs) != 2 {
		t.Errorf("SRV still names the backends: %v, %v", srvs, err)
	}
}

// TestFallbackProxy: a program that cannot be preloaded connects to a
// service's magic address on a backend's port and lands on a backend chosen
// by weight; a backend that refuses connections costs no failed connection;
// a drained backend gets none.
func TestFallbackProxy(t *testing.T) {
	// Three backends answering their own names, and a port nothing listens on.
	var ports []int
	for _, name := range []string{"b1", "b2", "drained"} {
		addr := testpeer.TCPServer(t, func(c net.Conn) { io.WriteString(c, name) })
		_, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		ports = append(ports, p)
	}
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()

	path := filepath.Join(t.TempDir(), "s.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(`services:
  pxy:
    - {id: b1, address: 127.0.0.1, port: %d, weight: 100}
    - {id: b2, address: 127.0.0.1, port: %d, weight: 100}
    - {id: drained, address: 127.0.0.1, port: %d, weight: 0}
    - {id: refuses, address: 127.0.0.1, port: %d, weight: 100}
`, ports[0], ports[1], ports[2], deadPort)), 0o644)
	cfg := testConfig(t, "file://"+path)
	cfg.Table = ""
	cfg.MagicRange = "127.78.0.0/16" // away from any agent running on this machine
	cfg.ProxyPorts = []string{"18080", "pxy=18081", "other=18082"}
	a := runAgent(t, cfg)

	var magic netip.Addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, ok := a.node.magicOf("pxy"); ok {
			if c, err := net.Dial("tcp", netip.AddrPortFrom(m, 18080).String()); err == nil {
				c.Close()
				magic = m
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the fallback proxy did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	seen := map[string]int{}
	for i := range 60 {
		// Every listening port of the service works, whichever backend's
		// or configured.
		port := []int{18080, 18081, ports[0], ports[1], ports[2]}[i%5]
		c, err := net.Dial("tcp", netip.AddrPortFrom(magic, uint16(port)).String())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || len(b) == 0 {
			t.Fatalf("connection %d: read %q, %v", i, b, err)
		}
		seen[string(b)]++
	}
	if seen["b1"] == 0 || seen["b2"] == 0 || seen["drained"] != 0 || len(seen) != 2 {
		t.Errorf("backends seen: %v", seen)
	}
	// A port configured for another service is not opened for this one.
	if c, err := net.Dial("tcp", netip.AddrPortFrom(magic, 18082).String()); err == nil {
		c.Close()
		t.Errorf("the proxy listens on another service's port")
	}
}

// TestFailureReportsEject: three connect failures reported for a backend
// within the window give it weight 0 in the shared-memory table until the
// ejection ends; never more than half of a service's backends at once.
func TestFailureReportsEject(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.yaml")
	os.WriteFile(path, []byte(`services:
  web:
    - {id: w1, address: 10.0.1.1, port: 80}
    - {id: w2, address: 10.0.1.2, port: 80}
    - {id: w3, address: 10.0.1.3, port: 80}
    - {id: w4, address: 10.0.1.4, port: 80}
`), 0o644)
	cfg := testConfig(t, "file://"+path)
	cfg.Proxy = false
	cfg.Report = "127.0.0.1:0"
	cfg.EjectFor = 2 * time.Second
	a := runAgent(t, cfg)

	weights := func() string {
		return tableWeights(cfg.Table, func(b shmtable.Backend) string { return b.Addr.String() })
	}
	waitWeights := func(want string) { t.Helper(); waitTable(t, weights, want) }
	waitWeights("10.0.1.1=100 10.0.1.2=100 10.0.1.3=100 10.0.1.4=100")
	c, err := net.Dial("udp", a.reports.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	report := func(addr string, n int) {
		for range n {
			fmt.Fprintf(c, "fail web %s 80 111\n", addr)
		}
	}
	report("10.0.1.2", 2) // two: not yet
	c.Write([]byte("garbage\n"))
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(a.node.ejector.m.reports.WithLabelValues("web")) != 2 || testutil.ToFloat64(a.node.ejector.m.rejected) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the reports were not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := weights(); got != "10.0.1.1=100 10.0.1.2=100 10.0.1.3=100 10.0.1.4=100" {
		t.Fatalf("after two failures: %s", got)
	}
	report("10.0.1.2", 1)
	waitWeights("10.0.1.1=100 10.0.1.2=0 10.0.1.3=100 10.0.1.4=100")
	// Two more backends fail: only one more is ejected (half of four).
	report("10.0.1.3", 3)
	report("10.0.1.4", 3)
	waitWeights("10.0.1.1=100 10.0.1.2=0 10.0.1.3=0 10.0.1.4=100")
	// The status lists what the reports ejected (all three: the table
	// applies the limit of half).
	deadline = time.Now().Add(10 * time.Second)
	for len(a.Status().Ejected) != 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if ej := a.Status().Ejected; len(ej) != 3 || ej[0].Address != "10.0.1.2:80" || ej[0].Service != "web" {
		t.Errorf("status ejected: %+v", ej)
	}
	// The ejections end.
	waitWeights("10.0.1.1=100 10.0.1.2=100 10.0.1.3=100 10.0.1.4=100")
}

func TestVitalsSetTableWeights(t *testing.T) {
	var ready [3]atomic.Bool
	var cpu atomic.Int64
	var yaml strings.Builder
	yaml.WriteString("services:\n  web:\n")
	for i := range ready {
		ready[i].Store(true)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := 0
			if i == 2 {
				c = int(cpu.Load())
			}
			fmt.Fprintf(w, `{"ready":%v,"cpu_usage":%d}`, ready[i].Load(), c)
		}))
		t.Cleanup(srv.Close)
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		fmt.Fprintf(&yaml, "    - {id: w%d, address: 127.0.0.1, port: %d, meta: {metrics_port: %q}}\n", i+1, 8001+i, port)
	}
	path := filepath.Join(t.TempDir(), "s.yaml")
	os.WriteFile(path, []byte(yaml.String()), 0o644)
	cfg := testConfig(t, "file://"+path)
	cfg.Proxy = false
	cfg.VitalsInterval = 20 * time.Millisecond
	runAgent(t, cfg)
	weights := func() string {
		return tableWeights(cfg.Table, func(b shmtable.Backend) string { return strconv.Itoa(int(b.Port)) })
	}
	waitWeights := func(want string) { t.Helper(); waitTable(t, weights, want) }
	waitWeights("8001=100 8002=100 8003=100")
	// ready:false takes w1 out within a poll.
	ready[0].Store(false)
	waitWeights("8001=0 8002=100 8003=100")
	// A busy w3 loses weight slowly, down to half.
	cpu.Store(100)
	waitWeights("8001=0 8002=100 8003=50")
	// Two of three not ready: panic, the registered weights stand.
	ready[1].Store(false)
	waitWeights("8001=100 8002=100 8003=100")
	// Back: the weights climb again.
	ready[0].Store(true)
	ready[1].Store(true)
	cpu.Store(0)
	waitWeights("8001=100 8002=100 8003=100")
}

// tableWeights renders the table's backends as "NAME=WEIGHT ...", each
// backend named by name.
func tableWeights(path string, name func(shmtable.Backend) string) string {
	svcs, _ := shmtable.Read(path)
	var out []string
	for _, s := range svcs {
		for _, b := range s.Backends {
			out = append(out, fmt.Sprintf("%s=%d", name(b), b.Weight))
		}
	}
	return strings.Join(out, " ")
}

// waitTable polls weights until it says want, or fails the test.
func waitTable(t *testing.T, weights func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for weights() != want {
		if time.Now().After(deadline) {
			t.Fatalf("table weights %q, want %q", weights(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
