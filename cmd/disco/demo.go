package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
)

// demoBackend is one of disco dev's example backends of the service web.
type demoBackend struct {
	id      string
	version string
	tags    []string
}

// demoBackends are disco dev's demo: two v1 backends and one v2, all on
// the router's catch-all route, v2 also on /v2.
var demoBackends = []demoBackend{
	{"web-1", "1.0.0", []string{"v1", "urlprefix-/"}},
	{"web-2", "1.0.0", []string{"v1", "urlprefix-/"}},
	{"web-3", "2.0.0", []string{"v2", "urlprefix-/", "urlprefix-/v2 strip=/v2"}},
}

// startDemo runs the demo backends with the SDK (client.Backend) against
// the registry at api until ctx ends; wait returns once they have drained.
func startDemo(ctx context.Context, api string, log *slog.Logger) (wait func(), err error) {
	c, err := client.New(api, nil)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{}, len(demoBackends))
	started := 0
	for _, d := range demoBackends {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ml, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			l.Close()
			return nil, err
		}
		b := &client.Backend{
			Client: c, Service: "web", ID: d.id,
			Registration: catalog.Registration{Tags: d.tags, TTL: catalog.Duration(10 * time.Second)},
			Listener:     l, Metrics: ml,
			Vitals: client.NewVitals(d.version),
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "hello from %s (web %s) %s\n", d.id, d.version, r.URL.Path)
			}),
			DrainDelay: 100 * time.Millisecond,
			Logf:       func(format string, args ...any) { log.Debug("demo: " + fmt.Sprintf(format, args...)) },
		}
		started++
		go func() {
			if err := b.Run(ctx); err != nil {
				log.Error("demo backend", "id", d.id, "err", err)
			}
			done <- struct{}{}
		}()
	}
	return func() {
		for range started {
			<-done
		}
	}, nil
}

// demoLines are the commands to try against the demo.
func demoLines(router, admin string) string {
	if router == "" {
		return ""
	}
	return fmt.Sprintf(`
The demo: three backends of web (web-1 and web-2 tagged v1, web-3 tagged v2),
built with the Go SDK, registered with heartbeats and serving vitals:
  curl -s http://%[1]s/        # through the router, spread over web-1..3
  curl -s http://%[1]s/v2/     # only v2 (tag urlprefix-/v2 strip=/v2)
  curl -s http://%[2]s/backends   # the router's view: weights, latency, vitals
  open http://%[2]s/              # the router's page
`, router, admin)
}
