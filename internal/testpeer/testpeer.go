// Package testpeer runs the peers that tests talk to (the disco binary,
// etcd, ZooKeeper, dnsmasq) as real processes on loopback: it finds free
// ports, looks the programs up, starts a process whose output is kept and
// shown when the test fails and which is killed when the test ends, and
// polls until a peer is ready. What is particular to one peer (its flags,
// its configuration, how to ask it whether it is up) stays with its tests.
package testpeer

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// poll is how often WaitUntil and WaitReady look again.
const poll = 10 * time.Millisecond

// FreePort returns a loopback address, 127.0.0.1:port, whose TCP port
// nothing listens on right now.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreeUDPTCPPort returns a loopback address, 127.0.0.1:port, whose port is
// free on UDP and TCP alike, as a DNS server needs.
func FreeUDPTCPPort(t testing.TB) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free on both UDP and TCP")
	return ""
}

// Need returns the path of the program cmd, found on PATH or else in
// /usr/sbin or /sbin (where Debian puts daemons, often off a user's PATH),
// and fails the test when there is none: .ci/deps installs what the tests
// need.
func Need(t testing.TB, cmd string) string {
	t.Helper()
	if p, err := exec.LookPath(cmd); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, cmd)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s is not installed: run .ci/deps (make test does) to install it", cmd)
	return ""
}

// Process is a program a test started.
type Process struct {
	name string // the program and its arguments, for messages
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{} // closed once the process has exited
}

// Start starts the program name with args, keeping what it writes to
// stdout and stderr. When the test ends it kills the process with SIGKILL,
// waits until it has exited, and logs its output if the test failed.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p := &Process{
		name: strings.Join(append([]string{filepath.Base(name)}, args...), " "),
		cmd:  exec.Command(name, args...),
		out:  &Buffer{},
		done: make(chan struct{}),
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill9()
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.Output())
		}
	})
	return p
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output returns what the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill9 kills the process with SIGKILL, as a crash would, waits until it
// has exited, and reports whether it was still running.
func (p *Process) Kill9() bool {
	err := p.cmd.Process.Kill()
	<-p.done
	return err == nil
}

// WaitReady polls ready until it holds. It returns an error, with the
// process's output, if the process exits first or timeout passes.
func (p *Process) WaitReady(timeout time.Duration, ready func() bool) error {
	tick := time.NewTicker(poll)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !ready() {
		select {
		case <-tick.C:
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready:\n%s", p.name, p.Output())
		case <-deadline.C:
			return fmt.Errorf("%s was not ready after %s:\n%s", p.name, timeout, p.Output())
		}
	}
	return nil
}

// WaitUntil polls cond until it holds, failing the test after timeout.
func WaitUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(poll) // polling; the deadline bounds it
	}
}

// Buffer is a bytes.Buffer that a process writes while a test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TCPServer is a server written by hand on a loopback listener, for tests
// that need a peer doing something net/http would not: serve gets each
// connection, which is closed when serve returns. It returns the
// listener's address; the listener closes when the test ends.
func TCPServer(t testing.TB, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}
