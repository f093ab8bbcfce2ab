// Command prefetch benchmarks the shim's prefetching (docs/shim.md,
// "Prefetching"): the time connect() takes to a service whose backend sits
// behind an emulated round trip, with DISCO_PREFETCH=1 and without.
//
// The round trip is built in user space, since tc netem is not available:
// a network namespace holds the backend's address, joined to the host by
// two TUN devices whose packets this program carries, each delayed by half
// the round trip. The backend is a tiny TCP server in the namespace
// (accept, read a line, answer, close) that counts what it accepts. A small
// C program makes paced blocking requests and times connect() alone; it
// runs directly to the backend, under libdisco.so to the service's magic
// address, and the same with prefetching on. The benchmark prints connect()
// percentiles, how many connects returned at once (took a spare) and the
// backend's accepts against the requests, then a markdown summary.
//
// It needs root (network namespaces, TUN devices), ip, gcc and make. Run it
// from the repository root: go run ./bench/prefetch -h
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/sysstat"
	"github.com/discotech/disco/magicip"
	"github.com/discotech/disco/shmtable"
)

// pacedSource is the C client (c/paced.c), in a directory of its own
// because the go tool refuses C files in a package that does not use cgo.
//
//go:embed c/paced.c
var pacedSource []byte

// service is the table's one service; shimRange is where its magic address
// comes from (away from the agent's default 127.77.0.0/16; nothing listens
// there, so a connect the shim did not rewrite is refused).
const service = "bench"

var shimRange = netip.MustParsePrefix("127.78.0.0/16")

type config struct {
	rtt      time.Duration
	n        int
	rate     float64
	port     int
	max      string
	fast     time.Duration
	shimLib  string
	cc       string
	settle   time.Duration
	pingRuns int
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.rtt, "rtt", 5*time.Millisecond, "emulated round trip between the host and the backend")
	flag.IntVar(&cfg.n, "n", 300, "requests of each run")
	flag.Float64Var(&cfg.rate, "rate", 100, "requests a second (prefetching makes spares from 10/s)")
	flag.IntVar(&cfg.port, "port", 8080, "the backend's port")
	flag.StringVar(&cfg.max, "max", "", "DISCO_PREFETCH_MAX of the prefetching run (default: unset, the shim's default)")
	flag.DurationVar(&cfg.fast, "fast", 0, "a connect faster than this took a spare (default: rtt/4)")
	flag.StringVar(&cfg.shimLib, "shim", "", "libdisco.so to preload (default: build it with make shim into a temp dir)")
	flag.StringVar(&cfg.cc, "cc", "gcc", "C compiler for the client")
	flag.DurationVar(&cfg.settle, "settle", 300*time.Millisecond, "wait after each run before reading the backend's counters")
	flag.IntVar(&cfg.pingRuns, "ping", 20, "plain TCP connects from this program that measure the emulated round trip")
	flag.Parse()
	if cfg.fast == 0 {
		cfg.fast = cfg.rtt / 4
	}
	switch {
	case cfg.rtt < 0 || cfg.rtt > 10*time.Second:
		fmt.Fprintln(os.Stderr, "bench/prefetch: -rtt must be 0 to 10s")
		os.Exit(2)
	case cfg.n < 1 || cfg.rate <= 0 || cfg.pingRuns < 1:
		fmt.Fprintln(os.Stderr, "bench/prefetch: -n, -rate and -ping must be positive")
		os.Exit(2)
	}
	cli.Main("bench/prefetch", func(ctx context.Context) error { return run(ctx, cfg, os.Stdout) })
}

