// Package sourcetest helps test sources: a Sink that records what a source
// reports and what it logs, and waits for what a test expects, with a
// deadline instead of a sleep; and Run, which runs a source for as long as
// a test lasts.
package sourcetest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// Recorder is a source.Sink that keeps every report, in order, the state
// they add up to, and the source's log when the source logs to Logger.
type Recorder struct {
	mu       sync.Mutex
	reports  []Report
	updates  []source.Update
	failures []error
	state    map[string][]*catalog.Instance
	log      bytes.Buffer
	changed  chan struct{} // closed and replaced on every report
}

// Report is one call a source made to a Recorder: an update or a failure.
type Report struct {
	// Update is what Update was given; nil for a failure.
	Update *source.Update
	// Failure is what Fail was given; nil for an update.
	Failure error
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{state: map[string][]*catalog.Instance{}, changed: make(chan struct{})}
}

func (r *Recorder) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Update implements source.Sink.
func (r *Recorder) Update(u source.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, Report{Update: &u})
	r.updates = append(r.updates, u)
	if u.Full {
		r.state = map[string][]*catalog.Instance{}
	}
	for svc, ins := range u.Services {
		r.state[svc] = ins
	}
	r.notify()
}

// Fail implements source.Sink.
func (r *Recorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, Report{Failure: err})
	r.failures = append(r.failures, err)
	r.notify()
}

// Counts returns how many updates and failures came so far.
func (r *Recorder) Counts() (updates, failures int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates), len(r.failures)
}

// Updates returns the updates so far.
func (r *Recorder) Updates() []source.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]source.Update(nil), r.updates...)
}

// Failures returns the failures so far.
func (r *Recorder) Failures() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.failures...)
}

// Reports returns the updates and failures so far, in the order they came.
func (r *Recorder) Reports() []Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Report(nil), r.reports...)
}

// LastFailure returns the latest failure, or nil.
func (r *Recorder) LastFailure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) == 0 {
		return nil
	}
	return r.failures[len(r.failures)-1]
}

// UpdatesAfterFailure returns the updates that came after the n-th failure
// (1: the first). A source that fails has nothing to report until it sees
// its truth again: a test expects none while that cannot happen.
func (r *Recorder) UpdatesAfterFailure(n int) []source.Update {
	var out []source.Update
	failures := 0
	for _, rep := range r.Reports() {
		switch {
		case rep.Failure != nil:
			failures++
		case failures >= n:
			out = append(out, *rep.Update)
		}
	}
	return out
}

// State renders the state the updates add up to, as Render does.
func (r *Recorder) State() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Render(r.state)
}

// Render renders services one line per instance, as Line does, and
// "service: none" for a service without any, sorted.
func Render(services map[string][]*catalog.Instance) string {
	var lines []string
	for svc, ins := range services {
		if len(ins) == 0 {
			lines = append(lines, svc+": none")
		}
		for _, in := range ins {
			lines = append(lines, Line(in))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Line renders one instance as
// "service/id address:port status weight=N tags=a,b meta k=v,k2=v2", tags
// and meta (sorted by key) only when it has some.
func Line(in *catalog.Instance) string {
	s := fmt.Sprintf("%s/%s %s:%d %s weight=%d", in.Service, in.ID, in.Address, in.Port, in.Status, in.Weight)
	if len(in.Tags) > 0 {
		s += " tags=" + strings.Join(in.Tags, ",")
	}
	if len(in.Meta) > 0 {
		var kv []string
		for k, v := range in.Meta {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		s += " meta " + strings.Join(kv, ",")
	}
	return s
}

// Logger returns a logger for the source's Options: it writes records at
// level and above as text into the recorder, for Log and CountLog.
func (r *Recorder) Logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{r}, &slog.HandlerOptions{Level: level}))
}

type logWriter struct{ r *Recorder }

func (w logWriter) Write(p []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.r.log.Write(p)
}

// Log returns what the source logged to Logger so far.
func (r *Recorder) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// CountLog returns how many lines of Log hold every one of parts.
func (r *Recorder) CountLog(parts ...string) int {
	n := 0
next:
	for line := range strings.Lines(r.Log()) {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		n++
	}
	return n
}

// Wait waits until cond holds of the recorder, checking it now and after
// every report, and reports whether it did within timeout.
func (r *Recorder) Wait(timeout time.Duration, cond func(*Recorder) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond(r) {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
}

// WaitFor waits until cond holds of the recorder, as Wait does, and fails
// the test after timeout, showing the state and the last failure.
func (r *Recorder) WaitFor(t testing.TB, what string, timeout time.Duration, cond func(*Recorder) bool) {
	t.Helper()
	if !r.Wait(timeout, cond) {
		ups, fails := r.Counts()
		t.Fatalf("waited %s for %s; the state is:\n%s\n%d updates, %d failures, the last: %v", timeout, what, r.State(), ups, fails, r.LastFailure())
	}
}

// WaitState waits until State is want, whose lines may come in any order
// (blank lines are left out).
func (r *Recorder) WaitState(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	var lines []string
	for line := range strings.Lines(want) {
		if line = strings.TrimRight(line, "\n"); strings.TrimSpace(line) != "" {
			lines = append(lines, line)
		}
	}
	sort.Strings(lines)
	want = strings.Join(lines, "\n")
	r.WaitFor(t, "the state:\n"+want, timeout, func(r *Recorder) bool { return r.State() == want })
}

// WaitUpdates waits until n updates have come in all, and returns the n-th.
func (r *Recorder) WaitUpdates(t testing.TB, n int, timeout time.Duration) source.Update {
	t.Helper()
	r.WaitFor(t, fmt.Sprintf("%d updates", n), timeout, func(r *Recorder) bool { u, _ := r.Counts(); return u >= n })
	return r.Updates()[n-1]
}

// WaitFailures waits until n failures have come in all, and returns the
// n-th.
func (r *Recorder) WaitFailures(t testing.TB, n int, timeout time.Duration) error {
	t.Helper()
	r.WaitFor(t, fmt.Sprintf("%d failures", n), timeout, func(r *Recorder) bool { _, f := r.Counts(); return f >= n })
	return r.Failures()[n-1]
}

// Run runs src into rec until the test ends. Then it cancels Run's context
// and fails the test unless Run returns nil within 5s; it shows the
// source's log if the test failed.
func Run(t testing.TB, src source.Source, rec *Recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v once its context was done, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of its context being done")
		}
		if t.Failed() {
			if log := rec.Log(); log != "" {
				t.Logf("the source's log:\n%s", log)
			}
		}
	})
}
