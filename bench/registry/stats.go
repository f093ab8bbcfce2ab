package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/discotech/disco/bench/internal/figure"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// loopResult is what a closed-loop run measured: every successful
// operation's latency, the failures, and how long the run took.
type loopResult struct {
	lat      []time.Duration
	errs     int
	firstErr error
	elapsed  time.Duration
	cpu      cpuSplit
}

// cpuSplit is the CPU time the server and the load generator used during a
// run, as they share the machine's cores, and what other processes used.
type cpuSplit struct{ server, bench, other float64 }

// startCPU starts measuring a cpuSplit; the function it returns ends it.
// serverCPU reads the server's CPU time.
func startCPU(serverCPU func() float64) func() cpuSplit {
	server0, self0, all0 := serverCPU(), sysstat.SelfCPUSeconds(), sysstat.MachineBusySeconds()
	return func() cpuSplit {
		var c cpuSplit
		c.server = serverCPU() - server0
		c.bench = sysstat.SelfCPUSeconds() - self0
		c.other = max(sysstat.MachineBusySeconds()-all0-c.server-c.bench, 0)
		return c
	}
}

func (r *loopResult) rate() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

// runLoop runs op from workers goroutines, each calling op(ctx, w, i) for
// the i that take(w) hands it until take says stop, and times every call.
// serverCPU reads the server's CPU time, before and after.
func runLoop(ctx context.Context, workers int, serverCPU func() float64, take func(w int) (int, bool), op func(ctx context.Context, w, i int) error) loopResult {
	lats := make([][]time.Duration, workers)
	errs := make([]int, workers)
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	cpu := startCPU(serverCPU)
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1024)
			for ctx.Err() == nil {
				i, ok := take(w)
				if !ok {
					break
				}
				t0 := time.Now()
				err := op(ctx, w, i)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() == nil {
						errs[w]++
						once.Do(func() { firstErr = err })
					}
					continue
				}
				lat = append(lat, d)
			}
			lats[w] = lat
		})
	}
	wg.Wait()
	r := loopResult{elapsed: time.Since(start), firstErr: firstErr, cpu: cpu()}
	r.lat = slices.Concat(lats...)
	for _, n := range errs {
		r.errs += n
	}
	return r
}

// countLoop runs op once for each i in [0, n), handing the next i to
// whichever worker is free.
func countLoop(ctx context.Context, workers, n int, serverCPU func() float64, op func(ctx context.Context, w, i int) error) loopResult {
	var next atomic.Int64
	take := func(int) (int, bool) {
		i := int(next.Add(1) - 1)
		return i, i < n
	}
	return runLoop(ctx, workers, serverCPU, take, op)
}

// timedLoop runs op for d: worker w calls op(ctx, w, k) with k = 0, 1, 2...
func timedLoop(ctx context.Context, workers int, d time.Duration, serverCPU func() float64, op func(ctx context.Context, w, k int) error) loopResult {
	end := time.Now().Add(d)
	counts := make([]int, workers) // each worker touches only its own
	take := func(w int) (int, bool) {
		k := counts[w]
		counts[w]++
		return k, time.Now().Before(end)
	}
	return runLoop(ctx, workers, serverCPU, take, op)
}

// owned splits [0, n) round-robin among workers: worker w owns w, w+c,
// w+2c... so no two workers ever touch the same instance at once.
func owned(n, workers int) [][]int {
	out := make([][]int, workers)
	for i := range n {
		out[i%workers] = append(out[i%workers], i)
	}
	return out
}

