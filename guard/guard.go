// Package guard stands between the sources and everything downstream of the
// agent (DNS, the shared-memory table, the balancers), so that a source's
// bad moment cannot take a node's routing down:
//
//   - additions and changes apply at once;
//   - a removal of more than half of a service's backends, or of all of them,
//     is held until the same smaller set has been seen for the hold window,
//     or until the agent's own probes find the held backends dead; smaller
//     removals apply at once, and add up over the window, so that many
//     small removals in a row are held once together they take more than
//     half;
//   - a source that fails keeps what it said last;
//   - what is applied is written to disk (atomically, debounced) and loaded
//     at start, so an agent restarted while every source is down still
//     routes, as long as the state is younger than the maximum age;
//   - every hold is visible in Status and in metrics.
//
// A backend is an instance that is passing. One that turns warning or
// critical counts as removed, so a registry that suddenly fails every
// health check is held like one that suddenly lists nothing.
//
// Several sources may report one service: its backends are the union of
// what they report. When two sources report the same instance id, the
// source given first wins.
package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// Config configures a Guard.
type Config struct {
	// HoldWindow is how long a large removal must be seen unchanged before
	// it applies.
	HoldWindow time.Duration
	// StateDir holds the last-known-good file; empty keeps nothing on disk.
	StateDir string
	// MaxAge is the oldest last-known-good state used at start.
	MaxAge time.Duration
	// WriteDelay debounces writes of the last-known-good state.
	WriteDelay time.Duration
	// Probe checks a held backend: nil error means alive. Nil: TCP connect
	// (or GET of its vitals endpoint when it has a vitals check).
	Probe func(ctx context.Context, in *catalog.Instance) error
	// ProbeInterval is the time between probes of a held backend, and
	// ProbeFailures how many failures in a row confirm it dead.
	ProbeInterval time.Duration
	ProbeFailures int

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults: a 30s hold window, state up to 24h old.
func DefaultConfig() Config {
	return Config{
		HoldWindow:    30 * time.Second,
		MaxAge:        24 * time.Hour,
		WriteDelay:    time.Second,
		ProbeInterval: 2 * time.Second,
		ProbeFailures: 3,
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.HoldWindow < 0:
		return fmt.Errorf("guard: hold-window must not be negative, got %s", c.HoldWindow)
	case c.MaxAge < 0:
		return fmt.Errorf("guard: lkg-max-age must not be negative, got %s", c.MaxAge)
	case c.ProbeInterval <= 0:
		return fmt.Errorf("guard: probe interval must be positive, got %s", c.ProbeInterval)
	case c.ProbeFailures < 1:
		return fmt.Errorf("guard: probe failures must be at least 1, got %d", c.ProbeFailures)
	}
	return nil
}

// Table is what the guard lets through: every service's backends, sorted by
// id. A Table is never modified once published; read it freely.
type Table struct {
	Services map[string][]*catalog.Instance
	// Version grows with every change.
	Version uint64
}

// Service returns a service's backends and whether the table knows it; it
// makes a Table a dnsserver.Catalog.
func (t *Table) Service(name string) ([]*catalog.Instance, bool) {
	ins, ok := t.Services[name]
	return ins, ok
}

// Guard merges the sources' reports and applies them safely.
type Guard struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	sources []*sourceState // in precedence order

	mu      sync.Mutex
	applied map[string]map[string]*catalog.Instance // service → id → backend
	holds   map[string]*hold
	removed map[string][]removal // small removals applied, within the last hold window
	lkg     *lkgState            // loaded at start, until every source has reported
	version uint64
	changed chan struct{}
	table   atomic.Pointer[Table]

	writeTimer *time.Timer
	ctx        context.Context // Run's, for probes; nil before Run
}

// sourceState is one source's reports and health.
type sourceState struct {
	g        *Guard
	spec     string
	services map[string][]*catalog.Instance
	reported bool // has reported at least once since start
	healthy  bool
	err      string
	since    time.Time // when healthy last changed
	last     time.Time // last report
	updates  int
	failures int
}

// hold is a removal waiting for confirmation.
type hold struct {
	service  string
	target   []string // the ids the removal would leave
	removing map[string]*probe
	since    time.Time
	deadline time.Time
	reason   string
	timer    *time.Timer
	ctx      context.Context // the probes'; nil until they start
	cancel   context.CancelFunc
}

// probe is the agent's own view of one held backend.
type probe struct {
	in       *catalog.Instance
	started  bool
	failures int
	dead     bool
	lastErr  string
}

