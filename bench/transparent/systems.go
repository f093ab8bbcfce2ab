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

	"github.com/discotech/disco/bench/internal/nginx"
	"github.com/discotech/disco/bench/internal/peer"
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
	*peer.Process
	addr   string // 127.0.0.1:port of the page
	status string // 127.0.0.1:port of stub_status
	body   string
}

// startBackend starts nginx on two free loopback ports: the page on one
// (the same fixed response for every request, GET /), stub_status on the
// other.
func startBackend(ctx context.Context, bin, dir string, bodySize int) (*backend, error) {
	addr, err := sysstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	status, err := sysstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	body := strings.Repeat("x", bodySize-1) + "\n"
	p, err := nginx.Start("nginx", bin, filepath.Join(dir, "nginx"), 1, fmt.Sprintf(`    server {
        listen %[1]s backlog=4096;
        default_type text/plain;
        location / {
            return 200 "%[3]s";
        }
    }
    server {
        listen %[2]s;
        location / {
            stub_status;
        }
    }
`, addr, status, strings.TrimSuffix(body, "\n")+`\n`))
	if err != nil {
		return nil, err
	}
	b := &backend{Process: p, addr: addr, status: status, body: body}
	if err := p.WaitReady(ctx, "serving", peer.HTTPReady("http://"+addr+"/", body)); err != nil {
		p.Stop()
		return nil, err
	}
	return b, nil
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

// startAgent runs `disco agent` with a file source that names the backend
// as the one instance of the service, and nothing else of the agent's: no
// shared-memory table, no DNS. Its fallback proxy listens on the service's
// magic address in agentRange, on the backend's port; it returns that
// address once a connect there is accepted.
func startAgent(ctx context.Context, bin, dir, backendAddr string) (*peer.Process, string, error) {
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
	p, err := peer.Start("agent", dir, bin, "agent",
		"--source", "file://"+file, "--table", "", "--dns", "",
		"--http", httpAddr, "--state-dir", filepath.Join(dir, "state"),
		"--magic-range", agentRange.String(), "--log-level", "warn")
	if err != nil {
		return nil, "", err
	}
	if err := p.WaitReady(ctx, "proxying "+proxyAddr, peer.HTTPReady("http://"+proxyAddr+"/", "")); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, proxyAddr, nil
}

// startHaproxy runs haproxy in the foreground on one thread, with two
// frontends to the backend: one in TCP mode (the fallback proxy's
// counterpart: bytes relayed, nothing parsed) and one in HTTP mode.
func startHaproxy(ctx context.Context, bin, dir, backendAddr string) (p *peer.Process, tcpAddr, httpAddr string, err error) {
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
	if p, err = peer.Start("haproxy", dir, bin, "-db", "-f", file); err != nil {
		return nil, "", "", err
	}
	for _, a := range []string{tcpAddr, httpAddr} {
		if err := p.WaitReady(ctx, "proxying "+a, peer.HTTPReady("http://"+a+"/", "")); err != nil {
			p.Stop()
			return nil, "", "", err
		}
	}
	return p, tcpAddr, httpAddr, nil
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
