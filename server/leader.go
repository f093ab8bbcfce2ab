package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/health"
	"github.com/discotech/disco/lease"
	"github.com/discotech/disco/registry"
)

// duties are what the raft leader does besides writing: it holds the TTL
// leases, runs the health checks and reaps instances that stay critical.
// It follows the catalog as a registry.Observer, so it sees every
// registration, change and removal in order, and it turns what leases and
// checks conclude into status writes through one reconciler: level-triggered,
// so an expiry and a heartbeat that race can never leave the wrong status.
type duties struct {
	store *registry.Store
	cfg   Config
	m     *metrics
	log   *slog.Logger

	leases *lease.Manager // TTL heartbeats
	reaper *lease.Manager // deregister_after timers; never renewed
	checks *health.Runner

	leader atomic.Bool

	mu    sync.Mutex
	dirty map[string]bool // keys whose status may need a write
	reap  map[string]bool // keys whose deregister_after may have passed
	wake  chan struct{}
}

var _ registry.Observer = (*duties)(nil)

func newDuties(store *registry.Store, cfg Config, m *metrics, log *slog.Logger) *duties {
	d := &duties{
		store: store,
		cfg:   cfg,
		m:     m,
		log:   log,
		dirty: make(map[string]bool),
		reap:  make(map[string]bool),
		wake:  make(chan struct{}, 1),
	}
	d.leases = lease.New(lease.Config{OnExpire: func(keys []string) {
		m.leaseExpired.Add(float64(len(keys)))
		d.mark(statusQueue, keys...)
	}})
	d.reaper = lease.New(lease.Config{OnExpire: func(keys []string) { d.mark(reapQueue, keys...) }})
	d.checks = health.NewRunner(health.Config{
		OnChange:      func(key string) { d.mark(statusQueue, key) },
		OnResult:      m.checkResult,
		MaxConcurrent: cfg.CheckConcurrency,
	})
	return d
}

// run runs the timers, the checks and the reconciler until ctx is done.
func (d *duties) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { d.leases.Run(ctx) })
	wg.Go(func() { d.reaper.Run(ctx) })
	wg.Go(func() { d.checks.Run(ctx) })
	wg.Go(func() { d.reconcile(ctx) })
	wg.Wait()
}

// setLeader takes up the duties when this server becomes leader and drops
// them when it stops being leader.
func (d *duties) setLeader(isLeader bool) {
	if isLeader {
		d.leader.Store(true)
		d.store.State().SetObserver(d) // calls Reload with every instance
		return
	}
	d.store.State().SetObserver(nil)
	d.leader.Store(false)
	d.leases.Reset(nil)
	d.reaper.Reset(nil)
	d.checks.Reset(nil)
}

func (d *duties) isLeader() bool { return d.leader.Load() }

// Reload loads every lease, check and reaping timer from the catalog, as a
// new leader must. Every lease gets a fresh TTL, with expiries staggered;
// instances already critical keep their leases expired until a heartbeat
// revives them.
func (d *duties) Reload(all []*catalog.Instance) {
	var leases []lease.Lease
	var checks []health.Entry
	d.reaper.Reset(nil)
	for _, in := range all {
		key := in.Key()
		if in.TTL > 0 {
			leases = append(leases, lease.Lease{Key: key, TTL: in.TTL.D(), Expired: in.Status == catalog.Critical})
		}
		if in.Check != nil {
			checks = append(checks, health.Entry{Key: key, Check: *in.Check, Verdict: in.Status})
		}
		d.trackReaping(in)
	}
	d.leases.Reset(leases)
	d.checks.Reset(checks)
	d.log.Info("leader duties loaded", "instances", len(all), "leases", len(leases), "checks", len(checks))
}

// Apply follows one applied batch. It runs under the state's lock, so it
// only updates in-memory timers; writes happen in the reconciler.
func (d *duties) Apply(events []registry.Event) {
	for i := range events {
		e := &events[i]
		key := catalog.Key(e.Service, e.ID)
		if e.Type == registry.Delete {
			d.leases.Remove(key)
			d.reaper.Remove(key)
			d.checks.Remove(key)
			continue
		}
		in := e.Instance
		switch {
		case in.TTL == 0:
			d.leases.Remove(key)
		case e.Prev == nil || e.Prev.TTL != in.TTL:
			d.leases.Set(key, in.TTL.D())
		}
		if in.Check != nil {
			d.checks.Set(key, *in.Check, in.Status)
		} else {
			d.checks.Remove(key)
		}
		d.trackReaping(in)
	}
}

// trackReaping arms the removal timer of a critical instance that has a
// deregister_after, and disarms it otherwise.
func (d *duties) trackReaping(in *catalog.Instance) {
	if in.Status == catalog.Critical && in.DeregisterAfter > 0 {
		d.reaper.Set(in.Key(), max(time.Until(in.StatusSince.Add(in.DeregisterAfter.D())), 0))
		return
	}
	d.reaper.Remove(in.Key())
}

// heartbeat renews key's lease.
func (d *duties) heartbeat(key string) lease.Renewal {
	r := d.leases.Renew(key)
	switch r {
	case lease.Renewed:
		d.m.heartbeatRenewed.Inc()
	case lease.Revived:
		d.m.heartbeatRevived.Inc()
		d.mark(statusQueue, key)
	default:
		d.m.heartbeatUnknown.Inc()
	}
	return r
}

