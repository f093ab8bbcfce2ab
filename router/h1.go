package router

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// h1Pool is the router's HTTP/1.1 client for plain-HTTP routes: keep-alive
// connections per backend, each used by one request at a time from the
// request's own goroutine. net/http's Transport hands every request to a
// writer and a reader goroutine per connection; doing the write and the
// read in place saves those hand-offs, which at the edge are most of a
// request's cost. Upgrades, HTTPS and HTTP/2 go through net/http.
type h1Pool struct {
	dialer      net.Dialer
	tryTimeout  time.Duration
	idleTimeout time.Duration
	maxIdle     int // per backend

	mu   sync.Mutex
	idle map[string][]*h1Conn
}

type h1Conn struct {
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	addr  string
	since time.Time // idle since
	pool  *h1Pool
	resp  h1Response // the answer being read, reused

	mu          sync.Mutex
	interrupted bool // by interrupt: no deadline may undo it
	rd          readDeadline
}

// interrupt ends any read or write on hc now, and keeps them ended: a
// deadline the exchange sets afterwards (the try timeout) does not undo
// it. The connection is closed after.
func (hc *h1Conn) interrupt() {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.interrupted = true
	hc.c.SetDeadline(time.Unix(1, 0))
}

// setReadDeadline makes hc's read deadline about now+d (readDeadline), or
// none for d <= 0, unless hc has been interrupted.
func (hc *h1Conn) setReadDeadline(now time.Time, d time.Duration) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if !hc.interrupted {
		hc.rd.set(hc.c, now, d)
	}
}

// errStale is a kept-alive connection that turned out closed before the
// backend read anything: the request did not reach it, so it may go to any
// backend, like a connection refused.
var errStale = errors.New("kept-alive connection closed by the backend")

func newH1Pool(connect, try time.Duration) *h1Pool {
	return &h1Pool{
		dialer:      net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second},
		tryTimeout:  try,
		idleTimeout: 60 * time.Second,
		maxIdle:     512,
		idle:        map[string][]*h1Conn{},
	}
}

// get returns an idle connection to addr that is still open, or a new one.
func (p *h1Pool) get(ctx context.Context, addr string, fresh bool, now time.Time) (*h1Conn, bool, error) {
	for !fresh {
		p.mu.Lock()
		list := p.idle[addr]
		if len(list) == 0 {
			p.mu.Unlock()
			break
		}
		hc := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		p.mu.Unlock()
		idle := now.Sub(hc.since)
		if idle > p.idleTimeout || (idle > 100*time.Millisecond && !alive(hc.c)) {
			hc.c.Close()
			continue
		}
		return hc, true, nil
	}
	c, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, &dialError{addr: addr, err: err}
	}
	sc := newSysConn(c)
	hc := &h1Conn{c: c, br: bufio.NewReaderSize(sc, 16<<10), bw: bufio.NewWriterSize(sc, 16<<10), addr: addr, pool: p}
	hc.resp.hc = hc
	return hc, false, nil
}

// put keeps hc for the next request to its backend.
func (p *h1Pool) put(hc *h1Conn) {
	hc.since = time.Now()
	p.mu.Lock()
	if len(p.idle[hc.addr]) >= p.maxIdle {
		p.mu.Unlock()
		hc.c.Close()
		return
	}
	p.idle[hc.addr] = append(p.idle[hc.addr], hc)
	p.mu.Unlock()
}

// closeIdle closes every idle connection.
func (p *h1Pool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, list := range p.idle {
		for _, hc := range list {
			hc.c.Close()
		}
		delete(p.idle, addr)
	}
}

// alive peeks at an idle connection without blocking: a backend that
// closed it has sent FIN (a read of 0) or RST (an error).
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var b [1]byte
	// Control, not Read: a read deadline left from the last exchange
	// (readDeadline) may have passed.
	rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read (EAGAIN) is an open, quiet connection; bytes
		// on an idle connection are garbage from the backend.
		ok = n < 0 && errors.Is(err, syscall.EAGAIN)
	})
	return ok
}

// outbound is one try's request as the backend gets it.
type outbound struct {
	in     *http.Request // the client's request: method, header, context
	addr   string        // the backend, HOST:PORT
	uri    string        // request target: path and query
	host   string        // Host header
	body   *replayable   // nil for none
	length int64         // body length, -1 for unknown (chunked)
	fwd    forwardedFields
	began  time.Time // when the try began: the clock read once for it
}

// now is when o's try began, or the time now if that is not known.
func (o *outbound) now() time.Time {
	if o.began.IsZero() {
		return time.Now()
	}
	return o.began
}

// roundTrip sends o and reads the response's head; the response is also
// its body, and the connection goes back to the pool when it is read to
// the end and closed.
func (p *h1Pool) roundTrip(o *outbound) (*h1Response, error) {
	ctx := o.in.Context()
	for fresh := false; ; fresh = true {
		hc, reused, err := p.get(ctx, o.addr, fresh, o.now())
		if err != nil {
			return nil, err
		}
		var stop func() bool
		if in, ok := ctx.Value(interrupterKey{}).(*interrupter); ok {
			in.watch(hc)
			stop = in.unwatch
		} else {
			stop = context.AfterFunc(ctx, hc.interrupt)
		}
		resp, err := p.exchange(hc, o)
		if !stop() {
			// The client went away: the connection is in an unknown state.
			hc.c.Close()
			return nil, ctx.Err()
		}
		if err == nil {
			return resp, nil
		}
		hc.c.Close()
		if !reused || !stale(err) {
			return nil, err
		}
		// The backend had closed the kept-alive connection: the request
		// never reached it. Once more on a new connection, if its body
		// can be sent again (a kept body always can); else another
		// backend may take it.
		if fresh || o.body.touched() {
			return nil, &dialError{addr: o.addr, err: errStale}
		}
	}
}

