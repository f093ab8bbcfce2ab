// Package router is Discotech's edge: an HTTP/1.1 and HTTP/2 reverse proxy
// and TCP proxy whose routes come from registry tags in Fabio's syntax
// (package route), with backends picked by package balance.
//
// The pipeline is the agent's: sources (the registry by default) feed a
// guard, whose table is turned, one changed service at a time, into a new
// immutable route table swapped atomically. Backends may also announce
// themselves on the admin port (POST /register) without a registry. Each
// backend's vitals are polled about every second and set its weight;
// requests pick among a route's backends with power of two choices over
// peak-EWMA latency, fail over on connect errors, retry idempotent requests
// once on 502/503/504 within a budget, and eject backends that keep failing.
package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/discotech/disco/balance"
	"github.com/discotech/disco/guard"
	"github.com/discotech/disco/router/route"
	"github.com/discotech/disco/source"
)

// Config configures a Router. The yaml names are also the flag names and,
// upper-cased with DISCO_ in front, the environment variables.
type Config struct {
	// Server is the registry the routes come from; "" for none (backends
	// only announce themselves). Sources are more sources of truth, in the
	// agent's spec syntax, after Server in precedence.
	Server  string   `yaml:"server"`
	Sources []string `yaml:"source"`
	// Listen is the HTTP traffic address; TCP routes listen on the same
	// host at their own ports.
	Listen string `yaml:"listen"`
	// Admin is the address of the announce protocol, GET /backends,
	// /routes, /metrics and the UI.
	Admin string `yaml:"admin"`
	// StateDir holds the last-known-good state of the sources and the
	// backends announced on the admin port; empty keeps none.
	StateDir string `yaml:"state-dir"`
	// HoldWindow is the guard's: how long a removal of more than half of a
	// service's backends must be seen before it applies.
	HoldWindow time.Duration `yaml:"hold-window"`
	// Routes are explicit route overrides in Fabio's route language
	// ("route add web /api http://10.0.0.1:8080/", "route weight ...",
	// "route del ..."), one per line.
	Routes string `yaml:"routes"`
	// Policy picks a route's backend per request: p2c (default),
	// round-robin, random, least-request, hash, first.
	Policy string `yaml:"policy"`
	// HashOn is what the hash policy hashes: "client" (the client's
	// address), "header:NAME" or "cookie:NAME".
	HashOn string `yaml:"hash-on"`
	// TryTimeout bounds each try's wait for the response's headers; a try
	// that runs out counts as a 504 (retried once when idempotent).
	TryTimeout time.Duration `yaml:"try-timeout"`
	// ConnectTimeout bounds a connection to a backend.
	ConnectTimeout time.Duration `yaml:"connect-timeout"`
	// MaxRequests is each backend's circuit breaker: requests in flight to
	// it at most, across routes.
	MaxRequests int `yaml:"max-requests"`
	// RetryBudget is the share of a route's active requests that may be
	// retries at once (at least 3 are always allowed).
	RetryBudget float64 `yaml:"retry-budget"`
	// VitalsInterval is how often each backend's vitals are read.
	VitalsInterval time.Duration `yaml:"vitals-interval"`
	// AccessLog is where one line per request goes: a path, "-" for
	// standard output, "" for none.
	AccessLog string `yaml:"access-log"`
	// TLSCert and TLSKey serve the traffic port over TLS (HTTP/2 by ALPN);
	// without them it serves HTTP/1.1 and cleartext HTTP/2 (h2c).
	TLSCert string `yaml:"tls-cert"`
	TLSKey  string `yaml:"tls-key"`
	// Pprof serves Go's profiler (net/http/pprof) at /debug/pprof/ on the
	// admin port. Off by default, as Consul's enable_debug: a profile
	// costs CPU, and the command line it shows may hold secrets.
	Pprof bool `yaml:"pprof"`

	// Logger receives the router's logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// DefaultConfig returns the defaults of the external contract.
func DefaultConfig() Config {
	return Config{
		Server:         "http://127.0.0.1:7700",
		Listen:         "127.0.0.1:7780",
		Admin:          "127.0.0.1:7781",
		HoldWindow:     guard.DefaultConfig().HoldWindow,
		Policy:         "p2c",
		HashOn:         "client",
		TryTimeout:     15 * time.Second,
		ConnectTimeout: 2 * time.Second,
		MaxRequests:    1024,
		RetryBudget:    0.2,
		VitalsInterval: balance.PollInterval,
	}
}

// Validate reports the first setting that cannot work, saying what to fix.
func (c *Config) Validate() error {
	for name, addr := range map[string]string{"listen": c.Listen, "admin": c.Admin} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("router: %s address %q: want HOST:PORT: %w", name, addr, err)
		}
	}
	if _, err := newPicker(c.Policy, c.HashOn); err != nil {
		return err
	}
	if c.TryTimeout < 0 || c.ConnectTimeout <= 0 || c.VitalsInterval < 10*time.Millisecond {
		return fmt.Errorf("router: try-timeout must not be negative, connect-timeout must be positive and vitals-interval at least 10ms (got %s, %s, %s)", c.TryTimeout, c.ConnectTimeout, c.VitalsInterval)
	}
	if c.MaxRequests < 1 {
		return fmt.Errorf("router: max-requests must be at least 1, got %d", c.MaxRequests)
	}
	if c.RetryBudget < 0 || c.RetryBudget > 1 {
		return fmt.Errorf("router: retry-budget is a fraction from 0 to 1, got %v", c.RetryBudget)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("router: tls-cert and tls-key go together")
	}
	if _, err := route.ParseOverrides(c.Routes); err != nil {
		return fmt.Errorf("router: routes: %w", err)
	}
	return nil
}

