package router

import (
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discotech/disco/balance"
	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/guard"
	"github.com/discotech/disco/router/route"
)

// serviceInput is what a service's routes were last built from: its
// backends in the registry (through the guard) and those announced on the
// admin port.
type serviceInput struct {
	registry  []*catalog.Instance
	announced []*catalog.Instance
}

func (in serviceInput) all() []*catalog.Instance {
	if len(in.announced) == 0 {
		return in.registry
	}
	return append(slices.Clip(in.registry), in.announced...)
}

// upstream is one backend instance, shared by every route it serves: its
// vitals, its weight factor from them, and its circuit breaker.
type upstream struct {
	key        string // service/id@addr
	service    string
	id         string
	addr       string
	metricsURL string // "" when it serves no vitals

	inflight atomic.Int64  // across routes, for the circuit breaker
	factor   atomic.Uint64 // float64 bits: the vitals' share of its weight, 1 without vitals

	mu      sync.Mutex
	vitals  balance.Vitals
	last    *catalog.Vitals
	problem string
	polled  time.Time

	routes map[string]*routeState // by route key; under Router.mu
}

func (u *upstream) weightFactor() float64 { return math.Float64frombits(u.factor.Load()) }

// routeState is what the router keeps for one route: its members and the
// pool it picks from. It is the route's Value.
type routeState struct {
	route   *route.Route
	members []*member
	pool    atomic.Pointer[balance.Pool]
	rr      balance.RoundRobin // for the round-robin policy

	active   atomic.Int64 // requests in progress, for the retry budget
	retrying atomic.Int64 // retries in progress
	m        atomic.Pointer[routeMetrics]
}

// member is one upstream in one route, with its share of the route's
// traffic (canary weights) and its live figures in the route's pool.
type member struct {
	up     *upstream
	b      *balance.Backend
	weight float64
	m      atomic.Pointer[memberMetrics]
}

// upstreamKey names an instance at an address: a re-registration at
// another address is another upstream.
func upstreamKey(service, id, addr string) string { return service + "/" + id + "@" + addr }

// applyRegistry brings the route table up to date with the guard's table:
// only services whose backends changed are rebuilt.
func (r *Router) applyRegistry(t *guard.Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, in := range r.services {
		if _, ok := t.Services[name]; !ok && in.registry != nil {
			in.registry = nil
			r.applyService(name, in)
		}
	}
	for name, ins := range t.Services {
		in := r.services[name]
		if sameInstances(in.registry, ins) {
			continue
		}
		in.registry = ins
		r.applyService(name, in)
	}
	r.ready = true
}

// sameInstances reports whether two lists of a service's backends route
// the same.
func sameInstances(a, b []*catalog.Instance) bool {
	return slices.EqualFunc(a, b, func(x, y *catalog.Instance) bool {
		return x == y || x.ID == y.ID && x.Address == y.Address && x.Port == y.Port &&
			x.Weight == y.Weight && slices.Equal(x.Tags, y.Tags) && x.VitalsURL() == y.VitalsURL()
	})
}

// applyService rebuilds the routes of one service from in and publishes
// the new table. Under r.mu.
func (r *Router) applyService(name string, in serviceInput) {
	if in.registry == nil && in.announced == nil {
		delete(r.services, name)
	} else {
		r.services[name] = in
	}
	old := r.table.Load()
	next, changed, removed, errs := old.With(name, in.all())
	for _, err := range errs {
		r.m.routeErrors.Inc()
		r.log.Warn("router: a route tag was skipped", "service", name, "err", err)
	}
	byAddr := map[string]*catalog.Instance{}
	for _, i := range in.all() {
		byAddr[upstreamKey(name, i.ID, instanceAddr(i))] = i
	}
	for key, i := range byAddr {
		if up := r.upstreams[key]; up != nil && up.metricsURL != i.VitalsURL() {
			up.metricsURL = i.VitalsURL()
			r.poller.Watch(key, up.metricsURL)
		}
	}
	now := time.Now()
	for _, ro := range changed {
		var prev *routeState
		if p := old.Route(ro.Key); p != nil {
			prev, _ = p.Value.(*routeState)
		}
		ro.Value = r.newRouteState(ro, prev, byAddr, now)
		if prev != nil {
			r.release(prev)
		}
	}
	var gone []*route.Route
	for _, key := range removed {
		if p := old.Route(key); p != nil {
			gone = append(gone, p)
			if prev, ok := p.Value.(*routeState); ok {
				r.release(prev)
			}
		}
	}
	r.table.Store(next)
	r.syncTCP(changed, gone)
	r.m.routes.Set(float64(next.Len()))
}

