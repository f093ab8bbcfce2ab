package main

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// peers is every long-running process of the run, for CPU accounting.
type peers struct {
	backend, agent, haproxy *peer.Process
}

// cpuMark is a reading of the CPU clocks a run is measured from.
type cpuMark struct {
	backend, agent, haproxy float64
	self, busy, kernel      float64
	at                      time.Time
}

func (ps *peers) mark() cpuMark {
	return cpuMark{
		backend: ps.backend.CPUSeconds(), agent: ps.agent.CPUSeconds(), haproxy: ps.haproxy.CPUSeconds(),
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
		backend: ps.backend.CPUSeconds() - m.backend,
		agent:   ps.agent.CPUSeconds() - m.agent,
		haproxy: ps.haproxy.CPUSeconds() - m.haproxy,
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
