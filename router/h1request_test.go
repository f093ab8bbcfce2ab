package router

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// parsedRequest is what a server makes of a request, to compare h1Request
// with http.ReadRequest.
type parsedRequest struct {
	Method, RequestURI, Proto string
	Major, Minor              int
	URL                       *url.URL
	Host                      string
	Header                    http.Header
	Length                    int64
	TE                        []string
	Close                     bool
	Declared                  http.Header
	NoBody                    bool
	Body                      string
	BodyFailed                bool
	Trailer                   http.Header // after the body, unless it failed
}

func readParsedRequest(req *http.Request) parsedRequest {
	p := parsedRequest{
		Method: req.Method, RequestURI: req.RequestURI, Proto: req.Proto, Major: req.ProtoMajor, Minor: req.ProtoMinor,
		URL: req.URL, Host: req.Host, Header: req.Header.Clone(), Length: req.ContentLength, TE: req.TransferEncoding,
		Close: req.Close, Declared: req.Trailer.Clone(), NoBody: req.Body == http.NoBody,
	}
	b, err := io.ReadAll(req.Body)
	p.Body, p.BodyFailed = string(b), err != nil
	if !p.BodyFailed {
		p.Trailer = req.Trailer
	}
	return p
}

var compareUserinfo = cmp.Comparer(func(a, b *url.Userinfo) bool {
	return (a == nil) == (b == nil) && a.String() == b.String()
})

// compareRequests reads up to three requests from data with
// http.ReadRequest and with one h1Request, each through a reader of size
// bytes, and fails unless both make the same of each or both refuse it.
func compareRequests(t *testing.T, data []byte, size int) {
	t.Helper()
	wr := bufio.NewReaderSize(bytes.NewReader(data), size)
	gr := bufio.NewReaderSize(bytes.NewReader(data), size)
	var r h1Request
	for i := range 3 {
		wreq, werr := http.ReadRequest(wr)
		greq, gerr := r.readRequest(context.Background(), gr)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("request %d, %d-byte reader, %q:\nhttp.ReadRequest: %v\nh1Request: %v", i, size, data, werr, gerr)
		}
		if werr != nil {
			return
		}
		want, got := readParsedRequest(wreq), readParsedRequest(greq)
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), compareUserinfo); diff != "" {
			t.Fatalf("request %d, %d-byte reader, %q (-http.ReadRequest +h1Request):\n%s", i, size, data, diff)
		}
		if want.BodyFailed {
			return
		}
	}
}

// requestSeeds are requests that have tripped up parsers: smuggling with
// lengths and codings, bad chunks, obs-fold, odd targets, bare LFs.
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /p/a/t/h?q=1&r=%20#f HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
	"GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a%2fb HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a!b*(c)'d HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /é HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /? HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /?? HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /?a?b HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /?a\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET //evil.com/x HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET http://h.example/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
	"GET http://u:p@h.example:8080/p HTTP/1.1\r\n\r\n",
	"GET HTTP://H.example/ HTTP/1.1\r\n\r\n",
	"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET relative HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET  HTTP/1.1\r\nHost: a\r\n\r\n",
	"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n",
	"CONNECT /rpc HTTP/1.1\r\n\r\n",
	"CONNECT [::1]:443 HTTP/1.1\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"PRI * HTTP/2.0\r\nA: b\r\n\r\n",
	"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
	"get / HTTP/1.1\r\nHost: a\r\n\r\n",
	" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n",
	"GET / http/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/0.9\r\n\r\n",
	"GET / HTTP/0.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
	"GET / HTTP/1\r\nHost: a\r\n\r\n",
	"GET /\r\n\r\n",
	"GET\r\n\r\n",
	"\r\n",
	"",
	"GET / HTTP/1.1",
	"GET / HTTP/1.1\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n\r",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\n\r\n",
	"GET / HTTP/1.1\rHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost:\r\n\r\n",
	"GET http://h.example/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n  b\r\n\tc\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n   \r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nSpace Name: x\r\nSpace : y\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nTab\tName: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x01b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Del: a\x7fb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9 \xff\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nx-lower: 1\r\nX-LOWER: 2\r\nx-\xffbad: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Spaces:   a  b  \r\nX-Tab:\tv\t\r\nX-Colon:a:b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\nAccept: x\r\ncookie: c=3\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length:  5 \r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1_0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\nshort",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED \r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunKed\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
	"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum, X-Other\r\n\r\n1\r\na\r\n0\r\nX-Sum: 42\r\nX-Extra: 1\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Undeclared: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Lf: 1\n\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: ,\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTrailer: X-Sum\r\nContent-Length: 1\r\n\r\na",
	"POST / HTTP/1.1\r\nHost: a\r\nX-Long: " + strings.Repeat("l", 20000) + "\r\n\r\n",
	"GET /" + strings.Repeat("p", 20000) + " HTTP/1.1\r\nHost: a\r\n\r\n",
	// One connection's requests reuse the request, its URL and header
	// map (keptRequest): nothing of one may show in the next.
	"POST /a?q=1 HTTP/1.1\r\nHost: a\r\nA: 1\r\nA: 2\r\nB: 3\r\nTransfer-Encoding: chunked\r\nTrailer: T\r\n\r\n1\r\nx\r\n0\r\nT: t\r\n\r\n" +
		"GET /b HTTP/1.1\r\nHost: b\r\n\r\n" +
		"GET http://c.example/c? HTTP/1.0\r\nB: 4\r\nContent-Length: 0\r\n\r\n",
	"GET /?q HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-Many-1: 1\r\nX-Many-2: 2\r\nX-Many-3: 3\r\nX-Many-4: 4\r\nX-Many-5: 5\r\nX-Many-6: 6\r\nX-Many-7: 7\r\nX-Many-8: 8\r\n", 3) + "\r\n" +
		"GET / HTTP/1.1\r\nHost: a\r\nX-Many-1: one\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1;"+strings.Repeat("e", 100)+"\r\na\r\n", 200) + "0\r\n\r\n",
}

