package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/discotech/disco/bench/internal/peer"
)

// peersCPU adds up the CPU time of every peer stopped so far, to tell how
// much of the machine's work during a run was neither a peer's nor the
// benchmark's. Peers are started and stopped from one goroutine.
var peersCPU float64

// stopPeer stops p, counts its CPU time into peersCPU and removes its
// directory: a peer's data can be large, and the next one is measured
// without it on the disk.
func stopPeer(p *peer.Process) {
	p.Stop()
	peersCPU += p.CPUSeconds()
	os.RemoveAll(p.Dir())
}

// httpOK is a WaitReady check: GET url answers 200.
func httpOK(url string) func(context.Context) error { return peer.HTTPReady(url, "") }

// get fetches url and returns the status and body.
func get(ctx context.Context, hc *http.Client, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// metrics is one scrape of a Prometheus text endpoint, by series:
// `name` or `name{label="value",...}` exactly as the server wrote it.
type metrics map[string]float64

// scrape reads the Prometheus text at url. Both peers serve /metrics.
func scrape(ctx context.Context, url string) (metrics, error) {
	status, body, err := get(ctx, http.DefaultClient, url)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %d", url, status)
	}
	m := metrics{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		// The series ends at the closing brace when there are labels (label
		// values may hold spaces), else at the first space.
		end := strings.IndexByte(line, ' ')
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			end = i + 1
		}
		if end <= 0 || end >= len(line) {
			continue
		}
		fields := strings.Fields(line[end:])
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			m[line[:end]] = v
		}
	}
	return m, nil
}

// memory is what a peer uses, in bytes.
type memory struct {
	rss, heap, stack float64
}

func (a memory) sub(b memory) memory {
	return memory{rss: a.rss - b.rss, heap: a.heap - b.heap, stack: a.stack - b.stack}
}

func (a memory) per(n int) memory {
	f := float64(n)
	return memory{rss: a.rss / f, heap: a.heap / f, stack: a.stack / f}
}

// reading is a memory figure measured several times: the median, and the
// spread (largest minus smallest) that tells how much of it is noise.
type reading struct{ mid, spread memory }

// sub is the growth from b to a; its spread adds both readings' spreads.
func (a reading) sub(b reading) reading {
	return reading{mid: a.mid.sub(b.mid), spread: memory{
		rss: a.spread.rss + b.spread.rss, heap: a.spread.heap + b.spread.heap, stack: a.spread.stack + b.spread.stack}}
}

func (a reading) per(n int) reading { return reading{mid: a.mid.per(n), spread: a.spread.per(n)} }

// noise describes the spread of a per-item figure.
func (a reading) noise() string {
	return fmt.Sprintf("noise (spread of the readings): RSS ±%s, heap ±%s", fmtBytes(a.spread.rss/2), fmtBytes(a.spread.heap/2))
}

// readMemory takes settled readings of p's memory until the last three
// agree (heap within 1% or 256 KiB), at most six, and returns their median
// and spread. Right after heavy work the heap keeps shrinking for a few
// collections as half-empty spans drain, and RSS moves by megabytes on its
// own (freed pages go back to the OS only as the runtime's scavenger gets
// to them): the median resists both, and the spread shows what is left.
func readMemory(ctx context.Context, p *peer.Process, metricsURL string, churn func(context.Context) error) (reading, error) {
	var rs []memory
	for n := 0; n < 6; n++ {
		m, err := settledMemory(ctx, p, metricsURL, churn)
		if err != nil {
			return reading{}, err
		}
		rs = append(rs, m)
		if len(rs) < 3 {
			continue
		}
		rs = rs[len(rs)-3:]
		lo := min(rs[0].heap, rs[1].heap, rs[2].heap)
		hi := max(rs[0].heap, rs[1].heap, rs[2].heap)
		if hi-lo <= max(0.01*hi, 256<<10) {
			break
		}
	}
	stat := func(f func(memory) float64) (mid, spread float64) {
		v := []float64{f(rs[0]), f(rs[1]), f(rs[2])}
		slices.Sort(v)
		return v[1], v[2] - v[0]
	}
	var r reading
	r.mid.rss, r.spread.rss = stat(func(m memory) float64 { return m.rss })
	r.mid.heap, r.spread.heap = stat(func(m memory) float64 { return m.heap })
	r.mid.stack, r.spread.stack = stat(func(m memory) float64 { return m.stack })
	return r, nil
}

// settledMemory measures p after its garbage is gone. A Go heap between two
// collections holds dead objects too, so a raw heap figure depends on when
// it was read. This makes the server allocate (churn: requests it must
// answer) until it has collected garbage three more times: the first two
// under heavy churn from 4 goroutines, to clear what earlier work left; the
// last with one request at a time and a scrape after each, so that little is
// allocated between that collection and the reading. It then lets the
// background sweeper return the freed spans, and reads the heap and stacks
// from metricsURL and the RSS from /proc.
func settledMemory(ctx context.Context, p *peer.Process, metricsURL string, churn func(context.Context) error) (memory, error) {
	const gcCount = "go_gc_duration_seconds_count"
	m, err := scrape(ctx, metricsURL)
	if err != nil {
		return memory{}, err
	}
	start := m[gcCount]
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	// Heavy churn until two collections have run.
	hctx, stopHeavy := context.WithCancel(cctx)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for hctx.Err() == nil {
				if err := churn(hctx); err != nil && hctx.Err() == nil {
					errs <- err
					stopHeavy()
				}
			}
		})
	}
	for err == nil && m[gcCount] < start+2 && hctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
		m, err = scrape(cctx, metricsURL)
	}
	stopHeavy()
	wg.Wait()
	// Light churn until the third.
	for err == nil && m[gcCount] < start+3 && cctx.Err() == nil && len(errs) == 0 {
		if err = churn(cctx); err == nil {
			m, err = scrape(cctx, metricsURL)
		}
	}
	switch {
	case ctx.Err() != nil:
		return memory{}, ctx.Err()
	case len(errs) > 0:
		return memory{}, fmt.Errorf("%s: churn for a settled heap: %w", p.Name(), <-errs)
	case err != nil && cctx.Err() == nil:
		return memory{}, fmt.Errorf("%s: churn for a settled heap: %w", p.Name(), err)
	case cctx.Err() != nil:
		fmt.Fprintf(os.Stderr, "%s: fewer than three garbage collections in 60s; memory read unsettled\n", p.Name())
	}
	// Sweeping after a collection is lazy and in the background: until it
	// is done, heap_inuse still counts spans holding only dead objects.
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
		return memory{}, ctx.Err()
	}
	if m, err = scrape(ctx, metricsURL); err != nil {
		return memory{}, err
	}
	return memory{
		rss:   p.RSSBytes(),
		heap:  m["go_memstats_heap_inuse_bytes"],
		stack: m["go_memstats_stack_inuse_bytes"],
	}, nil
}
