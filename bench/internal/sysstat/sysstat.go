// Package sysstat reads what the end-to-end benchmarks report about the
// machine while they run: CPU time of a process, of the benchmark itself,
// of the kernel's threads and of the whole machine, from /proc, so that
// each figure can be read per CPU-second and a run disturbed by other work
// is flagged; and a free loopback port for the peers they start.
package sysstat

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of /proc's CPU times: 100 on every Linux these run on
// (x86-64, arm64).
const userHZ = 100

// ProcCPUSeconds is the CPU time (user + system) process pid has used, with
// that of the children it reaped; 0 when it cannot be read.
func ProcCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count fields after its
	// closing parenthesis. utime, stime, cutime, cstime are fields 14-17.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 15 {
		return 0
	}
	var t float64
	for _, v := range f[11:15] {
		n, _ := strconv.ParseFloat(v, 64)
		t += n
	}
	return t / userHZ
}

// SelfCPUSeconds is the CPU time the calling process has used.
func SelfCPUSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return Seconds(ru.Utime) + Seconds(ru.Stime)
}

// Seconds converts a Timeval.
func Seconds(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// MachineBusySeconds is the CPU time the whole machine has been busy:
// /proc/stat's "cpu" line but idle, iowait, steal and guest time (which
// user already counts).
func MachineBusySeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(first)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for _, v := range f[1:8] { // user nice system idle iowait irq softirq
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	idle, _ := strconv.ParseFloat(f[4], 64)
	iowait, _ := strconv.ParseFloat(f[5], 64)
	return (busy - idle - iowait) / userHZ
}

// KernelThreadsCPU is the CPU time of the kernel's threads (kthreadd's
// children): ksoftirqd, to which the kernel defers packet work under load,
// and kworkers. It is the kernel's share of a benchmark's own traffic, not
// another process's load.
func KernelThreadsCPU() float64 {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var t float64
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 || f[1] != "2" { // ppid: kthreadd
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		s, _ := strconv.ParseFloat(f[12], 64)
		t += (u + s) / userHZ
	}
	return t
}

// FreeAddr returns a loopback address on which nothing listens right now,
// over TCP or UDP.
func FreeAddr() (string, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr, nil
		}
	}
	return "", errors.New("no loopback port free for both TCP and UDP")
}

// TreeCPUSeconds is ProcCPUSeconds of pid and of each of its live
// descendants: a server that forks workers (nginx's master and its
// worker_processes) is measured whole.
func TreeCPUSeconds(pid int) float64 {
	var t float64
	for _, p := range tree(pid) {
		t += ProcCPUSeconds(p)
	}
	return t
}

// tree is pid and its live descendants.
func tree(pid int) []int {
	pids := []int{pid}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, c := range strings.Fields(string(b)) {
			if child, err := strconv.Atoi(c); err == nil {
				pids = append(pids, tree(child)...)
			}
		}
	}
	return pids
}

// Pin confines every thread of pid and of its live descendants to cpus.
// Threads and processes they start later inherit it.
func Pin(pid int, cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	for _, p := range tree(pid) {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		if err != nil {
			return err
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("pin thread %d of %d to CPUs %v: %w", tid, p, cpus, err)
			}
		}
	}
	return nil
}

// CPUModel is the machine's CPU as /proc/cpuinfo names it ("AMD EPYC
// 7B13"), or "unknown CPU".
func CPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// Kernel is "Linux" and the kernel's release, or "" when it cannot be read.
func Kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return "Linux " + strings.TrimSpace(string(b))
}
