package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/peer"
)

// connectSource is the C program that times connect() (c/connect.c). It
// lives in a directory of its own because the go tool refuses C files in a
// package that does not use cgo.
//
//go:embed c/connect.c
var connectSource []byte

// buildConnect compiles the connect benchmark into dir.
func buildConnect(ctx context.Context, cc, dir string) (string, error) {
	src := filepath.Join(dir, "connect.c")
	bin := filepath.Join(dir, "connect")
	if err := os.WriteFile(src, connectSource, 0o644); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-o", bin, src, "-ldl").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s connect.c: %w\n%s", cc, err, out)
	}
	return bin, nil
}

// connectVariants are the timings the benchmark reports, in order: the
// names the C program prints, and what they are.
var connectVariants = []struct{ key, what string }{
	{"plain", "no shim → backend (a process of its own)"},
	{"libc", "shim loaded, glibc's connect → backend (bypassing the hook)"},
	{"real", "shim → backend's own address (looked at, passed through)"},
	{"magic", "shim → magic address (rewritten to the backend)"},
}

// connectResult is one socket type's timings: nanoseconds per connect, by
// variant.
type connectResult struct {
	proto   string // "tcp" or "udp"
	samples map[string][]float64
	cpu     cpuSplit
}

// latStats are the figures of a set of timings.
type latStats struct{ p50, p90, p99, mean float64 }

func statsOf(xs []float64) latStats {
	if len(xs) == 0 {
		return latStats{math.NaN(), math.NaN(), math.NaN(), math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	at := func(q float64) float64 { return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)] }
	var sum float64
	for _, x := range s {
		sum += x
	}
	return latStats{p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: sum / float64(len(s))}
}

// connectChunks is how many pieces each process's share is cut into; the
// processes with and without the shim take turns, so that a change in the
// machine's state during the measurement falls on both.
const connectChunks = 4

// runConnect times n connects of each variant to the backend, over proto.
func runConnect(ctx context.Context, ps *peers, bin string, sh *shimSetup, backendAddr, proto string, n int) (*connectResult, error) {
	ap := netip.MustParseAddrPort(backendAddr)
	port := strconv.Itoa(int(ap.Port()))
	res := &connectResult{proto: proto, samples: map[string][]float64{}}
	plainArgs := func(k int) []string { return []string{proto, strconv.Itoa(k), ap.Addr().String(), port} }
	shimArgs := func(k int) []string { return append(plainArgs(k), sh.magic.String()) }
	done := 0
	for c := range connectChunks {
		k := n/connectChunks + map[bool]int{true: n % connectChunks}[c == 0]
		if k == 0 {
			continue
		}
		type run struct {
			env  []string
			args []string
		}
		runs := []run{{os.Environ(), plainArgs(k)}, {sh.env(), shimArgs(k)}}
		if c%2 == 1 {
			runs[0], runs[1] = runs[1], runs[0]
		}
		for _, r := range runs {
			m := ps.mark()
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			cmd := exec.CommandContext(ctx, bin, r.args...)
			cmd.Env = r.env
			cmd.SysProcAttr = peer.SysProcAttr()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			cancel()
			res.cpu.add(ps.since(m, peer.ExitedCPU(cmd.ProcessState)))
			if err != nil {
				return nil, fmt.Errorf("connect %s: %w\n%s", strings.Join(r.args, " "), err, stderr.String())
			}
			sc := bufio.NewScanner(&stdout)
			for sc.Scan() {
				name, v, ok := strings.Cut(sc.Text(), " ")
				ns, err := strconv.ParseFloat(v, 64)
				if !ok || err != nil {
					return nil, fmt.Errorf("connect %s: unexpected line %q", strings.Join(r.args, " "), sc.Text())
				}
				res.samples[name] = append(res.samples[name], ns)
			}
		}
		done += k
	}
	for _, v := range connectVariants {
		if got := len(res.samples[v.key]); got != done {
			return nil, fmt.Errorf("connect %s: %d timings of %s, want %d", proto, got, v.key, done)
		}
	}
	return res, nil
}
