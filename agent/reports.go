package agent

import (
	"cmp"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultReportAddr is where libdisco.so sends a datagram for each connect
// a backend refused or let time out (docs/shim.md).
const DefaultReportAddr = "127.0.0.1:7709"

// Passive ejection: a backend that programs on the node failed to connect to
// ejectAfter times within ejectWindow gets weight 0 in the shared-memory
// table for ejectFor, so the shim stops picking it. Never more than half of
// a service's backends are ejected at once: past that the failures more
// likely say something about the network than about the backends.
const (
	ejectAfter  = 3
	ejectWindow = 10 * time.Second
)

// ejector counts failure reports per backend and decides ejections.
type ejector struct {
	mu       sync.Mutex
	now      func() time.Time
	ejectFor time.Duration
	backends map[backendKey]*health
	kick     chan struct{} // an ejection began or ended: publish again
	m        *reportMetrics
}

type backendKey struct {
	service string
	addr    netip.AddrPort
}

type health struct {
	failures []time.Time // within the window
	until    time.Time   // ejected until
}

type reportMetrics struct {
	reports  *prometheus.CounterVec
	ejected  *prometheus.CounterVec
	rejected prometheus.Counter
}

func newEjector(reg prometheus.Registerer, ejectFor time.Duration) *ejector {
	m := &reportMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_agent_connect_failures_total",
			Help: "connect() failures programs reported through libdisco.so, by service.",
		}, []string{"service"}),
		ejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_agent_ejections_total",
			Help: "Backends given weight 0 in the shared-memory table after repeated connect failures, by service.",
		}, []string{"service"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "disco_agent_reports_rejected_total",
			Help: "Failure reports that were not a line the agent understands, or came from off the host.",
		}),
	}
	reg.MustRegister(m.reports, m.ejected, m.rejected)
	return &ejector{now: time.Now, ejectFor: ejectFor, backends: map[backendKey]*health{}, kick: make(chan struct{}, 1), m: m}
}

// serve reads reports from pc until it is closed.
func (e *ejector) serve(pc net.PacketConn) {
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		// Only programs on this host report: a datagram from elsewhere
		// could eject backends at will.
		if ua, ok := from.(*net.UDPAddr); !ok || !ua.IP.IsLoopback() {
			e.m.rejected.Inc()
			continue
		}
		key, ok := parseReport(string(buf[:n]))
		if !ok {
			e.m.rejected.Inc()
			continue
		}
		e.report(key)
	}
}

// parseReport reads "fail <service> <address> <port> <errno>\n".
func parseReport(line string) (backendKey, bool) {
	f := strings.Fields(line)
	if len(f) != 5 || f[0] != "fail" || len(f[1]) > 63 {
		return backendKey{}, false
	}
	addr, err := netip.ParseAddr(f[2])
	port, perr := strconv.ParseUint(f[3], 10, 16)
	if err != nil || perr != nil || port == 0 {
		return backendKey{}, false
	}
	return backendKey{service: f[1], addr: netip.AddrPortFrom(addr.Unmap(), uint16(port))}, true
}

func (e *ejector) report(key backendKey) {
	e.m.reports.WithLabelValues(key.service).Inc()
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	h := e.backends[key]
	if h == nil {
		if len(e.backends) > 65536 {
			return // bounded: a flood of made-up backends must not grow this
		}
		h = &health{}
		e.backends[key] = h
	}
	kept := h.failures[:0]
	for _, t := range h.failures {
		if now.Sub(t) < ejectWindow {
			kept = append(kept, t)
		}
	}
	h.failures = append(kept, now)
	if len(h.failures) >= ejectAfter && !now.Before(h.until) {
		h.until = now.Add(e.ejectFor)
		h.failures = h.failures[:0]
		e.m.ejected.WithLabelValues(key.service).Inc()
		e.signal()
	}
}

func (e *ejector) signal() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// ejected reports whether a backend is ejected now, and when the earliest
// ejection ends (zero when none is running), forgetting ended ones.
func (e *ejector) ejected(service string, addr netip.AddrPort) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.backends[backendKey{service, addr}]
	return h != nil && e.now().Before(h.until)
}

// nextEnd returns how long until the next ejection ends, or 0 for none.
func (e *ejector) nextEnd() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	var next time.Duration
	for k, h := range e.backends {
		if d := h.until.Sub(now); d > 0 && (next == 0 || d < next) {
			next = d
		}
		if !now.Before(h.until) && len(h.failures) == 0 {
			delete(e.backends, k)
		}
	}
	return next
}

// Ejection is one backend ejected on failure reports, for the status.
type Ejection struct {
	Service string    `json:"service"`
	Address string    `json:"address"`
	Until   time.Time `json:"until"`
}

// list returns the ejections running now, sorted.
func (e *ejector) list() []Ejection {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	out := []Ejection{}
	for k, h := range e.backends {
		if now.Before(h.until) {
			out = append(out, Ejection{Service: k.service, Address: k.addr.String(), Until: h.until})
		}
	}
	slices.SortFunc(out, func(a, b Ejection) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.Address, b.Address))
	})
	return out
}
