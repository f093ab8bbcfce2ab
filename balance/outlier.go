package balance

import (
	"math"
	"sync/atomic"
	"time"
)

// Outlier detection, passive: a backend whose requests keep failing
// (connect failures, or 5xx, as the caller judges) is ejected — not picked —
// for a while that grows with each ejection, as in Envoy. Two rules eject:
// ConsecutiveFailures failures in a row, and a success rate far below the
// pool's (SweepSuccessRate). At most half of a pool is ejected at once, so
// at least half of it always takes traffic (Envoy's panic threshold, built
// in): failures across most of a pool say more about the network or the
// caller than about the backends.
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

	// The success-rate rule, Envoy's defaults: every SuccessRateInterval,
	// among the backends that served at least SuccessRateVolume requests
	// in it, and only when there are at least SuccessRateMinHosts of them,
	// those whose success rate is below the mean by more than
	// SuccessRateStdev standard deviations are ejected.
	SuccessRateInterval = 10 * time.Second
	SuccessRateVolume   = 100
	SuccessRateMinHosts = 5
	SuccessRateStdev    = 1.9
)

// Why a backend was ejected.
const (
	reasonNone = iota
	reasonConsecutive
	reasonSuccessRate
)

// outlierState is a backend's outlier state.
type outlierState struct {
	failures  atomic.Int32 // consecutive
	ejections atomic.Int32 // so far, for the growing ejection time
	reason    atomic.Int32 // of the last ejection
	until     atomic.Int64 // ejected until, unix nanoseconds
	since     atomic.Int64 // joined or came back, unix nanoseconds, for slow start
	// Outcomes since the last success-rate sweep.
	ok, total atomic.Int64
}

// Join marks b as new to the pool now: slow start begins.
func (b *Backend) Join(now time.Time) { b.h.since.Store(now.UnixNano()) }

// Ejected reports whether b is ejected at now.
func (b *Backend) Ejected(now time.Time) bool { return now.UnixNano() < b.h.until.Load() }

// Ejection says until when b is ejected and why, when it is at now.
func (b *Backend) Ejection(now time.Time) (until time.Time, reason string, ok bool) {
	u := b.h.until.Load()
	if now.UnixNano() >= u {
		return time.Time{}, "", false
	}
	switch b.h.reason.Load() {
	case reasonSuccessRate:
		reason = "success rate far below the pool's"
	default:
		reason = "consecutive failures"
	}
	return time.Unix(0, u), reason, true
}

// Result records a request's outcome on b, a backend of p, and ejects b
// after ConsecutiveFailures failures in a row, unless half of p is out
// already. It reports whether b was ejected.
func (p *Pool) Result(b *Backend, now time.Time, ok bool) bool {
	b.h.total.Add(1)
	if ok {
		b.h.ok.Add(1)
		if b.h.failures.Load() != 0 {
			b.h.failures.Store(0)
		}
		return false
	}
	if b.h.failures.Add(1) < ConsecutiveFailures || b.Ejected(now) {
		return false
	}
	return p.eject(b, now, reasonConsecutive)
}

// eject ejects b unless half of p is out already.
func (p *Pool) eject(b *Backend, now time.Time, reason int32) bool {
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
	b.h.reason.Store(reason)
	b.h.until.Store(now.Add(d).UnixNano())
	b.h.since.Store(now.Add(d).UnixNano()) // it comes back slowly
	b.h.failures.Store(0)
	return true
}

// SweepSuccessRate applies the success-rate rule to the outcomes recorded
// since the last sweep, and starts a new interval; call it every
// SuccessRateInterval. It returns the backends it ejected.
func (p *Pool) SweepSuccessRate(now time.Time) []*Backend {
	type rate struct {
		b *Backend
		r float64
	}
	var rates []rate
	for _, b := range p.backends {
		ok, total := b.h.ok.Swap(0), b.h.total.Swap(0)
		if total >= SuccessRateVolume && !b.Ejected(now) {
			rates = append(rates, rate{b, float64(ok) / float64(total)})
		}
	}
	if len(rates) < SuccessRateMinHosts {
		return nil
	}
	var sum, sq float64
	for _, x := range rates {
		sum += x.r
	}
	mean := sum / float64(len(rates))
	for _, x := range rates {
		sq += (x.r - mean) * (x.r - mean)
	}
	threshold := mean - SuccessRateStdev*math.Sqrt(sq/float64(len(rates)))
	var out []*Backend
	for _, x := range rates {
		if x.r < threshold && p.eject(x.b, now, reasonSuccessRate) {
			out = append(out, x.b)
		}
	}
	return out
}

// effective is b's weight w at *now: 0 while ejected, and ramped over
// SlowStart after it joined or came back (never below a tenth, so that it
// gets some traffic to warm up with). *now is read from the clock on first
// need (0: not yet): a backend never ejected nor joined, or ramped up since,
// costs no clock read.
func (b *Backend) effective(w float64, now *int64) float64 {
	until, since := b.h.until.Load(), b.h.since.Load()
	if w <= 0 {
		return 0
	}
	if until == 0 && since == 0 {
		return w
	}
	if *now == 0 {
		*now = time.Now().UnixNano()
	}
	if *now < until {
		return 0
	}
	if since == 0 || *now-since >= int64(SlowStart) {
		if *now >= until {
			// Back and ramped up: later picks need not read the clock. A
			// Join or ejection meanwhile stores after these and wins.
			b.h.since.CompareAndSwap(since, 0)
			b.h.until.CompareAndSwap(until, 0)
		}
		return w
	}
	f := float64(*now-since) / float64(SlowStart)
	return w * max(f, 0.1)
}
