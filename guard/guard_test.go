package guard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

func inst(svc, id string, status catalog.Status) *catalog.Instance {
	return &catalog.Instance{Service: svc, ID: id, Address: "10.0.0." + strings.TrimLeft(id, "abcdefghijklmnopqrstuvwxyz"), Port: 80, Weight: 100, Status: status}
}

// set makes a service's instances: "w1 w2 w3" passing, "w4:critical".
func set(svc, ids string) []*catalog.Instance {
	out := []*catalog.Instance{}
	for _, f := range strings.Fields(ids) {
		id, st, _ := strings.Cut(f, ":")
		if st == "" {
			st = string(catalog.Passing)
		}
		out = append(out, inst(svc, id, catalog.Status(st)))
	}
	return out
}

func full(services map[string]string) source.Update {
	u := source.Update{Services: map[string][]*catalog.Instance{}, Full: true}
	for svc, ids := range services {
		u.Services[svc] = set(svc, ids)
	}
	return u
}

func one(svc, ids string) source.Update {
	return source.Update{Services: map[string][]*catalog.Instance{svc: set(svc, ids)}}
}

// fakeProbe says which backends are alive; it stands in for TCP connects,
// which a synctest bubble cannot make (DefaultProbe is tested on its own).
type fakeProbe struct {
	mu   sync.Mutex
	dead map[string]bool
}

func (p *fakeProbe) kill(id string) { p.mu.Lock(); p.dead[id] = true; p.mu.Unlock() }

func (p *fakeProbe) probe(_ context.Context, in *catalog.Instance) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead[in.ID] {
		return errors.New("connection refused")
	}
	return nil
}

func newGuard(t *testing.T, specs []string, mod func(*Config)) (*Guard, *fakeProbe) {
	t.Helper()
	fp := &fakeProbe{dead: map[string]bool{}}
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Probe = fp.probe
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(specs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return g, fp
}

// table renders the table: "web: w1 w2 | db: d1".
func table(g *Guard) string {
	t := g.Table()
	var parts []string
	for svc, ins := range t.Services {
		ids := []string{}
		for _, in := range ins {
			ids = append(ids, in.ID)
		}
		parts = append(parts, svc+":"+strings.Join(append([]string{""}, ids...), " "))
	}
	sort.Strings(parts)
	return strings.Join(parts, " | ")
}

func expect(t *testing.T, g *Guard, want string) {
	t.Helper()
	synctest.Wait()
	if got := table(g); got != want {
		t.Fatalf("table:\n got %s\nwant %s", got, want)
	}
}

func TestAdditionsAndSmallRemovalsApplyAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newGuard(t, []string{"test://a"}, nil)
		s := g.Sink(0)
		s.Update(full(map[string]string{"web": "w1 w2 w3 w4", "db": "d1"}))
		expect(t, g, "db: d1 | web: w1 w2 w3 w4")
		s.Update(one("web", "w1 w2 w3 w5 w6")) // w4 goes, w5 and w6 come
		expect(t, g, "db: d1 | web: w1 w2 w3 w5 w6")
		s.Update(one("web", "w1 w2 w3 w5 w6:critical")) // one turns critical: a small removal
		expect(t, g, "db: d1 | web: w1 w2 w3 w5")
		s.Update(one("web", "w1 w2 w3")) // half: not more than half
		expect(t, g, "db: d1 | web: w1 w2 w3")
		if st := g.Status(); len(st.Holds) != 0 {
			t.Errorf("holds: %+v", st.Holds)
		}
	})
}

func TestLargeRemovalIsHeldForTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newGuard(t, []string{"test://a"}, nil)
		s := g.Sink(0)
		s.Update(full(map[string]string{"web": "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"}))
		start := time.Now()
		s.Update(one("web", "w1")) // 1 of 10
		expect(t, g, "web: w1 w10 w2 w3 w4 w5 w6 w7 w8 w9")
		st := g.Status()
		if len(st.Holds) != 1 || st.Holds[0].Reason != "would remove 9 of 10 backends" || !st.Holds[0].Deadline.Equal(start.Add(30*time.Second)) {
			t.Fatalf("hold: %+v", st.Holds)
		}
		if st.Services[0].Backends[1].State != "held" || st.Services[0].Backends[0].State != "active" {
			t.Errorf("backend states: %+v", st.Services[0].Backends)
		}
		time.Sleep(29 * time.Second)
		expect(t, g, "web: w1 w10 w2 w3 w4 w5 w6 w7 w8 w9")
		time.Sleep(time.Second)
		expect(t, g, "web: w1")
		if st := g.Status(); len(st.Holds) != 0 {
			t.Errorf("holds after the window: %+v", st.Holds)
		}
	})
}

