package balance

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func pool(weights ...float64) *Pool {
	var bs []*Backend
	for i, w := range weights {
		bs = append(bs, &Backend{ID: fmt.Sprintf("b%d", i), Weight: w})
	}
	return NewPool(bs)
}

func count(t *testing.T, p *Pool, pol Policy, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		b := pol.Pick(p, 0)
		if b == nil {
			t.Fatal("no pick")
		}
		seen[b.ID]++
	}
	return seen
}

func TestWeightedPoliciesFollowWeights(t *testing.T) {
	for _, pol := range []Policy{Random{}, P2C{}} {
		p := pool(100, 300, 0, 600)
		seen := count(t, p, pol, 100000)
		if seen["b2"] != 0 {
			t.Errorf("%T picked a drained backend %d times", pol, seen["b2"])
		}
		// With nothing in flight and no latency, P2C's choice of two
		// follows weight too (the lower cost is the higher weight), so
		// shares only need to rank the same way.
		if !(seen["b0"] < seen["b1"] && seen["b1"] < seen["b3"]) {
			t.Errorf("%T shares %v do not follow the weights 100 < 300 < 600", pol, seen)
		}
	}
	got := count(t, pool(100, 300, 0, 600), Random{}, 100000)
	for id, share := range map[string]float64{"b0": 0.1, "b1": 0.3, "b3": 0.6} {
		if f := float64(got[id]) / 100000; f < share-0.01 || f > share+0.01 {
			t.Errorf("Random: %s got %.3f, want %.2f±0.01", id, f, share)
		}
	}
}

func TestRoundRobinIsSmooth(t *testing.T) {
	rr := &RoundRobin{}
	p := pool(5, 1, 1)
	var order []string
	for range 7 {
		order = append(order, rr.Pick(p, 0).ID)
	}
	// nginx's smooth weighted round robin for 5,1,1: a a b a c a a.
	if got := strings.Join(order, " "); got != "b0 b0 b1 b0 b2 b0 b0" {
		t.Errorf("order %s", got)
	}
}

func TestP2CAvoidsASlowBackend(t *testing.T) {
	p := pool(1, 1, 1, 1)
	slow := p.Backends()[0]
	now := time.Now()
	for _, b := range p.Backends() {
		b.observe(now, time.Millisecond)
	}
	slow.observe(now, 50*time.Millisecond) // a peak: taken at once
	seen := count(t, p, P2C{}, 10000)
	// The slow backend wins only when drawn twice: about 1/16.
	if f := float64(seen["b0"]) / 10000; f > 0.08 {
		t.Errorf("the slow backend got %.3f of picks", f)
	}
	// Its latency decays toward fast ones as time passes.
	slow.observe(now.Add(30*time.Second), time.Millisecond)
	if l := slow.Latency(); l > 5*time.Millisecond {
		t.Errorf("after 30s of fast answers the peak-EWMA is %s", l)
	}
}

func TestLeastRequestAndFirst(t *testing.T) {
	p := pool(1, 1, 1)
	bs := p.Backends()
	bs[0].Begin()
	bs[0].Begin()
	bs[1].Begin()
	if got := (LeastRequest{}).Pick(p, 0); got != bs[2] {
		t.Errorf("LeastRequest picked %s", got.ID)
	}
	if got := (First{}).Pick(pool(0, 2, 3), 0); got.ID != "b1" {
		t.Errorf("First picked %s", got.ID)
	}
	for _, pol := range []Policy{P2C{}, Random{}, First{}, LeastRequest{}, &RoundRobin{}} {
		if got := pol.Pick(pool(0, 0), 0); got != nil {
			t.Errorf("%T picked %s from a pool of drained backends", pol, got.ID)
		}
	}
}

// BenchmarkPick: a pick over 100 backends (the aim: ≤ 100 ns, no
// allocation).
func BenchmarkPick(b *testing.B) {
	weights := make([]float64, 100)
	for i := range weights {
		weights[i] = float64(1 + i%10)
	}
	p := pool(weights...)
	for _, bk := range p.Backends() {
		bk.observe(time.Now(), time.Duration(1+len(bk.ID))*time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		pol  Policy
	}{{"P2C", P2C{}}, {"Random", Random{}}, {"RoundRobin", &RoundRobin{}}, {"LeastRequest", LeastRequest{}}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if tc.pol.Pick(p, 0) == nil {
					b.Fatal("no pick")
				}
			}
		})
	}
}

