package shim

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discotech/disco/internal/golden"
	"github.com/discotech/disco/magicip"
	"github.com/discotech/disco/shmtable"
)

// buildDir holds what the tests build: the library twice, the C clients,
// the Go client.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "disco-shim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Each artifact is built once, when a test first needs it.
var (
	buildLib = sync.OnceValues(func() (string, error) { return makeShim("plain", "") })
	// The ASan build is preloaded behind libasan into programs built
	// without it; -fno-sanitize-recover makes any UBSan report fatal.
	buildASan = sync.OnceValues(func() (string, error) {
		return makeShim("asan", "-fsanitize=address,undefined -fno-sanitize-recover=all")
	})
	buildClient = sync.OnceValues(func() (string, error) { return gcc("client", "testdata/client.c") })
	buildBench  = sync.OnceValues(func() (string, error) { return gcc("bench", "testdata/bench.c") })
	buildGo     = sync.OnceValues(func() (string, error) {
		out := filepath.Join(buildDir, "goclient")
		cmd := exec.Command("go", "build", "-o", out, "./testdata/goclient")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build ./testdata/goclient: %v\n%s", err, b)
		}
		return out, nil
	})
	libasan = sync.OnceValues(func() (string, error) {
		out, err := exec.Command("gcc", "-print-file-name=libasan.so").Output()
		p := strings.TrimSpace(string(out))
		if err != nil || !filepath.IsAbs(p) {
			return "", fmt.Errorf("gcc knows no libasan.so (%v): install libasan8", err)
		}
		return p, nil
	})
)

// makeShim builds libdisco.so with the Makefile's rule, so the tests test
// what `make shim` makes.
func makeShim(name, sanitize string) (string, error) {
	dir := filepath.Join(buildDir, name)
	cmd := exec.Command("make", "-s", "-C", "..", "shim", "BIN="+dir, "SHIM_SANITIZE="+sanitize)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make shim: %v\n%s", err, b)
	}
	return filepath.Join(dir, "libdisco.so"), nil
}

func gcc(name, src string) (string, error) {
	out := filepath.Join(buildDir, name)
	cmd := exec.Command("gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", out, src)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("gcc %s: %v\n%s", src, err, b)
	}
	return out, nil
}

func need(t testing.TB, build func() (string, error)) string {
	t.Helper()
	p, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A preload is a way to load the shim into a program.
type preload struct {
	name string
	env  []string
}

func plain(t testing.TB) preload {
	return preload{"plain", []string{"LD_PRELOAD=" + need(t, buildLib)}}
}

// preloads is the plain library, then the one built with ASan and UBSan.
func preloads(t testing.TB) []preload {
	asan := preload{"asan", []string{
		"LD_PRELOAD=" + need(t, libasan) + ":" + need(t, buildASan),
		"ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0",
		"UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1",
	}}
	return []preload{plain(t), asan}
}

// environ is this process's environment without anything that would change
// how a program runs under the shim (proxies, an outer LD_PRELOAD, DISCO_*),
// plus extra. Failure reports are off unless extra turns them on.
func environ(extra ...string) []string {
	env := []string{"DISCO_AGENT_REPORT=off"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "LD_PRELOAD", k == "GODEBUG", strings.HasPrefix(k, "DISCO_"),
			strings.HasPrefix(k, "ASAN_"), strings.HasPrefix(k, "UBSAN_"),
			strings.HasSuffix(strings.ToLower(k), "_proxy"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// run runs a program and returns its standard output; it fails the test if
// the program fails.
func run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, err := try(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(name), strings.Join(args, " "), err)
	}
	return out
}

// try runs a program; the error carries its standard error.
func try(t testing.TB, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	return string(out), nil
}

// backend starts an HTTP server on loopback answering its name, and closing
// every connection after one answer, so every request connects anew.
func backend(t testing.TB, name string) shmtable.Backend {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprintln(w, name)
	}))
	t.Cleanup(srv.Close)
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	return shmtable.Backend{Addr: ap.Addr(), Port: ap.Port(), Weight: 100}
}

