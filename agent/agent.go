// Package agent is the node agent's host: it runs the sources of truth, the
// guard that makes their reports safe to apply, and what serves the result
// on the node (DNS now; the shared-memory table and the balancers plug into
// the same table), with its status and metrics on the agent port.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/discotech/disco/balance"
	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/dnsserver"
	"github.com/discotech/disco/guard"
	"github.com/discotech/disco/internal/httpjson"
	"github.com/discotech/disco/magicip"
	"github.com/discotech/disco/shmtable"
	"github.com/discotech/disco/source"
)

// DefaultSource is the source used when none is given: the local registry.
const DefaultSource = "disco+http://127.0.0.1:7700"

// Config configures an Agent. The yaml names are also the flag names and,
// upper-cased with DISCO_ in front, the environment variables.
type Config struct {
	// Sources are the specs of the sources of truth, in precedence order.
	Sources []string `yaml:"source"`
	// StateDir holds the last-known-good state.
	StateDir string `yaml:"state-dir"`
	// HTTP is the address of the status and metrics endpoints.
	HTTP string `yaml:"http"`
	// HoldWindow is how long a large removal must be seen unchanged.
	HoldWindow time.Duration `yaml:"hold-window"`
	// LKGMaxAge is the oldest last-known-good state used at start.
	LKGMaxAge time.Duration `yaml:"lkg-max-age"`
	// Refresh bounds the wait between looks of polling sources (dns-srv).
	Refresh time.Duration `yaml:"refresh"`
	// Table is where the shared-memory table for libdisco.so is written;
	// empty writes none.
	Table string `yaml:"table"`
	// MagicRange is where services' magic addresses come from.
	MagicRange string `yaml:"magic-range"`
	// DNSMagic answers A queries for a service's name with its magic
	// address, so connections land on the node's interception.
	DNSMagic bool `yaml:"dns-magic"`
	// Proxy runs the fallback TCP proxy on the magic addresses, on every
	// port a service's backends declare and on ProxyPorts: "80" for every
	// service, "web=80" for one.
	Proxy      bool     `yaml:"proxy"`
	ProxyPorts []string `yaml:"proxy-port"`
	// Report is where libdisco.so's connect failure reports arrive (UDP);
	// empty ignores them. EjectFor is how long a backend reported failing
	// repeatedly gets weight 0 in the table.
	Report   string        `yaml:"report"`
	EjectFor time.Duration `yaml:"eject-for"`
	// VitalsInterval is how often the backends that serve vitals are
	// polled, to set their weights in the table (ready:false takes one out);
	// 0 polls none.
	VitalsInterval time.Duration `yaml:"vitals-interval"`
	// DNS answers the agent's table; an empty DNS.Addr turns it off.
	DNS dnsserver.Config `yaml:",inline"`

	// Logger receives the agent's logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// DefaultConfig returns the defaults of the external contract.
func DefaultConfig() Config {
	d := dnsserver.DefaultConfig()
	d.Addr = "127.0.0.1:7754"
	g := guard.DefaultConfig()
	return Config{
		HTTP:           "127.0.0.1:7701",
		HoldWindow:     g.HoldWindow,
		LKGMaxAge:      g.MaxAge,
		Refresh:        30 * time.Second,
		Table:          shmtable.DefaultPath,
		MagicRange:     magicip.DefaultRange.String(),
		DNSMagic:       true,
		Proxy:          true,
		Report:         DefaultReportAddr,
		EjectFor:       30 * time.Second,
		VitalsInterval: balance.PollInterval,
		DNS:            d,
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	if c.HTTP == "" {
		return errors.New("agent: http address is required")
	}
	if _, _, err := net.SplitHostPort(c.HTTP); err != nil {
		return fmt.Errorf("agent: http address %q: %w", c.HTTP, err)
	}
	if c.HoldWindow < 0 || c.LKGMaxAge < 0 || c.Refresh < time.Second {
		return fmt.Errorf("agent: hold-window and lkg-max-age must not be negative, and refresh must be at least 1s (got %s, %s, %s)", c.HoldWindow, c.LKGMaxAge, c.Refresh)
	}
	if c.VitalsInterval != 0 && c.VitalsInterval < 10*time.Millisecond {
		return fmt.Errorf("agent: vitals-interval must be 0 (off) or at least 10ms, got %s", c.VitalsInterval)
	}
	if c.EjectFor < 0 {
		return fmt.Errorf("agent: eject-for must not be negative, got %s", c.EjectFor)
	}
	if c.Report != "" {
		if _, err := netip.ParseAddrPort(c.Report); err != nil {
			return fmt.Errorf("agent: report address %q: want IP:PORT: %w", c.Report, err)
		}
	}
	if _, err := parseProxyPorts(c.ProxyPorts); err != nil {
		return err
	}
	r, err := netip.ParsePrefix(c.MagicRange)
	if err != nil {
		return fmt.Errorf("agent: magic-range %q: %w", c.MagicRange, err)
	}
	if err := magicip.Validate(r); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return c.DNS.Validate()
}

// Agent is a running node agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	specs   []string
	sources []source.Source
	guard   *guard.Guard
	node    *node
	dns     *dnsserver.Server
	reports net.PacketConn // nil when reports are off or not bound
	reg     *prometheus.Registry
	started time.Time
}

// New makes the sources and the guard (loading the last-known-good state).
// Nothing runs until Serve.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	specs := cfg.Sources
	if len(specs) == 0 {
		specs = []string{DefaultSource}
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("component", "agent"), specs: specs, reg: prometheus.NewRegistry(), started: time.Now()}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gc := guard.DefaultConfig()
	gc.HoldWindow, gc.MaxAge, gc.StateDir = cfg.HoldWindow, cfg.LKGMaxAge, cfg.StateDir
	gc.Logger, gc.Registerer = cfg.Logger, a.reg
	g, srcs, err := guard.Open(specs, source.Options{Logger: cfg.Logger, Refresh: cfg.Refresh}, gc)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.guard, a.sources = g, srcs
	a.node = &node{a: a, magic: netip.MustParsePrefix(cfg.MagicRange)}
	if cfg.Proxy {
		f := &fallback{n: a.node, timeout: 5 * time.Second, m: newFallbackMetrics(a.reg), listeners: map[netip.AddrPort]*listener{}}
		f.extra, _ = parseProxyPorts(cfg.ProxyPorts) // validated
		a.node.proxy = f
	}
	if cfg.Report != "" {
		a.node.ejector = newEjector(a.reg, cfg.EjectFor)
	}
	if cfg.VitalsInterval > 0 {
		a.node.vitals = newVitalsWeights(a.reg, cfg)
	}
	if cfg.DNS.Addr != "" {
		dc := cfg.DNS
		dc.Logger, dc.Registerer = cfg.Logger, a.reg
		if cfg.DNSMagic {
			dc.MagicIP = a.node.magicOf
		}
		if a.dns, err = dnsserver.New(dnsserver.CatalogFunc(a.service), dc); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// service is what the agent's DNS answers from: the guard's table.
func (a *Agent) service(name string) ([]*catalog.Instance, bool) {
	return a.guard.Table().Service(name)
}

// Guard is the agent's guard, whose table the next stages read.
func (a *Agent) Guard() *guard.Guard { return a.guard }

// Listen binds the status port and, when DNS is on, DNS.
func (a *Agent) Listen() (net.Listener, error) {
	if a.dns != nil {
		if err := a.dns.Listen(); err != nil {
			return nil, err
		}
	}
	closeAll := func() {
		if a.dns != nil {
			a.dns.Close()
		}
		if a.reports != nil {
			a.reports.Close()
		}
	}
	if a.cfg.Report != "" {
		// Not fatal: a second agent on the host (a test, a dev run) still
		// serves, without passive ejection.
		pc, err := net.ListenPacket("udp", a.cfg.Report)
		if err != nil {
			a.log.Warn("agent: not listening for connect failure reports; backends will not be ejected on them", "addr", a.cfg.Report, "err", err)
		} else {
			a.reports = pc
		}
	}
	l, err := net.Listen("tcp", a.cfg.HTTP)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("agent: listen on %s: %w", a.cfg.HTTP, err)
	}
	return l, nil
}

// DNSAddr is the address DNS is bound to; "" when it is off or not bound.
func (a *Agent) DNSAddr() string {
	if a.dns == nil {
		return ""
	}
	return a.dns.Addr()
}

// Serve runs the sources, the guard, DNS (when Listen bound it) and the
// status endpoints on l until ctx is done.
func (a *Agent) Serve(ctx context.Context, l net.Listener) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if a.cfg.Table != "" {
		w, err := shmtable.Create(a.cfg.Table)
		if err != nil {
			l.Close()
			if a.dns != nil {
				a.dns.Close()
			}
			return fmt.Errorf("agent: the shared-memory table: %w (set --table to another path, or to \"\" for none)", err)
		}
		a.node.writer = w
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.guard.Serve(ctx, a.sources, a.specs) })
	wg.Go(func() { a.node.follow(ctx) })
	if a.reports != nil {
		wg.Go(func() { a.node.ejector.serve(a.reports) })
	}
	if a.DNSAddr() != "" {
		wg.Go(func() { a.dns.Serve(ctx) })
	}
	hs := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	a.log.Info("agent running", "http", l.Addr().String(), "dns", a.DNSAddr(), "sources", len(a.sources))
	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("agent: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	stop()
	if a.reports != nil {
		a.reports.Close()
	}
	wg.Wait()
	return err
}

