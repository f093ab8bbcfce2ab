package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/discotech/disco/catalog"
)

// These tests run the real server — raft, the bolt log, leases, checks —
// inside synctest bubbles, where time is virtual: a 10s TTL takes no real
// time, and "critical at exactly 10s, not at 9.999s" is an exact assertion.

func TestTTLExpiresExactlyAndHeartbeatsKeepAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80,"ttl":"10s"}`)
		// Heartbeats every 9s keep it passing for a minute.
		for range 7 {
			time.Sleep(9 * time.Second)
			mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1/heartbeat", "")
		}
		if got := status(t, s, "web", "w1"); got != catalog.Passing {
			t.Fatalf("after a minute of heartbeats: %s, want passing", got)
		}
		time.Sleep(10*time.Second - time.Millisecond)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Passing {
			t.Fatalf("1ms before the TTL: %s, want passing", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		in := instance(t, s, "web", "w1")
		if in.Status != catalog.Critical || in.Output != "ttl expired: no heartbeat for 10s" {
			t.Fatalf("at the TTL: %s %q, want critical, ttl expired", in.Status, in.Output)
		}
		if want := epoch.Add(73 * time.Second); !in.StatusSince.Equal(want) {
			t.Errorf("critical since %s, want %s", in.StatusSince, want)
		}
		// A heartbeat revives it at once.
		rec := mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1/heartbeat", "")
		if rec.Body.String() != `{"lease":"revived"}`+"\n" {
			t.Errorf("heartbeat after expiry answered %s", rec.Body)
		}
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Passing {
			t.Errorf("after a revival: %s, want passing", got)
		}
	})
}

func TestReRegistrationRevivesAnExpiredLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		body := `{"address":"10.0.0.1","port":80,"ttl":"5s"}`
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", body)
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Critical {
			t.Fatalf("after the TTL: %s, want critical", got)
		}
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", body)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Passing {
			t.Errorf("after registering again: %s, want passing", got)
		}
	})
}

// TestReplacementResolvesStatus: a replacement keeps the stored status, so
// the leader must look again at what the new registration implies.
func TestReplacementResolvesStatus(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80,"ttl":"5s"}`)
		time.Sleep(6 * time.Second)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Critical {
			t.Fatalf("after the TTL: %s, want critical", got)
		}
		// A different TTL: a fresh lease, so passing.
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80,"ttl":"20s"}`)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Passing {
			t.Fatalf("re-registered with another TTL: %s, want passing", got)
		}
		time.Sleep(21 * time.Second)
		synctest.Wait()
		// No TTL and no check any more: nothing can make it critical, so
		// it is passing, as a new registration would be.
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80}`)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Passing {
			t.Fatalf("re-registered without TTL or check: %s, want passing", got)
		}
	})
}

func TestDeregisterAfterReapsOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80,"ttl":"10s","deregister_after":"30s"}`)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/keep", `{"address":"10.0.0.2","port":80,"ttl":"10s"}`)
		time.Sleep(10 * time.Second) // both expire
		time.Sleep(30*time.Second - time.Millisecond)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Critical {
			t.Fatalf("1ms before deregister_after: %s, want critical", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != "absent" {
			t.Fatalf("at deregister_after: %s, want removed", got)
		}
		// The other one has the server's default for TTL instances (10m).
		if got := status(t, s, "web", "keep"); got != catalog.Critical {
			t.Errorf("instance without deregister_after: %s, want still critical", got)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if got := status(t, s, "web", "keep"); got != "absent" {
			t.Errorf("after the default ttl-deregister-after: %s, want removed", got)
		}
	})
}

func TestRecoveryCancelsReaping(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80,"ttl":"10s","deregister_after":"30s"}`)
		time.Sleep(10*time.Second + 20*time.Second)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1/heartbeat", "")
		// Critical again later: the removal clock starts over.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Critical {
			t.Fatalf("second expiry: %s, want critical", got)
		}
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Critical {
			t.Fatalf("29s into the second critical period: %s, want still critical (the first period must not count)", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != "absent" {
			t.Fatalf("30s into the second critical period: %s, want removed", got)
		}
	})
}