func TestHashIsConsistent(t *testing.T) {
	for _, n := range []int{5, 200} { // rendezvous, then Maglev
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ws := make([]float64, n)
			for i := range ws {
				ws[i] = 1
			}
			ws[0] = 0 // drained: never picked
			p := pool(ws...)
			h := Hash{}
			keys := make([]uint64, 20000)
			before := map[uint64]*Backend{}
			for i := range keys {
				keys[i] = HashKey(fmt.Sprintf("client-%d", i))
				b := h.Pick(p, keys[i])
				if b.Weight == 0 {
					t.Fatalf("picked drained %s", b.ID)
				}
				if h.Pick(p, keys[i]) != b {
					t.Fatal("the same key went to two backends")
				}
				before[keys[i]] = b
			}
			// One backend leaves: only (about) its keys move.
			gone := p.Backends()[n/2]
			var rest []*Backend
			for _, b := range p.Backends() {
				if b != gone {
					rest = append(rest, b)
				}
			}
			q := NewPool(rest)
			moved, itsKeys := 0, 0
			for _, k := range keys {
				if before[k] == gone {
					itsKeys++
					continue
				}
				if h.Pick(q, k) != before[k] {
					moved++
				}
			}
			if limit := len(keys) / 100; moved > limit {
				t.Errorf("%d keys of other backends moved when one of %d left (%d were its); want at most %d", moved, n, itsKeys, limit)
			}
		})
	}
}

func TestHashFollowsWeights(t *testing.T) {
	for _, n := range []int{3, 100} {
		ws := make([]float64, n)
		for i := range ws {
			ws[i] = 1
		}
		ws[0] = 3
		p := pool(ws...)
		h := Hash{}
		hits := 0
		const keys = 60000
		for i := range keys {
			if h.Pick(p, HashKey(fmt.Sprint(i))) == p.Backends()[0] {
				hits++
			}
		}
		want := 3 / float64(n+2)
		if f := float64(hits) / keys; f < want*0.8 || f > want*1.2 {
			t.Errorf("%d backends: the weight-3 one got %.4f of keys, want %.4f±20%%", n, f, want)
		}
	}
}

func BenchmarkHashPick(b *testing.B) {
	for _, n := range []int{10, 100} {
		ws := make([]float64, n)
		for i := range ws {
			ws[i] = 1
		}
		p := pool(ws...)
		h := Hash{}
		h.Pick(p, 1) // builds the Maglev table once
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			k := uint64(0)
			for b.Loop() {
				k++
				if h.Pick(p, k) == nil {
					b.Fatal("no pick")
				}
			}
		})
	}
}

func TestOutliersAreEjectedAtMostHalf(t *testing.T) {
	p := pool(1, 1, 1, 1)
	bs := p.Backends()
	now := time.Now()
	for i := range ConsecutiveFailures - 1 {
		if p.Result(bs[0], now, false) {
			t.Fatalf("ejected after %d failures", i+1)
		}
	}
	p.Result(bs[0], now, true) // a success resets the count
	for range ConsecutiveFailures - 1 {
		p.Result(bs[0], now, false)
	}
	if bs[0].Ejected(now) {
		t.Fatal("ejected although a success came between")
	}
	if !p.Result(bs[0], now, false) || !bs[0].Ejected(now) {
		t.Fatal("not ejected after 5 failures in a row")
	}
	seen := count(t, p, P2C{}, 2000)
	if seen["b0"] != 0 {
		t.Errorf("an ejected backend was picked %d times", seen["b0"])
	}
	// A second one may go; a third would be more than half.
	for range ConsecutiveFailures {
		p.Result(bs[1], now, false)
	}
	for range ConsecutiveFailures {
		p.Result(bs[2], now, false)
	}
	if !bs[1].Ejected(now) || bs[2].Ejected(now) {
		t.Errorf("ejected: b1 %v b2 %v; want b1 only (at most half of four)", bs[1].Ejected(now), bs[2].Ejected(now))
	}
	// Ejections grow: the second one of b0 lasts twice as long.
	later := now.Add(BaseEjection)
	if bs[0].Ejected(later) {
		t.Fatal("the first ejection outlasted BaseEjection")
	}
	for range ConsecutiveFailures {
		p.Result(bs[0], later, false)
	}
	if !bs[0].Ejected(later.Add(BaseEjection+time.Second)) || bs[0].Ejected(later.Add(2*BaseEjection)) {
		t.Error("the second ejection does not last 2×BaseEjection")
	}
}

