package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
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
	extra   map[string][]uint16 // service → extra ports; "" for every service
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

// sync makes the listeners match the current view: one per service's magic
// address and each of its ports.
func (f *fallback) sync(v *view) {
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

func (f *fallback) forward(ln *listener, c net.Conn) {
	v := f.n.current.Load()
	var backends []*catalog.Instance
	if v != nil {
		backends = v.table.Services[ln.service]
	}
	var tried []*catalog.Instance
	dialer := net.Dialer{Timeout: f.timeout, KeepAlive: -1}
	for attempt := 0; attempt < maxTries; attempt++ {
		in := f.pick(backends, tried)
		if in == nil {
			break
		}
		tried = append(tried, in)
		addr := net.JoinHostPort(in.Address, strconv.Itoa(in.Port))
		b, err := dialer.Dial("tcp", addr)
		if err != nil {
			f.n.a.log.Debug("agent: fallback proxy: backend refused", "service", ln.service, "backend", addr, "err", err)
			continue
		}
		if attempt > 0 {
			ln.retried.Inc()
		} else {
			ln.ok.Inc()
		}
		n := f.counter(addr)
		n.Add(1)
		relay.Join(c, b)
		n.Add(-1)
		return
	}
	ln.failed.Inc()
	c.Close()
}

// pick chooses a backend by weighted power of two choices: two draws by
// weight, and of the two the one with fewer connections in flight. Drained
// (weight 0) and already tried backends are never picked.
func (f *fallback) pick(backends []*catalog.Instance, tried []*catalog.Instance) *catalog.Instance {
	total := 0
	for _, in := range backends {
		if !slices.Contains(tried, in) && in.Weight > 0 {
			total += in.Weight
		}
	}
	if total == 0 {
		return nil
	}
	draw := func() *catalog.Instance {
		x := rand.IntN(total)
		for _, in := range backends {
			if in.Weight <= 0 || slices.Contains(tried, in) {
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
