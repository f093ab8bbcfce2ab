package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/bench/internal/sysstat"
	"github.com/discotech/disco/magicip"
	"github.com/discotech/disco/shmtable"
)

// The magic ranges of the run, both away from the default 127.77.0.0/16
// so that an agent running on the machine is never in the way: the
// benchmark's agent takes its addresses from agentRange, and the table the
// shim reads from shimRange, where nothing listens — a connect there that
// the shim did not rewrite is refused rather than landing somewhere.
var (
	agentRange = netip.MustParsePrefix("127.79.0.0/16")
	shimRange  = netip.MustParsePrefix("127.78.0.0/16")
)

// service is the one service of the run: every path reaches the same
// backend under this name.
const service = "bench"

// backend is nginx serving one small response, and its request counters.
type backend struct {
	*proc
	addr   string // 127.0.0.1:port of the page
	status string // 127.0.0.1:port of stub_status
	body   string
}

// startBackend starts nginx on two free loopback ports: the page on one
// (the same fixed response for every request, GET /), stub_status on the
// other.
func startBackend(ctx context.Context, bin, dir string, bodySize int) (*backend, error) {
	dir = filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(dir, "temp"), 0o755); err != nil {
		return nil, err
	}
	addr, err := sysstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	status, err := sysstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	body := strings.Repeat("x", bodySize-1) + "\n"
	conf := fmt.Sprintf(`# bench/transparent's backend: one process, one fixed response.
daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log error;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path %[1]s/temp/body;
    proxy_temp_path %[1]s/temp/proxy;
    fastcgi_temp_path %[1]s/temp/fastcgi;
    uwsgi_temp_path %[1]s/temp/uwsgi;
    scgi_temp_path %[1]s/temp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {
        listen %[2]s backlog=4096;
        default_type text/plain;
        location / {
            return 200 "%[4]s";
        }
    }
    server {
        listen %[3]s;
        location / {
            stub_status;
        }
    }
}
`, dir, addr, status, strings.TrimSuffix(body, "\n")+`\n`)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc("nginx", dir, bin, os.Environ(), "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", file)
	if err != nil {
		return nil, err
	}
	b := &backend{proc: p, addr: addr, status: status, body: body}
	if err := p.waitFor(ctx, "serving", func(ctx context.Context) error { return get(ctx, "http://"+addr+"/", body) }); err != nil {
		p.stop()
		return nil, err
	}
	return b, nil
}

// get fetches url and checks that the answer is 200 with the body want
// (when want is not empty).
func get(ctx context.Context, url, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
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
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || (want != "" && string(b) != want) {
		return fmt.Errorf("GET %s: %d, %d bytes, not the page", url, resp.StatusCode, len(b))
	}
	return nil
}

// counters are nginx's connection and request counts (stub_status).
type counters struct{ accepts, requests float64 }

// counters reads stub_status. The reading is a connection and a request of
// its own, which it leaves out.
func (b *backend) counters(ctx context.Context) (counters, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.status+"/", nil)
	if err != nil {
		return counters{}, err
	}
	req.Close = true
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return counters{}, fmt.Errorf("nginx stub_status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return counters{}, err
	}
	// Active connections: 1
	// server accepts handled requests
	//  1 1 1
	lines := strings.Split(string(body), "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == "server accepts handled requests" && i+1 < len(lines) {
			f := strings.Fields(lines[i+1])
			if len(f) == 3 {
				a, _ := strconv.ParseFloat(f[0], 64)
				r, _ := strconv.ParseFloat(f[2], 64)
				return counters{accepts: a - 1, requests: r - 1}, nil
			}
		}
	}
	return counters{}, fmt.Errorf("nginx stub_status: unexpected answer %q", body)
}

func nginxVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput() // "nginx version: nginx/1.22.1"
	if _, v, ok := strings.Cut(strings.TrimSpace(string(out)), "version: "); ok {
		return v
	}
	return "nginx (version unknown)"
}

// startAgent runs `disco agent` with a file source that names the backend
// as the one instance of the service, and nothing else of the agent's: no
// shared-memory table, no DNS. Its fallback proxy listens on the service's
// magic address in agentRange, on the backend's port; it returns that
// address once a connect there is accepted.
func startAgent(ctx context.Context, bin, dir, backendAddr string) (*proc, string, error) {
	dir = filepath.Join(dir, "agent")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	ap := netip.MustParseAddrPort(backendAddr)
	file := filepath.Join(dir, "services.yaml")
	yaml := fmt.Sprintf("services:\n  %s:\n    - {id: nginx, address: %s, port: %d, weight: 100}\n", service, ap.Addr(), ap.Port())
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		return nil, "", err
	}
	alloc, err := magicip.Allocate(agentRange, []string{service})
	if err != nil {
		return nil, "", err
	}
	magic, _ := alloc.Addr(service)
	proxyAddr := netip.AddrPortFrom(magic, ap.Port()).String()
	if !refused(proxyAddr) {
		return nil, "", fmt.Errorf("agent: something already listens on %s, the magic address the benchmark's agent would proxy on", proxyAddr)
	}
	httpAddr, err := sysstat.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := startProc("agent", dir, bin, os.Environ(), "agent",
		"--source", "file://"+file, "--table", "", "--dns", "",
		"--http", httpAddr, "--state-dir", filepath.Join(dir, "state"),
		"--magic-range", agentRange.String(), "--log-level", "warn")
	if err != nil {
		return nil, "", err
	}
	if err := p.waitFor(ctx, "proxying "+proxyAddr, func(ctx context.Context) error { return get(ctx, "http://"+proxyAddr+"/", "") }); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, proxyAddr, nil
}

