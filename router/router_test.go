package router

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discotech/disco/internal/testpeer"
)

// testRouter is a router serving on loopback for one test.
type testRouter struct {
	*Router
	url, admin string
	// shutdown ends Serve and returns what it returned; it may be called
	// more than once.
	shutdown func() error
}

func startRouter(t testing.TB, tweak func(*Config)) *testRouter {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Server = ""
	cfg.Listen, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.VitalsInterval = 20 * time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	if tweak != nil {
		tweak(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := r.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ls) }()
	shutdown := sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := shutdown(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testRouter{Router: r, url: "http://" + ls.Traffic.Addr().String(), admin: "http://" + ls.Admin.Addr().String(), shutdown: shutdown}
}

// announce POSTs body to /register and returns the status and body.
func (tr *testRouter) announce(t testing.TB, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(tr.admin+"/register", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (tr *testRouter) mustAnnounce(t testing.TB, id, addr string, extra string) {
	t.Helper()
	body := fmt.Sprintf(`{"id":%q,"address":%q%s}`, id, addr, extra)
	if code, msg := tr.announce(t, body); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("announce %s: %d %s", body, code, msg)
	}
}

// get fetches path through the router: status, body and headers.
func (tr *testRouter) get(t *testing.T, path string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(tr.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// backend is an HTTP backend that says who it is and what it was asked.
type backend struct {
	*httptest.Server
	name string
	hits atomic.Int64
	// status, when set, is the answer (e.g. 503).
	status atomic.Int32
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if s := b.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			io.WriteString(w, "failing\n")
			return
		}
		fmt.Fprintf(w, "%s %s %s xff=%s host=%s proto=%d\n", b.name, r.Method, r.URL.RequestURI(), r.Header.Get("X-Forwarded-For"), r.Host, r.ProtoMajor)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

func TestAnnouncedBackendsServeTheCatchAll(t *testing.T) {
	tr := startRouter(t, nil)
	if code, body, _ := tr.get(t, "/x"); code != http.StatusNotFound || !strings.Contains(body, "no route") {
		t.Fatalf("with no routes: %d %q, want 404 saying there is no route", code, body)
	}
	a, b := newBackend(t, "a"), newBackend(t, "b")
	tr.mustAnnounce(t, "a", a.addr(), "")
	tr.mustAnnounce(t, "b", b.addr(), "")
	seen := map[string]int{}
	for range 200 {
		code, body, _ := tr.get(t, "/hello?x=1")
		if code != http.StatusOK {
			t.Fatalf("GET: %d %s", code, body)
		}
		seen[strings.Fields(body)[0]]++
		if !strings.Contains(body, "GET /hello?x=1 xff=127.0.0.1") {
			t.Fatalf("backend saw %q", body)
		}
	}
	// P2C sends more to whichever answers faster, but a draw of the same
	// backend twice (a quarter of picks) still reaches the slower one.
	if seen["a"] < 10 || seen["b"] < 10 {
		t.Errorf("picks %v, want both backends used", seen)
	}
	// Withdrawn: no route any more.
	for _, id := range []string{"a", "b"} {
		req, _ := http.NewRequest(http.MethodDelete, tr.admin+"/register/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE %s: %v %v", id, resp.StatusCode, err)
		}
		resp.Body.Close()
	}
	if code, _, _ := tr.get(t, "/hello"); code != http.StatusNotFound {
		t.Errorf("after withdrawal: %d, want 404", code)
	}
	req, _ := http.NewRequest(http.MethodDelete, tr.admin+"/register/a", nil)
	resp, _ := http.DefaultClient.Do(req)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE of an unknown id: %d, want 404", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestBadAnnouncementsAreRefusedAndLoseNothing(t *testing.T) {
	tr := startRouter(t, nil)
	a := newBackend(t, "a")
	tr.mustAnnounce(t, "a", a.addr(), "")
	for _, c := range []struct{ body, want string }{
		{`{"id":"b","address":`, "invalid JSON"},
		{`{"id":"b","address":"127.0.0.1:1","colour":"red"}`, "unknown field"},
		{`{"id":"b","address":"127.0.0.1"}`, "not HOST:PORT"},
		{`{"id":"b","address":"127.0.0.1:70000"}`, "port"},
		{`{"id":"B_1","address":"127.0.0.1:80"}`, "DNS label"},
		{`{"id":"b","address":"127.0.0.1:80","metrics_port":99999}`, "metrics_port"},
		{`{"id":"b","address":"127.0.0.1:80","service":"Web"}`, "service"},
		{`{"id":"b","address":"127.0.0.1:80"} {}`, "extra data"},
		{`{"id":"a","address":"127.0.0.1:80","service":"other"}`, "DELETE /register/a first"},
		{`{"id":"b","address":"127.0.0.1:80","pad":"` + strings.Repeat("x", 70<<10) + `"}`, "larger than"},
	} {
		code, body := tr.announce(t, c.body)
		if code < 400 || code > 499 || !strings.Contains(body, c.want) {
			t.Errorf("announce %.60s: %d %s, want a 4xx saying %q", c.body, code, body, c.want)
		}
	}
	// What was there still serves.
	if code, body, _ := tr.get(t, "/"); code != http.StatusOK || !strings.HasPrefix(body, "a ") {
		t.Errorf("after bad announcements: %d %q", code, body)
	}
	if got := len(tr.Backends()); got != 1 {
		t.Errorf("%d backends, want 1", got)
	}
}

func TestTagsRouteStripAndPrepend(t *testing.T) {
	tr := startRouter(t, nil)
	api, web := newBackend(t, "api"), newBackend(t, "web")
	tr.mustAnnounce(t, "api", api.addr(), `,"service":"api","tags":["urlprefix-/api strip=/api prepend=/v2"]`)
	tr.mustAnnounce(t, "web", web.addr(), `,"service":"web","tags":["urlprefix-shop.example/"]`)
	_, body, _ := tr.get(t, "/api/users")
	if !strings.HasPrefix(body, "api GET /v2/users") {
		t.Errorf("/api/users reached %q, want api at /v2/users", body)
	}
	req, _ := http.NewRequest(http.MethodGet, tr.url+"/anything", nil)
	req.Host = "Shop.Example:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(b), "web GET /anything") || !strings.Contains(string(b), "host=Shop.Example:8080") {
		t.Errorf("host route reached %q", b)
	}
	if code, _, _ := tr.get(t, "/other"); code != http.StatusNotFound {
		t.Errorf("/other on no host: %d, want 404", code)
	}
}

func TestConnectFailuresAreRetriedElsewhereAndEjected(t *testing.T) {
	tr := startRouter(t, nil)
	a, b := newBackend(t, "a"), newBackend(t, "b")
	dead := testpeer.FreePort(t) // nothing listens
	tr.mustAnnounce(t, "a", a.addr(), "")
	tr.mustAnnounce(t, "b", b.addr(), "")
	tr.mustAnnounce(t, "dead", dead, "")
	for i := range 300 {
		// POSTs too: a refused connection never read the body.
		var code int
		if i%2 == 0 {
			code, _, _ = tr.get(t, "/")
		} else {
			resp, err := http.Post(tr.url+"/", "text/plain", strings.NewReader("payload"))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		if code != http.StatusOK {
			t.Fatalf("request %d: %d, want every request to succeed", i, code)
		}
	}
	var ejected bool
	for _, bs := range tr.Backends() {
		if bs.ID == "dead" {
			for _, r := range bs.Routes {
				ejected = r.Ejected && r.EjectionReason == "consecutive failures"
			}
		}
	}
	if !ejected {
		t.Errorf("the dead backend is not ejected: %+v", tr.Backends())
	}
}

func TestIdempotentRequestsAreRetriedOnceOn503(t *testing.T) {
	tr := startRouter(t, nil)
	a, b := newBackend(t, "a"), newBackend(t, "b")
	a.status.Store(503)
	b.status.Store(503)
	tr.mustAnnounce(t, "a", a.addr(), "")
	tr.mustAnnounce(t, "b", b.addr(), "")
	code, _, _ := tr.get(t, "/")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("GET with every backend failing: %d", code)
	}
	if n := a.hits.Load() + b.hits.Load(); n != 2 {
		t.Errorf("GET tried %d times, want 2 (once more on 503)", n)
	}
	a.hits.Store(0)
	b.hits.Store(0)
	resp, err := http.Post(tr.url+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := a.hits.Load() + b.hits.Load(); n != 1 {
		t.Errorf("POST tried %d times, want 1 (not idempotent)", n)
	}
	// One failing, one fine: a GET that met the failing one gets the other.
	b.status.Store(0)
	for range 50 {
		if code, body, _ := tr.get(t, "/"); code != http.StatusOK {
			t.Fatalf("GET: %d %s", code, body)
		}
	}
}

func TestRetryBudget(t *testing.T) {
	st := &routeState{}
	for range minRetryAllowed {
		if !st.allowRetry(0.2) {
			t.Fatal("the floor of retries is not allowed")
		}
		st.retrying.Add(1)
	}
	if st.allowRetry(0.2) {
		t.Error("a retry beyond the floor with no active requests was allowed")
	}
	st.active.Store(100)
	if !st.allowRetry(0.2) {
		t.Error("3 retries of 100 active is within 20%")
	}
	st.retrying.Store(20)
	if st.allowRetry(0.2) {
		t.Error("20 retries of 100 active is the whole budget")
	}
}

func TestNoEligibleBackendIs503WithRetryAfter(t *testing.T) {
	tr := startRouter(t, nil)
	tr.mustAnnounce(t, "a", "127.0.0.1:1", `,"weight":0`)
	code, body, h := tr.get(t, "/")
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, "no backend can take requests") {
		t.Errorf("got %d %q Retry-After=%q", code, body, h.Get("Retry-After"))
	}
}

func TestCircuitBreakerSendsElsewhere(t *testing.T) {
	tr := startRouter(t, func(c *Config) { c.MaxRequests = 1 })
	release := make(chan struct{})
	var slowHits atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowHits.Add(1)
		<-release
		io.WriteString(w, "slow\n")
	}))
	defer slow.Close()
	defer close(release)
	tr.mustAnnounce(t, "slow", slow.Listener.Addr().String(), "")
	// One request occupies the only slot.
	go http.Get(tr.url + "/")
	testpeer.WaitUntil(t, "the first request to reach the backend", 10*time.Second, func() bool { return slowHits.Load() == 1 })
	code, body, h := tr.get(t, "/")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "circuit breaker") || h.Get("Retry-After") == "" {
		t.Errorf("second request: %d %q", code, body)
	}
	fast := newBackend(t, "fast")
	tr.mustAnnounce(t, "fast", fast.addr(), "")
	for range 20 {
		if code, body, _ := tr.get(t, "/"); code != http.StatusOK || !strings.HasPrefix(body, "fast") {
			t.Fatalf("with the slow backend full: %d %q", code, body)
		}
	}
}

