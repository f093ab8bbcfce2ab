package health

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/discotech/disco/catalog"
)

// DefaultMaxConcurrent is how many checks a Runner runs at once when
// Config.MaxConcurrent is not set.
const DefaultMaxConcurrent = 256

// Config says what a Runner reports to and how hard it may work.
type Config struct {
	// OnChange is called with the key whenever that key's verdict changes. It
	// is a notification, not a value: call Verdict for the state, which may
	// already have moved on. It is called from runner goroutines, never while
	// holding the runner's lock, so it may call any Runner method. Seeding a
	// verdict with Set or Reset does not call it.
	OnChange func(key string)
	// OnResult, if set, is called after every run whose result counted (for
	// metrics) with the check type, the result's status (Critical for a
	// status that is not valid) and how long the run took. Runs cancelled
	// by Set, Remove, Reset or the end of Run are not reported: their
	// critical "context canceled" says nothing about the backend.
	OnResult func(typ string, status catalog.Status, took time.Duration)
	// MaxConcurrent bounds the checks running at once; 0 or less means
	// DefaultMaxConcurrent. When every slot is taken, due checks wait in
	// schedule order.
	MaxConcurrent int
}

// Entry is one check handed to Reset.
type Entry struct {
	// Key names the instance, as catalog.Key does.
	Key   string
	Check catalog.Check
	// Verdict is the status the registry currently has for the instance.
	Verdict catalog.Status
}

// Runner schedules the checks of many instances and keeps each one's
// verdict.
//
// Checks are added with Set or Reset, keyed by instance, and run while Run
// runs. A check runs every Interval after its previous run started (so a
// dead backend costs one Timeout per Interval), never two runs of one key at
// once, at most MaxConcurrent runs in all. Each result moves the key's
// consecutive success and failure counters; when one reaches the check's
// threshold and the verdict differs, the verdict changes and OnChange is
// called.
//
// Zero fields of a catalog.Check get the catalog defaults (10s interval, 5s
// timeout, 3 failures, 1 success); an interval below
// catalog.MinCheckInterval is raised to it and a timeout longer than the
// interval is cut to it, so a bad spec cannot spin the leader.
//
// A Runner's methods are safe for concurrent use.
type Runner struct {
	onChange func(key string)
	onResult func(typ string, status catalog.Status, took time.Duration)
	sem      chan struct{} // a slot per running check
	wake     chan struct{} // tells Run the queue's head moved earlier

	mu     sync.Mutex
	checks map[string]*check // live checks, and removed ones still running
	queue  queue             // live checks that are not running, soonest first
	live   int               // live entries of checks
}

// NewRunner returns a Runner with no checks. Nothing runs until Run is
// called.
func NewRunner(cfg Config) *Runner {
	n := cfg.MaxConcurrent
	if n <= 0 {
		n = DefaultMaxConcurrent
	}
	return &Runner{
		onChange: cfg.OnChange,
		onResult: cfg.OnResult,
		sem:      make(chan struct{}, n),
		wake:     make(chan struct{}, 1),
		checks:   make(map[string]*check),
	}
}

// spec is what makes a check the same check: the fields of catalog.Check
// that change how it runs, with defaults applied. DeregisterAfter is not
// one of them; the registry acts on it.
type spec struct {
	typ, target         string
	interval, timeout   time.Duration
	failures, successes int
}

func specOf(ck catalog.Check) spec {
	s := spec{
		typ:       ck.Type,
		target:    ck.Target,
		interval:  ck.Interval.D(),
		timeout:   ck.Timeout.D(),
		failures:  ck.Failures,
		successes: ck.Successes,
	}
	if s.interval <= 0 {
		s.interval = catalog.DefaultCheckInterval
	}
	s.interval = max(s.interval, catalog.MinCheckInterval)
	if s.timeout <= 0 {
		s.timeout = catalog.DefaultCheckTimeout
	}
	s.timeout = min(s.timeout, s.interval)
	if s.failures <= 0 {
		s.failures = catalog.DefaultCheckFailures
	}
	if s.successes <= 0 {
		s.successes = catalog.DefaultCheckSuccesses
	}
	return s
}

// check is one key's check and verdict. All fields are guarded by Runner.mu.
type check struct {
	key     string
	spec    spec
	checker Checker // nil when no Checker is registered for spec.typ

	// gen counts restarts (Set with a new spec, Remove, Reset). A run
	// delivers its result only if gen has not moved since it started.
	gen  uint64
	live bool // false once removed; the check stays in Runner.checks until its run ends

	next    time.Time          // when the next run is due
	index   int                // in Runner.queue; -1 when not queued
	running bool               // a run is in flight (and the check is not queued)
	cancel  context.CancelFunc // cancels the run in flight

	state
}