// newRouteState makes the state of a new or changed route, carrying over
// the live figures of members it had before. Under r.mu.
func (r *Router) newRouteState(ro *route.Route, prev *routeState, instances map[string]*catalog.Instance, now time.Time) *routeState {
	st := &routeState{route: ro}
	if prev != nil {
		st.m.Store(prev.m.Load())
	}
	old := map[string]*member{}
	if prev != nil {
		for _, m := range prev.members {
			old[m.up.key] = m
		}
	}
	backends := make([]*balance.Backend, 0, len(ro.Members))
	for _, rm := range ro.Members {
		key := upstreamKey(rm.Service, rm.ID, rm.Addr)
		up := r.upstreams[key]
		if up == nil {
			up = &upstream{key: key, service: rm.Service, id: rm.ID, addr: rm.Addr, routes: map[string]*routeState{}}
			if in := instances[key]; in != nil {
				up.metricsURL = in.VitalsURL()
				r.poller.Watch(key, up.metricsURL)
			}
			up.factor.Store(math.Float64bits(1))
			r.upstreams[key] = up
		}
		up.routes[ro.Key] = st
		m := &member{up: up, weight: rm.Weight}
		if o := old[key]; o != nil && o.weight == rm.Weight {
			m.b = o.b
			m.m.Store(o.m.Load())
		} else {
			m.b = &balance.Backend{ID: key, Addr: rm.Addr, Weight: rm.Weight}
			if r.ready && o == nil {
				m.b.Join(now) // slow start, except for the first table
			}
		}
		m.b.Value = m
		st.members = append(st.members, m)
		backends = append(backends, m.b)
	}
	st.pool.Store(balance.NewPoolWeights(backends, st.weights()))
	return st
}

// weights are the members' weights in the pool: their share of the route
// by the vitals' factor.
func (st *routeState) weights() []float64 {
	w := make([]float64, len(st.members))
	for i, m := range st.members {
		w[i] = m.weight * m.up.weightFactor()
	}
	return w
}

// release forgets prev's hold on its upstreams: the route is gone, or a
// new state (made first) took over the members it kept. An upstream in no
// route any more is dropped. Under r.mu.
func (r *Router) release(prev *routeState) {
	for _, m := range prev.members {
		up := m.up
		if up.routes[prev.route.Key] == prev {
			delete(up.routes, prev.route.Key)
		}
		if len(up.routes) == 0 {
			delete(r.upstreams, up.key)
			r.poller.Watch(up.key, "")
		}
	}
}

// vitals takes one reading of an upstream's vitals: its weight factor
// follows, and the pools of its routes are rebuilt when it moved.
func (r *Router) vitals(key string, v *catalog.Vitals, problem string) {
	r.mu.Lock()
	up := r.upstreams[key]
	r.mu.Unlock()
	if up == nil {
		return
	}
	r.m.vitalsPolls(v != nil).Inc()
	up.mu.Lock()
	up.polled, up.problem = time.Now(), problem
	f := up.weightFactor()
	if v != nil {
		up.last = v
		// A poll that fails keeps the last factor: passive outlier
		// detection, not a missed poll, takes a dead backend out.
		f = up.vitals.Weight(1, *v)
	}
	up.mu.Unlock()
	if f == up.weightFactor() {
		return
	}
	up.factor.Store(math.Float64bits(f))
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range up.routes {
		st.pool.Store(balance.NewPoolWeights(st.pool.Load().Backends(), st.weights()))
	}
}

// instanceAddr is an instance's HOST:PORT.
func instanceAddr(in *catalog.Instance) string {
	return net.JoinHostPort(in.Address, strconv.Itoa(in.Port))
}
