package lease

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

const benchLeases = 100_000

func benchKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

// benchManager returns a running Manager holding benchLeases leases that
// do not expire during the benchmark.
func benchManager(b *testing.B) (*Manager, []string) {
	m := New(Config{})
	keys := benchKeys("instance-", benchLeases)
	for _, k := range keys {
		m.Set(k, time.Hour)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go m.Run(ctx)
	return m, keys
}

// parallelKeys runs f from GOMAXPROCS goroutines, each walking keys in its
// own pseudo-random order, as heartbeats from many instances would arrive.
func parallelKeys(b *testing.B, keys []string, f func(key string)) {
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		x := seed.Add(0x9e3779b97f4a7c15) | 1
		for pb.Next() {
			// xorshift64: cheap, and no shared state between goroutines.
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			f(keys[x%uint64(len(keys))])
		}
	})
}

func BenchmarkRenew(b *testing.B) {
	m, keys := benchManager(b)
	var bad atomic.Int64
	parallelKeys(b, keys, func(k string) {
		if m.Renew(k) != Renewed {
			bad.Add(1)
		}
	})
	if n := bad.Load(); n > 0 {
		b.Fatalf("%d renewals did not report renewed", n)
	}
}

// BenchmarkRenewHot renews 1,000 leases that stay in cache, which shows
// the cost of Renew's own work; with 100,000 leases (BenchmarkRenew) cache
// and TLB misses on the map and the lease dominate.
func BenchmarkRenewHot(b *testing.B) {
	m, keys := benchManager(b)
	keys = keys[:1000]
	parallelKeys(b, keys, func(k string) { m.Renew(k) })
}

func BenchmarkRenewUnknown(b *testing.B) {
	m, _ := benchManager(b)
	unknown := benchKeys("stranger-", benchLeases)
	var bad atomic.Int64
	parallelKeys(b, unknown, func(k string) {
		if m.Renew(k) != Unknown {
			bad.Add(1)
		}
	})
	if n := bad.Load(); n > 0 {
		b.Fatalf("%d renewals of unknown keys did not report unknown", n)
	}
}

// BenchmarkSet replaces existing leases, the common case when instances
// re-register; each Set allocates the new lease and pushes it on the heap.
func BenchmarkSet(b *testing.B) {
	m, keys := benchManager(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m.Set(keys[i%len(keys)], time.Hour)
	}
}

// BenchmarkExpire measures the expiry loop delivering benchLeases leases
// that are all due; an op is the whole batch, and ns/lease is the cost of
// one expiry. In "renewed", every lease was renewed after it was scheduled,
// so each one also takes the lazy requeue path.
func BenchmarkExpire(b *testing.B) {
	for _, renewed := range []bool{false, true} {
		name := "fresh"
		if renewed {
			name = "renewed"
		}
		b.Run(name, func(b *testing.B) {
			keys := benchKeys("instance-", benchLeases)
			b.ReportAllocs()
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				var got atomic.Int64
				done := make(chan struct{})
				m := New(Config{OnExpire: func(keys []string) {
					if got.Add(int64(len(keys))) == benchLeases {
						close(done)
					}
				}})
				for _, k := range keys {
					m.Set(k, 0)
				}
				if renewed {
					for _, k := range keys {
						m.Renew(k)
					}
				}
				ctx, cancel := context.WithCancel(context.Background())
				stopped := make(chan struct{})
				b.StartTimer()
				t0 := time.Now()

				go func() {
					m.Run(ctx)
					close(stopped)
				}()
				<-done

				total += time.Since(t0)
				b.StopTimer()
				cancel()
				<-stopped
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*benchLeases), "ns/lease")
		})
	}
}
