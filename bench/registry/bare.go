package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// The floor of a watcher held as an HTTP response: the benchmark binary,
// started again with -bare-http-server, serves streaming responses that do
// nothing but stay open. What one of them costs is what net/http itself
// costs per connection (a goroutine, a background reader, read and write
// buffers), below which no one-connection-per-watcher design can go.

// serveBare runs the bare server on addr until it is killed.
func serveBare(addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /watch", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("GET /churn", func(w http.ResponseWriter, r *http.Request) {
		// Garbage, for settledMemory: the size is not a constant, so the
		// slice lives on the heap.
		b := make([]byte, 64<<10+len(r.URL.RawQuery))
		w.Write(b[:1])
	})
	// The same series names a Go server exports through Prometheus.
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "go_memstats_heap_inuse_bytes %d\ngo_memstats_stack_inuse_bytes %d\ngo_gc_duration_seconds_count %d\n",
			ms.HeapInuse, ms.StackInuse, ms.NumGC)
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(l)
}

// benchFloor measures the memory per watcher of the bare server.
func benchFloor(ctx context.Context, cfg config, res *results) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "disco-bench-bare-")
	if err != nil {
		return err
	}
	addr, err := sysstat.FreeAddr()
	if err != nil {
		return err
	}
	p, err := peer.Start("bare-http", dir, self, "-bare-http-server", addr)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	defer stopPeer(p)
	base := "http://" + addr
	if err := p.WaitReady(ctx, "ready", httpOK(base+"/readyz")); err != nil {
		return err
	}
	hc := &http.Client{Transport: newTransport(cfg.watchers)}
	defer hc.CloseIdleConnections()
	churn := func(ctx context.Context) error {
		_, _, err := get(ctx, hc, base+"/churn")
		return err
	}
	before, err := readMemory(ctx, p, base+"/metrics", churn)
	if err != nil {
		return err
	}
	cli.Progress("net/http floor: opening %d idle streaming responses", cfg.watchers)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel, below
	defer cancel()
	for range cfg.watchers {
		req, err := http.NewRequestWithContext(wctx, http.MethodGet, base+"/watch", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req) // returns once the headers are in
		if err != nil {
			return err
		}
		wg.Go(func() {
			<-wctx.Done()
			resp.Body.Close()
		})
	}
	after, err := readMemory(ctx, p, base+"/metrics", churn)
	if err != nil {
		return err
	}
	per := after.sub(before).per(cfg.watchers)
	res.watchMem.add("go", "net/http floor", memVals(per),
		"a bare Go HTTP server holding idle streaming responses, one connection each: what net/http costs per connection; "+per.noise())
	return nil
}
