package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// perfResult is what one dnsperf run reported, and the CPU time used
// meanwhile.
type perfResult struct {
	sent, completed, lost float64
	rcodes                map[string]float64 // response codes, as dnsperf names them
	qps                   float64
	avgLat, maxLat        float64 // seconds
	stddev                float64
	reqSize, respSize     float64 // average packet sizes, bytes
	serverDrops           int64   // queries dropped at the server's socket, its receive buffer full
	own                   float64 // dnsperf's own CPU time (in cpu.bench too)
	cpu                   cpuSplit
}

// failed counts every answer but NOERROR.
func (r perfResult) failed() float64 {
	var n float64
	for code, c := range r.rcodes {
		if code != "NOERROR" {
			n += c
		}
	}
	return n
}

// dnsperfArgs are how dnsperf loads a server.
type dnsperfArgs struct {
	file                         string
	duration                     time.Duration
	clients, outstanding, thread int
	timeout                      time.Duration
	edns                         bool
}

// runDnsperf runs dnsperf against s and parses its statistics.
func runDnsperf(parent context.Context, bin string, s *server, a dnsperfArgs) (perfResult, error) {
	args := []string{
		"-s", "127.0.0.1", "-p", portOf(s.dns), "-d", a.file,
		"-l", strconv.FormatFloat(a.duration.Seconds(), 'f', -1, 64),
		"-c", strconv.Itoa(a.clients), "-q", strconv.Itoa(a.outstanding), "-T", strconv.Itoa(a.thread),
		"-t", strconv.FormatFloat(a.timeout.Seconds(), 'f', -1, 64),
	}
	if a.edns {
		args = append(args, "-e")
	}
	// Bounded: the run's length, the wait for its last answers, and slack.
	ctx, cancel := context.WithTimeout(parent, a.duration+a.timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = peer.SysProcAttr()
	drops := udpDrops(s.dnsPort())
	cpu := startCPU(s)
	err := cmd.Run()
	var own float64 // dnsperf's CPU time
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			own = sysstat.Seconds(ru.Utime) + sysstat.Seconds(ru.Stime)
		}
	}
	split := cpu(own)
	if err := parent.Err(); err != nil {
		return perfResult{}, err
	}
	if ctx.Err() != nil {
		return perfResult{}, fmt.Errorf("dnsperf did not finish in time:\n%s", lastLines(out.String(), 10))
	}
	if err != nil {
		return perfResult{}, fmt.Errorf("dnsperf %s: %w\n%s", strings.Join(args, " "), err, lastLines(out.String(), 15))
	}
	r, err := parseDnsperf(out.String())
	if err != nil {
		return perfResult{}, fmt.Errorf("dnsperf %s: %w\n%s", strings.Join(args, " "), err, lastLines(out.String(), 15))
	}
	r.cpu, r.own = split, own
	r.serverDrops = udpDrops(s.dnsPort()) - drops
	if err := s.Err(); err != nil {
		return perfResult{}, fmt.Errorf("during the run: %w", err)
	}
	return r, nil
}

// parseDnsperf reads dnsperf's statistics:
//
//	Queries sent:         389768
//	Queries completed:    389761 (100.00%)
//	Queries lost:         7 (0.00%)
//	Response codes:       NOERROR 389761 (100.00%)
//	Average packet size:  request 38, response 147
//	Queries per second:   129872.453689
//	Average Latency (s):  0.001394 (min 0.000026, max 0.003832)
//	Latency StdDev (s):   0.000454
func parseDnsperf(out string) (perfResult, error) {
	r := perfResult{rcodes: map[string]float64{}}
	found := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		f := strings.Fields(strings.NewReplacer(",", " ", "(", " ", ")", " ").Replace(v))
		num := func(i int) float64 {
			if i >= len(f) {
				return 0
			}
			x, _ := strconv.ParseFloat(f[i], 64)
			return x
		}
		switch k {
		case "Queries sent":
			r.sent = num(0)
		case "Queries completed":
			r.completed = num(0)
		case "Queries lost":
			r.lost = num(0)
		case "Response codes":
			for i := 0; i+1 < len(f); i += 3 { // NOERROR 389761 100.00%
				r.rcodes[f[i]] = num(i + 1)
			}
		case "Average packet size":
			for i := 0; i+1 < len(f); i += 2 { // request 38 response 147
				switch f[i] {
				case "request":
					r.reqSize = num(i + 1)
				case "response":
					r.respSize = num(i + 1)
				}
			}
		case "Queries per second":
			r.qps = num(0)
		case "Average Latency (s)":
			r.avgLat = num(0)
			for i := 1; i+1 < len(f); i++ {
				if f[i] == "max" {
					r.maxLat = num(i + 1)
				}
			}
		case "Latency StdDev (s)":
			r.stddev = num(0)
		default:
			continue
		}
		found[k] = true
	}
	for _, k := range []string{"Queries sent", "Queries completed", "Queries lost", "Queries per second"} {
		if !found[k] {
			return r, fmt.Errorf("no %q in dnsperf's output", k)
		}
	}
	return r, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
