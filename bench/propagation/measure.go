package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/discotech/disco/agent"
	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/figure"
	"github.com/discotech/disco/bench/internal/sysstat"
	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/guard"
)

// service is the one service every change is made to.
const service = "bench"

// seeds is how many instances a source holds before the clock starts: the
// agent's first report lists them, and the in-place changes pick among them
// (and the instances added since).
const seeds = 10

// change is one change made in a source of truth: instance id of service
// bench gets address addr and port port. An addition makes a new instance;
// an update gives an instance the agent already has a new port.
type change struct {
	seq    int
	id     string
	addr   string
	port   int
	update bool
}

// key is how the change is recognized in the agent's table: an address and
// port no earlier change used.
func (c change) key() string { return net.JoinHostPort(c.addr, strconv.Itoa(c.port)) }

func (c change) kind() string {
	if c.update {
		return "update"
	}
	return "add"
}

// system is one source of truth under test, running.
type system interface {
	// spec is the agent's source spec for it.
	spec() string
	// apply makes c in the source of truth, and returns once it is made:
	// acknowledged by the server, or the file renamed into place.
	apply(ctx context.Context, c change) error
	// close stops what the system started. Its files go with the run's
	// directory.
	close()
}

// server is a system that serves a change some time after it is made
// (dnsmasq reads a new hosts file when inotify tells it): served waits
// until c is served and returns when it first saw it so, or false after a
// few seconds.
type server interface {
	served(ctx context.Context, c change) (time.Time, bool)
}

// peered is a system with a process of its own, whose CPU time it reads.
type peered interface {
	peerCPU() float64
}

// line is one measured configuration: a source of truth, how it is changed,
// and how the agent follows it.
type line struct {
	name   string // as printed
	source string // what -only selects
	start  func(ctx context.Context, tmp string) (system, error)
	// updates: every other change is an in-place change of an instance the
	// agent already has; otherwise every change is an addition.
	updates bool
	// port, when not 0, is the port every instance has (DNS SRV: the
	// record's).
	port int
	// spacing is the mean time between two changes (each gap is drawn
	// uniformly from half to one and a half of it).
	spacing time.Duration
	// refresh is the agent's --refresh (0: its default).
	refresh time.Duration
	// settle is how long to wait after the last change for the agent to
	// have every change; what it does not have by then is missed.
	settle time.Duration
	// bound is the target for p99 (0: none), and target says what it is.
	bound  time.Duration
	target string
	// note explains the line's figures.
	note string
}

// result is what one line measured.
type result struct {
	line    *line
	lat     map[string][]time.Duration // by kind: "all", "add", "update"
	missed  map[string]int
	errors  int
	notes   []string
	elapsed time.Duration
}

// recorder knows when each change was made and when the agent's table first
// had it.
type recorder struct {
	mu      sync.Mutex
	stamped map[string]time.Time // key → just before the change was made
	kinds   map[string]string    // key → add or update
	seen    map[string]time.Time // key → first in the agent's table
	pending int                  // stamped and not seen yet
	early   int                  // seen before the stamp (served-time stamps only)
	wake    chan struct{}        // a send when something is seen
}

func newRecorder() *recorder {
	return &recorder{stamped: map[string]time.Time{}, kinds: map[string]string{}, seen: map[string]time.Time{}, wake: make(chan struct{}, 1)}
}

// stamp records that the change with key k, of the kind given, is being
// made now.
func (r *recorder) stamp(k, kind string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.stamped[k]; !ok {
		if _, seen := r.seen[k]; !seen {
			r.pending++
		}
	}
	r.stamped[k], r.kinds[k] = at, kind
}

// restamp moves the start of change k to at: when it was served rather than
// when it was made.
func (r *recorder) restamp(k string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stamped[k] = at
}

// unstamp forgets a change that could not be made.
func (r *recorder) unstamp(k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.stamped[k]; ok {
		if _, seen := r.seen[k]; !seen {
			r.pending--
		}
		delete(r.stamped, k)
		delete(r.kinds, k)
	}
}

