package main

import (
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// server is a DNS server the benchmark started, Discotech or dnsmasq, and
// the address it answers DNS on.
type server struct {
	*peer.Process
	dns string // 127.0.0.1:port
}

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
	m := markCPU(s.CPUSeconds())
	return func(extra float64) cpuSplit { return m.since(s.CPUSeconds(), extra) }
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
