package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/discotech/disco/bench/internal/figure"
)

// The aims, from the issue.
const (
	aimVsNginx   = 1.0 // Discotech's requests/s over nginx's, at least
	aimVsHaproxy = 0.8 // over haproxy's, at least
	aimAddedP99  = 1e6 // ns of p99 added latency at half Discotech's peak, under
)

// reason is an error in one line, for a table cell: its first line, and
// when that quotes a peer's log, the log line that looks like the cause
// (the first that speaks of an error), else the log's last.
func reason(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	first, ok := strings.CutSuffix(lines[0], "; its log ends with:")
	if !ok || len(lines) < 2 {
		return lines[0]
	}
	cause := lines[len(lines)-1]
	for _, l := range lines[1:] {
		low := strings.ToLower(l)
		if strings.Contains(low, "error") || strings.Contains(low, "panic") || strings.Contains(low, "fatal") ||
			strings.Contains(low, "alert") || strings.Contains(low, "unknown") || strings.Contains(low, "not defined") {
			cause = l
			break
		}
	}
	return first + ": " + strings.TrimSpace(cause)
}

// addedP99 is l's p99 at its latency rate minus the direct path's at the
// same rate, in ns; NaN when either was not measured.
func (l *leg) addedP99() float64 { return addedP99(l.lat, l.direct) }

// addedP99 is lat's p99 minus direct's, in ns; NaN when either is nil.
func addedP99(lat, direct *pacedResult) float64 {
	if lat == nil || direct == nil {
		return math.NaN()
	}
	return lat.lat.Quantiles(0.99)[0] - direct.lat.Quantiles(0.99)[0]
}

// pct formats n of total as a percentage.
func pct(n, total int) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total))
}

// perRequest formats CPU seconds per request in µs.
func perRequest(cpu, requests float64) string {
	if requests <= 0 {
		return "-"
	}
	return figure.Micros(cpu / requests * 1e9)
}

func printPeak(w io.Writer, legs []*leg) {
	fmt.Fprintln(w, "\n== peak: wrk, keep-alive, one path at a time")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\trequests/s\t×direct\tp50\tp99\tp99.9\terrors\tnon-2xx\tproxy CPU\tproxy CPU/request\tbackends CPU\tload CPU\tother CPU\t")
	var direct *leg
	for _, l := range legs {
		if l.key == pDirect && l.peak != nil {
			direct = l
		}
	}
	for _, l := range legs {
		if l.peak == nil {
			fmt.Fprintf(tw, "%s\tnot measured%s\n", l.label, strings.Repeat("\t-", 11)+"\t")
			continue
		}
		r, c := l.peak, l.peakCPU
		q := r.Latency.Quantiles(0.5, 0.99, 0.999)
		rat := "-"
		if direct != nil {
			rat = figure.Ratio(r.Rate() / direct.peak.Rate())
		}
		proxyCPU, per := "-", "-"
		if l.proxy != nil {
			proxyCPU, per = fmt.Sprintf("%.1fs", c.proxy), perRequest(c.proxy, r.Requests)
		}
		fmt.Fprintf(tw, "%s\t%s/s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1fs\t%.1fs\t%.1fs\t\n",
			l.label, figure.Thousands(r.Rate()), rat, figure.Micros(q[0]), figure.Micros(q[1]), figure.Micros(q[2]),
			figure.Thousands(r.Errors()-r.StatusErrors), figure.Thousands(r.StatusErrors), proxyCPU, per, c.backend, c.load, c.other)
	}
	tw.Flush()
	fmt.Fprintln(w, "   requests/s: higher is better; latencies (wrk's, closed loop) and CPU per request: lower is better.")
	fmt.Fprintln(w, "   errors: connect, read, write and timeout; non-2xx: answers with a status of 400 or more.")
	printRatios(w, legs)
}

// roundRatios is a's peak requests/s over b's in each round, when both
// were measured in every round: the two ran minutes apart at most, on
// much the same machine, where the medians of the rounds may come from
// different phases of a machine whose speed drifts. nil otherwise.
func roundRatios(a, b *leg) []float64 {
	if len(a.peaks) != len(b.peaks) {
		return nil
	}
	by := make([]float64, len(a.peaks))
	for i := range by {
		by[i] = a.peaks[i] / b.peaks[i]
	}
	return by
}

// printRatios prints every proxy's requests/s over every other's.
func printRatios(w io.Writer, legs []*leg) {
	var ps []*leg
	for _, l := range legs {
		if l.proxy != nil && l.peak != nil {
			ps = append(ps, l)
		}
	}
	var parts []string
	for i, a := range ps {
		for _, b := range ps[i+1:] {
			parts = append(parts, fmt.Sprintf("%s/%s %s", a.key, b.key, figure.Ratio(a.peak.Rate()/b.peak.Rate())))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "   requests/s ratios: %s\n", strings.Join(parts, ", "))
	}
}

