package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/relay"
)

// fallback is the agent's TCP proxy on the magic addresses, for the
// programs libdisco.so cannot reach (static binaries, pure-Go binaries,
// setuid programs): each service's magic address listens on every port its
// backends declare and on the configured extra ports, and each connection
// goes to a backend chosen the way the shim chooses, through one local hop.
type fallback struct {
	n       *node
	extra   []uint16
	timeout time.Duration
	m       *fallbackMetrics

	mu        sync.Mutex
	listeners map[netip.AddrPort]*listener
	inflight  sync.Map // backend "addr:port" → *atomic.Int64
	wg        sync.WaitGroup
}

// listener serves one magic address and port for one service.
type listener struct {
	service string
	l       net.Listener
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

// sync makes the listeners match the current view: one per service's magic
// address and each of its ports.
func (f *fallback) sync(v *view) {
	want := map[netip.AddrPort]string{}
	for name, ins := range v.table.Services {
		magic, ok := v.magic.Addr(name)
		if !ok {
			continue
		}
		ports := slices.Clone(f.extra)
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
		l, err := net.Listen("tcp", ap.String())
		if err != nil {
			f.n.a.log.Warn("agent: fallback proxy cannot listen", "service", name, "addr", ap.String(), "err", err)
			continue
		}
		ln := &listener{service: name, l: l}
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
		go f.forward(ln.service, c)
	}
}

// maxTries is how many backends one connection may try: a refused connect
// moves on to another, as the shim does for a blocking connect.
const maxTries = 3

func (f *fallback) forward(service string, c net.Conn) {
	v := f.n.current.Load()
	var backends []*catalog.Instance
	if v != nil {
		backends = v.table.Services[service]
	}
	tried := map[*catalog.Instance]bool{}
	for attempt := 0; attempt < maxTries; attempt++ {
		in := f.pick(backends, tried)
		if in == nil {
			break
		}
		tried[in] = true
		addr := net.JoinHostPort(in.Address, strconv.Itoa(in.Port))
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		b, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		cancel()
		if err != nil {
			f.n.a.log.Debug("agent: fallback proxy: backend refused", "service", service, "backend", addr, "err", err)
			continue
		}
		result := "ok"
		if attempt > 0 {
			result = "retried"
		}
		f.m.conns.WithLabelValues(service, result).Inc()
		n := f.counter(addr)
		n.Add(1)
		relay.Join(c, b)
		n.Add(-1)
		return
	}
	f.m.conns.WithLabelValues(service, "failed").Inc()
	c.Close()
}

// pick chooses a backend by weighted power of two choices: two draws by
// weight, and of the two the one with fewer connections in flight. Drained
// (weight 0) and already tried backends are never picked.
func (f *fallback) pick(backends []*catalog.Instance, tried map[*catalog.Instance]bool) *catalog.Instance {
	total := 0
	for _, in := range backends {
		if !tried[in] && in.Weight > 0 {
			total += in.Weight
		}
	}
	if total == 0 {
		return nil
	}
	draw := func() *catalog.Instance {
		x := rand.IntN(total)
		for _, in := range backends {
			if tried[in] || in.Weight <= 0 {
				continue
			}
			if x < in.Weight {
				return in
			}
			x -= in.Weight
		}
		return nil
	}
	a, b := draw(), draw()
	if a == b || b == nil {
		return a
	}
	la := f.counter(net.JoinHostPort(a.Address, strconv.Itoa(a.Port))).Load()
	lb := f.counter(net.JoinHostPort(b.Address, strconv.Itoa(b.Port))).Load()
	if lb < la {
		return b
	}
	return a
}

func (f *fallback) counter(addr string) *atomic.Int64 {
	if c, ok := f.inflight.Load(addr); ok {
		return c.(*atomic.Int64)
	}
	c, _ := f.inflight.LoadOrStore(addr, new(atomic.Int64))
	return c.(*atomic.Int64)
}