// vitalsBackend serves traffic and, on another port, its vitals.
type vitalsBackend struct {
	*backend
	ready   atomic.Bool
	metrics *httptest.Server
}

func newVitalsBackend(t *testing.T, name string) *vitalsBackend {
	v := &vitalsBackend{backend: newBackend(t, name)}
	v.ready.Store(true)
	v.metrics = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"ready":%v,"cpu_usage":10}`, v.ready.Load())
	}))
	t.Cleanup(v.metrics.Close)
	return v
}

func (v *vitalsBackend) metricsPort() int { return v.metrics.Listener.Addr().(*net.TCPAddr).Port }

func TestNotReadyStopsPicksWithinAPoll(t *testing.T) {
	tr := startRouter(t, nil)
	var bs []*vitalsBackend
	for _, name := range []string{"a", "b", "c"} {
		v := newVitalsBackend(t, name)
		bs = append(bs, v)
		tr.mustAnnounce(t, name, v.addr(), fmt.Sprintf(`,"metrics_port":%d`, v.metricsPort()))
	}
	testpeer.WaitUntil(t, "vitals to be read", 10*time.Second, func() bool {
		for _, b := range tr.Backends() {
			if b.Vitals == nil {
				return false
			}
		}
		return true
	})
	bs[0].ready.Store(false)
	testpeer.WaitUntil(t, "a's weight to drop to 0", 10*time.Second, func() bool {
		for _, b := range tr.Backends() {
			if b.ID == "a" {
				return b.VitalsFactor == 0
			}
		}
		return false
	})
	bs[0].hits.Store(0)
	for range 100 {
		if code, _, _ := tr.get(t, "/"); code != http.StatusOK {
			t.Fatal(code)
		}
	}
	if n := bs[0].hits.Load(); n != 0 {
		t.Errorf("a backend reporting ready:false got %d of 100 requests", n)
	}
	// Two of three unready: panic mode, every backend is used again.
	bs[1].ready.Store(false)
	testpeer.WaitUntil(t, "panic mode", 10*time.Second, func() bool {
		for _, b := range tr.Backends() {
			if b.ID == "b" && b.VitalsFactor == 0 && len(b.Routes) == 1 && b.Routes[0].Panic {
				return true
			}
		}
		return false
	})
	bs[0].hits.Store(0)
	for range 100 {
		tr.get(t, "/")
	}
	if bs[0].hits.Load() == 0 {
		t.Error("in panic mode an unready backend got no request")
	}
}

func TestWebSocketUpgradePassesThrough(t *testing.T) {
	tr := startRouter(t, nil)
	// A backend that accepts any upgrade and then echoes lines in upper case.
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(strings.ToUpper(line))
			brw.Flush()
		}
	}))
	defer ws.Close()
	tr.mustAnnounce(t, "ws", ws.Listener.Addr().String(), "")
	c, err := net.Dial("tcp", strings.TrimPrefix(tr.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("upgrade answer %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello\n", "again\n"} {
		io.WriteString(c, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != strings.ToUpper(msg) {
			t.Fatalf("echo of %q: %q %v", msg, got, err)
		}
	}
}

func TestHTTP2CleartextAndGRPCRoutes(t *testing.T) {
	tr := startRouter(t, nil)
	h2 := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Done")
		fmt.Fprintf(w, "proto=%d\n", r.ProtoMajor)
		w.Header().Set("X-Done", "yes")
	})}
	h2.Protocols = new(http.Protocols)
	h2.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h2.Serve(ln)
	defer h2.Close()
	tr.mustAnnounce(t, "g", ln.Addr().String(), `,"service":"grpc","tags":["urlprefix-/pkg.Svc proto=grpc"]`)
	web := newBackend(t, "web")
	tr.mustAnnounce(t, "web", web.addr(), "")

	tp := &http.Transport{Protocols: new(http.Protocols)}
	tp.Protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: tp}
	defer tp.CloseIdleConnections()
	resp, err := hc.Get(tr.url + "/pkg.Svc/Call")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "proto=2\n" || resp.Trailer.Get("X-Done") != "yes" {
		t.Errorf("h2c to a grpc route: client proto %d, body %q, trailer %v", resp.ProtoMajor, b, resp.Trailer)
	}
	resp, err = hc.Get(tr.url + "/page")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.Contains(string(b), "proto=1") {
		t.Errorf("h2c to an http route: client proto %d, body %q", resp.ProtoMajor, b)
	}
}

func TestTCPRoute(t *testing.T) {
	tr := startRouter(t, nil)
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	port := testpeer.FreePort(t)
	_, p, _ := net.SplitHostPort(port)
	tr.mustAnnounce(t, "db", echo.Addr().String(), `,"service":"db","tags":["urlprefix-:`+p+` proto=tcp"]`)
	var c net.Conn
	testpeer.WaitUntil(t, "the TCP route's port", 10*time.Second, func() bool {
		c, err = net.Dial("tcp", "127.0.0.1:"+p)
		return err == nil
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	payload := strings.Repeat("0123456789", 100000) // a megabyte: splice
	go io.WriteString(c, payload)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != payload {
		t.Fatalf("echo through the TCP route: %v", err)
	}
	// Withdrawn: the port closes.
	req, _ := http.NewRequest(http.MethodDelete, tr.admin+"/register/db", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testpeer.WaitUntil(t, "the TCP route's port to close", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+p)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

func TestAccessLogAndMetrics(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	tr := startRouter(t, func(c *Config) { c.AccessLog = path })
	a := newBackend(t, "a")
	tr.mustAnnounce(t, "a", a.addr(), "")
	req, _ := http.NewRequest(http.MethodGet, tr.url+"/p?q=1", nil)
	req.Header.Set("User-Agent", "tester/1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var line string
	testpeer.WaitUntil(t, "the access log line", 10*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		line = string(b)
		return strings.Contains(line, "\n")
	})
	for _, want := range []string{`"GET /p?q=1 HTTP/1.1" 200 `, `"tester/1"`, "route=/ ", "backend=" + a.addr(), "tries=1", "duration="} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line %q lacks %q", line, want)
		}
	}
	b := tr.metricsText(t)
	for _, want := range []string{
		`disco_router_requests_total{code="2xx",route="/"} 1`,
		`disco_router_backend_requests_total{backend="` + a.addr() + `",outcome="ok",route="/"} 1`,
		`disco_router_backend_in_flight{backend="` + a.addr() + `",service="announced"} 0`,
		`disco_router_routes 1`,
	} {
		if !strings.Contains(b, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// /backends and /routes are JSON; / is a page.
	for _, p := range []string{"/backends", "/routes"} {
		resp, err := http.Get(tr.admin + p)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		resp.Body.Close()
	}
	resp, err = http.Get(tr.admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), a.addr()) {
		t.Errorf("the page does not show the backend")
	}
}

func TestConcurrentAnnouncementsAndTraffic(t *testing.T) {
	tr := startRouter(t, nil)
	a := newBackend(t, "a")
	tr.mustAnnounce(t, "a", a.addr(), "")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(tr.url + "/")
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	others := []*backend{newBackend(t, "b"), newBackend(t, "c")}
	for i := range 50 {
		o := others[i%2]
		tr.mustAnnounce(t, o.name, o.addr(), "")
		req, _ := http.NewRequest(http.MethodDelete, tr.admin+"/register/"+o.name, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed while backends came and went", n)
	}
}

// TestKeptAliveConnectionsClosedByTheBackendAreRetried has a backend that
// closes every connection right after its answer without saying so, the
// race that makes Fabio answer 502 (fabio#716): the router's next request
// on that connection finds it closed and must go again on a new one, for
// GETs and for POSTs with a body alike.
func TestKeptAliveConnectionsClosedByTheBackendAreRetried(t *testing.T) {
	tr := startRouter(t, nil)
	var served atomic.Int64
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		served.Add(1)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body)+3, "ok:"+string(body))
	})
	tr.mustAnnounce(t, "closer", addr, "")
	for i := range 100 {
		var resp *http.Response
		var err error
		if i%2 == 0 {
			resp, err = http.Get(tr.url + "/")
		} else {
			resp, err = http.Post(tr.url+"/", "text/plain", strings.NewReader("order"))
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "ok:"
		if i%2 == 1 {
			want = "ok:order"
		}
		if resp.StatusCode != http.StatusOK || string(b) != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, b, want)
		}
	}
	if n := served.Load(); n != 100 {
		t.Errorf("the backend served %d requests, want 100 (each once)", n)
	}
}

// TestAnswersCutShortAfterAnInterimOneAreNotRetried: a backend that sent a
// 1xx answer had the request, so its closing the connection after is no
// stale connection, even a kept-alive one.
func TestAnswersCutShortAfterAnInterimOneAreNotRetried(t *testing.T) {
	tr := startRouter(t, nil)
	var served atomic.Int64
	addr := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if served.Add(1) == 1 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
			return
		}
	})
	tr.mustAnnounce(t, "hinter", addr, "")
	for i, want := range []int{http.StatusOK, http.StatusBadGateway} {
		resp, err := http.Post(tr.url+"/", "text/plain", strings.NewReader("order"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	if n := served.Load(); n != 2 {
		t.Errorf("the backend served %d requests, want 2 (each once)", n)
	}
}

// rawBackend is a backend written by hand (testpeer.TCPServer): serve gets
// each connection, with a reader over it. It returns the backend's address.
func rawBackend(t testing.TB, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	return testpeer.TCPServer(t, func(c net.Conn) { serve(c, bufio.NewReader(c)) })
}

// benchKeepAlive sends GET / again and again on one connection to addr
// and reads each answer.
func benchKeepAlive(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte(get("/"))
	b.ReportAllocs()
	for b.Loop() {
		c.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// TestForwardedFields: the backend gets the client's address added to
// X-Forwarded-For, and X-Forwarded-Proto and X-Forwarded-Host unless the
// client sent its own, each in one field.
func TestForwardedFields(t *testing.T) {
	tr := startRouter(t, nil)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"} {
			fmt.Fprintf(w, "%s=%q\n", k, r.Header.Values(k))
		}
	}))
	defer be.Close()
	tr.mustAnnounce(t, "fwd", be.Listener.Addr().String(), "")
	host := strings.TrimPrefix(tr.url, "http://")
	for _, tc := range []struct {
		sent map[string]string
		want string
	}{
		{nil, `X-Forwarded-For=["127.0.0.1"]` + "\n" + `X-Forwarded-Proto=["http"]` + "\n" + `X-Forwarded-Host=["` + host + `"]` + "\n"},
		{
			map[string]string{"X-Forwarded-For": "10.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "front.example"},
			`X-Forwarded-For=["10.0.0.1, 127.0.0.1"]` + "\n" + `X-Forwarded-Proto=["https"]` + "\n" + `X-Forwarded-Host=["front.example"]` + "\n",
		},
	} {
		req, _ := http.NewRequest(http.MethodGet, tr.url+"/", nil)
		for k, v := range tc.sent {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.want {
			t.Errorf("sent %v: the backend got\n%s\nwant\n%s", tc.sent, b, tc.want)
		}
	}
}

// TestAdminPprofOnlyWhenAsked: Go's profiler is on the admin port with
// Config.Pprof, and a 404 that says how to get it without.
func TestAdminPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		tr := startRouter(t, func(c *Config) { c.Pprof = on })
		resp, err := http.Get(tr.admin + "/debug/pprof/profile?seconds=1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case on && (resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/octet-stream" || len(b) == 0):
			t.Errorf("with Pprof: %d %s, %d bytes, want 200 and a profile", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		case !on && (resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "--pprof")):
			t.Errorf("without Pprof: %d %q, want 404 naming --pprof", resp.StatusCode, b)
		}
	}
}

// metricsText is the admin port's /metrics.
func (tr *testRouter) metricsText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(tr.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestAnnouncedBackendsSurviveARestart: a router with a state dir keeps
// what was announced (and not what was withdrawn) for the next one.
func TestAnnouncedBackendsSurviveARestart(t *testing.T) {
	dir := t.TempDir()
	withDir := func(c *Config) { c.StateDir = dir }
	a, b := newBackend(t, "a"), newBackend(t, "b")
	first := startRouter(t, withDir)
	first.mustAnnounce(t, "a", a.addr(), `,"tags":["urlprefix-/a"],"weight":50`)
	first.mustAnnounce(t, "b", b.addr(), "")
	req, _ := http.NewRequest(http.MethodDelete, first.admin+"/register/b", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE b: %v %v", resp, err)
	}
	if err := first.shutdown(); err != nil {
		t.Fatal(err)
	}

	second := startRouter(t, withDir)
	if code, body, _ := second.get(t, "/a/x"); code != http.StatusOK || !strings.HasPrefix(body, "a GET /a/x") {
		t.Errorf("GET /a/x after the restart: %d %q, want a's answer", code, body)
	}
	if code, _, _ := second.get(t, "/elsewhere"); code != http.StatusNotFound {
		t.Errorf("GET /elsewhere after the restart: %d, want 404: b was withdrawn", code)
	}
	bs := second.Backends()
	if len(bs) != 1 || bs[0].ID != "a" || bs[0].Source != "announce" {
		t.Errorf("backends after the restart: %+v, want a alone, announced", bs)
	}
	// It can still be withdrawn, and that too is kept.
	req, _ = http.NewRequest(http.MethodDelete, second.admin+"/register/a", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE a after the restart: %v %v", resp, err)
	}
	second.shutdown()
	third := startRouter(t, withDir)
	if bs := third.Backends(); len(bs) != 0 {
		t.Errorf("backends after a withdrawal and a restart: %+v, want none", bs)
	}
}

// TestAnnouncedStateThatCannotBeUsed: a damaged file is moved aside and
// the router starts without it; a state dir that cannot be written costs
// nothing but a log line and a count.
func TestAnnouncedStateThatCannotBeUsed(t *testing.T) {
	dir := t.TempDir()
	a := newBackend(t, "a")
	for _, bad := range []string{`{"version":1,"backends":[{"id":"a","addr`, `{"version":9,"backends":[]}`} {
		if err := os.WriteFile(filepath.Join(dir, announcedFile), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		tr := startRouter(t, func(c *Config) { c.StateDir = dir })
		if bs := tr.Backends(); len(bs) != 0 {
			t.Errorf("backends from %q: %+v, want none", bad, bs)
		}
		if kept, err := os.ReadFile(filepath.Join(dir, announcedFile+".bad")); err != nil || string(kept) != bad {
			t.Errorf("the damaged file was not moved aside whole: %q, %v", kept, err)
		}
		if m := tr.metricsText(t); !strings.Contains(m, `disco_router_announce_state_errors_total{op="load"} 1`) {
			t.Errorf("no load error counted in:\n%s", m)
		}
		// The router works, and saves afresh.
		tr.mustAnnounce(t, "a", a.addr(), "")
		if code, _, _ := tr.get(t, "/"); code != http.StatusOK {
			t.Errorf("GET / after announcing: %d", code)
		}
		if b, err := os.ReadFile(filepath.Join(dir, announcedFile)); err != nil || !strings.Contains(string(b), a.addr()) {
			t.Errorf("saved state %q, %v: want a in it", b, err)
		}
		tr.shutdown()
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tr := startRouter(t, func(c *Config) { c.StateDir = filepath.Join(file, "state") })
	tr.mustAnnounce(t, "a", a.addr(), "")
	if code, _, _ := tr.get(t, "/"); code != http.StatusOK {
		t.Errorf("GET / with an unwritable state dir: %d, want the announced backend's answer", code)
	}
	if m := tr.metricsText(t); !strings.Contains(m, `disco_router_announce_state_errors_total{op="save"} 1`) {
		t.Errorf("no save error counted")
	}
}
