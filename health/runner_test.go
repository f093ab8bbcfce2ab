package health

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/google/go-cmp/cmp"
)

// fakeType is the check type of fakeChecker, registered for tests only.
const fakeType = "test-fake"

// fakeChecker is a Checker for tests only, never for production: each
// target names a scripted backend.
type fakeChecker struct {
	mu       sync.Mutex
	backends map[string]*backend
}

var fakes = &fakeChecker{backends: make(map[string]*backend)}

func init() { Register(fakeType, fakes) }

func (f *fakeChecker) Check(ctx context.Context, target string) Result {
	f.mu.Lock()
	b := f.backends[target]
	f.mu.Unlock()
	if b == nil {
		return Result{Status: catalog.Critical, Output: "no fake backend " + target}
	}
	return b.check(ctx)
}

var backendSeq atomic.Int64

// backend answers the fake checker's runs against one target. Its clock is
// the bubble's.
type backend struct {
	target string
	epoch  time.Time

	mu                sync.Mutex
	script            []catalog.Status // statuses of the next runs; the last one repeats
	vitals            *catalog.Vitals  // sent with every result
	delay             time.Duration    // how long a run takes
	hang              bool             // a run lasts until its context ends
	runs              []fakeRun
	active, maxActive int
}

// fakeRun is what a backend saw of one run.
type fakeRun struct {
	Start  time.Duration // since the backend's epoch
	Budget time.Duration // from start to the context's deadline
	Err    error         // the context's error if it ended the run
}

// newBackend returns a backend that answers passing until told otherwise.
func newBackend(t *testing.T) *backend {
	b := &backend{
		target: fmt.Sprintf("%s#%d", t.Name(), backendSeq.Add(1)),
		epoch:  time.Now(),
		script: []catalog.Status{catalog.Passing},
	}
	fakes.mu.Lock()
	fakes.backends[b.target] = b
	fakes.mu.Unlock()
	t.Cleanup(func() {
		fakes.mu.Lock()
		delete(fakes.backends, b.target)
		fakes.mu.Unlock()
	})
	return b
}

func (b *backend) check(ctx context.Context) Result {
	now := time.Now()
	b.mu.Lock()
	status := b.script[0]
	if len(b.script) > 1 {
		b.script = b.script[1:]
	}
	run := fakeRun{Start: now.Sub(b.epoch)}
	if dl, ok := ctx.Deadline(); ok {
		run.Budget = dl.Sub(now)
	}
	b.runs = append(b.runs, run)
	n := len(b.runs)
	b.active++
	b.maxActive = max(b.maxActive, b.active)
	delay, hang, vitals := b.delay, b.hang, b.vitals
	b.mu.Unlock()

	defer func() {
		b.mu.Lock()
		b.active--
		b.mu.Unlock()
	}()
	if hang || delay > 0 {
		var done <-chan time.Time
		if !hang {
			done = time.After(delay)
		}
		select {
		case <-done:
		case <-ctx.Done():
			b.mu.Lock()
			b.runs[n-1].Err = ctx.Err()
			b.mu.Unlock()
			return Result{Status: catalog.Critical, Output: fmt.Sprintf("run %d: %v", n, ctx.Err())}
		}
	}
	return Result{Status: status, Output: fmt.Sprintf("run %d: %s", n, status), Vitals: vitals}
}

// answer scripts the statuses of the next runs; the last one repeats.
func (b *backend) answer(s ...catalog.Status) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.script = s
}

func (b *backend) setHang(hang bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hang = hang
}

func (b *backend) setDelay(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delay = d
}

func (b *backend) setVitals(v *catalog.Vitals) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.vitals = v
}

func (b *backend) seen() []fakeRun {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]fakeRun(nil), b.runs...)
}

func (b *backend) starts() []time.Duration {
	var s []time.Duration
	for _, r := range b.seen() {
		s = append(s, r.Start)
	}
	return s
}

func (b *backend) maxOverlap() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.maxActive
}

