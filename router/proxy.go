package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/discotech/disco/balance"
)

// Tries: a request that fails to connect is tried on other backends, up
// to maxTries in all; one answered 502, 503 or 504 (or not answered within
// the try timeout) is tried once more, on another backend, when it is
// idempotent. Retries are within the route's budget.
const (
	maxTries        = 3
	minRetryAllowed = 3 // retries in progress a route may always have
)

// ServeHTTP proxies one request on the traffic port.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	ro := r.table.Load().Lookup(req.Host, req.URL.Path)
	if ro == nil || ro.Proto == "tcp" {
		r.m.unrouted.Inc()
		r.logAccess(req, start, http.StatusNotFound, 0, "", nil, 0)
		plainError(w, http.StatusNotFound, fmt.Sprintf("discotech: no route for %s%s; routes come from urlprefix- tags (see GET /routes on the admin port)", hostOnly(req.Host), req.URL.Path), 0)
		return
	}
	st := ro.Value.(*routeState)
	st.active.Add(1)
	x := exchange{r: r, st: st, w: w, req: req, start: start, now: start}
	x.serve()
	st.active.Add(-1)
}

// exchange is one request's way through the router.
type exchange struct {
	r     *Router
	st    *routeState
	w     http.ResponseWriter
	req   *http.Request
	start time.Time
	now   time.Time // the clock as last read: start, then each try's end
	body  *replayable
	fwd   forwardedFields

	tries   int
	last    *member // the backend of the last try
	status  int
	written int64
}

func (x *exchange) serve() {
	req := x.req
	upgrade := upgradeType(req.Header)
	prepareHeader(req, upgrade)
	x.fwd = forwarded(req)
	if req.Body != nil && req.Body != http.NoBody {
		b, err := newReplayable(req)
		if err != nil {
			x.finish(http.StatusBadRequest, 0)
			plainError(x.w, http.StatusBadRequest, "discotech: "+err.Error(), 0)
			return
		}
		x.body = b
	}
	var tried [maxTries]*member
	statusRetried := false
	var lastErr error
	for {
		m := x.pickOther(tried[:x.tries])
		if m == nil {
			x.unavailable(lastErr)
			return
		}
		if !m.up.acquire(x.r.cfg.MaxRequests) {
			// Circuit open: another backend, without counting a try.
			x.r.m.circuitOpen(x.st, m).Inc()
			tried[x.tries] = m
			x.tries++
			if x.tries < maxTries {
				lastErr = errCircuitOpen
				continue
			}
			x.unavailable(errCircuitOpen)
			return
		}
		tried[x.tries] = m
		x.tries++
		x.last = m
		a, began, err := x.try(m, upgrade)
		retry, reason := x.judge(m, a, err, began, statusRetried)
		if retry != "" && x.tries < maxTries && x.st.allowRetry(x.r.cfg.RetryBudget) {
			if err == nil {
				body := a.body()
				io.Copy(io.Discard, io.LimitReader(body, 64<<10))
				body.Close()
			}
			m.up.release()
			x.r.m.retries(x.st, retry).Inc()
			if retry == "status" || retry == "timeout" {
				statusRetried = true
			}
			lastErr = reason
			x.st.retrying.Add(1)
			defer x.st.retrying.Add(-1)
			continue
		} else if retry != "" {
			x.r.m.retriesRefused(x.st).Inc()
		}
		if err != nil {
			m.up.release()
			x.failed(m, err)
			return
		}
		if upgrade != "" && a.status() == http.StatusSwitchingProtocols {
			x.upgrade(m, a.response(req), began)
			m.up.release()
			return
		}
		x.respond(m, a, began)
		m.up.release()
		return
	}
}

// pickOther picks a backend of the route not in tried.
func (x *exchange) pickOther(tried []*member) *member {
	return pickOtherIn(x.st, x.r.pick.key(x.req), tried, x.r.pick)
}

// pickOtherIn picks a backend of st not in tried (balance.PickExcept).
func pickOtherIn(st *routeState, key uint64, tried []*member, p picker) *member {
	var bs [maxTries]*balance.Backend
	for i, m := range tried {
		bs[i] = m.b
	}
	if b := balance.PickExcept(p.policy(st), st.pool.Load(), key, bs[:len(tried)]); b != nil {
		return b.Value.(*member)
	}
	return nil
}

// reply is a try's response: net/http's, or the h1Pool's, which becomes an
// *http.Response only where one is needed.
type reply struct {
	resp *http.Response
	h1   *h1Response
}

// status is the status code; 0 for none.
func (a reply) status() int {
	switch {
	case a.h1 != nil:
		return a.h1.status
	case a.resp != nil:
		return a.resp.StatusCode
	}
	return 0
}

