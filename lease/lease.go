// Package lease keeps time-to-live leases in memory and reports the ones
// that run out without being renewed.
//
// The registry server keeps instance heartbeats here, on the raft leader
// only and never in the raft log: a heartbeat is a [Manager.Renew], and a
// missed one surfaces through [Config.OnExpire], where the server turns it
// into a replicated "critical" write. The server also uses a second Manager
// for "remove the instance after it has been critical for D" timers, which
// it only ever sets and removes, never renews.
//
// Renew is the hot path (hundreds of thousands of calls per second from many
// goroutines), so it costs one read-locked lookup in a sharded map and one
// compare-and-swap on the lease itself: it takes no global lock, does not
// touch the expiry heap or the timer, and does not allocate. The price is
// paid by the rare expiry instead: the heap holds possibly stale deadlines,
// and the expiry loop re-reads the real one before it lets a lease expire.
//
// Deadlines come from the monotonic clock of the real time package, so code
// and tests can run a Manager inside a testing/synctest bubble, where time is
// virtual; the Manager must then be created inside the bubble.
package lease

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// DefaultMaxExpiriesPerSecond is the stagger cap that [Manager.Reset] uses
// when [Config.MaxExpiriesPerSecond] is zero.
const DefaultMaxExpiriesPerSecond = 500

// MaxBatch is the largest number of keys handed to one [Config.OnExpire] call.
// More leases falling due at once are delivered in several calls, in order, so
// that a mass expiry neither builds one huge slice nor holds the heap lock for
// long.
const MaxBatch = 1024

// Config configures a [Manager].
type Config struct {
	// OnExpire receives the keys whose lease ran out without renewal, in
	// deadline order (ties in key order), at most MaxBatch keys per call.
	// Each expiry is delivered exactly once. OnExpire is called from the
	// goroutine running [Manager.Run], never while the Manager holds a lock,
	// so it may call back into the Manager; it should not block for long,
	// since no further leases expire until it returns. The slice is the
	// callee's to keep.
	//
	// A delivery is not atomic with the expiry: between the moment a lease
	// expires and the call, a concurrent Renew may already have revived it
	// (and returned [Revived]), or a Remove, Set or Reset may have dropped it.
	// A caller that must not act on such a key should check
	// [Manager.Expired] under the same lock that serialises its handling of
	// Revived.
	//
	// OnExpire may be nil, in which case expiries are visible only through
	// Expired and Renew.
	OnExpire func(keys []string)

	// MaxExpiriesPerSecond caps how many leases [Manager.Reset] lets fall due
	// in any one-second interval; the rest are pushed later (a stagger, like
	// etcd's lessor Promote), so that a new leader does not mark a whole
	// cluster critical in one burst. It does not apply to Set or Renew.
	// Zero means DefaultMaxExpiriesPerSecond; negative is invalid.
	MaxExpiriesPerSecond int
}

// Validate reports whether c can be used by [New].
func (c Config) Validate() error {
	if c.MaxExpiriesPerSecond < 0 {
		return fmt.Errorf("lease: MaxExpiriesPerSecond is %d; use a positive cap, or 0 for the default of %d",
			c.MaxExpiriesPerSecond, DefaultMaxExpiriesPerSecond)
	}
	return nil
}

// Renewal is the outcome of [Manager.Renew].
type Renewal int

const (
	// Unknown means there is no lease for the key; nothing was changed.
	Unknown Renewal = iota
	// Renewed means the lease was live and its deadline has been extended.
	Renewed
	// Revived means the lease had expired (and OnExpire was or will be
	// called for it); it is live again with a fresh deadline and can expire
	// again later.
	Revived
)

// String returns the lower-case name of r.
func (r Renewal) String() string {
	switch r {
	case Unknown:
		return "unknown"
	case Renewed:
		return "renewed"
	case Revived:
		return "revived"
	}
	return fmt.Sprintf("Renewal(%d)", int(r))
}

// Lease is one lease given to [Manager.Reset].
type Lease struct {
	// Key names the lease.
	Key string
	// TTL is both the time from the Reset to the first deadline and the
	// extension each later Renew grants.
	TTL time.Duration
	// Expired loads the lease as already expired: no OnExpire is called for
	// it until it is renewed (Revived) and then runs out again.
	Expired bool
}