// check returns the spec of a check against b: every 10s, 2s timeout, 3
// failures, 1 success.
func (b *backend) spec() catalog.Check {
	return catalog.Check{
		Type:      fakeType,
		Target:    b.target,
		Interval:  catalog.Duration(10 * time.Second),
		Timeout:   catalog.Duration(2 * time.Second),
		Failures:  3,
		Successes: 1,
	}
}

// harness runs a Runner inside a synctest bubble and records what it
// reports.
type harness struct {
	r     *Runner
	epoch time.Time

	mu      sync.Mutex
	changes []change
	results []reported

	stop context.CancelFunc
	done chan struct{}
}

// change is one OnChange call, with what Verdict said during it.
type change struct {
	Key    string
	Status catalog.Status
	Output string
	At     time.Duration
}

// reported is one OnResult call.
type reported struct {
	Typ    string
	Status catalog.Status
	Took   time.Duration
}

// newHarness starts a Runner; it must be called inside the bubble.
func newHarness(t *testing.T, maxConcurrent int) *harness {
	h := &harness{epoch: time.Now()}
	h.r = NewRunner(Config{
		OnChange: func(key string) {
			// Calling back into the Runner must not deadlock.
			status, output, ok := h.r.Verdict(key)
			if !ok {
				t.Errorf("OnChange(%q) for a key without a check", key)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			h.changes = append(h.changes, change{key, status, output, time.Since(h.epoch)})
		},
		OnResult: func(typ string, status catalog.Status, took time.Duration) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.results = append(h.results, reported{typ, status, took})
		},
		MaxConcurrent: maxConcurrent,
	})
	h.start()
	t.Cleanup(h.halt)
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		h.r.Run(ctx)
	}()
}

func (h *harness) halt() {
	h.stop()
	<-h.done
}

func (h *harness) changed() []change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]change(nil), h.changes...)
}

func (h *harness) reports() []reported {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]reported(nil), h.results...)
}

func (h *harness) verdict(t *testing.T, key string) catalog.Status {
	t.Helper()
	s, _, ok := h.r.Verdict(key)
	if !ok {
		t.Fatalf("Verdict(%q): no check", key)
	}
	return s
}

// advance lets virtual time pass by d, then lets every goroutine finish
// what that time brought.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func secs(s ...float64) []time.Duration {
	d := make([]time.Duration, len(s))
	for i, x := range s {
		d[i] = time.Duration(x * float64(time.Second))
	}
	return d
}

const (
	P = catalog.Passing
	W = catalog.Warning
	C = catalog.Critical
)