// New returns a guard for the sources named by specs, in precedence order,
// with the last-known-good state loaded from cfg.StateDir when there is one
// young enough.
func New(specs []string, cfg Config) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Probe == nil {
		cfg.Probe = DefaultProbe
	}
	g := &Guard{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "guard"),
		m:       newMetrics(cfg.Registerer),
		applied: map[string]map[string]*catalog.Instance{},
		holds:   map[string]*hold{},
		removed: map[string][]removal{},
		changed: make(chan struct{}),
	}
	now := time.Now()
	for _, spec := range specs {
		g.sources = append(g.sources, &sourceState{g: g, spec: source.Redact(spec), services: map[string][]*catalog.Instance{}, since: now})
	}
	if cfg.StateDir != "" {
		st, err := loadLKG(cfg.StateDir, cfg.MaxAge, now)
		switch {
		case err != nil:
			g.log.Warn("guard: last-known-good state not used", "err", err)
		case st != nil:
			g.lkg = st
			for svc, ins := range st.Services {
				g.applied[svc] = byID(ins)
			}
			g.log.Info("guard: serving the last-known-good state until every source has reported", "services", len(st.Services), "age", now.Sub(st.SavedAt).Round(time.Second))
		}
	}
	g.m.lkgLoaded.Set(b2f(g.lkg != nil))
	g.publish()
	return g, nil
}

// Sink returns the sink for the i-th source given to New.
func (g *Guard) Sink(i int) source.Sink { return g.sources[i] }

// Table returns the current table.
func (g *Guard) Table() *Table { return g.table.Load() }

// Changed returns a channel closed at the next change of the table.
func (g *Guard) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

// Run keeps probing held backends and writing the state until ctx is done,
// then writes the state a last time.
func (g *Guard) Run(ctx context.Context) {
	g.mu.Lock()
	g.ctx = ctx
	for _, h := range g.holds {
		g.startProbes(h)
	}
	g.mu.Unlock()
	<-ctx.Done()
	g.mu.Lock()
	for _, h := range g.holds {
		h.timer.Stop()
		if h.cancel != nil {
			h.cancel()
		}
	}
	if g.writeTimer != nil && g.writeTimer.Stop() {
		g.writeTimer = nil
		g.mu.Unlock()
		g.write()
		return
	}
	g.mu.Unlock()
}

// Update implements source.Sink for one source.
func (s *sourceState) Update(u source.Update) {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	touched := map[string]bool{}
	if u.Full {
		for svc := range s.services {
			if _, still := u.Services[svc]; !still {
				touched[svc] = true
			}
		}
		s.services = map[string][]*catalog.Instance{}
	}
	for svc, ins := range u.Services {
		s.services[svc] = ins
		touched[svc] = true
	}
	for svc := range s.services {
		if len(s.services[svc]) == 0 {
			delete(s.services, svc)
		}
	}
	if !s.healthy {
		s.since = now
	}
	s.healthy, s.err, s.last = true, "", now
	s.updates++
	g.m.sourceHealthy.WithLabelValues(s.spec).Set(1)
	g.m.sourceUpdates.WithLabelValues(s.spec).Inc()
	if !s.reported {
		s.reported = true
		if g.lkg != nil && g.allReported() {
			// Every source has spoken: the state from disk has done its
			// job, and what it alone held now goes through the holds.
			for svc := range g.lkg.Services {
				touched[svc] = true
			}
			g.lkg = nil
			g.m.lkgLoaded.Set(0)
			g.log.Info("guard: every source has reported; the last-known-good state retires")
		}
	}
	changed := false
	for _, svc := range slices.Sorted(maps.Keys(touched)) {
		changed = g.reconcile(svc, now) || changed
	}
	if changed {
		g.publish()
	}
}

// Fail implements source.Sink for one source.
func (s *sourceState) Fail(err error) {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.healthy || !s.reported {
		s.since = time.Now()
	}
	s.healthy, s.err = false, err.Error()
	s.failures++
	g.m.sourceHealthy.WithLabelValues(s.spec).Set(0)
	g.m.sourceFailures.WithLabelValues(s.spec).Inc()
}

func (g *Guard) allReported() bool {
	for _, s := range g.sources {
		if !s.reported {
			return false
		}
	}
	return true
}

// desired is what the sources (and the state from disk, while it stands)
// say a service's backends are: passing instances, the first source's
// version of an id winning.
func (g *Guard) desired(svc string) map[string]*catalog.Instance {
	out := map[string]*catalog.Instance{}
	for _, s := range g.sources {
		for _, in := range s.services[svc] {
			if _, taken := out[in.ID]; !taken && in.Status == catalog.Passing {
				out[in.ID] = in
			}
		}
	}
	if g.lkg != nil {
		for _, in := range g.lkg.Services[svc] {
			if _, taken := out[in.ID]; !taken {
				out[in.ID] = in
			}
		}
	}
	return out
}

