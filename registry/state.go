package registry

import (
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discotech/disco/catalog"
)

// Default sizes of the event history kept for resuming watchers.
const (
	DefaultServiceHistory = 128
	DefaultGlobalHistory  = 16384
)

// Observer follows every change of a State, synchronously and in order. The
// leader's duties (leases, health checks, reaping) are observers: being told
// under the state's lock means they can never miss or reorder a change.
// Both methods run under the state's write lock; they must be quick and must
// not call back into the State.
type Observer interface {
	// Reload is called with every instance when the observer is attached and
	// after a snapshot restore replaced the whole state.
	Reload(instances []*catalog.Instance)
	// Apply is called with the events of each applied batch, in order.
	Apply(events []Event)
}

// State is the registry's catalog in memory: the raft state machine's data, and
// what every read and watch is served from. Stored instances are immutable:
// a change replaces the pointer, so readers may keep what they got without
// holding any lock.
type State struct {
	mu       sync.RWMutex
	services map[string]*service
	index    uint64 // highest index that changed any service
	applied  uint64 // last raft log index applied
	floor    uint64 // index of the last restore: history before it is gone
	all      *ring
	allCh    chan struct{} // closed on any change, then replaced
	counts   map[catalog.Status]int
	observer Observer

	serviceHistory int
	pending        []Event // events of the batch being applied
}

type service struct {
	name      string
	instances map[string]*catalog.Instance
	passing   int
	index     uint64
	ch        chan struct{} // closed on the next change to this service
	events    *ring
	// sorted caches the instances ordered by id; nil after a change.
	sorted atomic.Pointer[[]*catalog.Instance]
}

// NewState returns an empty State keeping serviceHistory events per service
// and globalHistory events in all for resuming watchers (0 means the
// defaults).
func NewState(serviceHistory, globalHistory int) *State {
	if serviceHistory <= 0 {
		serviceHistory = DefaultServiceHistory
	}
	if globalHistory <= 0 {
		globalHistory = DefaultGlobalHistory
	}
	return &State{
		services:       make(map[string]*service),
		all:            newRing(globalHistory, 0),
		allCh:          make(chan struct{}),
		counts:         make(map[catalog.Status]int),
		serviceHistory: serviceHistory,
	}
}

// SetObserver attaches o, calling o.Reload with every instance first, or
// detaches the current observer when o is nil.
func (s *State) SetObserver(o Observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observer = o
	if o != nil {
		o.Reload(s.allInstancesLocked())
	}
}

func (s *State) allInstancesLocked() []*catalog.Instance {
	var all []*catalog.Instance
	for _, name := range slices.Sorted(maps.Keys(s.services)) {
		all = append(all, s.services[name].list()...)
	}
	return all
}

// Index is the highest index at which any service changed.
func (s *State) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return max(s.index, 1)
}

// Applied is the last raft log index applied to the state.
func (s *State) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Counts returns how many instances are in each status.
func (s *State) Counts() map[catalog.Status]int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.counts)
}

