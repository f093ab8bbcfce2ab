// Command propagation measures, for each source of truth the node agent
// follows, the time from a change in the source until the agent's table
// has it: p50, p90, p99 and max over at least 200 changes, exact (nearest
// rank).
//
// It starts every peer itself on loopback, in temporary directories — the
// Discotech registry (built from ./cmd/disco), etcd, ZooKeeper and dnsmasq
// — and runs the agent in this process (agent.New with one source, DNS
// off), watching its table through Guard().Changed() and Table(). Each
// change is stamped just before it is made in the source; its latency ends
// when a version of the table first holds it. For dns-srv it counts from
// when dnsmasq first serves the change instead.
//
// Progress goes to stderr; the tables and a markdown summary for
// docs/benchmarks.md go to stdout. Ctrl-C stops every peer and removes its
// directory.
//
// Run it from the repository root: go run ./bench/propagation -h
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	// The sources the agent does not import itself yet.
	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/figure"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
	_ "github.com/discotech/disco/source/dnssrv"
	_ "github.com/discotech/disco/source/etcd"
	_ "github.com/discotech/disco/source/zookeeper"
)

// config is the benchmark's flags.
type config struct {
	changes    int
	spacing    time.Duration
	dnsSpacing time.Duration
	only       []string
	discoBin   string
	etcdBin    string
	dnsmasqBin string
	zkJar      string
}

// sources are the names -only takes, in the order they run.
var sources = []string{"disco", "file", "etcd", "zookeeper", "dns-srv"}

func (c *config) runs(source string) bool { return len(c.only) == 0 || slices.Contains(c.only, source) }

func main() {
	var cfg config
	only := ""
	flag.IntVar(&cfg.changes, "changes", 200, "changes made in each source (the percentiles are over these)")
	flag.DurationVar(&cfg.spacing, "spacing", 20*time.Millisecond, "mean time between two changes in disco, file, etcd and zookeeper (each gap is drawn from half to 1.5 times it)")
	flag.DurationVar(&cfg.dnsSpacing, "dns-spacing", 150*time.Millisecond, "mean time between two changes in dns-srv")
	flag.StringVar(&only, "only", "", "comma-separated sources to measure, of "+strings.Join(sources, ", ")+" (default all)")
	flag.StringVar(&cfg.discoBin, "disco", "", "disco binary to run (default: build ./cmd/disco into a temp dir)")
	flag.StringVar(&cfg.etcdBin, "etcd", "", "etcd binary (default: etcd on PATH; Debian: apt-get install etcd-server)")
	flag.StringVar(&cfg.dnsmasqBin, "dnsmasq", "", "dnsmasq binary (default: dnsmasq on PATH or in /usr/sbin; Debian: apt-get install dnsmasq-base)")
	flag.StringVar(&cfg.zkJar, "zookeeper-jar", zkJar, "ZooKeeper server jar whose manifest names its class path (Debian: apt-get install zookeeper)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench/propagation: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if only != "" {
		for _, s := range strings.Split(only, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(sources, s) {
				fmt.Fprintf(os.Stderr, "bench/propagation: -only: unknown source %q; want some of %s\n", s, strings.Join(sources, ", "))
				os.Exit(2)
			}
			cfg.only = append(cfg.only, s)
		}
	}
	if cfg.changes < 1 || cfg.spacing <= 0 || cfg.dnsSpacing <= 0 {
		fmt.Fprintln(os.Stderr, "bench/propagation: -changes must be at least 1, and -spacing and -dns-spacing positive")
		os.Exit(2)
	}
	cli.Main("bench/propagation", func(ctx context.Context) error { return run(ctx, cfg, os.Stdout) })
}

// versions are the peers' versions, as each start learns them.
var versions sync.Map // source → version string

