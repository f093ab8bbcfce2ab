package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"syscall"
	"time"
	"unsafe"
)

// The fixed-rate latency run. dnsperf reports only the average latency and
// its standard deviation, so the benchmark sends these queries itself:
// open loop, at a fixed rate whatever the answers do, over several UDP
// sockets, and records every answer's latency for exact percentiles.
//
// The client shares the cores with the server, so it is built to cost
// little and to keep its own delays out of the figures:
//
//   - latency runs from just before the query's send to the kernel's
//     receive timestamp of the answer (SO_TIMESTAMPNS: when the answer
//     reached the client's socket), both on the wall clock. When the
//     client gets round to reading the answer does not matter;
//   - so one thread does everything, with no goroutine to wake per
//     answer: it sends the queries that are due, reads every answer
//     waiting on its sockets (recvmmsg, non-blocking), and sleeps until
//     the next query is due with nanosleep(2) and a 1µs timer slack. (Go's
//     time.Sleep rounds anything under a millisecond up to one, which
//     would send the queries in bursts of rate/1000 that queue behind each
//     other at the server.) It wakes every 50µs at least, so queries leave
//     in runs of at most rate×50µs-or-so; how late each left against the
//     schedule is recorded and reported ("send lag");
//   - when the client itself was kept off the CPU for longer than maxLag,
//     it does not send everything it owes in one burst, which would queue
//     at the server (and overflow its socket) for no fault of the server's:
//     the queries due more than maxLag ago are skipped and counted. The
//     rate actually sent is in the table ("answered/s");
//   - queries carry their socket's next ID; a slot per ID holds the send
//     time and the query, so an answer is matched without a map. An answer
//     later than -timeout counts as lost, as at dnsperf.

// pacedResult is what a fixed-rate run measured.
type pacedResult struct {
	rate                 float64 // the rate asked for, queries/s
	sent, answered, lost int
	failed               int // answers with an rcode other than NOERROR
	truncated            int // answers with the TC bit
	short                int // NOERROR answers with fewer answer records than the data set has
	stray                int // answers matching no outstanding query
	late                 int // answers later than the timeout (lost)
	unstamped            int // answers without a kernel timestamp (timed on receipt)
	sendErrs             int
	skipped              int   // queries not sent, due more than maxLag before the client could send them
	serverDrops          int64 // queries dropped at the server's socket, its receive buffer full
	clientDrops          int64 // answers dropped at the client's sockets, the same way
	firstErr             error
	lat                  []time.Duration // every answered query's latency
	lag                  []time.Duration // how late each query was sent against the schedule
	elapsed              time.Duration   // from the first send to the last
	cpu                  cpuSplit
}

// qps is the answered queries per second over the sending time.
func (r pacedResult) qps() float64 { return float64(r.answered) / r.elapsed.Seconds() }

// slot is one query ID's state on one socket.
type slot struct {
	sent int64 // wall-clock ns of the send; 0 when nothing is outstanding
	qi   int32 // the query sent
}

type pacedSocket struct {
	fd    int
	next  uint16 // the next ID
	slots [65536]slot
}

// socketsFor returns how many sockets a run at rate needs so that no query
// ID comes round again within twice the timeout: an ID in use when its turn
// comes round is a lost query, and its late answer would be taken for the
// new one's.
func socketsFor(rate float64, timeout time.Duration, atLeast int) int {
	return max(atLeast, int(math.Ceil(rate*2*timeout.Seconds()/65536)))
}

// paced sends the queries of m round-robin to s at rate queries/s for d,
// waits up to timeout for the last answers, and returns what it measured.
func paced(ctx context.Context, s *server, m mix, edns bool, rate float64, d, timeout time.Duration, sockets int) (pacedResult, error) {
	if rate <= 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
		return pacedResult{}, fmt.Errorf("rate %v", rate)
	}
	tmpl := make([][]byte, len(m.queries))
	want := make([]int, len(m.queries))
	for i, q := range m.queries {
		b, err := buildQuery(q.name, q.qtype, edns)
		if err != nil {
			return pacedResult{}, err
		}
		tmpl[i], want[i] = b, len(q.wantAnswer)
	}
	port := s.dnsPort()
	total := int(rate * d.Seconds())
	socks := make([]*pacedSocket, socketsFor(rate, timeout, sockets))
	defer func() {
		for _, sk := range socks {
			if sk != nil {
				syscall.Close(sk.fd)
			}
		}
	}()
	for i := range socks {
		fd, err := dialStamped(port)
		if err != nil {
			return pacedResult{}, err
		}
		socks[i] = &pacedSocket{fd: fd}
	}
	c := &pacedClient{
		socks: socks, tmpl: tmpl, want: want, rate: rate, total: total, timeout: timeout,
		r:  pacedResult{rate: rate, lag: make([]time.Duration, 0, total), lat: make([]time.Duration, 0, total)},
		rx: newReceiver(64),
	}
	var ports []int
	for _, sk := range socks {
		if sa, err := syscall.Getsockname(sk.fd); err == nil {
			if in4, ok := sa.(*syscall.SockaddrInet4); ok {
				ports = append(ports, in4.Port)
			}
		}
	}
	serverDrops := udpDrops(port)
	cpu := startCPU(s)
	c.run(ctx)
	c.r.cpu = cpu(0)
	c.r.serverDrops = udpDrops(port) - serverDrops
	c.r.clientDrops = udpDrops(ports...) // the sockets are new
	if err := ctx.Err(); err != nil {
		return c.r, err
	}
	// Lost: never answered, answered late, or sent on an ID still
	// outstanding (never answered in time either).
	c.r.lost = c.r.sent - c.r.answered
	if err := s.Err(); err != nil {
		return c.r, fmt.Errorf("during the run: %w", err)
	}
	return c.r, nil
}

