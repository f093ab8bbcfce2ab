package lease

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// event is one key handed to OnExpire, At measured from the recorder's start.
type event struct {
	Key string
	At  time.Duration
}

// recorder collects OnExpire calls.
type recorder struct {
	start  time.Time
	mu     sync.Mutex
	events []event
	calls  [][]string
}

func newRecorder() *recorder { return &recorder{start: time.Now()} }

func (r *recorder) onExpire(keys []string) {
	at := time.Since(r.start)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, keys)
	for _, k := range keys {
		r.events = append(r.events, event{k, at})
	}
}

// take returns the events so far and forgets them.
func (r *recorder) take() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events, r.calls = nil, nil
	return ev
}

func (r *recorder) takeCalls() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.events, r.calls = nil, nil
	return c
}

// start creates a Manager that reports to a recorder and runs it until the
// test function returns. It must be called inside a synctest bubble, where
// the recorder's clock starts at the same instant as the Manager's.
func start(t *testing.T, cfg Config) (*Manager, *recorder) {
	t.Helper()
	r := newRecorder()
	cfg.OnExpire = r.onExpire
	m := New(cfg)
	go m.Run(t.Context())
	synctest.Wait()
	return m, r
}

// advance moves virtual time on by d and lets the expiry loop catch up.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestRenewalString(t *testing.T) {
	for r, want := range map[Renewal]string{
		Unknown:     "unknown",
		Renewed:     "renewed",
		Revived:     "revived",
		Renewal(42): "Renewal(42)",
	} {
		if got := r.String(); got != want {
			t.Errorf("Renewal(%d).String() = %q, want %q", int(r), got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		perSecond int
		wantErr   string
	}{
		{0, ""},
		{1, ""},
		{500, ""},
		{-1, "lease: MaxExpiriesPerSecond is -1; use a positive cap, or 0 for the default of 500"},
	}
	for _, tt := range tests {
		err := Config{MaxExpiriesPerSecond: tt.perSecond}.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.wantErr {
			t.Errorf("Validate(MaxExpiriesPerSecond=%d) = %q, want %q", tt.perSecond, got, tt.wantErr)
		}
	}
}

func TestNewPanicsOnInvalidConfig(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(fmt.Sprint(r), "lease: ") {
			t.Errorf("New(invalid) panicked with %v, want a lease: error", r)
		}
	}()
	New(Config{MaxExpiriesPerSecond: -5})
}

func TestExpiresExactlyAfterTTL(t *testing.T) {
	for _, ttl := range []time.Duration{time.Nanosecond, time.Millisecond, time.Second, 10 * time.Second, 90 * time.Minute} {
		t.Run(ttl.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, rec := start(t, Config{})
				m.Set("a", ttl)

				advance(ttl - time.Nanosecond)
				if ev := rec.take(); len(ev) != 0 {
					t.Fatalf("expired before the TTL: %v", ev)
				}
				if exp, ok := m.Expired("a"); exp || !ok {
					t.Fatalf("Expired(a) = %v, %v one nanosecond before the deadline, want false, true", exp, ok)
				}

				advance(time.Nanosecond)
				if diff := cmp.Diff([]event{{"a", ttl}}, rec.take()); diff != "" {
					t.Fatalf("expiries at the deadline (-want +got):\n%s", diff)
				}
				if exp, ok := m.Expired("a"); !exp || !ok {
					t.Fatalf("Expired(a) = %v, %v after the deadline, want true, true", exp, ok)
				}

				// Once only.
				advance(10 * ttl)
				if ev := rec.take(); len(ev) != 0 {
					t.Fatalf("expired again without renewal: %v", ev)
				}
				if got := m.Len(); got != 1 {
					t.Errorf("Len() = %d, want 1: an expired lease stays known", got)
				}
			})
		})
	}
}

func TestZeroAndNegativeTTLAreDueAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		m.Set("zero", 0)
		m.Set("negative", -time.Hour)
		synctest.Wait()
		// Both are due at once; the loop may deliver "zero" before the
		// second Set, so the two can come in either order.
		want := []event{{"negative", 0}, {"zero", 0}}
		got := rec.take()
		slices.SortFunc(got, func(a, b event) int { return strings.Compare(a.Key, b.Key) })
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("expiries (-want +got):\n%s", diff)
		}
	})
}

func TestHugeTTLDoesNotOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		m.Set("forever", time.Duration(1<<63-1))
		advance(time.Hour)
		if got := m.Renew("forever"); got != Renewed {
			t.Errorf("Renew = %v, want renewed", got)
		}
		advance(24 * time.Hour)
		if ev := rec.take(); len(ev) != 0 {
			t.Errorf("a lease with the largest TTL expired: %v", ev)
		}
	})
}

func TestRenewKeepsAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		const ttl = 10 * time.Second
		m.Set("a", ttl)
		// Renew just before each deadline, many TTLs over.
		for range 100 {
			advance(ttl - time.Nanosecond)
			if got := m.Renew("a"); got != Renewed {
				t.Fatalf("Renew(a) = %v, want renewed", got)
			}
		}
		if ev := rec.take(); len(ev) != 0 {
			t.Fatalf("a renewed lease expired: %v", ev)
		}
		last := time.Since(rec.start)

		advance(ttl)
		if diff := cmp.Diff([]event{{"a", last + ttl}}, rec.take()); diff != "" {
			t.Errorf("expiry after renewals stopped (-want +got):\n%s", diff)
		}
	})
}

func TestRenewUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := start(t, Config{})
		if got := m.Renew("nobody"); got != Unknown {
			t.Errorf("Renew(nobody) = %v, want unknown", got)
		}
		if got := m.Len(); got != 0 {
			t.Errorf("Len() = %d after renewing an unknown key, want 0", got)
		}
	})
}

func TestReviveAndExpireAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		const ttl = 10 * time.Second
		m.Set("a", ttl)
		advance(ttl)
		advance(5 * time.Second)

		if got := m.Renew("a"); got != Revived {
			t.Fatalf("Renew(a) after expiry = %v, want revived", got)
		}
		if exp, ok := m.Expired("a"); exp || !ok {
			t.Fatalf("Expired(a) after revival = %v, %v, want false, true", exp, ok)
		}
		if got := m.Renew("a"); got != Renewed {
			t.Fatalf("second Renew(a) = %v, want renewed", got)
		}

		advance(ttl - time.Nanosecond)
		advance(time.Nanosecond)
		advance(time.Minute)
		want := []event{{"a", 10 * time.Second}, {"a", 25 * time.Second}}
		if diff := cmp.Diff(want, rec.take()); diff != "" {
			t.Errorf("expiries (-want +got):\n%s", diff)
		}
	})
}

func TestPendingExpiryCancelled(t *testing.T) {
	// "a" is set with a 10s TTL at 0; the action runs at 5s.
	tests := []struct {
		name   string
		action func(m *Manager)
		want   []event
		len    int
	}{
		{"nothing", func(*Manager) {}, []event{{"a", 10 * time.Second}}, 1},
		{"remove", func(m *Manager) { m.Remove("a") }, nil, 0},
		{"remove unknown", func(m *Manager) { m.Remove("b") }, []event{{"a", 10 * time.Second}}, 1},
		{"remove twice", func(m *Manager) { m.Remove("a"); m.Remove("a") }, nil, 0},
		{"set same ttl", func(m *Manager) { m.Set("a", 10*time.Second) }, []event{{"a", 15 * time.Second}}, 1},
		{"set longer", func(m *Manager) { m.Set("a", time.Minute) }, []event{{"a", 65 * time.Second}}, 1},
		{"set shorter", func(m *Manager) { m.Set("a", time.Second) }, []event{{"a", 6 * time.Second}}, 1},
		{"remove then set", func(m *Manager) { m.Remove("a"); m.Set("a", 20*time.Second) }, []event{{"a", 25 * time.Second}}, 1},
		{"renew", func(m *Manager) { m.Renew("a") }, []event{{"a", 15 * time.Second}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, rec := start(t, Config{})
				m.Set("a", 10*time.Second)
				advance(5 * time.Second)
				tt.action(m)
				advance(5 * time.Minute)
				if diff := cmp.Diff(tt.want, rec.take()); diff != "" {
					t.Errorf("expiries (-want +got):\n%s", diff)
				}
				if got := m.Len(); got != tt.len {
					t.Errorf("Len() = %d, want %d", got, tt.len)
				}
			})
		})
	}
}

func TestSetWithEarlierDeadlineWakesLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		m.Set("late", time.Hour)
		synctest.Wait() // the loop now sleeps until the hour is up
		m.Set("early", time.Second)
		advance(time.Second)
		if diff := cmp.Diff([]event{{"early", time.Second}}, rec.take()); diff != "" {
			t.Errorf("expiries (-want +got):\n%s", diff)
		}
	})
}

func TestReviveWakesLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		m.Set("short", time.Second)
		m.Set("long", time.Hour)
		advance(time.Second)
		rec.take()
		// The loop sleeps until "long"; reviving "short" must wake it.
		if got := m.Renew("short"); got != Revived {
			t.Fatalf("Renew(short) = %v, want revived", got)
		}
		advance(time.Second)
		if diff := cmp.Diff([]event{{"short", 2 * time.Second}}, rec.take()); diff != "" {
			t.Errorf("expiries (-want +got):\n%s", diff)
		}
	})
}

func TestOnExpireOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		for _, l := range []Lease{
			{Key: "c", TTL: 3 * time.Second},
			{Key: "a", TTL: time.Second},
			{Key: "b", TTL: 3 * time.Second},
			{Key: "d", TTL: 2 * time.Second},
			{Key: "e", TTL: time.Second},
		} {
			m.Set(l.Key, l.TTL)
		}
		advance(time.Minute)
		want := [][]string{{"a", "e"}, {"d"}, {"b", "c"}}
		if diff := cmp.Diff(want, rec.takeCalls()); diff != "" {
			t.Errorf("OnExpire calls (-want +got):\n%s", diff)
		}
	})
}

// TestOnExpireOrderCatchingUp has many leases fall due while Run is not
// running, some renewed after they were scheduled, and checks that the
// backlog arrives in deadline order, in batches of at most MaxBatch.
func TestOnExpireOrderCatchingUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		m := New(Config{OnExpire: rec.onExpire})
		const n = 3*MaxBatch + 17
		r := rand.New(rand.NewPCG(1, 2))
		want := make([]event, 0, n)
		for _, i := range r.Perm(n) {
			key := fmt.Sprintf("k%05d", i)
			// Two leases per distinct deadline, to exercise key order on ties.
			ttl := time.Duration(i/2+1) * time.Millisecond
			m.Set(key, ttl)
			want = append(want, event{key, ttl})
		}
		// Renewing "k00000" at 1.5ms moves it from first to just after the
		// 2.5ms ones.
		advance(1500 * time.Microsecond)
		m.Renew("k00000")
		want[slices.IndexFunc(want, func(e event) bool { return e.Key == "k00000" })].At = 2500 * time.Microsecond

		advance(time.Hour)
		go m.Run(t.Context())
		synctest.Wait()

		calls := rec.takeCalls()
		var got []string
		for _, c := range calls {
			if len(c) > MaxBatch {
				t.Errorf("OnExpire got %d keys in one call, want at most %d", len(c), MaxBatch)
			}
			got = append(got, c...)
		}
		slices.SortStableFunc(want, func(a, b event) int {
			if a.At != b.At {
				return int(a.At - b.At)
			}
			return strings.Compare(a.Key, b.Key)
		})
		var wantKeys []string
		for _, e := range want {
			wantKeys = append(wantKeys, e.Key)
		}
		if diff := cmp.Diff(wantKeys, got); diff != "" {
			t.Errorf("delivery order (-want +got):\n%s", diff)
		}
		if len(calls) != 4 {
			t.Errorf("OnExpire was called %d times for %d keys, want 4", len(calls), n)
		}
	})
}

