package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/discotech/disco/bench/internal/figure"
)

// figures are one line's percentiles, in ns: p50, p90, p99, max.
func figures(lat []time.Duration) []float64 {
	return percentiles(slices.Clone(lat), 50, 90, 99, 100)
}

// met says whether a line met its target: "yes", "no", or "" when it has
// none. Missed changes fail it.
func met(r *result) string {
	if r.line.bound == 0 {
		return ""
	}
	p99 := figures(r.lat["all"])[2]
	if r.missed["all"] > 0 || r.errors > 0 || math.IsNaN(p99) || time.Duration(p99) > r.line.bound {
		return "no"
	}
	return "yes"
}

func printTable(w io.Writer, cfg config, results []*result, skipped []string) {
	fmt.Fprintf(w, "\n== propagation: from just before a change is made in the source until the agent's table has it\n")
	fmt.Fprintf(w, "   %d changes per line; every other change of disco, file, etcd and zookeeper updates an instance in place (a new port), the rest add one\n", cfg.changes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\t\tchanges\tp50\tp90\tp99\tmax\tmissed\terrors\ttarget\tmet\t")
	for _, r := range results {
		for i, kind := range []string{"all", "add", "update"} {
			lat := r.lat[kind]
			// The kinds' own lines, when the line has both.
			if kind != "all" && (len(r.lat["add"])+r.missed["add"] == 0 || len(r.lat["update"])+r.missed["update"] == 0) {
				continue
			}
			name, target, ok, errs := "", "", "", ""
			if i == 0 {
				name, target, ok, errs = r.line.name, r.line.target, met(r), fmt.Sprint(r.errors)
			}
			f := figures(lat)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t\n", name, kind, len(lat)+r.missed[kind],
				figure.Micros(f[0]), figure.Micros(f[1]), figure.Micros(f[2]), figure.Micros(f[3]), r.missed[kind], errs, target, ok)
		}
	}
	tw.Flush()
	for _, r := range results {
		var notes []string
		if r.line.note != "" {
			notes = append(notes, r.line.note)
		}
		notes = append(notes, r.notes...)
		for _, n := range notes {
			fmt.Fprintf(w, "   %s: %s\n", r.line.name, n)
		}
	}
	for _, s := range skipped {
		fmt.Fprintf(w, "   not measured: %s\n", s)
	}
}

func summary(w io.Writer, cfg config, e env, results []*result, skipped []string) {
	fmt.Fprintf(w, "\n## Summary (markdown)\n\n")
	fmt.Fprintf(w, "`%s` — %s; %s; %s × %d cores; %s.\n\n", e.command, e.date, e.goVersion, e.cpu, e.cores, strings.Join(e.peers, ", "))
	fmt.Fprintln(w, "| source | changes | p50 | p90 | p99 | max | missed | target | met |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|---|")
	for _, r := range results {
		f := figures(r.lat["all"])
		target := r.line.target
		if target == "-" {
			target = ""
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %d | %s | %s |\n", r.line.name, len(r.lat["all"])+r.missed["all"],
			figure.Micros(f[0]), figure.Micros(f[1]), figure.Micros(f[2]), figure.Micros(f[3]), r.missed["all"], target, met(r))
	}
	for _, s := range skipped {
		fmt.Fprintf(w, "\nNot measured: %s.\n", s)
	}
	fmt.Fprintf(w, "\nLatency runs from just before the change is made (dns-srv: from when dnsmasq first serves it) until a version of the\n")
	fmt.Fprintf(w, "agent's table holds it; percentiles are exact (nearest rank). Changes are %s apart on average (dns-srv %s).\n", cfg.spacing, cfg.dnsSpacing)
}
