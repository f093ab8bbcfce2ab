package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// peer is a server process the benchmark started: Discotech or etcd, with
// its own temporary directory for data and logs. stop ends the process and
// removes the directory.
type peer struct {
	name string
	dir  string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed

	stopOnce sync.Once
}

// peersCPU adds up the CPU time of every peer stopped so far, to tell how
// much of the machine's work during a run was neither a peer's nor the
// benchmark's. Peers are started and stopped from one goroutine.
var peersCPU float64

// startPeer runs bin with args, its output going to dir/<name>.log.
func startPeer(name, dir, bin string, args ...string) (*peer, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C at the terminal reaches only the
		// benchmark, which then stops its peers in order.
		Setpgid: true,
		// If the benchmark itself is killed, the kernel kills the peer.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &peer{name: name, dir: dir, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid is the peer's process id.
func (p *peer) pid() int { return p.cmd.Process.Pid }

// stop asks the peer to exit (SIGTERM), kills it after 10s, and removes its
// directory. It is safe to call more than once.
func (p *peer) stop() {
	p.stopOnce.Do(func() {
		peersCPU += p.cpuSeconds()
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			fmt.Fprintf(os.Stderr, "%s: still running 10s after SIGTERM; killing it\n", p.name)
			p.cmd.Process.Kill()
			<-p.done
		}
		p.log.Close()
		os.RemoveAll(p.dir)
	})
}

// logTail returns the last lines of the peer's log, for error messages.
func (p *peer) logTail() string {
	b, _ := os.ReadFile(p.log.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// waitReady polls url until ok accepts the answer, the peer exits or 30s
// pass.
func (p *peer) waitReady(ctx context.Context, url string, ok func(status int, body []byte) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		status, body, err := get(ctx, http.DefaultClient, url)
		if err == nil && ok(status, body) {
			return nil
		}
		last = fmt.Sprintf("%d %s", status, bytes.TrimSpace(body))
		if err != nil {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v); its log ends with:\n%s", p.name, p.err, p.logTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s not ready after 30s (GET %s: %s); its log ends with:\n%s", p.name, url, last, p.logTail())
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// cpuSeconds is the CPU time (user + system) the peer has used: the same
// figure Go servers export as process_cpu_seconds_total, read the same way
// for both peers.
func (p *peer) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields are counted after
	// its closing parenthesis. utime and stime are fields 14 and 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	// USER_HZ is 100 on every Linux this runs on (x86-64, arm64).
	return (utime + stime) / 100
}

// rssBytes is the peer's resident set size.
func (p *peer) rssBytes() float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

// get fetches url and returns the status and body.
func get(ctx context.Context, hc *http.Client, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// metrics is one scrape of a Prometheus text endpoint, by series:
// `name` or `name{label="value",...}` exactly as the server wrote it.
type metrics map[string]float64

// scrape reads the Prometheus text at url. Both peers serve /metrics.
func scrape(ctx context.Context, url string) (metrics, error) {
	status, body, err := get(ctx, http.DefaultClient, url)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %d", url, status)
	}
	m := metrics{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		// The series ends at the closing brace when there are labels (label
		// values may hold spaces), else at the first space.
		end := strings.IndexByte(line, ' ')
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			end = i + 1
		}
		if end <= 0 || end >= len(line) {
			continue
		}
		fields := strings.Fields(line[end:])
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			m[line[:end]] = v
		}
	}
	return m, nil
}

// memory is what a peer uses, in bytes.
type memory struct {
	rss, heap, stack float64
}

func (a memory) sub(b memory) memory {
	return memory{rss: a.rss - b.rss, heap: a.heap - b.heap, stack: a.stack - b.stack}
}

func (a memory) per(n int) memory {
	f := float64(n)
	return memory{rss: a.rss / f, heap: a.heap / f, stack: a.stack / f}
}

// reading is a memory figure measured several times: the median, and the
// spread (largest minus smallest) that tells how much of it is noise.
type reading struct{ mid, spread memory }

// sub is the growth from b to a; its spread adds both readings' spreads.
func (a reading) sub(b reading) reading {
	return reading{mid: a.mid.sub(b.mid), spread: memory{
		rss: a.spread.rss + b.spread.rss, heap: a.spread.heap + b.spread.heap, stack: a.spread.stack + b.spread.stack}}
}

func (a reading) per(n int) reading { return reading{mid: a.mid.per(n), spread: a.spread.per(n)} }

