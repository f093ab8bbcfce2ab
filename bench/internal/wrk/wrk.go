// Package wrk runs the HTTP load generator wrk for the end-to-end
// benchmarks and reads back what it measured: its totals, its errors by
// kind, and its whole latency histogram, so that a benchmark can add
// several runs together and take exact percentiles of the sum.
package wrk

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/peer"
)

// script makes wrk print, at the end of a run, its totals and its latency
// histogram (microsecond buckets: value, count). It defines no request or
// response function, so wrk sends its static request and does not hand
// responses to Lua: the script costs nothing while the run lasts.
const script = `-- disco bench: totals and the latency histogram, for the benchmark
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("DISCO summary %d %d %d %d %d %d %d %d\n",
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout))
  for i = 1, #latency do
    local v, c = latency(i)
    io.write(string.format("DISCO lat %d %d\n", v, c))
  end
end
`

// Hist is a latency histogram: microseconds → responses.
type Hist map[int64]int64

// Add adds o's counts to h.
func (h Hist) Add(o Hist) {
	for v, c := range o {
		h[v] += c
	}
}

// Quantiles returns the latencies (in ns) at each q of qs, nearest rank;
// NaN when h is empty.
func (h Hist) Quantiles(qs ...float64) []float64 {
	keys := make([]int64, 0, len(h))
	var n int64
	for v, c := range h {
		keys = append(keys, v)
		n += c
	}
	slices.Sort(keys)
	out := make([]float64, len(qs))
	for i, q := range qs {
		if n == 0 {
			out[i] = math.NaN()
			continue
		}
		rank := max(int64(math.Ceil(q*float64(n))), 1)
		var seen int64
		for _, v := range keys {
			seen += h[v]
			if seen >= rank {
				out[i] = float64(v) * 1e3
				break
			}
		}
	}
	return out
}

// Result is what one wrk run measured.
type Result struct {
	Duration      time.Duration // as wrk measured it
	Requests      float64       // responses read, whatever their status
	Bytes         float64
	ConnectErrors float64
	ReadErrors    float64
	WriteErrors   float64
	StatusErrors  float64 // responses with a status of 400 or more (wrk's "Non-2xx or 3xx")
	Timeouts      float64 // requests unanswered after the runner's Timeout
	Latency       Hist
	CPU           float64 // wrk's own CPU seconds
	Stderr        string
}

// Rate is the responses per second.
func (r *Result) Rate() float64 { return r.Requests / r.Duration.Seconds() }

// Errors adds up the errors of every kind.
func (r *Result) Errors() float64 {
	return r.ConnectErrors + r.ReadErrors + r.WriteErrors + r.StatusErrors + r.Timeouts
}

// DescribeErrors lists the errors by kind.
func (r *Result) DescribeErrors() string {
	return fmt.Sprintf("connect %.0f, read %.0f, write %.0f, non-2xx %.0f, timeout %.0f",
		r.ConnectErrors, r.ReadErrors, r.WriteErrors, r.StatusErrors, r.Timeouts)
}

// Runner runs wrk with the benchmark's script and settings.
type Runner struct {
	bin, script string
	// Threads and Connections are wrk's -t and -c.
	Threads, Connections int
	// Timeout is wrk's --timeout, whole seconds: a request unanswered
	// this long is a timeout error.
	Timeout time.Duration
	// Headers are sent with every request ("Host: x").
	Headers []string
}

// New returns a Runner of bin that writes its script into dir, with one
// thread, one connection and a timeout of 2s.
func New(bin, dir string) (*Runner, error) {
	s := filepath.Join(dir, "wrk-histogram.lua")
	if err := os.WriteFile(s, []byte(script), 0o644); err != nil {
		return nil, fmt.Errorf("wrk: %w", err)
	}
	return &Runner{bin: bin, script: s, Threads: 1, Connections: 1, Timeout: 2 * time.Second}, nil
}

// Run sends requests to url for d (whole seconds, as wrk takes them) and
// returns what wrk measured. env is wrk's environment (nil: the
// benchmark's); headers are sent with every request, after the Runner's.
// A run that ends without wrk's summary is an error; one with errors is
// not: the Result counts them.
func (w *Runner) Run(ctx context.Context, url string, d time.Duration, env []string, headers ...string) (*Result, error) {
	if d < time.Second || d%time.Second != 0 {
		return nil, fmt.Errorf("wrk: duration %s is not a whole number of seconds", d)
	}
	args := []string{
		"-t", strconv.Itoa(w.Threads), "-c", strconv.Itoa(w.Connections),
		"-d", strconv.Itoa(int(d / time.Second)), "--timeout", strconv.Itoa(max(int(w.Timeout/time.Second), 1)) + "s",
		"-s", w.script,
	}
	for _, h := range append(slices.Clip(w.Headers), headers...) {
		args = append(args, "-H", h)
	}
	args = append(args, url)
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = peer.SysProcAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := &Result{Latency: Hist{}, CPU: peer.ExitedCPU(cmd.ProcessState), Stderr: strings.TrimSpace(stderr.String())}
	if err != nil && ctx.Err() != nil {
		return r, fmt.Errorf("wrk: %w", context.Cause(ctx))
	}
	if err != nil {
		return r, fmt.Errorf("wrk %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	sawSummary := false
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "DISCO" {
			continue
		}
		nums := make([]float64, len(f)-2)
		for i, s := range f[2:] {
			nums[i], _ = strconv.ParseFloat(s, 64)
		}
		switch {
		case f[1] == "summary" && len(nums) == 8:
			sawSummary = true
			r.Duration = time.Duration(nums[0]) * time.Microsecond
			r.Requests, r.Bytes = nums[1], nums[2]
			r.ConnectErrors, r.ReadErrors, r.WriteErrors, r.StatusErrors, r.Timeouts = nums[3], nums[4], nums[5], nums[6], nums[7]
		case f[1] == "lat" && len(nums) == 2:
			r.Latency[int64(nums[0])] += int64(nums[1])
		}
	}
	if !sawSummary || r.Duration <= 0 {
		return r, fmt.Errorf("wrk %s: no summary from its script in its output:\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	}
	return r, nil
}

// Version is "wrk 4.1.0-3+b2" (wrk -v: "wrk debian/4.1.0-3+b2 [epoll]
// Copyright ...").
func Version(bin string) string {
	if f := strings.Fields(peer.FirstLine(bin, "-v")); len(f) >= 2 && f[0] == "wrk" {
		v := f[1]
		if _, after, ok := strings.Cut(v, "/"); ok {
			v = after
		}
		return "wrk " + v
	}
	return "wrk (version unknown)"
}
