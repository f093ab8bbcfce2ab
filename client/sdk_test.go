package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
)

// waitFor polls cond until it holds, or fails the test after 15s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// servedAt runs a registry on addr (a fresh one each time: raft in memory)
// until the returned function stops it.
func servedAt(t *testing.T, addr string) (stop func()) {
	t.Helper()
	s := newServer(t)
	var l net.Listener
	var err error
	waitFor(t, "the port "+addr, func() bool {
		l, err = net.Listen("tcp", addr)
		return err == nil
	})
	hs := &http.Server{Handler: s.Handler()}
	go hs.Serve(l)
	return func() { hs.Close(); s.Close() }
}

func localListener(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestBackendRegistrationSurvivesServerRestart(t *testing.T) {
	l := localListener(t)
	addr := l.Addr().String()
	l.Close()
	stop := servedAt(t, addr)
	c, _ := client.New(addr, nil)
	ctx, cancel := context.WithCancel(context.Background())
	b := &client.Backend{Client: c, Service: "web", ID: "w1", Listener: localListener(t),
		Registration: catalog.Registration{TTL: catalog.Duration(time.Second)},
		Handler:      http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), DrainDelay: time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	registered := func() bool {
		in, err := c.Instance(context.Background(), "web", "w1")
		return err == nil && in.Status == catalog.Passing
	}
	waitFor(t, "the first registration", registered)
	// The registry restarts with nothing: the next heartbeat's 404 makes
	// the backend register again.
	stop()
	stop = servedAt(t, addr)
	defer stop()
	waitFor(t, "the registration after the restart", registered)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Instance(context.Background(), "web", "w1"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("after Run returned the instance is still there: %v", err)
	}
}

func TestTTLExpiresWhenHeartbeatsStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t)
		// The instance keeps itself registered through a path the test
		// can cut, as a network partition or a frozen process would.
		path := &handlerTransport{h: s.Handler()}
		kc, _ := client.New("127.0.0.1:7700", &http.Client{Transport: path})
		admin, _ := client.New("127.0.0.1:7700", &http.Client{Transport: &handlerTransport{h: s.Handler()}})
		ctx, cancel := context.WithCancel(context.Background())
		kept := make(chan struct{})
		go func() {
			defer close(kept)
			kc.Keep(ctx, "web", "w1", catalog.Registration{Address: "10.0.1.5", Port: 80, TTL: catalog.Duration(time.Second)}, nil)
		}()
		defer func() { cancel(); <-kept }()
		status := func() catalog.Status {
			in, err := admin.Instance(context.Background(), "web", "w1")
			if err != nil {
				return ""
			}
			return in.Status
		}
		// Heartbeats keep it passing across many TTLs.
		time.Sleep(time.Millisecond)
		for range 10 {
			if st := status(); st != catalog.Passing {
				t.Fatalf("while heartbeating: %q", st)
			}
			time.Sleep(time.Second)
		}
		path.fail.Store(1 << 30) // cut
		cutAt := time.Now()
		for status() == catalog.Passing && time.Since(cutAt) < 10*time.Second {
			time.Sleep(10 * time.Millisecond)
		}
		if st, d := status(), time.Since(cutAt); st != catalog.Critical || d > 2*time.Second {
			t.Errorf("%q %v after the heartbeats stopped, with a 1s TTL; want critical within 2s", st, d)
		}
	})
}