func weight(b shmtable.Backend, w uint32) shmtable.Backend {
	b.Weight = w
	return b
}

// deadPort is a loopback port nothing listens on. It is below the
// ephemeral range: a connect to a free port of that range may be given the
// same port as its source, and then connects to itself.
func deadPort(t testing.TB) shmtable.Backend {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11024 {
				low = n
			}
		}
	}
	for range 100 {
		port := 10000 + rand.IntN(low-10000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return shmtable.Backend{Addr: netip.MustParseAddr("127.0.0.1"), Port: uint16(port), Weight: 100}
	}
	t.Fatal("no free port below the ephemeral range")
	return shmtable.Backend{}
}

// A table is a shared-memory table in the test's directory.
type table struct {
	w     *shmtable.Writer
	path  string
	magic map[string]netip.Addr
}

func newTable(t testing.TB, services map[string][]shmtable.Backend) *table {
	path := filepath.Join(t.TempDir(), "disco.table")
	w, err := shmtable.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	tb := &table{w: w, path: path}
	tb.publish(t, services)
	return tb
}

// publish writes services, with the magic addresses package magicip gives
// them (web is 127.77.220.68, db 127.77.116.254).
func (tb *table) publish(t testing.TB, services map[string][]shmtable.Backend) {
	names := slices.Sorted(maps.Keys(services))
	alloc, err := magicip.Allocate(magicip.DefaultRange, names)
	if err != nil {
		t.Fatal(err)
	}
	tb.magic = map[string]netip.Addr{}
	var list []shmtable.Service
	for _, n := range names {
		a, _ := alloc.Addr(n)
		tb.magic[n] = a
		list = append(list, shmtable.Service{Name: n, Magic: a, Backends: services[n]})
	}
	if err := tb.w.Publish(list); err != nil {
		t.Fatal(err)
	}
}

func (tb *table) env(p preload, extra ...string) []string {
	return environ(append(append([]string{"DISCO_TABLE=" + tb.path}, p.env...), extra...)...)
}

// counts counts the lines of out.
func counts(out string) map[string]int {
	c := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			c[l]++
		}
	}
	return c
}

// wantSeen checks that out has n lines, and that the backends they name are
// exactly want. With equal weights and n ≥ 30, a backend never seen by
// chance has a probability below (2/3)^30 ≈ 5e-6; a weight-0 one, none.
func wantSeen(t testing.TB, out string, n int, want ...string) {
	t.Helper()
	c := counts(out)
	total := 0
	for _, k := range c {
		total += k
	}
	if total != n {
		t.Errorf("%d answers, want %d:\n%s", total, n, out)
	}
	if diff := cmp.Diff(want, slices.Sorted(maps.Keys(c))); diff != "" {
		t.Errorf("backends seen (-want +got):\n%s\ncounts %v", diff, c)
	}
}

// web is the usual service: three backends of equal weight and a fourth,
// "drained", of weight 0 that must never answer.
func web(t testing.TB) map[string][]shmtable.Backend {
	return map[string][]shmtable.Backend{
		"web": {backend(t, "a"), backend(t, "b"), backend(t, "c"), weight(backend(t, "drained"), 0)},
		"db":  {backend(t, "db1")},
	}
}

func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed: run .ci/deps")
	}
	tb := newTable(t, web(t))
	const n = 60
	args := []string{"-sS", "--fail", "--max-time", "10", "-w", "%{remote_ip} %{remote_port}\n"}
	for range n {
		args = append(args, "http://web.service.disco:80/")
	}
	out := run(t, tb.env(plain(t)), curl, args...)
	var bodies, peers []string
	for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if i%2 == 0 {
			bodies = append(bodies, l)
		} else {
			peers = append(peers, l)
		}
	}
	wantSeen(t, strings.Join(bodies, "\n"), n, "a", "b", "c")
	// curl asks getpeername where it is connected: the magic address.
	if c := counts(strings.Join(peers, "\n")); len(c) != 1 || c["127.77.220.68 80"] != n {
		t.Errorf("curl's remote_ip and remote_port: %v", c)
	}
}