// state is what the results of one generation of a check add up to.
type state struct {
	verdict             catalog.Status
	output              string // of the result that set verdict
	successes, failures int    // consecutive, capped at the thresholds

	lastStatus catalog.Status // of the latest result
	lastOutput string
	lastAt     time.Time

	vitals   *catalog.Vitals // from the latest vitals result that parsed
	vitalsAt time.Time
}

// apply counts res, which arrived at now, and reports whether the verdict
// changed.
func (st *state) apply(s spec, res Result, now time.Time) bool {
	status := counted(res.Status)
	out := clip(res.Output)
	st.lastStatus, st.lastOutput, st.lastAt = status, out, now
	if res.Vitals != nil {
		st.vitals, st.vitalsAt = res.Vitals, now
	}
	if status == catalog.Critical {
		st.successes = 0
		st.failures = min(st.failures+1, s.failures)
		if st.failures < s.failures || st.verdict == catalog.Critical {
			return false
		}
	} else {
		st.failures = 0
		st.successes = min(st.successes+1, s.successes)
		if st.successes < s.successes || st.verdict == status {
			return false
		}
	}
	st.verdict, st.output = status, out
	return true
}

// counted returns the status a result with status s counts as: anything but
// Passing and Warning is Critical.
func counted(s catalog.Status) catalog.Status {
	if s == catalog.Passing || s == catalog.Warning {
		return s
	}
	return catalog.Critical
}

// Set adds or updates the check for key.
//
// When the check is new, or its spec (type, target, interval, timeout,
// failures, successes, after defaults) changed, the verdict is seeded with
// verdict, the status the registry currently has for the instance; the
// counters start from zero; a run of the old spec in flight is cancelled and
// its result dropped; and the first run is due at once (after the cancelled
// run has ended, so runs of one key never overlap). A verdict that is not a
// valid status (such as "") means unknown: the first threshold reached sets
// it.
//
// When the spec is unchanged, Set does nothing: the schedule, the counters
// and the verdict stay as they are, and verdict is ignored.
func (r *Runner) Set(key string, ck catalog.Check, verdict catalog.Status) {
	s := specOf(ck)
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.checks[key]
	if c != nil && c.live && c.spec == s {
		return
	}
	r.start(key, c, s, verdict, time.Now())
}

// Remove stops key's check and forgets its verdict. A run in flight is
// cancelled and its result dropped.
func (r *Runner) Remove(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.checks[key]; c != nil && c.live {
		r.drop(c)
	}
}

// Reset replaces every check with checks, as a new leader does when it loads
// them all. Each check starts afresh as with Set (counters at zero, verdict
// seeded from the Entry), but its first run is due at a uniformly random time
// in [0, Interval), so that a leader change is not a thundering herd. When a
// key appears twice, the last Entry wins. Reset(nil) stops everything.
func (r *Runner) Reset(checks []Entry) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.queue {
		c.index = -1
	}
	clear(r.queue)
	r.queue = r.queue[:0]
	for _, c := range r.checks {
		if c.live {
			r.drop(c)
		}
	}
	for _, e := range checks {
		s := specOf(e.Check)
		r.start(e.Key, r.checks[e.Key], s, e.Verdict, now.Add(rand.N(s.interval)))
	}
}

// Verdict returns key's current verdict and the output of the result that
// set it, which is what the registry replicates. Later results that did not
// change the verdict do not change this output; Last returns the latest. A
// seeded verdict has an empty output until a result changes it. ok is false
// when key has no check.
func (r *Runner) Verdict(key string) (status catalog.Status, output string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.checks[key]
	if c == nil || !c.live {
		return "", "", false
	}
	return c.verdict, c.output, true
}

// Last returns the status and output of key's latest result and when it
// arrived, whether or not it changed the verdict: while an instance counts
// towards a threshold, or stays critical for a new reason, this is where to
// see why. ok is false when key has no check or no result since its spec
// last changed.
func (r *Runner) Last(key string) (status catalog.Status, output string, at time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.checks[key]
	if c == nil || !c.live || c.lastAt.IsZero() {
		return "", "", time.Time{}, false
	}
	return c.lastStatus, c.lastOutput, c.lastAt, true
}

// Vitals returns a copy of the figures from key's latest vitals result that
// parsed (ready or not), and when they arrived. Results that did not parse
// leave them as they were. ok is false when key has no check or no such
// result since its spec last changed.
func (r *Runner) Vitals(key string) (v *catalog.Vitals, at time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.checks[key]
	if c == nil || !c.live || c.vitals == nil {
		return nil, time.Time{}, false
	}
	cp := *c.vitals
	return &cp, c.vitalsAt, true
}

// Len returns how many checks the Runner has.
func (r *Runner) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live
}

