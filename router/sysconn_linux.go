package router

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// sysConn reads and writes a TCP connection with raw system calls, waiting
// in Go's poller as net.Conn does when the socket has nothing to read or no
// room to write.
//
// net.Conn tells the scheduler of every read and write (entersyscall), so
// that a thread blocked in the kernel lends its processor to another. On a
// non-blocking socket the kernel never blocks; on loopback a write does
// the receiver's TCP work and wake-up inside the call, and often outlasts
// the scheduler monitor's 20µs tick. With one processor (GOMAXPROCS=1, as
// the router runs beside its load on a small machine) the monitor then
// hands the processor to a second thread that has to wait for the first
// one's core, and the first, back from the kernel, has to sleep: two
// thread switches for nothing, and waits of milliseconds when both threads
// share a core. Raw calls keep the goroutine, its thread and its processor
// together through the call. The calls are recvfrom and sendto, which
// skip write's and read's file layer; sendto with MSG_NOSIGNAL, so that a
// write to a connection the peer reset is EPIPE without a SIGPIPE.
type sysConn struct {
	net.Conn
	rc syscall.RawConn

	r, w sysCall // the read and the write in progress

	readFn, writeFn func(fd uintptr) bool // bound once: no allocation per call
}

// sysCall is a read or a write in progress, and its lock: net.Conn allows
// reads concurrent with each other and with writes.
type sysCall struct {
	mu     sync.Mutex
	p      []byte // what the call reads into or writes from
	n      int
	errno  syscall.Errno
	waited bool // in the poller
}

// newSysConn wraps c when it is a TCP connection, and returns c otherwise.
func newSysConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	s := &sysConn{Conn: c, rc: rc}
	s.readFn = s.readOnce
	s.writeFn = s.writeAll
	return s
}

func (s *sysConn) readOnce(fd uintptr) bool {
	r := &s.r
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)), 0, 0, 0)
		switch e {
		case 0:
			r.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			r.waited = true
			return false // wait until readable
		default:
			r.errno = e
			return true
		}
	}
}

func (s *sysConn) writeAll(fd uintptr) bool {
	w := &s.w
	for len(w.p) > 0 {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&w.p[0])), uintptr(len(w.p)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			w.n += int(n)
			w.p = w.p[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable, then write the rest
		default:
			w.errno = e
			return true
		}
	}
	return true
}

// Read is net.Conn's: io.EOF at the end, a *net.OpError otherwise.
func (s *sysConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r := &s.r
	r.mu.Lock()
	r.p, r.n, r.errno, r.waited = p, 0, 0, false
	err := s.rc.Read(s.readFn)
	runtime.KeepAlive(p)
	n, errno := r.n, r.errno
	if r.waited {
		polled()
	}
	r.p = nil
	r.mu.Unlock()
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case errno != 0:
		return 0, s.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write is net.Conn's: all of p, or a *net.OpError.
func (s *sysConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w := &s.w
	w.mu.Lock()
	w.p, w.n, w.errno = p, 0, 0
	err := s.rc.Write(s.writeFn)
	runtime.KeepAlive(p)
	n, errno := w.n, w.errno
	w.p = nil
	w.mu.Unlock()
	switch {
	case err != nil:
		return n, s.opError("write", err)
	case errno != 0:
		return n, s.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError is err as net.Conn reports it: a deadline's os.ErrDeadlineExceeded
// (a net.Error whose Timeout is true), a closed connection's
// net.ErrClosed, a reset's syscall.ECONNRESET, all within a *net.OpError.
func (s *sysConn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err // the raw connection's, whose Op is "raw-read"
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: err}
}

// SyscallConn is the connection's own.
func (s *sysConn) SyscallConn() (syscall.RawConn, error) { return s.rc, nil }

// CloseWrite half-closes the connection, as *net.TCPConn does.
func (s *sysConn) CloseWrite() error { return s.Conn.(*net.TCPConn).CloseWrite() }