// A lease's state lives in one atomic word so that Renew, the expiry loop
// and Remove/Set/Reset decide every race with a single compare-and-swap:
//
//	bits 63..2  deadline, nanoseconds since the Manager's epoch (~146 years)
//	bit  1      dead: removed or replaced; the entry is no longer in the map
//	bit  0      expired: OnExpire has been or is about to be called
const (
	expiredBit  = 1 << 0
	deadBit     = 1 << 1
	flagBits    = 2
	maxDeadline = 1<<(64-flagBits) - 1
	noDeadline  = int64(maxDeadline) + 1 // "no timer armed"; above any deadline
)

func pack(deadline int64, flags uint64) uint64 { return uint64(deadline)<<flagBits | flags }

func deadlineOf(state uint64) int64 { return int64(state >> flagBits) }

// addDeadline returns now+ttl, saturated so that it fits in the state word.
func addDeadline(now, ttl int64) int64 {
	if ttl > maxDeadline-now {
		return maxDeadline
	}
	return now + ttl
}

// entry is one lease. A Set or Reset always creates a new entry rather than
// reusing the old one, so a heap item that points to a replaced entry is
// recognised by the entry's dead bit and never fires.
type entry struct {
	state atomic.Uint64
	ttl   int64 // nanoseconds, >= 0; fixed for the entry's life
	key   string
}

// cacheLine is the cache line size of the common server CPUs (amd64, arm64).
const cacheLine = 64

// numShards spreads Renew's read locks over enough cache lines that many
// cores rarely touch the same one; at 64 bytes a shard, 256 of them cost
// 16 KiB per Manager.
const numShards = 256

type shardData struct {
	mu sync.RWMutex
	m  map[string]*entry
}

// shard is padded to the size of a cache line, so that a reader bumping one
// shard's reader count invalidates the line of at most one neighbour (Go
// does not align allocations to cache lines) rather than of several.
type shard struct {
	shardData
	_ [cacheLine - unsafe.Sizeof(shardData{})%cacheLine]byte
}

// Manager holds leases and expires them. The zero value is not usable; call
// [New]. All methods are safe for concurrent use.
type Manager struct {
	// Read-only after New. Every Renew reads epoch and seed, so padding
	// keeps them off the cache lines that lock words are written to.
	onExpire  func([]string)
	perSecond int
	epoch     time.Time
	seed      maphash.Seed
	_         [cacheLine]byte
	shards    [numShards]shard
	_         [cacheLine]byte

	// mu guards heap and armed. Lock order: shard locks (in index order)
	// before mu; nothing takes a shard lock while holding mu.
	mu   sync.Mutex
	heap expiryHeap
	// armed is the deadline the Run loop's timer is set for, or noDeadline.
	// A push with an earlier deadline lowers it and signals wake, so only
	// such pushes wake the loop, and only once each.
	armed int64
	// heapDead counts heap items whose entry is dead, so that a burst of
	// Removes of long timers does not keep their items for the full TTL. It
	// is approximate under a racing Reset, which is harmless: it only
	// decides when to compact.
	heapDead atomic.Int64
	// due collects the keys of one batch under mu, so that each delivered
	// batch costs one allocation of exactly its size.
	due     []string
	wake    chan struct{}
	running atomic.Bool
}

// New returns a Manager configured by cfg. Leases expire only while
// [Manager.Run] runs. New panics if cfg is not valid (see [Config.Validate]).
func New(cfg Config) *Manager {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	m := &Manager{
		onExpire:  cfg.OnExpire,
		perSecond: cfg.MaxExpiriesPerSecond,
		epoch:     time.Now(),
		seed:      maphash.MakeSeed(),
		armed:     noDeadline,
		wake:      make(chan struct{}, 1),
	}
	if m.perSecond == 0 {
		m.perSecond = DefaultMaxExpiriesPerSecond
	}
	for i := range m.shards {
		m.shards[i].m = make(map[string]*entry)
	}
	return m
}

// now is the time since the epoch on the monotonic clock, so wall-clock
// steps never expire or extend a lease.
func (m *Manager) now() int64 { return int64(time.Since(m.epoch)) }

