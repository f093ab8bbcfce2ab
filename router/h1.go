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
func (p *h1Pool) get(ctx context.Context, addr string, fresh bool) (*h1Conn, bool, error) {
	now := time.Now()
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
	return &h1Conn{c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10), addr: addr}, false, nil
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
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read (EAGAIN) is an open, quiet connection; bytes
		// on an idle connection are garbage from the backend.
		ok = n < 0 && errors.Is(err, syscall.EAGAIN)
		return true
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
}

// roundTrip sends o and reads the response's head; the body is read from
// the returned response, and the connection goes back to the pool when it
// is read to the end.
func (p *h1Pool) roundTrip(o *outbound) (*http.Response, error) {
	ctx := o.in.Context()
	for fresh := false; ; fresh = true {
		hc, reused, err := p.get(ctx, o.addr, fresh)
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { hc.c.SetDeadline(time.Unix(1, 0)) })
		resp, err := p.exchange(hc, o)
		if !stop() {
			// The client went away: the connection is in an unknown state.
			if resp != nil {
				resp.Body.Close()
			}
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

// exchange writes the request and reads the response head on hc.
func (p *h1Pool) exchange(hc *h1Conn, o *outbound) (*http.Response, error) {
	bw := hc.bw
	bw.WriteString(o.in.Method)
	bw.WriteByte(' ')
	bw.WriteString(o.uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(o.host)
	bw.WriteString("\r\n")
	for k, vs := range o.in.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Expect":
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
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
	if p.tryTimeout > 0 {
		hc.c.SetReadDeadline(time.Now().Add(p.tryTimeout))
	}
	// The first byte on its own: http.ReadResponse reports a connection
	// closed before it as io.ErrUnexpectedEOF, like one closed mid-answer,
	// and only the first is safe to try again.
	if _, err := hc.br.Peek(1); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil, errTryTimeout
		}
		return nil, err
	}
	for {
		resp, err := http.ReadResponse(hc.br, o.in)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return nil, errTryTimeout
			}
			return nil, err
		}
		// 1xx answers (103 Early Hints) come before the real one; 100
		// Continue never does, as Expect is not sent.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		if p.tryTimeout > 0 {
			hc.c.SetReadDeadline(time.Time{})
		}
		resp.Body = &h1Body{rc: resp.Body, hc: hc, pool: p, reuse: !resp.Close}
		return resp, nil
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

// h1Body is a response body that returns its connection to the pool once
// read to the end, and closes it when abandoned before.
type h1Body struct {
	rc    io.ReadCloser
	hc    *h1Conn
	pool  *h1Pool
	reuse bool
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *h1Body) finish(eof bool) {
	b.done = true
	if eof && b.reuse {
		b.pool.put(b.hc)
		return
	}
	b.hc.c.Close()
}

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