// soTimestampNS is SO_TIMESTAMPNS (and its control message's type,
// SCM_TIMESTAMPNS) on Linux.
const soTimestampNS = 35

// dialStamped opens a non-blocking UDP socket connected to
// 127.0.0.1:port, whose every datagram comes with the kernel's receive
// time.
func dialStamped(port int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	// Room for the answers that arrive while the client sleeps or sends.
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<20)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, soTimestampNS, 1); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("connect 127.0.0.1:%d: %w", port, err)
	}
	return fd, nil
}

// pacedClient is one fixed-rate run's state; one goroutine runs it.
type pacedClient struct {
	socks   []*pacedSocket
	tmpl    [][]byte
	want    []int
	rate    float64
	total   int
	timeout time.Duration
	r       pacedResult
	rx      *receiver
}

// prSetTimerslack is prctl's PR_SET_TIMERSLACK.
const prSetTimerslack = 29

// maxLag is how late a query may leave: those due earlier are skipped.
const maxLag = time.Millisecond

// maxNap is the longest the client sleeps between two looks at its
// sockets while queries are due.
const maxNap = 50 * time.Microsecond

// run sends c.total queries, query k at start + k/rate, round-robin over
// the sockets and the queries, reading answers between sends; then reads
// the last answers until every query is answered or c.timeout passed.
func (c *pacedClient) run(ctx context.Context) {
	// The thread is the goroutine's until it unlocks, so its timer slack
	// is set back first. It must not exit with the goroutine: the servers
	// were started with Pdeathsig, which fires when the thread that
	// started them exits, and this may be that thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1000, 0)
	defer syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 0, 0) // 0: back to the default

	buf := make([]byte, 512)
	perNs := c.rate / 1e9
	at := func(k int) time.Duration { return time.Duration(float64(k) / perNs) }
	start := time.Now()
	k := 0
	for k < c.total && ctx.Err() == nil {
		now := time.Since(start)
		due := min(int(float64(now)*perNs)+1, c.total)
		if behind := int(float64(now-maxLag) * perNs); k < behind {
			c.r.skipped += min(behind, c.total) - k
			k = min(behind, c.total)
		}
		for ; k < due; k++ {
			sk := c.socks[k%len(c.socks)]
			qi := k % len(c.tmpl)
			n := copy(buf, c.tmpl[qi])
			id := sk.next
			sk.next++
			binary.BigEndian.PutUint16(buf, id)
			sl := &sk.slots[id]
			now := time.Now()
			// A query still outstanding on this ID is lost.
			sl.sent, sl.qi = now.UnixNano(), int32(qi)
			if _, err := syscall.Write(sk.fd, buf[:n]); err != nil {
				sl.sent = 0
				c.r.sendErrs++
				if c.r.firstErr == nil {
					c.r.firstErr = fmt.Errorf("send: %w", err)
				}
				continue
			}
			c.r.sent++
			c.r.lag = append(c.r.lag, max(now.Sub(start)-at(k), 0))
		}
		c.drain()
		if wait := at(k) - time.Since(start); wait > 0 {
			nap(min(wait, maxNap))
		}
	}
	c.r.elapsed = time.Since(start)
	for end := time.Now().Add(c.timeout); c.outstanding() > 0 && time.Now().Before(end) && ctx.Err() == nil; {
		nap(time.Millisecond)
		c.drain()
	}
	c.drain()
}

func nap(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Nanosleep(&ts, nil)
}

// outstanding is how many queries await an answer.
func (c *pacedClient) outstanding() int {
	return c.r.sent - c.r.answered - c.r.late
}