// result is one run's figures.
type result struct {
	label, env string
	connectNs  []float64
	fast       int   // connects faster than cfg.fast
	accepts    int64 // at the backend during the run
	answers    int64
	wall       time.Duration
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces and TUN devices)")
	}
	tmp, err := os.MkdirTemp("", "disco-bench-prefetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	lib, built := cfg.shimLib, false
	if lib == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		cli.Progress("building libdisco.so")
		bin := filepath.Join(tmp, "shim")
		cmd := exec.CommandContext(ctx, "make", "-s", "-C", root, "shim", "BIN="+bin)
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("make shim (or pass -shim PATH): %w", err)
		}
		lib, built = filepath.Join(bin, "libdisco.so"), true
	}
	if lib, err = filepath.Abs(lib); err != nil {
		return err
	}
	cli.Progress("building the client")
	client := filepath.Join(tmp, "paced")
	if err := os.WriteFile(client+".c", pacedSource, 0o644); err != nil {
		return err
	}
	if o, err := exec.CommandContext(ctx, cfg.cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-o", client, client+".c").CombinedOutput(); err != nil {
		return fmt.Errorf("%s paced.c: %w\n%s", cfg.cc, err, o)
	}

	removeStale()
	cli.Progress("emulated link: round trip %s", cfg.rtt)
	l, err := newLink(cfg.rtt)
	if err != nil {
		return fmt.Errorf("emulated link: %w", err)
	}
	defer l.close()
	backendAddr := netip.AddrPortFrom(netip.MustParseAddr(backendIP), uint16(cfg.port))
	ln, err := l.listenInNS(backendAddr.String())
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer ln.Close()
	be := &backend{ln: ln}
	go be.serve()
	cli.Progress("backend on %s in namespace %s (devices %s, %s)", backendAddr, l.ns, l.hostTUN, l.nsTUN)

	measured, err := ping(ctx, backendAddr.String(), cfg.pingRuns)
	if err != nil {
		return fmt.Errorf("measuring the round trip: %w", err)
	}
	cli.Progress("plain TCP connect from the host: %s median", measured.Round(10*time.Microsecond))

	alloc, err := magicip.Allocate(shimRange, []string{service})
	if err != nil {
		return err
	}
	magic, _ := alloc.Addr(service)
	table, err := shmtable.Create(filepath.Join(tmp, "disco.table"))
	if err != nil {
		return err
	}
	defer table.Close()
	if err := table.Publish([]shmtable.Service{{
		Name: service, Magic: magic,
		Backends: []shmtable.Backend{{Addr: backendAddr.Addr(), Port: backendAddr.Port(), Weight: 100}},
	}}); err != nil {
		return err
	}

	shimEnv := []string{"LD_PRELOAD=" + lib, "DISCO_TABLE=" + table.Path(), "DISCO_AGENT_REPORT=off"}
	prefEnv := append(slices.Clone(shimEnv), "DISCO_PREFETCH=1")
	if cfg.max != "" {
		prefEnv = append(prefEnv, "DISCO_PREFETCH_MAX="+cfg.max)
	}
	runs := []struct {
		label, host string
		env         []string
	}{
		{"direct (no shim)", backendIP, nil},
		{"shim, prefetching off", magic.String(), shimEnv},
		{"shim, DISCO_PREFETCH=1", magic.String(), prefEnv},
	}
	var results []*result
	for _, r := range runs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cli.Progress("%s: %d requests at %g/s to %s:%d", r.label, cfg.n, cfg.rate, r.host, cfg.port)
		res, err := runClient(ctx, cfg, be, client, r.host, r.env)
		if err != nil {
			return fmt.Errorf("%s: %w", r.label, err)
		}
		res.label = r.label
		cli.Progress("%s: done in %s (%.1f requests/s)", r.label, res.wall.Round(time.Millisecond), float64(cfg.n)/res.wall.Seconds())
		res.env = strings.Join(envShown(r.env), " ")
		results = append(results, res)
	}
	report(out, cfg, describe(built, lib), measured, l, results)
	return nil
}

// envShown is the part of a run's environment worth printing.
func envShown(env []string) []string {
	var out []string
	for _, e := range env {
		if strings.HasPrefix(e, "DISCO_PREFETCH") {
			out = append(out, e)
		}
	}
	return out
}

// ping times n plain TCP connects to addr and returns the median.
func ping(ctx context.Context, addr string, n int) (time.Duration, error) {
	var ds []time.Duration
	var d net.Dialer
	for range n {
		t0 := time.Now()
		c, err := d.DialContext(ctx, "tcp4", addr)
		if err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(t0))
		c.Write([]byte("ping\n"))
		io.Copy(io.Discard, c)
		c.Close()
	}
	slices.Sort(ds)
	return ds[len(ds)/2], nil
}

// runClient runs the C client once and reads the backend's counters
// around it.
func runClient(ctx context.Context, cfg config, be *backend, bin, host string, env []string) (*result, error) {
	a0, w0 := be.accepts.Load(), be.answers.Load()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(float64(cfg.n)/cfg.rate*float64(time.Second))+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, host, strconv.Itoa(cfg.port), strconv.Itoa(cfg.n), strconv.FormatFloat(cfg.rate, 'g', -1, 64))
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", bin, err, stderr.String())
	}
	// Let the last connections (and spares closed at the client's exit)
	// reach the backend.
	select {
	case <-time.After(cfg.settle + 2*cfg.rtt):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := &result{wall: wall, accepts: be.accepts.Load() - a0, answers: be.answers.Load() - w0}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		ns, err := strconv.ParseFloat(sc.Text(), 64)
		if err != nil {
			return nil, fmt.Errorf("unexpected line %q", sc.Text())
		}
		res.connectNs = append(res.connectNs, ns)
		if ns < float64(cfg.fast.Nanoseconds()) {
			res.fast++
		}
	}
	if len(res.connectNs) != cfg.n {
		return nil, fmt.Errorf("%d timings, want %d", len(res.connectNs), cfg.n)
	}
	return res, nil
}