// backend is an HTTP server outside the bubble whose answers the test sets.
type backend struct {
	*httptest.Server
	code   atomic.Int32
	vitals atomic.Pointer[string]
	hits   atomic.Int32
}

func newBackend(t *testing.T) *backend {
	b := &backend{}
	b.code.Store(200)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if v := b.vitals.Load(); v != nil && r.URL.Path == "/metrics" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, *v)
			return
		}
		w.WriteHeader(int(b.code.Load()))
	}))
	t.Cleanup(b.Close)
	return b
}

func TestCheckThresholds(t *testing.T) {
	b := newBackend(t) // outside the bubble: its goroutines must not hold virtual time
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", fmt.Sprintf(
			`{"address":"127.0.0.1","port":80,"check":{"type":"http","target":"%s/health","interval":"1s","timeout":"500ms","failures":3,"successes":2}}`, b.URL))
		// Registered critical; the first check runs at once. successes=2,
		// so passing comes after the second good run, at +1s.
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Critical {
			t.Fatalf("after one good run with successes=2: %s, want critical", got)
		}
		time.Sleep(time.Second + 100*time.Millisecond)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Passing {
			t.Fatalf("after two good runs: %s, want passing", got)
		}
		// Failing from the run at +2s: critical on the third failure (+4s).
		b.code.Store(500)
		time.Sleep(2 * time.Second) // runs at +2s and +3s fail
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Passing {
			t.Fatalf("after two failures: %s, want passing", got)
		}
		time.Sleep(time.Second) // +4s: third failure
		synctest.Wait()
		in := instance(t, s, "web", "w1")
		if in.Status != catalog.Critical {
			t.Fatalf("after three failures: %s, want critical", in.Status)
		}
		if want := "500 Internal Server Error"; !strings.Contains(in.Output, want) {
			t.Errorf("output %q does not say %q", in.Output, want)
		}
		// 429 is a warning, after successes=2 runs.
		b.code.Store(429)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := status(t, s, "web", "w1"); got != catalog.Warning {
			t.Errorf("after two 429s: %s, want warning", got)
		}
	})
}

func TestVitalsCheckKeepsFigures(t *testing.T) {
	b := newBackend(t)
	ready := `{"ready":true,"requests_in_progress":42,"cpu_usage":35.2,"memory_usage":67.8,"failed_responses":15,"connected_peers":3,"uptime_seconds":86400,"version":"1.0.0"}`
	b.vitals.Store(&ready)
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		mustCall(t, s, 200, "PUT", "/v1/services/api/instances/a1", fmt.Sprintf(
			`{"address":"127.0.0.1","port":80,"check":{"type":"vitals","target":"%s/metrics","interval":"1s","failures":1}}`, b.URL))
		synctest.Wait()
		in := instance(t, s, "api", "a1")
		if in.Status != catalog.Passing || in.Vitals == nil || in.Vitals.RequestsInProgress != 42 || in.Vitals.Version != "1.0.0" {
			t.Fatalf("after a ready vitals check: %s %+v", in.Status, in.Vitals)
		}
		// Figures change without a write: the index stays.
		idx := in.ModifyIndex
		busy := `{"ready":true,"requests_in_progress":99,"cpu_usage":90}`
		b.vitals.Store(&busy)
		time.Sleep(time.Second)
		synctest.Wait()
		in = instance(t, s, "api", "a1")
		if in.Vitals.RequestsInProgress != 99 || in.ModifyIndex != idx {
			t.Errorf("new figures: in-progress %d index %d; want 99 and unchanged %d", in.Vitals.RequestsInProgress, in.ModifyIndex, idx)
		}
		draining := `{"ready":false,"requests_in_progress":3}`
		b.vitals.Store(&draining)
		time.Sleep(time.Second)
		synctest.Wait()
		in = instance(t, s, "api", "a1")
		if in.Status != catalog.Critical || in.Output != "vitals: ready=false" || in.Vitals.Ready {
			t.Errorf("ready:false: %s %q %+v; want critical", in.Status, in.Output, in.Vitals)
		}
	})
}
