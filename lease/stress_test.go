package lease

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

type opKind int

const (
	opSet opKind = iota
	opRenew
	opRemove
)

// op is one call a stress worker made on its key.
type op struct {
	at     time.Duration
	kind   opKind
	result Renewal // for opRenew
}

// TestStressVirtualTime has many goroutines renew, skip, set and remove
// leases in virtual time while they expire, and then checks every expiry
// and every Renew result against the exact history of each key. Renewals
// are on the same 50ms grid as the deadlines, so many of them run at the
// very instant the expiry loop handles another lease in the same shard, or
// the same lease; only at that exact instant may either side win.
func TestStressVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			ttl           = time.Second
			tick          = 50 * time.Millisecond
			workers       = 16
			keysPerWorker = 32
			steps         = 150
		)
		rec := newRecorder()
		m := New(Config{OnExpire: rec.onExpire})
		go m.Run(t.Context())

		key := func(i int) string { return fmt.Sprintf("w%02d/k%02d", i/keysPerWorker, i%keysPerWorker) }
		// Each key belongs to one worker, which alone appends to its log.
		logs := make([][]op, workers*keysPerWorker)
		for i := range logs {
			m.Set(key(i), ttl)
			logs[i] = []op{{0, opSet, 0}}
		}

		var wg sync.WaitGroup
		for w := range workers {
			// Even workers are steady: they renew every key at least every
			// 900ms, so their leases must never expire.
			steady := w%2 == 0
			wg.Go(func() {
				r := rand.New(rand.NewPCG(7, uint64(w)))
				for range steps {
					if steady {
						time.Sleep(time.Duration(1+r.IntN(18)) * tick)
					} else {
						time.Sleep(time.Duration(1+r.IntN(30)) * tick)
					}
					now := time.Since(rec.start)
					for j := range keysPerWorker {
						i := w*keysPerWorker + j
						k := key(i)
						switch x := r.IntN(40); {
						case steady || x < 24:
							logs[i] = append(logs[i], op{now, opRenew, m.Renew(k)})
						case x < 37:
							// Skip: let the lease drift towards its deadline.
						case x < 39:
							m.Set(k, ttl)
							logs[i] = append(logs[i], op{now, opSet, 0})
						default:
							m.Remove(k)
							logs[i] = append(logs[i], op{now, opRemove, 0})
						}
					}
				}
			})
		}
		wg.Wait()
		advance(time.Minute)

		expiries := map[string][]time.Duration{}
		for _, e := range rec.take() {
			expiries[e.Key] = append(expiries[e.Key], e.At)
		}
		total, revived := 0, 0
		for i, log := range logs {
			k := key(i)
			steady := (i/keysPerWorker)%2 == 0
			// A steady key may expire once: a TTL after its worker stopped.
			if end := log[len(log)-1].at + ttl; steady && (len(expiries[k]) > 1 || len(expiries[k]) == 1 && expiries[k][0] != end) {
				t.Errorf("%s was renewed in time until %v but expired at %v", k, end-ttl, expiries[k])
			}
			total += len(expiries[k])
			revived += checkHistory(t, k, ttl, log, expiries[k])
		}
		t.Logf("%d keys, %d expiries, %d revivals", len(logs), total, revived)
		if total == 0 || revived == 0 {
			t.Errorf("the stress produced %d expiries and %d revivals; it tests nothing", total, revived)
		}
	})
}

// checkHistory checks one key's expiries and Renew results against its ops,
// in virtual time where each op's instant is exact. It returns how many
// renewals revived the lease.
func checkHistory(t *testing.T, key string, ttl time.Duration, log []op, expiries []time.Duration) (revived int) {
	t.Helper()
	// last returns the last op strictly before at, if any.
	last := func(at time.Duration) (op, bool) {
		for i := len(log) - 1; i >= 0; i-- {
			if log[i].at < at {
				return log[i], true
			}
		}
		return op{}, false
	}
	for n, te := range expiries {
		if n > 0 && expiries[n-1] == te {
			t.Errorf("%s: expired twice at %v", key, te)
		}
		p, ok := last(te)
		switch {
		case !ok:
			t.Errorf("%s: expired at %v before any operation", key, te)
		case p.kind == opRemove || p.kind == opRenew && p.result == Unknown:
			t.Errorf("%s: expired at %v after being removed at %v", key, te, p.at)
		case te-p.at != ttl:
			// Earlier would be a renewal reported as expired, later a
			// late expiry: both are bugs.
			t.Errorf("%s: expired at %v, but its last renewal before that was at %v and the TTL is %v", key, te, p.at, ttl)
		}
	}

	// Replay: what must each Renew have returned?
	var touched time.Duration // time of the last Set or successful Renew
	live := false             // whether the key exists
	for _, o := range log {
		switch o.kind {
		case opSet:
			touched, live = o.at, true
		case opRemove:
			live = false
		case opRenew:
			deadline := touched + ttl
			var want []Renewal
			switch {
			case !live:
				want = []Renewal{Unknown}
			case o.at < deadline:
				want = []Renewal{Renewed}
			case o.at > deadline:
				want = []Renewal{Revived}
			default:
				// Same instant as the expiry loop: either may win.
				want = []Renewal{Renewed, Revived}
			}
			if o.result != want[0] && (len(want) == 1 || o.result != want[1]) {
				t.Errorf("%s: Renew at %v (last renewal %v) = %v, want %v", key, o.at, touched, o.result, want)
			}
			if o.result == Revived {
				revived++
			}
			if live {
				touched = o.at
			}
		}
	}
	return revived
}

