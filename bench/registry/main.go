// Command registry is the end-to-end benchmark of the Discotech registry
// against etcd 3.4, the peer it claims to beat, in the same run on the same
// machine. It starts both servers itself (loopback, fresh temporary data
// dirs, fsync on), loads each in turn with the same workloads —
// registrations, TTL heartbeats, watch fan-out — measures their memory per
// watcher and per instance, and prints each system's figures and their
// ratio, then a markdown summary for docs/benchmarks.md.
//
// Run it from the repository root: go run ./bench/registry -h
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/figure"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
	"github.com/discotech/disco/catalog"
)

// config is the benchmark's flags.
type config struct {
	instances, services, workers int
	batch                        int
	duration                     time.Duration
	ttl                          time.Duration
	watchers, writes             int
	spacing                      time.Duration
	etcdConns                    int
	only                         string
	discoBin, etcdBin            string
}

func (c *config) validate() error {
	switch {
	case c.services < 1 || c.instances < c.services:
		return fmt.Errorf("-instances (%d) must be at least -services (%d), and -services at least 1", c.instances, c.services)
	case c.workers < 1 || c.workers > c.instances:
		return fmt.Errorf("-workers must be between 1 and -instances (%d), got %d", c.instances, c.workers)
	case c.duration <= 0:
		return fmt.Errorf("-duration must be positive, got %s", c.duration)
	case c.ttl < 5*time.Second || c.ttl%time.Second != 0:
		return fmt.Errorf("-ttl must be whole seconds, at least 5s (etcd leases count in seconds), got %s", c.ttl)
	case c.watchers < 1 || c.writes < 1 || c.spacing < 0:
		return fmt.Errorf("-watchers and -writes must be at least 1 and -spacing not negative")
	case c.batch < 0:
		return fmt.Errorf("-batch must not be negative, got %d", c.batch)
	case c.etcdConns < 1:
		return fmt.Errorf("-etcd-conns must be at least 1, got %d", c.etcdConns)
	case c.only != "" && c.only != "discotech" && c.only != "etcd":
		return fmt.Errorf("-only must be discotech or etcd, got %q", c.only)
	}
	return nil
}

func (c *config) runs(system string) bool { return c.only == "" || c.only == system }

func main() {
	var cfg config
	flag.IntVar(&cfg.instances, "instances", 20000, "instances to register, heartbeat, and measure memory per instance with")
	flag.IntVar(&cfg.services, "services", 100, "services the instances are spread over")
	flag.IntVar(&cfg.workers, "workers", 64, "concurrent workers for registrations and heartbeats")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long each heartbeat run lasts")
	flag.IntVar(&cfg.batch, "batch", 100, "instances per request in Discotech's batched heartbeat run (PUT /v1/heartbeats); 0 skips it")
	flag.DurationVar(&cfg.ttl, "ttl", 60*time.Second, "TTL of every instance (long enough that none expires during the run)")
	flag.IntVar(&cfg.watchers, "watchers", 1000, "watchers of one service for fan-out and memory per watcher")
	flag.IntVar(&cfg.writes, "writes", 200, "writes to the watched service")
	flag.DurationVar(&cfg.spacing, "spacing", 10*time.Millisecond, "time between two writes to the watched service")
	flag.IntVar(&cfg.etcdConns, "etcd-conns", 10, "client connections the etcd watchers are spread over")
	flag.StringVar(&cfg.only, "only", "", "run one system only: discotech or etcd")
	flag.StringVar(&cfg.discoBin, "disco", "", "disco binary to run (default: build ./cmd/disco into a temp dir)")
	flag.StringVar(&cfg.etcdBin, "etcd", "", "etcd binary to run (default: etcd on PATH; Debian: apt-get install etcd-server)")
	bare := flag.String("bare-http-server", "", "internal: serve the net/http floor on this address (the benchmark starts it)")
	flag.Parse()
	if *bare != "" {
		if err := serveBare(*bare); err != nil {
			fmt.Fprintln(os.Stderr, "bench/registry: bare HTTP server:", err)
			os.Exit(1)
		}
		return
	}
	if err := cfg.validate(); err != nil {
		cli.Usage("bench/registry", err)
	}
	cli.Main("bench/registry", func(ctx context.Context) error { return run(ctx, cfg, os.Stdout) })
}

// results are the tables every workload fills in.
type results struct {
	reg, hb, fan, watchMem, instMem *table
}

