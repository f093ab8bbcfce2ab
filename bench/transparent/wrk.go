package main

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
)

// wrkScript makes wrk print, at the end of a run, its totals and its whole
// latency histogram (microsecond buckets: value, count), so that the
// benchmark can add several runs together and take exact percentiles of
// the sum. It defines no request or response function, so wrk sends its
// static request and does not hand responses to Lua: the script costs
// nothing while the run lasts.
const wrkScript = `-- bench/transparent: totals and the latency histogram, for the benchmark
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

// hist is a latency histogram: microseconds → responses.
type hist map[int64]int64

func (h hist) add(o hist) {
	for v, c := range o {
		h[v] += c
	}
}

// quantiles returns the latencies (in ns) at each q of qs, nearest rank.
func (h hist) quantiles(qs ...float64) []float64 {
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

// wrkResult is one wrk run.
type wrkResult struct {
	duration                              time.Duration // as wrk measured it
	requests, bytes                       float64
	connErr, readErr, writeErr, statusErr float64
	timeouts                              float64
	lat                                   hist
	cpu                                   float64 // wrk's own CPU seconds
	stderr                                string
}

func (r *wrkResult) errors() float64 {
	return r.connErr + r.readErr + r.writeErr + r.statusErr + r.timeouts
}

func (r *wrkResult) describeErrors() string {
	return fmt.Sprintf("connect %.0f, read %.0f, write %.0f, non-2xx %.0f, timeout %.0f", r.connErr, r.readErr, r.writeErr, r.statusErr, r.timeouts)
}

// wrkRunner runs wrk with the benchmark's script and settings.
type wrkRunner struct {
	bin, script         string
	threads, conns      int
	timeout             time.Duration
	host                string // Host header of every request, whatever the path
	extraHeaderForClose string
}

func newWrkRunner(bin, dir string, threads, conns int) (*wrkRunner, error) {
	script := filepath.Join(dir, "histogram.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return nil, err
	}
	return &wrkRunner{bin: bin, script: script, threads: threads, conns: conns, timeout: 2 * time.Second,
		host: service + ".service.disco", extraHeaderForClose: "Connection: close"}, nil
}

// run sends traffic to url for d (whole seconds) with env as wrk's
// environment, and returns what wrk measured.
func (w *wrkRunner) run(ctx context.Context, url string, env []string, t traffic, d time.Duration) (*wrkResult, error) {
	args := []string{
		"-t", strconv.Itoa(w.threads), "-c", strconv.Itoa(w.conns),
		"-d", strconv.Itoa(int(d / time.Second)), "--timeout", strconv.Itoa(int(w.timeout/time.Second)) + "s",
		"-s", w.script, "-H", "Host: " + w.host,
	}
	if t == trafficClose {
		args = append(args, "-H", w.extraHeaderForClose)
	}
	args = append(args, url)
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := &wrkResult{lat: hist{}, cpu: exitedCPU(cmd.ProcessState), stderr: strings.TrimSpace(stderr.String())}
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
			r.duration = time.Duration(nums[0]) * time.Microsecond
			r.requests, r.bytes = nums[1], nums[2]
			r.connErr, r.readErr, r.writeErr, r.statusErr, r.timeouts = nums[3], nums[4], nums[5], nums[6], nums[7]
		case f[1] == "lat" && len(nums) == 2:
			r.lat[int64(nums[0])] += int64(nums[1])
		}
	}
	if !sawSummary || r.duration <= 0 {
		return r, fmt.Errorf("wrk %s: no summary from its script in its output:\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	}
	return r, nil
}

func wrkVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput() // "wrk debian/4.1.0-3+b2 [epoll] Copyright ..." then its usage
	first, _, _ := strings.Cut(string(out), "\n")
	if f := strings.Fields(first); len(f) >= 2 && f[0] == "wrk" {
		return "wrk " + f[1]
	}
	return "wrk (version unknown)"
}
