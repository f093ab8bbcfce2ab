package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/nginx"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// backendBody is what every backend answers to GET /.
const backendBody = "ok\n"

// vitalsBody is what every backend answers to GET /metrics: the vitals
// contract's JSON, ready and idle, so that Discotech's router, which polls
// each backend's vitals about every second, finds every backend healthy
// and equal. haproxy and nginx never ask for it.
const vitalsBody = `{"ready":true,"requests_in_progress":0,"cpu_usage":0,"memory_usage":0,"uptime_seconds":1}`

// backends is one nginx process serving the run's backends, each on a
// port of its own, the same for every path.
type backends struct {
	*peer.Process
	addrs []string // 127.0.0.1:port of each
}

// startBackends starts one nginx process (no master, one worker) with n
// server blocks on free loopback ports, each answering GET / with
// backendBody from return 200 and an X-Backend header naming it, so that
// the benchmark can tell which one answered.
func startBackends(ctx context.Context, bin, dir string, n int) (*backends, error) {
	b := &backends{}
	var servers strings.Builder
	for i := range n {
		addr, err := sysstat.FreeAddr()
		if err != nil {
			return nil, err
		}
		b.addrs = append(b.addrs, addr)
		fmt.Fprintf(&servers, `    server {
        listen %[1]s backlog=4096;
        default_type text/plain;
        add_header X-Backend b%[2]d;
        location / {
            return 200 "%[3]s";
        }
        location = /metrics {
            default_type application/json;
            return 200 '%[4]s';
        }
    }
`, addr, i+1, strings.TrimSuffix(backendBody, "\n")+`\n`, vitalsBody)
	}
	p, err := nginx.Start("backends", bin, filepath.Join(dir, "backends"), 1, servers.String())
	if err != nil {
		return nil, err
	}
	b.Process = p
	for _, a := range b.addrs {
		if err := p.WaitReady(ctx, "serving on "+a, peer.HTTPReady("http://"+a+"/", backendBody)); err != nil {
			p.Stop()
			return nil, err
		}
	}
	return b, nil
}

// prepare makes the directory of the proxy called name in the run's
// directory and picks a free loopback address for its traffic.
func prepare(dir, name string) (sub, addr string, err error) {
	sub = filepath.Join(dir, name)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return "", "", err
	}
	addr, err = sysstat.FreeAddr()
	return sub, addr, err
}

// ready waits until a request through p is answered by a backend, and
// returns p as the proxy on addr; it stops p if none is.
func ready(ctx context.Context, p *peer.Process, addr, note string) (*proxy, error) {
	if err := p.WaitReady(ctx, "proxying on "+addr, peer.HTTPReady("http://"+addr+"/", backendBody)); err != nil {
		p.Stop()
		return nil, err
	}
	return &proxy{Process: p, addr: addr, note: note}, nil
}

// proxy is one of the proxies under test, running, in front of the
// backends.
type proxy struct {
	*peer.Process
	addr  string // 127.0.0.1:port it takes traffic on
	note  string // how it runs, for the report
	admin string // the router's admin address
}

// startNginxProxy runs nginx as a reverse proxy: an upstream of the
// backends (round robin, nginx's default) with idle keep-alive
// connections to them, HTTP/1.1 to the backends and the client's
// Connection header dropped, so that those connections are reused. It
// adds the X-Forwarded-For, -Proto and -Host fields Discotech adds, so
// that every proxy does the same work.
// workers is worker_processes; with more than one, nginx runs its master,
// whose workers' CPU time counts as nginx's.
func startNginxProxy(ctx context.Context, bin, dir string, be []string, workers int) (*proxy, error) {
	dir, addr, err := prepare(dir, "nginx")
	if err != nil {
		return nil, err
	}
	var servers strings.Builder
	for _, a := range be {
		fmt.Fprintf(&servers, "        server %s;\n", a)
	}
	p, err := nginx.Start("nginx", bin, dir, workers, fmt.Sprintf(`    upstream backends {
%[1]s        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 120s;
    }
    server {
        listen %[2]s backlog=4096;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }
    }
`, servers.String(), addr))
	if err != nil {
		return nil, err
	}
	return ready(ctx, p, addr, fmt.Sprintf("worker_processes %d, upstream keepalive 1024", workers))
}

