package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/discotech/disco/bench/internal/figure"
)

// printTraffic prints one traffic kind's table: a line per path.
func printTraffic(w io.Writer, t traffic, paths []*path, res map[string]*agg, per time.Duration) {
	fmt.Fprintf(w, "\n== %s: requests/s and latency (wrk: from sending a request to its whole response), CPU seconds of each party\n", t.title())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\trequests/s\t×direct\tp50\tp90\tp99\tp99.9\tmax\terrors\treq/conn at backend\tbackend CPU\tproxy CPU\tproxy CPU/req\twrk CPU\tother CPU\t")
	direct := res[pDirect]
	for _, p := range paths {
		a := res[p.key]
		q := a.lat.Quantiles(0.5, 0.9, 0.99, 0.999, 1)
		rat := "-"
		if direct != nil {
			rat = figure.Ratio(a.rate() / direct.rate())
		}
		proxy, perReq := "-", "-"
		if p.proxy != "" {
			proxy = fmt.Sprintf("%.1fs", a.proxyCPU)
			perReq = figure.Micros(a.proxyCPU / a.requests * 1e9)
		}
		fmt.Fprintf(tw, "%s\t%s/s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1fs\t%s\t%s\t%.1fs\t%.1fs\t\n",
			p.label, figure.Thousands(a.rate()), rat, figure.Micros(q[0]), figure.Micros(q[1]), figure.Micros(q[2]), figure.Micros(q[3]), figure.Micros(q[4]),
			figure.Thousands(a.errors), reqPerConn(a.backend), a.cpu.backend, proxy, perReq, a.cpu.load, a.cpu.other)
	}
	tw.Flush()
	fmt.Fprintln(w, "   requests/s: higher is better; latencies: lower is better. ×direct: requests/s over the direct path's.")
	for _, p := range paths {
		for _, n := range notes(p, res, per) {
			fmt.Fprintf(w, "   %s: %s\n", p.label, n)
		}
	}
}

// reqPerConn is what the backend saw: requests per connection accepted.
func reqPerConn(c counters) string {
	if c.accepts <= 0 {
		return "-"
	}
	r := c.requests / c.accepts
	if r >= 100 {
		return figure.Thousands(r)
	}
	return fmt.Sprintf("%.2f", r)
}

