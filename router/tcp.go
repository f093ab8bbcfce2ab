package router

import (
	"context"
	"errors"
	"net"
	"strconv"

	"github.com/discotech/disco/balance"
	"github.com/discotech/disco/relay"
	"github.com/discotech/disco/router/route"
)

// tcpListener serves one TCP route's port: each connection goes to a
// backend of the route as it is at accept time, joined with kernel splice
// for bulk transfers (package relay).
type tcpListener struct {
	port int
	ln   net.Listener
}

// syncTCP opens a listener for each TCP route in changed that has none and
// closes those of TCP routes in removed. Under r.mu; before Serve it does
// nothing (Serve opens what the table has).
func (r *Router) syncTCP(changed []*route.Route, removed []*route.Route) {
	if r.ctx == nil {
		return
	}
	for _, ro := range removed {
		if l := r.tcp[ro.Port]; ro.Port > 0 && l != nil {
			l.ln.Close()
			delete(r.tcp, ro.Port)
		}
	}
	for _, ro := range changed {
		if ro.Port == 0 || r.tcp[ro.Port] != nil {
			continue
		}
		host, _, _ := net.SplitHostPort(r.cfg.Listen)
		addr := net.JoinHostPort(host, strconv.Itoa(ro.Port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			r.m.routeErrors.Inc()
			r.log.Error("router: cannot listen for a TCP route", "route", ro.Key, "addr", addr, "err", err)
			continue
		}
		l := &tcpListener{port: ro.Port, ln: ln}
		r.tcp[ro.Port] = l
		r.log.Info("router: TCP route listening", "route", ro.Key, "addr", addr)
		r.bg.Go(func() { r.serveTCP(l) })
	}
}

// closeTCP closes every TCP route's listener.
func (r *Router) closeTCP() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for port, l := range r.tcp {
		l.ln.Close()
		delete(r.tcp, port)
	}
}

func (r *Router) serveTCP(l *tcpListener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		r.bg.Go(func() { r.forwardTCP(l.port, c) })
	}
}

// forwardTCP joins one client connection with a backend, trying others
// when one refuses.
func (r *Router) forwardTCP(port int, c net.Conn) {
	defer c.Close()
	ro := r.table.Load().TCP(port)
	if ro == nil {
		return
	}
	st := ro.Value.(*routeState)
	dialer := net.Dialer{Timeout: r.cfg.ConnectTimeout}
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", addr) }
	failed := func(b *balance.Backend, err error, ejected bool) {
		r.log.Debug("router: TCP backend refused", "route", ro.Key, "backend", b.Addr, "err", err)
		if ejected {
			r.ejected(st, b.Value.(*member), "consecutive failures")
		}
	}
	b, be, rtt, _, err := balance.Dial(r.ctx, r.pick.policy(st), st.pool.Load(), 0, maxTries, dial, failed)
	if err != nil {
		r.m.noBackend(st).Inc()
		return
	}
	r.m.tcpConns.WithLabelValues(ro.Key, be.Addr).Inc()
	in, out, _ := relay.Join(c, b)
	be.EndConn(rtt)
	r.m.tcpBytes.WithLabelValues(ro.Key, "in").Add(float64(in))
	r.m.tcpBytes.WithLabelValues(ro.Key, "out").Add(float64(out))
}