func TestRunnerThresholds(t *testing.T) {
	tests := []struct {
		name                string
		failures, successes int
		seed                catalog.Status
		script              []catalog.Status // one result a run
		want                []catalog.Status // verdict after each run
	}{
		{"3 failures make critical, 2 do not", 3, 1, P, []catalog.Status{C, C, C, C}, []catalog.Status{P, P, C, C}},
		{"a success restarts the count", 3, 1, P, []catalog.Status{C, C, P, C, C, C}, []catalog.Status{P, P, P, P, P, C}},
		{"a warning restarts the count", 3, 1, P, []catalog.Status{C, C, W, C, C}, []catalog.Status{P, P, W, W, W}},
		{"1 failure", 1, 1, P, []catalog.Status{C}, []catalog.Status{C}},
		{"1 success", 3, 1, C, []catalog.Status{P}, []catalog.Status{P}},
		{"2 successes need 2", 3, 2, C, []catalog.Status{P, P}, []catalog.Status{C, P}},
		{"a failure restarts the success count", 3, 2, C, []catalog.Status{P, C, P, P}, []catalog.Status{C, C, C, P}},
		{"429 warns", 3, 1, P, []catalog.Status{W, W, P}, []catalog.Status{W, W, P}},
		{"warning and passing both count as successes", 3, 2, C, []catalog.Status{W, P}, []catalog.Status{C, P}},
		{"warning needs the success threshold too", 3, 2, P, []catalog.Status{W, W}, []catalog.Status{P, W}},
		{"no seed: first threshold sets it", 2, 1, "", []catalog.Status{C, C}, []catalog.Status{"", C}},
		{"an invalid status counts as critical", 1, 1, P, []catalog.Status{"bogus"}, []catalog.Status{C}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, 0)
				b := newBackend(t)
				b.answer(tt.script...)
				ck := b.spec()
				ck.Failures, ck.Successes = tt.failures, tt.successes
				h.r.Set("svc/a", ck, tt.seed)

				var got []catalog.Status
				for i := range tt.script {
					if i > 0 {
						time.Sleep(10 * time.Second)
					}
					synctest.Wait()
					got = append(got, h.verdict(t, "svc/a"))
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("verdicts after each run (-want +got):\n%s", diff)
				}

				var want []change
				prev := tt.seed
				for i, s := range tt.want {
					if s != prev {
						out := fmt.Sprintf("run %d: %s", i+1, tt.script[i])
						want = append(want, change{"svc/a", s, out, time.Duration(i) * 10 * time.Second})
						prev = s
					}
				}
				if diff := cmp.Diff(want, h.changed()); diff != "" {
					t.Errorf("OnChange calls (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// TestRunnerLast checks that Verdict keeps the output that set the verdict
// while Last follows every result.
func TestRunnerLast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		b := newBackend(t)
		b.answer(C, C, C, C, P)
		h.r.Set("svc/a", b.spec(), P)
		if _, _, _, ok := h.r.Last("svc/a"); ok {
			t.Error("Last before any run: ok")
		}
		advance(25 * time.Second) // runs 1-3

		type seen struct {
			Status catalog.Status
			Output string
			At     time.Duration
		}
		last := func() seen {
			s, out, at, ok := h.r.Last("svc/a")
			if !ok {
				t.Fatal("Last: no result")
			}
			return seen{s, out, at.Sub(h.epoch)}
		}
		verdict := func() seen {
			s, out, _ := h.r.Verdict("svc/a")
			return seen{Status: s, Output: out}
		}
		if diff := cmp.Diff(seen{C, "run 3: critical", 0}, verdict()); diff != "" {
			t.Errorf("Verdict after run 3 (-want +got):\n%s", diff)
		}
		advance(10 * time.Second) // run 4, still critical
		if diff := cmp.Diff(seen{C, "run 3: critical", 0}, verdict()); diff != "" {
			t.Errorf("Verdict after run 4 (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(seen{C, "run 4: critical", 30 * time.Second}, last()); diff != "" {
			t.Errorf("Last after run 4 (-want +got):\n%s", diff)
		}
	})
}

func TestRunnerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		up, slow, dead := newBackend(t), newBackend(t), newBackend(t)
		slow.setDelay(1500 * time.Millisecond)
		dead.setHang(true)
		for _, b := range []*backend{up, slow, dead} {
			h.r.Set(b.target, b.spec(), P)
		}
		advance(35 * time.Second)

		// Runs are an Interval apart from start to start, however long
		// they take; every run gets the Timeout.
		for _, b := range []*backend{up, slow, dead} {
			want := []fakeRun{{0, 2 * time.Second, nil}, {10 * time.Second, 2 * time.Second, nil}, {20 * time.Second, 2 * time.Second, nil}, {30 * time.Second, 2 * time.Second, nil}}
			if b == dead {
				for i := range want {
					want[i].Err = context.DeadlineExceeded
				}
			}
			if diff := cmp.Diff(want, b.seen(), cmp.Comparer(func(a, b error) bool { return a == b })); diff != "" {
				t.Errorf("%s: runs (-want +got):\n%s", b.target, diff)
			}
		}
		took := map[time.Duration]int{}
		for _, r := range h.reports() {
			took[r.Took]++
		}
		if diff := cmp.Diff(map[time.Duration]int{0: 4, 1500 * time.Millisecond: 4, 2 * time.Second: 4}, took); diff != "" {
			t.Errorf("OnResult run durations (-want +got):\n%s", diff)
		}
		if got := h.verdict(t, dead.target); got != C {
			t.Errorf("dead backend's verdict = %s, want critical", got)
		}
	})
}

func TestRunnerDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		zero, fast, long := newBackend(t), newBackend(t), newBackend(t)
		h.r.Set("zero", catalog.Check{Type: fakeType, Target: zero.target}, P)
		h.r.Set("fast", catalog.Check{Type: fakeType, Target: fast.target, Interval: catalog.Duration(time.Millisecond)}, P)
		h.r.Set("long", catalog.Check{Type: fakeType, Target: long.target,
			Interval: catalog.Duration(time.Second), Timeout: catalog.Duration(time.Minute)}, P)
		advance(time.Second + 50*time.Millisecond)

		tests := []struct {
			b      *backend
			runs   int
			budget time.Duration
		}{
			{zero, 1, catalog.DefaultCheckTimeout}, // every 10s
			{fast, 11, catalog.MinCheckInterval},   // every 100ms, timeout cut to it
			{long, 2, time.Second},                 // timeout cut to the interval
		}
		for _, tt := range tests {
			runs := tt.b.seen()
			if len(runs) != tt.runs || runs[0].Budget != tt.budget {
				t.Errorf("%s: %d runs, first with %v; want %d with %v", tt.b.target, len(runs), runs[0].Budget, tt.runs, tt.budget)
			}
		}
	})
}

func TestRunnerSetUnchangedKeepsSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		b := newBackend(t)
		b.answer(C)
		h.r.Set("svc/a", b.spec(), P)
		advance(4 * time.Second) // run 1 at 0s: 1 failure

		// Same spec (DeregisterAfter is not part of it), another seed:
		// neither restarts the check nor replaces the verdict.
		ck := b.spec()
		ck.DeregisterAfter = catalog.Duration(time.Hour)
		h.r.Set("svc/a", ck, C)
		if got := h.verdict(t, "svc/a"); got != P {
			t.Errorf("verdict after Set with the same spec = %s, want passing (kept)", got)
		}
		advance(17 * time.Second) // runs 2 and 3 at 10s and 20s
		if diff := cmp.Diff(secs(0, 10, 20), b.starts()); diff != "" {
			t.Errorf("run starts (-want +got):\n%s", diff)
		}
		want := []change{{"svc/a", C, "run 3: critical", 20 * time.Second}}
		if diff := cmp.Diff(want, h.changed()); diff != "" {
			t.Errorf("OnChange calls (-want +got):\n%s", diff)
		}
	})
}

func TestRunnerSetChangedRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		b := newBackend(t)
		b.answer(C)
		h.r.Set("svc/a", b.spec(), P)
		advance(15 * time.Second) // runs at 0s and 10s: 2 failures

		ck := b.spec()
		ck.Timeout = catalog.Duration(3 * time.Second)
		h.r.Set("svc/a", ck, W)
		if got := h.verdict(t, "svc/a"); got != W {
			t.Errorf("verdict right after Set with a new spec = %s, want the seed, warning", got)
		}
		advance(20 * time.Second) // runs at 15s (at once), 25s, 35s: the count starts over
		if diff := cmp.Diff(secs(0, 10, 15, 25, 35), b.starts()); diff != "" {
			t.Errorf("run starts (-want +got):\n%s", diff)
		}
		want := []change{{"svc/a", C, "run 5: critical", 35 * time.Second}}
		if diff := cmp.Diff(want, h.changed()); diff != "" {
			t.Errorf("OnChange calls (-want +got):\n%s", diff)
		}
	})
}