// pct is the q-quantile of xs (nearest rank).
func pct(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)]
}

func fmtMs(ns float64) string {
	switch {
	case ns < 1e4:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	case ns < 1e6:
		return fmt.Sprintf("%.0f µs", ns/1e3)
	}
	return fmt.Sprintf("%.2f ms", ns/1e6)
}

// env describes the machine and the software of the run.
type env struct {
	command, date, goVersion, cpu, kernel, disco, shim string
	cores                                              int
}

func describe(built bool, lib string) env {
	e := env{
		command:   strings.TrimSpace("go run ./bench/prefetch " + strings.Join(os.Args[1:], " ")),
		date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		goVersion: runtime.Version(),
		cpu:       "unknown",
		cores:     runtime.NumCPU(),
		disco:     "Discotech",
		shim:      "libdisco.so " + lib,
	}
	if built {
		e.shim = "libdisco.so built by make shim"
	}
	e.cpu, e.kernel = sysstat.CPUModel(), sysstat.Kernel()
	if b, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		e.disco += " " + strings.TrimSpace(string(b))
	}
	return e
}

func report(w io.Writer, cfg config, e env, measured time.Duration, l *link, rs []*result) {
	fmt.Fprintf(w, "\nconnect() to a backend behind an emulated %s round trip (plain TCP connect measured: %s median of %d)\n",
		cfg.rtt, fmtMs(float64(measured.Nanoseconds())), cfg.pingRuns)
	fmt.Fprintf(w, "%d blocking requests per run at %g/s (connect, send, receive, close); \"fast\" = connect() under %s, i.e. took a spare\n\n",
		cfg.n, cfg.rate, cfg.fast)
	fmt.Fprintf(w, "%-24s %9s %9s %9s %9s %10s %9s %9s %8s\n", "run", "p50", "p90", "p99", "max", "fast", "requests", "accepts", "unused")
	for _, r := range rs {
		fmt.Fprintf(w, "%-24s %9s %9s %9s %9s %10s %9d %9d %8d\n", r.label,
			fmtMs(pct(r.connectNs, .5)), fmtMs(pct(r.connectNs, .9)), fmtMs(pct(r.connectNs, .99)), fmtMs(pct(r.connectNs, 1)),
			fmt.Sprintf("%d (%.0f%%)", r.fast, 100*float64(r.fast)/float64(len(r.connectNs))),
			len(r.connectNs), r.accepts, r.accepts-r.answers)
	}
	fmt.Fprintf(w, "\naccepts: connections the backend accepted during the run; unused: of those, never sent a request (spares made and not taken)\n")
	for _, r := range rs {
		if r.fast == 0 {
			continue
		}
		var slow []int
		for i, ns := range r.connectNs {
			if ns >= float64(cfg.fast.Nanoseconds()) {
				slow = append(slow, i+1)
			}
		}
		first := len(slow)
		for i, k := range slow {
			if k != i+1 {
				first = i
				break
			}
		}
		fmt.Fprintf(w, "%s: %d slow connects: requests 1–%d, then %d later ones %v\n", r.label, len(slow), first, len(slow)-first, slow[first:])
	}
	fmt.Fprintf(w, "wire: %d packets carried, %d dropped\n", l.packets.Load(), l.dropped.Load())

	fmt.Fprintf(w, "\n## Summary\n\n")
	fmt.Fprintf(w, "- command: `%s`\n- date: %s\n- %s, %s; %s\n- CPU: %s (%d cores), %s\n", e.command, e.date, e.disco, e.shim, e.goVersion, e.cpu, e.cores, e.kernel)
	fmt.Fprintf(w, "- emulated round trip %s (TUN devices + network namespace, user-space delay); plain TCP connect %s median\n\n", cfg.rtt, fmtMs(float64(measured.Nanoseconds())))
	fmt.Fprintf(w, "| run | connect p50 | p90 | p99 | spares used | requests | backend accepts | unused spares |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		label := r.label
		if r.env != "" && !strings.Contains(label, r.env) {
			label += " (" + r.env + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d (%.0f%%) | %d | %d | %d |\n", label,
			fmtMs(pct(r.connectNs, .5)), fmtMs(pct(r.connectNs, .9)), fmtMs(pct(r.connectNs, .99)),
			r.fast, 100*float64(r.fast)/float64(len(r.connectNs)), len(r.connectNs), r.accepts, r.accepts-r.answers)
	}
}

// repoRoot is the module's directory: the benchmark builds the shim from
// the working tree.
func repoRoot() (string, error) {
	cmd := exec.Command("go", "env", "GOMOD")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	o, err := cmd.Output()
	gomod := strings.TrimSpace(string(o))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module: run from the repository (go run ./bench/prefetch), or pass -shim")
	}
	return filepath.Dir(gomod), nil
}
