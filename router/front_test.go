package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discotech/disco/internal/testpeer"
)

// startFront serves h with a frontServer on loopback, with the router's
// timeouts unless tweak changes them.
func startFront(t testing.TB, h http.Handler, tweak func(*http.Server)) (string, *frontServer) {
	t.Helper()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	if tweak != nil {
		tweak(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := newFrontServer(srv)
	done := make(chan error, 1)
	go func() { done <- fs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := fs.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v, want http.ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), fs
}

// frontTestHandler answers by path, each path one way of writing a
// response.
func frontTestHandler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/hello": // short, no length: held back and sent with one
		io.WriteString(w, "hello\n")
	case "/length":
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "12345")
	case "/stream": // flushed: chunked
		io.WriteString(w, "part1,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part2")
	case "/big": // more than is held back: chunked
		w.Write(bytes.Repeat([]byte("x"), frontHoldSize+1))
	case "/trailers":
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	case "/echo":
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %q", r.Proto, b)
	case "/ignore": // leaves the body unread
		io.WriteString(w, "ignored")
	case "/abort":
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// answer is what a client makes of a response.
type answer struct {
	Status     int
	Proto      string
	Length     int64 // -1: none
	Chunked    bool
	Close      bool // the server will close: Connection: close (which ReadResponse removes), or HTTP/1.0 without keep-alive
	Connection string
	Body       string
	Trailer    map[string]string
	Err        string // reading the body
	NoDate     bool   // as net/http's answers to requests it cannot read
}

// converse sends reqs on one connection, all at once, and reads until the
// server closes it; it returns the answers, parsed in order.
func converse(t *testing.T, addr string, reqs ...string) []answer {
	t.Helper()
	return parseAnswers(t, sendAll(t, addr, strings.Join(reqs, "")), reqs)
}

// sendAll writes raw on a new connection to addr and returns all the
// server sends until it closes the connection (a reset after that counts
// as a close).
func sendAll(t *testing.T, addr, raw string) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(c, raw)
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading the answers to %q: %v (after %q)", raw, err, b)
	}
	return b
}

func parseAnswers(t *testing.T, raw []byte, reqs []string) []answer {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	var got []answer
	for i := 0; ; i++ {
		if _, err := br.Peek(1); err == io.EOF {
			return got
		}
		method := http.MethodGet
		if i < len(reqs) {
			method, _, _ = strings.Cut(reqs[i], " ")
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("answer %d: %v in %q", i, err, raw)
		}
		b, err := io.ReadAll(resp.Body)
		a := answer{
			Status: resp.StatusCode, Proto: resp.Proto, Length: resp.ContentLength,
			Chunked: len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked",
			Close:   resp.Close, Connection: resp.Header.Get("Connection"), Body: string(b),
		}
		if err != nil {
			a.Err = err.Error()
		}
		for k := range resp.Trailer {
			if a.Trailer == nil {
				a.Trailer = map[string]string{}
			}
			a.Trailer[k] = resp.Trailer.Get(k)
		}
		a.NoDate = resp.Header.Get("Date") == ""
		got = append(got, a)
	}
}

func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }

func getClose(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
}