// TestRemovalsOneAtATimeAddUp: a source that drops backends one update at a
// time is held once, within one hold window, it has dropped more than half.
func TestRemovalsOneAtATimeAddUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newGuard(t, []string{"test://a"}, nil)
		s := g.Sink(0)
		s.Update(one("web", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"))
		left := []string{"w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "w10"}
		for range 5 { // half: applied, one by one
			left = left[:len(left)-1]
			s.Update(one("web", strings.Join(left, " ")))
		}
		expect(t, g, "web: w1 w2 w3 w4 w5")
		left = left[:len(left)-1] // the sixth of ten: held
		s.Update(one("web", strings.Join(left, " ")))
		expect(t, g, "web: w1 w2 w3 w4 w5")
		if st := g.Status(); len(st.Holds) != 1 || st.Holds[0].Reason != "would remove 1 of 5 backends, after 5 removed within the last 30s" {
			t.Fatalf("holds: %+v", st.Holds)
		}
		time.Sleep(30 * time.Second)
		expect(t, g, "web: w1 w2 w3 w4")
		// A window later, one removal is a small one again.
		time.Sleep(30 * time.Second)
		s.Update(one("web", "w1 w2 w3"))
		expect(t, g, "web: w1 w2 w3")
	})
}

func TestEmptySetIsHeldAndAChangedTargetRestartsTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newGuard(t, []string{"test://a"}, nil)
		s := g.Sink(0)
		s.Update(full(map[string]string{"web": "w1 w2 w3 w4", "db": "d1"}))
		s.Update(full(map[string]string{})) // the source suddenly lists nothing
		expect(t, g, "db: d1 | web: w1 w2 w3 w4")
		if st := g.Status(); len(st.Holds) != 2 || st.Holds[1].Reason != "would remove all 4 backends" {
			t.Fatalf("holds: %+v", st.Holds)
		}
		time.Sleep(20 * time.Second)
		// A different smaller set for web: its window starts again; db's
		// target (nothing) is the same, so its window runs on.
		s.Update(full(map[string]string{"web": "w1", "db": ""}))
		time.Sleep(20 * time.Second)
		expect(t, g, "web: w1 w2 w3 w4")
		time.Sleep(10 * time.Second)
		expect(t, g, "web: w1")
	})
}

func TestWithdrawnRemovalEndsTheHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newGuard(t, []string{"test://a"}, nil)
		s := g.Sink(0)
		s.Update(one("web", "w1 w2 w3 w4"))
		s.Update(one("web", ""))
		time.Sleep(10 * time.Second)
		s.Update(one("web", "w1 w2 w3 w4"))
		time.Sleep(time.Minute)
		expect(t, g, "web: w1 w2 w3 w4")
		if st := g.Status(); len(st.Holds) != 0 {
			t.Errorf("holds: %+v", st.Holds)
		}
	})
}

func TestProbesConfirmDeadBackendsEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, fp := newGuard(t, []string{"test://a"}, nil)
		s := g.Sink(0)
		s.Update(one("web", "w1 w2 w3 w4"))
		fp.kill("w2")
		fp.kill("w3")
		s.Update(one("web", "w1"))
		// Three failed probes, 2s apart, confirm w2 and w3 dead; w4 answers
		// and stays held.
		time.Sleep(5 * time.Second)
		expect(t, g, "web: w1 w4")
		st := g.Status()
		if len(st.Holds) != 1 || !st.Holds[0].Removing[0].Dead || st.Holds[0].Removing[2].Dead || st.Holds[0].Removing[0].ProbeError != "connection refused" {
			t.Fatalf("hold: %+v", st.Holds)
		}
		fp.kill("w4")
		time.Sleep(6 * time.Second)
		expect(t, g, "web: w1")
		if st := g.Status(); len(st.Holds) != 0 {
			t.Errorf("holds after every held backend died: %+v", st.Holds)
		}
	})
}

func TestFailingSourceKeepsItsLastReport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newGuard(t, []string{"test://a"}, nil)
		s := g.Sink(0)
		s.Update(one("web", "w1 w2"))
		s.Fail(errors.New("connection refused"))
		time.Sleep(time.Hour)
		expect(t, g, "web: w1 w2")
		st := g.Status()
		if st.Sources[0].Healthy || st.Sources[0].Error != "connection refused" || st.Sources[0].Failures != 1 {
			t.Errorf("source status: %+v", st.Sources[0])
		}
		s.Update(one("web", "w1 w2 w3"))
		expect(t, g, "web: w1 w2 w3")
		if st := g.Status(); !st.Sources[0].Healthy {
			t.Errorf("a report did not make the source healthy again: %+v", st.Sources[0])
		}
	})
}

