package router

import (
	"net"
	"time"
)

// readDeadline keeps a connection's read deadline coarsely: a timeout of d
// ends between d and d+d/8 after it is set. Moving a deadline takes a
// lock and a timer update in the runtime; a keep-alive connection that
// asks for the same timeout request after request gets one update per
// eighth of the timeout instead of one or two per request.
type readDeadline struct {
	at time.Time // the deadline set on the connection; zero for none
}

// set makes c's read deadline now+d, give or take d/8 later; d <= 0 is no
// deadline.
func (rd *readDeadline) set(c net.Conn, now time.Time, d time.Duration) {
	if d <= 0 {
		rd.clear(c)
		return
	}
	earliest := now.Add(d)
	if !rd.at.IsZero() && !rd.at.Before(earliest) && !rd.at.After(earliest.Add(d/8)) {
		return
	}
	rd.at = earliest.Add(d / 8)
	c.SetReadDeadline(rd.at)
}

// clear removes c's read deadline.
func (rd *readDeadline) clear(c net.Conn) {
	if !rd.at.IsZero() {
		rd.at = time.Time{}
		c.SetReadDeadline(time.Time{})
	}
}

// setBy notes that c's read deadline was set to t by other means.
func (rd *readDeadline) setBy(t time.Time) { rd.at = t }