func TestFrontAnswers(t *testing.T) {
	addr, _ := startFront(t, http.HandlerFunc(frontTestHandler), nil)
	hello := answer{Status: 200, Proto: "HTTP/1.1", Length: 6, Body: "hello\n"}
	helloClose := answer{Status: 200, Proto: "HTTP/1.1", Length: 6, Body: "hello\n", Close: true}
	bad := func(msg string) answer {
		return answer{Status: 400, Proto: "HTTP/1.1", Length: -1, Close: true, Body: msg, NoDate: true}
	}
	for _, c := range []struct {
		name string
		reqs []string
		want []answer
	}{{
		name: "keep-alive, pipelined",
		reqs: []string{get("/hello"), get("/length"), getClose("/hello")},
		want: []answer{hello, {Status: 200, Proto: "HTTP/1.1", Length: 5, Body: "12345"}, helloClose},
	}, {
		name: "HTTP/1.0",
		reqs: []string{"GET /hello HTTP/1.0\r\n\r\n"},
		want: []answer{{Status: 200, Proto: "HTTP/1.0", Length: 6, Body: "hello\n", Close: true}},
	}, {
		name: "HTTP/1.0 without a length: close-delimited",
		reqs: []string{"GET /stream HTTP/1.0\r\n\r\n"},
		want: []answer{{Status: 200, Proto: "HTTP/1.0", Length: -1, Body: "part1,part2", Close: true}},
	}, {
		name: "HTTP/1.0 keep-alive",
		reqs: []string{"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET /length HTTP/1.0\r\n\r\n"},
		want: []answer{
			{Status: 200, Proto: "HTTP/1.0", Length: 6, Body: "hello\n", Connection: "keep-alive"},
			{Status: 200, Proto: "HTTP/1.0", Length: 5, Body: "12345", Close: true},
		},
	}, {
		name: "HEAD",
		reqs: []string{
			"HEAD /length HTTP/1.1\r\nHost: x\r\n\r\n",
			"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n",
			"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n",
			getClose("/hello"),
		},
		want: []answer{
			{Status: 200, Proto: "HTTP/1.1", Length: 5},
			{Status: 200, Proto: "HTTP/1.1", Length: 6},
			{Status: 200, Proto: "HTTP/1.1", Length: -1},
			helloClose,
		},
	}, {
		name: "no length: chunked",
		reqs: []string{get("/stream"), getClose("/big")},
		want: []answer{
			{Status: 200, Proto: "HTTP/1.1", Length: -1, Chunked: true, Body: "part1,part2"},
			{Status: 200, Proto: "HTTP/1.1", Length: -1, Chunked: true, Body: strings.Repeat("x", frontHoldSize+1), Close: true},
		},
	}, {
		name: "trailers, declared and prefixed",
		reqs: []string{getClose("/trailers")},
		want: []answer{{Status: 200, Proto: "HTTP/1.1", Length: -1, Chunked: true, Body: "body", Close: true,
			Trailer: map[string]string{"X-Sum": "42", "X-Late": "yes"}}},
	}, {
		name: "no content",
		reqs: []string{get("/nocontent"), getClose("/hello")},
		want: []answer{{Status: 204, Proto: "HTTP/1.1"}, helloClose},
	}, {
		name: "chunked request body",
		reqs: []string{
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
			getClose("/hello"),
		},
		want: []answer{{Status: 200, Proto: "HTTP/1.1", Length: 22, Body: `HTTP/1.1 "hello world"`}, helloClose},
	}, {
		name: "unread small body: drained, connection kept",
		reqs: []string{"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde", getClose("/hello")},
		want: []answer{{Status: 200, Proto: "HTTP/1.1", Length: 7, Body: "ignored"}, helloClose},
	}, {
		name: "unread large body: connection closed",
		reqs: []string{"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc", get("/hello")},
		want: []answer{{Status: 200, Proto: "HTTP/1.1", Length: 7, Body: "ignored", Close: true}},
	}, {
		name: "handler aborts",
		reqs: []string{get("/abort"), get("/hello")},
		want: []answer{{Status: 200, Proto: "HTTP/1.1", Length: -1, Chunked: true, Body: "partial", Err: "unexpected EOF"}},
	}, {
		name: "OPTIONS *",
		reqs: []string{"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", getClose("/hello")},
		want: []answer{{Status: 200, Proto: "HTTP/1.1", Length: 0}, helloClose},
	}, {
		name: "malformed request line",
		reqs: []string{"GARBAGE\r\n\r\n", get("/hello")},
		want: []answer{bad("400 Bad Request")},
	}, {
		name: "malformed header",
		reqs: []string{"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n"},
		want: []answer{bad("400 Bad Request")},
	}, {
		name: "no Host",
		reqs: []string{"GET / HTTP/1.1\r\n\r\n"},
		want: []answer{bad("400 Bad Request: missing required Host header")},
	}, {
		name: "unknown transfer coding",
		reqs: []string{"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"},
		want: []answer{{Status: 501, Proto: "HTTP/1.1", Length: -1, Close: true, Body: "Unsupported transfer encoding", NoDate: true}},
	}, {
		name: "HTTP/2 request line",
		reqs: []string{"GET / HTTP/2.0\r\nHost: x\r\n\r\n"},
		want: []answer{{Status: 505, Proto: "HTTP/1.1", Length: -1, Close: true, Body: "505 HTTP Version Not Supported: unsupported protocol version", NoDate: true}},
	}, {
		name: "header too large",
		reqs: []string{"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", http.DefaultMaxHeaderBytes+8192) + "\r\n\r\n"},
		want: []answer{{Status: 431, Proto: "HTTP/1.1", Length: -1, Close: true, Body: "431 Request Header Fields Too Large", NoDate: true}},
	}} {
		t.Run(c.name, func(t *testing.T) {
			if diff := cmp.Diff(c.want, converse(t, addr, c.reqs...)); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFrontExpectContinue(t *testing.T) {
	addr, _ := startFront(t, http.HandlerFunc(frontTestHandler), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	// The body goes only after 100 Continue, which the handler's first
	// read of the body sends.
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("before the body: %v %v, want 100 Continue", resp, err)
	}
	io.WriteString(c, "hello")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != `HTTP/1.1 "hello"` || resp.Close {
		t.Errorf("after the body: %d %q close=%v", resp.StatusCode, b, resp.Close)
	}

	// A handler that does not read the body: no 100 Continue, and the
	// connection closes rather than wait for a body that may not come.
	want := []answer{{Status: 200, Proto: "HTTP/1.1", Length: 7, Body: "ignored", Close: true}}
	got := converse(t, addr, "POST /ignore HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("body not read (-want +got):\n%s", diff)
	}
	want = []answer{{Status: 417, Proto: "HTTP/1.1", Length: 0, Close: true}}
	got = converse(t, addr, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: something\r\nContent-Length: 5\r\n\r\nhello")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unknown expectation (-want +got):\n%s", diff)
	}
}

func TestFrontOneContextPerConnection(t *testing.T) {
	ctxs := make(chan context.Context, 2)
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctxs <- r.Context()
		io.WriteString(w, "ok")
	}), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for range 2 {
		io.WriteString(c, get("/"))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
	}
	first, second := <-ctxs, <-ctxs
	if first != second || first.Err() != nil {
		t.Fatalf("two requests on one connection: contexts %p and %p (err %v), want one, live", first, second, first.Err())
	}
	if la, _ := first.Value(http.LocalAddrContextKey).(net.Addr); la == nil || la.String() != addr {
		t.Errorf("LocalAddrContextKey = %v, want %s", la, addr)
	}
	c.Close()
	select {
	case <-first.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context outlived its connection")
	}
}

