package balance

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/health"
)

func TestPollerKeepsItsPaceWithJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		seen := map[string][]time.Time{}
		p := &Poller{
			Check: func(ctx context.Context, url string) health.Result {
				return health.Result{Vitals: &catalog.Vitals{Ready: url == "http://a/metrics"}}
			},
			Report: func(key string, v *catalog.Vitals, problem string) {
				mu.Lock()
				defer mu.Unlock()
				seen[key] = append(seen[key], time.Now())
			},
		}
		start := time.Now()
		p.Set(map[string]string{"a": "http://a/metrics", "b": "http://b/metrics"})
		time.Sleep(10*time.Second + time.Millisecond)
		// b goes; c comes.
		p.Set(map[string]string{"a": "http://a/metrics", "c": "http://c/metrics"})
		time.Sleep(5 * time.Second)
		p.Close()
		mu.Lock()
		defer mu.Unlock()
		a := seen["a"]
		if len(a) < 13 || len(a) > 18 {
			t.Fatalf("a polled %d times in 15s, want about 15", len(a))
		}
		if !a[0].Equal(start) {
			t.Errorf("first poll after %v, want at once", a[0].Sub(start))
		}
		for i := 1; i < len(a); i++ {
			if d := a[i].Sub(a[i-1]); d < 900*time.Millisecond || d > 1100*time.Millisecond {
				t.Errorf("poll %d came %v after the last, want 1s±10%%", i, d)
			}
		}
		if n := len(seen["b"]); n < 9 || n > 12 {
			t.Errorf("b polled %d times in its 10s", n)
		}
		if last := seen["b"][len(seen["b"])-1]; last.Sub(start) > 10*time.Second+time.Millisecond {
			t.Errorf("b polled at %v, after it was removed", last.Sub(start))
		}
		if n := len(seen["c"]); n < 4 || n > 7 {
			t.Errorf("c polled %d times in its 5s", n)
		}
	})
}

func TestPollerReadsRealVitals(t *testing.T) {
	ready := true
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if ready {
			w.Write([]byte(`{"ready":true,"cpu_usage":12.5}`))
		} else {
			w.Write([]byte(`{"ready":false}`))
		}
	}))
	defer srv.Close()
	got := make(chan *catalog.Vitals, 100)
	problems := make(chan string, 100)
	p := &Poller{Interval: 20 * time.Millisecond, Report: func(key string, v *catalog.Vitals, problem string) {
		if v != nil {
			got <- v
		} else {
			problems <- problem
		}
	}}
	defer p.Close()
	p.Set(map[string]string{"x": srv.URL + "/metrics", "bad": "http://127.0.0.1:1/metrics"})
	if v := <-got; !v.Ready || v.CPUUsage != 12.5 {
		t.Fatalf("first reading %+v", v)
	}
	if pr := <-problems; pr == "" {
		t.Fatal("an unreachable backend reported no problem")
	}
	mu.Lock()
	ready = false
	mu.Unlock()
	for v := range got {
		if !v.Ready {
			return
		}
	}
}