func TestSourcesMergeWithPrecedence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newGuard(t, []string{"test://first", "test://second"}, nil)
		a := &catalog.Instance{Service: "web", ID: "w1", Address: "10.0.0.1", Port: 80, Weight: 100, Status: catalog.Passing}
		b := &catalog.Instance{Service: "web", ID: "w1", Address: "10.9.9.9", Port: 80, Weight: 100, Status: catalog.Passing}
		g.Sink(1).Update(source.Update{Services: map[string][]*catalog.Instance{"web": {b, inst("web", "w2", catalog.Passing)}}})
		g.Sink(0).Update(source.Update{Services: map[string][]*catalog.Instance{"web": {a, inst("web", "w3", catalog.Passing)}}})
		expect(t, g, "web: w1 w2 w3")
		if got := g.Table().Services["web"][0].Address; got != "10.0.0.1" {
			t.Errorf("w1 is %s, want the first source's 10.0.0.1", got)
		}
		// The first source drops w1: the second's w1 takes its place.
		g.Sink(0).Update(one("web", "w3"))
		expect(t, g, "web: w1 w2 w3")
		if got := g.Table().Services["web"][0].Address; got != "10.9.9.9" {
			t.Errorf("w1 is %s, want the second source's", got)
		}
	})
}

func TestLastKnownGoodSurvivesARestartWithSourcesDown(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		g, _ := newGuard(t, []string{"test://a", "test://b"}, func(c *Config) { c.StateDir = dir })
		g.Sink(0).Update(one("web", "w1 w2 w3"))
		g.Sink(1).Update(one("db", "d1"))
		time.Sleep(2 * time.Second) // past the write delay
		synctest.Wait()
	})
	if _, err := os.Stat(filepath.Join(dir, lkgFile)); err != nil {
		t.Fatalf("no state written: %v", err)
	}
	synctest.Test(t, func(t *testing.T) {
		// Restarted while every source is down: the state from disk.
		g, _ := newGuard(t, []string{"test://a", "test://b"}, func(c *Config) { c.StateDir = dir })
		g.Sink(0).Fail(errors.New("down"))
		g.Sink(1).Fail(errors.New("down"))
		time.Sleep(time.Hour)
		expect(t, g, "db: d1 | web: w1 w2 w3")
		if st := g.Status(); !st.LKG.Active {
			t.Errorf("status does not say the state from disk is in use: %+v", st.LKG)
		}
		// One source back with less: its services still count the state
		// from disk until the other reports too.
		g.Sink(0).Update(one("web", "w1"))
		expect(t, g, "db: d1 | web: w1 w2 w3")
		g.Sink(1).Update(full(map[string]string{}))
		// Now the removals are large and held like any other.
		expect(t, g, "db: d1 | web: w1 w2 w3")
		time.Sleep(31 * time.Second)
		expect(t, g, "web: w1")
	})
}

func TestLastKnownGoodNotUsed(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		maxAge        time.Duration
	}{
		{"too old", `{"version":1,"saved_at":"2000-01-01T00:00:00Z","services":{"web":[{"service":"web","id":"w1","address":"10.0.0.1","port":80,"weight":100,"status":"passing"}]}}`, 24 * time.Hour},
		{"corrupt", `{"version":1,"saved_at":`, 24 * time.Hour},
		{"other version", `{"version":7,"saved_at":"2099-01-01T00:00:00Z","services":{}}`, 24 * time.Hour},
		{"foreign instance", fmt.Sprintf(`{"version":1,"saved_at":%q,"services":{"web":[{"service":"db","id":"w1"}]}}`, time.Now().UTC().Format(time.RFC3339)), 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, lkgFile), []byte(tc.content), 0o644)
			g, _ := newGuard(t, []string{"test://a"}, func(c *Config) { c.StateDir = dir; c.MaxAge = tc.maxAge })
			if got := table(g); got != "" {
				t.Errorf("table from an unusable state: %s", got)
			}
		})
	}
}

func TestDefaultProbe(t *testing.T) {
	// TCP: a listener answers, a closed port does not.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr)
	ctx := context.Background()
	alive := &catalog.Instance{Address: "127.0.0.1", Port: addr.Port}
	if err := DefaultProbe(ctx, alive); err != nil {
		t.Errorf("probe of a listening port: %v", err)
	}
	l.Close()
	if err := DefaultProbe(ctx, alive); err == nil {
		t.Errorf("probe of a closed port succeeded")
	}
	// Vitals: ready:false is dead, ready:true alive.
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"ready":%v}`, ready)
	}))
	defer srv.Close()
	v := &catalog.Instance{Address: "127.0.0.1", Port: 1, Check: &catalog.Check{Type: "vitals", Target: srv.URL + "/metrics"}}
	if err := DefaultProbe(ctx, v); err != nil {
		t.Errorf("vitals ready:true: %v", err)
	}
	ready = false
	if err := DefaultProbe(ctx, v); err == nil || !strings.Contains(err.Error(), "ready:false") {
		t.Errorf("vitals ready:false: %v", err)
	}
}