func run(ctx context.Context, cfg config, out io.Writer) error {
	e := describe()
	began := time.Now()
	tmp, err := os.MkdirTemp("", "disco-bench-propagation-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	lines, skipped, err := plan(ctx, cfg, tmp)
	if err != nil {
		return err
	}
	var results []*result
	for _, l := range lines {
		r, err := measure(ctx, cfg, l, tmp)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		p := percentiles(slices.Clone(r.lat["all"]), 50, 99)
		cli.Progress("%s: p50 %s, p99 %s, %d missed, in %s", l.name, figure.Micros(p[0]), figure.Micros(p[1]), r.missed["all"], r.elapsed.Round(100*time.Millisecond))
		results = append(results, r)
	}
	e.wall = time.Since(began)
	versions.Range(func(k, v any) bool {
		e.peers = append(e.peers, v.(string))
		return true
	})
	slices.Sort(e.peers)
	printTable(out, cfg, results, skipped)
	e.print(out)
	summary(out, cfg, e, results, skipped)
	return nil
}

// plan finds the peers and builds disco, and returns the lines to measure
// and why any source is left out.
func plan(ctx context.Context, cfg config, tmp string) ([]*line, []string, error) {
	var lines []*line
	var skipped []string
	push := func(name string, start func(context.Context, string) (system, error)) *line {
		return &line{name: name, source: name, start: start, updates: true, spacing: cfg.spacing, settle: 5 * time.Second,
			bound: time.Second, target: "p99 < 1s"}
	}
	if cfg.runs("disco") {
		bin := cfg.discoBin
		if bin == "" {
			bin = filepath.Join(tmp, "disco")
			cli.Progress("building ./cmd/disco")
			if err := peer.BuildDisco(ctx, bin); err != nil {
				return nil, nil, err
			}
		}
		versions.Store("disco", discoVersion(cfg.discoBin))
		lines = append(lines, push("disco", startDisco(bin)))
	}
	if cfg.runs("file") {
		l := push("file", startFile)
		l.settle, l.bound, l.target = 3*time.Second, 0, "-"
		l.note = "the file source checks the file's size, time and inode every 200ms"
		lines = append(lines, l)
	}
	if cfg.runs("etcd") {
		bin, err := peer.Find(cfg.etcdBin, "etcd", "etcd-server")
		if err != nil {
			skipped = append(skipped, "etcd: "+err.Error())
		} else {
			versions.Store("etcd", peer.Version("etcd", bin, "--version"))
			lines = append(lines, push("etcd", startEtcd(bin)))
		}
	}
	if cfg.runs("zookeeper") {
		java, err := exec.LookPath("java")
		if err == nil {
			_, err = os.Stat(cfg.zkJar)
		}
		if err != nil {
			skipped = append(skipped, "zookeeper: "+err.Error()+" (Debian: apt-get install zookeeper)")
		} else {
			lines = append(lines, push("zookeeper", startZooKeeper(java, cfg.zkJar)))
			if v := zkPackageVersion(); v != "" {
				// java -version: openjdk version "17.0.15" 2025-04-15
				if f := strings.Fields(peer.FirstLine(java, "-version")); len(f) >= 3 {
					v += " on " + f[0] + " " + strings.Trim(f[2], `"`)
				}
				versions.Store("zookeeper", v)
			}
		}
	}
	if cfg.runs("dns-srv") {
		bin, err := peer.Find(cfg.dnsmasqBin, "dnsmasq", "dnsmasq-base")
		if err != nil {
			skipped = append(skipped, "dns-srv: "+err.Error())
		} else {
			versions.Store("dnsmasq", peer.Version("dnsmasq", bin, "--version"))
			// The source looks again when the TTL runs out, or after the
			// refresh if that comes first: the poll is the target for p99.
			dns := func(name string, ttl, refresh time.Duration, target string) *line {
				poll := ttl
				if refresh != 0 && refresh < ttl {
					poll = refresh
				}
				return &line{name: name, source: "dns-srv", start: startDNS(bin, ttl), port: dnsPort,
					spacing: cfg.dnsSpacing, refresh: refresh, settle: 2*poll + 2*time.Second,
					bound: poll, target: target}
			}
			a := dns("dns-srv ttl 1s", time.Second, 0, "p99 ≤ TTL 1s")
			a.note = "TTL 1s, the agent's --refresh at its default (30s): the source looks again when the TTL runs out, at most every 1s"
			b := dns("dns-srv ttl 30s refresh 2s", 30*time.Second, 2*time.Second, "p99 ≤ refresh 2s")
			b.note = "TTL 30s, --refresh 2s: the refresh bounds the wait between looks, whatever the TTL"
			lines = append(lines, a, b)
		}
	}
	for _, s := range skipped {
		cli.Progress("skipping %s", s)
	}
	return lines, skipped, nil
}

// discoVersion names what disco binary ran: the working tree's commit when
// the benchmark built it.
func discoVersion(given string) string {
	if given != "" {
		return "disco " + given
	}
	commit := peer.FirstLine("git", "rev-parse", "--short", "HEAD")
	if commit == "" {
		return "disco (working tree)"
	}
	if b, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		commit += " + local changes"
	}
	return "disco " + commit
}

// env describes the run for the summary.
type env struct {
	command, date, goVersion, cpu string
	cores                         int
	peers                         []string
	wall                          time.Duration
}

func describe() env {
	e := env{
		command:   strings.TrimSpace("go run ./bench/propagation " + strings.Join(os.Args[1:], " ")),
		date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		goVersion: runtime.Version(),
		cpu:       sysstat.CPUModel(),
		cores:     runtime.NumCPU(),
	}
	return e
}

func (e env) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n%s, %s, %s, %d cores; %s\nrun took %s\n", e.command, e.date, e.goVersion, e.cpu, e.cores,
		strings.Join(e.peers, ", "), e.wall.Round(time.Second))
}
