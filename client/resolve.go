package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/discotech/disco/balance"
	"github.com/discotech/disco/catalog"
)

// Resolver resolves and dials services in-process, for Go programs that
// libdisco.so cannot reach: one watch stream of every service (Follower)
// feeds a shared cache, and each dial picks a backend with the same
// balancing as the router and the agent (balance.P2C by default: two
// backends drawn by weight, the one with the lower connect time × (
// connections in flight + 1) / weight), failing over to another when one
// refuses. When the registry cannot be reached, the last known backends
// stand.
//
// Names: "web", "web:8080" (the port is ignored: each backend's own is
// used), "web.service.disco" and "v2.web.service.disco" (only instances
// tagged v2). A bare name the registry does not know ("localhost") and
// anything else (example.com, addresses) is dialled as it is.
type Resolver struct {
	// Policy picks among a service's backends; nil is balance.P2C.
	Policy balance.Policy
	// Domain is the service domain of names like web.service.disco;
	// "" is "disco".
	Domain string

	cancel context.CancelFunc
	done   chan struct{}
	synced chan struct{} // closed at the first full state

	mu       sync.Mutex
	watchers map[string]map[*watcher]bool // by service
	services map[string][]*catalog.Instance
	pools    map[string]*balance.Pool    // by "tag.service" or "service"; dropped when the service changes
	backends map[string]*balance.Backend // by service/id@addr, so figures outlive pools
	lastErr  error
}

// NewResolver starts following every service of c's registry; Close stops.
func NewResolver(c *Client) *Resolver {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Resolver{cancel: cancel, done: make(chan struct{}), synced: make(chan struct{}),
		services: map[string][]*catalog.Instance{}, pools: map[string]*balance.Pool{}, backends: map[string]*balance.Backend{}}
	f := &Follower{
		Client: c,
		Full: func(all map[string][]*catalog.Instance) {
			r.mu.Lock()
			r.services, r.pools, r.lastErr = all, map[string]*balance.Pool{}, nil
			r.notify(nil)
			select {
			case <-r.synced:
			default:
				close(r.synced)
			}
		},
		Changed: func(service string, ins []*catalog.Instance) {
			r.mu.Lock()
			if len(ins) == 0 {
				delete(r.services, service)
			} else {
				r.services[service] = ins
			}
			for key := range r.pools {
				if key == service || strings.HasSuffix(key, "."+service) {
					delete(r.pools, key)
				}
			}
			r.notify([]string{service})
		},
		Failed: func(err error) {
			r.mu.Lock()
			r.lastErr = err
			r.mu.Unlock()
		},
	}
	go func() {
		defer close(r.done)
		f.Run(ctx)
	}()
	return r
}

// watcher is one Watch call's callback.
type watcher struct {
	tag string
	fn  func([]*catalog.Instance)
	mu  sync.Mutex // one call at a time, in order
}

// Watch calls fn with the passing instances of service (carrying tag, when
// not "") once the registry has answered, and again after every change,
// until stop is called. Calls come one at a time, from the resolver's
// goroutine; fn must not block for long.
func (r *Resolver) Watch(service, tag string, fn func([]*catalog.Instance)) (stop func()) {
	w := &watcher{tag: tag, fn: fn}
	r.mu.Lock()
	if r.watchers == nil {
		r.watchers = map[string]map[*watcher]bool{}
	}
	if r.watchers[service] == nil {
		r.watchers[service] = map[*watcher]bool{}
	}
	r.watchers[service][w] = true
	synced := false
	select {
	case <-r.synced:
		synced = true
	default:
	}
	ins := passing(r.services[service], tag)
	r.mu.Unlock()
	if synced {
		w.mu.Lock()
		fn(ins)
		w.mu.Unlock()
	}
	return func() {
		r.mu.Lock()
		delete(r.watchers[service], w)
		r.mu.Unlock()
	}
}

// notify tells the watchers of services (nil: every service) what they
// have now, and unlocks r.mu.
func (r *Resolver) notify(services []string) {
	type call struct {
		w   *watcher
		ins []*catalog.Instance
	}
	var calls []call
	for svc, ws := range r.watchers {
		if services != nil && svc != services[0] {
			continue
		}
		for w := range ws {
			calls = append(calls, call{w, passing(r.services[svc], w.tag)})
		}
	}
	r.mu.Unlock()
	for _, c := range calls {
		c.w.mu.Lock()
		c.w.fn(c.ins)
		c.w.mu.Unlock()
	}
}

// Close stops following the registry.
func (r *Resolver) Close() {
	r.cancel()
	<-r.done
}

// ErrNoBackend is returned for a service with no passing backend.
var ErrNoBackend = errors.New("client: no passing backend")