func newResults(cfg config) *results {
	loop := []column{
		{"ops", "ops/s", kRate, +1},
		{"per_cpu", "ops per server CPU-s", kCount, +1},
		{"p50", "p50", kNanos, -1},
		{"p99", "p99", kNanos, -1},
		{"errors", "errors", kCount, 0},
		{"server_cpu", "server CPU", kSecs, 0},
		{"bench_cpu", "bench CPU", kSecs, 0},
		{"other_cpu", "other CPU", kSecs, 0},
	}
	return &results{
		reg: &table{
			title: fmt.Sprintf("registrations: %s instances over %d services, ttl %s, tag + meta pair each, %d workers",
				figure.Thousands(float64(cfg.instances)), cfg.services, catalog.Duration(cfg.ttl), cfg.workers),
			cols: loop,
		},
		hb: &table{
			title: fmt.Sprintf("heartbeats: %d workers renew %s TTLs round-robin for %s", cfg.workers, figure.Thousands(float64(cfg.instances)), cfg.duration),
			cols:  append(loop[:len(loop):len(loop)], column{"raft", "raft entries", kCount, 0}),
		},
		fan: &table{
			title: fmt.Sprintf("fan-out: %d watchers of one service, %d writes %s apart; latency from just before the write to each watcher's receipt",
				cfg.watchers, cfg.writes, cfg.spacing),
			cols: []column{
				{"p50", "p50", kNanos, -1},
				{"p99", "p99", kNanos, -1},
				{"last_p50", "last watcher p50", kNanos, -1},
				{"last_p99", "last watcher p99", kNanos, -1},
				{"missed", "missed", kCount, 0},
				{"write_p50", "write p50", kNanos, 0},
				{"write_p99", "write p99", kNanos, 0},
				{"server_cpu", "server CPU", kSecs, 0},
				{"bench_cpu", "bench CPU", kSecs, 0},
				{"other_cpu", "other CPU", kSecs, 0},
			},
		},
		watchMem: &table{
			title: fmt.Sprintf("memory per watcher: growth of the server from before to after opening %d watchers, / %d", cfg.watchers, cfg.watchers),
			cols: []column{
				{"rss", "RSS", kBytes, -1},
				{"heap", "Go heap in use", kBytes, -1},
				{"stack", "goroutine stacks", kBytes, -1},
				{"heap+stack", "heap + stacks", kBytes, -1},
			},
		},
		instMem: &table{
			title: fmt.Sprintf("memory per instance: growth of the server from empty to %s instances (ttl, tag, meta pair), / %s",
				figure.Thousands(float64(cfg.instances)), figure.Thousands(float64(cfg.instances))),
			cols: []column{
				{"rss", "RSS", kBytes, -1},
				{"heap", "Go heap in use", kBytes, -1},
			},
		},
	}
}

// loopVals turns a loop's result into a table line's figures.
func loopVals(r loopResult) map[string]float64 {
	p := percentiles(r.lat, 50, 99)
	return map[string]float64{
		"ops": r.rate(), "per_cpu": float64(len(r.lat)) / r.cpu.server,
		"p50": p[0], "p99": p[1], "errors": float64(r.errs),
		"server_cpu": r.cpu.server, "bench_cpu": r.cpu.bench, "other_cpu": r.cpu.other,
	}
}

// loopNote explains a loop's failures, if any.
func loopNote(r loopResult) string {
	if r.errs == 0 {
		return ""
	}
	return fmt.Sprintf("%d failed, first: %v", r.errs, r.firstErr)
}

// memVals turns a memory reading into a table line's figures, each with
// its noise (half the readings' spread) under key+"_noise".
func memVals(r reading) map[string]float64 {
	return map[string]float64{
		"rss": r.mid.rss, "rss_noise": r.spread.rss / 2,
		"heap": r.mid.heap, "heap_noise": r.spread.heap / 2,
		"stack": r.mid.stack, "stack_noise": r.spread.stack / 2,
		"heap+stack": r.mid.heap + r.mid.stack, "heap+stack_noise": (r.spread.heap + r.spread.stack) / 2,
	}
}

func fanVals(r fanoutResult, cpu cpuSplit) map[string]float64 {
	return map[string]float64{
		"p50": r.p50, "p99": r.p99, "last_p50": r.lastP50, "last_p99": r.lastP99, "missed": float64(r.missed),
		"write_p50": r.writeP50, "write_p99": r.writeP99,
		"server_cpu": cpu.server, "bench_cpu": cpu.bench, "other_cpu": cpu.other,
	}
}