func (m *Manager) shardIndex(key string) uint64 {
	return maphash.String(m.seed, key) & (numShards - 1)
}

func (m *Manager) shard(key string) *shard { return &m.shards[m.shardIndex(key)] }

func (m *Manager) lookup(key string) *entry {
	s := m.shard(key)
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	return e
}

// Set creates or replaces the lease for key with the given ttl: its deadline
// is now+ttl and it is not expired. A replaced lease never fires, even if its
// deadline was earlier. A ttl of zero or less makes the lease due at once.
func (m *Manager) Set(key string, ttl time.Duration) {
	e := &entry{key: key, ttl: max(int64(ttl), 0)}
	d := addDeadline(m.now(), e.ttl)
	e.state.Store(pack(d, 0))

	s := m.shard(key)
	s.mu.Lock()
	if old := s.m[key]; old != nil {
		m.kill(old)
	}
	s.m[key] = e
	s.mu.Unlock()

	// The entry is visible before it is scheduled. That is fine: a Renew in
	// between only moves its deadline later, which the loop picks up lazily,
	// and a Remove in between leaves a dead item that never fires.
	m.schedule(e, d)
}

// Renew extends key's lease to now plus its TTL and reports what it found.
// A Renew that completes before the deadline is never reported as expired.
// A lease whose deadline has passed but which the expiry loop has not yet
// handled (it is busy, or Run is not running) is still simply Renewed: it
// expires only when the loop says so, and then exactly once.
// Renew does not allocate and, unless it revives an expired lease, takes no
// lock other than a read lock on one shard of the key map.
func (m *Manager) Renew(key string) Renewal {
	for {
		e := m.lookup(key)
		if e == nil {
			return Unknown
		}
		d := addDeadline(m.now(), e.ttl)
		switch e.extend(d) {
		case Renewed:
			return Renewed
		case Revived:
			// The expiry loop dropped the entry from the heap when it
			// expired it, and only our CAS brought it back.
			m.schedule(e, d)
			return Revived
		}
		// Removed or replaced since the lookup: the Remove, Set or Reset
		// came first, so look again.
	}
}

// extend moves e's deadline to d and clears its expired bit. It returns
// Revived if e had expired, and Unknown if e is dead.
func (e *entry) extend(d int64) Renewal {
	for {
		old := e.state.Load()
		switch {
		case old&deadBit != 0:
			return Unknown
		case old&expiredBit == 0 && deadlineOf(old) >= d:
			// A concurrent Renew read the clock later than we did.
			return Renewed
		}
		// Fails if the expiry loop, another Renew or a Remove got in
		// between; then decide again on the new state.
		if e.state.CompareAndSwap(old, pack(d, 0)) {
			if old&expiredBit != 0 {
				return Revived
			}
			return Renewed
		}
	}
}

// Remove forgets key; its lease will not fire. Unknown keys are ignored.
func (m *Manager) Remove(key string) {
	s := m.shard(key)
	s.mu.Lock()
	if e := s.m[key]; e != nil {
		delete(s.m, key)
		m.kill(e)
	}
	s.mu.Unlock()
}

// kill marks e dead. It is called with e's shard locked, so a lookup that
// finds e dead and looks again finds the replacement or nothing.
func (m *Manager) kill(e *entry) {
	if old := e.state.Or(deadBit); old&(expiredBit|deadBit) == 0 {
		// A live, unexpired entry has exactly one item in the heap.
		m.heapDead.Add(1)
	}
}

// Expired reports whether key's lease has run out and not been renewed,
// set or reset since. ok is false if there is no lease for key.
func (m *Manager) Expired(key string) (expired, ok bool) {
	for {
		e := m.lookup(key)
		if e == nil {
			return false, false
		}
		if s := e.state.Load(); s&deadBit == 0 {
			return s&expiredBit != 0, true
		}
	}
}

