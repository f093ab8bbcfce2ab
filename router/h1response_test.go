package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// parsed is what a reader of an answer makes of it, to compare
// h1Response with http.ReadResponse.
type parsed struct {
	Status       string
	Code         int
	Proto        string
	Major, Minor int
	Header       http.Header
	Length       int64
	TE           []string
	Close        bool
	Declared     http.Header
	Body         string
	BodyFailed   bool
	Trailer      http.Header // after the body, unless it failed
}

func readParsed(resp *http.Response) parsed {
	p := parsed{
		Status: resp.Status, Code: resp.StatusCode, Proto: resp.Proto, Major: resp.ProtoMajor, Minor: resp.ProtoMinor,
		Header: resp.Header.Clone(), Length: resp.ContentLength, TE: resp.TransferEncoding, Close: resp.Close,
		Declared: resp.Trailer.Clone(),
	}
	b, err := io.ReadAll(resp.Body)
	p.Body, p.BodyFailed = string(b), err != nil
	if !p.BodyFailed {
		p.Trailer = resp.Trailer
	}
	return p
}

// parseBoth reads data as an answer to method with http.ReadResponse and
// with h1Response, each through a reader of size bytes.
func parseBoth(data []byte, method string, size int) (want, got parsed, werr, gerr error) {
	req := &http.Request{Method: method}
	resp, werr := http.ReadResponse(bufio.NewReaderSize(bytes.NewReader(data), size), req)
	var r h1Response
	gerr = r.readHead(bufio.NewReaderSize(bytes.NewReader(data), size), method)
	if werr == nil {
		want = readParsed(resp)
	}
	if gerr == nil {
		got = readParsed(r.response(req))
	}
	return want, got, werr, gerr
}

// h1Seeds are answers that have tripped up parsers: obs-fold, lengths
// twice or with a transfer coding, bad chunks, long lines, bare LFs.
var h1Seeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\n\r\nhello",
	"HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b\r\n\tc\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Fold: a\r\n   \r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\n Leading: space\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length:  5 \r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nContent-Length: 00000000000000000000005\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED \r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nrest",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum, X-Other\r\n\r\n1\r\na\r\n0\r\nX-Sum: 42\r\nX-Extra: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Undeclared: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Lf: 1\n\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nContent-Length: 1\r\n\r\na",
	"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\nuntil the end",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.0 200 OK\r\n\r\nuntil the end",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nCache-Control: private\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nContent-Type: text/html\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1  200  OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 +99 Odd\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 -00 Odd\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
	"HTTP/0.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/0.9 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.12 200 OK\r\n\r\n",
	"ICY 200 OK\r\n\r\n",
	"HTTP/1.1\r\n\r\n",
	"\r\n",
	"",
	"HTTP/1.1 200 OK\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r",
	"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
	"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
	"HTTP/1.1 200 OK\r\nSpace Name: x\r\nSpace : y\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTab\tName: x\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Del: a\x7fb\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Obs-Text: caf\xc3\xa9 \xff\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nx-lower-case: 1\r\nCONTENT-LENGTH: 2\r\nx-\xffbad: 1\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Spaces:   a  b  \r\nX-Tab:\tv\t\r\nX-Colon:a:b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nset-cookie: c=3\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("l", 300) + "\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("l", 20000) + "\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 " + strings.Repeat("R", 20000) + "\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Long: " + strings.Repeat("t", 300) + "\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1;"+strings.Repeat("e", 100)+"\r\na\r\n", 200) + "0\r\n\r\n",
}

// TestH1ResponseReadsAsNetHTTP holds h1Response to http.ReadResponse on
// the seeds: the same status, header, length and body, or both refuse.
func TestH1ResponseReadsAsNetHTTP(t *testing.T) {
	for _, data := range h1Seeds {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			for _, size := range []int{16, 64, 16 << 10} {
				compareParse(t, []byte(data), method, size)
			}
		}
	}
}

