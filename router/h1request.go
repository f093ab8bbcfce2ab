package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// h1Request reads a client's requests for the router's own HTTP/1.1
// server (frontConn) as http.ReadRequest does, with fewer allocations: the
// head is read into a buffer kept for the connection and copied out in
// one string, of which the method, target, names and values are all
// pieces; an origin-form target ("/path?query") fills its URL without
// url.Parse. It takes the requests http.ReadRequest takes and no others
// (but for heads over maxHeadBytes), and makes of them the same request
// and body (FuzzRequestParser holds it to that).
//
// The request, its URL and its header map are the connection's, reused by
// the next request (see keptRequest): nothing may keep them once the
// handler has returned. Only the head's string is allocated per request.
//
// It is also the body of the request read last: nothing of a request's
// body may be read once the next request is.
type h1Request struct {
	h1Lines
	h1Body
	req  *http.Request // the request being read, for its trailer
	kept keptRequest
}

// keptRequest is what a connection's requests reuse, one after the other,
// so that a request costs the collector one small allocation, not five:
// the router answers a request before it reads the next, and net/http
// gets a copy of the request and of its header (exchange.try).
type keptRequest struct {
	ctx    context.Context
	base   *http.Request // no fields set, but its context: ctx
	req    http.Request
	url    url.URL
	header http.Header
	values []string
}

// keptFields is the most header keys a connection's reused map keeps: a
// request with more leaves a map for the next that would be slow to walk.
const keptFields = 64

// request readies the kept request for a new one with ctx, cleared.
func (k *keptRequest) request(ctx context.Context) *http.Request {
	if k.base == nil || k.ctx != ctx {
		k.ctx, k.base = ctx, new(http.Request).WithContext(ctx)
	}
	k.req = *k.base
	return &k.req
}

// headerFor returns the kept header map and values, emptied, with room
// for n fields.
func (k *keptRequest) headerFor(n int) (http.Header, []string) {
	h := k.header
	if h == nil || len(h) > keptFields {
		h = make(http.Header, n)
		k.header = h
	}
	clear(h)
	values := k.values[:0]
	if cap(values) < n || cap(values) > 4*keptFields {
		values = make([]string, 0, max(n, 8))
	}
	return h, values
}

