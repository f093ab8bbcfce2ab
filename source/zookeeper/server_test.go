package zookeeper

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/discotech/disco/internal/testpeer"
	"github.com/discotech/disco/source"
	"github.com/discotech/disco/source/sourcetest"
)

// This file holds what the tests need around the source: a real ZooKeeper
// server (Debian's zookeeper package, run by the test itself) and a TCP
// proxy that can cut the source off.

// zkJar is where Debian's libzookeeper-java puts the server; its manifest
// names every jar it needs. slf4jSimple (libslf4j-java, which it depends
// on) gives the server a log, shown when a test fails.
const (
	zkJar       = "/usr/share/java/zookeeper.jar"
	slf4jSimple = "/usr/share/java/slf4j-simple.jar"
)

// zkServer is one standalone ZooKeeper on a loopback port.
type zkServer struct {
	t        *testing.T
	hostport string
	dir      string
	cfg      string
	java     string
	proc     *testpeer.Process // nil while killed
}

// startZK starts a ZooKeeper with its own data directory and waits until it
// answers. It is killed at the end of the test.
func startZK(t *testing.T) *zkServer {
	t.Helper()
	java := testpeer.Need(t, "java")
	if _, err := os.Stat(zkJar); err != nil {
		t.Fatalf("%s is missing; run .ci/deps (Debian: libzookeeper-java, which the package zookeeper brings)", zkJar)
	}
	dir := t.TempDir()
	s := &zkServer{t: t, hostport: testpeer.FreePort(t), dir: filepath.Join(dir, "data"), cfg: filepath.Join(dir, "zoo.cfg"), java: java}
	_, port, _ := net.SplitHostPort(s.hostport)
	// A tick of 100ms lets sessions be as short as 200ms and expire
	// promptly; 4lw commands give the tests ruok and mntr.
	cfg := fmt.Sprintf(`tickTime=100
dataDir=%s
clientPort=%s
clientPortAddress=127.0.0.1
minSessionTimeout=200
maxSessionTimeout=20000
admin.enableServer=false
4lw.commands.whitelist=*
`, s.dir, port)
	if err := os.WriteFile(s.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start()
	return s
}

func (s *zkServer) addr() string { return s.hostport }

// start runs the server on its port and data directory, and waits until it
// serves requests: "ruok" is answered as soon as the port is bound, before
// the server has started, and a session asked for in between can be
// dropped; "mntr" reports the sessions only once it serves.
func (s *zkServer) start() {
	s.t.Helper()
	s.proc = testpeer.Start(s.t, s.java,
		"-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
		"-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-cp", zkJar+":"+slf4jSimple, "org.apache.zookeeper.server.ZooKeeperServerMain", s.cfg)
	serving := func() bool { return s.sessions() >= 0 }
	if err := s.proc.WaitReady(30*time.Second, serving); err != nil {
		s.t.Fatalf("zookeeper on %s: %v", s.addr(), err)
	}
}

// kill stops the server at once, as a crash would (SIGKILL).
func (s *zkServer) kill() {
	if s.proc != nil {
		s.proc.Kill9()
		s.proc = nil
	}
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

// fulls counts the full updates among rec's.
func fulls(rec *sourcetest.Recorder) int {
	n := 0
	for _, u := range rec.Updates() {
		if u.Full {
			n++
		}
	}
	return n
}

// follow runs the source for spec, with timeout on each request, into a
// recorder that keeps its log at Info and above, until the end of the test.
func follow(t *testing.T, spec string, timeout time.Duration) *sourcetest.Recorder {
	t.Helper()
	rec := sourcetest.NewRecorder()
	src, err := source.New(spec, source.Options{Logger: rec.Logger(slog.LevelInfo), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	sourcetest.Run(t, src, rec)
	return rec
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