// Instances returns a service's passing instances (those carrying tag when
// it is not ""), waiting for the registry's first answer if need be.
func (r *Resolver) Instances(ctx context.Context, service, tag string) ([]*catalog.Instance, error) {
	if err := r.wait(ctx); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return passing(r.services[service], tag), nil
}

// wait waits for the first full state.
func (r *Resolver) wait(ctx context.Context) error {
	select {
	case <-r.synced:
		return nil
	case <-ctx.Done():
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.lastErr != nil {
			return fmt.Errorf("client: the registry has not answered: %w", r.lastErr)
		}
		return ctx.Err()
	}
}

func passing(ins []*catalog.Instance, tag string) []*catalog.Instance {
	var out []*catalog.Instance
	for _, in := range ins {
		if in.Status == catalog.Passing && in.Weight > 0 && (tag == "" || in.HasTag(tag)) {
			out = append(out, in)
		}
	}
	return out
}

// Parse splits a name into service and tag: "web", "web:80",
// "web.service.disco", "v2.web.service.disco:80". ok is false for a name
// that is not a service's (a host name of the outside world).
func (r *Resolver) Parse(name string) (service, tag string, ok bool) {
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	domain := r.Domain
	if domain == "" {
		domain = "disco"
	}
	if rest, found := strings.CutSuffix(name, ".service."+domain); found {
		if t, s, two := strings.Cut(rest, "."); two {
			return s, t, !strings.Contains(s, ".")
		}
		return rest, "", true
	}
	if strings.Contains(name, ".") || catalog.ValidateName("service", name) != nil {
		return "", "", false
	}
	return name, "", true
}

// pool is the balancing pool of a service (and tag). Under r.mu.
func (r *Resolver) pool(service, tag string) *balance.Pool {
	key := service
	if tag != "" {
		key = tag + "." + service
	}
	if p := r.pools[key]; p != nil {
		return p
	}
	ins := passing(r.services[service], tag)
	bs := make([]*balance.Backend, 0, len(ins))
	for _, in := range ins {
		addr := net.JoinHostPort(in.Address, strconv.Itoa(in.Port))
		id := in.Key() + "@" + addr
		b := r.backends[id]
		if b == nil || b.Weight != float64(in.Weight) {
			b = &balance.Backend{ID: id, Addr: addr, Weight: float64(in.Weight)}
			r.backends[id] = b
		}
		bs = append(bs, b)
	}
	p := balance.NewPool(bs)
	r.pools[key] = p
	return p
}

// Dial connects over TCP to a backend of the service named by name ("web",
// "v2.web.service.disco"): DialContext(ctx, "tcp", name).
func (r *Resolver) Dial(ctx context.Context, name string) (net.Conn, error) {
	return r.DialContext(ctx, "tcp", name)
}

// DialContext connects to a backend of the service named by address (see
// Resolver), trying up to three when they refuse. A name that is not a
// service's is dialled as it is. Its signature is net.Dialer's, for
// http.Transport and the like.
func (r *Resolver) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	service, tag, ok := r.Parse(address)
	if !ok {
		return plainDial(ctx, network, address)
	}
	if err := r.wait(ctx); err != nil {
		return nil, err
	}
	r.mu.Lock()
	_, known := r.services[service]
	if !known && !r.qualified(address) {
		// A bare name the registry does not know ("localhost"): not a
		// service's.
		r.mu.Unlock()
		return plainDial(ctx, network, address)
	}
	p := r.pool(service, tag)
	r.mu.Unlock()
	if len(p.Backends()) == 0 {
		return nil, fmt.Errorf("client: dialling %s: %w", address, ErrNoBackend)
	}
	pol := r.Policy
	if pol == nil {
		pol = balance.P2C{}
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, network, addr) }
	c, b, rtt, _, err := balance.Dial(ctx, pol, p, 0, 3, dial, nil)
	if err != nil {
		return nil, fmt.Errorf("client: dialling %s: %w", address, err)
	}
	return &countedConn{Conn: c, done: func() { b.EndConn(rtt) }}, nil
}

func plainDial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// qualified reports whether name is in the service domain
// (web.service.disco), as opposed to a bare service name (web).
func (r *Resolver) qualified(name string) bool {
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	domain := r.Domain
	if domain == "" {
		domain = "disco"
	}
	return strings.HasSuffix(strings.TrimSuffix(strings.ToLower(name), "."), ".service."+domain)
}

// countedConn ends its backend's in-flight count once, when closed.
type countedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.done)
	return c.Conn.Close()
}

// Transport returns an http.RoundTripper that sends requests for service
// names (http://web.service.disco/path, http://web/path) to a backend
// picked by Dial, and other requests as http.DefaultTransport would.
// Connections are kept alive per service name: a new connection picks
// anew.
func (r *Resolver) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = r.DialContext
	t.MaxIdleConnsPerHost = 64
	return t
}
