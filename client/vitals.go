package client

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/internal/httpstatus"
)

// Vitals is what a backend reports about itself (the contract's vitals
// protocol), served by its ServeHTTP:
//
//	GET /metrics    the JSON routers and agents poll: {"ready":true,"requests_in_progress":3,...}
//	GET /telemetry  the same figures in Prometheus text format
//
// The process fills in CPU, memory and uptime; Middleware counts requests
// in progress and failed responses (5xx); the program says whether it is
// ready (SetReady) and when it is shedding load (SetBackoff). Routers and
// agents weigh the backend by these figures, and stop sending it new
// requests within a poll of ready turning false.
type Vitals struct {
	version  string
	started  time.Time
	ready    atomic.Bool
	inflight atomic.Int64
	failed   atomic.Uint64
	backoff  atomic.Int64
	peers    atomic.Int64

	mu      sync.Mutex
	lastCPU time.Duration // process CPU time at the last reading
	lastAt  time.Time
	cpu     float64
}

// NewVitals returns vitals for a process of the given version, ready.
func NewVitals(version string) *Vitals {
	v := &Vitals{version: version, started: time.Now()}
	v.ready.Store(true)
	v.lastCPU, v.lastAt = processCPU(), v.started
	return v
}

// SetReady says whether the backend takes new requests; false drains it.
func (v *Vitals) SetReady(ready bool) { v.ready.Store(ready) }

// Ready reports what SetReady said last.
func (v *Vitals) Ready() bool { return v.ready.Load() }

// SetBackoff reports n requests being shed or delayed: balancers cut the
// backend's weight while it is above 0.
func (v *Vitals) SetBackoff(n int64) { v.backoff.Store(n) }

// SetPeers reports the number of connected peers (clients, replicas).
func (v *Vitals) SetPeers(n int64) { v.peers.Store(n) }

// InFlight is the number of requests Middleware has in progress.
func (v *Vitals) InFlight() int64 { return v.inflight.Load() }

// Middleware counts h's requests in progress and its failed responses
// (status 500 and above).
func (v *Vitals) Middleware(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.inflight.Add(1)
		defer v.inflight.Add(-1)
		sw := httpstatus.New(w)
		defer func() {
			if sw.Status >= 500 {
				v.failed.Add(1)
			}
		}()
		h.ServeHTTP(sw, r)
	})
}

// Snapshot reads the figures now. CPU usage is the process's share of the
// machine's CPUs since the previous snapshot; memory usage its resident
// memory as a share of the machine's (or of its cgroup's limit).
func (v *Vitals) Snapshot() catalog.Vitals {
	now := time.Now()
	cpuNow := processCPU()
	v.mu.Lock()
	if wall := now.Sub(v.lastAt); wall >= 100*time.Millisecond {
		v.cpu = 100 * float64(cpuNow-v.lastCPU) / float64(wall) / float64(runtime.NumCPU())
		v.lastCPU, v.lastAt = cpuNow, now
	}
	cpu := v.cpu
	v.mu.Unlock()
	return catalog.Vitals{
		Ready:              v.ready.Load(),
		RequestsInProgress: v.inflight.Load(),
		CPUUsage:           round2(min(max(cpu, 0), 100)),
		MemoryUsage:        round2(memoryUsage()),
		FailedResponses:    v.failed.Load(),
		ConnectedPeers:     v.peers.Load(),
		BackoffRequests:    v.backoff.Load(),
		UptimeSeconds:      round2(now.Sub(v.started).Seconds()),
		Version:            v.version,
	}
}

func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }

// ServeHTTP serves GET /metrics (JSON) and GET /telemetry (Prometheus
// text); mount it on the backend's metrics port.
func (v *Vitals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "vitals: use GET", http.StatusMethodNotAllowed)
		return
	}
	s := v.Snapshot()
	switch r.URL.Path {
	case "/metrics":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s)
	case "/telemetry":
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		ready := 0
		if s.Ready {
			ready = 1
		}
		for _, m := range []struct {
			name, typ, help string
			value           string
		}{
			{"disco_backend_ready", "gauge", "1 while the backend takes new requests.", strconv.Itoa(ready)},
			{"disco_backend_requests_in_progress", "gauge", "Requests being served.", strconv.FormatInt(s.RequestsInProgress, 10)},
			{"disco_backend_cpu_usage_percent", "gauge", "The process's share of the machine's CPUs.", strconv.FormatFloat(s.CPUUsage, 'f', -1, 64)},
			{"disco_backend_memory_usage_percent", "gauge", "Resident memory as a share of the machine's or the cgroup's.", strconv.FormatFloat(s.MemoryUsage, 'f', -1, 64)},
			{"disco_backend_failed_responses_total", "counter", "Responses with a status of 500 or more.", strconv.FormatUint(s.FailedResponses, 10)},
			{"disco_backend_connected_peers", "gauge", "Connected peers.", strconv.FormatInt(s.ConnectedPeers, 10)},
			{"disco_backend_backoff_requests", "gauge", "Requests being shed or delayed.", strconv.FormatInt(s.BackoffRequests, 10)},
			{"disco_backend_uptime_seconds", "gauge", "Seconds since the process started.", strconv.FormatFloat(s.UptimeSeconds, 'f', -1, 64)},
		} {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", m.name, m.help, m.name, m.typ, m.name, m.value)
		}
		fmt.Fprintf(w, "# HELP disco_backend_info The backend's version.\n# TYPE disco_backend_info gauge\ndisco_backend_info{version=%q} 1\n", s.Version)
	default:
		http.Error(w, "vitals: GET /metrics (JSON) or /telemetry (Prometheus text)", http.StatusNotFound)
	}
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memoryUsage is the process's resident memory as a percentage of the
// cgroup's memory limit, or of the machine's memory; 0 when unknown.
func memoryUsage() float64 {
	rss := residentBytes()
	if rss <= 0 {
		return 0
	}
	total := cgroupLimit()
	if total <= 0 {
		total = machineMemory()
	}
	if total <= 0 {
		return 0
	}
	return min(100*float64(rss)/float64(total), 100)
}

func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func cgroupLimit() int64 {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil { // "max": no limit
		return 0
	}
	return n
}

func machineMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
