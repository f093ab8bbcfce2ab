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
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is one backend and its live figures. Its fields other than the
// figures are set before it joins a Pool and not changed after; a Pool may
// give it another weight (from its vitals) without changing Weight.
type Backend struct {
	ID     string
	Addr   string
	Weight float64 // registered weight: > 0; 0 is never picked
	// Value is the caller's: what it needs back from a pick (a router's
	// member, a connection pool).
	Value any

	inflight atomic.Int64
	cost     atomic.Uint64 // peak-EWMA latency, float64 bits, nanoseconds
	stamp    atomic.Int64  // when cost was last updated, unix nanoseconds
	h        outlierState
}

// decay is the peak-EWMA's time constant: a latency observed this long ago
// weighs 1/e of one observed now.
const decay = 10 * time.Second

// Begin records a request starting on b; call End when it finishes.
func (b *Backend) Begin() time.Time { return b.BeginAt(time.Now()) }

// BeginAt is Begin for a caller that has read the clock: the request
// begins at now, which it returns.
func (b *Backend) BeginAt(now time.Time) time.Time {
	b.inflight.Add(1)
	return now
}

// End records a request that began at start finishing now.
func (b *Backend) End(start time.Time) { b.EndAt(start, time.Now()) }

// EndAt is End for a caller that has read the clock: the request finished
// at now.
func (b *Backend) EndAt(start, now time.Time) {
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

// Pool is a service's backends, in a fixed order, with their weights. It
// is never modified once made: a change of backends or weights is a new Pool
// (backends carry their figures from one to the next).
type Pool struct {
	backends []*Backend
	weights  []float64 // what the policies use: the pool's, or in panic the registered ones
	panic    bool
	total    float64
	// alias is Vose's alias table for weighted draws in constant time:
	// slot i holds backend i with probability prob[i], else alias[i].
	prob  []float64
	alias []int32
	// ids[i] is backends[i]'s hash, for consistent hashing.
	ids []uint64
	// maglev is the pool's Maglev table, built on first use.
	maglev     atomic.Pointer[[]int32]
	maglevOnce sync.Once
}

// NewPool makes a pool of backends with their registered weights; those
// with weight 0 stay in it but are never picked.
func NewPool(backends []*Backend) *Pool { return NewPoolWeights(backends, nil) }

// NewPoolWeights makes a pool of backends where backends[i] has weight
// weights[i] (what its vitals made of its registered weight); nil weights
// are the registered ones.
//
// Panic mode: when fewer than half of the backends with a registered weight
// have a pool weight (the rest are draining, backing off or unready by their
// vitals), the pool ignores the vitals and uses the registered weights, as
// Envoy does below its panic threshold: a mass of unready reports says more
// about the reporting than about the backends, and spreading load over every
// backend beats sending it all to the few left.
func NewPoolWeights(backends []*Backend, weights []float64) *Pool {
	n := len(backends)
	p := &Pool{backends: backends, ids: make([]uint64, n)}
	registered := make([]float64, n)
	for i, b := range backends {
		registered[i] = b.Weight
	}
	if weights == nil {
		weights = registered
	}
	p.weights, p.panic = Weights(registered, weights)
	for i, b := range backends {
		p.total += p.weights[i]
		p.ids[i] = idHash(b)
	}
	p.prob, p.alias = aliasTable(p.weights, p.total)
	return p
}

// Weights are what a pool uses given its backends' registered weights and
// what their vitals made of them: the latter, unless fewer than half of
// the backends with a registered weight keep one (panic: see
// NewPoolWeights), when the registered weights stand. Negative weights
// count as 0.
func Weights(registered, vitals []float64) (weights []float64, panic bool) {
	weights = make([]float64, len(registered))
	count, live := 0, 0
	for i, r := range registered {
		weights[i] = max(vitals[i], 0)
		if r > 0 {
			count++
			if weights[i] > 0 {
				live++
			}
		}
	}
	if 2*live >= count {
		return weights, false
	}
	for i, r := range registered {
		weights[i] = max(r, 0)
	}
	return weights, true
}

// aliasTable builds Vose's alias table for drawing i with probability
// weights[i] / total.
func aliasTable(weights []float64, total float64) ([]float64, []int32) {
	n := len(weights)
	prob, alias := make([]float64, n), make([]int32, n)
	if total <= 0 {
		return prob, alias
	}
	heaviest := int32(0)
	for i, w := range weights {
		if w > weights[heaviest] {
			heaviest = int32(i)
		}
	}
	scaled := make([]float64, n)
	var small, large []int32
	for i, w := range weights {
		scaled[i] = w * float64(n) / total
		alias[i] = heaviest
		if scaled[i] < 1 {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		prob[s], alias[s] = scaled[s], l
		scaled[l] -= 1 - scaled[s]
		if scaled[l] < 1 {
			large, small = large[:len(large)-1], append(small, l)
		}
	}
	// What is left is 1 up to rounding; a slot of a backend with no weight
	// left over by rounding goes to the heaviest backend.
	for _, i := range append(small, large...) {
		if weights[i] > 0 {
			prob[i] = 1
		}
	}
	return prob, alias
}

// Backends returns the pool's backends. Do not modify the slice.
func (p *Pool) Backends() []*Backend { return p.backends }

// Weight is the weight the pool gives its i-th backend.
func (p *Pool) Weight(i int) float64 { return p.weights[i] }

// Panic reports whether the pool is in panic mode (see NewPoolWeights).
func (p *Pool) Panic() bool { return p.panic }

// draw returns the index of a backend drawn at random with probability
// proportional to its weight, or -1 when no backend has weight.
func (p *Pool) draw(r uint64) int {
	if p.total <= 0 {
		return -1
	}
	// The high half picks a slot, the low half the coin within it.
	i := int((r >> 32) * uint64(len(p.prob)) >> 32)
	if float64(uint32(r))*(1.0/(1<<32)) < p.prob[i] {
		return i
	}
	return int(p.alias[i])
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
		i := p.draw(rand.Uint64())
		if i < 0 {
			return nil, 0
		}
		b := p.backends[i]
		if w := b.effective(p.weights[i], now); w > 0 {
			return b, w
		}
	}
	for i, b := range p.backends {
		if w := b.effective(p.weights[i], now); w > 0 {
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
func (Random) Pick(p *Pool, _ uint64) *Backend {
	if i := p.draw(rand.Uint64()); i >= 0 {
		return p.backends[i]
	}
	return nil
}

// First picks the first backend with weight: for active/standby pools.
type First struct{}

// Pick implements Policy.
func (First) Pick(p *Pool, _ uint64) *Backend {
	for i, b := range p.backends {
		if p.weights[i] > 0 {
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
	for i, b := range p.backends {
		if p.weights[i] <= 0 {
			continue
		}
		if s := float64(b.inflight.Load()+1) / p.weights[i]; s < bestScore {
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
	for i := range p.backends {
		w := p.weights[i]
		if w <= 0 {
			continue
		}
		rr.current[i] += w
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

// PickExcept picks a backend of p with pol, other than those in tried: a
// retry goes to a backend not tried yet. When the policy keeps returning
// tried ones, it takes the first untried backend with weight that is not
// ejected. Nil when there is none.
func PickExcept(pol Policy, p *Pool, key uint64, tried []*Backend) *Backend {
	for range 3 {
		b := pol.Pick(p, key)
		if b == nil {
			return nil
		}
		if !slices.Contains(tried, b) {
			return b
		}
	}
	now := time.Now()
	for i, b := range p.backends {
		if p.weights[i] > 0 && !b.Ejected(now) && !slices.Contains(tried, b) {
			return b
		}
	}
	return nil
}

// EndConn records a connection that began at start ending now, with rtt,
// the time it took to connect, as its latency: for a connection, how long
// it stayed open says nothing about the backend.
func (b *Backend) EndConn(rtt time.Duration) {
	b.inflight.Add(-1)
	b.observe(time.Now(), rtt)
}