// readRequest reads the next request from br, with ctx as its context.
// The input ending before the request's first byte is io.EOF, after it
// io.ErrUnexpectedEOF.
func (r *h1Request) readRequest(ctx context.Context, br *bufio.Reader) (*http.Request, error) {
	head, fields := r.head[:0], r.fields[:0]
	if cap(head) > keptHeadBytes {
		// A huge request's buffers are not kept for the connection's life.
		head, fields = nil, nil
	}
	*r = h1Request{h1Lines: h1Lines{br: br, head: head, fields: fields}, kept: r.kept}
	if err := r.readLine(); err != nil {
		if err == io.ErrUnexpectedEOF && len(r.head) == 0 {
			return nil, io.EOF
		}
		return nil, err
	}

	// The request line, "GET /index.html HTTP/1.1", split at its first two
	// spaces as net/http does.
	line := r.head
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := -1
	if sp1 >= 0 {
		if i := bytes.IndexByte(line[sp1+1:], ' '); i >= 0 {
			sp2 = sp1 + 1 + i
		}
	}
	if sp2 < 0 {
		return nil, malformed("HTTP request", line)
	}
	method, target, proto := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	if !isToken(method) {
		return nil, malformed("method", method)
	}
	major, minor, ok := parseVersion(proto)
	if !ok {
		return nil, malformed("HTTP version", proto)
	}
	// The target is checked before the fields are read, as net/http does:
	// a bad one is answered at once.
	var u *url.URL
	pathEnd, forceQuery := originForm(target)
	if pathEnd < 0 {
		raw := string(target)
		// "CONNECT host:port" names an authority, not a path.
		authority := string(method) == http.MethodConnect && !strings.HasPrefix(raw, "/")
		if authority {
			raw = "http://" + raw
		}
		var err error
		if u, err = url.ParseRequestURI(raw); err != nil {
			return nil, err
		}
		if authority {
			u.Scheme = ""
		}
	}

	if err := r.readFields(); err != nil {
		return nil, err
	}
	s := string(r.head)
	if u == nil {
		u = &r.kept.url
		*u = url.URL{Path: s[sp1+1 : sp1+1+pathEnd]}
		if q := sp1 + 1 + pathEnd + 1; q < sp2 {
			u.RawQuery = s[q:sp2]
		}
		u.ForceQuery = forceQuery
	}
	// The Host field becomes req.Host, not a key of the header (though a
	// second one is refused), so that most requests of a load generator
	// have an empty header.
	var (
		kinds uint32 // 1<<kind for each kind of field present
		host  string
		hosts int
	)
	for _, f := range r.fields {
		kinds |= 1 << f.kind
		if f.kind == fieldHost {
			if hosts++; hosts == 1 {
				host = s[f.colon+2 : f.end]
			}
		}
	}
	if hosts > 1 {
		return nil, errors.New("too many Host headers")
	}
	n := len(r.fields) - hosts
	h, values := r.kept.headerFor(n)
	var seen uint32
	for _, f := range r.fields {
		if f.kind == fieldHost {
			continue
		}
		k, v := s[f.start:f.colon], s[f.colon+2:f.end]
		// A name's kind follows from it: only a field of a kind seen
		// before can repeat a key.
		if seen&(1<<f.kind) != 0 {
			if vs, ok := h[k]; ok {
				h[k] = append(vs, v)
				continue
			}
		}
		seen |= 1 << f.kind
		values = append(values, v)
		// Capped, so that appending to one key's values leaves the next
		// key's alone.
		h[k] = values[len(values)-1 : len(values) : len(values)]
	}
	r.kept.values = values
	req := r.kept.request(ctx)
	req.Method = s[:sp1]
	req.URL = u
	req.Proto = s[sp2+1 : len(line)]
	req.ProtoMajor, req.ProtoMinor = major, minor
	req.Header = h
	req.Body = http.NoBody
	req.Host = u.Host
	req.RequestURI = s[sp1+1 : sp2]
	if req.Host == "" {
		req.Host = host
	}
	if err := r.frame(req, kinds, hosts > 0); err != nil {
		return nil, err
	}
	r.req = req
	return req, nil
}

