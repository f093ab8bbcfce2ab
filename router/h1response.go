package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
)

// h1Response is a backend's HTTP/1.x answer as the h1Pool reads it: the
// status, the header fields as lines in one buffer, and what the framing
// needs, without the header map, the strings and the readers
// http.ReadResponse allocates for every answer. It takes the answers
// http.ReadResponse takes and no others (but for heads over maxHeadBytes),
// and makes of them the same status, header, length and body
// (FuzzH1Response holds it to that). The router's
// own HTTP/1.1 server writes the lines to the client as they are
// (frontWriter.relayHeader); any other ResponseWriter gets the answer as an
// *http.Response (response).
//
// It is also the answer's body. Each h1Conn has one, reused for every
// answer on the connection, which goes back to the pool when the body is
// closed after being read to the end: nothing of the answer may be used
// after Close.
type h1Response struct {
	hc *h1Conn // nil in tests: Close keeps no connection
	// head holds the status line's version and status ("HTTP/1.1",
	// "200 OK"), then the fields. The header's fields come first, then,
	// once read, the trailer's.
	h1Lines

	status              int
	major, minor        int
	protoEnd, statusEnd int
	nHeader             int // fields[:nHeader] are the header's

	contentLength  int64 // http.Response.ContentLength
	headerLength   int64 // the Content-Length field net/http keeps in the header, -1 for none
	chunked, close bool
	dropConnection bool     // net/http drops the Connection field: it says close
	cacheControl   bool     // add "Cache-Control: no-cache" (net/http does, for Pragma: no-cache)
	connection     bool     // there is a Connection field
	declared       []string // a chunked answer's Trailer keys, canonical and distinct
	contentType    int      // 1 + the index of the first Content-Type field, 0 for none

	h1Body
	resp *http.Response
}

// h1Body reads the body after a head h1Lines read.
type h1Body struct {
	body   bodyKind
	remain int64     // bodyLength: bytes left
	chunks io.Reader // bodyChunked
	eof    bool      // the body was read to its end
	failed bool      // reading the body failed: the connection is out of step
}

// h1Lines reads the lines of an HTTP/1.x head as textproto.Reader does,
// into one buffer reused from head to head: the answers the h1Pool reads
// (h1Response) and the requests the router's own server reads
// (h1Request).
type h1Lines struct {
	br *bufio.Reader
	// head holds the start line, as its reader keeps it, then each field
	// as a line "Name: value\r\n": the name canonicalised, the value as
	// textproto has it (leading blanks dropped, continued lines joined
	// with a space).
	head   []byte
	fields []h1Field
	folded bool // a field continued on the next line (obs-fold)
}

// h1Field is one field of an answer: head[start:colon] is its name,
// head[colon+2:end] its value, head[start:end+2] its line.
type h1Field struct {
	start, colon, end int
	kind              fieldKind
}

// fieldKind sorts the fields the framing and the relay look at.
type fieldKind uint8

const (
	fieldOther fieldKind = iota
	fieldBadName
	fieldHop // hop-by-hop, not otherwise looked at
	fieldConnection
	fieldContentLength
	fieldTransferEncoding
	fieldTrailer
	fieldContentType
	fieldContentEncoding
	fieldDate
	fieldPragma
	fieldCacheControl
	fieldHost // only requests look at it
)

type bodyKind uint8

const (
	bodyNone bodyKind = iota
	bodyLength
	bodyChunked
	bodyToClose
)

// bodyBuffered reports whether the body has been read into the
// connection's buffer with the head: reading it takes no read of the
// connection.
func (r *h1Response) bodyBuffered() bool {
	return r.body == bodyNone || r.body == bodyLength && r.remain <= int64(r.br.Buffered())
}

// maxHeadBytes bounds an answer's status line and header, as net/http's
// server bounds a request's (http.DefaultMaxHeaderBytes); http.ReadResponse
// has no bound.
const maxHeadBytes = http.DefaultMaxHeaderBytes