// ListenAndServe listens and serves until ctx is done.
func (a *Agent) ListenAndServe(ctx context.Context) error {
	l, err := a.Listen()
	if err != nil {
		return err
	}
	return a.Serve(ctx, l)
}

// Handler serves GET /v1/agent/status, /healthz, /readyz and /metrics.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agent/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ok, why := a.ready(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint: the agent serves GET /v1/agent/status, /healthz, /readyz and /metrics"})
	})
	return mux
}

// ready: the agent has something to serve, from a source or from disk.
func (a *Agent) ready() (bool, string) {
	st := a.guard.Status()
	if st.LKG.Active {
		return true, ""
	}
	for _, s := range st.Sources {
		if !s.LastReport.IsZero() {
			return true, ""
		}
	}
	return false, "no source has reported yet and there is no last-known-good state"
}

// Status is GET /v1/agent/status.
type Status struct {
	Started time.Time `json:"started"`
	DNS     string    `json:"dns,omitempty"`
	guard.Status
	// Ejected are the backends given weight 0 in the shared-memory table
	// because programs on the node kept failing to connect to them.
	Ejected []Ejection `json:"ejected"`
}

// Status returns the agent's status.
func (a *Agent) Status() Status {
	st := Status{Started: a.started, DNS: a.DNSAddr(), Status: a.guard.Status(), Ejected: []Ejection{}}
	if a.node.ejector != nil {
		st.Ejected = a.node.ejector.list()
	}
	return st
}

// writeJSON answers v as indented JSON.
func writeJSON(w http.ResponseWriter, code int, v any) { httpjson.Write(w, code, v) }