// TestRequestParserReadsAsNetHTTP holds h1Request to http.ReadRequest on
// the seeds: the same requests and bodies, or both refuse.
func TestRequestParserReadsAsNetHTTP(t *testing.T) {
	for _, data := range requestSeeds {
		for _, size := range []int{16, 64, 16 << 10} {
			compareRequests(t, []byte(data), size)
		}
	}
}

func FuzzRequestParser(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(requestSeeds[0]), true)
	f.Fuzz(func(t *testing.T, data []byte, small bool) {
		if len(data) > maxHeadBytes/4 {
			return // h1Request refuses heads over maxHeadBytes; http.ReadRequest has no bound
		}
		size := 16 << 10
		if small {
			size = 32
		}
		compareRequests(t, data, size)
	})
}

// TestRequestParserAllocatesTheHeadOnly: a connection's requests after
// its first cost one allocation each, the head's string.
func TestRequestParserAllocatesTheHeadOnly(t *testing.T) {
	const req = "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: x\r\nAccept: */*\r\nCookie: a=1\r\n\r\n"
	data := []byte(strings.Repeat(req, 200))
	br := bufio.NewReaderSize(bytes.NewReader(data), frontBufSize)
	var r h1Request
	ctx := context.Background()
	if _, err := r.readRequest(ctx, br); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := r.readRequest(ctx, br); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("%.1f allocations per request, want 1 (the head's string)", allocs)
	}
}

// BenchmarkReadRequest compares h1Request with http.ReadRequest on a
// typical proxied request.
func BenchmarkReadRequest(b *testing.B) {
	const req = "GET /api/v1/items?page=2&sort=name HTTP/1.1\r\nHost: app.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: application/json\r\n" +
		"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-GB,en;q=0.9\r\n" +
		"Cookie: session=0123456789abcdef\r\nX-Request-Id: 4f1c2a\r\n\r\n"
	for _, c := range []struct{ name, req string }{
		{"browser", req},
		{"wrk", "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"},
	} {
		b.Run(c.name, func(b *testing.B) { benchmarkReadRequest(b, c.req) })
	}
}

func benchmarkReadRequest(b *testing.B, req string) {
	data := []byte(strings.Repeat(req, 64))
	run := func(b *testing.B, read func(*bufio.Reader) (*http.Request, error)) {
		b.ReportAllocs()
		br := bufio.NewReaderSize(nil, frontBufSize)
		rd := bytes.NewReader(data)
		for i := 0; b.Loop(); i++ {
			if i%64 == 0 {
				rd.Reset(data)
				br.Reset(rd)
			}
			if _, err := read(br); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("net-http", func(b *testing.B) {
		run(b, func(br *bufio.Reader) (*http.Request, error) {
			req, err := http.ReadRequest(br)
			if err != nil {
				return nil, err
			}
			return req.WithContext(context.Background()), nil
		})
	})
	b.Run("h1Request", func(b *testing.B) {
		var r h1Request
		run(b, func(br *bufio.Reader) (*http.Request, error) {
			return r.readRequest(context.Background(), br)
		})
	})
}
