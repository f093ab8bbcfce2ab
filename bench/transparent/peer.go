package main

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// proc is a long-running process the benchmark started — nginx, the agent,
// haproxy — with its output in a log file in the run's directory. stop
// ends it.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed

	stopOnce sync.Once
}

// sysProcAttr puts a child in its own process group (a Ctrl-C at the
// terminal reaches only the benchmark, which then stops its children
// itself) and has the kernel kill it if the benchmark dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// startProc runs bin with args, its output going to dir/<name>.log.
func startProc(name, dir, bin string, env []string, args ...string) (*proc, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop asks the process to exit (SIGTERM) and kills it after 10s. It is
// safe to call more than once, and on nil.
func (p *proc) stop() {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			fmt.Fprintf(os.Stderr, "%s: still running 10s after SIGTERM; killing it\n", p.name)
			p.cmd.Process.Kill()
			<-p.done
		}
		p.log.Close()
	})
}

// logTail returns the last lines of the process's log, for error messages.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// waitFor polls ready every 50ms until it says yes, the process exits or
// 30s pass.
func (p *proc) waitFor(ctx context.Context, what string, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
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

// cpuSeconds is the CPU time (user + system) the process has used; 0 for
// nil.
func (p *proc) cpuSeconds() float64 {
	if p == nil {
		return 0
	}
	return sysstat.ProcCPUSeconds(p.pid())
}

// exitedCPU is the CPU time an exited child used (user + system).
func exitedCPU(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return ps.UserTime().Seconds() + ps.SystemTime().Seconds()
}

// peers is every long-running process of the run, for CPU accounting.
type peers struct {
	backend, agent, haproxy *proc
}

// cpuMark is a reading of the CPU clocks a run is measured from.
type cpuMark struct {
	backend, agent, haproxy float64
	self, busy, kernel      float64
	at                      time.Time
}

func (ps *peers) mark() cpuMark {
	return cpuMark{
		backend: ps.backend.cpuSeconds(), agent: ps.agent.cpuSeconds(), haproxy: ps.haproxy.cpuSeconds(),
		self: sysstat.SelfCPUSeconds(), busy: sysstat.MachineBusySeconds(), kernel: sysstat.KernelThreadsCPU(), at: time.Now(),
	}
}

// cpuSplit is the CPU time each party used during a run. The load
// generator, the backend and the proxy share the machine's cores.
type cpuSplit struct {
	backend, agent, haproxy float64
	load                    float64 // the load generator (wrk, or the connect benchmark)
	self                    float64 // the benchmark itself (idle while wrk runs)
	other                   float64 // everything else: other processes
	wall                    time.Duration
}

// since is the cpuSplit from m to now; load is what the load generator,
// a child that has exited, used. other is what the machine was busy with
// besides every process of the run and the kernel's threads: other
// processes, however short-lived.
//
// With tick-based CPU accounting (Debian's kernels) a softirq is charged to
// the process it interrupted; loopback TCP's delivery to the other side's
// socket mostly runs in the sender's context, so each party's figure
// includes some of the delivery of what it sends.
func (ps *peers) since(m cpuMark, load float64) cpuSplit {
	c := cpuSplit{
		backend: ps.backend.cpuSeconds() - m.backend,
		agent:   ps.agent.cpuSeconds() - m.agent,
		haproxy: ps.haproxy.cpuSeconds() - m.haproxy,
		load:    load,
		self:    sysstat.SelfCPUSeconds() - m.self,
		wall:    time.Since(m.at),
	}
	ours := c.backend + c.agent + c.haproxy + c.load + c.self
	c.other = max(sysstat.MachineBusySeconds()-m.busy-(sysstat.KernelThreadsCPU()-m.kernel)-ours, 0)
	return c
}

func (c *cpuSplit) add(d cpuSplit) {
	c.backend += d.backend
	c.agent += d.agent
	c.haproxy += d.haproxy
	c.load += d.load
	c.self += d.self
	c.other += d.other
	c.wall += d.wall
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// refused reports whether a TCP connect to addr is refused: nothing
// listens there.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// findBin returns flagValue if set, else name on PATH or in /usr/sbin.
func findBin(flagValue, name, pkg string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if p := "/usr/sbin/" + name; fileExists(p) {
		return p, nil
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/sbin: apt-get install %s (or pass -%s PATH, or leave it out with -only)", name, pkg, name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
