// Command transparent is the end-to-end benchmark of Discotech's
// transparent interception: the same HTTP load, to the same backend, in the
// same run, over four paths — a direct connection; libdisco.so preloaded
// into the load generator, which resolves the service's name and rewrites
// connect() to the backend; the agent's fallback TCP proxy on the
// service's magic address; and haproxy as a local sidecar. It starts every
// peer itself (nginx as the backend, `disco agent`, haproxy; loopback only,
// a fresh temporary directory), drives each path in turn with wrk, with
// keep-alive connections and with one connection per request, in
// interleaved rounds, and times connect() with and without the shim with a
// small C program. It prints requests/s, latency percentiles, CPU and the
// ratios to the direct path, and a markdown summary against the aims: the
// shim at least 0.98× direct, connect() no more than 5 µs slower at p50
// with the shim, and the fallback proxy at least as fast as haproxy.
//
// Run it from the repository root: go run ./bench/transparent -h
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/figure"
	"github.com/discotech/disco/bench/internal/nginx"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/wrk"
)

// traffic is a kind of load.
type traffic int

const (
	trafficKeepAlive traffic = iota // requests on long-lived connections
	trafficClose                    // one connection per request
)

func (t traffic) key() string { return [...]string{"keepalive", "close"}[t] }

// headers are what wrk sends with each request of t, besides the Host.
func (t traffic) headers() []string {
	if t == trafficClose {
		return []string{"Connection: close"}
	}
	return nil
}

func (t traffic) title() string {
	return [...]string{"keep-alive", "one connection per request"}[t]
}

// The paths, in the order they run and print.
const (
	pDirect      = "direct"
	pShim        = "shim"
	pFallback    = "fallback"
	pHaproxy     = "haproxy"
	pHaproxyHTTP = "haproxy-http"
	pConnect     = "connect" // not a path: the connect() timing
)

var allParts = []string{pDirect, pShim, pFallback, pHaproxy, pHaproxyHTTP, pConnect}

var pathLabels = map[string]string{
	pDirect:      "direct",
	pShim:        "shim (LD_PRELOAD)",
	pFallback:    "fallback proxy",
	pHaproxy:     "haproxy, tcp mode",
	pHaproxyHTTP: "haproxy, http mode",
}

// config is the benchmark's flags.
type config struct {
	duration, warmup          time.Duration
	rounds                    int
	connections, threads      int
	traffic, only             string
	iterations, body          int
	discoBin, shimLib         string
	wrkBin, nginxBin, haproxy string
	cc                        string
}

func (c *config) traffics() []traffic {
	var out []traffic
	for _, t := range []traffic{trafficKeepAlive, trafficClose} {
		if slices.Contains(cli.List(c.traffic), t.key()) {
			out = append(out, t)
		}
	}
	return out
}

func (c *config) runs(part string) bool {
	return c.only == "" || slices.Contains(cli.List(c.only), part)
}

