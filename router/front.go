package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// frontServer serves the traffic port's HTTP/1.1 when TLS is off, in place
// of net/http's server, whose per-request machinery (a background read of
// the connection, a context and a goroutine switch or two per request, the
// chunk writer's framing) costs about an eighth of the router's CPU at the
// edge. It keeps net/http's behaviour: requests parsed as http.ReadRequest
// parses them (by h1Request, with fewer allocations), keep-alive and
// pipelining, Expect: 100-continue, Content-Length when the body's length
// is known and chunked (close-delimited for HTTP/1.0) otherwise, trailers,
// HEAD, 400/431/501/505 for requests it cannot take, hijacking for
// upgrades, http.ErrAbortHandler, graceful shutdown.
//
// Differences, all deliberate:
//
//   - One context per connection, not per request: a request's context ends
//     when its connection does. Without a background read, a client that
//     hangs up while the router waits for the backend is noticed only when
//     the answer is written to it (or the next read fails), not at once;
//     the backend's work for it is wasted, but nothing else is. In return
//     a request costs no extra read, timer or goroutine switch.
//   - The read deadline is set once per request: the idle timeout while
//     waiting for the next request, the header timeout only when the
//     headers do not arrive with its first bytes; the first read of a body
//     clears it (net/http sets and clears it two to four times).
//   - Response headers are written in map order, not sorted; a backend's
//     answer relayed from its lines (relayHeader), in the backend's order.
//
// A connection that opens with the HTTP/2 preface (cleartext HTTP/2 with
// prior knowledge) is handed, with the bytes already read, to srv, the
// net/http server, which serves it as before.
type frontServer struct {
	srv       *http.Server // the handler, timeouts and error log; serves h2c
	h2        *connListener
	maxHeader int64 // bytes a request's header may take

	shutting atomic.Bool
	mu       sync.Mutex
	ln       net.Listener
	conns    map[*frontConn]struct{}
}

// Buffer sizes: each connection's reader and writer, and how much of a
// response of unknown length is held back to send it with a
// Content-Length.
const (
	frontBufSize  = 4 << 10
	frontHoldSize = 4 << 10
	// maxDrainBytes is how much of a request body the handler left unread
	// is read and dropped to keep the connection; with more left it is
	// closed (net/http's maxPostHandlerReadBytes).
	maxDrainBytes = 256 << 10
)

// h2Preface opens every HTTP/2 connection.
var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// newFrontServer serves srv's handler with srv's ReadHeaderTimeout,
// IdleTimeout, MaxHeaderBytes and ErrorLog; srv itself serves the h2c
// connections.
func newFrontServer(srv *http.Server) *frontServer {
	maxHeader := int64(srv.MaxHeaderBytes)
	if maxHeader <= 0 {
		maxHeader = http.DefaultMaxHeaderBytes
	}
	return &frontServer{
		srv:       srv,
		maxHeader: maxHeader + 4096, // net/http's slack for the request line
		conns:     map[*frontConn]struct{}{},
	}
}

// Serve accepts connections on ln until Shutdown, serving each on its own
// goroutine; it returns http.ErrServerClosed after Shutdown.
func (s *frontServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.h2 = newConnListener(ln.Addr())
	s.mu.Unlock()
	go func() {
		if err := s.srv.Serve(s.h2); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logf("router: the HTTP/2 server stopped: %v", err)
		}
	}()
	var delay time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logf("router: accept error: %v; retrying in %v", err, delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := s.newConn(rwc)
		if !s.track(c) {
			rwc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections as they become idle,
// lets requests in progress finish until ctx is done, then closes every
// connection left (cancelling their requests). The h2c connections get the
// same from net/http's server.
func (s *frontServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutting.Store(true)
	if s.ln != nil {
		s.ln.Close()
		// srv closes it too, unless its Serve had not begun.
		s.h2.Close()
	}
	s.mu.Unlock()
	h2done := make(chan error, 1)
	go func() { h2done <- s.srv.Shutdown(ctx) }()
	err := s.drain(ctx)
	if h2err := <-h2done; err == nil {
		err = h2err
	}
	return err
}

// drain closes idle connections until none is left or ctx is done, then
// closes the rest.
func (s *frontServer) drain(ctx context.Context) error {
	wait := time.Millisecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.state.Store(connClosed)
				c.cancel()
				c.rwc.Close()
			}
			s.mu.Unlock()
			return ctx.Err()
		case <-t.C:
			wait = min(2*wait, 100*time.Millisecond)
			t.Reset(wait)
		}
	}
}

