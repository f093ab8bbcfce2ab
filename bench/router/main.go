// Command router is the end-to-end benchmark of Discotech's router against
// haproxy and nginx as reverse proxies: the same HTTP load, to the same
// three backends, in the same run. It starts every peer itself (one nginx
// process serving the three backends, `disco router` with the backends
// announced on its admin port, haproxy, nginx as a proxy; loopback only,
// one fresh temporary directory), gives each proxy the same number of
// threads, and loads one path at a time: wrk with keep-alive connections
// for the peak rate, then its own open-loop client at half of each proxy's
// own peak for latency without coordinated omission, with the direct path
// (no proxy) at the same rate as the floor. It prints requests/s, p50,
// p99, the proxies' CPU per request and the ratios, and a markdown summary
// against the aims: Discotech at least nginx's requests/s and 0.8×
// haproxy's, with p99 added latency under 1 ms at half its peak.
//
// Run it from the repository root: go run ./bench/router -h
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/figure"
	"github.com/discotech/disco/bench/internal/nginx"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
	"github.com/discotech/disco/bench/internal/wrk"
)

// The paths, in the order they run and print.
const (
	pDirect    = "direct"
	pDiscotech = "discotech"
	pHaproxy   = "haproxy"
	pNginx     = "nginx"
)

var allPaths = []string{pDirect, pDiscotech, pHaproxy, pNginx}

// labels name the paths in the tables.
var labels = map[string]string{
	pDirect:    "direct",
	pDiscotech: "Discotech router",
	pHaproxy:   "haproxy",
	pNginx:     "nginx",
}

// nBackends is how many backends every proxy spreads its load over.
const nBackends = 3

// config is the benchmark's flags.
type config struct {
	duration, warmup, latDuration time.Duration
	connections, threads, procs   int
	rounds                        int
	rate                          float64
	timeout                       time.Duration
	only                          string
	keep, pin                     bool
	discoBin, wrkBin              string
	nginxBin, haproxyBin          string
	profile                       string
}

func (c *config) runs(path string) bool {
	return c.only == "" || slices.Contains(cli.List(c.only), path)
}