// sawTable records what a table version, published at about now, holds.
func (r *recorder) sawTable(ins []*catalog.Instance, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	news := false
	for _, in := range ins {
		k := net.JoinHostPort(in.Address, strconv.Itoa(in.Port))
		if _, ok := r.seen[k]; ok {
			continue
		}
		r.seen[k] = now
		if _, ok := r.stamped[k]; ok {
			r.pending--
		}
		news = true
	}
	if news {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// seenAt is when the table first had k.
func (r *recorder) seenAt(k string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.seen[k]
	return t, ok
}

func (r *recorder) isSeen(k string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.seen[k]
	return ok
}

// wait waits until every stamped change has been seen, or until timeout.
func (r *recorder) wait(ctx context.Context, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		done := r.pending == 0
		r.mu.Unlock()
		if done {
			return true
		}
		select {
		case <-r.wake:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// latencies returns each stamped change's latency by kind (and "all"), and
// how many of each were never seen.
func (r *recorder) latencies() (map[string][]time.Duration, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lat := map[string][]time.Duration{}
	missed := map[string]int{"all": 0, "add": 0, "update": 0}
	r.early = 0
	for k, t0 := range r.stamped {
		kind := r.kinds[k]
		t1, ok := r.seen[k]
		if !ok {
			missed["all"]++
			missed[kind]++
			continue
		}
		d := t1.Sub(t0)
		if d < 0 {
			r.early++
			d = 0
		}
		lat["all"] = append(lat["all"], d)
		lat[kind] = append(lat[kind], d)
	}
	return lat, missed
}

// observe records every version of the agent's table until ctx is done.
// The channel is taken before the table, so no version goes unseen.
func observe(ctx context.Context, g *guard.Guard, r *recorder) {
	for {
		ch := g.Changed()
		now := time.Now()
		if t := g.Table(); t != nil {
			r.sawTable(t.Services[service], now)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// address is the unique address of the seq-th instance: 10.1.0.1 onward.
func address(seq int) string {
	return fmt.Sprintf("10.%d.%d.%d", 1+(seq>>16)&0xff, (seq>>8)&0xff, seq&0xff)
}

// generator makes the changes of a line: additions, and (when the line has
// them) in-place changes of instances the agent has already shown.
type generator struct {
	l   *line
	rng *rand.Rand
	ids []string
	cur map[string]change // id → its latest change
	rec *recorder
}

func (g *generator) port(seq int) int {
	if g.l.port != 0 {
		return g.l.port
	}
	return 10000 + seq%50000
}

func (g *generator) add(seq int) change {
	c := change{seq: seq, id: "i" + strconv.Itoa(seq), addr: address(seq), port: g.port(seq)}
	g.ids = append(g.ids, c.id)
	g.cur[c.id] = c
	return c
}

// next is change seq: on odd seqs of a line with updates, a new port for an
// instance whose latest change the agent has shown (so that no change is
// overwritten before it could be seen); otherwise an addition.
func (g *generator) next(seq int) change {
	if g.l.updates && seq%2 == 1 {
		for range 20 {
			v := g.cur[g.ids[g.rng.IntN(len(g.ids))]]
			if g.rec.isSeen(v.key()) {
				c := change{seq: seq, id: v.id, addr: v.addr, port: g.port(seq), update: true}
				g.cur[c.id] = c
				return c
			}
		}
	}
	return g.add(seq)
}

// agentLog counts what the agent logs at warning level or above and keeps
// the first few of those messages, writing every record to a file.
type agentLog struct {
	mu    sync.Mutex
	warns int
	first []string
}

type countingHandler struct {
	slog.Handler
	log *agentLog
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.log.mu.Lock()
		h.log.warns++
		if len(h.log.first) < 3 {
			msg := r.Message
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "err" {
					msg += ": " + a.Value.String()
				}
				return true
			})
			h.log.first = append(h.log.first, msg)
		}
		h.log.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.log}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.log}
}

// measure runs one line: it starts the source of truth, puts the seeds in
// it, starts an agent following it, waits until the agent has the seeds,
// then makes the changes and times each until the agent's table has it.
func measure(ctx context.Context, cfg config, l *line, tmp string) (*result, error) {
	dir, err := os.MkdirTemp(tmp, "line-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cli.Progress("%s: starting", l.name)
	sys, err := l.start(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.name, err)
	}
	defer sys.close()

	rec := newRecorder()
	gen := &generator{l: l, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)), cur: map[string]change{}, rec: rec}
	var seedKeys []string
	for seq := 1; seq <= seeds; seq++ {
		c := gen.add(seq)
		if err := sys.apply(ctx, c); err != nil {
			return nil, fmt.Errorf("%s: seed %s: %w", l.name, c.id, err)
		}
		seedKeys = append(seedKeys, c.key())
	}
	if srv, ok := sys.(server); ok {
		for seq := 1; seq <= seeds; seq++ {
			if _, ok := srv.served(ctx, gen.cur["i"+strconv.Itoa(seq)]); !ok {
				return nil, fmt.Errorf("%s: seed i%d is not served", l.name, seq)
			}
		}
	}

	// The agent, in this process: one source, no DNS, its own state dir.
	logFile, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	alog := &agentLog{}
	acfg := agent.DefaultConfig()
	acfg.Sources = []string{sys.spec()}
	acfg.StateDir = filepath.Join(dir, "agent")
	acfg.HTTP = "127.0.0.1:0"
	acfg.DNS.Addr = ""
	if l.refresh != 0 {
		acfg.Refresh = l.refresh
	}
	acfg.Logger = slog.New(countingHandler{slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}), alog})
	a, err := agent.New(acfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.name, err)
	}
	ln, err := a.Listen()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.name, err)
	}
	actx, stopAgent := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopAgent()
		wg.Wait()
	}()
	wg.Go(func() { a.Serve(actx, ln) })
	wg.Go(func() { observe(actx, a.Guard(), rec) })

	// The agent has the seeds: it follows the source.
	for start := time.Now(); ; {
		all := true
		for _, k := range seedKeys {
			all = all && rec.isSeen(k)
		}
		if all {
			break
		}
		if time.Since(start) > 30*time.Second || ctx.Err() != nil {
			st := a.Status()
			why := ""
			if len(st.Sources) > 0 {
				why = st.Sources[0].Error
			}
			return nil, fmt.Errorf("%s: the agent does not have the %d seed instances after 30s (source error: %q; see the agent's log lines above)", l.name, seeds, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cli.Progress("%s: the agent has the %d seed instances; %d changes, %s apart on average", l.name, seeds, cfg.changes, l.spacing)

	res := &result{line: l}
	srv, isServer := sys.(server)
	var pickup []time.Duration // DNS: from the change made to it served
	var unserved int
	var writes []time.Duration     // how long each apply took
	acks := map[string]time.Time{} // key → when its apply returned
	peerCPU := func() float64 { return 0 }
	if p, ok := sys.(peered); ok {
		peerCPU = p.peerCPU
	}
	peer0, self0, all0 := peerCPU(), sysstat.SelfCPUSeconds(), sysstat.MachineBusySeconds()
	start := time.Now()
	next := start
	for seq := seeds + 1; seq <= seeds+cfg.changes; seq++ {
		select {
		case <-time.After(time.Until(next)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c := gen.next(seq)
		k := c.key()
		t0 := time.Now()
		rec.stamp(k, c.kind(), t0)
		err := sys.apply(ctx, c)
		ack := time.Now()
		writes = append(writes, ack.Sub(t0))
		acks[k] = ack
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			rec.unstamp(k)
			res.errors++
			if res.errors == 1 {
				res.notes = append(res.notes, fmt.Sprintf("change %d failed: %v", seq, err))
			}
		} else if isServer {
			if at, ok := srv.served(ctx, c); ok {
				rec.restamp(k, at)
				pickup = append(pickup, at.Sub(t0))
			} else {
				unserved++
			}
		}
		gap := time.Duration(float64(l.spacing) * (0.5 + gen.rng.Float64()))
		next = next.Add(gap)
	}
	if !rec.wait(ctx, l.settle) && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res.elapsed = time.Since(start)
	cpuPeer, cpuSelf := peerCPU()-peer0, sysstat.SelfCPUSeconds()-self0
	cpuOther := max(sysstat.MachineBusySeconds()-all0-cpuPeer-cpuSelf, 0)
	res.lat, res.missed = rec.latencies()

	st := a.Status()
	if len(st.Sources) > 0 {
		s := st.Sources[0]
		note := fmt.Sprintf("the agent's source reported %d updates and %d failures", s.Updates, s.Failures)
		if !s.Healthy {
			note += fmt.Sprintf("; it is unhealthy now: %s", s.Error)
		}
		res.notes = append(res.notes, note)
	}
	if w := percentiles(writes, 50, 99); !isServer {
		var after []time.Duration
		before := 0
		for k, ack := range acks {
			if t, ok := rec.seenAt(k); ok {
				if t.Before(ack) {
					before++
				}
				after = append(after, max(t.Sub(ack), 0))
			}
		}
		a := percentiles(after, 50, 99)
		note := fmt.Sprintf("making the change took %s (p50) and %s (p99), included above; from its acknowledgment to the agent's table: %s (p50), %s (p99)",
			figure.Micros(w[0]), figure.Micros(w[1]), figure.Micros(a[0]), figure.Micros(a[1]))
		if before > 0 {
			note += fmt.Sprintf(" (%d of %d were in the table before the acknowledgment reached the benchmark: counted as 0)", before, len(after))
		}
		res.notes = append(res.notes, note)
	}
	if len(pickup) > 0 {
		p := percentiles(pickup, 50, 99)
		res.notes = append(res.notes, fmt.Sprintf("latency counts from when dnsmasq first served the change (the benchmark asks it every millisecond after writing the file); dnsmasq took %s (p50) and %s (p99) to serve a new hosts file",
			figure.Micros(p[0]), figure.Micros(p[1])))
	}
	if unserved > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d changes were not seen served within 2s; their latency counts from the write", unserved))
	}
	if rec.early > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%d changes reached the agent before the benchmark saw dnsmasq serve them; counted as 0", rec.early))
	}
	cpu := fmt.Sprintf("CPU over the %s of changes: ", res.elapsed.Round(100*time.Millisecond))
	if _, ok := sys.(peered); ok {
		cpu += fmt.Sprintf("the peer %.1fs, ", cpuPeer)
	}
	cpu += fmt.Sprintf("the agent and the benchmark %.1fs, other processes %.1fs (of %.0fs the machine had)",
		cpuSelf, cpuOther, res.elapsed.Seconds()*float64(runtime.NumCPU()))
	res.notes = append(res.notes, cpu)
	alog.mu.Lock()
	if alog.warns > 0 {
		res.notes = append(res.notes, fmt.Sprintf("the agent logged %d warnings or errors, the first: %q", alog.warns, alog.first))
	}
	alog.mu.Unlock()
	return res, nil
}

// percentiles returns the exact p-th percentiles (nearest rank) of d, in
// nanoseconds; NaN when d is empty. It sorts d.
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