// closeIdle closes the connections waiting for a request and reports
// whether none is left.
func (s *frontServer) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) {
			c.rwc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *frontServer) track(c *frontConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *frontServer) untrack(c *frontConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *frontServer) logf(format string, args ...any) {
	if s.srv.ErrorLog != nil {
		s.srv.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// Connection states, for Shutdown.
const (
	connIdle   int32 = iota // waiting for a request (or reading its header)
	connActive              // serving a request
	connClosed              // closed by Shutdown
)

var (
	frontReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, frontBufSize) }}
	frontWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, frontBufSize) }}
)

// frontConn is one client connection. Its Read and Write are the
// connection's, with the header size limit on reads and the context
// cancelled on any error: the client is gone.
type frontConn struct {
	s      *frontServer
	rwc    net.Conn
	sys    net.Conn // rwc, read and written with raw system calls (newSysConn)
	rd     readDeadline
	remote string
	ctx    context.Context
	cancel context.CancelFunc
	br     *bufio.Reader
	bw     *bufio.Writer
	state  atomic.Int32
	w      frontWriter // the response in progress, reused
	parser h1Request   // reads the requests, its buffers reused

	// remain is how many more bytes the request header being read may
	// take; math.MaxInt64 outside headers.
	remain     int64
	lastPOST   bool // the last request was a POST: skip a stray CRLF
	hijacked   bool // taken over by a handler
	handedOver bool // served by the HTTP/2 server

	// contMu orders an automatic "100 Continue", written by whichever
	// goroutine first reads the body, before the response's header.
	contMu      sync.Mutex
	canContinue bool

	dateSec int64
	date    []byte // the Date header's value for dateSec
}

func (s *frontServer) newConn(rwc net.Conn) *frontConn {
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.srv)
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, rwc.LocalAddr())
	in := &interrupter{}
	ctx = context.WithValue(ctx, interrupterKey{}, in)
	c := &frontConn{s: s, rwc: rwc, sys: newSysConn(rwc), remain: math.MaxInt64}
	var cancel context.CancelFunc
	c.ctx, cancel = context.WithCancel(ctx)
	c.cancel = func() {
		cancel()
		in.fire()
	}
	if ra := rwc.RemoteAddr(); ra != nil {
		c.remote = ra.String()
	}
	c.br = frontReaders.Get().(*bufio.Reader)
	c.br.Reset(c)
	c.bw = frontWriters.Get().(*bufio.Writer)
	c.bw.Reset(c)
	c.w = frontWriter{c: c, header: http.Header{}}
	return c
}

func (c *frontConn) Read(p []byte) (int, error) {
	if c.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.remain {
		p = p[:c.remain]
	}
	n, err := c.sys.Read(p)
	c.remain -= int64(n)
	if err != nil {
		c.cancel()
	}
	return n, err
}

func (c *frontConn) Write(p []byte) (int, error) {
	n, err := c.sys.Write(p)
	if err != nil {
		c.cancel()
	}
	return n, err
}

// serve reads and answers requests on c until either side closes it.
func (c *frontConn) serve() {
	defer c.close()
	c.rd.set(c.rwc, time.Now(), c.s.srv.ReadHeaderTimeout)
	if c.h2c() {
		return
	}
	for first := true; ; first = false {
		req, err := c.readRequest(first)
		if err != nil {
			c.reject(err)
			return
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			return // closed by Shutdown
		}
		if !c.serveRequest(req) {
			return
		}
		c.state.Store(connIdle)
		if c.s.shutting.Load() {
			return
		}
	}
}