func compareParse(t *testing.T, data []byte, method string, size int) {
	t.Helper()
	want, got, werr, gerr := parseBoth(data, method, size)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%s, %d-byte reader, %q:\nhttp.ReadResponse: %v\nh1Response: %v", method, size, data, werr, gerr)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("%s, %d-byte reader, %q (-http.ReadResponse +h1Response):\n%s", method, size, data, diff)
	}
}

func FuzzH1Response(f *testing.F) {
	for _, s := range h1Seeds {
		f.Add([]byte(s), false, false)
	}
	f.Add([]byte(h1Seeds[0]), true, true)
	f.Fuzz(func(t *testing.T, data []byte, head, small bool) {
		if len(data) > maxHeadBytes/4 {
			return // h1Response refuses heads over maxHeadBytes; net/http has no bound
		}
		method, size := http.MethodGet, 16<<10
		if head {
			method = http.MethodHead
		}
		if small {
			size = 32
		}
		compareParse(t, data, method, size)
	})
}

func TestH1ResponseRefusesHugeHeads(t *testing.T) {
	data := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", maxHeadBytes) + "\r\n\r\n"
	var r h1Response
	err := r.readHead(bufio.NewReader(strings.NewReader(data)), http.MethodGet)
	if !errors.Is(err, errHeadTooLarge) {
		t.Errorf("a %d-byte header: %v, want errHeadTooLarge", len(data), err)
	}
}

// TestH1ResponseEOFBeforeTheFirstByte checks the one way readHead's errors
// differ from http.ReadResponse's: nothing at all is io.EOF (the backend
// closed a kept-alive connection without taking the request), a head cut
// short io.ErrUnexpectedEOF.
func TestH1ResponseEOFBeforeTheFirstByte(t *testing.T) {
	for _, c := range []struct {
		data string
		want error
	}{
		{"", io.EOF},
		{"H", io.ErrUnexpectedEOF},
		{"HTTP/1.1 200 OK\r\n", io.ErrUnexpectedEOF},
		{"HTTP/1.1 200 OK\r\nA: b\r\n", io.ErrUnexpectedEOF},
	} {
		var r h1Response
		if err := r.readHead(bufio.NewReaderSize(strings.NewReader(c.data), 16), http.MethodGet); err != c.want {
			t.Errorf("%q: %v, want %v", c.data, err, c.want)
		}
	}
}

// cannedBackend answers each request with answers[path], written as it
// is (only the head to HEAD), and closes the connection after answers
// without a length.
func cannedBackend(t testing.TB, answers map[string]string) string {
	return rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			a, ok := answers[req.URL.Path]
			if !ok {
				a = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
			}
			head, _, _ := strings.Cut(a, "\r\n\r\n")
			if req.Method == http.MethodHead {
				a = head + "\r\n\r\n"
			}
			if _, err := io.WriteString(c, a); err != nil {
				return
			}
			lower := strings.ToLower(head)
			if !strings.Contains(lower, "content-length") && !strings.Contains(lower, "transfer-encoding") &&
				!strings.HasPrefix(head[9:], "204") && !strings.HasPrefix(head[9:], "304") && req.Method != http.MethodHead {
				return
			}
		}
	})
}

// generalOnly hides the frontWriter from the router, which then answers
// the way it answers HTTP/2 clients: through an *http.Response and the
// header map.
type generalOnly struct{ http.ResponseWriter }

func (w generalOnly) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rawExchange sends req on a new connection and returns all the server
// sends until it closes the connection.
func rawExchange(t *testing.T, addr, req string) string { return string(sendAll(t, addr, req)) }

