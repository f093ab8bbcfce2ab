package relay

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
)

// TestJoinPassesHalfClose: a client sends a request and shuts its sending
// side; the server reads to the end, answers, and closes; the client reads
// the whole answer through the relay.
func TestJoinPassesHalfClose(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		c, err := backend.Accept()
		if err != nil {
			return
		}
		req, _ := io.ReadAll(c) // until the client's half-close
		c.Write(append([]byte("got "), req...))
		c.Close()
	}()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	done := make(chan [2]int64, 1)
	go func() {
		c, err := front.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", backend.Addr().String())
		if err != nil {
			c.Close()
			return
		}
		ab, ba, _ := Join(c, b)
		done <- [2]int64{ab, ba}
	}()
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 1<<20)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append([]byte("got "), payload...)) {
		t.Errorf("answer: %d bytes, want %d", len(got), len(payload)+4)
	}
	if n := <-done; n[0] != int64(len(payload)) || n[1] != int64(len(payload)+4) {
		t.Errorf("counted %v", n)
	}
}

// TestSmallMessagesBothWays: a request/answer exchange of small messages,
// many times on one connection, the traffic the copy path is for.
func TestSmallMessagesBothWays(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		c, err := backend.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c) // echo
		c.Close()
	}()
	front, _ := net.Listen("tcp", "127.0.0.1:0")
	defer front.Close()
	go func() {
		c, err := front.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", backend.Addr().String())
		if err != nil {
			c.Close()
			return
		}
		Join(c, b)
	}()
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := range 1000 {
		msg := []byte(fmt.Sprintf("message %04d", i))
		c.Write(msg)
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			t.Fatalf("exchange %d: %q, %v", i, buf[:len(msg)], err)
		}
	}
}