func TestPython(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	tb := newTable(t, web(t))
	const script = `
import socket, sys, urllib.request
n = int(sys.argv[1])
for _ in range(n):
    s = socket.create_connection(("web.service.disco", 80))
    peer = s.getpeername()
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    print("socket", peer[0], peer[1], data.split(b"\r\n\r\n", 1)[1].decode().strip())
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for _ in range(n):
    # A timeout makes the socket non-blocking inside: connect says EINPROGRESS.
    print("urllib", opener.open("http://web.service.disco/", timeout=5).read().decode().strip())
`
	const n = 30
	out := run(t, tb.env(plain(t)), python, "-c", script, strconv.Itoa(n))
	var sock, urllib []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		switch {
		case f[0] == "socket" && len(f) == 4:
			if f[1] != "127.77.220.68" || f[2] != "80" {
				t.Errorf("python's getpeername: %s", l)
			}
			sock = append(sock, f[3])
		case f[0] == "urllib" && len(f) == 2:
			urllib = append(urllib, f[1])
		default:
			t.Errorf("unexpected line %q", l)
		}
	}
	wantSeen(t, strings.Join(sock, "\n"), n, "a", "b", "c")
	wantSeen(t, strings.Join(urllib, "\n"), n, "a", "b", "c")
}

// TestCClients runs the C clients, with the plain library and with the one
// built with the sanitizers.
func TestCClients(t *testing.T) {
	client := need(t, buildClient)
	tb := newTable(t, web(t))
	for _, p := range preloads(t) {
		t.Run(p.name, func(t *testing.T) {
			env := tb.env(p)
			t.Run("blocking", func(t *testing.T) {
				wantSeen(t, run(t, env, client, "get", "web.service.disco", "80", "30"), 30, "a", "b", "c")
			})
			t.Run("nonblocking", func(t *testing.T) {
				// The client fails unless every connect says EINPROGRESS.
				wantSeen(t, run(t, env, client, "nonblock", "web.service.disco", "80", "30"), 30, "a", "b", "c")
			})
			t.Run("ipv6", func(t *testing.T) {
				wantSeen(t, run(t, env, client, "v6", "web.service.disco", "80", "30"), 30, "a", "b", "c")
			})
			t.Run("threads", func(t *testing.T) {
				wantSeen(t, run(t, env, client, "threads", "web.service.disco", "80", "50", "8"), 400, "a", "b", "c")
			})
			t.Run("fork", func(t *testing.T) {
				out := run(t, env, client, "fork", "web.service.disco", "80", "30")
				by := map[string][]string{}
				for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
					who, body, _ := strings.Cut(l, " ")
					by[who] = append(by[who], body)
				}
				if len(by["first"]) != 1 {
					t.Errorf("first: %v", by["first"])
				}
				wantSeen(t, strings.Join(by["parent"], "\n"), 30, "a", "b", "c")
				wantSeen(t, strings.Join(by["child"], "\n"), 30, "a", "b", "c")
			})
			t.Run("getpeername", func(t *testing.T) {
				poll := run(t, env, client, "poll", "web.service.disco", "8080")
				golden.Check(t, "getpeername.golden", []byte(run(t, env, client, "peer", "web.service.disco", "8080")+poll))
				// The connect that completes a polled one picks no new
				// backend: were it to, getpeername would say the real
				// address two times in three.
				for range 10 {
					if again := run(t, env, client, "poll", "web.service.disco", "8080"); again != poll {
						t.Fatalf("polled connect: %q, then %q", poll, again)
					}
				}
			})
		})
	}
}

