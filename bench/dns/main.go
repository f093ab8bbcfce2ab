// Command dns is the end-to-end benchmark of Discotech's DNS interface
// against dnsmasq serving the same records, in the same run on the same
// machine. It starts both servers itself (loopback only, fresh temporary
// directories), registers the same services at Discotech as it writes into
// dnsmasq's configuration, checks that both answer every query with the
// same records, and then loads each in turn, never both at once: dnsperf at
// its peak, then its own open-loop client at a fixed rate (half the lower
// of the two peaks) for exact latency percentiles. It prints each system's
// figures, their ratio, and a markdown summary.
//
// Run it from the repository root: go run ./bench/dns -h
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/figure"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// config is the benchmark's flags.
type config struct {
	duration, latDuration, warmup, timeout time.Duration
	mixes                                  string
	services, perService, instances        int
	edns                                   bool
	clients, outstanding, threads          int
	sockets                                int
	rate                                   float64
	only                                   string
	discoBin, dnsmasqBin, dnsperfBin       string
}

func (c *config) mixNames() []string {
	var out []string
	for _, m := range strings.Split(c.mixes, ",") {
		if m = strings.ToUpper(strings.TrimSpace(m)); m != "" {
			out = append(out, m)
		}
	}
	return out
}

func (c *config) validate() error {
	names := c.mixNames()
	for _, m := range names {
		if m != "A" && m != "SRV" {
			return fmt.Errorf("-mix: %q is neither A nor SRV", m)
		}
	}
	switch {
	case len(names) == 0:
		return fmt.Errorf("-mix names no query mix; give A, SRV or A,SRV")
	case c.services < 1 || c.perService < 1:
		return fmt.Errorf("-services and -per-service must be at least 1")
	case c.instances < 0:
		return fmt.Errorf("-instances must not be negative")
	case c.duration < time.Second || c.latDuration < time.Second:
		return fmt.Errorf("-duration and -latency-duration must be at least 1s")
	case c.warmup < 0 || c.timeout < 10*time.Millisecond:
		return fmt.Errorf("-warmup must not be negative and -timeout must be at least 10ms")
	case c.clients < 1 || c.outstanding < 1 || c.threads < 1 || c.threads > c.clients:
		return fmt.Errorf("-clients, -outstanding and -threads must be at least 1, and -threads at most -clients")
	case c.sockets < 1:
		return fmt.Errorf("-sockets must be at least 1")
	case c.rate < 0:
		return fmt.Errorf("-rate must not be negative")
	case c.only != "" && c.only != "discotech" && c.only != "dnsmasq":
		return fmt.Errorf("-only must be discotech or dnsmasq, got %q", c.only)
	}
	return nil
}

func (c *config) runs(system string) bool { return c.only == "" || c.only == system }

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of each peak run (dnsperf -l)")
	flag.DurationVar(&cfg.latDuration, "latency-duration", 5*time.Second, "length of each fixed-rate latency run")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured dnsperf run against each server before each mix; 0 skips it")
	flag.DurationVar(&cfg.timeout, "timeout", time.Second, "a query unanswered this long is lost (dnsperf -t, and the latency runs)")
	flag.StringVar(&cfg.mixes, "mix", "A,SRV", "query mixes to run: A, SRV or A,SRV")
	flag.IntVar(&cfg.services, "services", 10, "small services: web, web-02, web-03..., each of -per-service instances")
	flag.IntVar(&cfg.perService, "per-service", 3, "instances of each small service")
	flag.IntVar(&cfg.instances, "instances", 20, "instances of the larger service api; 0 leaves it out")
	flag.BoolVar(&cfg.edns, "edns", true, "send every query with EDNS0 and a 4096-byte UDP payload (dnsperf -e); false: plain DNS, 512-byte answers")
	flag.IntVar(&cfg.clients, "clients", 4, "dnsperf -c for the peak runs: clients (sockets)")
	flag.IntVar(&cfg.outstanding, "outstanding", 200, "dnsperf -q for the peak runs: queries outstanding at most")
	flag.IntVar(&cfg.threads, "threads", 2, "dnsperf -T for the peak runs: threads")
	flag.IntVar(&cfg.sockets, "sockets", 2, "UDP sockets of the fixed-rate client (more when the rate needs them)")
	flag.Float64Var(&cfg.rate, "rate", 0, "queries/s of the latency runs (default: half the lower of the two peaks, per mix)")
	flag.StringVar(&cfg.only, "only", "", "run one system only: discotech or dnsmasq")
	flag.StringVar(&cfg.discoBin, "disco", "", "disco binary to run (default: build ./cmd/disco into a temp dir)")
	flag.StringVar(&cfg.dnsmasqBin, "dnsmasq", "", "dnsmasq binary to run (default: dnsmasq on PATH or in /usr/sbin)")
	flag.StringVar(&cfg.dnsperfBin, "dnsperf", "", "dnsperf binary to run (default: dnsperf on PATH)")
	flag.Parse()
	if err := cfg.validate(); err != nil {
		cli.Usage("bench/dns", err)
	}
	cli.Main("bench/dns", func(ctx context.Context) error { return run(ctx, cfg, os.Stdout) })
}