// runFanout sends the writes, waits until every watcher saw the last one
// (30s at most) and returns the CPU the server, the benchmark and everyone
// else used meanwhile.
func runFanout(ctx context.Context, cfg config, f *fanout, serverCPU func() float64, write func(ctx context.Context, seq int) error) (cpuSplit, error) {
	cpu := startCPU(serverCPU)
	if err := writeFanout(ctx, cfg, f, write); err != nil {
		return cpuSplit{}, err
	}
	f.wait(ctx, 30*time.Second)
	return cpu(), ctx.Err()
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	env := describe(cfg)
	res := newResults(cfg)
	tmp, err := os.MkdirTemp("", "disco-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	busy0, self0, start := sysstat.MachineBusySeconds(), sysstat.SelfCPUSeconds(), time.Now()

	etcdBin := ""
	if cfg.runs("etcd") {
		etcdBin, err = peer.Find(cfg.etcdBin, "etcd", "etcd-server")
		if err != nil && cfg.only == "etcd" {
			return err
		}
		if err != nil {
			fmt.Fprintf(out, "NOTE: %v\nNOTE: measuring Discotech alone; every etcd figure below is \"-\".\n", err)
		} else {
			env.etcd = peer.Version("etcd", etcdBin, "--version")
		}
	}
	if cfg.runs("discotech") {
		bin := cfg.discoBin
		if bin == "" {
			bin = filepath.Join(tmp, "disco")
			cli.Progress("building disco")
			if err := peer.BuildDisco(ctx, bin); err != nil {
				return err
			}
		}
		if err := benchDiscotech(ctx, cfg, bin, res); err != nil {
			return fmt.Errorf("discotech: %w", err)
		}
		if err := benchFloor(ctx, cfg, res); err != nil {
			return fmt.Errorf("net/http floor: %w", err)
		}
	}
	if etcdBin != "" {
		if err := benchEtcd(ctx, cfg, etcdBin, res); err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
	}

	env.other = max(sysstat.MachineBusySeconds()-busy0-(sysstat.SelfCPUSeconds()-self0)-peersCPU, 0)
	env.wall = time.Since(start)
	env.print(out)
	for _, t := range []*table{res.reg, res.hb, res.fan, res.watchMem, res.instMem} {
		t.print(out)
	}
	summary(out, cfg, env, res)
	return nil
}

// instance names and registrations, the same for both systems: instance i
// is i-NNNNNN of service svc-NNN, with a TTL, a tag and a meta pair.
func instanceName(i, services int) (service, id string) {
	return fmt.Sprintf("svc-%03d", i%services), fmt.Sprintf("i-%06d", i)
}

func registration(i int, ttl time.Duration) catalog.Registration {
	return catalog.Registration{
		// Loopback addresses: nothing ever connects to them (no checks).
		Address: fmt.Sprintf("127.1.%d.%d", (i>>8)&255, i&255),
		Port:    8080,
		Tags:    []string{"v1"},
		Meta:    map[string]string{"version": "1.0.0"},
		TTL:     catalog.Duration(ttl),
	}
}

// batchName names the batched heartbeat line: batch is the number of
// instances each request renews.
func batchName(batch int) string { return fmt.Sprintf("PUT /v1/heartbeats ×%d", batch) }

// fanoutService and fanoutID name the one instance the fan-out writes
// change: each write sets its meta "seq" to the write's number, which the
// watchers read back to time it.
const fanoutService, fanoutID = "fanout", "fan"

func fanoutRegistration(seq int) catalog.Registration {
	return catalog.Registration{
		Address: "127.1.255.1",
		Port:    8080,
		Meta:    map[string]string{"seq": fmt.Sprint(seq)},
	}
}

// writeFanout sends writes 1..cfg.writes, cfg.spacing apart (or back to
// back when a write takes longer), stamping each just before it is sent
// and when its answer arrived.
func writeFanout(ctx context.Context, cfg config, f *fanout, write func(ctx context.Context, seq int) error) error {
	next := time.Now()
	for seq := 1; seq <= cfg.writes; seq++ {
		select {
		case <-time.After(time.Until(next)):
		case <-ctx.Done():
			return ctx.Err()
		}
		f.sending(seq)
		if err := write(ctx, seq); err != nil {
			return fmt.Errorf("fan-out write %d: %w", seq, err)
		}
		f.written(seq)
		next = next.Add(cfg.spacing)
	}
	return nil
}

// env describes the run for the summary.
type env struct {
	command, date, goVersion, cpu string
	cores                         int
	etcd                          string
	// other is the CPU time processes other than the peers and the
	// benchmark used during the run, out of wall × cores.
	other float64
	wall  time.Duration
}

func describe(cfg config) env {
	e := env{
		command:   strings.TrimSpace("go run ./bench/registry " + strings.Join(os.Args[1:], " ")),
		date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		goVersion: runtime.Version(),
		cpu:       sysstat.CPUModel(),
		cores:     runtime.NumCPU(),
		etcd:      "etcd not run",
	}
	return e
}

func (e env) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n%s, %s, %s, %d cores, %s\n", e.command, e.date, e.goVersion, e.cpu, e.cores, e.etcd)
	fmt.Fprintf(w, "run took %s; other processes used %.1f CPU seconds of the %.0f the machine had\n",
		e.wall.Round(time.Second), e.other, e.wall.Seconds()*float64(e.cores))
}