func (c *config) validate() error {
	for _, t := range cli.List(c.traffic) {
		if t != "keepalive" && t != "close" {
			return fmt.Errorf("-traffic: %q is neither keepalive nor close", t)
		}
	}
	for _, p := range cli.List(c.only) {
		if !slices.Contains(allParts, p) {
			return fmt.Errorf("-only: %q is none of %s", p, strings.Join(allParts, ", "))
		}
	}
	per := time.Duration(0)
	if c.rounds > 0 {
		per = c.duration / time.Duration(c.rounds)
	}
	switch {
	case c.only != "" && len(cli.List(c.only)) == 0:
		return fmt.Errorf("-only names nothing to run")
	case len(c.traffics()) == 0:
		return fmt.Errorf("-traffic names no traffic; give keepalive, close or both")
	case c.rounds < 1:
		return fmt.Errorf("-rounds must be at least 1")
	case per < time.Second || per%time.Second != 0 || per*time.Duration(c.rounds) != c.duration:
		return fmt.Errorf("-duration must be a whole number of seconds per round (wrk -d takes whole seconds): %s in %d rounds", c.duration, c.rounds)
	case c.warmup < 0 || c.warmup%time.Second != 0:
		return fmt.Errorf("-warmup must be 0 or whole seconds")
	case c.connections < 1 || c.threads < 1 || c.threads > c.connections:
		return fmt.Errorf("-connections and -threads must be at least 1, and -threads at most -connections")
	case c.iterations < connectChunks:
		return fmt.Errorf("-iterations must be at least %d", connectChunks)
	case c.body < 1 || c.body > 4096:
		return fmt.Errorf("-body must be 1 to 4096 bytes")
	}
	return nil
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time of each path, for each traffic kind (split over -rounds)")
	flag.IntVar(&cfg.rounds, "rounds", 5, "interleaved rounds the duration is split into: each round runs every path once")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured run of each path before each traffic kind; 0 skips it")
	flag.IntVar(&cfg.connections, "connections", 32, "wrk -c: connections open at once")
	flag.IntVar(&cfg.threads, "threads", 1, "wrk -t: load generator threads")
	flag.StringVar(&cfg.traffic, "traffic", "keepalive,close", "kinds of traffic: keepalive, close (one connection per request), or both")
	flag.StringVar(&cfg.only, "only", "", "run only these, comma-separated: "+strings.Join(allParts, ", ")+" (default: all)")
	flag.IntVar(&cfg.iterations, "iterations", 20000, "connect() timings of each kind in the connect benchmark")
	flag.IntVar(&cfg.body, "body", 128, "bytes of the backend's response body")
	flag.StringVar(&cfg.discoBin, "disco", "", "disco binary to run the agent with (default: build ./cmd/disco into a temp dir)")
	flag.StringVar(&cfg.shimLib, "shim", "", "libdisco.so to preload (default: build it with make shim into a temp dir)")
	flag.StringVar(&cfg.wrkBin, "wrk", "", "wrk binary (default: wrk on PATH)")
	flag.StringVar(&cfg.nginxBin, "nginx", "", "nginx binary (default: nginx on PATH or in /usr/sbin)")
	flag.StringVar(&cfg.haproxy, "haproxy", "", "haproxy binary (default: haproxy on PATH or in /usr/sbin)")
	flag.StringVar(&cfg.cc, "cc", "gcc", "C compiler for the connect benchmark")
	flag.Parse()
	if err := cfg.validate(); err != nil {
		cli.Usage("bench/transparent", err)
	}
	cli.Main("bench/transparent", func(ctx context.Context) error { return run(ctx, cfg, os.Stdout) })
}

// path is one way from the load generator to the backend.
type path struct {
	key, label string
	url        string
	env        []string
	proxy      string // "agent" or "haproxy": whose CPU is the proxy's
}

// agg is one path's figures under one kind of traffic, over every round.
type agg struct {
	requests, errors    float64
	wall                time.Duration
	lat                 wrk.Hist
	cpu                 cpuSplit
	backend             counters // what nginx counted
	rounds              []float64
	connErr, readErr    float64
	writeErr, statusErr float64
	timeouts            float64
	wrkStderr           string
	proxyCPU            float64 // the proxy's, when there is one
}

func (a *agg) rate() float64 { return a.requests / a.wall.Seconds() }