// netns runs a program in a network namespace of its own, with no network
// at all: a name the shim passes through to the real resolver gets no
// answer, and nothing leaves the machine.
func netns(t testing.TB) string {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err == nil {
		err = exec.Command(unshare, "-n", "true").Run()
	}
	if err != nil {
		t.Skipf("unshare -n (util-linux, as root) does not work here (%v): names passed through would be asked of the host's DNS", err)
	}
	return unshare
}

// TestNames checks the name hooks' answers against golden files, and that
// names the shim does not answer get what the real resolver says, as they
// would with no shim at all.
func TestNames(t *testing.T) {
	client := need(t, buildClient)
	unshare := netns(t)
	tb := newTable(t, web(t))
	ours := []string{
		"web.service.disco,http,unspec,stream,-",
		"WEB.Service.DISCO.,80,inet,stream,canon",
		"web.service.disco,-,unspec,-,-",
		"web.service.disco,53,null,-,-",
		"web.service.disco,8080,inet6,stream,-",
		"web.service.disco,8080,inet6,stream,v4mapped+canon",
		"web.service.disco,8080,inet6,-,v4mapped+all",
		"web.service.disco,80,unspec,stream,addrconfig",
		"web.service.disco,nosuchservice,unspec,stream,-",
		"web.service.disco,http,unspec,stream,numericserv",
		"web.service.disco,80,unspec,stream,numerichost",
		"db.service.disco,5432,inet,stream,-",
	}
	passed := []string{
		"nosuch.service.disco,80,unspec,stream,-",
		"v2.web.service.disco,80,unspec,stream,-",
		"web.service.disco.example,80,unspec,stream,-",
		"web.service.other,80,unspec,stream,-",
		"service.disco,80,unspec,stream,-",
		"localhost,80,inet,stream,-",
		"127.77.220.68,80,inet,stream,-",
	}
	for _, p := range preloads(t) {
		t.Run(p.name, func(t *testing.T) {
			env := tb.env(p)
			got := run(t, env, unshare, append([]string{"-n", client, "gai"}, ours...)...)
			got += run(t, env, unshare, "-n", client, "hostent", "web.service.disco", "Db.Service.Disco.")
			golden.Check(t, "names.golden", []byte(got))

			for _, args := range [][]string{
				append([]string{"-n", client, "gai"}, passed...),
				{"-n", client, "hostent", "nosuch.service.disco", "v2.web.service.disco", "localhost"},
			} {
				with, without := run(t, env, unshare, args...), run(t, environ(), unshare, args...)
				if diff := cmp.Diff(without, with); diff != "" {
					t.Errorf("names passed through (-without the shim +with it):\n%s", diff)
				}
			}
		})
	}
	t.Run("domain", func(t *testing.T) {
		env := tb.env(plain(t), "DISCO_DOMAIN=Corp.Example.")
		got := run(t, env, unshare, "-n", client, "gai", "web.service.corp.example,80,inet,stream,canon", "WEB.SERVICE.CORP.EXAMPLE.,80,inet,stream,-")
		want := "web.service.corp.example,80,inet,stream,canon: [inet 127.77.220.68 port 80 type 1 proto 6 canon web.service.corp.example]\n" +
			"WEB.SERVICE.CORP.EXAMPLE.,80,inet,stream,-: [inet 127.77.220.68 port 80 type 1 proto 6]\n"
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("DISCO_DOMAIN (-want +got):\n%s", diff)
		}
	})
}