// keptHeadBytes is how large a buffer for heads a connection keeps.
const keptHeadBytes = 64 << 10

// Errors reading an answer the router cannot take: all answered 502.
var (
	errHeadTooLarge = errors.New("response header larger than 1 MiB")
	errTrailerEOF   = errors.New("unexpected EOF reading trailer")
)

// malformed is an answer the router cannot parse, with the offending text.
func malformed(what string, b []byte) error {
	const limit = 80
	if len(b) > limit {
		b = b[:limit]
	}
	return errors.New("malformed " + what + ": " + strconv.Quote(string(b)))
}

// readHead reads the status line and header of an answer to a request
// with method, and readies its body. The input ending before the answer's
// first byte is io.EOF, where http.ReadResponse says io.ErrUnexpectedEOF
// as for an answer cut short: on a kept-alive connection only the first
// says the backend closed it without taking the request.
func (r *h1Response) readHead(br *bufio.Reader, method string) error {
	head, fields := r.head[:0], r.fields[:0]
	if cap(head) > keptHeadBytes {
		// A huge answer's buffers are not kept for the connection's life.
		head, fields = nil, nil
	}
	*r = h1Response{hc: r.hc, h1Lines: h1Lines{br: br, head: head, fields: fields}, declared: r.declared[:0]}
	if err := r.readLine(); err != nil {
		if err == io.ErrUnexpectedEOF && len(r.head) == 0 {
			return io.EOF
		}
		return err
	}
	line := r.head
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return malformed("HTTP response", line)
	}
	proto, status := line[:sp], line[sp+1:]
	for len(status) > 0 && status[0] == ' ' {
		status = status[1:]
	}
	code := status
	if sp := bytes.IndexByte(status, ' '); sp >= 0 {
		code = status[:sp]
	}
	if len(code) != 3 {
		return malformed("HTTP status code", code)
	}
	var ok bool
	if r.status, ok = statusCode(code); !ok {
		return malformed("HTTP status code", code)
	}
	if r.major, r.minor, ok = parseVersion(proto); !ok {
		return malformed("HTTP version", proto)
	}
	// head becomes version then status.
	r.protoEnd = len(proto)
	r.statusEnd = r.protoEnd + copy(r.head[r.protoEnd:], status)
	r.head = r.head[:r.statusEnd]
	if err := r.readFields(); err != nil {
		return err
	}
	r.nHeader = len(r.fields)
	return r.frame(method)
}

// statusCode parses three bytes as strconv.Atoi does (http.ReadResponse
// takes "+99" and "-00").
func statusCode(b []byte) (int, bool) {
	if b[0] >= '0' && b[0] <= '9' && b[1] >= '0' && b[1] <= '9' && b[2] >= '0' && b[2] <= '9' {
		return int(b[0]-'0')*100 + int(b[1]-'0')*10 + int(b[2]-'0'), true
	}
	n, err := strconv.Atoi(string(b))
	return n, err == nil && n >= 0
}

func parseVersion(b []byte) (major, minor int, ok bool) {
	switch string(b) {
	case "HTTP/1.1":
		return 1, 1, true
	case "HTTP/1.0":
		return 1, 0, true
	}
	return http.ParseHTTPVersion(string(b))
}