// reconcile brings a service's applied backends toward what the sources
// say, holding a large removal. It reports whether the applied set changed.
func (g *Guard) reconcile(svc string, now time.Time) bool {
	want := g.desired(svc)
	have := g.applied[svc]
	next := map[string]*catalog.Instance{}
	var removing []string
	for id, in := range want {
		next[id] = in // additions and changes apply at once
	}
	for id := range have {
		if _, kept := want[id]; !kept {
			removing = append(removing, id)
		}
	}
	sort.Strings(removing)
	h := g.holds[svc]
	// Measured against what is applied, held backends included, plus what
	// small removals took within the last hold window: a source that
	// drops backends one at a time is held once it has dropped more than
	// half, as one that drops them all at once is. A hold whose removal
	// shrinks to half or less ends, and what is left of it applies.
	recent := g.recentRemovals(svc, now)
	large := len(removing) > 0 && (len(want) == 0 || 2*(len(removing)+recent) > len(have)+recent)
	switch {
	case len(removing) == 0:
		g.release(svc, "the removal was withdrawn")
	case !large:
		g.release(svc, "")
		g.m.changes.WithLabelValues("removed").Add(float64(len(removing)))
		g.removed[svc] = append(g.removed[svc], removal{at: now, n: len(removing)})
	default:
		target := slices.Sorted(maps.Keys(want))
		if h == nil || !slices.Equal(h.target, target) {
			// A new removal, or a different one: the window starts now.
			g.release(svc, "")
			h = g.hold(svc, target, removing, have, recent, now)
		}
		for _, id := range removing {
			p := h.removing[id]
			if p == nil {
				p = &probe{in: have[id]}
				h.removing[id] = p
			}
			if !p.dead {
				next[id] = have[id] // held
			}
		}
		g.startProbes(h)
	}
	if len(next) == 0 && !g.known(svc) {
		// No source names the service any more, and nothing is held.
		_, was := g.applied[svc]
		delete(g.applied, svc)
		return was
	}
	if _, was := g.applied[svc]; was && reflect.DeepEqual(next, have) {
		return false
	}
	g.applied[svc] = next
	return true
}

// removal is a small removal applied: when, and how many backends.
type removal struct {
	at time.Time
	n  int
}

// recentRemovals counts the backends small removals took from svc within
// the last hold window, forgetting older ones.
func (g *Guard) recentRemovals(svc string, now time.Time) int {
	rs := g.removed[svc]
	kept := rs[:0]
	total := 0
	for _, r := range rs {
		if now.Sub(r.at) < g.cfg.HoldWindow {
			kept = append(kept, r)
			total += r.n
		}
	}
	if len(kept) == 0 {
		delete(g.removed, svc)
	} else {
		g.removed[svc] = kept
	}
	return total
}

// known reports whether any source still names svc, even with no backends.
func (g *Guard) known(svc string) bool {
	for _, s := range g.sources {
		if _, ok := s.services[svc]; ok {
			return true
		}
	}
	return false
}

// hold starts holding the removal of ids from svc.
func (g *Guard) hold(svc string, target, removing []string, have map[string]*catalog.Instance, recent int, now time.Time) *hold {
	reason := fmt.Sprintf("would remove %d of %d backends", len(removing), len(have))
	if len(target) == 0 {
		reason = fmt.Sprintf("would remove all %d backends", len(have))
	}
	if recent > 0 {
		reason += fmt.Sprintf(", after %d removed within the last %s", recent, g.cfg.HoldWindow)
	}
	h := &hold{service: svc, target: target, removing: map[string]*probe{}, since: now, deadline: now.Add(g.cfg.HoldWindow), reason: reason}
	h.timer = time.AfterFunc(g.cfg.HoldWindow, func() { g.expire(h) })
	g.holds[svc] = h
	g.m.holds.Set(float64(len(g.holds)))
	g.m.changes.WithLabelValues("held").Inc()
	g.log.Warn("guard: holding a large removal", "service", svc, "reason", reason, "until", h.deadline.Format(time.RFC3339))
	return h
}

// release ends svc's hold, if any, logging why when why is not empty.
func (g *Guard) release(svc, why string) {
	h := g.holds[svc]
	if h == nil {
		return
	}
	h.timer.Stop()
	if h.cancel != nil {
		h.cancel()
	}
	delete(g.holds, svc)
	g.m.holds.Set(float64(len(g.holds)))
	if why != "" {
		g.m.changes.WithLabelValues("withdrawn").Inc()
		g.log.Info("guard: hold ended", "service", svc, "why", why)
	}
}