// TestNoTable: with no table, or the table turned off, programs run as if
// the shim were not there.
func TestNoTable(t *testing.T) {
	client := need(t, buildClient)
	unshare := netns(t)
	a := backend(t, "a")
	direct := netip.AddrPortFrom(a.Addr, a.Port).String()
	for _, table := range []string{filepath.Join(t.TempDir(), "none"), ""} {
		env := environ(append([]string{"DISCO_TABLE=" + table}, plain(t).env...)...)
		if curl, err := exec.LookPath("curl"); err == nil {
			if got := run(t, env, curl, "-sS", "--max-time", "10", "http://"+direct+"/"); got != "a\n" {
				t.Errorf("DISCO_TABLE=%q: curl to %s: %q", table, direct, got)
			}
		}
		if got := run(t, env, client, "addr", a.Addr.String(), strconv.Itoa(int(a.Port))); got != "peer "+direct+" len 16\na\n" {
			t.Errorf("DISCO_TABLE=%q: connect to %s: %q", table, direct, got)
		}
		q := []string{"-n", client, "gai", "web.service.disco,80,unspec,stream,-", "web.service.disco,80,inet6,stream,v4mapped"}
		with, without := run(t, env, unshare, q...), run(t, environ(), unshare, q...)
		if with != without {
			t.Errorf("DISCO_TABLE=%q: with the shim %q, without %q", table, with, without)
		}
	}
}

// reports listens where the shim sends failure reports.
func reports(t testing.TB) (*net.UDPConn, string) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, "DISCO_AGENT_REPORT=" + c.LocalAddr().String()
}

// received returns the datagrams already queued on c: the shim sends them
// before connect returns, so once the program exited they are all there.
func received(c *net.UDPConn) []string {
	var got []string
	buf := make([]byte, 512)
	for {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:n]))
	}
}

// TestRefusedBackend: a blocking connect refused by a backend goes to
// another one, and the agent hears of the failure, once per failed connect.
func TestRefusedBackend(t *testing.T) {
	client := need(t, buildClient)
	dead := deadPort(t)
	deads := []shmtable.Backend{deadPort(t), deadPort(t), deadPort(t), deadPort(t)}
	tb := newTable(t, map[string][]shmtable.Backend{
		// The dead backend is nearly always picked first.
		"flaky": {dead, weight(backend(t, "a"), 1)},
		"dead":  deads,
		"web":   {backend(t, "b")},
	})
	udp, report := reports(t)
	for _, p := range preloads(t) {
		t.Run(p.name, func(t *testing.T) {
			env := tb.env(p, report)
			wantSeen(t, run(t, env, client, "get", "flaky.service.disco", "80", "20"), 20, "a")
			got := received(udp)
			want := fmt.Sprintf("fail flaky 127.0.0.1 %d 111\n", dead.Port)
			if len(got) == 0 {
				t.Errorf("no failure report")
			}
			for _, g := range got {
				if g != want {
					t.Errorf("report %q, want %q", g, want)
				}
			}

			// Every backend refuses: three are tried, and the caller
			// gets ECONNREFUSED.
			out := run(t, env, client, "addr", tb.magic["dead"].String(), "80")
			if out != "connect: ECONNREFUSED\n" {
				t.Errorf("all backends dead: %q", out)
			}
			got = received(udp)
			ports := map[string]bool{}
			for _, g := range got {
				f := strings.Fields(g)
				if len(f) != 5 || f[0] != "fail" || f[1] != "dead" || f[4] != "111" {
					t.Errorf("report %q", g)
					continue
				}
				ports[f[3]] = true
			}
			if len(got) != 3 || len(ports) != 3 {
				t.Errorf("reports %q: want 3, for 3 backends", got)
			}

			// Successes are not reported.
			run(t, env, client, "get", "web.service.disco", "80", "10")
			if got := received(udp); len(got) != 0 {
				t.Errorf("reports after successful connects: %q", got)
			}
		})
	}
}

