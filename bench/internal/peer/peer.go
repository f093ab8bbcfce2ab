// Package peer runs the processes the end-to-end benchmarks start: the
// Discotech server, agent or router under test and the peers it is measured
// against (etcd, ZooKeeper, dnsmasq, nginx, haproxy). Every benchmark starts
// its peers the same way: in its own process group with a parent-death
// signal, in a directory of the run, its output in a log whose end goes
// into error messages; it waits until the peer is ready, reads its CPU time
// while it runs, and stops it.
package peer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/discotech/disco/bench/internal/sysstat"
)

// StopGrace is how long Stop waits for a peer to exit after SIGTERM before
// it kills it.
const StopGrace = 10 * time.Second

// ReadyTimeout is how long WaitReady polls a peer before it gives up, and
// attemptTimeout how long one poll may take.
const (
	ReadyTimeout   = 30 * time.Second
	attemptTimeout = 2 * time.Second
)

// logLines is how many of a peer's last log lines an error quotes.
const logLines = 15

// Process is a peer the benchmark started. Its methods may be called from
// any goroutine.
type Process struct {
	name string
	dir  string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed

	stopOnce sync.Once
}

// SysProcAttr puts a child of the benchmark — a peer, or a load generator
// such as wrk — in its own process group, so that a Ctrl-C at the terminal
// reaches only the benchmark, which then stops its children itself; and has
// the kernel kill the child if the benchmark dies. (A peer that changes its
// user or group loses the parent-death signal: dnsmasq is told to stay the
// benchmark's user.)
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Start runs bin with args as the peer called name (as errors and logs
// call it: "etcd", "nginx"). dir, which must exist, is its working
// directory and holds its log, dir/<name>.log, which gets both its stdout
// and its stderr. The environment is the benchmark's. A relative bin is
// taken from the benchmark's working directory, not dir.
//
// Stop does not remove dir: the benchmark owns it, and removes it with the
// run's directory (or keeps it, to be read after the run).
func Start(name, dir, bin string, args ...string) (*Process, error) {
	return StartEnv(name, dir, nil, bin, args...)
}

// StartEnv is Start with env ("GOMAXPROCS=1") added to the benchmark's
// environment.
func StartEnv(name, dir string, env []string, bin string, args ...string) (*Process, error) {
	if strings.ContainsRune(bin, filepath.Separator) {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		bin = abs
	}
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = SysProcAttr()
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &Process{name: name, dir: dir, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Name is the name the peer was started with.
func (p *Process) Name() string { return p.name }

// Dir is the peer's directory.
func (p *Process) Dir() string { return p.dir }

// Pid is the peer's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stop asks the peer to exit (SIGTERM), kills it after StopGrace, and
// closes its log. It returns once the process has exited. It is safe to
// call more than once, and on nil.
func (p *Process) Stop() {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(StopGrace):
			fmt.Fprintf(os.Stderr, "%s: still running %s after SIGTERM; killing it\n", p.name, StopGrace)
			p.cmd.Process.Kill()
			<-p.done
		}
		p.log.Close()
	})
}

// Err is nil while the peer runs. Once it has exited, Err says so, with
// its exit status and the end of its log.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); its log ends with:\n%s", p.name, p.err, p.LogTail())
	default:
		return nil
	}
}

// LogTail returns the last lines of the peer's log, for error messages.
func (p *Process) LogTail() string {
	b, _ := os.ReadFile(p.log.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-logLines):], "\n")
}

// WaitReady calls ready every 50ms until it returns nil, the peer exits or
// ReadyTimeout passes; each call's context ends after 2s. what says what
// ready checks, for the error: "serving", "answering DNS".
func (p *Process) WaitReady(ctx context.Context, what string, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		err := ready(actx)
		acancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before %s (%v); its log ends with:\n%s", p.name, what, p.err, p.LogTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s: not %s after %s (%v); its log ends with:\n%s", p.name, what, ReadyTimeout, err, p.LogTail())
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// CPUSeconds is the CPU time (user + system) the peer has used, with that
// of its children (nginx's workers): read from /proc while it runs, from
// its exit status once it has exited. It is 0 on nil.
func (p *Process) CPUSeconds() float64 {
	if p == nil {
		return 0
	}
	select {
	case <-p.done:
		return ExitedCPU(p.cmd.ProcessState)
	default:
		return sysstat.TreeCPUSeconds(p.Pid())
	}
}

// ExitedCPU is the CPU time (user + system) an exited child used, with that
// of the children it reaped; 0 for nil.
func ExitedCPU(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return ps.UserTime().Seconds() + ps.SystemTime().Seconds()
}

// RSSBytes is the peer's resident set size; 0 when it cannot be read.
func (p *Process) RSSBytes() float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

// HTTPReady is a WaitReady check: GET url answers 200 with a body that
// holds want (anything, when want is empty). Each GET is on a connection
// of its own, closed after it, so that no idle connection is left for the
// peer to count.
func HTTPReady(url, want string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Close = true
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		switch {
		case err != nil:
			return fmt.Errorf("GET %s: %w", url, err)
		case resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)):
			return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, firstBytes(body, 200))
		}
		return nil
	}
}

func firstBytes(b []byte, n int) []byte {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		return append(b[:n:n], "…"...)
	}
	return b
}

// StartDiscoServer starts `disco server` (bin) as the peer name in dir, on
// free loopback ports, raft on one machine, with args added, and waits
// until its /readyz answers. It returns the process and the API's base URL.
func StartDiscoServer(ctx context.Context, name, dir, bin string, args ...string) (*Process, string, error) {
	httpAddr, err := sysstat.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	raftAddr, err := sysstat.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := Start(name, dir, bin, append([]string{"server",
		"--data-dir", filepath.Join(dir, "data"),
		"--http", httpAddr, "--raft", raftAddr, "--raft-multiplier", "1",
		"--log-level", "warn"}, args...)...)
	if err != nil {
		return nil, "", err
	}
	base := "http://" + httpAddr
	if err := p.WaitReady(ctx, "ready", HTTPReady(base+"/readyz", "")); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, base, nil
}