// Router is a running router.
type Router struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	m       *metrics
	pick    picker
	specs   []string
	sources []source.Source
	guard   *guard.Guard // nil without sources

	table atomic.Pointer[route.Table]

	// mu serialises changes: of the table, the upstreams, the announced
	// backends and the TCP listeners.
	mu        sync.Mutex
	services  map[string]serviceInput // what each service was last built from
	upstreams map[string]*upstream
	announced map[string]*announcement
	// saving orders the writes of the announced backends to the state dir.
	saving sync.Mutex
	tcp    map[int]*tcpListener
	ready  bool // the first table is applied: later backends slow-start

	poller    *balance.Poller
	h1        *h1Pool         // plain HTTP/1.1 to backends
	transport *http.Transport // HTTP/1.1 upgrades
	insecure  *http.Transport // https backends with tlsskipverify=true
	h2c       *http.Transport // proto=grpc: cleartext HTTP/2
	access    *accessLog
	started   time.Time
	bg        sync.WaitGroup
	ctx       context.Context // Serve's, for the TCP listeners
}

// New makes a router; nothing runs until Serve.
func New(cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pick, _ := newPicker(cfg.Policy, cfg.HashOn)
	overrides, _ := route.ParseOverrides(cfg.Routes)
	r := &Router{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "router"),
		reg:       prometheus.NewRegistry(),
		pick:      pick,
		services:  map[string]serviceInput{},
		upstreams: map[string]*upstream{},
		announced: map[string]*announcement{},
		tcp:       map[int]*tcpListener{},
		started:   time.Now(),
	}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.m = newMetrics(r.reg, r)
	r.table.Store(route.New(overrides))
	r.transport, r.insecure, r.h2c = r.transports()
	r.h1 = newH1Pool(cfg.ConnectTimeout, cfg.TryTimeout)
	r.poller = &balance.Poller{Interval: cfg.VitalsInterval, Report: r.vitals}
	if cfg.Server != "" {
		r.specs = append(r.specs, "disco+"+cfg.Server)
	}
	r.specs = append(r.specs, cfg.Sources...)
	if len(r.specs) > 0 {
		gc := guard.DefaultConfig()
		gc.HoldWindow, gc.StateDir = cfg.HoldWindow, cfg.StateDir
		gc.Logger, gc.Registerer = cfg.Logger, r.reg
		g, srcs, err := guard.Open(r.specs, source.Options{Logger: cfg.Logger}, gc)
		if err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
		r.guard, r.sources = g, srcs
	}
	r.loadAnnounced()
	if cfg.AccessLog != "" {
		a, err := openAccessLog(cfg.AccessLog)
		if err != nil {
			return nil, fmt.Errorf("router: access log: %w", err)
		}
		r.access = a
	}
	return r, nil
}

// Listeners are the router's two ports.
type Listeners struct {
	Traffic, Admin net.Listener
}

// Listen binds the traffic and admin ports.
func (r *Router) Listen() (Listeners, error) {
	t, err := net.Listen("tcp", r.cfg.Listen)
	if err != nil {
		return Listeners{}, fmt.Errorf("router: listen on %s: %w", r.cfg.Listen, err)
	}
	a, err := net.Listen("tcp", r.cfg.Admin)
	if err != nil {
		t.Close()
		return Listeners{}, fmt.Errorf("router: admin: listen on %s: %w", r.cfg.Admin, err)
	}
	return Listeners{Traffic: t, Admin: a}, nil
}