// TestManyBackends: a service with more backends than fit on the stack;
// only its last three have weight.
func TestManyBackends(t *testing.T) {
	client := need(t, buildClient)
	drained := weight(backend(t, "drained"), 0)
	var bs []shmtable.Backend
	for range 300 {
		bs = append(bs, drained)
	}
	bs = append(bs, backend(t, "a"), backend(t, "b"), backend(t, "c"))
	tb := newTable(t, map[string][]shmtable.Backend{"web": bs})
	for _, p := range preloads(t) {
		t.Run(p.name, func(t *testing.T) {
			wantSeen(t, run(t, tb.env(p), client, "threads", "web.service.disco", "80", "10", "4"), 40, "a", "b", "c")
		})
	}
}

// TestPublishWhileConnecting: threads connect while the table is published
// again and again; every read is whole, so every connect works.
func TestPublishWhileConnecting(t *testing.T) {
	client := need(t, buildClient)
	services := web(t)
	tb := newTable(t, services)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		n := 0
		for ; ctx.Err() == nil; n++ {
			// The same backends in another order each time.
			bs := slices.Clone(services["web"])
			slices.Reverse(bs[n%len(bs):])
			if err := tb.w.Publish([]shmtable.Service{{Name: "web", Magic: tb.magic["web"], Backends: bs}}); err != nil {
				t.Error(err)
				break
			}
		}
		done <- n
	}()
	out := run(t, tb.env(plain(t)), client, "threads", "web.service.disco", "80", "50", "8")
	cancel()
	t.Logf("%d publishes during the run", <-done)
	wantSeen(t, out, 400, "a", "b", "c")
}

// TestTableLifecycle follows one long-running program through the agent's
// life: no table yet, a table, a new publish, a bigger file that supersedes
// the first, and the agent gone.
func TestTableLifecycle(t *testing.T) {
	client := need(t, buildClient)
	a, b, c := backend(t, "a"), backend(t, "b"), backend(t, "c")
	path := filepath.Join(t.TempDir(), "disco.table")
	magic := "127.77.220.68 80" // web's, by name

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, client, "repl")
	cmd.Env = environ(append([]string{"DISCO_TABLE=" + path}, plain(t).env...)...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("client: %v\n%s", err, stderr.String())
		}
	}()
	lines := make(chan string)
	go func() {
		buf := make([]byte, 0, 256)
		one := make([]byte, 1)
		for {
			if _, err := stdout.Read(one); err != nil {
				close(lines)
				return
			}
			if one[0] == '\n' {
				lines <- string(buf)
				buf = buf[:0]
				continue
			}
			buf = append(buf, one[0])
		}
	}()
	ask := func(q string) string {
		t.Helper()
		fmt.Fprintln(stdin, q)
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("client exited: %s", stderr.String())
			}
			return l
		case <-ctx.Done():
			t.Fatal("no answer from the client")
		}
		return ""
	}
	// askUntil asks until the answer is want: the shim looks for a missing
	// table again only once a second.
	askUntil := func(q, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := ask(q)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %q, want %q", q, got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// No table: the magic address is just an address nobody listens on.
	if got := ask(magic); got != "connect: ECONNREFUSED" {
		t.Errorf("no table: %q", got)
	}
	if got := ask(fmt.Sprintf("127.0.0.1 %d", a.Port)); got != "a" {
		t.Errorf("no table, a real address: %q", got)
	}

	w, err := shmtable.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	webMagic := netip.MustParseAddr("127.77.220.68")
	publish := func(extra ...shmtable.Service) {
		t.Helper()
		if err := w.Publish(extra); err != nil {
			t.Fatal(err)
		}
	}
	publish(shmtable.Service{Name: "web", Magic: webMagic, Backends: []shmtable.Backend{a}})
	askUntil(magic, "a")
	if got := ask("web.service.disco 80"); got != "a" {
		t.Errorf("by name: %q", got)
	}

	publish(shmtable.Service{Name: "web", Magic: webMagic, Backends: []shmtable.Backend{b}})
	if got := ask(magic); got != "b" {
		t.Errorf("after a publish: %q", got)
	}

	// 40,000 backends do not fit the first file's slots: the writer moves
	// to a bigger file and marks the first one superseded.
	big := shmtable.Service{Name: "big", Magic: netip.MustParseAddr("127.77.1.1")}
	for i := range 40000 {
		big.Backends = append(big.Backends, shmtable.Backend{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 80, Weight: 1})
	}
	publish(shmtable.Service{Name: "web", Magic: webMagic, Backends: []shmtable.Backend{c}}, big)
	if got := ask(magic); got != "c" {
		t.Errorf("after the table moved to a new file: %q", got)
	}

	// The agent stops: it marks the table superseded and removes it.
	w.Close()
	if got := ask(magic); got != "connect: ECONNREFUSED" {
		t.Errorf("after the agent stopped: %q", got)
	}
}

