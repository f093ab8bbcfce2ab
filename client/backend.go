package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/discotech/disco/catalog"
)

// Backend runs an HTTP backend the way Discotech expects one to live and
// die: it registers with the registry and heartbeats (Keep), serves its
// vitals on a metrics port, and when its context ends (SIGTERM, see
// SignalContext) it
//
//  1. reports ready:false, so routers and agents polling its vitals stop
//     sending it new requests within a poll;
//  2. deregisters;
//  3. keeps serving for DrainDelay, while that news spreads;
//  4. finishes the requests in flight, for up to DrainTimeout;
//  5. returns.
//
// A rolling restart of backends run this way loses no request behind disco
// router or libdisco.so.
type Backend struct {
	// Client is the registry; nil runs without registering (a backend
	// announced to a router instead).
	Client *Client
	// Service and ID name the instance.
	Service, ID string
	// Registration is what is registered. An empty Address and a zero Port
	// are taken from Listener; a zero TTL becomes 10s; meta metrics_port is
	// set from Metrics.
	Registration catalog.Registration
	// Handler serves the traffic, counted by Vitals.Middleware.
	Handler http.Handler
	// Listener is the traffic port; Metrics the vitals port (nil: none).
	Listener, Metrics net.Listener
	// Vitals are served on Metrics; nil makes new ones.
	Vitals *Vitals
	// DrainDelay (default 2s) and DrainTimeout (default 10s): see above.
	DrainDelay, DrainTimeout time.Duration
	// Logf, when set, is told of registration trouble and the shutdown's
	// steps.
	Logf func(format string, args ...any)
}

// SignalContext returns a context that ends at SIGTERM or SIGINT: the
// context to run a Backend with.
func SignalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
}

// Run serves until ctx ends, then drains as described on Backend. It
// returns an error when serving failed, or the registration was refused.
func (b *Backend) Run(ctx context.Context) error {
	if b.Listener == nil || b.Handler == nil {
		return errors.New("client: a Backend needs a Listener and a Handler")
	}
	logf := b.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if b.Vitals == nil {
		b.Vitals = NewVitals("")
	}
	delay, timeout := b.DrainDelay, b.DrainTimeout
	if delay <= 0 {
		delay = 2 * time.Second
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	reg, err := b.registration()
	if err != nil {
		return err
	}
	traffic := &http.Server{Handler: b.Vitals.Middleware(b.Handler), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 3)
	go func() { errc <- traffic.Serve(b.Listener) }()
	var metrics *http.Server
	if b.Metrics != nil {
		metrics = &http.Server{Handler: b.Vitals, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- metrics.Serve(b.Metrics) }()
	}
	keepCtx, stopKeep := context.WithCancel(context.WithoutCancel(ctx))
	defer stopKeep()
	kept := make(chan error, 1)
	if b.Client != nil {
		go func() { kept <- b.Client.Keep(keepCtx, b.Service, b.ID, reg, logf) }()
	} else {
		close(kept)
	}

	var failed error
	select {
	case <-ctx.Done():
	case failed = <-errc:
		failed = fmt.Errorf("client: serving %s/%s: %w", b.Service, b.ID, failed)
	case err := <-kept:
		if err != nil {
			failed = fmt.Errorf("client: registering %s/%s: %w", b.Service, b.ID, err)
		}
		kept = nil
	}
	// 1 and 2: not ready, then out of the registry.
	b.Vitals.SetReady(false)
	stopKeep()
	if kept != nil {
		if err := <-kept; err != nil {
			logf("%s/%s: deregistering: %v", b.Service, b.ID, err)
		}
	}
	logf("%s/%s: not ready and deregistered; draining (%d in flight)", b.Service, b.ID, b.Vitals.InFlight())
	// 3: still serving while routers and agents learn of it.
	if failed == nil {
		time.Sleep(delay)
	}
	// 4: what is in flight finishes.
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := traffic.Shutdown(sctx); err != nil {
		logf("%s/%s: %d requests still in flight after %s; closing", b.Service, b.ID, b.Vitals.InFlight(), timeout)
		traffic.Close()
	}
	if metrics != nil {
		metrics.Close()
	}
	logf("%s/%s: drained", b.Service, b.ID)
	return failed
}

// registration fills in what the Backend knows.
func (b *Backend) registration() (catalog.Registration, error) {
	reg := b.Registration
	host, port, err := net.SplitHostPort(b.Listener.Addr().String())
	if err != nil {
		return reg, fmt.Errorf("client: the listener's address: %w", err)
	}
	if reg.Address == "" {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return reg, fmt.Errorf("client: %s/%s listens on every address (%s); set Registration.Address to the one others reach it at", b.Service, b.ID, host)
		}
		reg.Address = host
	}
	if reg.Port == 0 {
		reg.Port, _ = strconv.Atoi(port)
	}
	if reg.TTL == 0 {
		reg.TTL = catalog.Duration(10 * time.Second)
	}
	if b.Metrics != nil {
		_, mport, err := net.SplitHostPort(b.Metrics.Addr().String())
		if err != nil {
			return reg, fmt.Errorf("client: the metrics listener's address: %w", err)
		}
		meta := map[string]string{}
		for k, v := range reg.Meta {
			meta[k] = v
		}
		meta["metrics_port"] = mport
		reg.Meta = meta
	}
	return reg, nil
}
