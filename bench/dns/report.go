package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/discotech/disco/bench/internal/figure"
)

// kind says how a figure is printed.
type kind int

const (
	kRate  kind = iota // queries per second
	kNanos             // a latency in ns
	kCount
	kBytes
	kSecs // CPU seconds
)

// column is one figure of a table. better is +1 when higher is better, -1
// when lower is, 0 when the figure is not compared.
type column struct {
	key, header string
	kind        kind
	better      int
}

// row is one measured line of a table: a system, and how it was loaded.
type row struct {
	system string // "discotech" or "dnsmasq"
	name   string
	vals   map[string]float64
	notes  []string
}

// table is one workload's figures for both systems, and the pairs of rows
// (Discotech's, dnsmasq's) whose ratio it prints.
type table struct {
	title string
	cols  []column
	rows  []*row
	pairs [][2]*row
}

func (t *table) add(system, name string, vals map[string]float64, notes ...string) *row {
	r := &row{system: system, name: name, vals: vals}
	for _, n := range notes {
		if n != "" {
			r.notes = append(r.notes, n)
		}
	}
	t.rows = append(t.rows, r)
	return r
}

func (t *table) kindOf(key string) kind {
	for _, c := range t.cols {
		if c.key == key {
			return c.kind
		}
	}
	return kCount
}

func (t *table) print(w io.Writer) {
	fmt.Fprintf(w, "\n== %s\n", t.title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\t")
	for _, c := range t.cols {
		fmt.Fprintf(tw, "%s\t", c.header)
	}
	fmt.Fprintln(tw)
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s %s\t", r.system, r.name)
		for _, c := range t.cols {
			fmt.Fprintf(tw, "%s\t", cell(c.kind, r.vals, c.key))
		}
		fmt.Fprintln(tw)
	}
	for _, p := range t.pairs {
		fmt.Fprintf(tw, "ratio Discotech/dnsmasq\t")
		for _, c := range t.cols {
			fmt.Fprintf(tw, "%s\t", ratioCell(c, p[0].vals, p[1].vals))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if len(t.pairs) > 0 {
		var better []string
		for _, c := range t.cols {
			switch c.better {
			case +1:
				better = append(better, c.header+": higher is better")
			case -1:
				better = append(better, c.header+": lower is better")
			}
		}
		fmt.Fprintf(w, "   %s\n", strings.Join(better, "; "))
	}
	for _, r := range t.rows {
		for _, n := range r.notes {
			fmt.Fprintf(w, "   %s %s: %s\n", r.system, r.name, n)
		}
	}
}

// ratioCell is Discotech's figure over dnsmasq's, for compared figures
// both measured and above zero.
func ratioCell(c column, d, m map[string]float64) string {
	if c.better == 0 {
		return ""
	}
	dv, ok1 := d[c.key]
	mv, ok2 := m[c.key]
	if !ok1 || !ok2 || math.IsNaN(dv) || math.IsNaN(mv) || dv <= 0 || mv <= 0 {
		return "-"
	}
	return ratio(dv / mv)
}

func ratio(r float64) string {
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	if r >= 0.1 {
		return fmt.Sprintf("%.2f×", r)
	}
	return fmt.Sprintf("%.3f×", r)
}

// cell prints the figure key of a row, "-" when it was not measured.
func cell(k kind, vals map[string]float64, key string) string {
	v, ok := vals[key]
	return format(k, v, ok)
}

func format(k kind, v float64, ok bool) string {
	if !ok || math.IsNaN(v) {
		return "-"
	}
	switch k {
	case kRate:
		return figure.Thousands(v) + "/s"
	case kNanos:
		return figure.Micros(v)
	case kBytes:
		return fmt.Sprintf("%.0f B", v)
	case kSecs:
		return fmt.Sprintf("%.1fs", v)
	}
	return figure.Thousands(v)
}