// drain reads every answer waiting on the sockets.
func (c *pacedClient) drain() {
	for _, sk := range c.socks {
		for {
			n, err := c.rx.read(sk.fd)
			if err != nil {
				if err != syscall.EAGAIN && err != syscall.EINTR && c.r.firstErr == nil {
					// ECONNREFUSED: nothing listened when a query arrived.
					c.r.firstErr = fmt.Errorf("receive: %w", err)
				}
				break
			}
			for i := range n {
				c.answer(sk, c.rx.msg(i), c.rx.stamp(i))
			}
			if n < len(c.rx.hdrs) {
				break
			}
		}
	}
}

// answer times one answer; stamp is its kernel receive time, 0 if none.
func (c *pacedClient) answer(sk *pacedSocket, b []byte, stamp int64) {
	if stamp == 0 {
		c.r.unstamped++
		stamp = time.Now().UnixNano()
	}
	h, ok := parseHeader(b)
	if !ok || !h.qr {
		c.r.stray++
		return
	}
	sl := &sk.slots[h.id]
	if sl.sent == 0 {
		c.r.stray++
		return
	}
	lat := time.Duration(stamp - sl.sent)
	sl.sent = 0
	if lat > c.timeout {
		c.r.late++
		return
	}
	c.r.answered++
	c.r.lat = append(c.r.lat, max(lat, 0))
	switch {
	case h.rcode != 0:
		c.r.failed++
	case h.an < c.want[sl.qi]:
		c.r.short++
	}
	if h.tc {
		c.r.truncated++
	}
}

// receiver reads datagrams with their kernel timestamps, many at a time,
// with recvmmsg(2).
type receiver struct {
	hdrs []mmsghdr
	iovs []syscall.Iovec
	bufs [][]byte
	oobs [][]byte
}

// mmsghdr is struct mmsghdr of recvmmsg(2).
type mmsghdr struct {
	hdr syscall.Msghdr
	len uint32
	_   [4]byte
}

func newReceiver(n int) *receiver {
	rx := &receiver{hdrs: make([]mmsghdr, n), iovs: make([]syscall.Iovec, n), bufs: make([][]byte, n), oobs: make([][]byte, n)}
	for i := range n {
		rx.bufs[i] = make([]byte, 65535)
		rx.oobs[i] = make([]byte, syscall.CmsgSpace(16))
		rx.iovs[i].Base = &rx.bufs[i][0]
		rx.iovs[i].SetLen(len(rx.bufs[i]))
		h := &rx.hdrs[i].hdr
		h.Iov = &rx.iovs[i]
		h.Iovlen = 1
		h.Control = &rx.oobs[i][0]
	}
	return rx
}

// read reads up to len(rx.hdrs) datagrams waiting on fd, without waiting.
func (rx *receiver) read(fd int) (int, error) {
	for i := range rx.hdrs {
		rx.hdrs[i].hdr.SetControllen(len(rx.oobs[i]))
		rx.hdrs[i].hdr.Flags = 0
	}
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&rx.hdrs[0])), uintptr(len(rx.hdrs)),
		syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func (rx *receiver) msg(i int) []byte { return rx.bufs[i][:rx.hdrs[i].len] }

// stamp returns datagram i's SCM_TIMESTAMPNS (a struct timespec, two
// 64-bit words on the 64-bit Linux this runs on) in ns, or 0.
func (rx *receiver) stamp(i int) int64 {
	oob := rx.oobs[i][:rx.hdrs[i].hdr.Controllen]
	for len(oob) >= syscall.SizeofCmsghdr {
		l := int(binary.NativeEndian.Uint64(oob))
		level := int32(binary.NativeEndian.Uint32(oob[8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:]))
		if l < syscall.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		data := oob[syscall.CmsgLen(0):l]
		if level == syscall.SOL_SOCKET && typ == soTimestampNS && len(data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(data))
			nsec := int64(binary.NativeEndian.Uint64(data[8:]))
			return sec*1e9 + nsec
		}
		oob = oob[min(syscall.CmsgSpace(l-syscall.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// percentile returns the exact p-th percentile (nearest rank) of sorted d.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return float64(sorted[min(max(rank-1, 0), len(sorted)-1)])
}

func mean(d []time.Duration) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, x := range d {
		sum += float64(x)
	}
	return sum / float64(len(d))
}

// latencies are the figures of a fixed-rate run's latencies, in ns.
type latencies struct{ p50, p99, p999, max, mean float64 }

func summarize(d []time.Duration) latencies {
	d = slices.Clone(d)
	slices.Sort(d)
	return latencies{
		p50: percentile(d, 50), p99: percentile(d, 99), p999: percentile(d, 99.9),
		max: percentile(d, 100), mean: mean(d),
	}
}