// Len returns the number of leases, expired or not.
func (m *Manager) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// Reset replaces every lease with the given ones, as a new raft leader does:
// each gets a fresh deadline of now+TTL, and then deadlines are staggered so
// that no more than MaxExpiriesPerSecond fall into any one-second interval.
// The stagger is deterministic: leases are ordered by (deadline, key), and a
// lease is pushed back just enough to fall at least a second after the
// lease MaxExpiriesPerSecond places before it. Leases with Expired set are
// loaded as expired and take no part in the stagger. If a key appears more
// than once, the last one wins, as with a sequence of Sets.
//
// Reset(nil) drops every lease (leadership lost). No dropped lease fires,
// except one whose expiry is already being delivered (see Config.OnExpire).
//
// Reset builds the new leases before it takes any lock, then holds every
// lock while it swaps them in and marks the old ones dead, so other calls
// pause for about one pass over the old leases.
func (m *Manager) Reset(leases []Lease) {
	now := m.now()

	last := make(map[string]int, len(leases))
	for i, l := range leases {
		last[l.Key] = i
	}
	var maps [numShards]map[string]*entry
	var items []item
	for i, l := range leases {
		if last[l.Key] != i {
			continue
		}
		e := &entry{key: l.Key, ttl: max(int64(l.TTL), 0)}
		if l.Expired {
			e.state.Store(pack(now, expiredBit))
		} else {
			items = append(items, item{deadline: addDeadline(now, e.ttl), e: e})
		}
		si := m.shardIndex(l.Key)
		if maps[si] == nil {
			maps[si] = make(map[string]*entry)
		}
		maps[si][l.Key] = e
	}
	slices.SortFunc(items, compareItems)
	stagger(items, m.perSecond)
	for _, it := range items {
		it.e.state.Store(pack(it.deadline, 0))
	}
	// Staggering keeps deadlines in order but can tie two leases whose keys
	// are out of order, so the sorted slice is not necessarily a heap yet.
	h := expiryHeap(items)
	h.init()

	// Every lock at once: a Set or revival must land either wholly in the
	// old state (and be dropped) or wholly in the new one.
	for i := range m.shards {
		m.shards[i].mu.Lock()
	}
	m.mu.Lock()
	for i := range m.shards {
		s := &m.shards[i]
		for _, e := range s.m {
			// Not kill: the old heap goes away with its dead items.
			e.state.Or(deadBit)
		}
		s.m = maps[i]
		if s.m == nil {
			s.m = make(map[string]*entry)
		}
	}
	m.heap = h
	m.heapDead.Store(0)
	// The loop's timer is set for the old heap; let it re-read the new one.
	m.armed = noDeadline
	m.signal()
	m.mu.Unlock()
	for i := range m.shards {
		m.shards[i].mu.Unlock()
	}
}

// stagger pushes deadlines (sorted ascending) later so that any perSecond+1
// consecutive ones span at least a second, which is exactly "at most
// perSecond in any one-second interval". Moving a deadline to its floor
// keeps the slice sorted, since floors never decrease.
func stagger(items []item, perSecond int) {
	for i := perSecond; i < len(items); i++ {
		if floor := addDeadline(items[i-perSecond].deadline, int64(time.Second)); items[i].deadline < floor {
			items[i].deadline = floor
		}
	}
}

// schedule puts e into the heap with deadline d and wakes the loop if d is
// earlier than the one its timer waits for.
func (m *Manager) schedule(e *entry, d int64) {
	m.mu.Lock()
	m.heap.push(item{deadline: d, e: e})
	if d < m.armed {
		m.armed = d
		m.signal()
	}
	m.compactLocked()
	m.mu.Unlock()
}

// signal wakes Run without blocking; one pending signal is enough, because
// the loop re-reads the heap after taking it.
func (m *Manager) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// compactLocked drops dead items once they are the majority, so memory
// follows the live leases rather than every Set of the last TTL. The cost is
// linear but paid at most once per len/2 Removes.
func (m *Manager) compactLocked() {
	n := len(m.heap)
	if n < 1024 || m.heapDead.Load()*2 <= int64(n) {
		return
	}
	live := m.heap[:0]
	for _, it := range m.heap {
		if it.e.state.Load()&deadBit == 0 {
			live = append(live, it)
		}
	}
	clear(m.heap[len(live):])
	m.heapDead.Add(-int64(n - len(live)))
	m.heap = live
	m.heap.init()
	m.shrinkLocked()
}

