package shim

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discotech/disco/shmtable"
)

// lateAfter: a request that arrives this long after its connection was
// accepted came on a connection made before the program asked for it, a
// spare. The clients pause 100 ms after every 50 requests, so the spares
// waiting then are that late; a connection made on demand carries its
// request within microseconds.
const lateAfter = 50 * time.Millisecond

// spareServer is a backend that tells prefetched connections from the
// others: it answers "NAME late" when the request came lateAfter or more
// after accept, else "NAME fresh", and counts the connections accepted and
// how many were ever idle (accepted, nothing received yet) at once.
type spareServer struct {
	mu       sync.Mutex
	accepted int
	idle     int
	maxIdle  int
}

func (s *spareServer) serve(t testing.TB, name string) shmtable.Backend {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			at := time.Now()
			s.mu.Lock()
			s.accepted++
			s.idle++
			s.maxIdle = max(s.maxIdle, s.idle)
			s.mu.Unlock()
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				_, err := r.Peek(1)
				s.mu.Lock()
				s.idle--
				s.mu.Unlock()
				if err != nil {
					return // a spare closed unused
				}
				how := "fresh"
				if time.Since(at) >= lateAfter {
					how = "late"
				}
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == "\r\n" {
						break
					}
				}
				fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n%s %s\n", name, how)
			}()
		}
	}()
	ap := netip.MustParseAddrPort(l.Addr().String())
	return shmtable.Backend{Addr: ap.Addr(), Port: ap.Port(), Weight: 100}
}

func (s *spareServer) stats() (accepted, maxIdle int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted, s.maxIdle
}

// paced parses the paced client's lines, "NAME late|fresh PEER", checking
// every request was answered and every peer is want; it returns how many
// were late.
func pacedLines(t testing.TB, out string, n int, peer string) (late int) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != n {
		t.Errorf("%d answers, want %d:\n%s", len(lines), n, out)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || (f[1] != "late" && f[1] != "fresh") {
			t.Errorf("bad line %q", l)
			continue
		}
		if f[2] != peer {
			t.Errorf("getpeername says %s, want %s (%q)", f[2], peer, l)
		}
		if f[1] == "late" {
			late++
		}
	}
	return late
}

// TestPrefetch: with DISCO_PREFETCH=1, a program connecting often gets
// spares; never more than DISCO_PREFETCH_MAX wait at once; a socket with an
// option set gets none; a forked child inherits none; and with prefetching
// off nothing is made ahead.
func TestPrefetch(t *testing.T) {
	client := need(t, buildClient)
	const spares = 4
	for _, p := range preloads(t) {
		t.Run(p.name, func(t *testing.T) {
			var srv spareServer
			tb := newTable(t, map[string][]shmtable.Backend{"web": {srv.serve(t, "a"), srv.serve(t, "b")}})
			peer := tb.magic["web"].String() + ":80"
			on := tb.env(p, "DISCO_PREFETCH=1", "DISCO_PREFETCH_MAX="+strconv.Itoa(spares))
			reset := func() {
				srv.mu.Lock()
				srv.accepted, srv.maxIdle = 0, srv.idle
				srv.mu.Unlock()
			}
			// settled waits until the spares the last program left are
			// closed, so that each check counts its own.
			settled := func() {
				t.Helper()
				for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					srv.mu.Lock()
					idle := srv.idle
					srv.mu.Unlock()
					if idle == 0 {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("%d connections still idle", idle)
					}
				}
			}

			t.Run("on", func(t *testing.T) {
				const n = 300
				reset()
				out := run(t, on, client, "paced", "web.service.disco", "80", strconv.Itoa(n), "3000", "none")
				late := pacedLines(t, out, n, peer)
				settled()
				accepted, maxIdle := srv.stats()
				t.Logf("%d requests, %d late, %d connections accepted, at most %d idle at once", n, late, accepted, maxIdle)
				if late < 3 {
					t.Errorf("%d requests came on spares, want some", late)
				}
				// A request's own connection is idle for a moment too.
				if maxIdle > spares+1 {
					t.Errorf("%d connections idle at once, want at most %d spares and one connecting", maxIdle, spares)
				}
			})
			t.Run("setsockopt", func(t *testing.T) {
				const n = 150
				settled()
				reset()
				out := run(t, on, client, "paced", "web.service.disco", "80", strconv.Itoa(n), "3000", "nodelay")
				late := pacedLines(t, out, n, peer)
				settled()
				accepted, _ := srv.stats()
				if late != 0 || accepted != n {
					t.Errorf("TCP_NODELAY set before connect: %d requests late, %d connections for %d requests; want none late, none spare", late, accepted, n)
				}
			})
			t.Run("off", func(t *testing.T) {
				const n = 150
				settled()
				reset()
				out := run(t, tb.env(p), client, "paced", "web.service.disco", "80", strconv.Itoa(n), "3000", "none")
				late := pacedLines(t, out, n, peer)
				settled()
				accepted, _ := srv.stats()
				if late != 0 || accepted != n {
					t.Errorf("prefetching off: %d requests late, %d connections for %d requests", late, accepted, n)
				}
			})
			t.Run("fork", func(t *testing.T) {
				const n = 100
				settled()
				out := run(t, on, client, "prefork", "web.service.disco", "80", strconv.Itoa(n), "3000")
				var parent, child []string
				parentExtra, childExtra := -1, -1
				for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
					who, rest, _ := strings.Cut(l, " ")
					if x, ok := strings.CutPrefix(rest, "extra fds "); ok {
						v, _ := strconv.Atoi(x)
						if who == "parent" {
							parentExtra = v
						} else {
							childExtra = v
						}
						continue
					}
					if who == "parent" {
						parent = append(parent, rest)
					} else {
						child = append(child, rest)
					}
				}
				pacedLines(t, strings.Join(parent, "\n"), n, peer)
				pacedLines(t, strings.Join(child, "\n"), n, peer)
				t.Logf("the parent had %d spares at fork", parentExtra)
				if parentExtra < 1 || parentExtra > spares {
					t.Errorf("the parent has %d fds more than at start, want its 1 to %d spares", parentExtra, spares)
				}
				if childExtra != 0 {
					t.Errorf("the child has %d fds more than its parent had at start, want 0", childExtra)
				}
			})
		})
	}
}