// noise describes the spread of a per-item figure.
func (a reading) noise() string {
	return fmt.Sprintf("noise (spread of the readings): RSS ±%s, heap ±%s", fmtBytes(a.spread.rss/2), fmtBytes(a.spread.heap/2))
}

// readMemory takes settled readings of p's memory until the last three
// agree (heap within 1% or 256 KiB), at most six, and returns their median
// and spread. Right after heavy work the heap keeps shrinking for a few
// collections as half-empty spans drain, and RSS moves by megabytes on its
// own (freed pages go back to the OS only as the runtime's scavenger gets
// to them): the median resists both, and the spread shows what is left.
func readMemory(ctx context.Context, p *peer, metricsURL string, churn func(context.Context) error) (reading, error) {
	var rs []memory
	for n := 0; n < 6; n++ {
		m, err := settledMemory(ctx, p, metricsURL, churn)
		if err != nil {
			return reading{}, err
		}
		rs = append(rs, m)
		if len(rs) < 3 {
			continue
		}
		rs = rs[len(rs)-3:]
		lo := min(rs[0].heap, rs[1].heap, rs[2].heap)
		hi := max(rs[0].heap, rs[1].heap, rs[2].heap)
		if hi-lo <= max(0.01*hi, 256<<10) {
			break
		}
	}
	stat := func(f func(memory) float64) (mid, spread float64) {
		v := []float64{f(rs[0]), f(rs[1]), f(rs[2])}
		slices.Sort(v)
		return v[1], v[2] - v[0]
	}
	var r reading
	r.mid.rss, r.spread.rss = stat(func(m memory) float64 { return m.rss })
	r.mid.heap, r.spread.heap = stat(func(m memory) float64 { return m.heap })
	r.mid.stack, r.spread.stack = stat(func(m memory) float64 { return m.stack })
	return r, nil
}

// settledMemory measures p after its garbage is gone. A Go heap between two
// collections holds dead objects too, so a raw heap figure depends on when
// it was read. This makes the server allocate (churn: requests it must
// answer) until it has collected garbage three more times: the first two
// under heavy churn from 4 goroutines, to clear what earlier work left; the
// last with one request at a time and a scrape after each, so that little is
// allocated between that collection and the reading. It then lets the
// background sweeper return the freed spans, and reads the heap and stacks
// from metricsURL and the RSS from /proc.
func settledMemory(ctx context.Context, p *peer, metricsURL string, churn func(context.Context) error) (memory, error) {
	const gcCount = "go_gc_duration_seconds_count"
	m, err := scrape(ctx, metricsURL)
	if err != nil {
		return memory{}, err
	}
	start := m[gcCount]
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	// Heavy churn until two collections have run.
	hctx, stopHeavy := context.WithCancel(cctx)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for hctx.Err() == nil {
				if err := churn(hctx); err != nil && hctx.Err() == nil {
					errs <- err
					stopHeavy()
				}
			}
		})
	}
	for err == nil && m[gcCount] < start+2 && hctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
		m, err = scrape(cctx, metricsURL)
	}
	stopHeavy()
	wg.Wait()
	// Light churn until the third.
	for err == nil && m[gcCount] < start+3 && cctx.Err() == nil && len(errs) == 0 {
		if err = churn(cctx); err == nil {
			m, err = scrape(cctx, metricsURL)
		}
	}
	switch {
	case ctx.Err() != nil:
		return memory{}, ctx.Err()
	case len(errs) > 0:
		return memory{}, fmt.Errorf("%s: churn for a settled heap: %w", p.name, <-errs)
	case err != nil && cctx.Err() == nil:
		return memory{}, fmt.Errorf("%s: churn for a settled heap: %w", p.name, err)
	case cctx.Err() != nil:
		fmt.Fprintf(os.Stderr, "%s: fewer than three garbage collections in 60s; memory read unsettled\n", p.name)
	}
	// Sweeping after a collection is lazy and in the background: until it
	// is done, heap_inuse still counts spans holding only dead objects.
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
		return memory{}, ctx.Err()
	}
	if m, err = scrape(ctx, metricsURL); err != nil {
		return memory{}, err
	}
	return memory{
		rss:   p.rssBytes(),
		heap:  m["go_memstats_heap_inuse_bytes"],
		stack: m["go_memstats_stack_inuse_bytes"],
	}, nil
}
