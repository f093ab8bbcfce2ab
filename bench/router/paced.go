package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/discotech/disco/bench/internal/sysstat"

	"github.com/discotech/disco/bench/internal/wrk"
)

// The fixed-rate latency run. wrk cannot pace: it sends a connection's
// next request when the last is answered, so a slow answer delays the
// requests behind it and they are never timed (coordinated omission). This
// client sends open loop instead, and is built to keep its own delays out
// of the figures, as it shares the cores with the proxy and the backends:
//
//   - request k is due at start + k/rate, whatever the answers do, and its
//     latency runs from that due time — not from when it was written — to
//     the kernel's receive timestamp of the answer's last bytes
//     (SO_TIMESTAMPNS on the TCP socket). A request that waits for a free
//     connection, or behind a slow answer, is timed with its wait; when
//     the client gets round to reading an answer does not matter;
//   - HTTP/1.1 keep-alive, one request at a time on a connection (no
//     pipelining, which proxies treat differently): a due request takes
//     the connection idle the longest, so that every connection carries
//     load as wrk's do, or waits in order for the first one freed;
//   - one thread does everything, with no goroutine to wake per answer: it
//     writes the requests that are due, reads the answers epoll says are
//     waiting, and waits for the next answer or the next due time, which
//     comes first, in epoll_pwait2(2) with a 1µs timer slack (Go's
//     time.Sleep rounds anything under a millisecond up to one). How late
//     each request was written against its due time is recorded and
//     reported ("send lag"): it is the client's own delay, plus any wait
//     for a connection.

// pacedResult is what a fixed-rate run measured.
type pacedResult struct {
	rate           float64 // the rate asked for, requests/s
	sent, answered int
	non2xx         int // answers with a status other than 2xx
	errors         int // requests that failed: connection closed or reset, or an answer that did not parse
	unanswered     int // requests still unanswered after the timeout
	unstamped      int // answers without a kernel timestamp (timed on receipt)
	reconnects     int
	queued         int // requests that waited for a connection: all were busy when they were due
	firstErr       error
	lat            wrk.Hist      // due time → answer, µs buckets
	lag            wrk.Hist      // due time → request written, µs buckets
	elapsed        time.Duration // from the first due time to the last answer
	selfCPU        float64       // the client's CPU seconds
}

// prSetTimerslack is prctl's PR_SET_TIMERSLACK, and soTimestampNS
// SO_TIMESTAMPNS (and its control message's type, SCM_TIMESTAMPNS).
const (
	prSetTimerslack = 29
	soTimestampNS   = 35
)

// maxNap is the longest the client sleeps between two looks at its
// connections when the kernel has no epoll_pwait2.
const maxNap = 50 * time.Microsecond

// pacedConn is one keep-alive connection and the request on it.
type pacedConn struct {
	fd    int
	buf   []byte        // what has arrived of the answer
	due   time.Duration // the request's due time, from start; -1 when idle
	freed time.Duration // when it last became idle, from start
	clean bool          // no request failed on it
}

// pacedClient is one fixed-rate run's state; one goroutine runs it.
type pacedClient struct {
	addr    netip.AddrPort
	req     []byte
	rate    float64
	total   int
	timeout time.Duration

	epfd     int
	conns    map[int]*pacedConn // by fd
	idle     []*pacedConn       // oldest idle first
	backlog  []time.Duration    // due times of requests waiting for a connection, oldest first
	start    time.Time
	startNs  int64 // start on the wall clock, as the kernel stamps answers
	r        pacedResult
	events   []syscall.EpollEvent
	noPwait2 bool // the kernel has no epoll_pwait2
	oob      []byte
	rbuf     []byte
}

// paced sends GET / to addr at rate requests/s for d over conns keep-alive
// connections, waits up to timeout for the last answers, and returns what
// it measured.
func paced(ctx context.Context, addr string, rate float64, d time.Duration, conns int, timeout time.Duration) (*pacedResult, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("paced: %q is not an IPv4 address and port", addr)
	}
	if rate <= 0 || d <= 0 || conns < 1 {
		return nil, fmt.Errorf("paced: rate %v, duration %s, %d connections", rate, d, conns)
	}
	c := &pacedClient{
		addr:    ap,
		req:     []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"),
		rate:    rate,
		total:   int(rate * d.Seconds()),
		timeout: timeout,
		conns:   map[int]*pacedConn{},
		r:       pacedResult{rate: rate, lat: wrk.Hist{}, lag: wrk.Hist{}},
		events:  make([]syscall.EpollEvent, 256),
		oob:     make([]byte, syscall.CmsgSpace(16)),
		rbuf:    make([]byte, 64<<10),
	}
	if c.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("paced: epoll: %w", err)
	}
	defer func() {
		for fd := range c.conns {
			syscall.Close(fd)
		}
		syscall.Close(c.epfd)
	}()
	for range conns {
		pc, err := c.dial()
		if err != nil {
			return nil, err
		}
		c.idle = append(c.idle, pc)
	}
	self := sysstat.SelfCPUSeconds()
	c.run(ctx)
	c.r.selfCPU = sysstat.SelfCPUSeconds() - self
	if err := ctx.Err(); err != nil {
		return &c.r, err
	}
	if c.r.answered == 0 {
		return &c.r, fmt.Errorf("paced: no request answered (first error: %v)", c.r.firstErr)
	}
	return &c.r, nil
}