func TestBackendDrainLosesNoRequestInFlight(t *testing.T) {
	s := newServer(t)
	c := over(t, s)
	release := make(chan struct{})
	var started atomic.Int64
	metrics := localListener(t)
	b := &client.Backend{Client: c, Service: "web", ID: "w1", Listener: localListener(t), Metrics: metrics,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started.Add(1)
			if r.URL.Path == "/slow" {
				<-release
			}
			io.WriteString(w, "done\n")
		}),
		DrainDelay: 300 * time.Millisecond, DrainTimeout: 10 * time.Second}
	ctx, sigterm := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	url := "http://" + b.Listener.Addr().String()
	waitFor(t, "registration", func() bool {
		in, err := c.Instance(context.Background(), "web", "w1")
		return err == nil && in.Meta["metrics_port"] != ""
	})
	const n = 20
	var wg sync.WaitGroup
	var ok atomic.Int64
	for range n {
		wg.Go(func() {
			resp, err := http.Get(url + "/slow")
			if err != nil {
				t.Errorf("an in-flight request failed: %v", err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) == "done\n" {
				ok.Add(1)
			}
		})
	}
	waitFor(t, "the requests to be in flight", func() bool { return started.Load() == n })
	sigterm()
	// At once: not ready, and out of the registry.
	waitFor(t, "ready:false", func() bool {
		resp, err := http.Get("http://" + metrics.Addr().String() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var v catalog.Vitals
		json.NewDecoder(resp.Body).Decode(&v)
		return !v.Ready && v.RequestsInProgress == n
	})
	waitFor(t, "deregistration", func() bool {
		_, err := c.Instance(context.Background(), "web", "w1")
		return errors.Is(err, client.ErrNotFound)
	})
	// New requests are still served while the news spreads.
	if resp, err := http.Get(url + "/fast"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a request during the drain delay: %v", err)
	} else {
		resp.Body.Close()
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if ok.Load() != n {
		t.Errorf("%d of %d in-flight requests finished", ok.Load(), n)
	}
	if _, err := http.Get(url + "/fast"); err == nil {
		t.Error("the backend still serves after Run returned")
	}
}

func TestSignalContextEndsOnSIGTERM(t *testing.T) {
	ctx, stop := client.SignalContext(context.Background())
	defer stop()
	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not end the context")
	}
}

func TestVitalsServeJSONAndTelemetry(t *testing.T) {
	v := client.NewVitals("1.2.3")
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	for _, p := range []string{"/ok", "/fail", "/fail"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	v.SetBackoff(2)
	v.SetReady(false)
	rec := httptest.NewRecorder()
	v.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var got catalog.Vitals
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Ready || got.FailedResponses != 2 || got.BackoffRequests != 2 || got.Version != "1.2.3" || got.MemoryUsage <= 0 || got.UptimeSeconds < 0 {
		t.Errorf("vitals %+v", got)
	}
	rec = httptest.NewRecorder()
	v.ServeHTTP(rec, httptest.NewRequest("GET", "/telemetry", nil))
	for _, want := range []string{"disco_backend_ready 0\n", "disco_backend_failed_responses_total 2\n", "# TYPE disco_backend_requests_in_progress gauge", `disco_backend_info{version="1.2.3"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("telemetry lacks %q:\n%s", want, rec.Body.String())
		}
	}
	rec = httptest.NewRecorder()
	v.ServeHTTP(rec, httptest.NewRequest("GET", "/other", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /other: %d", rec.Code)
	}
}

// webBackends starts n HTTP backends of web registered with the server,
// each answering its id; tags[i] are backend i's tags.
func webBackends(t *testing.T, c *client.Client, tags ...[]string) []*httptest.Server {
	var out []*httptest.Server
	for i, tg := range tags {
		id := fmt.Sprintf("w%d", i+1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, id) }))
		t.Cleanup(srv.Close)
		host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		var p int
		fmt.Sscan(port, &p)
		if _, err := c.Register(context.Background(), "web", id, catalog.Registration{Address: host, Port: p, Tags: tg}); err != nil {
			t.Fatal(err)
		}
		out = append(out, srv)
	}
	return out
}

func TestResolverTransportSpreadsAndFollowsChanges(t *testing.T) {
	s := newServer(t)
	c := over(t, s)
	webBackends(t, c, []string{"v1"}, []string{"v1"}, []string{"v2"})
	r := client.NewResolver(c)
	defer r.Close()
	hc := &http.Client{Transport: r.Transport(), Timeout: 10 * time.Second}
	get := func(url string) string {
		t.Helper()
		// A new connection each time: each picks a backend.
		req, _ := http.NewRequest("GET", url, nil)
		req.Close = true
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	seen := map[string]int{}
	for range 60 {
		seen[get("http://web.service.disco/")]++
	}
	if len(seen) != 3 {
		t.Errorf("60 requests reached %v, want all three backends", seen)
	}
	for range 20 {
		if got := get("http://v2.web.service.disco/x"); got != "w3" {
			t.Fatalf("v2.web reached %s", got)
		}
	}
	// A deregistered backend stops getting requests.
	if err := c.Deregister(context.Background(), "web", "w1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the resolver to drop w1", func() bool {
		ins, _ := r.Instances(context.Background(), "web", "")
		return len(ins) == 2
	})
	for range 30 {
		if got := get("http://web/"); got == "w1" {
			t.Fatal("a deregistered backend got a request")
		}
	}
	if _, err := r.Dial(context.Background(), "nosuch.service.disco"); !errors.Is(err, client.ErrNoBackend) {
		t.Errorf("dialling a service with no backend: %v", err)
	}
	// Names that are not services' are dialled as they are.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") }))
	defer plain.Close()
	_, port, _ := net.SplitHostPort(plain.Listener.Addr().String())
	for _, u := range []string{plain.URL, "http://localhost:" + port} {
		if got := get(u); got != "plain" {
			t.Errorf("GET %s through the resolver: %q", u, got)
		}
	}
	// The registry goes away: the last known backends stand.
	s.Close()
	for range 10 {
		if got := get("http://web.service.disco/"); got != "w2" && got != "w3" {
			t.Fatalf("with the registry gone: %q", got)
		}
	}
}

func TestResolverParse(t *testing.T) {
	r := &client.Resolver{}
	for _, c := range []struct {
		name, service, tag string
		ok                 bool
	}{
		{"web", "web", "", true},
		{"web:8080", "web", "", true},
		{"web.service.disco", "web", "", true},
		{"Web.Service.Disco.:80", "web", "", true},
		{"v2.web.service.disco", "web", "v2", true},
		{"example.com", "", "", false},
		{"localhost:80", "localhost", "", true},
		{"10.0.0.1:80", "", "", false},
	} {
		s, tag, ok := r.Parse(c.name)
		if s != c.service || tag != c.tag || ok != c.ok {
			t.Errorf("Parse(%q) = %q %q %v, want %q %q %v", c.name, s, tag, ok, c.service, c.tag, c.ok)
		}
	}
}
