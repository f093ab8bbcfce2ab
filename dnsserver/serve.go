package dnsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// The TCP side's limits (RFC 7766 asks servers to bound idle connections and
// to allow several queries on one).
const (
	tcpIdleTimeout  = 10 * time.Second // between queries on one connection
	tcpReadTimeout  = 2 * time.Second  // to read one query once its length has come
	tcpWriteTimeout = 5 * time.Second
	maxTCPConns     = 1024
)

// Server is a DNS server answering from a Catalog. Create it with New, bind
// with Listen, run with Serve.
type Server struct {
	cfg   Config
	cat   Catalog
	log   *slog.Logger
	zones []*zone
	ttl   uint32
	m     *metrics
	// order arranges a service's instances before they are answered;
	// weightedShuffle unless a test wants a fixed order.
	order func([]entry)
	views sync.Map // service name → *view

	udp []net.PacketConn // one per reader, sharing the port (SO_REUSEPORT)
	tcp net.Listener

	closeOnce sync.Once
	closing   chan struct{}

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool // no more connections are taken
}

// New returns a server answering from cat. It does not listen yet.
func New(cat Catalog, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:     cfg,
		cat:     cat,
		log:     cfg.Logger.With("component", "dns"),
		ttl:     uint32(cfg.TTL / time.Second),
		m:       newMetrics(cfg.Registerer),
		order:   weightedShuffle,
		closing: make(chan struct{}),
		conns:   map[net.Conn]struct{}{},
	}
	for _, d := range cfg.Domains {
		z := newZone(d, uint32(cfg.NegativeTTL/time.Second))
		z.idx = len(s.zones)
		s.zones = append(s.zones, z)
	}
	return s, nil
}

// Listen binds UDP and TCP on cfg.Addr. With port 0, TCP takes the port the
// system gave UDP, so both share one address.
func (s *Server) Listen() error {
	if s.cfg.Addr == "" {
		return errors.New("dnsserver: no address to listen on")
	}
	_, port, _ := net.SplitHostPort(s.cfg.Addr)
	for try := 0; ; try++ {
		err := s.listen()
		// With port 0, the port the system gave UDP may be taken on TCP:
		// pick another.
		if err == nil || port != "0" || try == 10 || !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
	}
}

func (s *Server) listen() error {
	// One UDP socket per reader, all on one port: the kernel spreads
	// queries over them by their source, and each reader drains its own
	// queue, so no reader is woken for a packet another takes.
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	addr := s.cfg.Addr
	for range udpReaders() {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			s.closeUDP()
			return fmt.Errorf("dnsserver: listen on udp %s: %w", addr, err)
		}
		// Room for bursts: a full queue drops queries. The kernel caps
		// this at net.core.rmem_max.
		pc.(*net.UDPConn).SetReadBuffer(udpReadBuffer)
		s.udp = append(s.udp, pc)
		addr = pc.LocalAddr().String() // port 0: the others take the same port
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		s.closeUDP()
		return fmt.Errorf("dnsserver: listen on tcp %s: %w", addr, err)
	}
	s.tcp = l
	return nil
}

// udpReadBuffer is each UDP socket's receive buffer.
const udpReadBuffer = 4 << 20

// udpReaders is how many UDP sockets and readers the server runs: one per
// core.
func udpReaders() int { return runtime.GOMAXPROCS(0) }

func (s *Server) closeUDP() {
	for _, pc := range s.udp {
		pc.Close()
	}
	s.udp = nil
}

// Addr is the address the server is bound to ("" before Listen).
func (s *Server) Addr() string {
	if len(s.udp) == 0 {
		return ""
	}
	return s.udp[0].LocalAddr().String()
}

// Close closes the sockets Listen bound and every TCP connection; a running
// Serve returns.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		if len(s.udp) > 0 {
			for _, pc := range s.udp {
				pc.Close()
			}
			s.tcp.Close()
		}
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return nil
}

// Serve answers queries on the bound sockets until ctx is done or Close is
// called, then closes them and every TCP connection.
func (s *Server) Serve(ctx context.Context) error {
	if len(s.udp) == 0 {
		return errors.New("dnsserver: Serve before Listen")
	}
	s.log.Info("serving DNS", "addr", s.Addr(), "domains", s.cfg.Domains)
	var wg sync.WaitGroup
	// One reader per core, each answering inline: a query costs no
	// goroutine and no hand-off.
	for _, pc := range s.udp {
		wg.Go(func() { s.serveUDP(pc) })
	}
	wg.Go(func() { s.serveTCP(&wg) })
	select {
	case <-ctx.Done():
	case <-s.closing:
	}
	s.Close()
	wg.Wait()
	return nil
}

