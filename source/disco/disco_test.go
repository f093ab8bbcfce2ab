package disco

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/server"
	"github.com/discotech/disco/source"
	"github.com/discotech/disco/source/sourcetest"
)

// registry is a real registry server, in process, that can be stopped and
// started again on the same address and data.
type registry struct {
	t    *testing.T
	dir  string
	addr string
	stop func()
}

func (r *registry) start() {
	r.t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.Raft, cfg.RaftMultiplier = r.dir, "", 1
	cfg.HTTP = r.addr
	cfg.DNS.Addr = ""
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	var l net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The port may take a moment to be free again after a stop.
		if l, err = s.Listen(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, l); close(done) }()
	r.stop = func() { cancel(); <-done; s.Close() }
	for !s.Store().IsLeader() || !s.Store().Ready() {
		if time.Now().After(deadline) {
			r.t.Fatal("the registry did not become leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newRegistry(t *testing.T) *registry {
	r := &registry{t: t, dir: t.TempDir(), addr: "127.0.0.1:0"}
	r.start()
	t.Cleanup(func() {
		if r.stop != nil {
			r.stop()
		}
	})
	return r
}

func (r *registry) client() *client.Client {
	c, err := client.New(r.addr, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func register(t *testing.T, c *client.Client, service, id, addr string) {
	t.Helper()
	if _, err := c.Register(context.Background(), service, id, catalog.Registration{Address: addr, Port: 8080}); err != nil {
		t.Fatal(err)
	}
}

func TestFollowsTheRegistryAcrossARestart(t *testing.T) {
	reg := newRegistry(t)
	c := reg.client()
	register(t, c, "web", "w1", "10.0.1.5")
	register(t, c, "web", "w2", "10.0.1.6")
	register(t, c, "db", "d1", "10.0.2.1")

	src, err := source.New("disco+http://"+reg.addr, source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := sourcetest.NewRecorder()
	sourcetest.Run(t, src, rec)

	rec.WaitState(t, strings.Join([]string{
		"db/d1 10.0.2.1:8080 passing weight=100",
		"web/w1 10.0.1.5:8080 passing weight=100",
		"web/w2 10.0.1.6:8080 passing weight=100",
	}, "\n"), 10*time.Second)
	if u := rec.Updates(); !u[0].Full {
		t.Errorf("the first update is not a full listing: %+v", u[0])
	}

	// Changes arrive as updates of the one service they touch.
	register(t, c, "web", "w3", "10.0.1.7")
	if err := c.Deregister(context.Background(), "db", "d1"); err != nil {
		t.Fatal(err)
	}
	rec.WaitState(t, strings.Join([]string{
		"db: none",
		"web/w1 10.0.1.5:8080 passing weight=100",
		"web/w2 10.0.1.6:8080 passing weight=100",
		"web/w3 10.0.1.7:8080 passing weight=100",
	}, "\n"), 10*time.Second)

	// The registry goes away: a failure, and nothing removed.
	before := rec.State()
	nUpdates, _ := rec.Counts()
	reg.stop()
	rec.WaitFor(t, "a failure", 10*time.Second, func(r *sourcetest.Recorder) bool { return r.LastFailure() != nil })
	if n, _ := rec.Counts(); n != nUpdates || rec.State() != before {
		t.Fatalf("the registry's absence changed the state:\n%s", rec.State())
	}

	// It comes back with the same data; a change made after it arrives.
	reg.start()
	register(t, reg.client(), "web", "w4", "10.0.1.8")
	rec.WaitFor(t, "w4 after the restart", 15*time.Second, func(r *sourcetest.Recorder) bool {
		return strings.Contains(r.State(), "web/w4 10.0.1.8:8080")
	})
	if !strings.Contains(rec.State(), "web/w1 10.0.1.5:8080") {
		t.Errorf("after the restart: %s", rec.State())
	}
}

func TestSpec(t *testing.T) {
	for _, spec := range []string{"disco+http://", "disco+http://127.0.0.1:7700/services"} {
		if _, err := source.New(spec, source.Options{}); err == nil {
			t.Errorf("source.New(%q) accepted it", spec)
		}
	}
}