// TestFrontRequestsShareNothing: the requests of a connection reuse one
// request and header map (keptRequest), but what a handler does to one
// does not show in the next.
func TestFrontRequestsShareNothing(t *testing.T) {
	type seen struct {
		Path, Query, Value, Pattern string
		Header                      http.Header
		Trailer                     http.Header
	}
	seenc := make(chan seen, 3)
	addr, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		seenc <- seen{r.URL.Path, r.URL.RawQuery, r.PathValue("v"), r.Pattern, r.Header.Clone(), r.Trailer.Clone()}
		r.Header.Set("Added-By-Handler", "1")
		if a := r.Header["A"]; len(a) > 0 {
			a[0] = "changed"
		}
		r.URL.Path, r.URL.RawQuery = "/changed", "changed"
		r.SetPathValue("v", "set")
		r.Pattern = "/changed"
		r.Trailer = http.Header{"Set-By-Handler": {"1"}}
		io.WriteString(w, "ok")
	}), nil)
	answers := converse(t, addr,
		"POST /one?q=1 HTTP/1.1\r\nHost: x\r\nA: 1\r\nTransfer-Encoding: chunked\r\nTrailer: T\r\n\r\n1\r\nx\r\n0\r\nT: t\r\n\r\n",
		"GET /two HTTP/1.1\r\nHost: x\r\nA: 2\r\n\r\n",
		getClose("/three"))
	if len(answers) != 3 {
		t.Fatalf("%d answers, want 3", len(answers))
	}
	got := []seen{<-seenc, <-seenc, <-seenc}
	want := []seen{
		{Path: "/one", Query: "q=1", Header: http.Header{"A": {"1"}}, Trailer: http.Header{"T": {"t"}}},
		{Path: "/two", Header: http.Header{"A": {"2"}}},
		{Path: "/three", Header: http.Header{"Connection": {"close"}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("what the handler saw (-want +got):\n%s", diff)
	}
}

func TestFrontTimeouts(t *testing.T) {
	// The timings are only bounded below, so that a slow machine cannot
	// fail the test: which timeout applied shows in which server closed
	// the connection at all within the client's 10s.
	timeouts := func(header, idle time.Duration) string {
		addr, _ := startFront(t, http.HandlerFunc(frontTestHandler), func(s *http.Server) {
			s.ReadHeaderTimeout, s.IdleTimeout = header, idle
		})
		return addr
	}
	short := timeouts(100*time.Millisecond, 300*time.Millisecond)
	longIdle := timeouts(100*time.Millisecond, time.Hour)
	// closedAfter sends what to addr, then reports how long the server took
	// to close the connection.
	closedAfter := func(addr string, what ...string) time.Duration {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for _, req := range what[:len(what)-1] {
			io.WriteString(c, req)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
		}
		start := time.Now()
		io.WriteString(c, what[len(what)-1])
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after %q: %v, want the server to close", what, err)
		}
		return time.Since(start)
	}
	// Whole lines: a line cut short is taken as malformed (400).
	const partial = "GET /hello HTTP/1.1\r\nHost: x\r\n"
	if d := closedAfter(short, partial); d < 90*time.Millisecond {
		t.Errorf("a first request's header in pieces was dropped after %v, want the header timeout", d)
	}
	if d := closedAfter(short, get("/hello"), ""); d < 250*time.Millisecond {
		t.Errorf("an idle connection was dropped after %v, want the idle timeout", d)
	}
	// With an hour's idle timeout, a close within 10s is the header
	// timeout's.
	if d := closedAfter(longIdle, get("/hello"), partial); d < 90*time.Millisecond {
		t.Errorf("a second request's header in pieces was dropped after %v, want the header timeout", d)
	}
}