// normalised is an answer with its header's lines sorted (the general
// way writes them in map order), the values of a Trailer field sorted
// too, and the Date the router adds blanked.
func normalised(raw string) string {
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "Date: ") && !strings.Contains(l, "2001"):
			lines[i] = "Date: (now)"
		case strings.HasPrefix(l, "Trailer: "):
			keys := strings.Split(strings.TrimPrefix(l, "Trailer: "), ", ")
			slices.Sort(keys)
			lines[i] = "Trailer: " + strings.Join(keys, ", ")
		}
	}
	slices.Sort(lines[1:])
	return strings.Join(lines, "\r\n") + "\r\n\r\n" + body
}

// TestRelayMatchesGeneralPath holds the relay (frontWriter.relayHeader)
// to what the router's general way makes of the same answers: the same
// bytes, but for the order of the header's lines.
func TestRelayMatchesGeneralPath(t *testing.T) {
	var many strings.Builder
	for i := range 40 {
		fmt.Fprintf(&many, "X-Header-%d: value %d\r\n", i%7, i)
	}
	answers := map[string]string{
		"/length":           "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
		"/chunked":          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		"/empty-chunks":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"/trailers":         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, x-other, Authorization\r\n\r\n4\r\nbody\r\n0\r\nX-Sum: 42\r\nX-Other: 7\r\nX-Undeclared: no\r\nAuthorization: no\r\n\r\n",
		"/undeclared":       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nX-Late: yes\r\n\r\n",
		"/to-close":         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the backend closes",
		"/204":              "HTTP/1.1 204 No Content\r\nX-A: b\r\nContent-Length: 0\r\n\r\n",
		"/304":              "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Type: text/html\r\nContent-Length: 100\r\n\r\n",
		"/head-length":      "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1234\r\n\r\n" + strings.Repeat("h", 1234),
		"/many":             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + many.String() + "Content-Length: 2\r\n\r\nok",
		"/cookies":          "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nContent-Type: text/plain\r\nSet-Cookie: b=2\r\nset-cookie: c=3; HttpOnly\r\nContent-Length: 2\r\n\r\nok",
		"/hop":              "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nTe: trailers\r\nTrailer: X-Nothing\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/pragma":           "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/sniffed":          "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>",
		"/sniffed-to-close": "HTTP/1.1 200 OK\r\n\r\n<html>hi</html>",
		"/encoded":          "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nxyz",
		"/lower":            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-custom-THING: a\r\ncontent-length: 2\r\n\r\nok",
		"/date":             "HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/odd-status":       "HTTP/1.1 299 Whatever\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/500":              "HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\noops\n",
		"/http10":           "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/spacing":          "HTTP/1.1 200 OK\r\nX-Sp:   a  b  \r\nX-Tab:\tv\r\nX-Empty:\r\nX-Colon:a:b\r\nSpace Name: dropped\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/folded":           "HTTP/1.1 200 OK\r\nX-Fold: a\r\n  b\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/event-stream":     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 12\r\n\r\ndata: hi\n\n\n\n",
		"/big-chunked":      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n" + strings.Repeat("c", 0x2000) + "\r\n0\r\n\r\n",
	}
	tr := startRouter(t, nil)
	tr.mustAnnounce(t, "canned", cannedBackend(t, answers), "")
	relay, _ := startFront(t, tr.Router, nil)
	general, _ := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.Router.ServeHTTP(generalOnly{w}, r)
	}), nil)
	for path := range answers {
		for _, req := range []string{
			"GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			"HEAD " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			"GET " + path + " HTTP/1.0\r\n\r\n",
		} {
			got := rawExchange(t, relay, req)
			want := rawExchange(t, general, req)
			if diff := cmp.Diff(normalised(want), normalised(got)); diff != "" {
				t.Errorf("%q (-general +relay):\n%s", req, diff)
			}
			if !strings.HasPrefix(got, "HTTP/1.1 2") && !strings.HasPrefix(got, "HTTP/1.0 2") &&
				!strings.HasPrefix(got[9:], "304") && !strings.HasPrefix(got[9:], "500") {
				t.Errorf("%q: %q", req, got)
			}
		}
	}
	// The relay keeps the backend's order of the lines.
	got := rawExchange(t, relay, "GET /many HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.Contains(got, "Content-Type: text/plain\r\n"+many.String()) {
		t.Errorf("the lines out of the backend's order:\n%s", got)
	}
}