func TestExpired(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(m *Manager)
		wantExp bool
		wantOK  bool
	}{
		{"unknown", func(*Manager) {}, false, false},
		{"live", func(m *Manager) { m.Set("a", time.Hour) }, false, true},
		{"expired", func(m *Manager) { m.Set("a", time.Second) }, true, true},
		{"removed", func(m *Manager) { m.Set("a", time.Second); m.Remove("a") }, false, false},
		{"revived", func(m *Manager) {
			m.Set("a", 3*time.Second)
			advance(4 * time.Second)
			m.Renew("a")
		}, false, true},
		{"set again after expiry", func(m *Manager) {
			m.Set("a", time.Second)
			advance(2 * time.Second)
			m.Set("a", time.Hour)
		}, false, true},
		{"reset as expired", func(m *Manager) { m.Reset([]Lease{{Key: "a", TTL: time.Hour, Expired: true}}) }, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, _ := start(t, Config{})
				tt.setup(m)
				advance(2 * time.Second)
				exp, ok := m.Expired("a")
				if exp != tt.wantExp || ok != tt.wantOK {
					t.Errorf("Expired(a) = %v, %v, want %v, %v", exp, ok, tt.wantExp, tt.wantOK)
				}
			})
		})
	}
}

func TestResetGivesFreshTTLs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		m.Set("a", 10*time.Second)
		m.Set("gone", 10*time.Second)
		advance(8 * time.Second)

		m.Reset([]Lease{
			{Key: "a", TTL: 10 * time.Second},
			{Key: "b", TTL: 5 * time.Second},
			{Key: "down", TTL: time.Second, Expired: true},
		})
		if got := m.Len(); got != 3 {
			t.Errorf("Len() after Reset = %d, want 3", got)
		}
		if _, ok := m.Expired("gone"); ok {
			t.Errorf("a lease not in the Reset is still known")
		}
		advance(time.Minute)
		want := []event{{"b", 13 * time.Second}, {"a", 18 * time.Second}}
		if diff := cmp.Diff(want, rec.take()); diff != "" {
			t.Errorf("expiries after Reset (-want +got):\n%s", diff)
		}

		// "down" was loaded expired: no expiry until it is revived and
		// runs out again.
		if exp, ok := m.Expired("down"); !exp || !ok {
			t.Errorf("Expired(down) = %v, %v, want true, true", exp, ok)
		}
		if got := m.Renew("down"); got != Revived {
			t.Fatalf("Renew(down) = %v, want revived", got)
		}
		advance(time.Minute)
		// Revived at 68s with its one-second TTL.
		if diff := cmp.Diff([]event{{"down", 69 * time.Second}}, rec.take()); diff != "" {
			t.Errorf("expiry of the revived lease (-want +got):\n%s", diff)
		}
	})
}

func TestResetDuplicateKeysLastWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		m.Reset([]Lease{
			{Key: "a", TTL: time.Second},
			{Key: "b", TTL: time.Second, Expired: true},
			{Key: "a", TTL: 5 * time.Second},
			{Key: "b", TTL: 2 * time.Second},
		})
		advance(time.Minute)
		want := []event{{"b", 2 * time.Second}, {"a", 5 * time.Second}}
		if diff := cmp.Diff(want, rec.take()); diff != "" {
			t.Errorf("expiries (-want +got):\n%s", diff)
		}
		if got := m.Len(); got != 2 {
			t.Errorf("Len() = %d, want 2", got)
		}
	})
}

func TestResetNilDropsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{})
		for i := range 100 {
			m.Set(fmt.Sprint(i), time.Duration(i+1)*time.Second)
		}
		advance(10*time.Second + time.Nanosecond)
		if got := len(rec.take()); got != 10 {
			t.Fatalf("%d expiries before Reset, want 10", got)
		}

		m.Reset(nil)
		if got := m.Len(); got != 0 {
			t.Errorf("Len() after Reset(nil) = %d, want 0", got)
		}
		for _, k := range []string{"0", "50"} {
			if got := m.Renew(k); got != Unknown {
				t.Errorf("Renew(%s) after Reset(nil) = %v, want unknown", k, got)
			}
		}
		advance(time.Hour)
		if ev := rec.take(); len(ev) != 0 {
			t.Errorf("dropped leases expired: %v", ev)
		}
	})
}

