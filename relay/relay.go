// Package relay joins two TCP connections, copying each way until both
// sides are done, with half-close passed through: when one side finishes
// sending, the other is told (shutdown of its write side) and may keep
// answering. Between two *net.TCPConn, io.Copy uses splice(2), so the bytes
// stay in the kernel.
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
	n, err := io.Copy(dst, src)
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return n, err
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
