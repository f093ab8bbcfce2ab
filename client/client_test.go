package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/server"
)

// newServer starts a real registry server (raft in memory, data in a temp
// dir) and waits until it leads.
func newServer(t *testing.T) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Raft = ""
	cfg.RaftMultiplier = 1
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !s.Store().IsLeader() || !s.Store().Ready() {
		if time.Now().After(deadline) {
			t.Fatal("server did not become leader")
		}
		time.Sleep(time.Millisecond)
	}
	// Leader duties load right after leadership; give them a moment of
	// (virtual, inside a bubble) time.
	time.Sleep(10 * time.Millisecond)
	return s
}

// over returns a client whose requests go over real HTTP to s.
func over(t *testing.T, s *server.Server) *client.Client {
	t.Helper()
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	c, err := client.New(hs.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handlerTransport serves requests with a handler in process, so a client
// can run inside a synctest bubble without real sockets.
type handlerTransport struct {
	h    http.Handler
	fail atomic.Int32 // answer this many requests with 503 first
	seen atomic.Int32
	mu   sync.Mutex
	log  []string
}

func (t *handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.seen.Add(1)
	t.mu.Lock()
	t.log = append(t.log, r.Method+" "+r.URL.Path)
	t.mu.Unlock()
	if t.fail.Load() > 0 {
		t.fail.Add(-1)
		return nil, errors.New("connection refused (simulated)")
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func TestRoundTrip(t *testing.T) {
	c := over(t, newServer(t))
	ctx := context.Background()
	in, err := c.Register(ctx, "web", "w1", catalog.Registration{Address: "10.0.0.1", Port: 80, Tags: []string{"v1"}})
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != catalog.Passing || in.Weight != catalog.DefaultWeight {
		t.Errorf("registered %+v", in)
	}
	if _, err := c.Register(ctx, "web", "w2", catalog.Registration{Address: "10.0.0.2", Port: 80}); err != nil {
		t.Fatal(err)
	}
	all, idx, err := c.Instances(ctx, "web", client.Query{Tags: []string{"v1"}})
	if err != nil || len(all) != 1 || all[0].ID != "w1" || idx == 0 {
		t.Errorf("Instances tag v1 = %v, %d, %v", all, idx, err)
	}
	svcs, _, err := c.Services(ctx, client.Query{})
	if err != nil || len(svcs) != 1 || svcs[0].Instances != 2 {
		t.Errorf("Services = %v, %v", svcs, err)
	}
	if err := c.Deregister(ctx, "web", "w2"); err != nil {
		t.Fatal(err)
	}
	err = c.Deregister(ctx, "web", "w2")
	var apiErr *client.Error
	if !errors.Is(err, client.ErrNotFound) || !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Errorf("deregistering twice: %v; want a 404 client.Error wrapping ErrNotFound", err)
	}
	// Bad input comes back with the server's explanation.
	_, err = c.Register(ctx, "web", "w3", catalog.Registration{Address: "10.0.0.3", Port: 0})
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "port: must be between 1 and 65535") {
		t.Errorf("bad registration: %v", err)
	}
}

func TestBlockingInstances(t *testing.T) {
	c := over(t, newServer(t))
	ctx := context.Background()
	c.Register(ctx, "web", "w1", catalog.Registration{Address: "10.0.0.1", Port: 80})
	_, idx, _ := c.Instances(ctx, "web", client.Query{})
	got := make(chan int, 1)
	go func() {
		all, _, err := c.Instances(ctx, "web", client.Query{Index: idx, Wait: time.Minute})
		if err != nil {
			t.Error(err)
		}
		got <- len(all)
	}()
	c.Register(ctx, "web", "w2", catalog.Registration{Address: "10.0.0.2", Port: 80})
	if n := <-got; n != 2 {
		t.Errorf("blocking query returned %d instances, want 2", n)
	}
}

func TestWatchResumesWithoutLoss(t *testing.T) {
	c := over(t, newServer(t))
	ctx := context.Background()
	c.Register(ctx, "web", "w1", catalog.Registration{Address: "10.0.0.1", Port: 80})
	var types []string
	stop := errors.New("stop")
	cursor, err := c.Watch(ctx, "web", 0, func(e catalog.WatchEvent) error {
		types = append(types, e.Type)
		if e.Type == catalog.WatchSynced {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || strings.Join(types, " ") != "snapshot synced" {
		t.Fatalf("first watch: %v %v", types, err)
	}
	// Changes while disconnected are replayed on resume.
	c.Register(ctx, "web", "w2", catalog.Registration{Address: "10.0.0.2", Port: 80})
	c.Deregister(ctx, "web", "w1")
	var got []string
	_, err = c.Watch(ctx, "web", cursor, func(e catalog.WatchEvent) error {
		got = append(got, e.Type+" "+e.ID)
		if e.Type == catalog.WatchSynced {
			return stop
		}
		return nil
	})
	if want := "put w2,delete w1,synced "; strings.Join(got, ",") != want {
		t.Errorf("resumed watch saw %q, want %q (err %v)", strings.Join(got, ","), want, err)
	}
}

func TestKeepHeartbeatsAndReRegisters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t)
		tr := &handlerTransport{h: s.Handler()}
		c, _ := client.New("127.0.0.1:7700", &http.Client{Transport: tr})
		admin, _ := client.New("127.0.0.1:7700", &http.Client{Transport: &handlerTransport{h: s.Handler()}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- c.Keep(ctx, "web", "w1", catalog.Registration{Address: "10.0.0.1", Port: 80, TTL: catalog.Duration(3 * time.Second)}, nil)
		}()
		// A minute of heartbeats every TTL/3 keeps it passing with no
		// status write.
		time.Sleep(time.Millisecond)
		first, err := admin.Instance(context.Background(), "web", "w1")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		in, _ := admin.Instance(context.Background(), "web", "w1")
		if in.Status != catalog.Passing || in.ModifyIndex != first.ModifyIndex {
			t.Fatalf("after a minute: %s at %d; want passing at %d", in.Status, in.ModifyIndex, first.ModifyIndex)
		}
		if n := tr.seen.Load(); n != 61 { // 1 registration + 60 heartbeats, one a second
			t.Errorf("%d requests in a minute with a 3s TTL, want 61", n)
		}
		// The server forgets the instance: the next heartbeat gets 404 and
		// Keep registers it again within one heartbeat period.
		admin.Deregister(context.Background(), "web", "w1")
		time.Sleep(time.Second + time.Millisecond)
		if _, err := admin.Instance(context.Background(), "web", "w1"); err != nil {
			t.Fatalf("not registered again a heartbeat after being forgotten: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Keep returned %v on cancel", err)
		}
		if _, err := admin.Instance(context.Background(), "web", "w1"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("still registered after Keep returned: %v", err)
		}
	})
}

func TestKeepBacksOffWhileTheServerIsAway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t)
		tr := &handlerTransport{h: s.Handler()}
		tr.fail.Store(6)
		c, _ := client.New("127.0.0.1:7700", &http.Client{Transport: tr})
		ctx, cancel := context.WithCancel(context.Background())
		var logged []string
		var mu sync.Mutex
		kept := make(chan struct{})
		go func() {
			defer close(kept)
			c.Keep(ctx, "web", "w1", catalog.Registration{Address: "10.0.0.1", Port: 80, TTL: catalog.Duration(10 * time.Second)},
				func(format string, args ...any) {
					mu.Lock()
					logged = append(logged, format)
					mu.Unlock()
				})
		}()
		// Keep deregisters when stopped; let it finish inside the bubble.
		defer func() { cancel(); <-kept }()
		// Six failures with backoff doubling from 500ms (jittered to
		// between half and all of it): 0.25+0.5+1+2+4+5 = 12.75s at least,
		// 0.5+1+2+4+8+10 = 25.5s at most.
		time.Sleep(12 * time.Second)
		if n := tr.seen.Load(); n > 6 {
			t.Errorf("%d attempts within 12s: backoff too short", n)
		}
		// The seventh attempt comes by 25.5s; it registers, through raft,
		// whose disk writes take no virtual time but real time: wait for
		// the recovery line rather than for an instant.
		recovered := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(logged) >= 7 && strings.Contains(logged[len(logged)-1], "reachable again")
		}
		for deadline := time.Now().Add(14 * time.Second); !recovered() && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		if n := tr.seen.Load(); n < 7 {
			t.Fatalf("only %d attempts after 26s: backoff too long", n)
		}
		if !recovered() {
			mu.Lock()
			defer mu.Unlock()
			t.Errorf("log %v; want 6 retries then a recovery line", logged)
		}
	})
}

func TestKeepGivesUpOnBadRegistration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t)
		c, _ := client.New("127.0.0.1:7700", &http.Client{Transport: &handlerTransport{h: s.Handler()}})
		err := c.Keep(context.Background(), "web", "w1", catalog.Registration{Address: "10.0.0.1", Port: 0}, nil)
		var apiErr *client.Error
		if !errors.As(err, &apiErr) || apiErr.Status != 400 {
			t.Errorf("Keep with an invalid registration: %v; want the 400 at once", err)
		}
	})
}

func TestNewAddress(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "http://127.0.0.1:7700", ""},
		{"10.0.0.1:7700", "http://10.0.0.1:7700", ""},
		{"https://reg.example:443/", "https://reg.example:443", ""},
		{"ftp://x", "", "is not an http:// URL"},
	} {
		c, err := client.New(tc.in, nil)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("New(%q) error %v, want %q", tc.in, err, tc.err)
			}
		case err != nil || c.Address() != tc.want:
			t.Errorf("New(%q) = %v, %v; want %s", tc.in, c, err, tc.want)
		}
	}
}