func printLatency(w io.Writer, legs []*leg) {
	some := false
	for _, l := range legs {
		some = some || l.lat != nil || l.latErr != nil
	}
	if !some {
		return
	}
	fmt.Fprintln(w, "\n== latency at half of each proxy's own peak: open loop, from each request's due time to its answer")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\trate\tp50\tp99\tp99.9\tdirect p99\tadded p99\tsend lag p99\tqueued\terrors\tnon-2xx\tunanswered\tproxy CPU/request\tother CPU\t")
	for _, l := range legs {
		if l.proxy == nil || l.peak == nil {
			continue
		}
		if l.lat == nil {
			why := "skipped"
			if l.latErr != nil {
				why = "failed: " + reason(l.latErr)
			}
			fmt.Fprintf(tw, "%s\t%s/s\t%s\t\n", l.label, figure.Thousands(l.rate), why)
			continue
		}
		r := l.lat
		q := r.lat.Quantiles(0.5, 0.99, 0.999)
		dp99 := math.NaN()
		if l.direct != nil {
			dp99 = l.direct.lat.Quantiles(0.99)[0]
		}
		fmt.Fprintf(tw, "%s\t%s/s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%.1fs\t\n",
			l.label, figure.Thousands(l.rate), figure.Micros(q[0]), figure.Micros(q[1]), figure.Micros(q[2]),
			figure.Micros(dp99), figure.Micros(l.addedP99()), figure.Micros(r.lag.Quantiles(0.99)[0]), pct(r.queued, r.sent),
			r.errors, r.non2xx, r.unanswered, perRequest(l.latCPU.proxy, float64(r.answered)), l.latCPU.other)
	}
	tw.Flush()
	fmt.Fprintln(w, "   direct p99: the direct path's at the same rate, measured just before; added p99 = p99 - direct p99.")
	fmt.Fprintln(w, "   send lag: how late the client wrote the request against its due time: its own delay, or a wait for a free connection;")
	fmt.Fprintln(w, "   queued: the share of requests that found every connection busy when due (the path's delay, not the client's).")
}

// printNotes prints what the tables leave out: which backends answered,
// why a path was left out (in full, with its log), and what went wrong in
// a run.
func printNotes(w io.Writer, legs []*leg) {
	var notes []string
	for _, l := range legs {
		if len(l.spread) > 0 {
			n := 0
			var by []string
			for _, b := range slices.Sorted(maps.Keys(l.spread)) {
				n += l.spread[b]
				by = append(by, fmt.Sprintf("%s %d", b, l.spread[b]))
			}
			notes = append(notes, fmt.Sprintf("%s: %d requests one after the other were answered by %s", l.key, n, strings.Join(by, ", ")))
		}
		if len(l.peaks) > 1 {
			var by []string
			for _, r := range l.peaks {
				by = append(by, figure.Thousands(r))
			}
			notes = append(notes, fmt.Sprintf("%s: peak requests/s by round %s (the median is reported)", l.key, strings.Join(by, ", ")))
		}
		if len(l.added) > 1 && slices.ContainsFunc(l.added, func(d float64) bool { return !math.IsNaN(d) }) {
			var by []string
			for _, d := range l.added {
				by = append(by, figure.Micros(d))
			}
			notes = append(notes, fmt.Sprintf("%s: added p99 by round %s (the median is reported)", l.key, strings.Join(by, ", ")))
		}
		if l.err != nil {
			notes = append(notes, fmt.Sprintf("%s: not measured: %v", l.key, l.err))
		}
		if l.bad != "" {
			notes = append(notes, fmt.Sprintf("%s: its peak figures do not count: %s", l.key, l.bad))
		}
		for _, r := range []*pacedResult{l.lat, l.direct} {
			if r != nil && r.firstErr != nil {
				notes = append(notes, fmt.Sprintf("%s: latency run at %s/s: %d reconnects; first error: %v", l.key, figure.Thousands(l.rate), r.reconnects, r.firstErr))
			}
			if r != nil && r.unstamped > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d answers had no kernel timestamp and were timed on receipt", l.key, r.unstamped))
			}
		}
		if l.directErr != nil {
			notes = append(notes, fmt.Sprintf("direct at %s's rate: %v", l.key, l.directErr))
		}
	}
	if len(notes) == 0 {
		return
	}
	fmt.Fprintln(w, "\nnotes:")
	for _, n := range notes {
		fmt.Fprintf(w, "   %s\n", strings.ReplaceAll(n, "\n", "\n      "))
	}
}

// pinnedNote is " Pinned: …." with -pin, "" without.
func pinnedNote(e env) string {
	if e.pinned == "" {
		return ""
	}
	return " Pinned: " + e.pinned + "."
}