func (c *config) validate() error {
	for _, p := range cli.List(c.only) {
		if !slices.Contains(allPaths, p) {
			return fmt.Errorf("-only: %q is none of %s", p, strings.Join(allPaths, ", "))
		}
	}
	switch {
	case c.only != "" && len(cli.List(c.only)) == 0:
		return errors.New("-only names nothing to run")
	case c.duration < time.Second || c.duration%time.Second != 0:
		return errors.New("-duration must be whole seconds, at least 1s (wrk -d takes whole seconds)")
	case c.warmup < 0 || c.warmup%time.Second != 0:
		return errors.New("-warmup must be 0 or whole seconds")
	case c.latDuration < 0:
		return errors.New("-latency-duration must not be negative (0 skips the latency runs)")
	case c.connections < 1 || c.threads < 1 || c.threads > c.connections:
		return errors.New("-connections and -threads must be at least 1, and -threads at most -connections")
	case c.procs < 1:
		return errors.New("-procs must be at least 1")
	case c.rounds < 1:
		return errors.New("-rounds must be at least 1")
	case c.pin && runtime.NumCPU() < 2:
		return errors.New("-pin needs 2 CPUs or more: one for the proxy, the others for the load")
	case c.rate < 0:
		return errors.New("-rate must not be negative")
	case c.timeout < 10*time.Millisecond:
		return errors.New("-timeout must be at least 10ms")
	case c.profile != "" && !c.runs(pDiscotech):
		return errors.New("-profile profiles the Discotech path: -only must include discotech")
	case c.profile != "" && c.duration < 3*time.Second:
		return errors.New("-profile needs -duration of 3s or more (the profile leaves out the first and last second)")
	}
	return nil
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "wrk -d: each path's peak run")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured wrk run of each path before the peak runs; 0 skips it")
	flag.DurationVar(&cfg.latDuration, "latency-duration", 5*time.Second, "each fixed-rate latency run; 0 skips them")
	flag.IntVar(&cfg.connections, "connections", 64, "wrk -c, and the fixed-rate client's connections")
	flag.IntVar(&cfg.threads, "threads", 1, "wrk -t: load generator threads")
	flag.IntVar(&cfg.rounds, "rounds", 3, "runs of every path, peak and latency, in turn (each round starting from the next path); the median run is reported")
	flag.IntVar(&cfg.procs, "procs", 1, "threads of every proxy: Discotech's GOMAXPROCS, haproxy's nbthread, nginx's worker_processes")
	flag.Float64Var(&cfg.rate, "rate", 0, "requests/s of the latency runs (default: half of each proxy's own peak)")
	flag.DurationVar(&cfg.timeout, "timeout", 2*time.Second, "a request unanswered this long is a timeout (wrk --timeout, whole seconds; and the latency runs)")
	flag.StringVar(&cfg.only, "only", "", "run only these paths, comma-separated: "+strings.Join(allPaths, ", ")+" (default: all)")
	flag.BoolVar(&cfg.pin, "pin", false, "run each proxy alone on the last CPU, and wrk, the backends and this benchmark on the others")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the run's directory (configurations and logs) and print where it is")
	flag.StringVar(&cfg.discoBin, "disco", "", "disco binary to run the router with (default: build ./cmd/disco into the run's directory)")
	flag.StringVar(&cfg.wrkBin, "wrk", "", "wrk binary (default: wrk on PATH)")
	flag.StringVar(&cfg.nginxBin, "nginx", "", "nginx binary, for the backends and the nginx path (default: nginx on PATH or in /usr/sbin)")
	flag.StringVar(&cfg.haproxyBin, "haproxy", "", "haproxy binary (default: haproxy on PATH or in /usr/sbin)")
	flag.StringVar(&cfg.profile, "profile", "", "write a CPU profile of the router, over its first peak run but the first and last second, to this file (make pgo: cmd/disco/default.pgo)")
	flag.Parse()
	if flag.NArg() > 0 {
		cli.Usage("bench/router", fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	if err := cfg.validate(); err != nil {
		cli.Usage("bench/router", err)
	}
	cli.Main("bench/router", func(ctx context.Context) error { return run(ctx, cfg, os.Stdout) })
}

// leg is one path from the load generator to the backends, and what it
// measured.
type leg struct {
	key, label string
	addr       string // where the load goes
	proxy      *proxy // nil for the direct path
	err        error  // why it was left out, or stopped being measured

	spread map[string]int // answers to a few requests, by backend

	peak    *wrk.Result // the median round's
	peakCPU cpuSplit
	peaks   []float64 // every round's requests/s, in order
	bad     string    // why its peak figures do not count: errors or non-2xx answers

	rate      float64      // the latency runs' rate: half its own peak, or -rate
	lat       *pacedResult // at rate
	latCPU    cpuSplit
	latErr    error
	direct    *pacedResult // the direct path at the same rate
	directErr error
	added     []float64 // every latency round's added p99 (ns), in order
}

func (l *leg) ok() bool { return l.err == nil && l.peak != nil }

func run(ctx context.Context, cfg config, out io.Writer) error {
	e := describe(cfg)
	tmp, err := os.MkdirTemp("", "disco-bench-router-")
	if err != nil {
		return err
	}
	if cfg.keep {
		defer fmt.Fprintf(os.Stderr, "kept the run's directory (configurations and logs): %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	wrkBin, err := peer.Find(cfg.wrkBin, "wrk", "wrk")
	if err != nil {
		return err
	}
	nginxBin, err := peer.Find(cfg.nginxBin, "nginx", "nginx-light")
	if err != nil {
		return fmt.Errorf("%w (nginx serves the backends of every path)", err)
	}
	e.wrk, e.nginx = wrk.Version(wrkBin), nginx.Version(nginxBin)

	var legs []*leg
	for _, k := range allPaths {
		if cfg.runs(k) {
			legs = append(legs, &leg{key: k, label: labels[k]})
		}
	}
	get := func(k string) *leg {
		for _, l := range legs {
			if l.key == k {
				return l
			}
		}
		return nil
	}

	// Pinned, this process (and so wrk and the backends, which it starts)
	// keeps off the last CPU, and each proxy runs on it alone.
	var proxyCPU []int
	if cfg.pin {
		n := runtime.NumCPU()
		load := make([]int, n-1)
		for i := range load {
			load[i] = i
		}
		if err := sysstat.Pin(os.Getpid(), load); err != nil {
			return err
		}
		proxyCPU = []int{n - 1}
		others := "CPU 0"
		if n > 2 {
			others = fmt.Sprintf("CPUs 0-%d", n-2)
		}
		e.pinned = fmt.Sprintf("each proxy on CPU %d alone; wrk, the backends and the benchmark on %s", n-1, others)
	}

	cli.Progress("backends: starting %s, %d backends in one process", e.nginx, nBackends)
	be, err := startBackends(ctx, nginxBin, tmp, nBackends)
	if err != nil {
		return err
	}
	defer be.Stop()
	cli.Progress("backends: pid %d on %s", be.Pid(), strings.Join(be.addrs, ", "))

	// Each proxy in turn; one that does not start is left out, and the
	// others still run.
	if l := get(pDiscotech); l != nil {
		l.proxy, l.err = setupDiscotech(ctx, cfg, tmp, be.addrs)
	}
	if l := get(pHaproxy); l != nil {
		var bin string
		if bin, l.err = peer.Find(cfg.haproxyBin, "haproxy", "haproxy"); l.err == nil {
			e.haproxy = peer.Version("haproxy", bin, "-v")
			cli.Progress("haproxy: starting %s, nbthread %d", e.haproxy, cfg.procs)
			l.proxy, l.err = startHaproxy(ctx, bin, tmp, be.addrs, cfg.procs)
		}
	}
	if l := get(pNginx); l != nil {
		cli.Progress("nginx: starting %s as a proxy, worker_processes %d", e.nginx, cfg.procs)
		l.proxy, l.err = startNginxProxy(ctx, nginxBin, tmp, be.addrs, cfg.procs)
	}
	for _, l := range legs {
		switch {
		case l.key == pDirect:
			l.addr, l.label = be.addrs[0], "direct (to b1)"
		case l.err != nil:
			cli.Progress("%s: left out: %v", l.key, l.err)
		default:
			defer l.proxy.Stop()
			l.addr = l.proxy.addr
			if proxyCPU != nil {
				if l.err = sysstat.Pin(l.proxy.Pid(), proxyCPU); l.err != nil {
					cli.Progress("%s: left out: %v", l.key, l.err)
					continue
				}
			}
			cli.Progress("%s: pid %d on %s (%s)", l.key, l.proxy.Pid(), l.addr, l.proxy.note)
		}
		if l.err == nil {
			if l.spread, l.err = spread(ctx, l.addr, 30); l.err != nil {
				cli.Progress("%s: left out: %v", l.key, l.err)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// The run's CPU accounting starts once every peer is up.
	start := time.Now()
	whole := markCPU(nil, be)
	proxiesCPU := func() (t float64) {
		for _, l := range legs {
			if l.proxy != nil {
				t += l.proxy.CPUSeconds()
			}
		}
		return t
	}
	proxies0 := proxiesCPU()
	var loadCPU float64 // every wrk run's

	w, err := wrk.New(wrkBin, tmp)
	if err != nil {
		return err
	}
	w.Threads, w.Connections = cfg.threads, cfg.connections
	w.Timeout = max(cfg.timeout.Round(time.Second), time.Second)
	if cfg.warmup > 0 {
		for _, l := range legs {
			if l.err != nil {
				continue
			}
			cli.Progress("%s: warm-up, %s", l.label, cfg.warmup)
			r, err := w.Run(ctx, "http://"+l.addr+"/", cfg.warmup, nil)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil {
				loadCPU += r.CPU
				err = l.check(r)
			}
			if l.err = err; err != nil {
				cli.Progress("%s: left out: %v", l.label, err)
			}
		}
	}
	type peakRun struct {
		r   *wrk.Result
		cpu cpuSplit
	}
	peakRuns := map[*leg][]peakRun{}
	for round := range cfg.rounds {
		for _, l := range cli.Round(legs, round) {
			if l.err != nil {
				continue
			}
			cli.Progress("%s: peak, wrk -t%d -c%d, %s (round %d of %d)", l.label, cfg.threads, cfg.connections, cfg.duration, round+1, cfg.rounds)
			var profiled <-chan error
			if cfg.profile != "" && round == 0 && l.key == pDiscotech {
				profiled = profile(ctx, l.proxy.admin, cfg.duration, cfg.profile)
			}
			m := markCPU(l.proxy, be)
			r, err := w.Run(ctx, "http://"+l.addr+"/", cfg.duration, nil)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if profiled != nil {
				if err := <-profiled; err != nil {
					return fmt.Errorf("-profile: %w", err)
				}
				cli.Progress("%s: CPU profile written to %s", l.label, cfg.profile)
			}
			var cpu cpuSplit
			if err == nil {
				loadCPU += r.CPU
				cpu = m.since(r.CPU)
				err = l.check(r)
			}
			if l.err = err; err != nil {
				cli.Progress("%s: left out: %v", l.label, err)
				continue
			}
			peakRuns[l] = append(peakRuns[l], peakRun{r, cpu})
			l.peaks = append(l.peaks, r.Rate())
			if bad := r.Errors(); bad > 0.001*r.Requests && l.bad == "" {
				l.bad = fmt.Sprintf("%s errors in %s requests (%s)", figure.Thousands(bad), figure.Thousands(r.Requests), r.DescribeErrors())
			}
			cli.Progress("%s: %s/s, p50 %s, p99 %s, %s errors, %s non-2xx", l.label, figure.Thousands(r.Rate()),
				figure.Micros(r.Latency.Quantiles(0.5)[0]), figure.Micros(r.Latency.Quantiles(0.99)[0]),
				figure.Thousands(r.Errors()-r.StatusErrors), figure.Thousands(r.StatusErrors))
		}
	}
	for _, l := range legs {
		if runs := peakRuns[l]; l.err == nil && len(runs) > 0 {
			med := median(runs, func(a, b peakRun) int { return cmp.Compare(a.r.Rate(), b.r.Rate()) })
			l.peak, l.peakCPU = med.r, med.cpu
		}
	}

	direct := get(pDirect)
	if cfg.latDuration > 0 {
		type latRun struct {
			direct    *pacedResult
			directErr error
			lat       *pacedResult
			cpu       cpuSplit
			added     float64 // ns; NaN without the direct run
		}
		latRuns := map[*leg][]latRun{}
		var proxies []*leg
		for _, l := range legs {
			if l.key == pDirect || !l.ok() {
				continue
			}
			l.rate = cfg.rate
			if l.rate == 0 {
				l.rate = l.peak.Rate() / 2
			}
			proxies = append(proxies, l)
		}
		for round := range cfg.rounds {
			for _, l := range cli.Round(proxies, round) {
				if l.latErr != nil {
					continue
				}
				var lr latRun
				if direct != nil && direct.ok() {
					cli.Progress("%s: latency at %s/s (the rate of %s), %s", direct.label, figure.Thousands(l.rate), l.key, cfg.latDuration)
					lr.direct, lr.directErr = paced(ctx, direct.addr, l.rate, cfg.latDuration, cfg.connections, cfg.timeout)
					if lr.directErr == nil {
						cli.Progress("%s: %s", direct.label, describePaced(lr.direct))
					}
				}
				cli.Progress("%s: latency at %s/s, %s (round %d of %d)", l.label, figure.Thousands(l.rate), cfg.latDuration, round+1, cfg.rounds)
				m := markCPU(l.proxy, be)
				r, err := paced(ctx, l.addr, l.rate, cfg.latDuration, cfg.connections, cfg.timeout)
				if err == nil {
					err = l.proxy.Err()
				}
				if err != nil {
					l.latErr = err
					cli.Progress("%s: latency run: %v", l.label, err)
					continue
				}
				lr.lat, lr.cpu = r, m.since(0) // the client is this process: its CPU is the benchmark's
				lr.added = addedP99(r, lr.direct)
				latRuns[l] = append(latRuns[l], lr)
				l.added = append(l.added, lr.added)
				cli.Progress("%s: %s", l.label, describePaced(r))
			}
		}
		for _, l := range proxies {
			if runs := latRuns[l]; l.latErr == nil && len(runs) > 0 {
				med := median(runs, func(a, b latRun) int { return cmp.Compare(a.added, b.added) })
				l.lat, l.latCPU, l.direct, l.directErr = med.lat, med.cpu, med.direct, med.directErr
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// whole has no proxy: every proxy's CPU is taken out here.
	e.other = max(whole.since(loadCPU).other-(proxiesCPU()-proxies0), 0)
	e.wall = time.Since(start)

	e.print(out)
	fmt.Fprintf(out, "load: wrk -t%d -c%d for %s per path and round (keep-alive, GET / of %d bytes); latency: %d keep-alive connections, open loop, %s per run; %d rounds, the median run of each path reported\n",
		cfg.threads, cfg.connections, cfg.duration, len(backendBody), cfg.connections, cfg.latDuration, cfg.rounds)
	printPeak(out, legs)
	printLatency(out, legs)
	printNotes(out, legs)
	summary(out, cfg, e, legs)
	return nil
}

// setupDiscotech finds or builds disco and starts its router.
func setupDiscotech(ctx context.Context, cfg config, tmp string, be []string) (*proxy, error) {
	bin := cfg.discoBin
	if bin == "" {
		bin = filepath.Join(tmp, "disco")
		cli.Progress("discotech: building ./cmd/disco")
		if err := peer.BuildDisco(ctx, bin); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("-disco: %w", err)
	}
	cli.Progress("discotech: starting disco router, GOMAXPROCS=%d", cfg.procs)
	return startRouter(ctx, bin, tmp, be, cfg.procs, cfg.profile != "")
}

// check turns a wrk run that got no answer, or a proxy that exited, into
// the leg's error.
func (l *leg) check(r *wrk.Result) error {
	if l.proxy != nil {
		if err := l.proxy.Err(); err != nil {
			return err
		}
	}
	if r.Requests == 0 {
		return fmt.Errorf("no request answered (errors: %s) %s", r.DescribeErrors(), r.Stderr)
	}
	return nil
}

// median is the middle of runs by compare (the upper one of the two
// middles for an even count).
func median[T any](runs []T, compare func(a, b T) int) T {
	sorted := slices.Clone(runs)
	slices.SortStableFunc(sorted, compare)
	return sorted[len(sorted)/2]
}

// describePaced is a progress line for a latency run.
func describePaced(r *pacedResult) string {
	q := r.lat.Quantiles(0.5, 0.99, 0.999)
	return fmt.Sprintf("p50 %s, p99 %s, p99.9 %s; send lag p99 %s, %d queued for a connection; %d errors, %d non-2xx, %d unanswered",
		figure.Micros(q[0]), figure.Micros(q[1]), figure.Micros(q[2]), figure.Micros(r.lag.Quantiles(0.99)[0]), r.queued, r.errors, r.non2xx, r.unanswered)
}

// cpuMark is a reading of the CPU clocks a run is measured from.
type cpuMark struct {
	p                  *proxy
	be                 *backends
	proxy, backend     float64
	self, busy, kernel float64
	at                 time.Time
}

func markCPU(p *proxy, be *backends) cpuMark {
	m := cpuMark{p: p, be: be, backend: be.CPUSeconds(),
		self: sysstat.SelfCPUSeconds(), busy: sysstat.MachineBusySeconds(), kernel: sysstat.KernelThreadsCPU(), at: time.Now()}
	if p != nil {
		m.proxy = p.CPUSeconds()
	}
	return m
}

// cpuSplit is the CPU time each party used during a run: the proxy, the
// backends, the load generator (wrk, or the benchmark's own client) and
// everything else on the machine. They share the cores.
type cpuSplit struct {
	proxy, backend, load, other float64
	wall                        time.Duration
}

// since is the cpuSplit from m to now. load is the CPU of the load
// generator when it is a child that has exited (wrk); the benchmark's own
// CPU counts as load too. other is what the machine was busy with besides
// these and the kernel's threads.
//
// With tick-based CPU accounting (Debian's kernels) a softirq is charged to
// the process it interrupted: loopback TCP's delivery to the other side's
// socket mostly runs in the sender's context, so each party's figure
// includes some of the delivery of what it sends.
func (m cpuMark) since(load float64) cpuSplit {
	c := cpuSplit{backend: m.be.CPUSeconds() - m.backend, wall: time.Since(m.at)}
	if m.p != nil {
		c.proxy = m.p.CPUSeconds() - m.proxy
	}
	c.load = load + sysstat.SelfCPUSeconds() - m.self
	c.other = max(sysstat.MachineBusySeconds()-m.busy-(sysstat.KernelThreadsCPU()-m.kernel)-c.proxy-c.backend-c.load, 0)
	return c
}

// env describes the run for the report.
type env struct {
	cli.Env
	disco, nginx, haproxy, wrk string
	pinned                     string  // how -pin placed the processes; "" without it
	other                      float64 // CPU seconds other processes used during the run
	wall                       time.Duration
}

func describe(cfg config) env {
	e := env{Env: cli.NewEnv("router"), disco: "Discotech not run", haproxy: "haproxy not run"}
	if cfg.runs(pDiscotech) {
		e.disco = "Discotech " + cfg.discoBin
		if cfg.discoBin == "" {
			e.disco = "Discotech " + peer.FirstLine("git", "describe", "--always", "--dirty")
		}
	}
	return e
}

func (e env) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n%s\n%s, %s, %s, %s\n", e.Command, e.Machine(), e.disco, e.haproxy, e.nginx, e.wrk)
	if e.pinned != "" {
		fmt.Fprintf(w, "pinned: %s\n", e.pinned)
	}
	e.PrintBusy(w, e.wall, e.other)
}
