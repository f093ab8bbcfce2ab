package router

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// accessLog writes one line per request, buffered and flushed every
// second, in the combined log format with the route, the backend, the
// number of tries and the duration added:
//
//	127.0.0.1 - - [23/Nov/2026:15:04:05 +0000] "GET /v1/x HTTP/1.1" 200 13 "-" "curl/8.5.0" route=/v1 backend=10.0.1.5:8080 tries=1 duration=0.000412
type accessLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	f    io.Closer // nil for standard output
	buf  []byte
	stop chan struct{}
	done chan struct{}
}

func openAccessLog(path string) (*accessLog, error) {
	a := &accessLog{stop: make(chan struct{}), done: make(chan struct{})}
	if path == "-" {
		a.w = bufio.NewWriterSize(os.Stdout, 64<<10)
	} else {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		a.w, a.f = bufio.NewWriterSize(f, 64<<10), f
	}
	go a.flusher()
	return a, nil
}

func (a *accessLog) flusher() {
	defer close(a.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.mu.Lock()
			a.w.Flush()
			a.mu.Unlock()
		}
	}
}

// Close flushes and closes the log.
func (a *accessLog) Close() error {
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.w.Flush()
	if a.f != nil {
		if cerr := a.f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

func (a *accessLog) write(r *http.Request, start time.Time, status int, size int64, route, backend string, tries int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.buf[:0]
	host := r.RemoteAddr
	if h := hostOnly(host); h != "" {
		host = h
	}
	b = append(b, host...)
	b = append(b, " - - ["...)
	b = start.UTC().AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] \""...)
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = appendUnquoted(b, r.RequestURI)
	b = append(b, ' ')
	b = append(b, r.Proto...)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, size, 10)
	b = append(b, ' ')
	b = appendQuoted(b, r.Referer())
	b = append(b, ' ')
	b = appendQuoted(b, r.UserAgent())
	b = append(b, " route="...)
	b = append(b, orDash(route)...)
	b = append(b, " backend="...)
	b = append(b, orDash(backend)...)
	b = append(b, " tries="...)
	b = strconv.AppendInt(b, int64(tries), 10)
	b = append(b, " duration="...)
	b = strconv.AppendFloat(b, time.Since(start).Seconds(), 'f', 6, 64)
	b = append(b, '\n')
	a.w.Write(b)
	a.buf = b
}

// appendUnquoted appends s with control characters, quotes and spaces
// escaped, so a log line stays one line of fields.
func appendUnquoted(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == '"' || c == '\\' || c >= 0x7f {
			b = append(b, '\\', 'x', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
			continue
		}
		b = append(b, c)
	}
	return b
}

func appendQuoted(b []byte, s string) []byte {
	if s == "" {
		return append(b, "\"-\""...)
	}
	b = append(b, '"')
	b = appendUnquoted(b, s)
	return append(b, '"')
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// logAccess writes the request's line when the access log is on.
func (r *Router) logAccess(req *http.Request, start time.Time, status int, size int64, backend string, st *routeState, tries int) {
	if r.access == nil {
		return
	}
	route := ""
	if st != nil {
		route = st.route.Key
	}
	r.access.write(req, start, status, size, route, backend, tries)
}
