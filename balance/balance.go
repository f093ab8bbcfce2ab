// Package balance picks a backend for each request or connection. It is
// shared by the router, the agent and the SDK: a Pool holds a service's
// backends with their live figures (requests in flight, a peak-EWMA of
// latency), and a Policy picks among them.
//
// The default policy is power of two choices over peak-EWMA latency ×
// (in-flight + 1) / weight: two backends drawn at random, the cheaper one
// taken. It sends less to a backend that slows down within a few requests,
// without the herding of least-request on stale figures. Weights come from
// the registry and the vitals; they decide eligibility and shares, and a
// pick reads them without locks or allocation.
package balance

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is one backend and its live figures. Its fields other than the
// figures are set before it joins a Pool and not changed after.
type Backend struct {
	ID     string
	Addr   string
	Weight float64 // > 0; 0 is never picked

	inflight atomic.Int64
	cost     atomic.Uint64 // peak-EWMA latency, float64 bits, nanoseconds
	stamp    atomic.Int64  // when cost was last updated, unix nanoseconds
	h        health
}

// decay is the peak-EWMA's time constant: a latency observed this long ago
// weighs 1/e of one observed now.
const decay = 10 * time.Second

// Begin records a request starting on b; call End when it finishes.
func (b *Backend) Begin() time.Time {
	b.inflight.Add(1)
	return time.Now()
}

// End records a request that began at start finishing now.
func (b *Backend) End(start time.Time) {
	now := time.Now()
	b.inflight.Add(-1)
	b.observe(now, now.Sub(start))
}

// observe folds one latency into the peak-EWMA: a latency above the
// current figure replaces it at once (the peak), one below pulls it down
// smoothly, by how long ago the last one was.
func (b *Backend) observe(now time.Time, rtt time.Duration) {
	x := float64(rtt)
	cur := math.Float64frombits(b.cost.Load())
	last := b.stamp.Swap(now.UnixNano())
	if x > cur || last == 0 {
		b.cost.Store(math.Float64bits(x))
		return
	}
	w := math.Exp(-float64(now.UnixNano()-last) / float64(decay))
	b.cost.Store(math.Float64bits(cur*w + x*(1-w)))
}

// InFlight is the number of requests on b now.
func (b *Backend) InFlight() int64 { return b.inflight.Load() }

// Latency is b's peak-EWMA latency (0 before any request).
func (b *Backend) Latency() time.Duration {
	return time.Duration(math.Float64frombits(b.cost.Load()))
}

// Pool is a service's backends, in a fixed order. It is never modified
// once made: a change of backends is a new Pool (backends carry their
// figures from one to the next).
type Pool struct {
	backends []*Backend
	total    float64
	// cum[i] is the total weight of backends[:i+1], for weighted draws.
	cum []float64
	// ids[i] is backends[i]'s hash, for consistent hashing.
	ids []uint64
	// maglev is the pool's Maglev table, built on first use.
	maglev     atomic.Pointer[[]int32]
	maglevOnce sync.Once
}

// NewPool makes a pool of backends; those with weight 0 stay in it but are
// never picked.
func NewPool(backends []*Backend) *Pool {
	p := &Pool{backends: backends, cum: make([]float64, len(backends)), ids: make([]uint64, len(backends))}
	for i, b := range backends {
		p.total += max(b.Weight, 0)
		p.cum[i] = p.total
		p.ids[i] = idHash(b)
	}
	return p
}

// Backends returns the pool's backends. Do not modify the slice.
func (p *Pool) Backends() []*Backend { return p.backends }

// draw returns a backend drawn at random with probability proportional to
// its weight, or nil when no backend has weight.
func (p *Pool) draw(r uint64) *Backend {
	if p.total <= 0 {
		return nil
	}
	x := float64(r>>11) / (1 << 53) * p.total
	lo, hi := 0, len(p.cum)
	for lo < hi {
		mid := (lo + hi) / 2
		if p.cum[mid] <= x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo >= len(p.backends) {
		lo = len(p.backends) - 1
	}
	return p.backends[lo]
}

// Policy picks a backend from a pool; key is the request's hash for the
// policies that use one (consistent hashing), ignored by the others. It
// returns nil when no backend can be picked.
type Policy interface {
	Pick(p *Pool, key uint64) *Backend
}

// P2C is the default policy: two weighted draws, the one with the lower
// peak-EWMA latency × (in-flight + 1) / weight taken. A backend with no
// latency yet counts as the fastest, so new backends get tried.
type P2C struct{}

// Pick implements Policy.
func (P2C) Pick(p *Pool, _ uint64) *Backend {
	var now int64 // read from the clock only if a drawn backend needs it
	a, wa := p.drawLive(&now)
	if a == nil {
		return nil
	}
	b, wb := p.drawLive(&now)
	if b == nil || b == a {
		return a
	}
	if score(b, wb) < score(a, wa) {
		return b
	}
	return a
}

// drawLive draws a backend that is not ejected, and its effective weight:
// a few weighted draws, then the first live backend in order (at most half
// are ejected, so the draws rarely run out).
func (p *Pool) drawLive(now *int64) (*Backend, float64) {
	for range 4 {
		b := p.draw(rand.Uint64())
		if b == nil {
			return nil, 0
		}
		if w := b.effective(now); w > 0 {
			return b, w
		}
	}
	for _, b := range p.backends {
		if w := b.effective(now); w > 0 {
			return b, w
		}
	}
	return nil, 0
}

func score(b *Backend, weight float64) float64 {
	lat := math.Float64frombits(b.cost.Load())
	return (lat + 1) * float64(b.inflight.Load()+1) / weight
}

// Random is a weighted random draw.
type Random struct{}

// Pick implements Policy.
func (Random) Pick(p *Pool, _ uint64) *Backend { return p.draw(rand.Uint64()) }

// First picks the first backend with weight: for active/standby pools.
type First struct{}

// Pick implements Policy.
func (First) Pick(p *Pool, _ uint64) *Backend {
	for _, b := range p.backends {
		if b.Weight > 0 {
			return b
		}
	}
	return nil
}

// LeastRequest picks the backend with the fewest requests in flight per
// unit of weight, the first of equals.
type LeastRequest struct{}

// Pick implements Policy.
func (LeastRequest) Pick(p *Pool, _ uint64) *Backend {
	var best *Backend
	bestScore := math.Inf(1)
	for _, b := range p.backends {
		if b.Weight <= 0 {
			continue
		}
		if s := float64(b.inflight.Load()+1) / b.Weight; s < bestScore {
			best, bestScore = b, s
		}
	}
	return best
}

// RoundRobin is smooth weighted round robin (nginx's): over any window of
// total-weight picks, each backend is picked its weight's share of times,
// spread out rather than in runs. It keeps state per pool, under a lock.
type RoundRobin struct {
	mu      sync.Mutex
	pool    *Pool
	current []float64
}

// Pick implements Policy.
func (rr *RoundRobin) Pick(p *Pool, _ uint64) *Backend {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.pool != p {
		rr.pool, rr.current = p, make([]float64, len(p.backends))
	}
	best := -1
	for i, b := range p.backends {
		if b.Weight <= 0 {
			continue
		}
		rr.current[i] += b.Weight
		if best < 0 || rr.current[i] > rr.current[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	rr.current[best] -= p.total
	return p.backends[best]
}

// Compile-time checks that each policy is a Policy.
var (
	_ Policy = P2C{}
	_ Policy = Random{}
	_ Policy = First{}
	_ Policy = LeastRequest{}
	_ Policy = (*RoundRobin)(nil)
)
