package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/figure"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
)

// discotech is a Discotech server under test and the clients that load it.
type discotech struct {
	p    *peer.Process
	base string       // http://127.0.0.1:port
	hc   *http.Client // keep-alive pool with a connection per worker
	cl   *client.Client
}

// newTransport returns a transport tuned for many concurrent requests to one
// host: an idle keep-alive connection kept for every concurrent caller.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no overall limit
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

func startDiscotech(ctx context.Context, bin string, workers int) (*discotech, error) {
	dir, err := os.MkdirTemp("", "disco-bench-server-")
	if err != nil {
		return nil, err
	}
	p, base, err := peer.StartDiscoServer(ctx, "discotech", dir, bin)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d := &discotech{p: p, base: base, hc: &http.Client{Transport: newTransport(workers + 8)}}
	if d.cl, err = client.New(d.base, d.hc); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *discotech) close() {
	d.hc.CloseIdleConnections()
	stopPeer(d.p)
}

// metric reads one series from the server's /metrics.
func (d *discotech) metric(ctx context.Context, series string) (float64, error) {
	m, err := scrape(ctx, d.base+"/metrics")
	if err != nil {
		return 0, err
	}
	v, ok := m[series]
	if !ok {
		return 0, fmt.Errorf("/metrics has no %s", series)
	}
	return v, nil
}

// memory reads the server's settled memory; the churn lists a service.
func (d *discotech) memory(ctx context.Context) (reading, error) {
	churn := func(ctx context.Context) error {
		_, _, err := d.cl.Instances(ctx, "svc-000", client.Query{})
		return err
	}
	return readMemory(ctx, d.p, d.base+"/metrics", churn)
}

func benchDiscotech(ctx context.Context, cfg config, bin string, res *results) error {
	d, err := startDiscotech(ctx, bin, cfg.workers)
	if err != nil {
		return err
	}
	defer d.close()
	cli.Progress("discotech: server pid %d on %s", d.p.Pid(), d.base)

	empty, err := d.memory(ctx)
	if err != nil {
		return err
	}
	cli.Progress("discotech: registering %d instances", cfg.instances)
	reg := countLoop(ctx, cfg.workers, cfg.instances, d.p.CPUSeconds, func(ctx context.Context, _, i int) error {
		service, id := instanceName(i, cfg.services)
		_, err := d.cl.Register(ctx, service, id, registration(i, cfg.ttl))
		return err
	})
	res.reg.add("discotech", "PUT", loopVals(reg), loopNote(reg))
	full, err := d.memory(ctx)
	if err != nil {
		return err
	}
	per := full.sub(empty).per(cfg.instances)
	res.instMem.add("discotech", "instances", memVals(per), per.noise())

	if err := d.heartbeats(ctx, cfg, res); err != nil {
		return err
	}
	if err := d.fanoutStream(ctx, cfg, res); err != nil {
		return err
	}
	return d.fanoutBlocking(ctx, cfg, res)
}