// statusText is the status as the backend gave it ("503 Service
// Unavailable").
func (a reply) statusText() string {
	if a.h1 != nil {
		return a.h1.statusText()
	}
	return a.resp.Status
}

func (a reply) body() io.ReadCloser {
	if a.h1 != nil {
		return a.h1
	}
	return a.resp.Body
}

// response is the answer as an *http.Response.
func (a reply) response(req *http.Request) *http.Response {
	if a.resp != nil {
		return a.resp
	}
	return a.h1.response(req)
}

// try sends the request to m once: plain HTTP/1.1 through the router's
// own pool (h1Pool), upgrades, HTTPS and HTTP/2 through net/http.
func (x *exchange) try(m *member, upgrade string) (reply, time.Time, error) {
	ro := x.st.route
	in := x.req
	host := in.Host
	switch ro.HostHeader {
	case "":
	case "dst":
		host = m.up.addr
	default:
		host = ro.HostHeader
	}
	if (ro.Proto == "http" || ro.Proto == "") && upgrade == "" {
		began := m.b.BeginAt(x.now)
		o := outbound{in: in, addr: m.up.addr, uri: x.target(), host: host, length: in.ContentLength, fwd: x.fwd, began: began}
		o.body = x.body
		resp, err := x.r.h1.roundTrip(&o)
		return reply{h1: resp}, began, err
	}
	out := in.WithContext(in.Context())
	// net/http gets its own header: the client's connection reuses the map
	// for its next request (keptRequest), and net/http may still be
	// writing this one's when the answer has come. Each try copies it
	// afresh, so a retry sets the forwarded fields alike.
	out.Header = in.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	x.fwd.addTo(out.Header)
	u := url.URL{Scheme: "http", Host: m.up.addr, Path: in.URL.Path, RawPath: in.URL.RawPath, RawQuery: in.URL.RawQuery}
	if ro.Strip != "" || ro.Prepend != "" {
		u.Path, u.RawPath = ro.Rewrite(in.URL.Path), ""
		if in.URL.RawPath != "" {
			u.RawPath = ro.Rewrite(in.URL.RawPath)
		}
	}
	transport := x.r.transport
	switch ro.Proto {
	case "https":
		u.Scheme = "https"
		if ro.TLSSkipVerify {
			transport = x.r.insecure
		}
	case "grpc":
		transport = x.r.h2c
	}
	out.URL = &u
	out.RequestURI = ""
	out.Close = false
	out.Host = host
	if x.body != nil {
		out.Body = x.body.reader()
	}
	began := m.b.BeginAt(x.now)
	resp, err := transport.RoundTrip(out)
	return reply{resp: resp}, began, err
}

// target is the request target the backend gets: the client's, with the
// route's strip and prepend applied.
func (x *exchange) target() string {
	ro, in := x.st.route, x.req
	if ro.Strip == "" && ro.Prepend == "" && strings.HasPrefix(in.RequestURI, "/") {
		return in.RequestURI
	}
	u := url.URL{Path: ro.Rewrite(in.URL.Path), RawQuery: in.URL.RawQuery}
	if in.URL.RawPath != "" {
		u.RawPath = ro.Rewrite(in.URL.RawPath)
	}
	return u.RequestURI()
}

// judge records a try's outcome in the pool and says whether, and why, to
// retry it ("" for no).
func (x *exchange) judge(m *member, a reply, err error, began time.Time, statusRetried bool) (string, error) {
	pool := x.st.pool.Load()
	now := time.Now()
	x.now = now
	idempotent := isIdempotent(x.req) && !x.body.touched()
	var retry string
	ok := true
	switch {
	case err != nil && (x.req.Context().Err() != nil || errors.As(err, new(*bodyError))):
		// The client went away, or its body broke off: not the
		// backend's fault.
		m.b.EndAt(began, now)
		return "", err
	case err != nil:
		ok = false
		var de *dialError
		switch {
		case errors.As(err, &de) && !x.body.touched():
			retry = "connect"
		case isTimeout(err) && idempotent && !statusRetried:
			retry = "timeout"
		}
	case a.status() >= 500:
		ok = false
		if code := a.status(); (code == 502 || code == 503 || code == 504) && idempotent && !statusRetried {
			retry = "status"
		}
	}
	m.b.EndAt(began, now)
	if pool.Result(m.b, now, ok) {
		x.r.ejected(x.st, m, "consecutive failures")
	}
	x.r.m.backendResult(x.st, m, a.status(), err).Inc()
	if err == nil && retry != "" {
		err = fmt.Errorf("%s answered %s", m.up.addr, a.statusText())
	}
	return retry, err
}

// allowRetry reports whether the route's retry budget allows one more
// retry now: retries in progress stay under budget × active requests, with
// a floor of minRetryAllowed.
func (st *routeState) allowRetry(budget float64) bool {
	limit := max(int64(budget*float64(st.active.Load())), minRetryAllowed)
	return st.retrying.Load() < limit
}