// dial opens a keep-alive connection: blocking connect (loopback), then
// non-blocking, no Nagle, with receive timestamps.
func (c *pacedClient) dial() (*pacedConn, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("paced: socket: %w", err)
	}
	fail := func(what string, err error) (*pacedConn, error) {
		syscall.Close(fd)
		return nil, fmt.Errorf("paced: %s %s: %w", what, c.addr, err)
	}
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: int(c.addr.Port()), Addr: c.addr.Addr().As4()}); err != nil {
		return fail("connect", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		return fail("TCP_NODELAY", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, soTimestampNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		return fail("non-blocking", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(c.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fail("epoll add", err)
	}
	pc := &pacedConn{fd: fd, due: -1, clean: true}
	c.conns[fd] = pc
	return pc, nil
}

// run sends c.total requests, request k due at start + k/rate, reading
// answers between sends; then reads the last answers until every request
// is answered or c.timeout passed.
func (c *pacedClient) run(ctx context.Context) {
	// The thread is the goroutine's until it unlocks, so its timer slack
	// is set back first. It must not exit with the goroutine: the peers
	// were started with Pdeathsig, which fires when the thread that
	// started them exits, and this may be that thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1000, 0)
	defer syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 0, 0) // 0: back to the default

	perNs := c.rate / 1e9
	at := func(k int) time.Duration { return time.Duration(float64(k) / perNs) }
	c.start = time.Now()
	c.startNs = c.start.UnixNano()
	k := 0
	for k < c.total && ctx.Err() == nil {
		due := min(int(float64(time.Since(c.start))*perNs)+1, c.total)
		for ; k < due; k++ {
			c.backlog = append(c.backlog, at(k))
		}
		c.send()
		c.poll(at(k) - time.Since(c.start))
	}
	for end := time.Now().Add(c.timeout); c.outstanding() > 0 && time.Now().Before(end) && ctx.Err() == nil; {
		c.send()
		c.poll(time.Millisecond)
	}
	c.r.elapsed = time.Since(c.start)
	c.r.unanswered = c.outstanding()
}

// outstanding is how many requests are due and not yet answered or failed.
func (c *pacedClient) outstanding() int {
	return len(c.backlog) + c.r.sent - c.r.answered - c.r.errors
}

// send writes the oldest waiting requests on idle connections.
func (c *pacedClient) send() {
	for len(c.backlog) > 0 && len(c.idle) > 0 {
		due := c.backlog[0]
		c.backlog = c.backlog[1:]
		pc := c.idle[0]
		c.idle = c.idle[1:]
		now := time.Since(c.start)
		c.r.lag[int64(max(now-due, 0)/time.Microsecond)]++
		// The connection idle the longest became idle after the request
		// was due: every connection was busy then.
		if pc.freed > due {
			c.r.queued++
		}
		pc.due, pc.buf = due, pc.buf[:0]
		c.r.sent++
		// A request of a few dozen bytes on an idle connection fits its
		// socket buffer whole.
		if n, err := syscall.Write(pc.fd, c.req); err != nil || n != len(c.req) {
			if err == nil {
				err = fmt.Errorf("short write, %d of %d bytes", n, len(c.req))
			}
			c.fail(pc, fmt.Errorf("write: %w", err))
		}
	}
}

// poll waits up to timeout (none when it is not positive) for answers,
// and reads what has arrived on the connections epoll says are readable.
// epoll_pwait2 (Linux 5.11) waits to the nanosecond, with the thread's
// 1µs timer slack, and wakes at once when an answer arrives; without it,
// the client naps at most 50µs with nanosleep and then looks.
func (c *pacedClient) poll(timeout time.Duration) {
	timeout = max(timeout, 0)
	n, err := c.wait(timeout)
	if errors.Is(err, syscall.ENOSYS) {
		c.noPwait2 = true
		n, err = c.wait(timeout)
	}
	if err != nil {
		return // EINTR: the next round looks again
	}
	for _, ev := range c.events[:n] {
		if pc := c.conns[int(ev.Fd)]; pc != nil {
			c.read(pc)
		}
	}
}

func (c *pacedClient) wait(timeout time.Duration) (int, error) {
	if c.noPwait2 {
		if timeout > 0 {
			ts := syscall.NsecToTimespec(int64(min(timeout, maxNap)))
			syscall.Nanosleep(&ts, nil)
		}
		return syscall.EpollWait(c.epfd, c.events, 0)
	}
	ts := unix.NsecToTimespec(int64(timeout))
	n, _, errno := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(c.epfd), uintptr(unsafe.Pointer(&c.events[0])), uintptr(len(c.events)),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// read reads what is waiting on pc and, once the answer is whole, times it.
func (c *pacedClient) read(pc *pacedConn) {
	for {
		n, oobn, _, _, err := syscall.Recvmsg(pc.fd, c.rbuf, c.oob, 0)
		switch {
		case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
			return
		case err != nil:
			c.fail(pc, fmt.Errorf("read: %w", err))
			return
		case n == 0:
			c.fail(pc, errors.New("connection closed by the server"))
			return
		}
		if pc.due < 0 {
			c.fail(pc, fmt.Errorf("%d bytes with no request outstanding", n))
			return
		}
		pc.buf = append(pc.buf, c.rbuf[:n]...)
		status, size, err := parseResponse(pc.buf)
		switch {
		case err != nil:
			c.fail(pc, err)
			return
		case size == 0:
			continue // not whole yet
		case size != len(pc.buf):
			c.fail(pc, fmt.Errorf("%d bytes after the answer", len(pc.buf)-size))
			return
		}
		// A stamp must be from the past few seconds of the wall clock: a
		// kernel that stamped with another clock is not believed.
		stamp, now := c.stamp(oobn), time.Now().UnixNano()
		if stamp > now || stamp < now-int64(10*time.Second) {
			c.r.unstamped++
			stamp = now
		}
		c.r.lat[max(stamp-c.startNs-int64(pc.due), 0)/1e3]++
		c.r.answered++
		if status/100 != 2 {
			c.r.non2xx++
		}
		pc.due, pc.freed = -1, time.Since(c.start)
		c.idle = append(c.idle, pc)
		return
	}
}

// stamp returns the SCM_TIMESTAMPNS of the last read, in ns on the wall
// clock, or 0.
func (c *pacedClient) stamp(oobn int) int64 {
	msgs, err := syscall.ParseSocketControlMessage(c.oob[:oobn])
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == soTimestampNS && len(m.Data) >= 16 {
			// struct timespec: two 64-bit words on the 64-bit Linux this
			// runs on.
			return int64(binary.NativeEndian.Uint64(m.Data))*1e9 + int64(binary.NativeEndian.Uint64(m.Data[8:]))
		}
	}
	return 0
}

// fail counts the request on pc as failed, closes pc and opens another
// connection in its place.
func (c *pacedClient) fail(pc *pacedConn, err error) {
	if pc.due >= 0 {
		c.r.errors++
	}
	if c.r.firstErr == nil {
		c.r.firstErr = err
	}
	syscall.EpollCtl(c.epfd, syscall.EPOLL_CTL_DEL, pc.fd, nil)
	syscall.Close(pc.fd)
	delete(c.conns, pc.fd)
	c.r.reconnects++
	if npc, err := c.dial(); err == nil {
		npc.freed = time.Since(c.start)
		c.idle = append(c.idle, npc)
	} else if c.r.firstErr == nil {
		c.r.firstErr = err
	}
}

// parseResponse reads one HTTP/1.1 response at the start of b: its status
// and its size in bytes, 0 while it is not whole. The body is sized by
// Content-Length or chunked encoding; a response with neither has none
// (only 1xx, 204 and 304 may, and a HEAD's; GET / gets none of those).
func parseResponse(b []byte) (status, size int, err error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > 16<<10 {
			return 0, 0, errors.New("answer headers over 16 KiB")
		}
		return 0, 0, nil
	}
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, 0, fmt.Errorf("not an HTTP/1 status line: %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, 0, fmt.Errorf("status line %q: %w", line, err)
	}
	length, chunked := 0, false
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, 0, fmt.Errorf("Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(value), []byte("chunked"))
		}
	}
	bodyAt := end + 4
	if !chunked {
		if len(b) < bodyAt+length {
			return status, 0, nil
		}
		return status, bodyAt + length, nil
	}
	n, err := chunkedSize(b[bodyAt:])
	if err != nil || n == 0 {
		return status, 0, err
	}
	return status, bodyAt + n, nil
}

// chunkedSize is the size of the chunked body at the start of b, with its
// last chunk and trailers; 0 while it is not whole.
func chunkedSize(b []byte) (int, error) {
	off := 0
	for {
		i := bytes.Index(b[off:], []byte("\r\n"))
		if i < 0 {
			return 0, nil
		}
		sizeField, _, _ := bytes.Cut(b[off:off+i], []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(sizeField)), 16, 32)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("chunk size %q", b[off:off+i])
		}
		off += i + 2
		if n == 0 {
			// Trailers, if any, then an empty line.
			for {
				j := bytes.Index(b[off:], []byte("\r\n"))
				if j < 0 {
					return 0, nil
				}
				off += j + 2
				if j == 0 {
					return off, nil
				}
			}
		}
		if len(b) < off+int(n)+2 {
			return 0, nil
		}
		off += int(n) + 2
	}
}