// expire applies a removal that stayed the same for the whole window.
func (g *Guard) expire(h *hold) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holds[h.service] != h {
		return // released or replaced meanwhile
	}
	g.release(h.service, "")
	delete(g.removed, h.service) // confirmed: the window starts afresh
	g.m.changes.WithLabelValues("confirmed").Inc()
	g.log.Info("guard: removal confirmed by the hold window", "service", h.service, "removed", len(h.removing))
	g.applied[h.service] = g.desired(h.service)
	if len(g.applied[h.service]) == 0 && !g.known(h.service) {
		delete(g.applied, h.service)
	}
	g.publish()
}

// startProbes starts probing each held backend not probed yet, until the
// hold ends. Before Run there is nothing to probe with; Run starts them.
// g.mu is held.
func (g *Guard) startProbes(h *hold) {
	if g.ctx == nil {
		return
	}
	if h.ctx == nil {
		h.ctx, h.cancel = context.WithCancel(g.ctx)
	}
	for id, p := range h.removing {
		if !p.started {
			p.started = true
			go g.probeLoop(h.ctx, h, id, p.in)
		}
	}
}

func (g *Guard) probeLoop(ctx context.Context, h *hold, id string, in *catalog.Instance) {
	t := time.NewTicker(g.cfg.ProbeInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, g.cfg.ProbeInterval)
		err := g.cfg.Probe(pctx, in)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if g.probed(h, id, err) {
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// probed records a probe's result and reports whether probing id is over.
func (g *Guard) probed(h *hold, id string, err error) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := h.removing[id]
	if g.holds[h.service] != h || p == nil {
		return true
	}
	if err == nil {
		p.failures, p.lastErr = 0, ""
		return false
	}
	p.failures++
	p.lastErr = err.Error()
	if p.failures < g.cfg.ProbeFailures {
		return false
	}
	p.dead = true
	g.m.changes.WithLabelValues("probed_dead").Inc()
	g.log.Info("guard: held backend confirmed dead by probes", "service", h.service, "id", id, "err", err)
	if next := g.applied[h.service]; next[id] != nil {
		next = maps.Clone(next)
		delete(next, id)
		g.applied[h.service] = next
	}
	allDead := true
	for _, q := range h.removing {
		allDead = allDead && q.dead
	}
	if allDead {
		g.release(h.service, "")
		delete(g.removed, h.service)
		g.m.changes.WithLabelValues("confirmed").Inc()
		g.log.Info("guard: removal confirmed by probes", "service", h.service)
	}
	g.publish()
	return true
}

// publish makes the applied state the table and schedules a write. g.mu
// is held.
func (g *Guard) publish() {
	g.version++
	t := &Table{Services: make(map[string][]*catalog.Instance, len(g.applied)), Version: g.version}
	n := 0
	for svc, set := range g.applied {
		list := slices.Collect(maps.Values(set))
		source.SortInstances(list)
		t.Services[svc] = list
		n += len(list)
	}
	g.table.Store(t)
	close(g.changed)
	g.changed = make(chan struct{})
	g.m.services.Set(float64(len(t.Services)))
	g.m.backends.Set(float64(n))
	held := 0
	for _, h := range g.holds {
		for _, p := range h.removing {
			if !p.dead {
				held++
			}
		}
	}
	g.m.held.Set(float64(held))
	if g.cfg.StateDir != "" && g.writeTimer == nil && g.version > 1 {
		g.writeTimer = time.AfterFunc(g.cfg.WriteDelay, func() {
			g.mu.Lock()
			g.writeTimer = nil
			g.mu.Unlock()
			g.write()
		})
	}
}

// write saves the current table as the last-known-good state.
func (g *Guard) write() {
	t := g.Table()
	if err := saveLKG(g.cfg.StateDir, t, time.Now()); err != nil {
		g.m.lkgWrites.WithLabelValues("error").Inc()
		g.log.Error("guard: writing the last-known-good state", "err", err)
		return
	}
	g.m.lkgWrites.WithLabelValues("ok").Inc()
}

func byID(ins []*catalog.Instance) map[string]*catalog.Instance {
	m := make(map[string]*catalog.Instance, len(ins))
	for _, in := range ins {
		m[in.ID] = in
	}
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ErrNoState is returned by loadLKG when there is no state file.
var ErrNoState = errors.New("guard: no last-known-good state")