// acquire takes a slot of u's circuit breaker; false when it is full.
func (u *upstream) acquire(limit int) bool {
	if u.inflight.Add(1) > int64(limit) {
		u.inflight.Add(-1)
		return false
	}
	return true
}

func (u *upstream) release() { u.inflight.Add(-1) }

// respond copies the backend's response to the client. An answer from
// the h1Pool to a client of the router's own HTTP/1.1 server goes from
// the answer's header lines to the client's (frontWriter.relayHeader);
// any other goes through an *http.Response and the ResponseWriter's
// header map.
func (x *exchange) respond(m *member, a reply, began time.Time) {
	body := a.body()
	defer body.Close()
	fw, relay := x.w.(*frontWriter)
	relay = relay && a.h1 != nil && a.h1.relayable()
	var (
		resp      *http.Response
		status    int
		flush     bool
		announced int
	)
	if relay {
		fw.relayHeader(a.h1)
		status, flush, announced = a.h1.status, a.h1.flushes(), len(a.h1.declared)
	} else {
		resp = a.response(x.req)
		h := x.w.Header()
		removeHopByHop(resp.Header)
		for k, v := range resp.Header {
			h[k] = v
		}
		announced = len(resp.Trailer)
		if announced > 0 {
			keys := make([]string, 0, announced)
			for k := range resp.Trailer {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			h.Set("Trailer", strings.Join(keys, ", "))
		}
		x.w.WriteHeader(resp.StatusCode)
		status, flush = resp.StatusCode, flushes(resp)
	}
	n, err := copyBody(x.w, body, flush)
	if err != nil && !errors.Is(err, context.Canceled) {
		// Headers are out: all that is left is to cut the response short.
		x.r.log.Debug("router: copying a response", "route", x.st.route.Key, "backend", m.up.addr, "err", err)
		x.finish(status, n)
		panic(http.ErrAbortHandler)
	}
	var trailer http.Header
	if relay {
		trailer = a.h1.trailer()
	} else {
		trailer = resp.Trailer
	}
	h := x.w.Header()
	for k, v := range trailer {
		if announced > 0 {
			h[k] = v
		} else {
			h[http.TrailerPrefix+k] = v
		}
	}
	x.finish(status, n)
}

// flushes reports whether a response streams: every chunk the backend
// sends goes to the client at once (server-sent events, unknown lengths,
// gRPC).
func flushes(resp *http.Response) bool {
	return resp.ContentLength == -1 || streamingType(resp.Header.Get("Content-Type"))
}

// streamingType reports whether a Content-Type is one that streams.
func streamingType(ct string) bool {
	return strings.HasPrefix(ct, "text/event-stream") || strings.HasPrefix(ct, "application/grpc")
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies a response body, flushing after each read when flush is
// set.
func copyBody(w http.ResponseWriter, r io.Reader, flush bool) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	rc := http.NewResponseController(w)
	var n int64
	for {
		k, err := r.Read(buf)
		if k > 0 {
			wn, werr := w.Write(buf[:k])
			n += int64(wn)
			if werr != nil {
				return n, werr
			}
			if flush {
				rc.Flush()
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// failed answers a request whose last try failed without a response.
func (x *exchange) failed(m *member, err error) {
	code, what := http.StatusBadGateway, "failed"
	switch {
	case x.req.Context().Err() != nil:
		x.finish(499, 0) // nginx's "client closed request", for the log
		return
	case errors.As(err, new(*bodyError)):
		x.finish(http.StatusBadRequest, 0)
		plainError(x.w, http.StatusBadRequest, "discotech: "+err.Error(), 0)
		return
	case isTimeout(err):
		code, what = http.StatusGatewayTimeout, "did not answer in time"
	}
	x.finish(code, 0)
	plainError(x.w, code, fmt.Sprintf("discotech: backend %s of %s %s after %d tries: %v", m.up.addr, x.st.route.Key, what, x.tries, err), 0)
}

// unavailable answers a request with no backend left to try.
func (x *exchange) unavailable(lastErr error) {
	x.finish(http.StatusServiceUnavailable, 0)
	if x.tries == 0 {
		x.r.m.noBackend(x.st).Inc()
		n := len(x.st.members)
		plainError(x.w, http.StatusServiceUnavailable, fmt.Sprintf("discotech: no backend can take requests for %s: %d registered, none eligible (not ready, ejected or drained); try again shortly", x.st.route.Key, n), 1)
		return
	}
	if errors.Is(lastErr, errCircuitOpen) {
		plainError(x.w, http.StatusServiceUnavailable, fmt.Sprintf("discotech: every backend of %s that could be tried has %d requests in flight (circuit breaker); try again shortly", x.st.route.Key, x.r.cfg.MaxRequests), 1)
		return
	}
	plainError(x.w, http.StatusServiceUnavailable, fmt.Sprintf("discotech: every backend tried for %s failed (%d tries); last: %v", x.st.route.Key, x.tries, lastErr), 1)
}

var errCircuitOpen = errors.New("circuit breaker open")

// finish records the request's outcome in the metrics and the access log.
func (x *exchange) finish(status int, written int64) {
	x.status, x.written = status, written
	x.r.m.request(x.st, status, time.Since(x.start))
	addr := ""
	if x.last != nil {
		addr = x.last.up.addr
	}
	x.r.logAccess(x.req, x.start, status, written, addr, x.st, x.tries)
}

// plainError writes a short text answer; retryAfter > 0 adds Retry-After.
func plainError(w http.ResponseWriter, code int, msg string, retryAfter int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

// replayable is a request body that a failed try does not close, so that
// a try that never read it can hand it to the next. A body of known length
// up to maxReplay is read whole first and kept, so that any try can send it
// again, as a reset kept-alive connection or a 503 may need.
type replayable struct {
	rc   io.ReadCloser
	read atomic.Bool
	kept []byte // the whole body, when small enough; nil otherwise
}

// maxReplay is the largest request body kept for sending again.
const maxReplay = 64 << 10

// newReplayable wraps a request's body, reading it whole when its length
// is known and at most maxReplay. The error is the client's.
func newReplayable(req *http.Request) (*replayable, error) {
	b := &replayable{rc: req.Body}
	if req.ContentLength > 0 && req.ContentLength <= maxReplay {
		b.kept = make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, b.kept); err != nil {
			return nil, &bodyError{err}
		}
	}
	return b, nil
}

// reader is what one try sends: the kept body from its start, or the
// client's stream.
func (b *replayable) reader() io.ReadCloser {
	if b.kept != nil {
		return io.NopCloser(bytes.NewReader(b.kept))
	}
	return b
}

func (b *replayable) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *replayable) Close() error { return nil }

// touched reports whether a try consumed part of a body that cannot be
// sent again (nil: no body).
func (b *replayable) touched() bool { return b != nil && b.kept == nil && b.read.Load() }

func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) ||
		err != nil && strings.Contains(err.Error(), "timeout awaiting response headers")
}

// hopHeaders are the hop-by-hop headers (RFC 9110 §7.6.1) a proxy must not
// forward.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop deletes the hop-by-hop headers and those Connection
// names.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		if _, ok := h[k]; ok {
			delete(h, k)
		}
	}
}