// startHaproxy runs haproxy in the foreground in HTTP mode: round robin
// over the backends, keep-alive on both sides, idle server connections
// shared by every client (http-reuse always), nbthread threads. Like
// Discotech it adds X-Forwarded-For, and X-Forwarded-Proto and -Host
// unless the client sent its own.
func startHaproxy(ctx context.Context, bin, dir string, be []string, threads int) (*proxy, error) {
	dir, addr, err := prepare(dir, "haproxy")
	if err != nil {
		return nil, err
	}
	var servers strings.Builder
	for i, a := range be {
		fmt.Fprintf(&servers, "    server b%d %s\n", i+1, a)
	}
	conf := fmt.Sprintf(`# bench/router's haproxy: HTTP mode, round robin over the backends.
global
    nbthread %[1]d
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 120s

frontend in
    bind %[2]s
    option forwardfor
    http-request set-header X-Forwarded-Proto http if !{ req.hdr(x-forwarded-proto) -m found }
    http-request set-header X-Forwarded-Host %%[req.hdr(host)] if !{ req.hdr(x-forwarded-host) -m found }
    default_backend backends

backend backends
    balance roundrobin
    http-reuse always
%[3]s`, threads, addr, servers.String())
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := peer.Start("haproxy", dir, bin, "-db", "-f", file)
	if err != nil {
		return nil, err
	}
	return ready(ctx, p, addr, fmt.Sprintf("nbthread %d, http-reuse always", threads))
}

// startRouter runs `disco router` with no registry (--server ""): its
// backends come only from the announce protocol on its admin port, and it
// keeps no state on disk (--state-dir ""). It
// waits until the admin port answers /healthz, announces each backend
// (POST /register), and waits until a request through the router is
// answered by a backend. procs is its GOMAXPROCS; pprof serves Go's
// profiler on the admin port.
func startRouter(ctx context.Context, bin, dir string, be []string, procs int, pprof bool) (*proxy, error) {
	dir, addr, err := prepare(dir, "discotech")
	if err != nil {
		return nil, err
	}
	admin, err := sysstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"router", "--server", "", "--listen", addr, "--admin", admin, "--access-log", "", "--state-dir", ""}
	if pprof {
		args = append(args, "--pprof")
	}
	p, err := peer.StartEnv("discotech", dir, []string{"GOMAXPROCS=" + strconv.Itoa(procs)}, bin, args...)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*proxy, error) {
		p.Stop()
		return nil, err
	}
	if err := p.WaitReady(ctx, "answering /healthz on "+admin, peer.HTTPReady("http://"+admin+"/healthz", "")); err != nil {
		return fail(err)
	}
	for i, a := range be {
		body := fmt.Sprintf(`{"id":"b%d","address":%q}`, i+1, a)
		if err := post(ctx, "http://"+admin+"/register", body); err != nil {
			return fail(fmt.Errorf("discotech: announce backend %s: %w; its log ends with:\n%s", a, err, p.LogTail()))
		}
	}
	px, err := ready(ctx, p, addr, fmt.Sprintf("GOMAXPROCS=%d, backends announced on %s", procs, admin))
	if px != nil {
		px.admin = admin
	}
	return px, err
}

// profile fetches a CPU profile of the router whose admin port is admin,
// over a run of d that starts now, leaving out its first and last second,
// and writes it to file. The channel gets the outcome once it is written.
func profile(ctx context.Context, admin string, d time.Duration, file string) <-chan error {
	done := make(chan error, 1)
	go func() {
		select {
		case <-ctx.Done():
			done <- ctx.Err()
			return
		case <-time.After(time.Second):
		}
		secs := int(d/time.Second) - 2
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, secs)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		switch {
		case err != nil:
		case resp.StatusCode != http.StatusOK:
			err = fmt.Errorf("GET %s: %s %s", url, resp.Status, bytes.TrimSpace(b))
		default:
			err = os.WriteFile(file, b, 0o644)
		}
		done <- err
	}()
	return done
}

// post sends body as JSON to url and wants 200 or 201.
func post(ctx context.Context, url, body string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Close = true
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("POST %s %s: %s %s", url, body, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// spread sends n requests to addr, one after the other on one keep-alive
// connection, and counts them by the backend that answered (X-Backend), or
// by status when it is not 200: it shows that a path spreads its load over
// every backend.
func spread(ctx context.Context, addr string, n int) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	seen := map[string]int{}
	for range n {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			return nil, err
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			seen["status "+strconv.Itoa(resp.StatusCode)]++
			continue
		}
		seen[resp.Header.Get("X-Backend")]++
	}
	return seen, nil
}