// headline is one row of the summary: a figure of a table, for one
// Discotech line against one etcd line.
type headline struct {
	what, target string
	t            *table
	key          string
	disco, etcd  string // line names; etcd "" when etcd has no equivalent
	better       int
}

func summary(w io.Writer, cfg config, e env, r *results) {
	batch := min(cfg.batch, cfg.instances/cfg.workers)
	rows := []headline{
		{"registrations/s (etcd: LeaseGrant + Put)", "≥ 10,000/s", r.reg, "ops", "PUT", "LeaseGrant+Put", +1},
		{"registrations/s (etcd: Put, no lease)", "", r.reg, "ops", "PUT", "Put (no lease)", +1},
		{"registration p99 (etcd: LeaseGrant + Put)", "", r.reg, "p99", "PUT", "LeaseGrant+Put", -1},
		{"registrations per server CPU-second (etcd: LeaseGrant + Put)", "", r.reg, "per_cpu", "PUT", "LeaseGrant+Put", +1},
		{"heartbeats/s (etcd: KeepAliveOnce)", "≥ 100,000/s", r.hb, "ops", "PUT heartbeat", "KeepAliveOnce", +1},
		{"heartbeats/s (etcd: keep-alive stream)", "≥ 100,000/s", r.hb, "ops", "PUT heartbeat", "keep-alive stream", +1},
		{fmt.Sprintf("heartbeats/s batched, %d per request (etcd: keep-alive stream)", batch), "≥ 100,000/s", r.hb, "ops",
			batchName(batch), "keep-alive stream", +1},
		{"heartbeat p99 (etcd: keep-alive stream)", "", r.hb, "p99", "PUT heartbeat", "keep-alive stream", -1},
		{"heartbeats per server CPU-second (etcd: keep-alive stream)", "", r.hb, "per_cpu", "PUT heartbeat", "keep-alive stream", +1},
		{"raft entries written by heartbeats", "0", r.hb, "raft", "PUT heartbeat", "", -1},
		{"raft entries written by batched heartbeats", "0", r.hb, "raft", batchName(batch), "", -1},
		{"fan-out p99, every watcher (watch stream)", "≤ 50ms", r.fan, "p99", "watch stream", "watch", -1},
		{"fan-out p99, last watcher (watch stream)", "", r.fan, "last_p99", "watch stream", "watch", -1},
		{"fan-out p99, every watcher (blocking query)", "", r.fan, "p99", "blocking query", "watch", -1},
		{"fan-out: the write's own latency, p50 (included above)", "", r.fan, "write_p50", "watch stream", "watch", -1},
		{"RSS per watcher (watch stream)", "≤ 1 KB", r.watchMem, "rss", "watch stream", "watch", -1},
		{"Go heap per watcher (watch stream)", "≤ 1 KB", r.watchMem, "heap", "watch stream", "watch", -1},
		{"goroutine stacks per watcher (watch stream)", "", r.watchMem, "stack", "watch stream", "watch", -1},
		{"Go heap + stacks per watcher (watch stream)", "", r.watchMem, "heap+stack", "watch stream", "watch", -1},
		{"Go heap + stacks per watcher, bare net/http server (floor)", "", r.watchMem, "heap+stack", "net/http floor", "", -1},
		{"RSS per instance", "", r.instMem, "rss", "instances", "keys with leases", -1},
		{"Go heap per instance", "", r.instMem, "heap", "instances", "keys with leases", -1},
	}
	fmt.Fprintf(w, "\n## Summary (markdown)\n\n")
	fmt.Fprintf(w, "`%s` — %s; %s; %s × %d cores; %s.\n\n", e.command, e.date, e.goVersion, e.cpu, e.cores, e.etcd)
	fmt.Fprintln(w, "| figure | target | Discotech | etcd | Discotech/etcd | better |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
	for _, h := range rows {
		k := h.t.cols[0].kind
		for _, c := range h.t.cols {
			if c.key == h.key {
				k = c.kind
			}
		}
		dv, dok := h.t.vals(h.disco)
		ev, eok := h.t.vals(h.etcd)
		better := "higher"
		if h.better < 0 {
			better = "lower"
		}
		rat := "-"
		if dok && eok {
			rat = ratioCell(column{key: h.key, better: h.better}, dv, ev)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", h.what, h.target, cell(k, dv, h.key), cell(k, ev, h.key), rat, better)
	}
	fmt.Fprintln(w, "\nThe server under test and the load generator share the machine's cores; the tables above show the CPU seconds")
	fmt.Fprintln(w, "each used during each run, and what other processes on the machine used (\"other CPU\", which should be near 0).")
}