// prepareHeader turns the client's request header into the backend's, in
// place: hop-by-hop headers out (but an upgrade's and "TE: trailers"
// stay). The X-Forwarded- fields are forwarded's.
func prepareHeader(req *http.Request, upgrade string) {
	h := req.Header
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHopByHop(h)
	if trailers {
		h["Te"] = []string{"trailers"}
	}
	if upgrade != "" {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = []string{upgrade}
	}
}

// forwardedFields are the X-Forwarded- fields a backend gets: the
// client's address added to X-Forwarded-For, and X-Forwarded-Proto and
// X-Forwarded-Host unless the client sent its own. The HTTP/1.1 pool
// writes them as they are; addTo puts them in the header for net/http's
// transports.
type forwardedFields struct {
	For   string // the whole X-Forwarded-For; "" to leave the client's
	Proto string // "" when the client sent one
	Host  string // "" when the client sent one
}

func forwarded(req *http.Request) forwardedFields {
	h := req.Header
	var f forwardedFields
	if ip, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		f.For = ip
		if prior, ok := h["X-Forwarded-For"]; ok {
			f.For = strings.Join(prior, ", ") + ", " + ip
		}
	}
	if _, ok := h["X-Forwarded-Proto"]; !ok {
		f.Proto = "http"
		if req.TLS != nil {
			f.Proto = "https"
		}
	}
	if _, ok := h["X-Forwarded-Host"]; !ok {
		f.Host = req.Host
	}
	return f
}

// addTo sets f's fields in h.
func (f forwardedFields) addTo(h http.Header) {
	if f.For != "" {
		h["X-Forwarded-For"] = []string{f.For}
	}
	if f.Proto != "" {
		h["X-Forwarded-Proto"] = []string{f.Proto}
	}
	if f.Host != "" {
		h["X-Forwarded-Host"] = []string{f.Host}
	}
}

// upgradeType is the protocol a request asks to upgrade to ("websocket"),
// or "".
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// hostOnly is a Host header without its port.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}

// ejected logs and counts an ejection.
func (r *Router) ejected(st *routeState, m *member, reason string) {
	r.m.ejections(st, m, reason).Inc()
	r.log.Warn("router: backend ejected", "route", st.route.Key, "backend", m.up.addr, "id", m.up.key, "reason", reason)
}
