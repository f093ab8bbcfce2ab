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

// server is a DNS server the benchmark started — Discotech or dnsmasq —
// with its own temporary directory for data, configuration and log. stop
// ends the process and removes the directory.
type server struct {
	name string // "discotech" or "dnsmasq"
	dns  string // 127.0.0.1:port it answers DNS on
	dir  string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed

	stopOnce sync.Once
}

// startServer runs bin with args, its output going to dir/<name>.log.
func startServer(name, dns, dir, bin string, args ...string) (*server, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C at the terminal reaches only the
		// benchmark, which then stops the servers itself.
		Setpgid: true,
		// If the benchmark is killed, the kernel kills the server.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	s := &server{name: name, dns: dns, dir: dir, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop asks the server to exit (SIGTERM), kills it after 10s, and removes
// its directory. It is safe to call more than once.
func (s *server) stop() {
	s.stopOnce.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			fmt.Fprintf(os.Stderr, "%s: still running 10s after SIGTERM; killing it\n", s.name)
			s.cmd.Process.Kill()
			<-s.done
		}
		s.log.Close()
		os.RemoveAll(s.dir)
	})
}

// exited reports whether the server has exited, and how.
func (s *server) exited() (bool, error) {
	select {
	case <-s.done:
		return true, s.err
	default:
		return false, nil
	}
}

// logTail returns the last lines of the server's log, for error messages.
func (s *server) logTail() string {
	b, _ := os.ReadFile(s.log.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// waitFor polls ready every 50ms until it says yes, the server exits or 30s
// pass.
func (s *server) waitFor(ctx context.Context, what string, ready func(context.Context) error) error {
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
		case <-s.done:
			return fmt.Errorf("%s exited before %s (%v); its log ends with:\n%s", s.name, what, s.err, s.logTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s: not %s after 30s (%v); its log ends with:\n%s", s.name, what, err, s.logTail())
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// cpuSeconds is the CPU time (user + system) the server has used, with
// that of any children it reaped (dnsmasq forks one per TCP connection;
// the benchmark sends UDP only, so there should be none).
func (s *server) cpuSeconds() float64 { return sysstat.ProcCPUSeconds(s.pid()) }

// cpuSplit is the CPU time the server under load, the load generator
// (dnsperf or the benchmark's own client) and other processes on the
// machine used during a run: they share the cores.
type cpuSplit struct {
	server, bench, other float64
	wall                 time.Duration // how long the measurement lasted
}

// cpuMark is a reading to measure a cpuSplit from.
type cpuMark struct {
	server, self, busy, kernel float64
	at                         time.Time
}

func markCPU(serverCPU float64) cpuMark {
	return cpuMark{server: serverCPU, self: sysstat.SelfCPUSeconds(), busy: sysstat.MachineBusySeconds(), kernel: sysstat.KernelThreadsCPU(), at: time.Now()}
}

// since is the cpuSplit from m to now. serverCPU is the server's CPU time
// now; extra is CPU the load generator used outside this process
// (dnsperf's). other is what the machine was busy with besides the server,
// the load generator and the kernel's threads: other processes, the idle
// peer server among them, however short-lived.
//
// Much of loopback UDP's work (delivering a datagram to the other side's
// socket, waking its reader) is done by the kernel on the sender's time,
// and with tick-based CPU accounting (no CONFIG_IRQ_TIME_ACCOUNTING, as on
// Debian's kernels) a softirq is charged to the process it interrupted: the
// server's and the load generator's figures include that work, and the
// machine's busy time counts it once.
func (m cpuMark) since(serverCPU, extra float64) cpuSplit {
	c := cpuSplit{
		server: serverCPU - m.server,
		bench:  sysstat.SelfCPUSeconds() - m.self + extra,
		wall:   time.Since(m.at),
	}
	c.other = max(sysstat.MachineBusySeconds()-m.busy-(sysstat.KernelThreadsCPU()-m.kernel)-c.server-c.bench, 0)
	return c
}

// startCPU starts measuring a cpuSplit for the server s; the function it
// returns ends it (see cpuMark.since).
func startCPU(s *server) func(extra float64) cpuSplit {
	m := markCPU(s.cpuSeconds())
	return func(extra float64) cpuSplit { return m.since(s.cpuSeconds(), extra) }
}

// udpDrops adds up the datagrams the kernel dropped, their socket's
// receive buffer being full, on every UDP socket bound to one of ports on
// this machine (/proc/net/udp's "drops" column: a socket's total since it
// was opened).
func udpDrops(ports ...int) int64 {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0
	}
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	var total int64
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 13 {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":") // local_address: 0100007F:9C43
		port, err := strconv.ParseInt(hexPort, 16, 32)
		if !ok || err != nil || !want[int(port)] {
			continue
		}
		n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
		total += n
	}
	return total
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// dnsPort is the port the server answers DNS on.
func (s *server) dnsPort() int {
	p, _ := strconv.Atoi(portOf(s.dns))
	return p
}
