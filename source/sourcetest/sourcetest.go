// Package sourcetest helps test sources: a Sink that records what a source
// reports, and waits for what a test expects, with a deadline instead of a
// sleep.
package sourcetest

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// Recorder is a source.Sink that keeps every report and the state they add
// up to.
type Recorder struct {
	mu       sync.Mutex
	updates  []source.Update
	failures []error
	state    map[string][]*catalog.Instance
	changed  chan struct{}
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

// LastFailure returns the latest failure, or nil.
func (r *Recorder) LastFailure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) == 0 {
		return nil
	}
	return r.failures[len(r.failures)-1]
}

// State renders the state the updates add up to, one line per instance:
// "service/id address:port status weight=N tags=a,b", sorted.
func (r *Recorder) State() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lines []string
	for svc, ins := range r.state {
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

// Line renders one instance as State does.
func Line(in *catalog.Instance) string {
	s := fmt.Sprintf("%s/%s %s:%d %s weight=%d", in.Service, in.ID, in.Address, in.Port, in.Status, in.Weight)
	if len(in.Tags) > 0 {
		s += " tags=" + strings.Join(in.Tags, ",")
	}
	return s
}

// WaitFor waits until cond holds of the recorder, failing the test after
// timeout. cond is checked after every report.
func (r *Recorder) WaitFor(t testing.TB, what string, timeout time.Duration, cond func(*Recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond(r) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("waited %s for %s; the state is:\n%s\nlast failure: %v", timeout, what, r.State(), r.LastFailure())
		}
	}
}

// WaitState waits until State is want.
func (r *Recorder) WaitState(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	r.WaitFor(t, "the state:\n"+want, timeout, func(r *Recorder) bool { return r.State() == want })
}
