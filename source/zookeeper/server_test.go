package zookeeper

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// This file holds what the tests need around the source: a real ZooKeeper
// server (Debian's zookeeper package, run by the test itself), a TCP proxy
// that can cut the source off, a sink that records, and a log handler that
// counts.

// zkJar is where Debian's libzookeeper-java puts the server; its manifest
// names every jar it needs. slf4jSimple (libslf4j-java, which it depends
// on) gives the server a log, shown when a test fails.
const (
	zkJar       = "/usr/share/java/zookeeper.jar"
	slf4jSimple = "/usr/share/java/slf4j-simple.jar"
)

// zkServer is one standalone ZooKeeper on a loopback port.
type zkServer struct {
	t    *testing.T
	port int
	dir  string
	cfg  string
	java string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  string        // the server's stdout and stderr
}

// startZK starts a ZooKeeper with its own data directory and waits until it
// answers. It is killed at the end of the test.
func startZK(t *testing.T) *zkServer {
	t.Helper()
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatal("java is not installed; run .ci/deps (Debian: default-jre-headless)")
	}
	if _, err := os.Stat(zkJar); err != nil {
		t.Fatalf("%s is missing; run .ci/deps (Debian: libzookeeper-java, which the package zookeeper brings)", zkJar)
	}
	dir := t.TempDir()
	s := &zkServer{t: t, port: freePort(t), dir: filepath.Join(dir, "data"), cfg: filepath.Join(dir, "zoo.cfg"), java: java, out: filepath.Join(dir, "zookeeper.log")}
	// A tick of 100ms lets sessions be as short as 200ms and expire
	// promptly; 4lw commands give the tests ruok and mntr.
	cfg := fmt.Sprintf(`tickTime=100
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
minSessionTimeout=200
maxSessionTimeout=20000
admin.enableServer=false
4lw.commands.whitelist=*
`, s.dir, s.port)
	if err := os.WriteFile(s.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			b, _ := os.ReadFile(s.out)
			t.Logf("zookeeper's output:\n%s", tail(string(b), 4000))
		}
	})
	return s
}

func (s *zkServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// start runs the server on its port and data directory, and waits until it
// answers "ruok".
func (s *zkServer) start() {
	s.t.Helper()
	out, err := os.OpenFile(s.out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	s.cmd = exec.Command(s.java,
		"-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
		"-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-cp", zkJar+":"+slf4jSimple, "org.apache.zookeeper.server.ZooKeeperServerMain", s.cfg)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start zookeeper: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(s.cmd, s.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r, _ := fourLetter(s.addr(), "ruok"); r == "imok" {
			return
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(s.out)
			s.t.Fatalf("zookeeper exited at start:\n%s", tail(string(b), 4000))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("zookeeper did not answer on %s within 30s", s.addr())
		}
		time.Sleep(50 * time.Millisecond) // polling for the server to come up
	}
}

// kill stops the server at once, as a crash would (SIGKILL).
func (s *zkServer) kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// sessions reads how many sessions the server holds (mntr's
// zk_global_sessions).
func (s *zkServer) sessions() int {
	out, err := fourLetter(s.addr(), "mntr")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "zk_global_sessions\t"); ok {
			n, err := strconv.Atoi(v)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// fourLetter sends one of ZooKeeper's four-letter commands.
func fourLetter(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, cmd); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// registrar is a ZooKeeper session that writes znodes as Curator's
// ServiceDiscovery would: persistent directories, ephemeral instances.
type registrar struct {
	t    *testing.T
	conn *zk.Conn
}

// dial opens a session to addr and waits for it.
func dial(t *testing.T, addr string) *registrar {
	t.Helper()
	conn, events, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	deadline := time.After(15 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				return &registrar{t: t, conn: conn}
			}
		case <-deadline:
			t.Fatalf("no session with %s", addr)
		}
	}
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// register writes instance id of svc, creating the directories it needs.
// Ephemeral instances go when the registrar's session does.
func (r *registrar) register(base, svc, id string, ephemeral bool, data string) {
	r.t.Helper()
	path := base + "/" + svc
	r.mkdirs(path)
	flags := int32(0)
	if ephemeral {
		flags = zk.FlagEphemeral
	}
	if _, err := r.conn.Create(path+"/"+id, []byte(data), flags, zk.WorldACL(zk.PermAll)); err != nil {
		r.t.Fatalf("create %s/%s: %v", path, id, err)
	}
}

func (r *registrar) mkdirs(path string) {
	r.t.Helper()
	p := ""
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		p += "/" + seg
		if _, err := r.conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			r.t.Fatalf("create %s: %v", p, err)
		}
	}
}