// close ends the connection, unless a handler took it over or the HTTP/2
// server has it.
func (c *frontConn) close() {
	c.cancel()
	c.s.untrack(c)
	if c.hijacked {
		return // the handler has c.rwc, c.br and c.bw
	}
	if !c.handedOver {
		c.rwc.Close()
	}
	c.br.Reset(nil)
	frontReaders.Put(c.br)
	c.bw.Reset(nil)
	frontWriters.Put(c.bw)
}

// h2c hands the connection to the HTTP/2 server if it opens with the
// HTTP/2 preface.
func (c *frontConn) h2c() bool {
	if _, err := c.br.Peek(1); err != nil {
		return false
	}
	got, _ := c.br.Peek(min(c.br.Buffered(), len(h2Preface)))
	if !bytes.HasPrefix(h2Preface, got) {
		return false
	}
	if got, err := c.br.Peek(len(h2Preface)); err != nil || !bytes.Equal(got, h2Preface) {
		return false
	}
	read := make([]byte, c.br.Buffered())
	c.br.Read(read)
	c.rd.clear(c.rwc)
	c.handedOver = true
	c.s.untrack(c)
	c.s.h2.hand(&replayConn{Conn: c.rwc, read: read})
	return true
}

// Errors reading a request, answered by reject.
var errHeaderTooLarge = errors.New("http: request header too large")

type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return strconv.Itoa(e.code) + " " + e.text }

// readRequest reads the next request's header.
func (c *frontConn) readRequest(first bool) (*http.Request, error) {
	c.remain = c.s.maxHeader
	if !first {
		if c.br.Buffered() > 0 {
			// Pipelined: the request is (at least partly) here.
			c.rd.set(c.rwc, time.Now(), c.s.srv.ReadHeaderTimeout)
		} else {
			c.rd.set(c.rwc, time.Now(), c.s.srv.IdleTimeout)
			yield() // while the client reads the answer and asks again
			if _, err := c.br.Peek(1); err != nil {
				return nil, err
			}
			if !headerBuffered(c.br) {
				// A header in pieces: it gets the header timeout from now.
				c.rd.set(c.rwc, time.Now(), c.s.srv.ReadHeaderTimeout)
			}
		}
	}
	if c.lastPOST {
		// RFC 9112 §2.2: tolerate the CRLF old clients send after a body.
		b, _ := c.br.Peek(2)
		for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
			c.br.Discard(1)
			b = b[1:]
		}
	}
	req, err := c.parser.readRequest(c.ctx, c.br)
	if err != nil {
		if c.remain <= 0 || errors.Is(err, errHeadTooLarge) {
			return nil, errHeaderTooLarge
		}
		return nil, err
	}
	c.remain = math.MaxInt64
	c.lastPOST = req.Method == http.MethodPost
	if req.ProtoMajor != 1 {
		return nil, statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	// The Host header is in req.Host (an empty one counts as missing here;
	// net/http lets it through).
	if req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != http.MethodConnect {
		return nil, statusError{http.StatusBadRequest, "missing required Host header"}
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return nil, statusError{http.StatusBadRequest, "malformed Host header"}
	}
	req.RemoteAddr = c.remote
	return req, nil
}

// headerBuffered reports whether a whole request header is in br, so that
// reading it cannot block.
func headerBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// reject answers a request that could not be read, as net/http does, and
// leaves the connection to be closed.
func (c *frontConn) reject(err error) {
	const headers = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var se statusError
	switch {
	case errors.Is(err, errHeaderTooLarge):
		const status = "431 Request Header Fields Too Large"
		io.WriteString(c.rwc, "HTTP/1.1 "+status+headers+status)
		c.closeWriteAndWait()
	case strings.HasPrefix(err.Error(), "unsupported transfer encoding"):
		// RFC 9112 §6.1: 501 for a transfer coding we do not know, without
		// echoing it.
		io.WriteString(c.rwc, "HTTP/1.1 501 Not Implemented"+headers+"Unsupported transfer encoding")
	case isCommonNetReadError(err):
		// The client left, or timed out: no answer.
	case errors.As(err, &se):
		msg := fmt.Sprintf("%d %s: %s", se.code, http.StatusText(se.code), se.text)
		io.WriteString(c.rwc, "HTTP/1.1 "+msg+headers+msg)
	default:
		const status = "400 Bad Request"
		io.WriteString(c.rwc, "HTTP/1.1 "+status+headers+status)
	}
}