// shrinkLocked gives back the heap's memory after a mass expiry or
// compaction; append only ever grows it.
func (m *Manager) shrinkLocked() {
	c := cap(m.heap)
	if c <= 4096 || len(m.heap) >= c/4 {
		return
	}
	h := make(expiryHeap, len(m.heap), 2*len(m.heap))
	copy(h, m.heap)
	m.heap = h
}

// Run runs the expiry loop until ctx is done. Leases expire only while Run
// runs; ones that fell due while it did not expire as soon as it starts.
// Run must not be called again until the previous call has returned.
func (m *Manager) Run(ctx context.Context) {
	if !m.running.CompareAndSwap(false, true) {
		panic(errors.New("lease: Run called while another Run is active"))
	}
	defer m.running.Store(false)

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		next := m.expireDue()
		if next == noDeadline {
			timer.Stop()
		} else {
			timer.Reset(time.Duration(next - m.now()))
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-m.wake:
		}
	}
}

// expireDue expires every lease that is due and delivers them to OnExpire.
// It returns the earliest pending deadline, or noDeadline.
func (m *Manager) expireDue() int64 {
	for {
		keys, next := m.collect()
		if len(keys) > 0 && m.onExpire != nil {
			m.onExpire(keys)
		}
		if next >= 0 {
			return next
		}
	}
}

// collect pops due items under the heap lock and expires their leases. It
// returns at most MaxBatch keys; next is -1 if more may be due, otherwise the
// earliest pending deadline (also recorded in armed).
func (m *Manager) collect() (keys []string, next int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for len(m.heap) > 0 && m.heap[0].deadline <= now {
		if len(m.due) == MaxBatch {
			return m.takeDueLocked(), -1
		}
		it := m.heap.pop()
		for {
			s := it.e.state.Load()
			if s&deadBit != 0 {
				m.heapDead.Add(-1)
				break
			}
			if s&expiredBit != 0 {
				// Cannot happen: an expired entry has no heap item. Dropping
				// it is the safe answer either way.
				break
			}
			if d := deadlineOf(s); d != it.deadline {
				// Renewed since it was pushed. Requeue at the real deadline,
				// which keeps delivery in deadline order even if that too
				// has passed.
				m.heap.push(item{deadline: d, e: it.e})
				break
			}
			// A racing Renew or Remove makes this fail; look again.
			if it.e.state.CompareAndSwap(s, s|expiredBit) {
				m.due = append(m.due, it.e.key)
				break
			}
		}
	}
	m.shrinkLocked()
	m.armed = noDeadline
	if len(m.heap) > 0 {
		m.armed = m.heap[0].deadline
	}
	return m.takeDueLocked(), m.armed
}

// takeDueLocked returns a copy of the collected keys, which OnExpire may
// keep, and empties the buffer for the next batch.
func (m *Manager) takeDueLocked() []string {
	if len(m.due) == 0 {
		return nil
	}
	keys := slices.Clone(m.due)
	clear(m.due) // the buffer must not keep removed keys alive
	m.due = m.due[:0]
	return keys
}

// item is a heap entry: the deadline e had when it was pushed, which is
// never later than its real one.
type item struct {
	deadline int64
	e        *entry
}

func compareItems(a, b item) int {
	if a.deadline != b.deadline {
		if a.deadline < b.deadline {
			return -1
		}
		return 1
	}
	return strings.Compare(a.e.key, b.e.key)
}

// expiryHeap is a min-heap of items by (deadline, key). It is written out
// rather than using container/heap, whose Push(any) would allocate.
type expiryHeap []item

func (h *expiryHeap) push(it item) {
	*h = append(*h, it)
	h.up(len(*h) - 1)
}

func (h *expiryHeap) pop() item {
	old := *h
	n := len(old) - 1
	it := old[0]
	old[0] = old[n]
	old[n] = item{} // let the entry be collected
	*h = old[:n]
	h.down(0)
	return it
}

func (h expiryHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h expiryHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if compareItems(h[i], h[p]) >= 0 {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (h expiryHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n || l < 0 {
			return
		}
		c := l
		if r := l + 1; r < n && compareItems(h[r], h[l]) < 0 {
			c = r
		}
		if compareItems(h[c], h[i]) >= 0 {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}
