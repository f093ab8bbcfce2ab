package router

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestSysConnIsANetConn holds sysConn to net.Conn's contract with
// nettest's conformance suite: reads and writes of every size, partial
// writes waiting for room, deadlines past, future and moved while a call
// waits, Close during a call, and concurrent use.
func TestSysConnIsANetConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		d, a, err := tcpPair()
		if err != nil {
			return nil, nil, nil, err
		}
		c1, c2 = newSysConn(d), newSysConn(a)
		if _, ok := c1.(*sysConn); !ok {
			t.Skip("no raw system calls on this platform")
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// tcpPair returns the two ends of a new loopback TCP connection.
func tcpPair() (dialed, accepted net.Conn, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	a := <-ch
	if a == nil {
		d.Close()
		return nil, nil, net.ErrClosed
	}
	return d, a, nil
}