// TestGoCgo: a Go program built with cgo and told to use the cgo resolver
// resolves through the shim, and its connects through libc are redirected;
// net.Dial makes the connect system call itself and is not (the agent's
// fallback proxy on the magic addresses is for that).
func TestGoCgo(t *testing.T) {
	goclient := need(t, buildGo)
	tb := newTable(t, map[string][]shmtable.Backend{"web": {backend(t, "a")}})
	out := run(t, tb.env(plain(t), "GODEBUG=netdns=cgo"), goclient, "web.service.disco", "80")
	want := "resolved 127.77.220.68\nlibc connect: a\nnet.Dial: connection refused\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// BenchmarkConnect times connect() to a listening loopback port: without
// the shim, through the shim to a real address (it passes through), and
// through the shim to a magic address (it picks a backend and rewrites);
// then the same with UDP sockets. p50-ns is the metric to read; each
// connect is timed on its own.
func BenchmarkConnect(b *testing.B) {
	bench := need(b, buildBench)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ap := netip.MustParseAddrPort(l.Addr().String())
	tb := newTable(b, map[string][]shmtable.Backend{"web": {{Addr: ap.Addr(), Port: ap.Port(), Weight: 1}}})
	port := strconv.Itoa(int(ap.Port()))
	for _, c := range []struct {
		name string
		env  []string
		ip   string
	}{
		{"direct", environ(), "127.0.0.1"},
		{"direct-shim", tb.env(plain(b)), "127.0.0.1"},
		{"magic-shim", tb.env(plain(b)), tb.magic["web"].String()},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchC(b, c.env, bench, "connect", c.ip, port)
		})
		// A UDP connect does no handshake: what the shim adds is not
		// lost in the TCP handshake's noise.
		b.Run("udp-"+c.name, func(b *testing.B) {
			benchC(b, c.env, bench, "udp", c.ip, port)
		})
	}
}

// BenchmarkResolve times getaddrinfo: localhost from /etc/hosts without the
// shim, and a service name with it.
func BenchmarkResolve(b *testing.B) {
	bench := need(b, buildBench)
	tb := newTable(b, map[string][]shmtable.Backend{"web": {{Addr: netip.MustParseAddr("127.0.0.1"), Port: 1, Weight: 1}}})
	b.Run("hosts-file", func(b *testing.B) { benchC(b, environ(), bench, "gai", "localhost", "80") })
	b.Run("service-shim", func(b *testing.B) { benchC(b, tb.env(plain(b)), bench, "gai", "web.service.disco", "80") })
}

// benchC runs the C benchmark for b.N iterations and reports its figures.
func benchC(b *testing.B, env []string, bench string, args ...string) {
	out, err := try(b, env, bench, append(args, strconv.Itoa(b.N))...)
	if err != nil {
		b.Fatal(err)
	}
	var p50, p99, mean float64
	if _, err := fmt.Sscanf(out, "p50 %g p99 %g mean %g", &p50, &p99, &mean); err != nil {
		b.Fatalf("bench: %q", out)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(p50, "p50-ns")
	b.ReportMetric(p99, "p99-ns")
	b.ReportMetric(mean, "mean-ns")
}