func isCommonNetReadError(err error) bool {
	if err == io.EOF {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}

// closeWriteAndWait flushes, half-closes and waits a little before the
// connection is closed, so that a client still sending gets the answer
// rather than a reset (net/http's rstAvoidanceDelay).
func (c *frontConn) closeWriteAndWait() {
	c.bw.Flush()
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	time.Sleep(500 * time.Millisecond)
}

// serveRequest runs the handler for req and finishes its response; false
// when the connection is done.
func (c *frontConn) serveRequest(req *http.Request) bool {
	w := &c.w
	w.reset(req)
	if httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") {
		if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
			w.expect = true
			c.canContinue = true // no other goroutine has the request yet
		}
	} else if len(req.Header["Expect"]) > 0 {
		// RFC 9110 §10.1.1: an expectation we cannot meet.
		w.header.Set("Connection", "close")
		w.WriteHeader(http.StatusExpectationFailed)
		w.finish()
		return false
	}
	if req.Body != http.NoBody {
		w.body = &frontBody{c: c, rc: req.Body, length: req.ContentLength, expect: w.expect}
		req.Body = w.body
	}
	if !c.runHandler(w, req) {
		// The handler panicked: cut the response short.
		c.disableContinue()
		if w.body != nil {
			w.body.Close()
		}
		if !c.hijacked {
			c.bw.Flush()
		}
		return false
	}
	if c.hijacked {
		return false
	}
	w.finish()
	if w.closeAfter {
		if w.tooBig {
			c.closeWriteAndWait()
		}
		return false
	}
	// Data left in the writer means its last flush failed.
	return c.bw.Buffered() == 0
}

// runHandler calls the handler, recovering a panic; false when it panicked.
func (c *frontConn) runHandler(w *frontWriter, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.logf("http: panic serving %v: %v\n%s", c.remote, p, buf)
			}
		}
	}()
	if req.Method == http.MethodOptions && req.RequestURI == "*" {
		// "OPTIONS *" is about the server, not a route (net/http's
		// globalOptionsHandler).
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return true
	}
	c.s.srv.Handler.ServeHTTP(w, req)
	return true
}

// writeContinue answers Expect: 100-continue, once, unless the response
// has begun.
func (c *frontConn) writeContinue() {
	c.contMu.Lock()
	defer c.contMu.Unlock()
	if !c.canContinue {
		return
	}
	c.canContinue = false
	c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	c.bw.Flush()
}

// disableContinue stops writeContinue, waiting for one in progress.
func (c *frontConn) disableContinue() {
	if !c.w.expect {
		return
	}
	c.contMu.Lock()
	c.canContinue = false
	c.contMu.Unlock()
}

// dateValue is the Date header's value now, formatted once a second.
func (c *frontConn) dateValue() []byte {
	now := time.Now()
	if s := now.Unix(); s != c.dateSec || c.date == nil {
		c.dateSec = s
		c.date = now.UTC().AppendFormat(c.date[:0], http.TimeFormat)
	}
	return c.date
}

