// Package relay joins two TCP connections, copying each way until both
// sides are done, with half-close passed through: when one side finishes
// sending, the other is told (shutdown of its write side) and may keep
// answering.
//
// Each direction starts by copying through a buffer — one read and one
// write per message, the cheapest way to move the small messages of a
// request and its answer — and turns to splice(2) (io.Copy between two
// *net.TCPConn) as soon as a read fills the buffer: a bulk transfer then
// stays in the kernel.
package relay

import (
	"errors"
	"io"
	"net"
	"sync"
)

// closeWriter is a connection whose sending side can be shut alone.
type closeWriter interface {
	CloseWrite() error
}

// Join copies a→b and b→a until both directions end, then closes both. It
// returns the bytes copied each way and the first error that was not a
// normal end of a connection.
func Join(a, b net.Conn) (aToB, bToA int64, err error) {
	var wg sync.WaitGroup
	var errAB, errBA error
	wg.Go(func() { aToB, errAB = pipe(b, a) })
	bToA, errBA = pipe(a, b)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA, errors.Join(quiet(errAB), quiet(errBA))
}

// pipe copies src to dst, then shuts dst's sending side (or closes it, when
// it cannot be shut alone) so the peer sees the end.
func pipe(dst, src net.Conn) (int64, error) {
	n, err := copyThenSplice(dst, src)
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return n, err
}

// bufSize is the copy buffer; a read that fills it starts splicing.
const bufSize = 16 << 10

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

func copyThenSplice(dst, src net.Conn) (int64, error) {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = nil
			}
			return total, rerr
		}
		if n == len(buf) {
			m, err := io.Copy(dst, src) // splice from here on
			return total + m, err
		}
	}
}

// quiet drops the errors that only say a connection ended.
func quiet(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return nil
	}
	var op *net.OpError
	if errors.As(err, &op) && (op.Op == "readfrom" || op.Op == "read" || op.Op == "write") {
		return nil // reset by the peer: the peer's business
	}
	return err
}