// Run runs the checks as they fall due until ctx is done. Then it cancels
// the runs in flight, drops their results, and returns once they have
// ended. The checks and verdicts stay: a later Run carries on from them.
// Run must not be called again before it returns.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		wait, queued := r.untilNext()
		switch {
		case !queued:
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			}
			continue
		case wait > 0:
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
				timer.Stop()
			case <-timer.C:
			}
			continue
		}
		// Something is due: wait for a slot. A wake means the queue changed
		// (the due check may be gone), so look again.
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			continue
		case r.sem <- struct{}{}:
		}
		j, ok := r.pop(ctx)
		if !ok {
			<-r.sem
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, j)
		}()
	}
}

// untilNext returns how long until the queue's head is due.
func (r *Runner) untilNext() (wait time.Duration, queued bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return 0, false
	}
	return time.Until(r.queue[0].next), true
}

// job is one run of a check: what the run goroutine needs, copied so that it
// reads nothing guarded by the lock.
type job struct {
	c       *check
	gen     uint64
	typ     string
	target  string
	checker Checker
	ctx     context.Context // carries the check's Timeout
	cancel  context.CancelFunc
}

// pop takes the queue's head if it is due, marks it running and schedules
// its next run an Interval from now.
func (r *Runner) pop(runCtx context.Context) (job, bool) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 || r.queue[0].next.After(now) {
		return job{}, false
	}
	c := heap.Pop(&r.queue).(*check)
	c.running = true
	c.next = now.Add(c.spec.interval)
	ctx, cancel := context.WithTimeout(runCtx, c.spec.timeout)
	c.cancel = cancel
	return job{c: c, gen: c.gen, typ: c.spec.typ, target: c.spec.target, checker: c.checker, ctx: ctx, cancel: cancel}, true
}

// run runs j, frees its slot and delivers the result.
func (r *Runner) run(runCtx context.Context, j job) {
	start := time.Now()
	var res Result
	if j.checker == nil {
		res = Result{Status: catalog.Critical, Output: fmt.Sprintf("health: unknown check type %q", j.typ)}
	} else {
		res = j.checker.Check(j.ctx, j.target)
	}
	took := time.Since(start)
	j.cancel()
	<-r.sem

	r.mu.Lock()
	c := j.c
	c.running, c.cancel = false, nil
	if !c.live {
		delete(r.checks, c.key)
		r.mu.Unlock()
		return
	}
	r.schedule(c)
	if c.gen != j.gen || runCtx.Err() != nil {
		r.mu.Unlock()
		return
	}
	changed := c.apply(c.spec, res, time.Now())
	r.mu.Unlock()

	if r.onResult != nil {
		r.onResult(j.typ, counted(res.Status), took)
	}
	if changed && r.onChange != nil {
		r.onChange(c.key)
	}
}

// start (re)starts key's check c (nil if key has none) with spec s, verdict
// seeded, first run due at at. The caller holds r.mu.
func (r *Runner) start(key string, c *check, s spec, verdict catalog.Status, at time.Time) {
	if c == nil {
		c = &check{key: key, index: -1}
		r.checks[key] = c
	}
	if !c.live {
		c.live = true
		r.live++
	}
	c.gen++
	if c.cancel != nil {
		c.cancel()
	}
	c.spec = s
	c.checker, _ = Lookup(s.typ)
	c.state = state{verdict: verdict}
	c.next = at
	r.schedule(c)
}

// drop removes c. A running c stays in r.checks, not live, until its run
// ends, so that a Set of the same key meanwhile waits for it. The caller
// holds r.mu.
func (r *Runner) drop(c *check) {
	c.live = false
	r.live--
	c.gen++
	if c.index >= 0 {
		heap.Remove(&r.queue, c.index)
	}
	if c.running {
		c.cancel()
		return
	}
	delete(r.checks, c.key)
}

// schedule queues c for c.next, or moves it there, and wakes Run if c is now
// first. A running c is queued when its run ends. The caller holds r.mu.
func (r *Runner) schedule(c *check) {
	if c.running {
		return
	}
	if c.index >= 0 {
		heap.Fix(&r.queue, c.index)
	} else {
		heap.Push(&r.queue, c)
	}
	if c.index == 0 {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// queue is a min-heap of checks by next run time (container/heap).
type queue []*check

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].next.Before(q[j].next) }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}

func (q *queue) Push(x any) {
	c := x.(*check)
	c.index = len(*q)
	*q = append(*q, c)
}

func (q *queue) Pop() any {
	old := *q
	n := len(old) - 1
	c := old[n]
	old[n] = nil
	c.index = -1
	*q = old[:n]
	return c
}

var _ heap.Interface = (*queue)(nil)