// TestRunnerSetChangedWhileRunning checks that a new spec cancels the run in
// flight, drops its result, and starts the next run only after it ended.
func TestRunnerSetChangedWhileRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		b := newBackend(t)
		b.setHang(true)
		ck := b.spec()
		ck.Failures = 1
		h.r.Set("svc/a", ck, P)
		advance(time.Second) // run 1 hangs

		b.setHang(false)
		ck.Interval = catalog.Duration(20 * time.Second)
		h.r.Set("svc/a", ck, P)
		synctest.Wait()

		runs := b.seen()
		if len(runs) != 2 || runs[0].Err != context.Canceled || runs[1].Start != time.Second {
			t.Errorf("runs = %+v; want run 1 cancelled and run 2 at 1s", runs)
		}
		if n := b.maxOverlap(); n != 1 {
			t.Errorf("%d runs of one key at once, want 1", n)
		}
		if got := h.changed(); len(got) != 0 {
			t.Errorf("OnChange calls = %+v, want none (the cancelled run's critical is stale)", got)
		}
		if diff := cmp.Diff([]reported{{fakeType, P, 0}}, h.reports()); diff != "" {
			t.Errorf("OnResult calls (-want +got):\n%s", diff)
		}
	})
}

func TestRunnerRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		idle, busy := newBackend(t), newBackend(t)
		idle.answer(C)
		busy.answer(C)
		busy.setHang(true)
		for _, b := range []*backend{idle, busy} {
			ck := b.spec()
			ck.Failures = 1
			ck.Timeout = catalog.Duration(5 * time.Second)
			h.r.Set(b.target, ck, P)
		}
		advance(time.Second) // idle ran and turned critical; busy hangs
		if got := h.r.Len(); got != 2 {
			t.Errorf("Len = %d, want 2", got)
		}
		h.r.Remove(idle.target)
		h.r.Remove(busy.target)
		h.r.Remove("never-set")
		if got := h.r.Len(); got != 0 {
			t.Errorf("Len after Remove = %d, want 0", got)
		}
		if _, _, ok := h.r.Verdict(busy.target); ok {
			t.Error("Verdict of a removed key: ok")
		}
		advance(time.Minute)

		if diff := cmp.Diff(secs(0), idle.starts()); diff != "" {
			t.Errorf("idle run starts (-want +got):\n%s", diff)
		}
		if runs := busy.seen(); len(runs) != 1 || runs[0].Err != context.Canceled {
			t.Errorf("busy runs = %+v, want one, cancelled", runs)
		}
		want := []change{{idle.target, C, "run 1: critical", 0}}
		if diff := cmp.Diff(want, h.changed()); diff != "" {
			t.Errorf("OnChange calls (-want +got):\n%s", diff)
		}
	})
}

// TestRunnerRemoveThenSet checks that a key removed and set again while its
// run is in flight waits for that run and never sees its result.
func TestRunnerRemoveThenSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		b := newBackend(t)
		b.setHang(true)
		b.answer(C)
		ck := b.spec()
		ck.Failures = 1
		h.r.Set("svc/a", ck, P)
		advance(time.Second)

		b.setHang(false)
		b.answer(P)
		h.r.Remove("svc/a")
		h.r.Set("svc/a", ck, W)
		synctest.Wait()

		if n := b.maxOverlap(); n != 1 {
			t.Errorf("%d runs of one key at once, want 1", n)
		}
		if diff := cmp.Diff(secs(0, 1), b.starts()); diff != "" {
			t.Errorf("run starts (-want +got):\n%s", diff)
		}
		want := []change{{"svc/a", P, "run 2: passing", time.Second}}
		if diff := cmp.Diff(want, h.changed()); diff != "" {
			t.Errorf("OnChange calls (-want +got):\n%s", diff)
		}
		if got := h.r.Len(); got != 1 {
			t.Errorf("Len = %d, want 1", got)
		}
	})
}

func TestRunnerReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		old := newBackend(t)
		h.r.Set("old", old.spec(), P)
		synctest.Wait()

		const n = 1000
		backends := make([]*backend, n)
		entries := make([]Entry, n)
		for i := range backends {
			backends[i] = newBackend(t)
			entries[i] = Entry{Key: fmt.Sprintf("svc/%d", i), Check: backends[i].spec(), Verdict: C}
		}
		entries = append(entries, entries[0]) // a repeated key counts once
		h.r.Reset(entries)
		if got := h.r.Len(); got != n {
			t.Errorf("Len after Reset = %d, want %d", got, n)
		}
		if _, _, ok := h.r.Verdict("old"); ok {
			t.Error("a check left out of Reset is still there")
		}
		if got := h.verdict(t, "svc/7"); got != C {
			t.Errorf("seeded verdict = %s, want critical", got)
		}

		// Every check runs once in the first interval, the first runs
		// spread over all of it.
		advance(10*time.Second - time.Nanosecond)
		var perSecond [10]int
		for _, b := range backends {
			starts := b.starts()
			if len(starts) != 1 || starts[0] < 0 || starts[0] >= 10*time.Second {
				t.Fatalf("%s: runs at %v, want one in [0s, 10s)", b.target, starts)
			}
			perSecond[starts[0]/time.Second]++
		}
		for s, k := range perSecond {
			// 100 expected; a count outside [40, 160] has odds below 1e-9.
			if k < 40 || k > 160 {
				t.Errorf("%d first runs in second %d, want about %d (all: %v)", k, s, n/10, perSecond)
			}
		}
		if diff := cmp.Diff(secs(0), old.starts()); diff != "" {
			t.Errorf("old check's run starts (-want +got):\n%s", diff)
		}
		if got := len(h.changed()); got != n {
			t.Errorf("%d OnChange calls, want %d (critical to passing each)", got, n)
		}

		h.r.Reset(nil)
		if got := h.r.Len(); got != 0 {
			t.Errorf("Len after Reset(nil) = %d, want 0", got)
		}
		advance(time.Minute)
		for _, b := range backends {
			if got := len(b.starts()); got != 1 {
				t.Fatalf("%s ran %d times after Reset(nil) stopped it, want 1 in all", b.target, got)
			}
		}
	})
}

// TestRunnerStop checks that when Run's context ends, the runs in flight are
// cancelled, their results dropped, Run returns after them, and a later Run
// carries on from the same schedule and verdicts.
func TestRunnerStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		bs := []*backend{newBackend(t), newBackend(t), newBackend(t)}
		for _, b := range bs {
			b.setHang(true)
			ck := b.spec()
			ck.Failures = 1
			h.r.Set(b.target, ck, P)
		}
		advance(time.Second)

		h.stop()
		synctest.Wait()
		select {
		case <-h.done:
		default:
			t.Fatal("Run has not returned")
		}
		for _, b := range bs {
			if runs := b.seen(); len(runs) != 1 || runs[0].Err != context.Canceled {
				t.Errorf("%s: runs = %+v, want one, cancelled", b.target, runs)
			}
			if got := h.verdict(t, b.target); got != P {
				t.Errorf("%s: verdict = %s, want passing (the cancelled run does not count)", b.target, got)
			}
		}
		if got, res := h.changed(), h.reports(); len(got) != 0 || len(res) != 0 {
			t.Errorf("OnChange calls %+v, OnResult calls %+v; want none", got, res)
		}

		for _, b := range bs {
			b.setHang(false)
		}
		h.start()
		advance(10 * time.Second)
		for _, b := range bs {
			if diff := cmp.Diff(secs(0, 10), b.starts()); diff != "" {
				t.Errorf("%s: run starts after Run again (-want +got):\n%s", b.target, diff)
			}
		}
	})
}

func TestRunnerMaxConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 4)
		b := newBackend(t)
		b.setDelay(time.Second)
		for i := range 20 {
			h.r.Set(fmt.Sprintf("svc/%d", i), b.spec(), P)
		}
		advance(5*time.Second - time.Nanosecond)

		if got := b.maxOverlap(); got != 4 {
			t.Errorf("at most %d checks ran at once, want 4", got)
		}
		perSecond := map[time.Duration]int{}
		for _, s := range b.starts() {
			perSecond[s]++
		}
		want := map[time.Duration]int{0: 4, time.Second: 4, 2 * time.Second: 4, 3 * time.Second: 4, 4 * time.Second: 4}
		if diff := cmp.Diff(want, perSecond); diff != "" {
			t.Errorf("runs started per second (-want +got):\n%s", diff)
		}
	})
}