func TestSlowStart(t *testing.T) {
	p := pool(1, 1)
	bs := p.Backends()
	now := time.Now()
	bs[1].Join(now)
	at := func(t time.Time) *int64 { n := t.UnixNano(); return &n }
	if w := bs[1].effective(1, at(now)); w != 0.1 {
		t.Errorf("weight at join %v, want a tenth", w)
	}
	if w := bs[1].effective(1, at(now.Add(SlowStart/2))); w < 0.49 || w > 0.51 {
		t.Errorf("weight half way %v, want 0.5", w)
	}
	// P2C sends the newcomer less while it warms up.
	seen := count(t, p, P2C{}, 10000)
	if seen["b1"] > 3000 {
		t.Errorf("a backend in slow start got %d of 10000 picks", seen["b1"])
	}
	if w := bs[1].effective(1, at(now.Add(SlowStart))); w != 1 {
		t.Errorf("weight after slow start %v, want 1", w)
	}
	// Ramped up, it is done with the clock (its state is cleared), but it
	// starts slowly again when it joins again or comes back from an
	// ejection.
	var unread int64
	if w := bs[1].effective(1, &unread); w != 1 || unread != 0 {
		t.Errorf("weight after slow start %v, clock read %d, want 1 and no read", w, unread)
	}
	later := now.Add(2 * SlowStart)
	bs[1].Join(later)
	if w := bs[1].effective(1, at(later)); w != 0.1 {
		t.Errorf("weight at a second join %v, want a tenth", w)
	}
	bs[1].effective(1, at(later.Add(SlowStart)))
	for range ConsecutiveFailures {
		p.Result(bs[1], later.Add(SlowStart), false)
	}
	if w := bs[1].effective(1, at(later.Add(SlowStart+time.Second))); w != 0 {
		t.Errorf("weight while ejected %v, want 0", w)
	}
	if w := bs[1].effective(1, at(later.Add(SlowStart+BaseEjection))); w != 0.1 {
		t.Errorf("weight back from an ejection %v, want a tenth", w)
	}
}

func TestPoolWeightsOverrideRegistered(t *testing.T) {
	bs := pool(100, 100, 100, 100).Backends()
	// Vitals took b1 out and halved b2.
	p := NewPoolWeights(bs, []float64{100, 0, 50, 100})
	if p.Panic() {
		t.Fatal("3 of 4 live is not panic")
	}
	got := count(t, p, Random{}, 100000)
	if got["b1"] != 0 {
		t.Errorf("a backend with pool weight 0 got %d picks", got["b1"])
	}
	if f := float64(got["b2"]) / 100000; f < 0.19 || f > 0.21 {
		t.Errorf("b2 share %.3f, want 0.2 (50 of 250)", f)
	}
	for _, pol := range []Policy{P2C{}, &RoundRobin{}, LeastRequest{}, Hash{}, First{}} {
		for k := range uint64(1000) {
			if b := pol.Pick(p, k); b == nil || b.ID == "b1" {
				t.Fatalf("%T picked %v", pol, b)
			}
		}
	}
	// Bs registered weights stay what they were.
	if bs[1].Weight != 100 {
		t.Errorf("registered weight changed to %v", bs[1].Weight)
	}
}

func TestPanicModeUsesEveryBackend(t *testing.T) {
	bs := pool(100, 100, 100, 0).Backends()
	// Two of the three registered say they are not ready: fewer than half
	// are live, so the pool ignores the vitals. The drained one (registered
	// weight 0) stays out.
	p := NewPoolWeights(bs, []float64{100, 0, 0, 0})
	if !p.Panic() {
		t.Fatal("1 of 3 live should be panic")
	}
	got := count(t, p, Random{}, 30000)
	for _, id := range []string{"b0", "b1", "b2"} {
		if got[id] < 9000 {
			t.Errorf("in panic %s got %d of 30000", id, got[id])
		}
	}
	if got["b3"] != 0 {
		t.Errorf("a drained backend got %d picks in panic", got["b3"])
	}
	// Exactly half live is not panic.
	if NewPoolWeights(bs[:2], []float64{100, 0}).Panic() {
		t.Error("1 of 2 live should not be panic")
	}
}

func TestSuccessRateEjectsTheOutlier(t *testing.T) {
	p := pool(1, 1, 1, 1, 1, 1)
	bs := p.Backends()
	now := time.Now()
	for i, b := range bs {
		for n := range 200 {
			// b5 fails one request in four, never five in a row; the
			// others one in a hundred.
			ok := n%100 != 0
			if i == 5 {
				ok = n%4 != 0
			}
			p.Result(b, now, ok)
		}
	}
	out := p.SweepSuccessRate(now)
	if len(out) != 1 || out[0] != bs[5] {
		t.Fatalf("ejected %v, want b5 alone", out)
	}
	if _, why, ok := bs[5].Ejection(now); !ok || !strings.Contains(why, "success rate") {
		t.Errorf("ejection reason %q, %v", why, ok)
	}
	// The counts start over: a sweep with no traffic ejects nothing.
	if out := p.SweepSuccessRate(now); len(out) != 0 {
		t.Errorf("second sweep ejected %v", out)
	}
	// Too few backends with enough volume: no judgement.
	q := pool(1, 1, 1)
	for i, b := range q.Backends() {
		for range 200 {
			q.Result(b, now, i != 0)
		}
	}
	if out := q.SweepSuccessRate(now); len(out) != 0 {
		t.Errorf("a 3-backend pool ejected %v by success rate", out)
	}
}