// frame does for req what http.ReadRequest does once the header is read
// (the Host, net/http's fixPragmaCacheControl, shouldClose and
// readTransfer), and readies its body.
//
// kinds has 1<<kind for each kind of field present, to skip looking for
// those absent; host says a Host field was.
func (r *h1Request) frame(req *http.Request, kinds uint32, host bool) error {
	h := req.Header
	has := func(k fieldKind) bool { return kinds&(1<<k) != 0 }
	if p := h["Pragma"]; has(fieldPragma) && len(p) > 0 && p[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	var connection []string
	if has(fieldConnection) {
		connection = h["Connection"]
	}
	switch {
	case req.ProtoMajor < 1:
		req.Close = true
	case req.ProtoMajor == 1 && req.ProtoMinor == 0:
		req.Close = httpguts.HeaderValuesContainsToken(connection, "close") ||
			!httpguts.HeaderValuesContainsToken(connection, "keep-alive")
	default:
		req.Close = httpguts.HeaderValuesContainsToken(connection, "close")
	}

	// Transfer-Encoding: one field, chunked, from HTTP/1.1 on (0.0 counts
	// as 1.1 here); the field is dropped in any case. An unknown coding's
	// error says "unsupported transfer encoding", answered 501.
	chunked := false
	if te, ok := h["Transfer-Encoding"]; has(fieldTransferEncoding) && ok {
		delete(h, "Transfer-Encoding")
		if req.ProtoAtLeast(1, 1) || req.ProtoMajor == 0 && req.ProtoMinor == 0 {
			if len(te) != 1 {
				return fmt.Errorf("too many transfer encodings: %q", te)
			}
			if !equalFoldASCII([]byte(te[0]), "chunked") {
				return fmt.Errorf("unsupported transfer encoding: %q", te[0])
			}
			chunked = true
		}
	}

	// Content-Length: copies must agree, and the transfer coding wins.
	var lengths []string
	if has(fieldContentLength) {
		lengths = h["Content-Length"]
	}
	if len(lengths) > 1 {
		first := textproto.TrimString(lengths[0])
		for _, v := range lengths[1:] {
			if textproto.TrimString(v) != first {
				return fmt.Errorf("http: message cannot contain multiple Content-Length headers; got %q", lengths)
			}
		}
		lengths = []string{first}
		h["Content-Length"] = lengths
	}
	if len(lengths) > 0 {
		cl := textproto.TrimString(lengths[0])
		n, ok := parseLength(cl)
		if !ok {
			return fmt.Errorf("bad Content-Length %q", cl)
		}
		req.ContentLength = n
	}
	if chunked {
		delete(h, "Content-Length")
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
	}

	// Trailer keys, for a chunked body; without one the field stays.
	if declared, ok := h["Trailer"]; chunked && has(fieldTrailer) && ok {
		delete(h, "Trailer")
		for _, v := range declared {
			for k := range strings.SplitSeq(v, ",") {
				if k = textproto.TrimString(k); k == "" {
					continue
				}
				switch k = http.CanonicalHeaderKey(k); k {
				case "Transfer-Encoding", "Trailer", "Content-Length":
					return fmt.Errorf("bad trailer key %q", k)
				}
				if req.Trailer == nil {
					req.Trailer = http.Header{}
				}
				req.Trailer[k] = nil
			}
		}
	}

	switch {
	case chunked:
		r.body, r.chunks = bodyChunked, httputil.NewChunkedReader(r.br)
		req.Body = r
	case req.ContentLength > 0:
		r.body, r.remain = bodyLength, req.ContentLength
		req.Body = r
	}

	if req.Method == "PRI" && len(h) == 0 && !host && req.URL.Path == "*" && req.Proto == "HTTP/2.0" {
		// The HTTP/2 preface, as net/http's isH2Upgrade has it.
		req.ContentLength, req.Close = -1, true
	}
	return nil
}

// originForm reports whether target is a path and query that needs no
// url.Parse: no escapes, no byte the URL would escape in the path, no
// control. pathEnd is the path's end, -1 for a target to parse;
// forceQuery that the target ends in its only "?".
func originForm(target []byte) (pathEnd int, forceQuery bool) {
	if len(target) == 0 || target[0] != '/' {
		return -1, false
	}
	pathEnd = len(target)
	for i, c := range target {
		if c == '?' {
			pathEnd = i
			break
		}
		if !pathByte[c] {
			return -1, false
		}
	}
	for _, c := range target[pathEnd:] {
		if c < ' ' || c == 0x7f {
			return -1, false
		}
	}
	return pathEnd, pathEnd == len(target)-1
}

// pathByte marks the bytes url.URL keeps as they are in a path: with only
// these, Path is the target's path and RawPath is empty.
var pathByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "-._~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()

// isToken reports whether b is a token (RFC 9110 §5.6.2), as a method
// must be.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenByte[c] {
			return false
		}
	}
	return true
}

// Read reads the body of the request read last.
func (r *h1Request) Read(p []byte) (int, error) { return r.h1Body.read(r.br, p, r.readTrailer) }

// Close does nothing: frontBody keeps what is left for the next request.
func (r *h1Request) Close() error { return nil }

// readTrailer reads the trailer after a chunked body into the request's
// Trailer, as net/http does.
func (r *h1Request) readTrailer() error {
	from := len(r.fields)
	if some, err := r.readTrailerFields(); !some || err != nil {
		return err
	}
	t := make(http.Header, len(r.fields)-from)
	for _, f := range r.fields[from:] {
		k := string(r.name(f))
		t[k] = append(t[k], string(r.value(f)))
	}
	if r.req.Trailer == nil {
		r.req.Trailer = t
		return nil
	}
	for k, vs := range t {
		r.req.Trailer[k] = vs
	}
	return nil
}

var _ io.ReadCloser = (*h1Request)(nil)