// TestRelayDropsFieldsNamedWithClose: a "Connection: close" answer's
// named fields are hop-by-hop too, where the general way (after
// http.ReadResponse drops the Connection field) passes them on.
func TestRelayDropsFieldsNamedWithClose(t *testing.T) {
	tr := startRouter(t, nil)
	tr.mustAnnounce(t, "canned", cannedBackend(t, map[string]string{
		"/": "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
	}), "")
	code, body, h := tr.get(t, "/")
	if code != 200 || body != "ok" || h.Get("X-Hop") != "" {
		t.Errorf("got %d %q with X-Hop %q; want 200 \"ok\" without X-Hop", code, body, h.Get("X-Hop"))
	}
}

func BenchmarkH1ReadHead(b *testing.B) {
	const answer = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 16:34:00 GMT\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\nX-Backend: b1\r\n\r\nb1\n"
	rd := strings.NewReader(answer)
	br := bufio.NewReaderSize(rd, 16<<10)
	reset := func() { rd.Reset(answer); br.Reset(rd) }
	b.Run("h1Response", func(b *testing.B) {
		var r h1Response
		buf := make([]byte, 64)
		b.ReportAllocs()
		for b.Loop() {
			reset()
			if err := r.readHead(br, http.MethodGet); err != nil {
				b.Fatal(err)
			}
			r.Read(buf)
		}
	})
	b.Run("http.ReadResponse", func(b *testing.B) {
		req := &http.Request{Method: http.MethodGet}
		buf := make([]byte, 64)
		b.ReportAllocs()
		for b.Loop() {
			reset()
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Read(buf)
		}
	})
}

// BenchmarkRouterRelay is a keep-alive client through the router to a
// backend answering as nginx does.
func BenchmarkRouterRelay(b *testing.B) {
	tr := startRouter(b, nil)
	tr.mustAnnounce(b, "canned", cannedBackend(b, map[string]string{
		"/": "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 16:34:00 GMT\r\n" +
			"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\nX-Backend: b1\r\n\r\nb1\n",
	}), "")
	benchKeepAlive(b, strings.TrimPrefix(tr.url, "http://"))
}

// TestRoundTripEndsWithItsConnection: a request waiting on its backend
// stops waiting when its client connection is closed under it (Shutdown
// past its deadline), through the interrupter the router's own server
// puts in each connection's context.
func TestRoundTripEndsWithItsConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	asked := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		http.ReadRequest(bufio.NewReader(c)) // and no answer
		asked <- c
	}()
	pool := newH1Pool(time.Second, time.Minute)
	ended := make(chan error, 1)
	addr, fs := startFront(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := pool.roundTrip(&outbound{in: r, addr: ln.Addr().String(), uri: "/", host: "b"})
		ended <- err
	}), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, get("/"))
	backend := <-asked
	defer backend.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fs.Shutdown(ctx)
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the round trip ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the round trip kept waiting for the backend after its client connection was closed")
	}
}

// TestInterruptOutlastsDeadlines: a connection interrupted (its client
// gone) stays interrupted when the exchange sets its try timeout after:
// the read fails at once instead of waiting out the timeout.
func TestInterruptOutlastsDeadlines(t *testing.T) {
	c, backend, err := tcpPair()
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close() // and never answers
	defer c.Close()
	hc := &h1Conn{c: c}
	hc.interrupt()
	hc.setReadDeadline(time.Now(), time.Hour)
	hc.setReadDeadline(time.Time{}, 0)
	_, err = newSysConn(c).Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after interrupt: %v, want a deadline exceeded", err)
	}
}