// stale reports whether err, on a kept-alive connection, says the backend
// had closed it before answering anything.
func stale(err error) bool {
	var be *bodyError
	return !errors.As(err, &be) && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// interrupter is what context.AfterFunc does for roundTrip, without its
// cost per request (two allocations, and a child added to and removed
// from the context's set under its lock, about 2% of the router's CPU at
// the edge): a context that ends when its connection does, such as the
// router's own server's (one per connection), carries one under
// interrupterKey, and its cancel function calls fire.
type interrupter struct {
	mu    sync.Mutex
	fired bool
	c     *h1Conn // watched
}

type interrupterKey struct{}

// watch makes fire interrupt c, at once if it has already fired.
func (in *interrupter) watch(c *h1Conn) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.c = c
	if in.fired {
		c.interrupt()
	}
}

// unwatch ends watch; false if fire interrupted the connection, as
// AfterFunc's stop reports.
func (in *interrupter) unwatch() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.c = nil
	return !in.fired
}

// fire interrupts the connection watched, and any watched later.
func (in *interrupter) fire() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.fired = true
	if in.c != nil {
		in.c.interrupt()
	}
}

// exchange writes the request and reads the response head on hc.
func (p *h1Pool) exchange(hc *h1Conn, o *outbound) (*h1Response, error) {
	bw := hc.bw
	bw.WriteString(o.in.Method)
	bw.WriteByte(' ')
	bw.WriteString(o.uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(o.host)
	bw.WriteString("\r\n")
	fwd := &o.fwd
	for k, vs := range o.in.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Expect":
			continue
		case "X-Forwarded-For":
			if fwd.For != "" {
				continue // in fwd.For, with the client's address
			}
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	writeField(bw, "X-Forwarded-For", fwd.For)
	writeField(bw, "X-Forwarded-Proto", fwd.Proto)
	writeField(bw, "X-Forwarded-Host", fwd.Host)
	chunked := false
	switch {
	case o.body == nil:
		switch o.in.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			bw.WriteString("Content-Length: 0\r\n")
		}
	case o.length >= 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(o.length, 10))
		bw.WriteString("\r\n")
	default:
		chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("\r\n")
	if o.body != nil {
		if err := writeBody(bw, o.body.reader(), o.length, chunked); err != nil {
			return nil, err
		}
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	yield() // while the backend answers
	if p.tryTimeout > 0 {
		hc.setReadDeadline(o.now(), p.tryTimeout)
	}
	resp := &hc.resp
	for first := true; ; first = false {
		if err := resp.readHead(hc.br, o.in.Method); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, errTryTimeout
			}
			if err == io.EOF && !first {
				// Closed after a 1xx answer: the backend had the request.
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		// 1xx answers (103 Early Hints) come before the real one; 100
		// Continue never does, as Expect is not sent.
		if resp.status >= 100 && resp.status < 200 && resp.status != http.StatusSwitchingProtocols {
			continue
		}
		if p.tryTimeout > 0 && !resp.bodyBuffered() {
			// The body may take longer than the head: no timeout. One
			// already read whole leaves the deadline for the next try
			// on this connection to move, or not (readDeadline).
			hc.setReadDeadline(time.Time{}, 0)
		}
		return resp, nil
	}
}

// writeField writes the header field k: v, unless v is "".
func writeField(bw *bufio.Writer, k, v string) {
	if v != "" {
		bw.WriteString(k)
		bw.WriteString(": ")
		bw.WriteString(v)
		bw.WriteString("\r\n")
	}
}

// writeBody copies a request body to the backend: length bytes, or chunks
// until the end when chunked. A failure to read it is a *bodyError.
func writeBody(bw *bufio.Writer, body io.Reader, length int64, chunked bool) error {
	if chunked {
		if _, err := io.Copy(&chunkedWriter{w: bw}, readOnly{body}); err != nil {
			return err
		}
		_, err := bw.WriteString("0\r\n\r\n")
		return err
	}
	n, err := io.Copy(bw, readOnly{io.LimitReader(body, length)})
	if err == nil && n != length {
		err = &bodyError{io.ErrUnexpectedEOF}
	}
	return err
}

// readOnly hides a reader's WriterTo, and marks its errors as the body's.
type readOnly struct{ r io.Reader }

func (r readOnly) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err}
	}
	return n, err
}

// errTryTimeout is a try that got no response head within the try
// timeout.
var errTryTimeout = &timeoutError{"no response headers within the try timeout"}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// bodyError is a failure to read the client's request body: the client's
// fault, not the backend's.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// chunkedWriter writes each write as one HTTP/1.1 chunk.
type chunkedWriter struct{ w *bufio.Writer }

func (cw *chunkedWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	cw.w.WriteString(strconv.FormatInt(int64(len(p)), 16))
	cw.w.WriteString("\r\n")
	cw.w.Write(p)
	_, err := cw.w.WriteString("\r\n")
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