// frontWriter is the http.ResponseWriter (with http.Flusher,
// http.Hijacker and the methods http.ResponseController looks for) of a
// frontConn's current request.
//
// WriteHeader notes the status and serialises the header map as it is
// then; the header goes out with the first body bytes, a Flush or the
// handler's return. A body of unknown length is held back up to
// frontHoldSize, so that a short one is sent with a Content-Length;
// longer, or flushed, it is chunked.
type frontWriter struct {
	c      *frontConn
	req    *http.Request
	body   *frontBody // nil without a request body
	header http.Header
	expect bool // the client waits for 100 Continue before the body

	// From the request, before the handler can change its header.
	wants10KeepAlive, wantsClose bool

	status    int // 0 until WriteHeader
	committed bool
	done      bool // the handler returned
	hold      []byte
	clen      int64 // declared or computed Content-Length, -1 for none
	written   int64
	chunked   bool

	closeAfter bool // close the connection after this response
	tooBig     bool // ... because too much of the request body is left

	// The header as of WriteHeader: lines other than the framing ones, and
	// what the framing depends on.
	lines          []byte
	te             string
	connection     []string
	hasConnection  bool
	haveType       bool
	hasCE          bool
	hasDate        bool
	trailers       []string // declared in Trailer
	prefixTrailers bool     // keys with http.TrailerPrefix
}

// reset readies w for req, keeping its buffers.
func (w *frontWriter) reset(req *http.Request) {
	clear(w.header)
	*w = frontWriter{
		c: w.c, req: req, header: w.header,
		hold: w.hold[:0], lines: w.lines[:0], trailers: w.trailers[:0],
		clen:             -1,
		wants10KeepAlive: req.ProtoMajor == 1 && req.ProtoMinor == 0 && httpguts.HeaderValuesContainsToken(req.Header["Connection"], "keep-alive"),
		wantsClose:       req.Close || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close"),
	}
}

func (w *frontWriter) Header() http.Header { return w.header }

