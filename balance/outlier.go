package balance

import (
	"sync/atomic"
	"time"
)

// Outlier detection, passive: a backend whose requests keep failing
// (connect failures, or 5xx, as the caller judges) is ejected — not picked —
// for a while that grows with each ejection, as in Envoy. At most half of a
// pool is ejected at once, so at least half of it always takes traffic
// (Envoy's panic threshold, built in): failures across most of a pool say
// more about the network or the caller than about the backends.
const (
	// ConsecutiveFailures eject a backend.
	ConsecutiveFailures = 5
	// BaseEjection is the first ejection's length; the n-th lasts n times
	// as long, up to MaxEjection.
	BaseEjection = 30 * time.Second
	MaxEjection  = 5 * time.Minute
	// SlowStart is how long a new or returning backend takes to reach its
	// full weight: its share grows linearly, so that a cold cache or JIT is
	// not handed a full share at once.
	SlowStart = 30 * time.Second
)

// health is a backend's outlier state.
type health struct {
	failures  atomic.Int32 // consecutive
	ejections atomic.Int32 // so far, for the growing ejection time
	until     atomic.Int64 // ejected until, unix nanoseconds
	since     atomic.Int64 // joined or came back, unix nanoseconds, for slow start
}

// Join marks b as new to the pool now: slow start begins.
func (b *Backend) Join(now time.Time) { b.h.since.Store(now.UnixNano()) }

// Ejected reports whether b is ejected at now.
func (b *Backend) Ejected(now time.Time) bool { return now.UnixNano() < b.h.until.Load() }

// Result records a request's outcome on b, a backend of p, and ejects b
// after ConsecutiveFailures failures in a row, unless half of p is out
// already. It reports whether b was ejected.
func (p *Pool) Result(b *Backend, now time.Time, ok bool) bool {
	if ok {
		b.h.failures.Store(0)
		return false
	}
	if b.h.failures.Add(1) < ConsecutiveFailures || b.Ejected(now) {
		return false
	}
	out := 0
	for _, o := range p.backends {
		if o.Ejected(now) {
			out++
		}
	}
	if 2*(out+1) > len(p.backends) {
		return false
	}
	n := b.h.ejections.Add(1)
	d := min(time.Duration(n)*BaseEjection, MaxEjection)
	b.h.until.Store(now.Add(d).UnixNano())
	b.h.since.Store(now.Add(d).UnixNano()) // it comes back slowly
	b.h.failures.Store(0)
	return true
}

// effective is b's weight at *now: 0 while ejected, and ramped over
// SlowStart after it joined or came back (never below a tenth, so that it
// gets some traffic to warm up with). *now is read from the clock on first
// need (0: not yet): a backend never ejected nor joined costs no clock read.
func (b *Backend) effective(now *int64) float64 {
	until, since := b.h.until.Load(), b.h.since.Load()
	if b.Weight <= 0 {
		return 0
	}
	if until == 0 && since == 0 {
		return b.Weight
	}
	if *now == 0 {
		*now = time.Now().UnixNano()
	}
	if *now < until {
		return 0
	}
	if since == 0 || *now-since >= int64(SlowStart) {
		return b.Weight
	}
	f := float64(*now-since) / float64(SlowStart)
	return b.Weight * max(f, 0.1)
}