// startHaproxy runs haproxy in the foreground on one thread, with two
// frontends to the backend: one in TCP mode (the fallback proxy's
// counterpart: bytes relayed, nothing parsed) and one in HTTP mode.
func startHaproxy(ctx context.Context, bin, dir, backendAddr string) (p *proc, tcpAddr, httpAddr string, err error) {
	dir = filepath.Join(dir, "haproxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", "", err
	}
	if tcpAddr, err = sysstat.FreeAddr(); err != nil {
		return nil, "", "", err
	}
	if httpAddr, err = sysstat.FreeAddr(); err != nil {
		return nil, "", "", err
	}
	conf := fmt.Sprintf(`# bench/transparent's sidecar proxy
global
    nbthread 1
    maxconn 4096

defaults
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend tcp_in
    mode tcp
    bind %[1]s
    default_backend tcp_out

backend tcp_out
    mode tcp
    server nginx %[3]s

frontend http_in
    mode http
    bind %[2]s
    default_backend http_out

backend http_out
    mode http
    server nginx %[3]s
`, tcpAddr, httpAddr, backendAddr)
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return nil, "", "", err
	}
	if p, err = startProc("haproxy", dir, bin, os.Environ(), "-db", "-f", file); err != nil {
		return nil, "", "", err
	}
	for _, a := range []string{tcpAddr, httpAddr} {
		if err := p.waitFor(ctx, "proxying "+a, func(ctx context.Context) error { return get(ctx, "http://"+a+"/", "") }); err != nil {
			p.stop()
			return nil, "", "", err
		}
	}
	return p, tcpAddr, httpAddr, nil
}

func haproxyVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").Output() // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
	first, _, _ := strings.Cut(string(out), "\n")
	if f := strings.Fields(first); len(f) >= 3 && f[1] == "version" {
		return "haproxy " + f[2]
	}
	return "haproxy (version unknown)"
}

// shimSetup is what a program needs to run under libdisco.so here.
type shimSetup struct {
	lib   string // libdisco.so
	table *shmtable.Writer
	magic netip.Addr // the service's magic address in the table
}

// newShim builds libdisco.so with the Makefile's rule into dir (unless lib
// is given) and writes a table naming the backend as the service's one
// backend, at a magic address in shimRange, where nothing may listen.
func newShim(ctx context.Context, lib, dir, root, backendAddr string) (*shimSetup, bool, error) {
	built := false
	if lib == "" {
		bin := filepath.Join(dir, "shim")
		cmd := exec.CommandContext(ctx, "make", "-s", "-C", root, "shim", "BIN="+bin)
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, false, fmt.Errorf("make shim (or pass -shim PATH): %w", err)
		}
		lib, built = filepath.Join(bin, "libdisco.so"), true
	}
	lib, err := filepath.Abs(lib)
	if err != nil {
		return nil, false, err
	}
	alloc, err := magicip.Allocate(shimRange, []string{service})
	if err != nil {
		return nil, false, err
	}
	magic, _ := alloc.Addr(service)
	ap := netip.MustParseAddrPort(backendAddr)
	if to := netip.AddrPortFrom(magic, ap.Port()).String(); !refused(to) {
		return nil, false, fmt.Errorf("shim: a connect to %s, the magic address of the shim's table, is not refused: something listens there, and traffic the shim did not rewrite would not show", to)
	}
	w, err := shmtable.Create(filepath.Join(dir, "disco.table"))
	if err != nil {
		return nil, false, err
	}
	if err := w.Publish([]shmtable.Service{{
		Name: service, Magic: magic,
		Backends: []shmtable.Backend{{Addr: ap.Addr(), Port: ap.Port(), Weight: 100}},
	}}); err != nil {
		w.Close()
		return nil, false, err
	}
	return &shimSetup{lib: lib, table: w, magic: magic}, built, nil
}

// env is the environment of a program run under the shim: no failure
// reports (nothing should fail, and no agent listens for them).
func (s *shimSetup) env() []string {
	return append(os.Environ(), "LD_PRELOAD="+s.lib, "DISCO_TABLE="+s.table.Path(), "DISCO_AGENT_REPORT=off")
}

func (s *shimSetup) close() {
	if s != nil {
		s.table.Close()
	}
}

// buildDisco builds the disco binary with the local toolchain.
func buildDisco(ctx context.Context, root, bin string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/disco")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build disco (or pass -disco PATH): %w", err)
	}
	return nil
}

// repoRoot is the module's directory: the benchmark builds the shim and
// disco from the working tree.
func repoRoot() (string, error) {
	cmd := exec.Command("go", "env", "GOMOD")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the module: run from the repository (go run ./bench/transparent), or pass -disco and -shim")
	}
	return filepath.Dir(gomod), nil
}
