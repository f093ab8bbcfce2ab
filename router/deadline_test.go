package router

import (
	"net"
	"testing"
	"time"
)

// deadlineConn counts the read deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// TestReadDeadlineMovesOncePerEighth: asked for the same timeout request
// after request, readDeadline moves the connection's deadline once per
// eighth of the timeout, and never lets it end before the timeout.
func TestReadDeadlineMovesOncePerEighth(t *testing.T) {
	var c deadlineConn
	var rd readDeadline
	t0 := time.Unix(1_000_000, 0)
	const d = 8 * time.Second
	steps := []struct {
		now     time.Duration // after t0
		d       time.Duration
		set     bool
		comment string
	}{
		{0, d, true, "the first"},
		{100 * time.Millisecond, d, false, "a request later"},
		{time.Second, d, false, "an eighth later"},
		{time.Second + time.Millisecond, d, true, "past an eighth: it would end early"},
		{time.Second + 2*time.Millisecond, time.Second, true, "a shorter timeout: it would end late"},
		{time.Second + 3*time.Millisecond, 0, true, "none"},
		{time.Second + 4*time.Millisecond, 0, false, "none again"},
	}
	for _, s := range steps {
		before := len(c.set)
		now := t0.Add(s.now)
		rd.set(&c, now, s.d)
		if got := len(c.set) > before; got != s.set {
			t.Fatalf("%s: set %v, want %v", s.comment, got, s.set)
		}
		if s.d > 0 {
			if end := c.set[len(c.set)-1]; end.Before(now.Add(s.d)) || end.After(now.Add(s.d+s.d/8)) {
				t.Fatalf("%s: the deadline ends %v after, want within [%v, %v]", s.comment, end.Sub(now), s.d, s.d+s.d/8)
			}
		} else if !c.set[len(c.set)-1].IsZero() {
			t.Fatalf("%s: a deadline is left", s.comment)
		}
	}
}

// TestAliveWithAPastDeadline: an idle backend connection whose last try
// timeout has passed is still alive: the pool's check does not read.
func TestAliveWithAPastDeadline(t *testing.T) {
	c, backend, err := tcpPair()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Unix(1, 0))
	if !alive(c) {
		t.Fatal("an open, quiet connection with a past read deadline was judged closed")
	}
	backend.Close()
	for deadline := time.Now().Add(10 * time.Second); alive(c); {
		if time.Now().After(deadline) {
			t.Fatal("a connection the backend closed is still judged alive")
		}
		time.Sleep(time.Millisecond)
	}
}
