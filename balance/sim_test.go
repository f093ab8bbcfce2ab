package balance

import (
	"container/heap"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The simulation: 10 backends, each serving 4 requests at a time (FIFO
// beyond that), exponential service times of 1ms mean; requests arrive as a
// Poisson stream at 70% of the pool's capacity. In the "one slow" scenario,
// backend 0 serves 5× slower for the middle half of the run. Time is
// virtual: the run takes as long as the computation, and the arrivals and
// service times are the same from run to run (a fixed seed).

const (
	simBackends = 10
	simWorkers  = 4
	simService  = time.Millisecond
	simLoad     = 0.7
	simRequests = 200000
)

type departure struct {
	at  time.Duration
	b   int
	rtt time.Duration
}

type departures []departure

func (d departures) Len() int           { return len(d) }
func (d departures) Less(i, j int) bool { return d[i].at < d[j].at }
func (d departures) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *departures) Push(x any)        { *d = append(*d, x.(departure)) }
func (d *departures) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

// simulate runs the requests through pol and returns their latencies.
func simulate(pol Policy, slow bool) []time.Duration {
	r := rand.New(rand.NewPCG(1, 2))
	p := pool(slices.Repeat([]float64{1}, simBackends)...)
	bs := p.Backends()
	free := make([][]time.Duration, simBackends) // each worker's next free time
	for i := range free {
		free[i] = make([]time.Duration, simWorkers)
	}
	rate := simLoad * simBackends * simWorkers / simService.Seconds() // requests per second
	epoch := time.Unix(0, 0)
	var now time.Duration
	var q departures
	lat := make([]time.Duration, 0, simRequests)
	for i := range simRequests {
		now += time.Duration(r.ExpFloat64() / rate * float64(time.Second))
		for q.Len() > 0 && q[0].at <= now {
			d := heap.Pop(&q).(departure)
			bs[d.b].inflight.Add(-1)
			bs[d.b].observe(epoch.Add(d.at), d.rtt)
		}
		b := pol.Pick(p, r.Uint64())
		bi := slices.Index(bs, b)
		service := time.Duration(r.ExpFloat64() * float64(simService))
		if slow && bi == 0 && i > simRequests/4 && i < 3*simRequests/4 {
			service *= 5
		}
		w := slices.Index(free[bi], slices.Min(free[bi]))
		start := max(now, free[bi][w])
		finish := start + service
		free[bi][w] = finish
		b.inflight.Add(1)
		heap.Push(&q, departure{at: finish, b: bi, rtt: finish - now})
		lat = append(lat, finish-now)
	}
	slices.Sort(lat)
	return lat
}

func pct(lat []time.Duration, q float64) time.Duration {
	return lat[min(len(lat)-1, int(q*float64(len(lat))))]
}

// BenchmarkSimulation prints p50 and p99 for each policy with every backend
// healthy and with one 5× slower for half the run (go test -bench
// Simulation -benchtime 1x ./balance). The aim: the default
// policy's p99 with one slow backend within 1.2× of its all-healthy p99.
func BenchmarkSimulation(b *testing.B) {
	for _, tc := range []struct {
		name string
		pol  func() Policy
	}{
		{"P2C", func() Policy { return P2C{} }},
		{"LeastRequest", func() Policy { return LeastRequest{} }},
		{"RoundRobin", func() Policy { return &RoundRobin{} }},
		{"Random", func() Policy { return Random{} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var healthy, slow []time.Duration
			for b.Loop() {
				healthy = simulate(tc.pol(), false)
				slow = simulate(tc.pol(), true)
			}
			b.ReportMetric(float64(pct(healthy, 0.5).Microseconds()), "p50-healthy-µs")
			b.ReportMetric(float64(pct(healthy, 0.99).Microseconds()), "p99-healthy-µs")
			b.ReportMetric(float64(pct(slow, 0.5).Microseconds()), "p50-slow-µs")
			b.ReportMetric(float64(pct(slow, 0.99).Microseconds()), "p99-slow-µs")
			b.ReportMetric(float64(pct(slow, 0.99))/float64(pct(healthy, 0.99)), "p99-ratio")
		})
	}
}

// TestSimulationDefaultPolicyHoldsItsTail keeps the aim from slipping: the
// default policy's p99 with one backend 5× slower stays within 1.5× of its
// p99 with all healthy (the issue aims at 1.2×), while round robin's does
// not (it cannot see the slow backend).
func TestSimulationDefaultPolicyHoldsItsTail(t *testing.T) {
	if testing.Short() {
		t.Skip("a 200,000-request simulation")
	}
	ratio := func(pol func() Policy) float64 {
		return float64(pct(simulate(pol(), true), 0.99)) / float64(pct(simulate(pol(), false), 0.99))
	}
	p2c := ratio(func() Policy { return P2C{} })
	rr := ratio(func() Policy { return &RoundRobin{} })
	t.Logf("p99 with one slow backend / p99 all healthy: P2C %.2f×, round robin %.2f×", p2c, rr)
	if p2c > 1.5 {
		t.Errorf("P2C's p99 grew %.2f× with one slow backend", p2c)
	}
	if rr < p2c {
		t.Errorf("round robin (%.2f×) held its tail better than P2C (%.2f×)", rr, p2c)
	}
}