func (w *frontWriter) WriteHeader(code int) {
	if w.c.hijacked {
		w.c.s.logf("http: response.WriteHeader on hijacked connection")
		return
	}
	if w.status != 0 {
		w.c.s.logf("http: superfluous response.WriteHeader call")
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 101 || code > 199 {
		w.c.disableContinue()
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// Informational: out at once, the header map kept for the answer.
		w.lines = appendHeaderLines(w.lines[:0], w.header, "Content-Length", "Transfer-Encoding")
		w.writeStatusLine(code)
		w.c.bw.Write(w.lines)
		w.c.bw.WriteString("\r\n")
		w.c.bw.Flush()
		w.lines = w.lines[:0]
		return
	}
	w.status = code
	w.snapshot()
}

// snapshot records the header as WriteHeader found it: later changes
// only matter as trailers.
func (w *frontWriter) snapshot() {
	bodyAllowed := bodyAllowedForStatus(w.status)
	for k, vs := range w.header {
		switch k {
		case "Content-Length":
			if bodyAllowed && len(vs) > 0 {
				if v, err := strconv.ParseInt(vs[0], 10, 64); err == nil && v >= 0 {
					w.clen = v
				} else {
					w.c.s.logf("http: invalid Content-Length of %q", vs[0])
				}
			}
			continue
		case "Transfer-Encoding":
			if len(vs) > 0 {
				w.te = vs[0]
			}
			continue
		case "Connection":
			w.connection, w.hasConnection = vs, true
			continue
		case "Content-Type":
			w.haveType = true
			if w.status == http.StatusNotModified {
				continue
			}
		case "Content-Encoding":
			w.hasCE = len(vs) > 0 && vs[0] != ""
		case "Date":
			w.hasDate = true
		case "Trailer":
			for _, v := range vs {
				for f := range strings.SplitSeq(v, ",") {
					if f = http.CanonicalHeaderKey(textproto.TrimString(f)); f != "" && httpguts.ValidTrailerHeader(f) {
						w.trailers = append(w.trailers, f)
					}
				}
			}
		}
		if strings.HasPrefix(k, http.TrailerPrefix) {
			w.prefixTrailers = true
			continue
		}
		w.lines = appendHeaderLine(w.lines, k, vs)
	}
}

// relayHeader is WriteHeader for an answer the h1Pool read, with the
// header taken from the answer's lines instead of the header map: the
// same status line, fields and framing as copying the answer's header
// into the map would give (exchange.respond's other way), but for two
// things. The fields keep the backend's order. And the fields a
// Connection field names are always left out, where http.ReadResponse
// forgets them when it drops a Connection field saying close. r must be
// relayable.
func (w *frontWriter) relayHeader(r *h1Response) {
	w.c.disableContinue()
	w.status = r.status
	if bodyAllowedForStatus(w.status) && r.headerLength >= 0 {
		w.clen = r.headerLength
	}
	seenCE := false
	for _, f := range r.fields[:r.nHeader] {
		switch f.kind {
		case fieldBadName, fieldHop, fieldConnection, fieldContentLength, fieldTransferEncoding, fieldTrailer:
			// Not the client's, or framing of the router's own.
			continue
		}
		if r.namedByConnection(r.name(f)) {
			continue
		}
		switch f.kind {
		case fieldContentType:
			w.haveType = true
			if w.status == http.StatusNotModified {
				continue
			}
		case fieldContentEncoding:
			if !seenCE {
				seenCE, w.hasCE = true, f.end > f.colon+2
			}
		case fieldDate:
			w.hasDate = true
		}
		w.lines = append(w.lines, r.head[f.start:f.end+2]...)
	}
	if r.cacheControl && !r.namedByConnection([]byte("Cache-Control")) {
		w.lines = append(w.lines, "Cache-Control: no-cache\r\n"...)
	}
	if len(r.declared) > 0 {
		slices.Sort(r.declared) // as the general path announces them
		w.lines = append(w.lines, "Trailer: "...)
		for i, k := range r.declared {
			if i > 0 {
				w.lines = append(w.lines, ", "...)
			}
			w.lines = append(w.lines, k...)
			if httpguts.ValidTrailerHeader(k) {
				w.trailers = append(w.trailers, k)
			}
		}
		w.lines = append(w.lines, "\r\n"...)
	}
}

// appendHeaderLines appends h's lines but those of the keys in skip.
func appendHeaderLines(b []byte, h http.Header, skip ...string) []byte {
	for k, vs := range h {
		if !slices.Contains(skip, k) {
			b = appendHeaderLine(b, k, vs)
		}
	}
	return b
}

// appendHeaderLine appends "k: v\r\n" for each value, as http.Header.Write
// does: invalid keys dropped, line breaks in values turned to spaces.
func appendHeaderLine(b []byte, k string, vs []string) []byte {
	if !httpguts.ValidHeaderFieldName(k) {
		return b
	}
	for _, v := range vs {
		v = textproto.TrimString(v)
		b = append(b, k...)
		b = append(b, ": "...)
		start := len(b)
		b = append(b, v...)
		if strings.ContainsAny(v, "\r\n") {
			for i := start; i < len(b); i++ {
				if b[i] == '\r' || b[i] == '\n' {
					b[i] = ' '
				}
			}
		}
		b = append(b, "\r\n"...)
	}
	return b
}

func bodyAllowedForStatus(status int) bool {
	return (status < 100 || status > 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *frontWriter) writeStatusLine(code int) {
	bw := w.c.bw
	if w.req.ProtoAtLeast(1, 1) {
		bw.WriteString("HTTP/1.1 ")
	} else {
		bw.WriteString("HTTP/1.0 ")
	}
	text := http.StatusText(code)
	if text == "" {
		fmt.Fprintf(bw, "%03d status code %d\r\n", code, code)
		return
	}
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	bw.WriteByte(' ')
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

// commit writes the status line and header, choosing the framing as
// net/http's chunkWriter.writeHeader does; p is the start of the body, for
// its length when the handler is done and for sniffing its type.
func (w *frontWriter) commit(p []byte) {
	w.committed = true
	req := w.req
	isHEAD := req.Method == http.MethodHead
	bodyAllowed := bodyAllowedForStatus(w.status)
	trailers := len(w.trailers) > 0 || w.prefixTrailers
	hasTE := w.te != ""
	connFirst := ""
	if len(w.connection) > 0 {
		connFirst = w.connection[0]
	}
	if w.done && !trailers && !hasTE && bodyAllowed && w.clen < 0 && (!isHEAD || len(p) > 0) {
		w.clen = int64(len(p))
	}
	hasCL := w.clen >= 0
	keepAlive10 := false
	if w.wants10KeepAlive && (isHEAD || hasCL || !bodyAllowed) {
		keepAlive10 = !w.hasConnection
	} else if !req.ProtoAtLeast(1, 1) || w.wantsClose {
		w.closeAfter = true
	}
	if connFirst == "close" || w.c.s.shutting.Load() {
		w.closeAfter = true
	}
	if w.body != nil && !w.closeAfter {
		if w.closeAfter = !w.body.drain(); w.closeAfter {
			w.tooBig = w.body.tooBig
		}
	}
	var sniffed string
	if bodyAllowed && !w.haveType && !w.hasCE && !hasTE && len(p) > 0 {
		sniffed = http.DetectContentType(p)
	}
	if hasCL && hasTE && w.te != "identity" {
		w.c.s.logf("http: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", w.te, w.clen)
		w.clen, hasCL = -1, false
	}
	switch {
	case isHEAD || !bodyAllowed:
	case hasCL:
	case req.ProtoAtLeast(1, 1):
		if w.te == "identity" {
			w.closeAfter = true
		} else {
			w.chunked = true
		}
	default:
		w.closeAfter = true
	}
	dropConnection := w.closeAfter && !httpguts.HeaderValuesContainsToken(w.connection[:min(len(w.connection), 1)], "close") &&
		w.status != http.StatusSwitchingProtocols

	bw := w.c.bw
	w.writeStatusLine(w.status)
	bw.Write(w.lines)
	switch {
	case dropConnection && req.ProtoAtLeast(1, 1) || w.tooBig:
		bw.WriteString("Connection: close\r\n")
	case dropConnection:
	case keepAlive10:
		bw.WriteString("Connection: keep-alive\r\n")
	default:
		w.lines = appendHeaderLine(w.lines[:0], "Connection", w.connection)
		bw.Write(w.lines)
	}
	if hasCL && bodyAllowed {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.clen, 10))
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if sniffed != "" {
		bw.WriteString("Content-Type: ")
		bw.WriteString(sniffed)
		bw.WriteString("\r\n")
	}
	if !w.hasDate {
		bw.WriteString("Date: ")
		bw.Write(w.c.dateValue())
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

func (w *frontWriter) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.clen >= 0 && w.written > w.clen {
		return 0, http.ErrContentLength
	}
	if !w.committed {
		if w.clen < 0 && len(w.hold)+len(p) <= frontHoldSize {
			if w.hold == nil {
				w.hold = make([]byte, 0, frontHoldSize)
			}
			w.hold = append(w.hold, p...)
			return len(p), nil
		}
		if err := w.commitHeld(); err != nil {
			return 0, err
		}
		if !w.committed {
			w.commit(p)
		}
	}
	return w.writeBody(p)
}

// commitHeld commits with the held-back body, if any, and writes it.
func (w *frontWriter) commitHeld() error {
	if len(w.hold) == 0 && !w.done {
		return nil
	}
	w.commit(w.hold)
	_, err := w.writeBody(w.hold)
	w.hold = w.hold[:0]
	return err
}

// writeBody writes body bytes after the header, framed.
func (w *frontWriter) writeBody(p []byte) (int, error) {
	if len(p) == 0 || w.req.Method == http.MethodHead || !bodyAllowedForStatus(w.status) {
		return len(p), nil
	}
	bw := w.c.bw
	if !w.chunked {
		return bw.Write(p)
	}
	b := strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16)
	bw.Write(append(b, '\r', '\n'))
	bw.Write(p)
	if _, err := bw.WriteString("\r\n"); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *frontWriter) FlushError() error {
	if w.c.hijacked {
		return http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commitHeld()
		if !w.committed {
			w.commit(nil)
		}
	}
	return w.c.bw.Flush()
}

func (w *frontWriter) Flush() { w.FlushError() }

// Hijack hands the connection to the handler: the response so far is
// flushed, and the returned reader holds what the client sent after the
// request's header.
func (w *frontWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.done {
		panic("router: Hijack called after ServeHTTP finished")
	}
	c.disableContinue()
	if w.status != 0 && !w.committed {
		w.commitHeld()
		if !w.committed {
			w.commit(nil)
		}
	}
	c.bw.Flush()
	c.hijacked = true
	c.rwc.SetDeadline(time.Time{})
	c.rd.setBy(time.Time{})
	c.s.untrack(c)
	return c.rwc, bufio.NewReadWriter(c.br, c.bw), nil
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *frontWriter) SetReadDeadline(t time.Time) error {
	w.c.rd.setBy(t)
	return w.c.rwc.SetReadDeadline(t)
}
func (w *frontWriter) SetWriteDeadline(t time.Time) error { return w.c.rwc.SetWriteDeadline(t) }

// finish completes the response after the handler returned: the header if
// not yet out, the last chunk and trailers, then a flush.
func (w *frontWriter) finish() {
	w.done = true
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commitHeld()
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		bw.Write(w.appendTrailers(w.lines[:0]))
		bw.WriteString("\r\n")
	}
	if w.req.Method != http.MethodHead && w.clen >= 0 && bodyAllowedForStatus(w.status) && w.clen != w.written {
		// Short of its Content-Length: the connection is out of step.
		w.closeAfter = true
	}
	bw.Flush()
	if w.body != nil {
		w.body.Close()
	}
}

// appendTrailers appends the trailers: the declared keys' values and the
// http.TrailerPrefix keys, as the header holds them now.
func (w *frontWriter) appendTrailers(b []byte) []byte {
	for _, k := range w.trailers {
		b = appendHeaderLine(b, k, w.header[k])
	}
	for k, vs := range w.header {
		if t, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			b = appendHeaderLine(b, t, vs)
		}
	}
	return b
}