// heartbeats renews every instance's TTL round-robin for cfg.duration, one
// request per heartbeat, then (with cfg.batch > 0) in batches through
// PUT /v1/heartbeats, and checks from raft's last index that neither wrote
// to the log.
func (d *discotech) heartbeats(ctx context.Context, cfg config, res *results) error {
	own := owned(cfg.instances, cfg.workers)
	// One request per instance, built once: a worker owns its instances, so
	// a request is reused only after its previous answer was read.
	reqs := make([]*http.Request, cfg.instances)
	for i := range reqs {
		service, id := instanceName(i, cfg.services)
		url := d.base + "/v1/services/" + service + "/instances/" + id + "/heartbeat"
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, http.NoBody)
		if err != nil {
			return err
		}
		reqs[i] = req
	}
	err := d.heartbeatRun(ctx, cfg, res, "PUT heartbeat", 1, func(ctx context.Context, w, k int) error {
		mine := own[w]
		req := reqs[mine[k%len(mine)]]
		resp, err := d.hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("PUT %s: %s", req.URL.Path, resp.Status)
		}
		return nil
	})
	if err != nil || cfg.batch == 0 {
		return err
	}

	// Each worker's instances in bodies of exactly batch keys, encoded once;
	// the last body wraps around to the start of the worker's list, so the
	// rate counts what was really sent.
	batch := min(cfg.batch, cfg.instances/cfg.workers)
	bodies := make([][][]byte, cfg.workers)
	for w, mine := range own {
		for start := 0; start < len(mine); start += batch {
			var keys []string
			for j := range batch {
				keys = append(keys, catalog.Key(instanceName(mine[(start+j)%len(mine)], cfg.services)))
			}
			b, err := json.Marshal(map[string][]string{"instances": keys})
			if err != nil {
				return err
			}
			bodies[w] = append(bodies[w], b)
		}
	}
	url := d.base + "/v1/heartbeats"
	return d.heartbeatRun(ctx, cfg, res, batchName(batch), batch, func(ctx context.Context, w, k int) error {
		body := bodies[w][k%len(bodies[w])]
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := d.hc.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"unknown":[]`)) {
			return fmt.Errorf("PUT /v1/heartbeats: %s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return nil
	})
}

// heartbeatRun runs one heartbeat loop for cfg.duration and adds its line,
// with the raft entries written meanwhile. perOp is how many heartbeats one
// call of op sends: rates count heartbeats, latencies are per request.
func (d *discotech) heartbeatRun(ctx context.Context, cfg config, res *results, name string, perOp int,
	op func(ctx context.Context, w, k int) error) error {
	const (
		lastIndex = "disco_registry_raft_last_index"
		renewed   = `disco_lease_heartbeats_total{result="renewed"}`
		revived   = `disco_lease_heartbeats_total{result="revived"}`
	)
	before, err := scrape(ctx, d.base+"/metrics")
	if err != nil {
		return err
	}
	cli.Progress("discotech: %s for %s", name, cfg.duration)
	hb := timedLoop(ctx, cfg.workers, cfg.duration, d.p.CPUSeconds, op)
	after, err := scrape(ctx, d.base+"/metrics")
	if err != nil {
		return err
	}
	vals := loopVals(hb)
	vals["ops"] *= float64(perOp)
	vals["per_cpu"] *= float64(perOp)
	vals["raft"] = after[lastIndex] - before[lastIndex]
	note := fmt.Sprintf("raft last index %d → %d; server counted %s renewals and %s revivals (of expired leases: each costs a status write) for %s heartbeats answered",
		int64(before[lastIndex]), int64(after[lastIndex]),
		figure.Thousands(after[renewed]-before[renewed]), figure.Thousands(after[revived]-before[revived]), figure.Thousands(float64(len(hb.lat)*perOp)))
	if perOp > 1 {
		note += fmt.Sprintf("; latencies are per request of %d", perOp)
	}
	if e := loopNote(hb); e != "" {
		note += "; " + e
	}
	res.hb.add("discotech", name, vals, note)
	return nil
}

// fanoutWrite is one write to the watched service.
func (d *discotech) fanoutWrite(ctx context.Context, seq int) error {
	_, err := d.cl.Register(ctx, fanoutService, fanoutID, fanoutRegistration(seq))
	return err
}

// watchers runs one watcher per goroutine, each over its own HTTP
// connection, measures the server's memory before and after they are all
// established, sends the writes, and records the fan-out. watch runs
// watcher w: it calls ready once it is established, then f.saw for what it
// receives, until ctx is done.
func (d *discotech) watchers(ctx context.Context, cfg config, name, gauge string, res *results,
	watch func(ctx context.Context, hc *http.Client, w int, f *fanout, ready func()) error) error {
	if err := d.fanoutWrite(ctx, 0); err != nil {
		return err
	}
	before, err := d.memory(ctx)
	if err != nil {
		return err
	}
	cli.Progress("discotech: opening %d watchers (%s)", cfg.watchers, name)
	hc := &http.Client{Transport: newTransport(cfg.watchers)}
	defer hc.CloseIdleConnections()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := newFanout(cfg.watchers, cfg.writes)
	ready := make(chan struct{}, cfg.watchers)
	errc := make(chan error, cfg.watchers)
	var wg sync.WaitGroup
	for w := range cfg.watchers {
		wg.Go(func() {
			var once sync.Once
			err := watch(wctx, hc, w, f, func() { once.Do(func() { ready <- struct{}{} }) })
			if err != nil && wctx.Err() == nil {
				errc <- fmt.Errorf("watcher %d: %w", w, err)
			}
		})
	}
	stop := func() { cancel(); wg.Wait() }
	deadline := time.After(60 * time.Second)
	for n := 0; n < cfg.watchers; n++ {
		select {
		case <-ready:
		case err := <-errc:
			stop()
			return err
		case <-deadline:
			stop()
			return fmt.Errorf("only %d of %d watchers established after 60s", n, cfg.watchers)
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
	}
	// The server must hold every watcher before anything is measured.
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		n, err := d.metric(ctx, gauge)
		if err == nil && int(n) >= cfg.watchers {
			break
		}
		if time.Since(start) > 30*time.Second {
			stop()
			return fmt.Errorf("server holds %v of %d watchers after 30s (%s)", n, cfg.watchers, gauge)
		}
	}
	after, err := d.memory(ctx)
	if err != nil {
		stop()
		return err
	}
	per := after.sub(before).per(cfg.watchers)
	res.watchMem.add("discotech", name, memVals(per), per.noise())
	cli.Progress("discotech: %d writes, %s apart", cfg.writes, cfg.spacing)
	cpu, err := runFanout(ctx, cfg, f, d.p.CPUSeconds, d.fanoutWrite)
	stop()
	if err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	res.fan.add("discotech", name, fanVals(f.result(), cpu), "")
	return nil
}

var (
	putPrefix    = []byte(`{"type":"put"`)
	syncedPrefix = []byte(`{"type":"synced"`)
)

// fanoutStream measures watchers on the watch stream (GET /v1/watch).
func (d *discotech) fanoutStream(ctx context.Context, cfg config, res *results) error {
	return d.watchers(ctx, cfg, "watch stream", `disco_server_watchers{kind="stream"}`, res,
		func(ctx context.Context, hc *http.Client, w int, f *fanout, ready func()) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/v1/watch?service="+fanoutService, nil)
			if err != nil {
				return err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /v1/watch: %s", resp.Status)
			}
			// Lines are read, not decoded: the put line's meta carries the
			// write's number, and decoding it all would only load the cores
			// the server needs.
			br := bufio.NewReaderSize(resp.Body, 16<<10)
			for {
				line, err := br.ReadSlice('\n')
				switch {
				case err == bufio.ErrBufferFull:
					continue
				case err != nil:
					return err
				case bytes.HasPrefix(line, putPrefix):
					f.saw(w, parseSeq(line))
				case bytes.HasPrefix(line, syncedPrefix):
					ready()
				}
			}
		})
}

// fanoutBlocking measures watchers that long-poll with blocking queries
// (GET /v1/services/S?index=N), asking again with the new index after each
// answer.
func (d *discotech) fanoutBlocking(ctx context.Context, cfg config, res *results) error {
	return d.watchers(ctx, cfg, "blocking query", `disco_server_watchers{kind="blocking"}`, res,
		func(ctx context.Context, hc *http.Client, w int, f *fanout, ready func()) error {
			prefix := d.base + "/v1/services/" + fanoutService + "?wait=5m&index="
			var index uint64
			for {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, prefix+strconv.FormatUint(index, 10), nil)
				if err != nil {
					return err
				}
				resp, err := hc.Do(req)
				if err != nil {
					return err
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					return err
				}
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("GET %s: %s", req.URL, resp.Status)
				}
				if index, err = strconv.ParseUint(resp.Header.Get("X-Disco-Index"), 10, 64); err != nil {
					return fmt.Errorf("GET %s: X-Disco-Index: %w", req.URL, err)
				}
				f.saw(w, parseSeq(body))
				// The first answer (index 0) does not block; the next
				// request does, and the gauge tells when it is parked.
				ready()
			}
		})
}