// mixResult is one mix's two tables.
type mixResult struct {
	m             mix
	peak, fixed   *table
	discoPeak     *row // nil when not measured
	masqPeak      *row
	discoAt       *row // Discotech at the common rate
	masqAt        *row
	discoOwn      *row // Discotech at half its own peak (may be discoAt)
	rate, ownRate float64
}

func run(ctx context.Context, cfg config, out io.Writer) error {
	e := describe(cfg)
	tmp, err := os.MkdirTemp("", "disco-bench-dns-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	perfBin, err := peer.Find(cfg.dnsperfBin, "dnsperf", "dnsperf")
	if err != nil {
		return err
	}
	e.dnsperf = dnsperfVersion(perfBin)
	services := dataset(cfg.services, cfg.perService, cfg.instances)
	ms := mixes(services, cfg.mixNames())
	// The probe that tells a server has every record: the last service's
	// A query (the last registered at Discotech).
	probe := mixes(services[len(services)-1:], []string{"A"})[0].queries[0]

	discoBin := ""
	if cfg.runs("discotech") {
		discoBin = cfg.discoBin
		if discoBin == "" {
			discoBin = filepath.Join(tmp, "disco")
			cli.Progress("building disco")
			if err := peer.BuildDisco(ctx, discoBin); err != nil {
				return err
			}
			e.built = true
		}
		if err := checkDNSFlag(discoBin); err != nil {
			return err
		}
	}
	// The run's CPU accounting starts after the build.
	// The servers' CPU is counted from their start, which is after this.
	mark, start := markCPU(0), time.Now()

	var disco, masq *server
	stopAll := func() {
		for _, s := range []*server{disco, masq} {
			if s != nil {
				s.Stop()
			}
		}
		disco, masq = nil, nil
	}
	defer stopAll()

	if cfg.runs("dnsmasq") {
		bin, err := peer.Find(cfg.dnsmasqBin, "dnsmasq", "dnsmasq-base")
		if err != nil {
			return err
		}
		e.dnsmasq = peer.Version("dnsmasq", bin, "--version")
		cli.Progress("dnsmasq: starting %s with %d services, %d instances", e.dnsmasq, len(services), instanceCount(services))
		if masq, err = startDnsmasq(ctx, bin, tmp, services, probe); err != nil {
			return fmt.Errorf("dnsmasq: %w", err)
		}
		cli.Progress("dnsmasq: pid %d, DNS on %s", masq.Pid(), masq.dns)
	}
	if discoBin != "" {
		cli.Progress("discotech: starting, registering %d instances of %d services", instanceCount(services), len(services))
		if disco, err = startDiscotech(ctx, discoBin, tmp, services, probe); err != nil {
			return fmt.Errorf("discotech: %w", err)
		}
		cli.Progress("discotech: pid %d, DNS on %s", disco.Pid(), disco.dns)
	}

	var answers bytes.Buffer
	var notes []string
	if disco != nil && masq != nil {
		cli.Progress("checking that both serve the same records")
		notes, err = equivalence(ctx, &answers, disco, masq, ms, cfg.edns)
		if err != nil {
			e.print(out)
			out.Write(answers.Bytes())
			printNotes(out, notes)
			return err
		}
	} else {
		for _, s := range []*server{disco, masq} {
			if s != nil {
				n, err := checkAlone(ctx, s, ms, cfg.edns)
				if err != nil {
					return err
				}
				notes = append(notes, n...)
			}
		}
	}

	var results []*mixResult
	for _, m := range ms {
		r, err := benchMix(ctx, cfg, perfBin, tmp, m, disco, masq)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	var serversCPU float64
	for _, s := range []*server{disco, masq} {
		if s != nil {
			serversCPU += s.CPUSeconds()
		}
	}
	e.other = mark.since(serversCPU, dnsperfCPU).other
	stopAll()

	e.wall = time.Since(start)
	e.print(out)
	fmt.Fprintf(out, "data: %s; queries %s\n", describeData(cfg), map[bool]string{true: "with EDNS0 (4096-byte UDP payload)", false: "without EDNS (512-byte UDP answers)"}[cfg.edns])
	out.Write(answers.Bytes())
	printNotes(out, notes)
	for _, r := range results {
		r.peak.print(out)
		r.fixed.print(out)
	}
	summary(out, cfg, e, results)
	return nil
}

func printNotes(w io.Writer, notes []string) {
	if len(notes) == 0 {
		return
	}
	fmt.Fprintln(w, "\nnotes on the answers (they do not change which records are served):")
	for _, n := range notes {
		fmt.Fprintf(w, "   %s\n", n)
	}
}

func instanceCount(services []service) int {
	n := 0
	for _, s := range services {
		n += len(s.instances)
	}
	return n
}

func describeData(cfg config) string {
	s := fmt.Sprintf("%d services of %d instances (web", cfg.services, cfg.perService)
	if cfg.services > 1 {
		s += fmt.Sprintf(", web-02 … web-%02d", cfg.services)
	}
	s += ")"
	if cfg.instances > 0 {
		s += fmt.Sprintf(" and api of %d", cfg.instances)
	}
	return s
}

// dnsperfCPU adds up the CPU time of every dnsperf run, for the whole
// run's "other" figure.
var dnsperfCPU float64

// benchMix runs one mix against each server in turn: a warm-up, the peak
// runs, then the fixed-rate latency runs.
func benchMix(ctx context.Context, cfg config, perfBin, tmp string, m mix, disco, masq *server) (*mixResult, error) {
	file := filepath.Join(tmp, "queries-"+strings.ToLower(m.name)+".txt")
	if err := writeQueryFile(file, m); err != nil {
		return nil, err
	}
	var servers []*server // dnsmasq first: the reference
	for _, s := range []*server{masq, disco} {
		if s != nil {
			servers = append(servers, s)
		}
	}
	args := dnsperfArgs{file: file, clients: cfg.clients, outstanding: cfg.outstanding, thread: cfg.threads, timeout: cfg.timeout, edns: cfg.edns}
	res := &mixResult{m: m}
	res.peak = &table{
		title: fmt.Sprintf("%s queries at peak: dnsperf -c %d -q %d -T %d%s for %s, round-robin over %d names",
			m.name, cfg.clients, cfg.outstanding, cfg.threads, map[bool]string{true: " -e"}[cfg.edns], cfg.duration, len(m.queries)),
		cols: []column{
			{"qps", "queries/s", kRate, +1},
			{"per_cpu", "per server CPU-s", kCount, +1},
			{"avg", "avg latency", kNanos, -1},
			{"max", "max latency", kNanos, 0},
			{"lost", "lost", kCount, 0},
			{"drops", "server drops", kCount, 0},
			{"errors", "errors", kCount, 0},
			{"resp", "answer size", kBytes, 0},
			{"server_cpu", "server CPU", kSecs, 0},
			{"bench_cpu", "load CPU", kSecs, 0},
			{"other_cpu", "other CPU", kSecs, 0},
		},
	}
	if cfg.warmup > 0 {
		for _, s := range servers {
			cli.Progress("%s: %s warm-up, %s", s.Name(), m.name, cfg.warmup)
			w := args
			w.duration = cfg.warmup
			r, err := runDnsperf(ctx, perfBin, s, w)
			if err != nil {
				return nil, fmt.Errorf("%s: warm-up: %w", s.Name(), err)
			}
			dnsperfCPU += r.own
		}
	}
	peaks := map[*server]float64{}
	for _, s := range servers {
		cli.Progress("%s: %s peak, %s", s.Name(), m.name, cfg.duration)
		p := args
		p.duration = cfg.duration
		r, err := runDnsperf(ctx, perfBin, s, p)
		if err != nil {
			return nil, fmt.Errorf("%s: peak: %w", s.Name(), err)
		}
		dnsperfCPU += r.own
		peaks[s] = r.qps
		notes := []string{busyNote(r.cpu)}
		if r.failed() > 0 {
			notes = append(notes, fmt.Sprintf("answers by response code: %v", r.rcodes))
		}
		row := res.peak.add(s.Name(), "peak", map[string]float64{
			"qps": r.qps, "per_cpu": r.completed / r.cpu.server, "avg": r.avgLat * 1e9, "max": r.maxLat * 1e9,
			"lost": r.lost, "drops": float64(r.serverDrops), "errors": r.failed(), "resp": r.respSize,
			"server_cpu": r.cpu.server, "bench_cpu": r.cpu.bench, "other_cpu": r.cpu.other,
		}, notes...)
		if s == disco {
			res.discoPeak = row
		} else {
			res.masqPeak = row
		}
		cli.Progress("%s: %s/s, %s lost", s.Name(), figure.Thousands(r.qps), figure.Thousands(r.lost))
	}
	if res.discoPeak != nil && res.masqPeak != nil {
		res.peak.pairs = append(res.peak.pairs, [2]*row{res.discoPeak, res.masqPeak})
	}

	// The common rate: half the lower peak, so that both servers carry the
	// same load; and Discotech at half its own peak, the aim's figure.
	res.rate = cfg.rate
	if res.rate == 0 {
		res.rate = math.Inf(1)
		for _, q := range peaks {
			res.rate = min(res.rate, q/2)
		}
	}
	res.rate = math.Round(res.rate)
	res.fixed = &table{
		title: fmt.Sprintf("%s queries at a fixed rate: open loop for %s, every answer timed (the common rate: %s)",
			m.name, cfg.latDuration, rateOrigin(cfg, res.rate, len(servers))),
		cols: []column{
			{"rate", "rate", kRate, 0},
			{"qps", "answered/s", kRate, 0},
			{"p50", "p50", kNanos, -1},
			{"p99", "p99", kNanos, -1},
			{"p999", "p99.9", kNanos, -1},
			{"max", "max", kNanos, 0},
			{"mean", "mean", kNanos, -1},
			{"lost", "lost", kCount, 0},
			{"drops", "server drops", kCount, 0},
			{"errors", "errors", kCount, 0},
			{"per_cpu", "per server CPU-s", kCount, +1},
			{"server_cpu", "server CPU", kSecs, 0},
			{"bench_cpu", "load CPU", kSecs, 0},
			{"other_cpu", "other CPU", kSecs, 0},
		},
	}
	fixedRun := func(s *server, rate float64, name string) (*row, error) {
		cli.Progress("%s: %s at %s/s, %s", s.Name(), m.name, figure.Thousands(rate), cfg.latDuration)
		r, err := paced(ctx, s, m, cfg.edns, rate, cfg.latDuration, cfg.timeout, cfg.sockets)
		if err != nil {
			return nil, fmt.Errorf("%s: %s at %s/s: %w", s.Name(), m.name, figure.Thousands(rate), err)
		}
		l := summarize(r.lat)
		lag := summarize(r.lag)
		notes := []string{fmt.Sprintf("%s sent, %s answered; send lag against the schedule p99 %s, max %s",
			figure.Thousands(float64(r.sent)), figure.Thousands(float64(r.answered)), figure.Micros(lag.p99), figure.Micros(lag.max)), busyNote(r.cpu)}
		if r.skipped > 0 {
			notes = append(notes, fmt.Sprintf("%s queries (%.2f%%) not sent: the client was kept off the CPU for over %s, and skips what it owes rather than send it in one burst",
				figure.Thousands(float64(r.skipped)), 100*float64(r.skipped)/float64(r.skipped+r.sent), maxLag))
		}
		if r.clientDrops > 0 {
			notes = append(notes, fmt.Sprintf("%d answers dropped at the client's sockets (receive buffer full): counted lost", r.clientDrops))
		}
		if r.truncated > 0 {
			notes = append(notes, fmt.Sprintf("%d answers truncated (TC bit)", r.truncated))
		}
		if r.short > 0 {
			notes = append(notes, fmt.Sprintf("%d NOERROR answers with fewer answer records than the data set", r.short))
		}
		if r.stray > 0 {
			notes = append(notes, fmt.Sprintf("%d answers matched no outstanding query (late beyond the ID space, or duplicates)", r.stray))
		}
		if r.unstamped > 0 {
			notes = append(notes, fmt.Sprintf("%d answers came without a kernel timestamp and were timed on receipt", r.unstamped))
		}
		if r.sendErrs > 0 || r.firstErr != nil {
			notes = append(notes, fmt.Sprintf("%d sends failed; first error: %v", r.sendErrs, r.firstErr))
		}
		cli.Progress("%s: p50 %s, p99 %s, p99.9 %s, %d lost", s.Name(), figure.Micros(l.p50), figure.Micros(l.p99), figure.Micros(l.p999), r.lost)
		return res.fixed.add(s.Name(), name, map[string]float64{
			"rate": rate, "qps": r.qps(), "p50": l.p50, "p99": l.p99, "p999": l.p999, "max": l.max, "mean": l.mean,
			"lost": float64(r.lost), "drops": float64(r.serverDrops), "errors": float64(r.failed), "per_cpu": float64(r.answered) / r.cpu.server,
			"server_cpu": r.cpu.server, "bench_cpu": r.cpu.bench, "other_cpu": r.cpu.other,
		}, notes...), nil
	}
	for _, s := range servers {
		row, err := fixedRun(s, res.rate, "at "+figure.Thousands(res.rate)+"/s")
		if err != nil {
			return nil, err
		}
		if s == disco {
			res.discoAt = row
		} else {
			res.masqAt = row
		}
	}
	if res.discoAt != nil && res.masqAt != nil {
		res.fixed.pairs = append(res.fixed.pairs, [2]*row{res.discoAt, res.masqAt})
	}
	if disco != nil {
		res.discoOwn, res.ownRate = res.discoAt, res.rate
		// Half its own peak, when that is not the rate just measured.
		if own := math.Round(peaks[disco] / 2); math.Abs(own-res.rate) > 0.02*res.rate {
			row, err := fixedRun(disco, own, "at "+figure.Thousands(own)+"/s, half its own peak")
			if err != nil {
				return nil, err
			}
			res.discoOwn, res.ownRate = row, own
		}
	}
	return res, nil
}

// busyNote warns when processes other than the server and the load
// generator used more than a tenth of the machine during a run.
func busyNote(c cpuSplit) string {
	have := c.wall.Seconds() * float64(runtime.NumCPU())
	if c.other <= 0.1*have {
		return ""
	}
	return fmt.Sprintf("WARNING: other processes used %.1f of the %.0f CPU seconds the machine had during this run; its figures are disturbed, re-run on a quiet machine", c.other, have)
}

func rateOrigin(cfg config, rate float64, servers int) string {
	switch {
	case cfg.rate > 0:
		return fmt.Sprintf("%s/s, set with -rate", figure.Thousands(rate))
	case servers > 1:
		return fmt.Sprintf("%s/s, half the lower of the two peaks", figure.Thousands(rate))
	}
	return fmt.Sprintf("%s/s, half the peak", figure.Thousands(rate))
}

// env describes the run for the summary.
type env struct {
	command, date, goVersion, cpu string
	cores                         int
	dnsmasq, dnsperf, disco       string
	other                         float64 // CPU seconds other processes used during the run
	built                         bool    // disco was built before the run
	wall                          time.Duration
}

func describe(cfg config) env {
	e := env{
		command:   strings.TrimSpace("go run ./bench/dns " + strings.Join(os.Args[1:], " ")),
		date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		goVersion: runtime.Version(),
		cpu:       sysstat.CPUModel(),
		cores:     runtime.NumCPU(),
		dnsmasq:   "dnsmasq not run",
		dnsperf:   "dnsperf",
		disco:     "Discotech not run",
	}
	if cfg.runs("discotech") {
		e.disco = "Discotech"
		if cfg.discoBin != "" {
			e.disco += " " + cfg.discoBin
		} else if b, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
			e.disco += " " + strings.TrimSpace(string(b))
		}
	}
	return e
}

func dnsperfVersion(bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput() // it exits 1 after its usage
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version "); ok {
			return "dnsperf " + v
		}
	}
	return "dnsperf (version unknown)"
}