// readLine appends the next line to head, without its LF or CRLF. The
// end of the input before the end of the line is io.ErrUnexpectedEOF.
func (r *h1Lines) readLine() error {
	start := len(r.head)
	for {
		b, err := r.br.ReadSlice('\n')
		if len(r.head)+len(b) > maxHeadBytes {
			return errHeadTooLarge
		}
		r.head = append(r.head, b...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	end := len(r.head) - 1
	if end > start && r.head[end-1] == '\r' {
		end--
	}
	r.head = r.head[:end]
	return nil
}

// readFields reads fields up to the empty line that ends them, as
// textproto.Reader.ReadMIMEHeader does, appending them to head and fields.
func (r *h1Lines) readFields() error {
	if b, err := r.br.Peek(1); err == nil && (b[0] == ' ' || b[0] == '\t') {
		start := len(r.head)
		r.readLine()
		return malformed("header initial line", r.head[start:])
	}
	for {
		start := len(r.head)
		if err := r.readLine(); err != nil {
			return err
		}
		if len(r.head) == start {
			return nil
		}
		colon := bytes.IndexByte(r.head[start:], ':')
		if colon < 0 {
			return malformed("header: missing colon", r.head[start:])
		}
		colon += start
		r.trimEnd(start)
		// Lines starting with a blank continue the field (obs-fold).
		for {
			b, err := r.br.Peek(1)
			if err != nil || b[0] != ' ' && b[0] != '\t' {
				break
			}
			for err == nil && (b[0] == ' ' || b[0] == '\t') {
				r.br.Discard(1)
				b, err = r.br.Peek(1)
			}
			r.folded = true
			r.head = append(r.head, ' ')
			piece := len(r.head)
			if err := r.readLine(); err != nil {
				return err
			}
			r.trimEnd(piece)
		}
		if err := r.addField(start, colon); err != nil {
			return err
		}
	}
}

// trimEnd drops the blanks ending head, back to from at most.
func (r *h1Lines) trimEnd(from int) {
	end := len(r.head)
	for end > from && (r.head[end-1] == ' ' || r.head[end-1] == '\t') {
		end--
	}
	r.head = r.head[:end]
}

// addField checks and records the field in head[start:], whose name ends
// at colon, rewriting it as "Name: value\r\n".
func (r *h1Lines) addField(start, colon int) error {
	name, value := r.head[start:colon], r.head[colon+1:]
	kind, ok := canonicalName(name)
	if !ok {
		return malformed("header line", r.head[start:])
	}
	for _, c := range value {
		if !validValueByte(c) {
			return malformed("header line", r.head[start:])
		}
	}
	lead := 0
	for lead < len(value) && (value[lead] == ' ' || value[lead] == '\t') {
		lead++
	}
	n := len(value) - lead
	from, to := colon+1+lead, colon+2
	switch {
	case to < from:
		copy(r.head[to:], r.head[from:])
		r.head = r.head[:to+n]
	case to > from:
		r.head = append(r.head, 0)
		copy(r.head[to:], r.head[from:from+n])
	}
	r.head[colon+1] = ' '
	r.head = append(r.head, '\r', '\n')
	r.fields = append(r.fields, h1Field{start: start, colon: colon, end: to + n, kind: kind})
	return nil
}

// canonicalName canonicalises a field name in place as textproto does
// ("content-type" → "Content-Type"; a name with a space is left alone, and
// is not one a ResponseWriter writes) and sorts it; false for a name
// textproto refuses.
func canonicalName(b []byte) (fieldKind, bool) {
	if len(b) == 0 {
		return 0, false
	}
	space := false
	for _, c := range b {
		if !tokenByte[c] {
			if c != ' ' {
				return 0, false
			}
			space = true
		}
	}
	if space {
		return fieldBadName, true
	}
	upper := true
	for i, c := range b {
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	switch string(b) {
	case "Connection":
		return fieldConnection, true
	case "Content-Length":
		return fieldContentLength, true
	case "Transfer-Encoding":
		return fieldTransferEncoding, true
	case "Trailer":
		return fieldTrailer, true
	case "Content-Type":
		return fieldContentType, true
	case "Content-Encoding":
		return fieldContentEncoding, true
	case "Date":
		return fieldDate, true
	case "Pragma":
		return fieldPragma, true
	case "Cache-Control":
		return fieldCacheControl, true
	case "Host":
		return fieldHost, true
	case "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Upgrade":
		return fieldHop, true
	}
	return fieldOther, true
}

// tokenByte marks the bytes of a token (RFC 9110 §5.6.2).
var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validValueByte is textproto's: anything but controls other than tab.
func validValueByte(c byte) bool { return c >= 0x20 && c != 0x7f || c == '\t' }

func (r *h1Lines) name(f h1Field) []byte  { return r.head[f.start:f.colon] }
func (r *h1Lines) value(f h1Field) []byte { return r.head[f.colon+2 : f.end] }

// frame works out the answer's length, framing and connection as
// http.ReadResponse does (net/http's readTransfer), and readies its body.
func (r *h1Response) frame(method string) error {
	var (
		nTE, nCL, nTrailer     int
		te, cl                 []byte
		hasClose, hasKeepAlive bool
		pragma, hasCC          bool
		seenPragma             bool
	)
	for i, f := range r.fields[:r.nHeader] {
		v := r.value(f)
		switch f.kind {
		case fieldTransferEncoding:
			nTE++
			te = v
		case fieldContentLength:
			if nCL++; nCL == 1 {
				cl = trimOWS(v)
			} else if !bytes.Equal(cl, trimOWS(v)) {
				return errors.New("multiple Content-Length fields that differ")
			}
		case fieldConnection:
			r.connection = true
			hasClose = hasClose || containsToken(v, "close")
			hasKeepAlive = hasKeepAlive || containsToken(v, "keep-alive")
		case fieldTrailer:
			nTrailer++
		case fieldPragma:
			if !seenPragma {
				seenPragma, pragma = true, string(v) == "no-cache"
			}
		case fieldCacheControl:
			hasCC = true
		case fieldContentType:
			if r.contentType == 0 {
				r.contentType = i + 1
			}
		}
	}
	r.cacheControl = pragma && !hasCC

	// Transfer-Encoding: one field, chunked, from HTTP/1.1 on (0.0 counts
	// as 1.1 here); net/http drops the field in any case.
	if nTE > 0 && (r.major > 1 || r.major == 1 && r.minor >= 1 || r.major == 0 && r.minor == 0) {
		if nTE != 1 {
			return errors.New("too many transfer encodings")
		}
		if !equalFoldASCII(te, "chunked") {
			return malformed("transfer encoding (only chunked is supported)", te)
		}
		r.chunked = true
	}

	// Length.
	n := int64(-1)
	if nCL > 0 {
		var ok bool
		if n, ok = parseLength(cl); !ok {
			return malformed("Content-Length", cl)
		}
	}
	r.headerLength = n
	length := int64(-1)
	switch {
	case method == http.MethodHead, r.status/100 == 1, r.status == http.StatusNoContent, r.status == http.StatusNotModified:
		length = 0
	case r.chunked:
		r.headerLength = -1
	case nCL > 0:
		length = n
	}
	r.contentLength = length
	if method == http.MethodHead {
		r.contentLength = n
	}

	// Connection.
	switch {
	case r.major < 1:
		r.close = true
	case r.major == 1 && r.minor == 0:
		r.close = hasClose || !hasKeepAlive
	default:
		r.close, r.dropConnection = hasClose, hasClose
	}

	// Trailer keys, for a chunked body.
	if r.chunked && nTrailer > 0 {
		for _, f := range r.fields[:r.nHeader] {
			if f.kind != fieldTrailer {
				continue
			}
			for k := range strings.SplitSeq(string(r.value(f)), ",") {
				if k = strings.Trim(k, " \t"); k == "" {
					continue
				}
				switch k = http.CanonicalHeaderKey(k); k {
				case "Transfer-Encoding", "Trailer", "Content-Length":
					return errors.New("bad trailer key " + strconv.Quote(k))
				}
				if !contains(r.declared, k) {
					r.declared = append(r.declared, k)
				}
			}
		}
	}

	switch {
	case r.chunked && (method == http.MethodHead || !bodyAllowedForStatus(r.status)):
		r.body = bodyNone
	case r.chunked:
		r.body, r.chunks = bodyChunked, httputil.NewChunkedReader(r.br)
	case length > 0:
		r.body, r.remain = bodyLength, length
	case length < 0:
		// Unbounded: the body runs to the end of the connection.
		r.body, r.close = bodyToClose, true
	}
	return nil
}

func contains(keys []string, k string) bool {
	for _, have := range keys {
		if have == k {
			return true
		}
	}
	return false
}

// parseLength parses a Content-Length as net/http does: digits only, at
// most 2⁶³-1.
func parseLength[S string | []byte](b S) (int64, bool) {
	const most = 1<<63 - 1
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for i := range len(b) {
		c := b[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (most-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// containsToken reports whether the comma-separated list v has token
// (ASCII, any case), as httpguts.HeaderValuesContainsToken does.
func containsToken(v []byte, token string) bool {
	for len(v) > 0 {
		t := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if equalFoldASCII(trimOWS(t), token) {
			return true
		}
	}
	return false
}

// equalFoldASCII compares b and s without regard to ASCII case; bytes
// outside ASCII match nothing.
func equalFoldASCII[S string | []byte](b []byte, s S) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if c >= 0x80 || lowerASCII(c) != lowerASCII(s[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// namedByConnection reports whether a Connection field names the field
// name: it is hop-by-hop (RFC 9110 §7.6.1).
func (r *h1Response) namedByConnection(name []byte) bool {
	if !r.connection {
		return false
	}
	for _, f := range r.fields[:r.nHeader] {
		if f.kind != fieldConnection {
			continue
		}
		for v := r.value(f); len(v) > 0; {
			t := v
			if i := bytes.IndexByte(v, ','); i >= 0 {
				t, v = v[:i], v[i+1:]
			} else {
				v = nil
			}
			if equalFoldASCII(trimOWS(t), name) {
				return true
			}
		}
	}
	return false
}

// relayable reports whether the router's own server can write the answer
// from its lines: a final answer (not 1xx, whose handling stays net/http's
// way, nor a status net/http's ResponseWriter refuses), without fields
// continued over lines.
func (r *h1Response) relayable() bool {
	return r.status >= 200 && !r.folded
}

// flushes is the package's flushes for this answer.
func (r *h1Response) flushes() bool {
	if r.contentLength == -1 {
		return true
	}
	if r.contentType == 0 {
		return false
	}
	return streamingType(string(r.value(r.fields[r.contentType-1])))
}

// statusText is the status as http.Response.Status has it ("200 OK").
func (r *h1Response) statusText() string { return string(r.head[r.protoEnd:r.statusEnd]) }

// response is the answer as http.ReadResponse would have made it, with r
// as its body; the trailer goes into it as the body is read.
func (r *h1Response) response(req *http.Request) *http.Response {
	h := make(http.Header, r.nHeader)
	for _, f := range r.fields[:r.nHeader] {
		switch f.kind {
		case fieldTransferEncoding:
			continue
		case fieldContentLength:
			if r.headerLength < 0 {
				continue
			}
		case fieldConnection:
			if r.dropConnection {
				continue
			}
		case fieldTrailer:
			if r.chunked {
				continue
			}
		}
		k := string(r.name(f))
		h[k] = append(h[k], string(r.value(f)))
	}
	if vs := h["Content-Length"]; len(vs) > 1 {
		h["Content-Length"] = []string{string(trimOWS([]byte(vs[0])))}
	}
	if r.cacheControl {
		h["Cache-Control"] = []string{"no-cache"}
	}
	resp := &http.Response{
		Status:        r.statusText(),
		StatusCode:    r.status,
		Proto:         string(r.head[:r.protoEnd]),
		ProtoMajor:    r.major,
		ProtoMinor:    r.minor,
		Header:        h,
		Body:          r,
		ContentLength: r.contentLength,
		Close:         r.close,
		Request:       req,
	}
	if r.chunked {
		resp.TransferEncoding = []string{"chunked"}
	}
	if len(r.declared) > 0 {
		resp.Trailer = make(http.Header, len(r.declared))
		for _, k := range r.declared {
			resp.Trailer[k] = nil
		}
	}
	r.resp = resp
	return resp
}

// trailer is the answer's trailer as http.Response.Trailer has it once the
// body is read: the declared keys, with the values received; nil without
// either.
func (r *h1Response) trailer() http.Header {
	if len(r.declared) == 0 && len(r.fields) == r.nHeader {
		return nil
	}
	t := make(http.Header, len(r.declared)+len(r.fields)-r.nHeader)
	for _, k := range r.declared {
		t[k] = nil
	}
	r.addTrailer(t)
	return t
}

// addTrailer sets the received trailer's fields in t.
func (r *h1Response) addTrailer(t http.Header) {
	got := make(http.Header, len(r.fields)-r.nHeader)
	for _, f := range r.fields[r.nHeader:] {
		k := string(r.name(f))
		got[k] = append(got[k], string(r.value(f)))
	}
	for k, vs := range got {
		t[k] = vs
	}
}

// Read reads the body.
func (r *h1Response) Read(p []byte) (int, error) { return r.h1Body.read(r.br, p, r.readTrailer) }

// read reads the body from br as net/http's body does; readTrailer reads
// the trailer after a chunked one.
func (b *h1Body) read(br *bufio.Reader, p []byte, readTrailer func() error) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.failed {
		return 0, errBodyFailed
	}
	var n int
	var err error
	switch b.body {
	case bodyNone:
		err = io.EOF
	case bodyLength:
		if int64(len(p)) > b.remain {
			p = p[:b.remain]
		}
		n, err = br.Read(p)
		b.remain -= int64(n)
		switch {
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		case err == nil && b.remain == 0:
			err = io.EOF
		}
	case bodyChunked:
		n, err = b.chunks.Read(p)
		if err == io.EOF {
			if terr := readTrailer(); terr != nil {
				err = terr
			}
		}
	case bodyToClose:
		n, err = br.Read(p)
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.failed = true
	}
	return n, err
}

// errBodyFailed is a read after a failed one.
var errBodyFailed = errors.New("reading the response body after it failed")

// readTrailer reads the trailer after a chunked body, as net/http does:
// within the reader's buffer, in http.Response.Trailer too if response
// made one.
func (r *h1Response) readTrailer() error {
	if some, err := r.readTrailerFields(); !some || err != nil {
		return err
	}
	if r.resp != nil {
		if r.resp.Trailer == nil {
			r.resp.Trailer = http.Header{}
		}
		r.addTrailer(r.resp.Trailer)
	}
	return nil
}

// readTrailerFields reads the trailer after a chunked body, as net/http
// does: within the reader's buffer; some is false for an empty one.
func (r *h1Lines) readTrailerFields() (some bool, err error) {
	b, err := r.br.Peek(2)
	if bytes.Equal(b, []byte("\r\n")) {
		r.br.Discard(2)
		return false, nil
	}
	if len(b) < 2 {
		return false, errTrailerEOF
	}
	if err != nil {
		return false, err
	}
	if !upcomingEmptyLine(r.br) {
		return false, errors.New("suspiciously long trailer after chunked body")
	}
	if err := r.readFields(); err != nil {
		if err == io.ErrUnexpectedEOF {
			return false, errTrailerEOF
		}
		return false, err
	}
	return true, nil
}

// upcomingEmptyLine reports whether the reader's buffer holds a CRLF CRLF,
// the bound net/http sets on a trailer's size.
func upcomingEmptyLine(br *bufio.Reader) bool {
	for n := 4; ; n++ {
		b, err := br.Peek(n)
		if bytes.HasSuffix(b, []byte("\r\n\r\n")) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// Close ends the body: the connection goes back to the pool if the body
// was read to its end and the answer lets it be kept, and is closed
// otherwise.
func (r *h1Response) Close() error {
	hc := r.hc
	if hc == nil {
		return nil
	}
	if r.body == bodyNone {
		r.eof = true
	}
	if r.eof && !r.close {
		hc.pool.put(hc)
		return nil
	}
	hc.c.Close()
	return nil
}