// summary prints the headline figures and the aims as markdown.
func summary(w io.Writer, cfg config, e env, legs []*leg) {
	fmt.Fprintf(w, "\n## Summary (markdown)\n\n")
	fmt.Fprintf(w, "`%s` — %s; %s; %s × %d cores; %s; %s; %s; %s; %s. %d backends (one nginx process, `return 200`); every proxy with %d thread(s) (GOMAXPROCS, nbthread, worker_processes). wrk -t%d -c%d, %s per path; latency open loop over %d connections at half each proxy's own peak, %s per run; the median of %d rounds, the paths in turn.%s\n\n",
		e.Command, e.Date, e.Go, e.CPU, e.Cores, e.Kernel, e.disco, e.haproxy, e.nginx, e.wrk,
		nBackends, cfg.procs, cfg.threads, cfg.connections, cfg.duration, cfg.connections, cfg.latDuration, cfg.rounds, pinnedNote(e))
	fmt.Fprintln(w, "| path | requests/s | p50 | p99 | proxy CPU/request | latency at | p99 | added p99 |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	byKey := map[string]*leg{}
	for _, l := range legs {
		byKey[l.key] = l
		if l.peak == nil {
			fmt.Fprintf(w, "| %s | not measured: %s | | | | | | |\n", l.label, strings.ReplaceAll(reason(l.err), "|", `\|`))
			continue
		}
		q := l.peak.Latency.Quantiles(0.5, 0.99)
		per, at, p99 := "-", "-", "-"
		if l.proxy != nil {
			per = perRequest(l.peakCPU.proxy, l.peak.Requests)
		}
		if l.lat != nil {
			at, p99 = figure.Thousands(l.rate)+"/s", figure.Micros(l.lat.lat.Quantiles(0.99)[0])
		}
		rate := figure.Thousands(l.peak.Rate())
		if l.bad != "" {
			rate += " (errors)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", l.label, rate,
			figure.Micros(q[0]), figure.Micros(q[1]), per, at, p99, figure.Micros(l.addedP99()))
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "| aim | figure | met |")
	fmt.Fprintln(w, "|---|---|---|")
	d := byKey[pDiscotech]
	met := func(ok bool) string { return map[bool]string{true: "yes", false: "**no**"}[ok] }
	vs := func(name, other string, aim float64) {
		o := byKey[other]
		switch {
		case d == nil || d.peak == nil || o == nil || o.peak == nil:
			fmt.Fprintf(w, "| %s | not measured | - |\n", name)
		case d.bad != "" || o.bad != "":
			fmt.Fprintf(w, "| %s | %s (with errors: does not count) | **no** |\n", name, figure.Ratio(d.peak.Rate()/o.peak.Rate()))
		default:
			r := d.peak.Rate() / o.peak.Rate()
			fig := fmt.Sprintf("%s (%s/s vs %s/s)", figure.Ratio(r), figure.Thousands(d.peak.Rate()), figure.Thousands(o.peak.Rate()))
			if by := roundRatios(d, o); len(by) > 1 {
				r = median(by, cmp.Compare[float64])
				parts := make([]string, len(by))
				for i, x := range by {
					parts[i] = figure.Ratio(x)
				}
				fig = fmt.Sprintf("%s, the median of the rounds' ratios (%s); of the medians %s", figure.Ratio(r), strings.Join(parts, " · "), fig)
			}
			fmt.Fprintf(w, "| %s | %s | %s |\n", name, fig, met(r >= aim))
		}
	}
	vs("Discotech ≥ nginx's requests/s", pNginx, aimVsNginx)
	vs("Discotech ≥ 0.8× haproxy's requests/s", pHaproxy, aimVsHaproxy)
	name := "Discotech's p99 added latency < 1 ms at half its peak"
	switch {
	case d == nil || math.IsNaN(d.addedP99()):
		fmt.Fprintf(w, "| %s | not measured | - |\n", name)
	default:
		a := d.addedP99()
		errs := d.lat.errors + d.lat.non2xx + d.lat.unanswered
		fig := fmt.Sprintf("%s (p99 %s vs direct %s at %s/s)", figure.Micros(a), figure.Micros(d.lat.lat.Quantiles(0.99)[0]),
			figure.Micros(d.direct.lat.Quantiles(0.99)[0]), figure.Thousands(d.rate))
		if errs > 0 {
			fmt.Fprintf(w, "| %s | %s, with %d failed requests | **no** |\n", name, fig, errs)
		} else {
			fmt.Fprintf(w, "| %s | %s | %s |\n", name, fig, met(a < aimAddedP99))
		}
	}
	fmt.Fprintln(w, "\nwrk, the backends and the proxy share the machine's cores; the tables above show the CPU seconds each used, and what")
	fmt.Fprintln(w, "other processes used (\"other CPU\", which should be near 0).")
}