func run(ctx context.Context, cfg config, out io.Writer) error {
	e := describe(cfg)
	tmp, err := os.MkdirTemp("", "disco-bench-transparent-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	wrkBin, err := peer.Find(cfg.wrkBin, "wrk", "wrk")
	if err != nil {
		return err
	}
	nginxBin, err := peer.Find(cfg.nginxBin, "nginx", "nginx-light")
	if err != nil {
		return err
	}
	e.wrk, e.nginx = wrk.Version(wrkBin), nginx.Version(nginxBin)
	var haproxyBin string
	if cfg.runs(pHaproxy) || cfg.runs(pHaproxyHTTP) {
		if haproxyBin, err = peer.Find(cfg.haproxy, "haproxy", "haproxy"); err != nil {
			return fmt.Errorf("%w (or leave it out with -only)", err)
		}
		e.haproxy = peer.Version("haproxy", haproxyBin, "-v")
	}
	var root string
	needShim := cfg.runs(pShim) || cfg.runs(pConnect)
	if (cfg.runs(pFallback) && cfg.discoBin == "") || (needShim && cfg.shimLib == "") {
		if root, err = repoRoot(); err != nil {
			return err
		}
	}
	discoBin := cfg.discoBin
	if cfg.runs(pFallback) && discoBin == "" {
		discoBin = filepath.Join(tmp, "disco")
		cli.Progress("building disco")
		if err := peer.BuildDisco(ctx, discoBin); err != nil {
			return err
		}
	}
	var connectBin string
	if cfg.runs(pConnect) {
		cli.Progress("building the connect benchmark")
		if connectBin, err = buildConnect(ctx, cfg.cc, tmp); err != nil {
			return err
		}
	}

	ps := &peers{}
	var sh *shimSetup
	defer func() {
		ps.haproxy.Stop()
		ps.agent.Stop()
		ps.backend.Stop()
		sh.close()
	}()

	cli.Progress("backend: starting %s", e.nginx)
	be, err := startBackend(ctx, nginxBin, tmp, cfg.body)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	ps.backend = be.Process
	cli.Progress("backend: pid %d on %s", be.Pid(), be.addr)
	port := portOf(be.addr)

	var paths []*path
	if cfg.runs(pDirect) {
		paths = append(paths, &path{key: pDirect, url: "http://" + be.addr + "/", env: os.Environ()})
	}
	if needShim {
		cli.Progress("shim: building libdisco.so, writing the table")
		var built bool
		if sh, built, err = newShim(ctx, cfg.shimLib, tmp, root, be.addr); err != nil {
			return err
		}
		e.shim = describeShim(cfg.shimLib, built)
		cli.Progress("shim: %s → %s in %s", service+".service.disco", sh.magic, sh.table.Path())
		if cfg.runs(pShim) {
			paths = append(paths, &path{key: pShim, url: fmt.Sprintf("http://%s.service.disco:%d/", service, port), env: sh.env()})
		}
	}
	if cfg.runs(pFallback) {
		cli.Progress("fallback proxy: starting disco agent")
		var proxyAddr string
		if ps.agent, proxyAddr, err = startAgent(ctx, discoBin, tmp, be.addr); err != nil {
			return fmt.Errorf("fallback proxy: %w", err)
		}
		cli.Progress("fallback proxy: pid %d on %s", ps.agent.Pid(), proxyAddr)
		paths = append(paths, &path{key: pFallback, url: "http://" + proxyAddr + "/", env: os.Environ(), proxy: "agent"})
	}
	if haproxyBin != "" {
		cli.Progress("haproxy: starting %s", e.haproxy)
		var tcpAddr, httpAddr string
		if ps.haproxy, tcpAddr, httpAddr, err = startHaproxy(ctx, haproxyBin, tmp, be.addr); err != nil {
			return fmt.Errorf("haproxy: %w", err)
		}
		cli.Progress("haproxy: pid %d, tcp mode on %s, http mode on %s", ps.haproxy.Pid(), tcpAddr, httpAddr)
		if cfg.runs(pHaproxy) {
			paths = append(paths, &path{key: pHaproxy, url: "http://" + tcpAddr + "/", env: os.Environ(), proxy: "haproxy"})
		}
		if cfg.runs(pHaproxyHTTP) {
			paths = append(paths, &path{key: pHaproxyHTTP, url: "http://" + httpAddr + "/", env: os.Environ(), proxy: "haproxy"})
		}
	}
	for _, p := range paths {
		p.label = pathLabels[p.key]
	}

	// The run's CPU accounting starts once every peer is up.
	whole := ps.mark()
	start := time.Now()
	var loadCPU float64 // every child that has exited: wrk, the connect benchmark

	var conns []*connectResult
	if connectBin != "" {
		for _, proto := range []string{"tcp", "udp"} {
			cli.Progress("connect: %s, %d of each kind", proto, cfg.iterations)
			r, err := runConnect(ctx, ps, connectBin, sh, be.addr, proto, cfg.iterations)
			if err != nil {
				return err
			}
			loadCPU += r.cpu.load
			conns = append(conns, r)
			st := func(k string) latStats { return statsOf(r.samples[k]) }
			cli.Progress("connect: %s p50 no shim %s, shim → magic %s", proto, figure.Micros(st("plain").p50), figure.Micros(st("magic").p50))
		}
	}

	w, err := wrk.New(wrkBin, tmp)
	if err != nil {
		return err
	}
	w.Threads, w.Connections = cfg.threads, cfg.connections
	// Every path is asked for the service by name, as the shim's is.
	w.Headers = []string{"Host: " + service + ".service.disco"}
	results := map[traffic]map[string]*agg{}
	per := cfg.duration / time.Duration(cfg.rounds)
	for _, t := range cfg.traffics() {
		if len(paths) == 0 {
			break
		}
		results[t] = map[string]*agg{}
		for _, p := range paths {
			results[t][p.key] = &agg{lat: wrk.Hist{}}
		}
		if cfg.warmup > 0 {
			for _, p := range paths {
				cli.Progress("%s: %s warm-up, %s", t.title(), p.label, cfg.warmup)
				r, err := w.Run(ctx, p.url, cfg.warmup, p.env, t.headers()...)
				if err != nil {
					return err
				}
				loadCPU += r.CPU
				if r.Requests == 0 {
					return fmt.Errorf("%s: %s: no request answered in the warm-up (errors: %s)\n%s", t.title(), p.label, r.DescribeErrors(), r.Stderr)
				}
			}
		}
		for round := range cfg.rounds {
			for _, p := range cli.Round(paths, round) {
				cli.Progress("%s: round %d/%d, %s, %s", t.title(), round+1, cfg.rounds, p.label, per)
				before, err := be.counters(ctx)
				if err != nil {
					return err
				}
				m := ps.mark()
				r, err := w.Run(ctx, p.url, per, p.env, t.headers()...)
				if err != nil {
					return err
				}
				cpu := ps.since(m, r.CPU)
				loadCPU += r.CPU
				after, err := be.counters(ctx)
				if err != nil {
					return err
				}
				if r.Requests == 0 {
					return fmt.Errorf("%s: %s: no request answered (errors: %s)\n%s", t.title(), p.label, r.DescribeErrors(), r.Stderr)
				}
				a := results[t][p.key]
				a.requests += r.Requests
				a.wall += r.Duration
				a.lat.Add(r.Latency)
				a.cpu.add(cpu)
				a.backend.accepts += after.accepts - before.accepts - 1 // the reading before is a connection too
				a.backend.requests += after.requests - before.requests - 1
				a.rounds = append(a.rounds, r.Rate())
				a.connErr += r.ConnectErrors
				a.readErr += r.ReadErrors
				a.writeErr += r.WriteErrors
				a.statusErr += r.StatusErrors
				a.timeouts += r.Timeouts
				a.errors += r.Errors()
				if r.Stderr != "" && a.wrkStderr == "" {
					a.wrkStderr = r.Stderr
				}
				switch p.proxy {
				case "agent":
					a.proxyCPU += cpu.agent
				case "haproxy":
					a.proxyCPU += cpu.haproxy
				}
				cli.Progress("%s: %s/s, p99 %s", p.label, figure.Thousands(r.Rate()), figure.Micros(r.Latency.Quantiles(0.99)[0]))
			}
		}
	}
	e.other = ps.since(whole, loadCPU).other
	e.wall = time.Since(start)

	e.print(out)
	fmt.Fprintf(out, "load: wrk -t%d -c%d, GET / of %d bytes (nginx, one process); each path %s per traffic kind, in %d interleaved rounds of %s",
		cfg.threads, cfg.connections, cfg.body, cfg.duration, cfg.rounds, per)
	if cfg.warmup > 0 {
		fmt.Fprintf(out, " after a %s warm-up", cfg.warmup)
	}
	fmt.Fprintln(out)
	for _, r := range conns {
		printConnect(out, r, cfg.iterations)
	}
	for _, t := range cfg.traffics() {
		if results[t] != nil {
			printTraffic(out, t, paths, results[t], per)
		}
	}
	summary(out, cfg, e, paths, results, conns)
	return nil
}

// env describes the run for the summary.
type env struct {
	cli.Env
	nginx, haproxy, wrk, disco, shim string
	other                            float64 // CPU seconds other processes used during the run
	wall                             time.Duration
}

func describe(cfg config) env {
	e := env{Env: cli.NewEnv("transparent"), haproxy: "haproxy not run", disco: "Discotech", shim: "libdisco.so not used"}
	if cfg.discoBin != "" {
		e.disco += " " + cfg.discoBin
	} else if b, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		e.disco += " " + strings.TrimSpace(string(b))
	}
	return e
}

func describeShim(lib string, built bool) string {
	if built {
		return "libdisco.so built by make shim"
	}
	return "libdisco.so " + lib
}

func (e env) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n%s\n%s, %s, %s, %s, %s\n", e.Command, e.Machine(), e.disco, e.shim, e.nginx, e.haproxy, e.wrk)
	e.PrintBusy(w, e.wall, e.other)
}
