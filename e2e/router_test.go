package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/discotech/disco/internal/testpeer"
)

// TestRollingRestartLosesNothing puts three backends built with the SDK
// (examples/backend) behind disco router under steady load and restarts
// each in turn, the way a deploy does: SIGTERM → ready:false → deregister →
// drain → exit, then a new process registers again. Not one request may
// fail.
func TestRollingRestartLosesNothing(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "backend")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/backend").CombinedOutput(); err != nil {
		t.Fatalf("build examples/backend: %v\n%s", err, out)
	}
	httpAddr := testpeer.FreePort(t)
	startServer(t, t.TempDir(), httpAddr, testpeer.FreePort(t))
	registry := "http://" + httpAddr

	listen, admin := testpeer.FreePort(t), testpeer.FreePort(t)
	rp := run(t, "router", "--server", registry, "--listen", listen, "--admin", admin, "--state-dir", t.TempDir(), "--vitals-interval", "200ms")
	waitReady(t, admin, rp)

	type backend struct {
		id, addr, metrics string
		p                 *testpeer.Process
	}
	start := func(b *backend) {
		b.p = testpeer.Start(t, bin, "-registry", registry, "-service", "web", "-id", b.id, "-listen", b.addr,
			"-metrics", b.metrics, "-tag", "urlprefix-/", "-drain-delay", "1s")
		b.p.WaitReady(patience, func() bool { return strings.Contains(b.p.Output(), "serving") })
	}
	var backends []*backend
	for _, id := range []string{"w1", "w2", "w3"} {
		b := &backend{id: id, addr: testpeer.FreePort(t), metrics: testpeer.FreePort(t)}
		start(b)
		backends = append(backends, b)
	}
	url := "http://" + listen + "/"
	served := func() map[string]bool {
		seen := map[string]bool{}
		for range 60 {
			resp, err := http.Get(url)
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if f := strings.Fields(string(body)); len(f) > 2 {
				seen[f[2]] = true // "hello from w1 (web 1.0.0) /"
			}
		}
		return seen
	}
	testpeer.WaitUntil(t, "the router to serve all three backends", patience, func() bool { return len(served()) == 3 })

	// Steady load: GETs and POSTs from several clients, each on its own
	// keep-alive connection.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 6 {
		wg.Go(func() {
			hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var resp *http.Response
				var err error
				if (c+i)%3 == 0 {
					resp, err = hc.Post(url, "text/plain", strings.NewReader("order"))
				} else {
					resp, err = hc.Get(url)
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = &statusError{resp.Status}
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		})
	}
	for _, b := range backends {
		before := ok.Load()
		if err := b.p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-b.p.Done():
		case <-time.After(patience):
			t.Fatalf("%s did not exit after SIGTERM:\n%s", b.id, b.p.Output())
		}
		if !strings.Contains(b.p.Output(), "drained") {
			t.Fatalf("%s did not drain:\n%s", b.id, b.p.Output())
		}
		start(b)
		testpeer.WaitUntil(t, b.id+" to serve again", patience, func() bool { return served()[b.id] })
		if ok.Load() == before {
			t.Fatalf("no request succeeded while %s restarted", b.id)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during three restarts, %d failed", ok.Load(), failed.Load())
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the rolling restart; the first: %v\nrouter log:\n%s", n, firstErr.Load(), rp.Output())
	}
}

type statusError struct{ status string }

func (e *statusError) Error() string { return "status " + e.status }

// TestDevRoutesThroughItsRouter registers a backend tagged urlprefix-/ with
// disco dev's registry and reaches it through dev's router.
func TestDevRoutesThroughItsRouter(t *testing.T) {
	httpAddr := testpeer.FreePort(t)
	d := startDev(t, httpAddr, filepath.Join(t.TempDir(), "disco.table"))
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.URL.Path+"\n")
	}))
	defer backend.Close()
	if out, err := exec.Command(disco, "--server", httpAddr, "register", "web", backend.Listener.Addr().String(), "--id", "w1",
		"--tag", "urlprefix-/web strip=/web", "--once").CombinedOutput(); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	var body string
	testpeer.WaitUntil(t, "the router to route /web", patience, func() bool {
		resp, err := http.Get("http://" + d.router + "/web/page")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	if body != "hello from /page\n" {
		t.Errorf("through the router: %q", body)
	}
}