// TestStressRealClock hammers a Manager on the real clock with microsecond
// TTLs, so that renewals and the expiry loop truly race on the same leases
// (run it with -race). It does not sleep; it only checks what holds at any
// speed: every expiry is delivered once and is matched by exactly one
// revival, or the lease is still expired at the end.
func TestStressRealClock(t *testing.T) {
	const (
		workers       = 8
		keysPerWorker = 64
		iterations    = 20_000
	)
	var mu sync.Mutex
	expiries := map[string]int{}
	m := New(Config{OnExpire: func(keys []string) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			expiries[k]++
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(runDone)
	}()

	key := func(w, j int) string { return fmt.Sprintf("w%d/k%d", w, j) }
	for w := range workers {
		for j := range keysPerWorker {
			// From 1µs, always overdue, to about 4ms, rarely.
			m.Set(key(w, j), time.Duration(1<<(j%13))*time.Microsecond)
		}
	}

	revived := make([][]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		revived[w] = make([]int, keysPerWorker)
		wg.Go(func() {
			r := rand.New(rand.NewPCG(11, uint64(w)))
			for n := range iterations {
				j := r.IntN(keysPerWorker)
				switch m.Renew(key(w, j)) {
				case Unknown:
					t.Errorf("Renew(%s) = unknown; nothing removes it", key(w, j))
				case Revived:
					revived[w][j]++
				}
				if n%64 == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	// Churn on other keys, sharing shards and the heap with the above,
	// for as long as the renewers run.
	var stop atomic.Bool
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		for n := 0; !stop.Load(); n++ {
			k := fmt.Sprintf("churn/%d", n%100)
			switch n % 4 {
			case 0, 1:
				m.Set(k, time.Duration(n%50)*time.Microsecond)
			case 2:
				m.Expired(k)
				m.Renew(k)
			case 3:
				m.Remove(k)
			}
			if n%1000 == 0 {
				m.Len()
			}
			// Yield like the renewers do, or with GOMAXPROCS=1 this loop
			// would hold the only P for whole time slices.
			if n%16 == 0 {
				runtime.Gosched()
			}
		}
	}()
	wg.Wait()
	stop.Store(true)
	<-churnDone
	cancel()
	<-runDone // every expiry popped has now been delivered

	total := 0
	mu.Lock()
	defer mu.Unlock()
	for w := range workers {
		for j := range keysPerWorker {
			k := key(w, j)
			exp, ok := m.Expired(k)
			if !ok {
				t.Fatalf("%s is unknown", k)
			}
			want := revived[w][j]
			if exp {
				want++
			}
			if got := expiries[k]; got != want {
				t.Errorf("%s: %d expiries delivered, want %d (%d revivals, expired now: %v)", k, got, want, revived[w][j], exp)
			}
			total += expiries[k]
		}
	}
	t.Logf("%d expiries", total)
	if total == 0 {
		t.Error("nothing expired; the stress tests nothing")
	}
}

// TestStressReset races Reset (leadership changes) against renewals, Sets,
// Removes and expiries on the real clock, for the race detector, and then
// checks that the last Reset alone decides what is left.
func TestStressReset(t *testing.T) {
	const keys = 512
	var delivered atomic.Int64
	m := New(Config{
		OnExpire:             func(keys []string) { delivered.Add(int64(len(keys))) },
		MaxExpiriesPerSecond: 50,
	})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(runDone)
	}()
	key := func(i int) string { return fmt.Sprintf("k%d", i) }

	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(13, uint64(w)))
			for n := 0; !stop.Load(); n++ {
				k := key(r.IntN(keys))
				switch r.IntN(8) {
				case 0:
					m.Set(k, time.Duration(r.IntN(100))*time.Microsecond)
				case 1:
					m.Remove(k)
				case 2:
					m.Expired(k)
				default:
					m.Renew(k)
				}
				if n%64 == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	r := rand.New(rand.NewPCG(17, 0))
	for range 200 {
		var ls []Lease
		for i := range keys {
			if r.IntN(3) > 0 {
				ls = append(ls, Lease{Key: key(i), TTL: time.Duration(r.IntN(50)) * time.Microsecond, Expired: r.IntN(4) == 0})
			}
		}
		m.Reset(ls)
		if r.IntN(10) == 0 {
			m.Reset(nil)
		}
		runtime.Gosched()
	}
	stop.Store(true)
	wg.Wait()

	m.Reset([]Lease{{Key: "a", TTL: time.Hour}, {Key: "b", TTL: time.Hour, Expired: true}})
	cancel()
	<-runDone
	if got := m.Len(); got != 2 {
		t.Errorf("Len() after the last Reset = %d, want 2", got)
	}
	for k, want := range map[string]Renewal{"a": Renewed, "b": Revived, key(0): Unknown} {
		if got := m.Renew(k); got != want {
			t.Errorf("Renew(%s) = %v, want %v", k, got, want)
		}
	}
	t.Logf("%d expiries", delivered.Load())
}