// Serve runs the sources, the route table and both ports until ctx is done,
// then shuts down: requests in progress get a few seconds to finish.
func (r *Router) Serve(ctx context.Context, ls Listeners) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	var wg sync.WaitGroup
	if r.guard != nil {
		wg.Go(func() { r.guard.Serve(ctx, r.sources, r.specs) })
		wg.Go(func() { r.follow(ctx) })
	} else {
		r.mu.Lock()
		r.ready = true
		r.mu.Unlock()
	}
	wg.Go(func() { r.sweep(ctx) })
	traffic := &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	traffic.Protocols = new(http.Protocols)
	traffic.Protocols.SetHTTP1(true)
	// Without TLS, the router's own HTTP/1.1 server (front.go) takes the
	// port and hands h2c connections to net/http's.
	var front *frontServer
	if r.cfg.TLSCert == "" {
		traffic.Protocols.SetUnencryptedHTTP2(true)
		front = newFrontServer(traffic)
	} else {
		traffic.Protocols.SetHTTP2(true)
		cert, err := tls.LoadX509KeyPair(r.cfg.TLSCert, r.cfg.TLSKey)
		if err != nil {
			ls.Traffic.Close()
			ls.Admin.Close()
			return fmt.Errorf("router: TLS certificate: %w", err)
		}
		traffic.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	}
	admin := &http.Server{
		Handler:           r.AdminHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 2)
	go func() {
		if front == nil {
			errc <- traffic.ServeTLS(ls.Traffic, "", "")
			return
		}
		errc <- front.Serve(ls.Traffic)
	}()
	go func() { errc <- admin.Serve(ls.Admin) }()
	r.log.Info("router running", "listen", ls.Traffic.Addr().String(), "admin", ls.Admin.Addr().String(), "sources", len(r.sources))
	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("router: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if front != nil {
		front.Shutdown(sctx)
	} else {
		traffic.Shutdown(sctx)
	}
	admin.Shutdown(sctx)
	stop()
	wg.Wait()
	r.closeTCP()
	r.bg.Wait()
	r.poller.Close()
	r.h1.closeIdle()
	r.transport.CloseIdleConnections()
	r.insecure.CloseIdleConnections()
	r.h2c.CloseIdleConnections()
	if r.access != nil {
		r.access.Close()
	}
	return err
}

// ListenAndServe listens and serves until ctx is done.
func (r *Router) ListenAndServe(ctx context.Context) error {
	ls, err := r.Listen()
	if err != nil {
		return err
	}
	return r.Serve(ctx, ls)
}

// Table is the current route table.
func (r *Router) Table() *route.Table { return r.table.Load() }

// follow applies every change of the guard's table until ctx is done.
func (r *Router) follow(ctx context.Context) {
	var applied uint64
	for {
		changed := r.guard.Changed()
		if t := r.guard.Table(); t.Version != applied {
			r.applyRegistry(t)
			applied = t.Version
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// sweep applies the success-rate outlier rule to every route's pool, every
// balance.SuccessRateInterval.
func (r *Router) sweep(ctx context.Context) {
	t := time.NewTicker(balance.SuccessRateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, ro := range r.table.Load().Routes() {
				st, ok := ro.Value.(*routeState)
				if !ok {
					continue
				}
				for _, b := range st.pool.Load().SweepSuccessRate(now) {
					r.ejected(st, b.Value.(*member), "success rate far below the pool's")
				}
			}
		}
	}
}

// transports are the connection pools to backends: HTTP/1.1 with
// keep-alive (idle connections closed after a minute, below most
// backends' own keep-alive timeouts, to dodge the reuse race), the same
// without certificate checks, and cleartext HTTP/2 for gRPC.
func (r *Router) transports() (h1, insecure, h2c *http.Transport) {
	dialer := &net.Dialer{Timeout: r.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &dialError{addr: addr, err: err}
		}
		return c, nil
	}
	h1 = &http.Transport{
		DialContext:           dial,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       60 * time.Second,
		ResponseHeaderTimeout: r.cfg.TryTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		TLSHandshakeTimeout:   r.cfg.ConnectTimeout,
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
	}
	insecure = h1.Clone()
	insecure.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	h2c = h1.Clone()
	h2c.Protocols = new(http.Protocols)
	h2c.Protocols.SetUnencryptedHTTP2(true)
	return h1, insecure, h2c
}

// dialError is a failure to connect to a backend: the request never left,
// so it is always safe to try another backend.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return "connecting to " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// hostname is the machine's name, for the UI.
var hostname, _ = os.Hostname()