func (e env) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n%s, %s, %s, %d cores, %s, %s, %s\n", e.command, e.date, e.goVersion, e.cpu, e.cores, e.disco, e.dnsmasq, e.dnsperf)
	if e.wall > 0 {
		have := e.wall.Seconds() * float64(e.cores)
		fmt.Fprintf(w, "run took %s%s; other processes used %.1f CPU seconds of the %.0f the machine had\n",
			e.wall.Round(time.Second), map[bool]string{true: " (after building disco)"}[e.built], e.other, have)
		if e.other > 0.05*have {
			fmt.Fprintln(w, "WARNING: other processes were busy during the run; the figures are disturbed: re-run on a quiet machine")
		}
	}
}

// summary prints the headline figures as markdown.
func summary(w io.Writer, cfg config, e env, results []*mixResult) {
	fmt.Fprintf(w, "\n## Summary (markdown)\n\n")
	fmt.Fprintf(w, "`%s` — %s; %s; %s × %d cores; %s; %s; %s; %s; queries %s.\n\n", e.command, e.date, e.goVersion, e.cpu, e.cores,
		e.disco, e.dnsmasq, e.dnsperf, describeData(cfg), map[bool]string{true: "with EDNS0", false: "without EDNS"}[cfg.edns])
	fmt.Fprintln(w, "| figure | aim | Discotech | dnsmasq | Discotech/dnsmasq | better |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
	type headline struct {
		what, aim string
		t         *table
		key       string
		d, m      *row
		better    int
	}
	for _, r := range results {
		both := ", both"
		if r.discoAt == nil || r.masqAt == nil {
			both = ""
		}
		rows := []headline{
			{r.m.name + " queries/s at peak", "≥ dnsmasq", r.peak, "qps", r.discoPeak, r.masqPeak, +1},
			{r.m.name + " queries per server CPU-second at peak", "", r.peak, "per_cpu", r.discoPeak, r.masqPeak, +1},
			{r.m.name + " average latency at peak (dnsperf)", "", r.peak, "avg", r.discoPeak, r.masqPeak, -1},
			{fmt.Sprintf("%s p50 at %s/s%s", r.m.name, figure.Thousands(r.rate), both), "", r.fixed, "p50", r.discoAt, r.masqAt, -1},
			{fmt.Sprintf("%s p99 at %s/s%s", r.m.name, figure.Thousands(r.rate), both), "", r.fixed, "p99", r.discoAt, r.masqAt, -1},
			{fmt.Sprintf("%s p99.9 at %s/s%s", r.m.name, figure.Thousands(r.rate), both), "", r.fixed, "p999", r.discoAt, r.masqAt, -1},
			{fmt.Sprintf("%s queries per server CPU-second at %s/s%s", r.m.name, figure.Thousands(r.rate), both), "", r.fixed, "per_cpu", r.discoAt, r.masqAt, +1},
		}
		if r.discoOwn != nil {
			rows = append(rows, headline{fmt.Sprintf("%s p99, Discotech at half its own peak (%s/s)", r.m.name, figure.Thousands(r.ownRate)),
				"< 1 ms", r.fixed, "p99", r.discoOwn, nil, -1})
		}
		for _, h := range rows {
			k := h.t.kindOf(h.key)
			var dv, mv map[string]float64
			if h.d != nil {
				dv = h.d.vals
			}
			if h.m != nil {
				mv = h.m.vals
			}
			rat := "-"
			if dv != nil && mv != nil {
				rat = ratioCell(column{key: h.key, better: h.better}, dv, mv)
			}
			better := "higher"
			if h.better < 0 {
				better = "lower"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", h.what, h.aim, cell(k, dv, h.key), cell(k, mv, h.key), rat, better)
		}
	}
	fmt.Fprintln(w, "\nThe servers and the load generator (dnsperf at peak, the benchmark's own client at a fixed rate) share the machine's")
	fmt.Fprintln(w, "cores; the tables above show the CPU seconds each used during each run, and what other processes used (\"other CPU\",")
	fmt.Fprintln(w, "which should be near 0). dnsmasq answers on one thread; Discotech may use every core.")
}