// notes are what a row's figures need said: round-to-round spread, errors,
// a disagreement between wrk and the backend, a busy machine.
func notes(p *path, res map[string]*agg, per time.Duration) []string {
	a := res[p.key]
	var out []string
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range a.rounds {
		lo, hi = min(lo, r), max(hi, r)
	}
	line := fmt.Sprintf("rounds %s–%s requests/s", figure.Thousands(lo), figure.Thousands(hi))
	pair := func(other string, label string) {
		o := res[other]
		if o == nil || len(o.rounds) != len(a.rounds) {
			return
		}
		lo, hi := math.Inf(1), math.Inf(-1)
		for i := range a.rounds {
			r := a.rounds[i] / o.rounds[i]
			lo, hi = min(lo, r), max(hi, r)
		}
		line += fmt.Sprintf("; over %s round by round %s–%s", label, figure.Ratio(lo), figure.Ratio(hi))
	}
	switch p.key {
	case pShim:
		pair(pDirect, "direct")
	case pFallback:
		pair(pHaproxy, "haproxy tcp mode")
	}
	out = append(out, line)
	if a.errors > 0 {
		out = append(out, fmt.Sprintf("wrk counted %s errors: connect %.0f, read %.0f, write %.0f, non-2xx %.0f, timeout %.0f; %s",
			figure.Thousands(a.errors), a.connErr, a.readErr, a.writeErr, a.statusErr, a.timeouts, firstLine(a.wrkStderr)))
	}
	// Requests wrk had sent when it stopped may be answered but not counted
	// by wrk: at most one per connection per round.
	if d := a.backend.requests - a.requests; math.Abs(d) > float64(len(a.rounds))*64+0.001*a.requests {
		out = append(out, fmt.Sprintf("the backend counted %s requests, wrk %s: not all the load reached the backend, or something else sent it requests",
			figure.Thousands(a.backend.requests), figure.Thousands(a.requests)))
	}
	have := a.cpu.wall.Seconds() * float64(runtime.NumCPU())
	if a.cpu.other > 0.1*have {
		out = append(out, fmt.Sprintf("WARNING: other processes used %.1f of the %.0f CPU seconds the machine had during these runs; the figures are disturbed, re-run on a quiet machine", a.cpu.other, have))
	}
	return out
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// printConnect prints the connect() timings of one socket type.
func printConnect(w io.Writer, r *connectResult, n int) {
	what := "blocking TCP socket to the backend (nginx, listening), then close with an RST"
	if r.proto == "udp" {
		what = "UDP socket to the backend's address (no packet is sent: the system call and the shim's own work)"
	}
	fmt.Fprintf(w, "\n== connect() on a fresh %s: %s timings of each, each call timed alone; the two processes take turns in %d chunks\n",
		what, figure.Thousands(float64(n)), connectChunks)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tp50\tp90\tp99\tmean\t")
	for _, v := range connectVariants {
		s := statsOf(r.samples[v.key])
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", v.what, fmtFine(s.p50), fmtFine(s.p90), fmtFine(s.p99), fmtFine(s.mean))
	}
	for _, d := range connectDiffs {
		a, b := statsOf(r.samples[d.a]), statsOf(r.samples[d.b])
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", d.what, fmtDelta(a.p50-b.p50), fmtDelta(a.p90-b.p90), fmtDelta(a.p99-b.p99), fmtDelta(a.mean-b.mean))
	}
	tw.Flush()
	have := r.cpu.wall.Seconds() * float64(runtime.NumCPU())
	fmt.Fprintf(w, "   CPU seconds: the timing program %.2f, nginx %.2f, other processes %.2f, in %.2f wall seconds\n", r.cpu.load, r.cpu.backend, r.cpu.other, r.cpu.wall.Seconds())
	if r.cpu.other > 0.1*have {
		fmt.Fprintf(w, "   WARNING: other processes used %.2f of the %.2f CPU seconds the machine had during these runs; re-run on a quiet machine\n", r.cpu.other, have)
	}
}

// connectDiffs are the differences printed under the timings.
var connectDiffs = []struct{ a, b, what string }{
	{"magic", "plain", "added by the shim: magic address − no shim"},
	{"magic", "libc", "added, same process: magic address − glibc's connect"},
	{"real", "libc", "a connect the shim passes through − glibc's connect"},
}

// summary prints the headline figures as markdown.
func summary(w io.Writer, cfg config, e env, paths []*path, res map[traffic]map[string]*agg, conns []*connectResult) {
	fmt.Fprintf(w, "\n## Summary (markdown)\n\n")
	fmt.Fprintf(w, "`%s` — %s; %s; %s × %d cores; %s; %s; %s; %s; %s; %s. wrk -t%d -c%d, GET / of %d bytes from nginx (one process); %s per path and traffic kind in %d interleaved rounds.\n\n",
		e.Command, e.Date, e.Go, e.CPU, e.Cores, e.Kernel, e.disco, e.shim, e.nginx, e.haproxy, e.wrk,
		cfg.threads, cfg.connections, cfg.body, cfg.duration, cfg.rounds)
	ts := cfg.traffics()
	if len(paths) > 0 {
		head, sep := "| path |", "|---|"
		for _, t := range ts {
			head += fmt.Sprintf(" %s requests/s | ×direct | p99 |", t.title())
			sep += "---:|---:|---:|"
		}
		fmt.Fprintln(w, head)
		fmt.Fprintln(w, sep)
		for _, p := range paths {
			line := "| " + p.label + " |"
			for _, t := range ts {
				a, d := res[t][p.key], res[t][pDirect]
				rat := "-"
				if d != nil {
					rat = figure.Ratio(a.rate() / d.rate())
				}
				line += fmt.Sprintf(" %s | %s | %s |", figure.Thousands(a.rate()), rat, figure.Micros(a.lat.Quantiles(0.99)[0]))
			}
			fmt.Fprintln(w, line)
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "| aim | figure | met |")
	fmt.Fprintln(w, "|---|---|---|")
	rateRatio := func(t traffic, a, b string) (float64, bool) {
		if res[t] == nil || res[t][a] == nil || res[t][b] == nil {
			return 0, false
		}
		return res[t][a].rate() / res[t][b].rate(), true
	}
	met := func(ok bool) string { return map[bool]string{true: "yes", false: "**no**"}[ok] }
	for _, t := range ts {
		if r, ok := rateRatio(t, pShim, pDirect); ok {
			fmt.Fprintf(w, "| shim ≥ 0.98× direct, requests/s, %s | %s | %s |\n", t.title(), figure.Ratio(r), met(r >= 0.98))
		} else {
			fmt.Fprintf(w, "| shim ≥ 0.98× direct, requests/s, %s | not measured | - |\n", t.title())
		}
	}
	added := "not measured"
	addedMet := "-"
	for _, r := range conns {
		if r.proto != "tcp" {
			continue
		}
		m, p := statsOf(r.samples["magic"]), statsOf(r.samples["plain"])
		added = fmt.Sprintf("%s (%s → %s); same process, against glibc's connect: %s", fmtDelta(m.p50-p.p50), fmtFine(p.p50), fmtFine(m.p50),
			fmtDelta(m.p50-statsOf(r.samples["libc"]).p50))
		addedMet = met(m.p50-p.p50 <= 5000)
	}
	fmt.Fprintf(w, "| added `connect()` time of the shim ≤ 5 µs at p50 (TCP, loopback) | %s | %s |\n", added, addedMet)
	for _, t := range ts {
		if r, ok := rateRatio(t, pFallback, pHaproxy); ok {
			fmt.Fprintf(w, "| fallback proxy ≥ haproxy (tcp mode), requests/s, %s | %s | %s |\n", t.title(), figure.Ratio(r), met(r >= 1))
		} else {
			fmt.Fprintf(w, "| fallback proxy ≥ haproxy (tcp mode), requests/s, %s | not measured | - |\n", t.title())
		}
	}
	fmt.Fprintln(w, "\nwrk, nginx and the proxy share the machine's cores; the tables above show the CPU seconds each used, and what other")
	fmt.Fprintf(w, "processes used (\"other CPU\", which should be near 0). The agent runs with GOMAXPROCS %d, haproxy with nbthread 1.\n", runtime.GOMAXPROCS(0))
}

// fmtFine prints a duration given in ns in microseconds with two decimals.
func fmtFine(ns float64) string {
	if math.IsNaN(ns) {
		return "-"
	}
	return fmt.Sprintf("%.2fµs", ns/1e3)
}

// fmtDelta prints a signed difference given in ns.
func fmtDelta(ns float64) string {
	if math.IsNaN(ns) {
		return "-"
	}
	if math.Abs(ns) < 1000 {
		return fmt.Sprintf("%+.0f ns", ns)
	}
	return fmt.Sprintf("%+.2f µs", ns/1e3)
}