func TestRunnerVitals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		b := newBackend(t)
		if _, _, ok := h.r.Vitals("svc/a"); ok {
			t.Error("Vitals of an unknown key: ok")
		}
		first := &catalog.Vitals{Ready: false, CPUUsage: 91, Version: "1"}
		b.setVitals(first)
		b.answer(C, C, P)
		h.r.Set("svc/a", b.spec(), P)
		synctest.Wait() // run 1 at 0s: ready=false figures

		type taken struct {
			V  *catalog.Vitals
			At time.Duration
		}
		get := func() taken {
			v, at, ok := h.r.Vitals("svc/a")
			if !ok {
				t.Fatal("Vitals: none")
			}
			return taken{v, at.Sub(h.epoch)}
		}
		if diff := cmp.Diff(taken{first, 0}, get()); diff != "" {
			t.Errorf("Vitals after run 1 (-want +got):\n%s", diff)
		}
		get().V.CPUUsage = 0 // a copy: the Runner's stays as it was

		b.setVitals(nil) // a body that did not parse
		advance(10 * time.Second)
		if diff := cmp.Diff(taken{first, 0}, get()); diff != "" {
			t.Errorf("Vitals after run 2, which had none (-want +got):\n%s", diff)
		}

		second := &catalog.Vitals{Ready: true, CPUUsage: 12, Version: "2"}
		b.setVitals(second)
		advance(10 * time.Second)
		if diff := cmp.Diff(taken{second, 20 * time.Second}, get()); diff != "" {
			t.Errorf("Vitals after run 3 (-want +got):\n%s", diff)
		}
	})
}

func TestRunnerUnknownType(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, 0)
		h.r.Set("svc/a", catalog.Check{Type: "no-such-type", Target: "x", Failures: 2}, P)
		advance(15 * time.Second)

		want := []change{{"svc/a", C, `health: unknown check type "no-such-type"`, 10 * time.Second}}
		if diff := cmp.Diff(want, h.changed()); diff != "" {
			t.Errorf("OnChange calls (-want +got):\n%s", diff)
		}
		wantRes := []reported{{"no-such-type", C, 0}, {"no-such-type", C, 0}}
		if diff := cmp.Diff(wantRes, h.reports()); diff != "" {
			t.Errorf("OnResult calls (-want +got):\n%s", diff)
		}
	})
}

// instant is a Checker for benchmarks only: it passes at once.
type instant struct{}

func (instant) Check(context.Context, string) Result {
	return Result{Status: catalog.Passing, Output: "ok"}
}

func init() { Register("test-instant", instant{}) }

// BenchmarkRunnerSchedule measures the scheduling cost of a run: each
// iteration restarts 10,000 checks (a new target makes each due at once)
// and waits for all their runs.
func BenchmarkRunnerSchedule(b *testing.B) {
	const n = 10000
	var done atomic.Int64
	signal := make(chan struct{}, 1)
	r := NewRunner(Config{OnResult: func(string, catalog.Status, time.Duration) {
		if done.Add(1) == n {
			signal <- struct{}{}
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		r.Run(ctx)
	}()
	defer func() {
		cancel()
		<-stopped
	}()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("svc-%d/inst-%d", i/10, i)
	}
	ck := catalog.Check{Type: "test-instant", Interval: catalog.Duration(time.Hour)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ck.Target = fmt.Sprint(i)
		done.Store(0)
		for _, k := range keys {
			r.Set(k, ck, catalog.Critical)
		}
		<-signal
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*n), "ns/run")
}

// BenchmarkRunnerReset measures a new leader loading 10,000 checks.
func BenchmarkRunnerReset(b *testing.B) {
	const n = 10000
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = Entry{
			Key:     fmt.Sprintf("svc-%d/inst-%d", i/10, i),
			Check:   catalog.Check{Type: "test-instant", Target: fmt.Sprint(i)},
			Verdict: catalog.Passing,
		}
	}
	r := NewRunner(Config{})
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(entries)
	}
}