// percentiles returns the exact p-th percentiles (nearest rank) of d, in
// nanoseconds. It sorts d.
func percentiles(d []time.Duration, ps ...float64) []float64 {
	out := make([]float64, len(ps))
	if len(d) == 0 {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	slices.Sort(d)
	for i, p := range ps {
		rank := int(math.Ceil(p / 100 * float64(len(d))))
		out[i] = float64(d[min(max(rank-1, 0), len(d)-1)])
	}
	return out
}

// fanout records when each of W watchers saw each of K writes. Write seq
// (1..K) is stamped just before it is sent; a watcher that sees seq is
// taken to have seen every write up to seq it had not seen yet (a blocking
// query returns the newest state, which supersedes the writes it skipped).
type fanout struct {
	start time.Time
	sent  []atomic.Int64  // [seq] ns since start; 0 until sent
	took  []time.Duration // [seq] how long the write took; only the writer touches it
	seen  [][]int64       // [watcher][seq] latency in ns; 0 until seen
	last  []int           // [watcher] highest seq seen; only its watcher touches it
	all   atomic.Int64    // watchers that have seen the last write
	done  chan struct{}   // closed when every watcher saw the last write
}

func newFanout(watchers, writes int) *fanout {
	f := &fanout{
		start: time.Now(),
		sent:  make([]atomic.Int64, writes+1),
		took:  make([]time.Duration, writes+1),
		seen:  make([][]int64, watchers),
		last:  make([]int, watchers),
		done:  make(chan struct{}),
	}
	for w := range f.seen {
		f.seen[w] = make([]int64, writes+1)
	}
	return f
}

// sending stamps write seq; call it just before the write is sent.
func (f *fanout) sending(seq int) { f.sent[seq].Store(int64(time.Since(f.start))) }

// written records that write seq was answered.
func (f *fanout) written(seq int) {
	f.took[seq] = time.Since(f.start) - time.Duration(f.sent[seq].Load())
}

// saw records that watcher w has received write seq (and so every earlier
// one). Call it from w's own goroutine only.
func (f *fanout) saw(w, seq int) {
	if seq <= f.last[w] || seq >= len(f.sent) {
		return
	}
	now := int64(time.Since(f.start))
	for s := f.last[w] + 1; s <= seq; s++ {
		if t := f.sent[s].Load(); t != 0 {
			f.seen[w][s] = max(now-t, 1)
		}
	}
	f.last[w] = seq
	if seq == len(f.sent)-1 && f.all.Add(1) == int64(len(f.seen)) {
		close(f.done)
	}
}

// wait waits until every watcher saw the last write, or for timeout.
func (f *fanout) wait(ctx context.Context, timeout time.Duration) {
	select {
	case <-f.done:
	case <-time.After(timeout):
	case <-ctx.Done():
	}
}

// fanoutResult summarizes a fanout: percentiles over every (write,
// watcher) pair, and over each write's slowest watcher.
type fanoutResult struct {
	p50, p99, lastP50, lastP99 float64
	missed                     int     // (write, watcher) pairs never seen
	writeP50, writeP99         float64 // the writes' own latency
}

// result reads the fanout; call it once the watchers have stopped.
func (f *fanout) result() fanoutResult {
	var pairs, last []time.Duration
	var r fanoutResult
	for seq := 1; seq < len(f.sent); seq++ {
		var slowest int64
		for w := range f.seen {
			d := f.seen[w][seq]
			if d == 0 {
				r.missed++
				continue
			}
			pairs = append(pairs, time.Duration(d))
			slowest = max(slowest, d)
		}
		if slowest > 0 {
			last = append(last, time.Duration(slowest))
		}
	}
	p := percentiles(pairs, 50, 99)
	l := percentiles(last, 50, 99)
	r.p50, r.p99, r.lastP50, r.lastP99 = p[0], p[1], l[0], l[1]
	wr := percentiles(slices.Clone(f.took[1:]), 50, 99)
	r.writeP50, r.writeP99 = wr[0], wr[1]
	return r
}

var seqKey = []byte(`"seq":"`)

// parseSeq finds the "seq" meta value in a JSON instance (a watch event,
// a blocking query's answer or an etcd value) without decoding it: the
// load generator shares the cores with the server and must stay cheap.
func parseSeq(b []byte) int {
	i := bytes.Index(b, seqKey)
	if i < 0 {
		return -1
	}
	n := 0
	for _, c := range b[i+len(seqKey):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// kind says how a column's figures are printed.
type kind int

const (
	kRate  kind = iota // operations per second
	kNanos             // a duration in ns
	kBytes
	kCount
	kSecs // CPU seconds
)

// column is one figure of a table. better is +1 when higher is better, -1
// when lower is, 0 when the figure is not compared.
type column struct {
	key, header string
	kind        kind
	better      int
}

// line is one measured line of a table: a system and how it did it.
type line struct {
	system string // "discotech" or "etcd"
	name   string
	vals   map[string]float64
	note   string
}

// table is one workload's figures for both systems.
type table struct {
	title string
	cols  []column
	lines []line
}

func (t *table) add(system, name string, vals map[string]float64, note string) {
	t.lines = append(t.lines, line{system: system, name: name, vals: vals, note: note})
}

// vals returns the figures of the named line.
func (t *table) vals(name string) (map[string]float64, bool) {
	for _, l := range t.lines {
		if l.name == name {
			return l.vals, true
		}
	}
	return nil, false
}

// print writes the table, then one ratio line (Discotech / etcd) for each
// pair of a Discotech line and an etcd line, then the notes.
func (t *table) print(w io.Writer) {
	fmt.Fprintf(w, "\n== %s\n", t.title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\t")
	for _, c := range t.cols {
		fmt.Fprintf(tw, "%s\t", c.header)
	}
	fmt.Fprintln(tw)
	for _, l := range t.lines {
		fmt.Fprintf(tw, "%s %s\t", l.system, l.name)
		for _, c := range t.cols {
			fmt.Fprintf(tw, "%s\t", cell(c.kind, l.vals, c.key))
		}
		fmt.Fprintln(tw)
	}
	ratios := 0
	for _, d := range t.lines {
		if d.system != "discotech" {
			continue
		}
		for _, e := range t.lines {
			if e.system != "etcd" {
				continue
			}
			ratios++
			fmt.Fprintf(tw, "ratio %s / %s\t", d.name, e.name)
			for _, c := range t.cols {
				fmt.Fprintf(tw, "%s\t", ratioCell(c, d.vals, e.vals))
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
	var better []string
	for _, c := range t.cols {
		switch c.better {
		case +1:
			better = append(better, c.header+": higher is better")
		case -1:
			better = append(better, c.header+": lower is better")
		}
	}
	if ratios > 0 && len(better) > 0 {
		fmt.Fprintf(w, "   ratios are Discotech/etcd; %s\n", strings.Join(better, ", "))
	}
	for _, l := range t.lines {
		if l.note != "" {
			fmt.Fprintf(w, "   %s %s: %s\n", l.system, l.name, l.note)
		}
	}
}

// ratioCell is Discotech's figure over etcd's, when both are measured
// figures above their noise.
func ratioCell(c column, d, e map[string]float64) string {
	if c.better == 0 {
		return ""
	}
	dv, ok1 := d[c.key]
	ev, ok2 := e[c.key]
	if !ok1 || !ok2 || math.IsNaN(dv) || math.IsNaN(ev) || inNoise(d, c.key) || inNoise(e, c.key) || dv <= 0 || ev <= 0 {
		return "-"
	}
	return ratio(dv / ev)
}

// inNoise reports whether the figure key is no larger than its noise: a
// difference of readings that measured nothing distinguishable from zero.
func inNoise(vals map[string]float64, key string) bool {
	n, ok := vals[key+"_noise"]
	return ok && math.Abs(vals[key]) <= n
}

// cell prints the figure key of a line: "-" when it was not measured, "≈0"
// when it is within its noise.
func cell(k kind, vals map[string]float64, key string) string {
	v, ok := vals[key]
	if ok && inNoise(vals, key) {
		return "≈0"
	}
	return format(k, v, ok)
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

// format prints one figure.
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
		return fmtBytes(v)
	case kSecs:
		return fmt.Sprintf("%.1fs", v)
	}
	return figure.Thousands(v)
}

func fmtBytes(b float64) string {
	a := math.Abs(b)
	switch {
	case a >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case a >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case a >= 10<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}
