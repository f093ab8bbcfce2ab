package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/discotech/disco/bench/internal/cli"
)

// The emulated link: the host's end and the namespace's end of a /30.
const (
	hostIP    = "10.213.0.1"
	backendIP = "10.213.0.2"
	prefixLen = "/30"
	nsPrefix  = "discobench-"
)

// ipCmd runs ip with args and returns an error carrying its output.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// removeStale deletes discobench-PID namespaces whose PID no longer runs
// (left by a benchmark killed outright). Its TUN devices went with it: they
// are not persistent.
func removeStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		pid, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		if p, err := strconv.Atoi(pid); err == nil && p != os.Getpid() && syscall.Kill(p, 0) == nil {
			continue // its benchmark still runs
		}
		if ipCmd("netns", "delete", name) == nil {
			cli.Progress("removed stale namespace %s", name)
		}
	}
}

// openTUN creates TUN device name (IFF_TUN | IFF_NO_PI) in the calling
// thread's namespace and returns its fd.
func openTUN(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:], name)
	req.flags = unix.IFF_TUN | unix.IFF_NO_PI
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); e != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF %s: %w", name, e)
	}
	return fd, nil
}

// link is the emulated round trip: a namespace holding the backend's
// address, joined to the host by two TUN devices whose packets this
// process carries, each one delayed by half the round trip.
type link struct {
	ns               string
	hostTUN, nsTUN   string
	hostFd, nsFd     int
	oneWay           time.Duration
	packets, dropped atomic.Int64
}

// newLink builds the namespace and the devices and starts the wire.
func newLink(rtt time.Duration) (l *link, err error) {
	pid := os.Getpid()
	l = &link{
		ns:      fmt.Sprintf("%s%d", nsPrefix, pid),
		hostTUN: fmt.Sprintf("dbh%d", pid),
		nsTUN:   fmt.Sprintf("dbn%d", pid),
		hostFd:  -1, nsFd: -1,
		oneWay: rtt / 2,
	}
	defer func() {
		if err != nil {
			l.close()
			l = nil
		}
	}()
	if o, _ := exec.Command("ip", "-4", "-o", "addr", "show", "to", hostIP+prefixLen).Output(); len(bytes.TrimSpace(o)) > 0 {
		return l, fmt.Errorf("%s%s is already on a device (another run of this benchmark?): %s", hostIP, prefixLen, bytes.TrimSpace(o))
	}
	if err := ipCmd("netns", "add", l.ns); err != nil {
		return l, err
	}
	if l.hostFd, err = openTUN(l.hostTUN); err != nil {
		return l, err
	}
	if l.nsFd, err = openTUN(l.nsTUN); err != nil {
		return l, err
	}
	// A TUN fd keeps working after its device moves to another namespace.
	for _, args := range [][]string{
		{"link", "set", l.nsTUN, "netns", l.ns},
		{"addr", "add", hostIP + prefixLen, "dev", l.hostTUN},
		{"link", "set", l.hostTUN, "up"},
		{"-n", l.ns, "addr", "add", backendIP + prefixLen, "dev", l.nsTUN},
		{"-n", l.ns, "link", "set", l.nsTUN, "up"},
		{"-n", l.ns, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(args...); err != nil {
			return l, err
		}
	}
	go l.carry(l.hostFd, l.nsFd)
	go l.carry(l.nsFd, l.hostFd)
	return l, nil
}

// carry moves packets from one device to the other, each one oneWay after
// it was read, in order.
func (l *link) carry(from, to int) {
	type packet struct {
		due  int64 // CLOCK_MONOTONIC, ns
		data []byte
	}
	q := make(chan packet, 8192)
	go func() {
		// clock_nanosleep on a thread of its own keeps to the deadline far
		// closer than time.Sleep, which overshoots by up to a millisecond.
		runtime.LockOSThread()
		for p := range q {
			ts := unix.NsecToTimespec(p.due)
			for unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil) == unix.EINTR {
			}
			if _, err := unix.Write(to, p.data); err != nil {
				l.dropped.Add(1)
			}
		}
	}()
	buf := make([]byte, 65536)
	for {
		n, err := unix.Read(from, buf)
		if err != nil {
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			close(q)
			return
		}
		l.packets.Add(1)
		select {
		case q <- packet{monoNow() + l.oneWay.Nanoseconds(), append([]byte(nil), buf[:n]...)}:
		default:
			l.dropped.Add(1)
		}
	}
}

// listenInNS opens a TCP listener in the namespace: from a thread of its
// own that joins the namespace and is then thrown away (it ends locked),
// so no other goroutine runs there. The socket stays in the namespace.
func (l *link) listenInNS(addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open("/var/run/netns/" + l.ns)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", l.ns, err)}
			return
		}
		ln, err := net.Listen("tcp4", addr)
		ch <- result{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}

// close removes the namespace and closes the devices' fds, which removes
// the devices (they are not persistent).
func (l *link) close() {
	if l == nil {
		return
	}
	if err := ipCmd("netns", "delete", l.ns); err != nil && !strings.Contains(err.Error(), "No such file") {
		fmt.Fprintln(os.Stderr, "bench/prefetch: cleanup:", err)
	}
	for _, fd := range []int{l.hostFd, l.nsFd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// backend is the server in the namespace: accept, read a line, answer
// "pong", close. It counts what it accepted and what it answered; the
// difference is connections that never sent a request — spares made and
// not used.
type backend struct {
	ln               net.Listener
	accepts, answers atomic.Int64
}

func (b *backend) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.accepts.Add(1)
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				return
			}
			if _, err := c.Write([]byte("pong\n")); err == nil {
				b.answers.Add(1)
			}
		}()
	}
}

// monoNow is CLOCK_MONOTONIC in nanoseconds.
func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
