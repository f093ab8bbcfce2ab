package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discotech/disco/balance"
	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/relay"
	"github.com/discotech/disco/shmtable"
)

// fallback is the agent's TCP proxy on the magic addresses, for the
// programs libdisco.so cannot reach (static binaries, pure-Go binaries,
// setuid programs): each service's magic address listens on every port its
// backends declare and on the configured extra ports, and each connection
// goes to a backend chosen the way the shim chooses, through one local hop.
type fallback struct {
	n       *node
	extra   map[string][]uint16 // service → extra ports; "" for every service
	timeout time.Duration
	m       *fallbackMetrics

	mu        sync.Mutex
	listeners map[netip.AddrPort]*listener
	backends  map[string]*balance.Backend // by service/addr:port, carried from pool to pool
	pools     atomic.Pointer[map[string]*balance.Pool]
	wg        sync.WaitGroup
}

// listener serves one magic address and port for one service.
type listener struct {
	service string
	l       net.Listener
	// The service's connection counters, resolved once.
	ok, retried, failed prometheus.Counter
}

type fallbackMetrics struct {
	conns     *prometheus.CounterVec
	listeners prometheus.Gauge
}

func newFallbackMetrics(reg prometheus.Registerer) *fallbackMetrics {
	m := &fallbackMetrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_agent_proxy_connections_total",
			Help: "Connections through the fallback proxy, by service and result: ok, retried (a backend refused, another took it), failed (no backend took it).",
		}, []string{"service", "result"}),
		listeners: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "disco_agent_proxy_listeners",
			Help: "Magic address and port pairs the fallback proxy listens on.",
		}),
	}
	reg.MustRegister(m.conns, m.listeners)
	return m
}

// sync makes the listeners match the current view — one per service's magic
// address and each of its ports — and the pools the table's services, with
// the table's weights.
func (f *fallback) sync(v *view, services []shmtable.Service) {
	f.syncPools(services)
	want := map[netip.AddrPort]string{}
	for name, ins := range v.table.Services {
		magic, ok := v.magic.Addr(name)
		if !ok {
			continue
		}
		ports := append(slices.Clone(f.extra[""]), f.extra[name]...)
		for _, in := range ins {
			if in.Port > 0 && in.Port <= 65535 {
				ports = append(ports, uint16(in.Port))
			}
		}
		for _, p := range ports {
			want[netip.AddrPortFrom(magic, p)] = name
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ap, ln := range f.listeners {
		if want[ap] != ln.service {
			ln.l.Close()
			delete(f.listeners, ap)
		}
	}
	for ap, name := range want {
		if f.listeners[ap] != nil {
			continue
		}
		// No TCP keep-alive probes on the local hop (it cannot break
		// silently) or toward the backend (the client's own end-to-end
		// settings are what matter): four fewer system calls per socket.
		l, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", ap.String())
		if err != nil {
			f.n.a.log.Warn("agent: fallback proxy cannot listen", "service", name, "addr", ap.String(), "err", err)
			continue
		}
		ln := &listener{service: name, l: l,
			ok:      f.m.conns.WithLabelValues(name, "ok"),
			retried: f.m.conns.WithLabelValues(name, "retried"),
			failed:  f.m.conns.WithLabelValues(name, "failed"),
		}
		f.listeners[ap] = ln
		f.wg.Go(func() { f.serve(ln) })
	}
	f.m.listeners.Set(float64(len(f.listeners)))
}

// close stops every listener and waits for the accept loops (not for the
// connections in flight, which end on their own).
func (f *fallback) close() {
	f.mu.Lock()
	for ap, ln := range f.listeners {
		ln.l.Close()
		delete(f.listeners, ap)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fallback) serve(ln *listener) {
	for {
		c, err := ln.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // out of descriptors: let some close
			continue
		}
		go f.forward(ln, c)
	}
}

// maxTries is how many backends one connection may try: a refused connect
// moves on to another, as the shim does for a blocking connect.
const maxTries = 3

// syncPools makes one pool per service from the table's backends and
// weights, keeping each backend's live figures.
func (f *fallback) syncPools(services []shmtable.Service) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pools := make(map[string]*balance.Pool, len(services))
	seen := map[string]*balance.Backend{}
	for _, s := range services {
		bs := make([]*balance.Backend, len(s.Backends))
		ws := make([]float64, len(s.Backends))
		for i, b := range s.Backends {
			addr := netip.AddrPortFrom(b.Addr, b.Port).String()
			key := s.Name + "/" + addr
			be := f.backends[key]
			if be == nil {
				be = &balance.Backend{ID: key, Addr: addr, Weight: 1}
			}
			seen[key] = be
			bs[i], ws[i] = be, float64(b.Weight)
		}
		pools[s.Name] = balance.NewPoolWeights(bs, ws)
	}
	f.backends = seen
	f.pools.Store(&pools)
}

func (f *fallback) forward(ln *listener, c net.Conn) {
	var pool *balance.Pool
	if ps := f.pools.Load(); ps != nil {
		pool = (*ps)[ln.service]
	}
	if pool == nil {
		ln.failed.Inc()
		c.Close()
		return
	}
	failed := func(b *balance.Backend, err error, _ bool) {
		f.n.a.log.Debug("agent: fallback proxy: backend refused", "service", ln.service, "backend", b.Addr, "err", err)
	}
	b, be, rtt, tries, err := balance.Dial(context.Background(), balance.P2C{}, pool, 0, maxTries, f.dial, failed)
	if err != nil {
		ln.failed.Inc()
		c.Close()
		return
	}
	if tries > 1 {
		ln.retried.Inc()
	} else {
		ln.ok.Inc()
	}
	relay.Join(c, b)
	be.EndConn(rtt)
}

// dial connects to a backend without TCP keep-alive probes (the client's
// own end-to-end settings are what matter).
func (f *fallback) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: f.timeout, KeepAlive: -1}
	return d.DialContext(ctx, "tcp", addr)
}

// parseProxyPorts reads proxy-port values: "80" for every service,
// "web=80" for one.
func parseProxyPorts(specs []string) (map[string][]uint16, error) {
	out := map[string][]uint16{}
	for _, spec := range specs {
		service, port, found := strings.Cut(spec, "=")
		if !found {
			service, port = "", spec
		} else if catalog.ValidateName("service", service) != nil {
			return nil, fmt.Errorf("agent: proxy-port %q: %q is not a service name", spec, service)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("agent: proxy-port %q: want PORT (every service) or SERVICE=PORT, the port 1-65535", spec)
		}
		out[service] = append(out[service], uint16(p))
	}
	return out, nil
}