// udpBatch is how many datagrams one system call reads or writes at most.
// Under load, recvmmsg and sendmmsg spread one call's cost over many queries;
// when queries trickle in, a batch is one query and costs what a plain read
// would.
const udpBatch = 32

// maxQuerySize bounds a UDP query read; longer ones (nothing legitimate
// comes close) are dropped as malformed.
const maxQuerySize = 2048

// batchConn is the recvmmsg/sendmmsg side of a UDP socket, IPv4 or IPv6.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func batchOf(pc net.PacketConn) batchConn {
	if addr, ok := pc.LocalAddr().(*net.UDPAddr); ok && addr.IP.To4() == nil {
		return ipv6.NewPacketConn(pc)
	}
	return ipv4.NewPacketConn(pc)
}

func (s *Server) serveUDP(pc net.PacketConn) {
	conn := batchOf(pc)
	sc := newScratch()
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, maxQuerySize)}
		out[i].Buffers = [][]byte{make([]byte, maxUDPSize)}
	}
	bufs := make([][]byte, udpBatch) // out's buffers, kept: WriteBatch's Buffers are re-sliced per answer
	for i := range out {
		bufs[i] = out[i].Buffers[0]
	}
	for {
		n, err := conn.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dns: udp read", "err", err)
			continue
		}
		k := 0
		for _, m := range in[:n] {
			if m.Flags&syscall.MSG_TRUNC != 0 {
				s.m.dropped.WithLabelValues("malformed").Inc()
				continue
			}
			resp := s.handle(m.Buffers[0][:m.N], bufs[k], "udp", sc)
			if resp == nil {
				continue
			}
			out[k].Buffers[0], out[k].Addr = resp, m.Addr
			k++
		}
		for sent := 0; sent < k; {
			w, err := conn.WriteBatch(out[sent:k], 0)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// One bad destination must not hold up the rest.
				s.log.Debug("dns: udp write", "client", out[sent].Addr, "err", err)
				w = max(w, 1)
			}
			sent += w
		}
	}
}

func (s *Server) serveTCP(wg *sync.WaitGroup) {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dns: tcp accept", "err", err)
			time.Sleep(10 * time.Millisecond) // out of descriptors: let some close
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		if len(s.conns) >= maxTCPConns {
			s.mu.Unlock()
			s.m.dropped.WithLabelValues("tcp_limit").Inc()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Go(func() {
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		})
	}
}

// serveConn answers queries on one TCP connection, in order, until the
// client closes it or stays idle past tcpIdleTimeout.
func (s *Server) serveConn(c net.Conn) {
	var lenbuf [2]byte
	buf := make([]byte, 512)
	out := make([]byte, 2+dns.MaxMsgSize)
	sc := newScratch()
	for {
		c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := io.ReadFull(c, lenbuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenbuf[:]))
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		c.SetReadDeadline(time.Now().Add(tcpReadTimeout))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		resp := s.handle(buf[:n], out[2:], "tcp", sc)
		if resp == nil {
			return // a client sending garbage gets no more of our time
		}
		// The length prefix goes right before the message, in one write.
		msg := out[:2+len(resp)]
		if &resp[0] != &out[2] {
			msg = append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)
		} else {
			binary.BigEndian.PutUint16(msg, uint16(len(resp)))
		}
		c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}

// handle answers one query packet into out (or a new buffer if it does not
// fit) and returns the response, or nil for a packet to drop.
func (s *Server) handle(pkt, out []byte, transport string, sc *scratch) []byte {
	start := time.Now()
	sc.reset()
	req, qend, plain := unpackQuery(pkt, sc)
	if !plain {
		req = new(dns.Msg)
		if err := req.Unpack(pkt); err != nil {
			// No answer: a reply to garbage can be used for amplification.
			s.m.dropped.WithLabelValues("malformed").Inc()
			return nil
		}
		if req.Response {
			s.m.dropped.WithLabelValues("response").Inc()
			return nil
		}
	}
	size := dns.MaxMsgSize
	if transport == "udp" {
		size = dns.MinMsgSize
	}
	resp, size, truncated := s.answer(req, size, sc)
	b, packed := []byte(nil), false
	if plain {
		b, packed = packAnswer(resp, pkt, qend, out, size)
	}
	if !packed {
		truncated = fit(resp, size) || truncated
		var err error
		if b, err = resp.PackBuffer(out); err != nil {
			s.log.Error("dns: packing an answer", "question", req.Question, "err", err)
			resp = new(dns.Msg)
			resp.SetRcode(req, dns.RcodeServerFailure)
			if b, err = resp.PackBuffer(out); err != nil {
				return nil
			}
		}
	}
	s.m.observe(req, resp, transport, truncated, time.Since(start))
	return b
}
