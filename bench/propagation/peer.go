package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// peer is a process the benchmark started: a registry, etcd, ZooKeeper or
// dnsmasq, its output going to a log file in its own temporary directory.
// stop ends the process and removes the directory.
type peer struct {
	name string
	dir  string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed

	stopOnce sync.Once
}

// startPeer runs bin with args in dir, its output going to dir/<name>.log.
func startPeer(name, dir, bin string, args ...string) (*peer, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C at the terminal reaches only the
		// benchmark, which then stops its peers itself.
		Setpgid: true,
		// If the benchmark is killed outright, the kernel kills the peer.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &peer{name: name, dir: dir, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid is the peer's process id.
func (p *peer) pid() int { return p.cmd.Process.Pid }

// stop asks the peer to exit (SIGTERM), kills it after 5s, and removes its
// directory. It is safe to call more than once.
func (p *peer) stop() {
	p.stopOnce.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			progress("%s: still running 5s after SIGTERM; killing it", p.name)
			p.cmd.Process.Kill()
			<-p.done
		}
		p.log.Close()
		os.RemoveAll(p.dir)
	})
}

// exited reports whether the peer has exited.
func (p *peer) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the peer's log, for error messages.
func (p *peer) logTail() string {
	b, _ := os.ReadFile(p.log.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// waitFor calls ready every 50ms until it succeeds, the peer exits, or 30s
// pass.
func (p *peer) waitFor(ctx context.Context, what string, ready func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		err := ready(rctx)
		rcancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before %s (%v); its log ends with:\n%s", p.name, what, p.err, p.logTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s: not %s after 30s (%v); its log ends with:\n%s", p.name, what, err, p.logTail())
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// freePort returns a loopback port free for both TCP and UDP right now.
func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("no loopback port free for both TCP and UDP")
}

// get fetches url and returns the status and body.
func get(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// httpReady is a waitFor check: GET url answers 200 and, when want is not
// empty, a body holding it.
func httpReady(url, want string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		status, body, err := get(ctx, url)
		switch {
		case err != nil:
			return err
		case status != http.StatusOK || !bytes.Contains(body, []byte(want)):
			return fmt.Errorf("GET %s: %d %s", url, status, bytes.TrimSpace(body))
		}
		return nil
	}
}

// firstLine runs bin with args and returns the first line of its output,
// for version strings.
func firstLine(bin string, args ...string) string {
	b, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(first)
}

// cpuSeconds is the CPU time (user + system) the peer has used, from
// /proc (USER_HZ is 100 on every Linux this runs on).
func (p *peer) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields are counted after
	// its closing parenthesis. utime and stime are fields 14 and 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}