// Services lists every service that has instances, by name, and the catalog
// index.
func (s *State) Services() ([]catalog.ServiceSummary, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]catalog.ServiceSummary, 0, len(s.services))
	for _, svc := range s.services {
		if len(svc.instances) == 0 {
			continue
		}
		out = append(out, catalog.ServiceSummary{
			Name:      svc.name,
			Instances: len(svc.instances),
			Passing:   svc.passing,
			Index:     svc.index,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, max(s.index, 1)
}

// Instances returns the instances of service ordered by id, and the service's
// index. An unknown service has no instances and index 1, so a blocking query
// on it waits for the service to appear. The slice is shared: do not modify it.
func (s *State) Instances(service string) ([]*catalog.Instance, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	svc := s.services[service]
	if svc == nil {
		return nil, 1
	}
	return svc.list(), svc.index
}

// Instance returns one instance.
func (s *State) Instance(service, id string) (*catalog.Instance, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if svc := s.services[service]; svc != nil {
		in, ok := svc.instances[id]
		return in, ok
	}
	return nil, false
}

// Watch returns the current index of service (of the whole catalog when
// service is "") and a channel closed at its next change. Watchers of an
// unknown service wake on any change and look again.
func (s *State) Watch(service string) (uint64, <-chan struct{}) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if service == "" {
		return max(s.index, 1), s.allCh
	}
	if svc := s.services[service]; svc != nil {
		return svc.index, svc.ch
	}
	return 1, s.allCh
}

// Changes appends to dst the events of service (of every service when service
// is "") with an index above from, and returns the index they bring the
// watcher to and a channel closed at the next change. ok is false when the
// events cannot be replayed exactly — from is older than the history kept, or
// newer than anything this registry has seen — and the watcher must resync
// from a snapshot.
func (s *State) Changes(service string, from uint64, dst []Event) (events []Event, index uint64, ch <-chan struct{}, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if from > max(s.index, s.floor, 1) {
		return dst, from, nil, false
	}
	if service == "" {
		events, ok = s.all.since(from, dst)
		return events, max(s.index, from), s.allCh, ok
	}
	svc := s.services[service]
	if svc == nil {
		return dst, from, s.allCh, from >= s.floor
	}
	events, ok = svc.events.since(from, dst)
	return events, max(svc.index, from), svc.ch, ok
}

// ServiceInstances is one service's instances in a snapshot.
type ServiceInstances struct {
	Service   string
	Index     uint64
	Instances []*catalog.Instance
}

// Snapshot returns every instance of service (of every service with instances
// when service is ""), the index the snapshot is at, and a channel closed at
// the next change.
func (s *State) Snapshot(service string) ([]ServiceInstances, uint64, <-chan struct{}) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if service != "" {
		svc := s.services[service]
		if svc == nil {
			return []ServiceInstances{{Service: service, Index: 1}}, max(s.floor, 1), s.allCh
		}
		// A per-service watcher's cursor must cover the restore floor too,
		// or its next Changes would ask it to resync again.
		return []ServiceInstances{{Service: service, Index: svc.index, Instances: svc.list()}}, max(svc.index, s.floor), svc.ch
	}
	var out []ServiceInstances
	for _, name := range slices.Sorted(maps.Keys(s.services)) {
		svc := s.services[name]
		if len(svc.instances) > 0 {
			out = append(out, ServiceInstances{Service: name, Index: svc.index, Instances: svc.list()})
		}
	}
	return out, max(s.index, s.floor, 1), s.allCh
}

// list returns the instances ordered by id, from the cache when it is fresh.
func (svc *service) list() []*catalog.Instance {
	if p := svc.sorted.Load(); p != nil {
		return *p
	}
	l := make([]*catalog.Instance, 0, len(svc.instances))
	for _, in := range svc.instances {
		l = append(l, in)
	}
	sort.Slice(l, func(i, j int) bool { return l[i].ID < l[j].ID })
	svc.sorted.Store(&l)
	return l
}

// The methods below change the state. They are called by the FSM with s.mu
// held for writing, between begin and commit.

func (s *State) begin() {
	s.mu.Lock()
	s.pending = s.pending[:0]
}

// commit records the batch's events, wakes the watchers of every service it
// changed and tells the observer. It releases the lock taken by begin.
func (s *State) commit(applied uint64) {
	defer s.mu.Unlock()
	s.applied = max(s.applied, applied)
	if len(s.pending) == 0 {
		return
	}
	woken := make(map[*service]bool)
	for _, e := range s.pending {
		svc := s.services[e.Service]
		svc.events.push(e)
		s.all.push(e)
		woken[svc] = true
	}
	for svc := range woken {
		close(svc.ch)
		svc.ch = make(chan struct{})
	}
	close(s.allCh)
	s.allCh = make(chan struct{})
	if s.observer != nil {
		s.observer.Apply(s.pending)
	}
}

func (s *State) serviceFor(name string) *service {
	svc := s.services[name]
	if svc == nil {
		svc = &service{
			name:      name,
			instances: make(map[string]*catalog.Instance),
			ch:        make(chan struct{}),
			events:    newRing(s.serviceHistory, s.floor),
		}
		s.services[name] = svc
	}
	return svc
}

// put stores in (already carrying its indexes and status) and records the
// event.
func (s *State) put(index uint64, in *catalog.Instance) {
	svc := s.serviceFor(in.Service)
	old := svc.instances[in.ID]
	if old != nil {
		s.count(svc, old.Status, -1)
	}
	svc.instances[in.ID] = in
	s.count(svc, in.Status, +1)
	s.touch(svc, index)
	s.pending = append(s.pending, newEvent(Put, index, in, old))
}

func (s *State) remove(index uint64, in *catalog.Instance) {
	svc := s.services[in.Service]
	delete(svc.instances, in.ID)
	s.count(svc, in.Status, -1)
	s.touch(svc, index)
	// The service stays, empty, as a tombstone: its index must keep growing
	// for the blocking queries and watchers that hold it.
	s.pending = append(s.pending, newEvent(Delete, index, in, nil))
}

