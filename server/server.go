// Package server is the host of the registry: it opens the raft-backed store,
// serves the native HTTP API (docs/api.md) with blocking queries and watch
// streams, and, while it is the raft leader, carries the leader's duties:
// TTL leases, active health checks and reaping instances that stay critical.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/dnsserver"
	"github.com/discotech/disco/registry"
)

// Config configures a Server. The yaml names are also the flag names and,
// upper-cased with DISCO_ in front, the environment variables.
type Config struct {
	// HTTP is the address of the HTTP API, UI and metrics.
	HTTP string `yaml:"http"`
	// DataDir holds the raft log, snapshots and node id.
	DataDir string `yaml:"data-dir"`
	// Raft is the address raft listens on for peers; empty keeps raft in
	// memory (a single server forever, as disco dev runs it).
	Raft string `yaml:"raft"`
	// RaftMultiplier scales raft's timers: 200ms × this. 1 for one machine,
	// 5 (the default) across a network.
	RaftMultiplier int `yaml:"raft-multiplier"`
	// TTLDeregisterAfter removes heartbeat (TTL) instances that stay critical
	// this long, when they were registered without deregister_after. 0 keeps
	// them forever.
	TTLDeregisterAfter time.Duration `yaml:"ttl-deregister-after"`
	// WatchProgress is how often an idle watch stream gets a progress line.
	WatchProgress time.Duration `yaml:"watch-progress"`
	// CheckConcurrency bounds the health checks running at once.
	CheckConcurrency int `yaml:"check-concurrency"`
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64 `yaml:"max-body-bytes"`
	// DNS answers the catalog over DNS (docs/dns.md); an empty DNS.Addr
	// turns it off.
	DNS dnsserver.Config `yaml:",inline"`

	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// DefaultConfig returns the defaults of the external contract.
func DefaultConfig() Config {
	return Config{
		HTTP:               "127.0.0.1:7700",
		Raft:               "127.0.0.1:7702",
		RaftMultiplier:     5,
		TTLDeregisterAfter: 10 * time.Minute,
		WatchProgress:      10 * time.Second,
		CheckConcurrency:   256,
		MaxBodyBytes:       1 << 20,
		DNS:                dnsserver.DefaultConfig(),
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("server: data-dir is required")
	case c.HTTP == "":
		return errors.New("server: http address is required")
	case c.RaftMultiplier < 1 || c.RaftMultiplier > 10:
		return fmt.Errorf("server: raft-multiplier must be between 1 and 10, got %d", c.RaftMultiplier)
	case c.TTLDeregisterAfter < 0:
		return fmt.Errorf("server: ttl-deregister-after must not be negative, got %s", c.TTLDeregisterAfter)
	case c.WatchProgress < 100*time.Millisecond:
		return fmt.Errorf("server: watch-progress must be at least 100ms, got %s", c.WatchProgress)
	case c.CheckConcurrency < 1:
		return fmt.Errorf("server: check-concurrency must be at least 1, got %d", c.CheckConcurrency)
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("server: max-body-bytes must be at least 1024, got %d", c.MaxBodyBytes)
	}
	if _, _, err := net.SplitHostPort(c.HTTP); err != nil {
		return fmt.Errorf("server: http address %q: %w", c.HTTP, err)
	}
	return c.DNS.Validate()
}

// Server is a running registry server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   *registry.Store
	duties  *duties
	metrics *metrics
	reg     *prometheus.Registry
	handler http.Handler
	dns     *dnsserver.Server // nil when DNS is off

	cancel context.CancelFunc
	done   chan struct{}
}

// New opens the store in cfg.DataDir and starts raft and the leader's duties.
// Serve the API with Serve or mount Handler; Close stops everything.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	store, err := registry.Open(registry.Config{
		DataDir:        cfg.DataDir,
		RaftAddr:       cfg.Raft,
		RaftMultiplier: cfg.RaftMultiplier,
		Logger:         cfg.Logger,
		Registerer:     reg,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "server"),
		store:   store,
		metrics: newMetrics(reg),
		reg:     reg,
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	if cfg.DNS.Addr != "" {
		dc := cfg.DNS
		dc.Logger, dc.Registerer = cfg.Logger, reg
		dc.Ready = func() bool {
			select {
			case <-store.Restored():
				return true
			default:
				return false
			}
		}
		if s.dns, err = dnsserver.New(dnsserver.CatalogFunc(s.dnsService), dc); err != nil {
			cancel()
			store.Close()
			return nil, err
		}
	}
	s.duties = newDuties(store, cfg, s.metrics, s.log)
	store.OnLeadership(s.duties.setLeader)
	s.handler = s.routes()
	go func() {
		defer close(s.done)
		s.duties.run(ctx)
	}()
	return s, nil
}

// Store is the registry the server serves.
func (s *Server) Store() *registry.Store { return s.store }

// Handler serves the HTTP API, /healthz, /readyz and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// dnsService is what DNS answers from: a service is known while it has
// instances, whatever their status.
func (s *Server) dnsService(name string) ([]*catalog.Instance, bool) {
	instances, _ := s.store.State().Instances(name)
	return instances, len(instances) > 0
}

// Listen binds the HTTP API's address and, when DNS is on, its UDP and TCP
// sockets, so that a caller can print where everything is before Serve.
func (s *Server) Listen() (net.Listener, error) {
	if s.dns != nil {
		if err := s.dns.Listen(); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", s.cfg.HTTP)
	if err != nil {
		if s.dns != nil {
			s.dns.Close()
		}
		return nil, fmt.Errorf("server: listen on %s: %w", s.cfg.HTTP, err)
	}
	return l, nil
}

// DNSAddr is the address DNS is bound to; "" when it is off or not bound.
func (s *Server) DNSAddr() string {
	if s.dns == nil {
		return ""
	}
	return s.dns.Addr()
}

// Serve serves the HTTP API on l, and DNS when Listen bound it, until ctx is
// done, then shuts down gracefully: open requests (blocking queries, watch
// streams) are ended.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if s.DNSAddr() != "" {
		dnsDone := make(chan struct{})
		go func() {
			defer close(dnsDone)
			s.dns.Serve(ctx)
		}()
		defer func() { stop(); <-dnsDone }()
	}
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	s.log.Info("serving HTTP API", "addr", l.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	return nil
}

// ListenAndServe listens on cfg.HTTP (and cfg.DNS.Addr) and serves until ctx
// is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	l, err := s.Listen()
	if err != nil {
		return err
	}
	return s.Serve(ctx, l)
}

// Close stops the leader's duties and raft, and closes the store.
func (s *Server) Close() error {
	s.cancel()
	<-s.done
	return s.store.Close()
}