func (r *registrar) set(path, data string) {
	r.t.Helper()
	if _, err := r.conn.Set(path, []byte(data), -1); err != nil {
		r.t.Fatalf("set %s: %v", path, err)
	}
}

func (r *registrar) delete(path string) {
	r.t.Helper()
	if err := r.conn.Delete(path, -1); err != nil {
		r.t.Fatalf("delete %s: %v", path, err)
	}
}

// curator renders a ServiceInstance as Curator's JsonInstanceSerializer
// writes it.
func curator(name, id, address string, port int) string {
	return fmt.Sprintf(`{"name":%q,"id":%q,"address":%q,"port":%d,"sslPort":null,"payload":null,"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null,"enabled":true}`, name, id, address, port)
}

// recorder is a source.Sink that keeps every report and the state they add
// up to.
type recorder struct {
	mu      sync.Mutex
	updates []source.Update
	fails   []error
	state   map[string][]*catalog.Instance
}

func (r *recorder) Update(u source.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, u)
	if u.Full || r.state == nil {
		r.state = map[string][]*catalog.Instance{}
	}
	for svc, ins := range u.Services {
		r.state[svc] = ins
	}
}

func (r *recorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fails = append(r.fails, err)
}

// counts says how many updates, full updates and failures came so far.
func (r *recorder) counts() (updates, full, fails int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.updates {
		if u.Full {
			full++
		}
	}
	return len(r.updates), full, len(r.fails)
}

func (r *recorder) since(n int) []source.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.updates[n:])
}

// render shows the state one line per instance, sorted:
// "service/id address:port status [meta k=v,...]", or "service: none".
func (r *recorder) render() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lines []string
	for svc, ins := range r.state {
		if len(ins) == 0 {
			lines = append(lines, svc+": none")
		}
		for _, in := range ins {
			lines = append(lines, line(in))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func line(in *catalog.Instance) string {
	s := fmt.Sprintf("%s/%s %s:%d %s", in.Service, in.ID, in.Address, in.Port, in.Status)
	if in.Weight != catalog.DefaultWeight {
		s += fmt.Sprintf(" weight=%d", in.Weight)
	}
	if len(in.Meta) > 0 {
		var kv []string
		for k, v := range in.Meta {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		s += " meta " + strings.Join(kv, ",")
	}
	return s
}

func (r *recorder) lastFail() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.fails) == 0 {
		return nil
	}
	return r.fails[len(r.fails)-1]
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling; the deadline bounds it
	}
}

// waitState waits until the recorded state is want, whose lines may come
// in any order.
func (r *recorder) waitState(t *testing.T, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(want), "\n")
	sort.Strings(lines)
	want = strings.Join(lines, "\n")
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := r.render()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 15s for the state\n%s\nit is\n%s\nlast failure: %v", want, got, r.lastFail())
		}
		time.Sleep(10 * time.Millisecond) // polling; the deadline bounds it
	}
}

// logs is a slog.Handler that keeps the source's records at Info and above.
type logs struct {
	mu   sync.Mutex
	recs []string
}

func (l *logs) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelInfo }

func (l *logs) Handle(_ context.Context, r slog.Record) error {
	s := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		s += " " + a.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, s)
	return nil
}

func (l *logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logs) WithGroup(string) slog.Handler      { return l }

// count says how many records hold every one of parts.
func (l *logs) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, r := range l.recs {
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue next
			}
		}
		n++
	}
	return n
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.recs, "\n")
}

// follow runs the source for spec, with timeout on each request, until the
// end of the test.
func follow(t *testing.T, spec string, timeout time.Duration) (*recorder, *logs) {
	t.Helper()
	lg := &logs{}
	src, err := source.New(spec, source.Options{Logger: slog.New(lg), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil once ctx is done", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of ctx being done")
		}
		if t.Failed() {
			t.Logf("the source's logs:\n%s", lg)
		}
	})
	return rec, lg
}

// proxy forwards TCP connections to a target until cut, which drops them
// and refuses new ones (they are accepted and closed at once) until healed.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			s, err := net.DialTimeout("tcp", target, time.Second)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns[c], p.conns[s] = true, true
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(s, c); s.Close(); c.Close() }()
			go func() { defer wg.Done(); io.Copy(c, s); s.Close(); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
		wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}