// registered follows a successful registration of key: it renews the lease
// (a registration is also a heartbeat) and has the reconciler look at the
// instance again, since a replacement can change what its status should be
// (a new TTL, a check added or removed) while keeping the old status.
func (d *duties) registered(key string, ttl bool) {
	if ttl {
		d.leases.Renew(key)
	}
	d.mark(statusQueue, key)
}

// withVitals returns in with the figures of its last vitals check, which
// live in the leader's memory, not in the catalog.
func (d *duties) withVitals(in *catalog.Instance) *catalog.Instance {
	if in == nil || in.Check == nil || in.Check.Type != "vitals" || !d.leader.Load() {
		return in
	}
	v, _, ok := d.checks.Vitals(in.Key())
	if !ok {
		return in
	}
	c := *in
	c.Vitals = v
	return &c
}

// queue names one of the reconciler's work sets.
type queue int

const (
	statusQueue queue = iota // d.dirty
	reapQueue                // d.reap
)

// mark queues keys for the reconciler and wakes it. The set is chosen under
// the lock, since take swaps both sets for fresh ones.
func (d *duties) mark(q queue, keys ...string) {
	d.mu.Lock()
	set := d.dirty
	if q == reapQueue {
		set = d.reap
	}
	for _, k := range keys {
		set[k] = true
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *duties) take() (dirty, reap map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dirty, reap = d.dirty, d.reap
	d.dirty, d.reap = make(map[string]bool), make(map[string]bool)
	return dirty, reap
}

// reconcile writes what leases and checks concluded: status changes in one
// write, then removals in another. A failed write is retried after a second,
// as long as this server is leader.
func (d *duties) reconcile(ctx context.Context) {
	retry := time.NewTimer(0)
	<-retry.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-retry.C:
		}
		dirty, reap := d.take()
		if !d.leader.Load() {
			continue
		}
		var failed []string
		if changes := d.statusChanges(dirty); len(changes) > 0 {
			if _, err := d.store.SetStatus(ctx, changes...); err != nil {
				d.log.Warn("status write failed; will retry", "instances", len(changes), "err", err)
				for _, c := range changes {
					failed = append(failed, catalog.Key(c.Service, c.ID))
				}
				d.mark(statusQueue, failed...)
			}
		}
		if removals := d.removals(reap); len(removals) > 0 {
			if idx, err := d.store.Reap(ctx, removals); err != nil {
				d.log.Warn("reaping failed; will retry", "instances", len(removals), "err", err)
				keys := make([]string, len(removals))
				for i, r := range removals {
					keys[i] = catalog.Key(r.Service, r.ID)
				}
				d.mark(reapQueue, keys...)
				failed = append(failed, keys...)
			} else if idx != 0 {
				d.m.reaped.Add(float64(len(removals)))
				d.log.Info("reaped instances critical past deregister_after", "instances", len(removals), "index", idx)
			}
		}
		if len(failed) > 0 {
			// Drain the wake our own mark caused: retry on the timer, not at once.
			select {
			case <-d.wake:
			default:
			}
			retry.Reset(time.Second)
		}
	}
}

// statusChanges computes, for each key, the status its lease and check call
// for, and returns those that differ from the catalog.
func (d *duties) statusChanges(keys map[string]bool) []registry.StatusChange {
	var changes []registry.StatusChange
	state := d.store.State()
	for key := range keys {
		service, id := catalog.SplitKey(key)
		in, ok := state.Instance(service, id)
		if !ok {
			continue
		}
		status, output, known := d.verdict(in)
		if known && status != in.Status {
			changes = append(changes, registry.StatusChange{Service: service, ID: id, Status: status, Output: output})
		}
	}
	return changes
}

// verdict combines the TTL lease and the health check of in: the worse of
// the two wins.
func (d *duties) verdict(in *catalog.Instance) (status catalog.Status, output string, known bool) {
	key := in.Key()
	status = catalog.Passing
	if in.TTL == 0 && in.Check == nil {
		// Nothing watches it: it is as healthy as it was registered.
		return catalog.Passing, "registered", true
	}
	if in.TTL > 0 {
		if expired, ok := d.leases.Expired(key); ok {
			known = true
			if expired {
				status, output = catalog.Critical, fmt.Sprintf("ttl expired: no heartbeat for %s", in.TTL)
			} else {
				output = "ttl: heartbeat received"
			}
		}
	}
	if in.Check != nil {
		if v, out, ok := d.checks.Verdict(key); ok {
			known = true
			if severity(v) > severity(status) || (v == status && status == catalog.Passing) {
				status, output = v, out
			}
		}
	}
	return status, output, known
}

func severity(s catalog.Status) int {
	switch s {
	case catalog.Passing:
		return 0
	case catalog.Warning:
		return 1
	}
	return 2
}

// removals returns the instances among keys whose deregister_after has
// passed, each guarded by the time it became critical.
func (d *duties) removals(keys map[string]bool) []registry.Removal {
	var out []registry.Removal
	state := d.store.State()
	now := time.Now()
	for key := range keys {
		service, id := catalog.SplitKey(key)
		in, ok := state.Instance(service, id)
		if !ok || in.Status != catalog.Critical || in.DeregisterAfter == 0 {
			continue
		}
		if due := in.StatusSince.Add(in.DeregisterAfter.D()); now.Before(due) {
			// The timer ran early relative to the recorded time (clocks of
			// two leaders differ): arm it again.
			d.reaper.Set(key, due.Sub(now))
			continue
		}
		out = append(out, registry.Removal{Service: service, ID: id, IfCriticalSince: in.StatusSince})
	}
	return out
}