func TestFrontShutdownClosesWhatIsLeft(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	addr, fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		ended <- r.Context().Err()
	}), nil)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, get("/"))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := fs.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a request that never ends: %v, want the deadline", err)
	}
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Errorf("the request's context: %v, want it cancelled", err)
	}
	for name, c := range map[string]net.Conn{"idle": idle, "busy": busy} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the %s connection after Shutdown: %v, want it closed", name, err)
		}
	}
}

func TestRouterClientGoneMidResponse(t *testing.T) {
	tr := startRouter(t, nil)
	gone := make(chan error, 1)
	stream := newStreamingBackend(t, gone)
	tr.mustAnnounce(t, "s", stream, "")
	c, err := net.Dial("tcp", strings.TrimPrefix(tr.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, get("/stream"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// The router notices at its next write to the client, and drops the
	// backend's request.
	select {
	case err := <-gone:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the backend's request ended with %v, want it cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backend kept streaming to a client that was gone")
	}
	if code, body, _ := tr.get(t, "/once"); code != 200 || body != "once\n" {
		t.Errorf("the next request: %d %q", code, body)
	}
}

// newStreamingBackend streams lines at /stream until its client goes,
// then sends why on gone; other paths get one line.
func newStreamingBackend(t *testing.T, gone chan<- error) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, "once\n")
			return
		}
		rc := http.NewResponseController(w)
		for {
			if _, err := io.WriteString(w, "tick\n"); err != nil {
				break
			}
			if err := rc.Flush(); err != nil {
				break
			}
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Millisecond):
				continue
			}
			break
		}
		select {
		case gone <- r.Context().Err():
		default:
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestRouterShutdownFinishesRequestsInFlight(t *testing.T) {
	tr := startRouter(t, nil)
	started, release := make(chan struct{}), make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}))
	defer b.Close()
	tr.mustAnnounce(t, "b", b.Listener.Addr().String(), "")
	addr := strings.TrimPrefix(tr.url, "http://")

	// An idle keep-alive connection, and a request in flight.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(idle, get("/fast"))
	ibr := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(ibr, nil); err != nil {
		t.Fatal(err)
	} else {
		io.ReadAll(resp.Body)
	}
	inflight := make(chan []byte, 1)
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			inflight <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, get("/slow"))
		raw, _ := io.ReadAll(c)
		inflight <- raw
	}()
	<-started

	shutdown := make(chan error, 1)
	go func() { shutdown <- tr.shutdown() }()
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Errorf("the idle connection during shutdown: %v, want it closed", err)
	}
	testpeer.WaitUntil(t, "the traffic port to stop accepting", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	want := []answer{{Status: 200, Proto: "HTTP/1.1", Length: 10, Body: "done /slow", Close: true}}
	if diff := cmp.Diff(want, parseAnswers(t, <-inflight, []string{"GET"})); diff != "" {
		t.Errorf("the request in flight (-want +got):\n%s", diff)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func BenchmarkFrontKeepAlive(b *testing.B) {
	addr, _ := startFront(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		io.WriteString(w, "ok\n")
	}), nil)
	benchKeepAlive(b, addr)
}