// frontBody is a request's body: it answers Expect: 100-continue on the
// first read, clears the header's read deadline, and counts what was read
// so that what the handler left can be drained. A Transport may still be
// reading it when the handler returns, hence the mutex.
type frontBody struct {
	c      *frontConn
	rc     io.ReadCloser
	length int64 // the request's ContentLength; -1 unknown
	expect bool

	mu      sync.Mutex
	started bool
	sawEOF  bool
	closed  bool
	tooBig  bool
	n       int64
}

func (b *frontBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.read(p)
}

func (b *frontBody) read(p []byte) (int, error) {
	if b.sawEOF {
		return 0, io.EOF
	}
	if !b.started {
		b.started = true
		b.c.rd.clear(b.c.rwc)
		if b.expect {
			b.c.writeContinue()
		}
	}
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.sawEOF = true
	}
	return n, err
}

// Close makes later reads fail; what is left unread stays for drain.
func (b *frontBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// drain reads what the handler left of the body, up to maxDrainBytes, and
// reports whether the connection can carry another request. A client
// still waiting for 100 Continue has not sent the body: the connection
// closes rather than asking for it.
func (b *frontBody) drain() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.sawEOF:
		return true
	case b.expect && !b.started:
		return false
	case b.length > 0 && b.length-b.n > maxDrainBytes:
		b.tooBig = true
		return false
	}
	_, err := io.CopyN(io.Discard, bodyReader{b}, maxDrainBytes+1)
	switch err {
	case nil:
		b.tooBig = true
		return false
	case io.EOF:
		return true
	}
	return false
}

// bodyReader reads b with its lock held.
type bodyReader struct{ b *frontBody }

func (r bodyReader) Read(p []byte) (int, error) { return r.b.read(p) }

// connListener is a net.Listener of connections handed to it.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// hand gives c to the listener's Accept, or closes it if the listener is
// closed.
func (l *connListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// replayConn is a connection whose first bytes, already read, are read
// again.
type replayConn struct {
	net.Conn
	read []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.read) > 0 {
		n := copy(p, c.read)
		c.read = c.read[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

var (
	_ http.ResponseWriter = (*frontWriter)(nil)
	_ http.Flusher        = (*frontWriter)(nil)
	_ http.Hijacker       = (*frontWriter)(nil)
	_ net.Listener        = (*connListener)(nil)
)