func (s *State) touch(svc *service, index uint64) {
	svc.index = index
	svc.sorted.Store(nil)
	s.index = max(s.index, index)
}

func (s *State) count(svc *service, st catalog.Status, d int) {
	s.counts[st] += d
	if st == catalog.Passing {
		svc.passing += d
	}
}

func (s *State) lookup(service, id string) *catalog.Instance {
	if svc := s.services[service]; svc != nil {
		return svc.instances[id]
	}
	return nil
}

// restore replaces the whole state with instances, as of index. Every watcher
// wakes, finds its cursor below the new floor and resyncs.
func (s *State) restore(index uint64, instances []*catalog.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.services
	s.services = make(map[string]*service)
	s.counts = make(map[catalog.Status]int)
	s.floor, s.index, s.applied = index, index, index
	s.all.reset(index)
	for _, in := range instances {
		svc := s.serviceFor(in.Service)
		svc.instances[in.ID] = in
		s.count(svc, in.Status, +1)
		// Anything may have changed across a restore: every service moves to
		// the restore index, so blocking queries on it return and re-read.
		svc.index = index
	}
	for _, svc := range old {
		close(svc.ch)
	}
	close(s.allCh)
	s.allCh = make(chan struct{})
	if s.observer != nil {
		s.observer.Reload(s.allInstancesLocked())
	}
}

// applyRegister stores in as a new or replacing registration.
func (s *State) applyRegister(index uint64, in *catalog.Instance, now time.Time) (uint64, error) {
	old := s.lookup(in.Service, in.ID)
	if old != nil && sameRegistration(old, in) {
		return old.ModifyIndex, nil
	}
	in = in.Clone()
	in.Vitals = nil
	in.ModifyIndex = index
	if old != nil {
		in.CreateIndex = old.CreateIndex
		in.Status, in.StatusSince, in.Output = old.Status, old.StatusSince, old.Output
	} else {
		in.CreateIndex = index
		in.StatusSince = now
		if in.Check != nil {
			// Like Consul, a checked instance earns traffic by passing its
			// first check, which the leader runs at once.
			in.Status, in.Output = catalog.Critical, "registered; awaiting the first check"
		} else {
			in.Status, in.Output = catalog.Passing, "registered"
		}
	}
	s.put(index, in)
	return index, nil
}

// Removal names an instance to deregister. With a non-zero IfCriticalSince
// the instance is removed only if it is still critical since exactly then.
type Removal struct {
	Service         string    `json:"service"`
	ID              string    `json:"id"`
	IfCriticalSince time.Time `json:"if_critical_since,omitzero"`
}

// applyDeregister removes instances. It returns the index if it removed any,
// and the error of the first removal that failed.
func (s *State) applyDeregister(index uint64, removals []Removal) (uint64, error) {
	var first error
	changed := uint64(0)
	for _, r := range removals {
		old := s.lookup(r.Service, r.ID)
		var err error
		switch {
		case old == nil:
			err = ErrNotFound
		case !r.IfCriticalSince.IsZero() && (old.Status != catalog.Critical || !old.StatusSince.Equal(r.IfCriticalSince)):
			err = ErrConflict
		default:
			s.remove(index, old)
			changed = index
		}
		if first == nil {
			first = err
		}
	}
	return changed, first
}

// StatusChange sets the status of one instance.
type StatusChange struct {
	Service string         `json:"service"`
	ID      string         `json:"id"`
	Status  catalog.Status `json:"status"`
	Output  string         `json:"output,omitempty"`
}

func (s *State) applyStatus(index uint64, changes []StatusChange, now time.Time) (uint64, error) {
	var err error
	changed := uint64(0)
	for _, c := range changes {
		old := s.lookup(c.Service, c.ID)
		if old == nil {
			if err == nil {
				err = ErrNotFound
			}
			continue
		}
		if old.Status == c.Status {
			continue
		}
		in := old.Clone()
		in.Status, in.StatusSince, in.Output = c.Status, now, c.Output
		in.ModifyIndex = index
		s.put(index, in)
		changed = index
	}
	return changed, err
}

// sameRegistration reports whether b registers exactly what a already holds.
func sameRegistration(a, b *catalog.Instance) bool {
	return a.Address == b.Address && a.Port == b.Port && a.Weight == b.Weight &&
		a.TTL == b.TTL && a.DeregisterAfter == b.DeregisterAfter &&
		slices.Equal(a.Tags, b.Tags) && maps.Equal(a.Meta, b.Meta) &&
		(a.Check == nil) == (b.Check == nil) && (a.Check == nil || *a.Check == *b.Check)
}