func TestResetStagger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, rec := start(t, Config{MaxExpiriesPerSecond: 500})
		const ttl = 10 * time.Second
		leases := make([]Lease, 2000)
		for i := range leases {
			leases[i] = Lease{Key: fmt.Sprintf("i%04d", i), TTL: ttl}
		}
		m.Reset(leases)

		advance(ttl - time.Nanosecond)
		if ev := rec.take(); len(ev) != 0 {
			t.Fatalf("%d leases expired before their fresh TTL", len(ev))
		}
		advance(time.Hour)

		// Count per one-second window from the TTL on, and check that the
		// windows are filled in key order (deterministic).
		perWindow := map[int]int{}
		ev := rec.take()
		for i, e := range ev {
			w := int((e.At - ttl) / time.Second)
			perWindow[w]++
			if want := fmt.Sprintf("i%04d", i); e.Key != want {
				t.Fatalf("expiry %d is %s, want %s", i, e.Key, want)
			}
		}
		want := map[int]int{0: 500, 1: 500, 2: 500, 3: 500}
		if diff := cmp.Diff(want, perWindow); diff != "" {
			t.Errorf("expiries per one-second window (-want +got):\n%s", diff)
		}
		assertSpread(t, ev, 500)
	})
}

// assertSpread fails if more than perSecond events fall in any one-second
// interval (sliding, not only aligned windows).
func assertSpread(t *testing.T, ev []event, perSecond int) {
	t.Helper()
	for i := perSecond; i < len(ev); i++ {
		if span := ev[i].At - ev[i-perSecond].At; span < time.Second {
			t.Fatalf("%d expiries within %v (from %v), want at most %d a second",
				perSecond+1, span, ev[i-perSecond].At, perSecond)
		}
	}
}

func TestResetIsDeterministic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		leases := make([]Lease, 5000)
		for i := range leases {
			leases[i] = Lease{
				Key:     fmt.Sprintf("k%d", i),
				TTL:     time.Duration(5+r.IntN(10)) * time.Second,
				Expired: r.IntN(10) == 0,
			}
		}
		deadlines := func(ls []Lease) map[string]uint64 {
			m := New(Config{MaxExpiriesPerSecond: 100})
			m.Reset(ls)
			got := map[string]uint64{}
			for _, l := range ls {
				got[l.Key] = m.lookup(l.Key).state.Load()
			}
			return got
		}
		want := deadlines(leases)
		shuffled := slices.Clone(leases)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if diff := cmp.Diff(want, deadlines(shuffled)); diff != "" {
			t.Errorf("Reset of the same leases in another order gave other deadlines (-first +second):\n%s", diff)
		}
	})
}

func TestStagger(t *testing.T) {
	const s = int64(time.Second)
	tests := []struct {
		name      string
		perSecond int
		in, want  []int64
	}{
		{"under cap", 3, []int64{0, 0, 0}, []int64{0, 0, 0}},
		{"same deadline", 2, []int64{0, 0, 0, 0, 0}, []int64{0, 0, s, s, 2 * s}},
		{"one a second", 1, []int64{0, s / 5, 2 * s / 5}, []int64{0, s, 2 * s}},
		{"spread already", 2, []int64{0, s / 2, s, 3 * s / 2}, []int64{0, s / 2, s, 3 * s / 2}},
		{"spill meets later lease", 2, []int64{0, 0, s / 2, s}, []int64{0, 0, s, s}},
		{"later leases untouched", 1, []int64{0, 0, 10 * s}, []int64{0, s, 10 * s}},
		{"saturates", 1, []int64{maxDeadline, maxDeadline}, []int64{maxDeadline, maxDeadline}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items := make([]item, len(tt.in))
			for i, d := range tt.in {
				items[i] = item{deadline: d}
			}
			stagger(items, tt.perSecond)
			got := make([]int64, len(items))
			for i, it := range items {
				got[i] = it.deadline
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("stagger (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStaggerProperties checks, on random input, that staggering never
// moves a deadline earlier, keeps the order, and leaves at most perSecond in
// any one-second interval.
func TestStaggerProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for round := range 200 {
		perSecond := 1 + r.IntN(50)
		in := make([]int64, r.IntN(2000))
		for i := range in {
			in[i] = r.Int64N(int64(20 * time.Second))
		}
		slices.Sort(in)
		items := make([]item, len(in))
		for i, d := range in {
			items[i] = item{deadline: d}
		}
		stagger(items, perSecond)
		for i, it := range items {
			if it.deadline < in[i] {
				t.Fatalf("round %d: deadline %d moved earlier, %d -> %d", round, i, in[i], it.deadline)
			}
			if i > 0 && it.deadline < items[i-1].deadline {
				t.Fatalf("round %d: deadlines out of order at %d", round, i)
			}
			if i >= perSecond && it.deadline-items[i-perSecond].deadline < int64(time.Second) {
				t.Fatalf("round %d: %d deadlines within a second ending at %d", round, perSecond+1, i)
			}
		}
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		m := New(Config{OnExpire: rec.onExpire})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			m.Run(ctx)
			close(done)
		}()
		m.Set("a", time.Second)
		synctest.Wait()
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Run did not return after its context was cancelled")
		}

		// Without Run nothing expires...
		advance(time.Minute)
		if exp, _ := m.Expired("a"); exp {
			t.Error("a lease expired while Run was not running")
		}
		if ev := rec.take(); len(ev) != 0 {
			t.Errorf("OnExpire called while Run was not running: %v", ev)
		}
		// ...and what fell due meanwhile expires as soon as it runs again.
		go m.Run(t.Context())
		synctest.Wait()
		if diff := cmp.Diff([]event{{"a", time.Minute}}, rec.take()); diff != "" {
			t.Errorf("expiries after restarting Run (-want +got):\n%s", diff)
		}
	})
}

func TestRunTwicePanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := start(t, Config{})
		defer func() {
			if r := recover(); r == nil || !strings.HasPrefix(fmt.Sprint(r), "lease: ") {
				t.Errorf("second Run panicked with %v, want a lease: error", r)
			}
		}()
		m.Run(t.Context())
	})
}

// TestOnExpireMayCallBack uses the Manager the way the server's "remove
// after critical" timers do: the callback itself calls Set and Remove.
func TestOnExpireMayCallBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var m *Manager
		var mu sync.Mutex
		var removed []event
		begin := time.Now()
		m = New(Config{OnExpire: func(keys []string) {
			for _, k := range keys {
				if after, ok := strings.CutPrefix(k, "critical/"); ok {
					// Instance critical: schedule its removal.
					m.Set("remove/"+after, 30*time.Second)
					continue
				}
				m.Remove(k)
				mu.Lock()
				removed = append(removed, event{k, time.Since(begin)})
				mu.Unlock()
			}
			_ = m.Len()
			_, _ = m.Expired(keys[0])
		}})
		go m.Run(t.Context())
		m.Set("critical/x", 10*time.Second)
		m.Set("critical/y", 20*time.Second)
		advance(15 * time.Second)
		m.Remove("remove/x") // x recovered in time
		advance(time.Minute)
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff([]event{{"remove/y", 50 * time.Second}}, removed); diff != "" {
			t.Errorf("removals (-want +got):\n%s", diff)
		}
		if got := m.Len(); got != 2 {
			t.Errorf("Len() = %d, want 2 (the two expired critical/ leases)", got)
		}
	})
}

// TestRemovedLeasesDoNotPileUp checks that the heap follows the live leases
// when long timers are set and removed over and over.
func TestRemovedLeasesDoNotPileUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, _ := start(t, Config{})
		m.Set("keep", 72*time.Hour)
		for i := range 100_000 {
			k := fmt.Sprint(i % 10)
			m.Set(k, 72*time.Hour)
			m.Remove(k)
		}
		m.mu.Lock()
		n := len(m.heap)
		m.mu.Unlock()
		if n > 2048 {
			t.Errorf("heap holds %d items for 1 live lease", n)
		}
		if got := m.Len(); got != 1 {
			t.Errorf("Len() = %d, want 1", got)
		}
	})
}
