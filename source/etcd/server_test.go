package etcd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// server is an etcd server a test started, on free loopback ports, with its
// data in a temporary directory. It is killed when the test ends.
type server struct {
	t         testing.TB
	name      string
	cluster   string // --initial-cluster
	dir       string
	clientURL string // http://127.0.0.1:port, https:// with TLS
	peerURL   string
	tls       *testTLS // nil: plain text

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exits
}

// startServer starts an etcd server, plain text when tt is nil.
func startServer(t testing.TB, tt *testTLS) *server {
	t.Helper()
	s := newServers(t, 1, tt)[0]
	s.start()
	return s
}

// startCluster starts a cluster of n members.
func startCluster(t testing.TB, n int) []*server {
	t.Helper()
	ss := newServers(t, n, nil)
	for _, s := range ss {
		s.launch() // a member answers once a quorum is up
	}
	for _, s := range ss {
		s.waitReady()
	}
	return ss
}

func newServers(t testing.TB, n int, tt *testTLS) []*server {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatal("etcd is not on PATH: run .ci/deps to install it (Debian package etcd-server)")
	}
	scheme := "http://"
	if tt != nil {
		scheme = "https://"
	}
	ss := make([]*server, n)
	var cluster []string
	for i := range ss {
		s := &server{t: t, name: fmt.Sprintf("m%d", i), dir: t.TempDir(), clientURL: scheme + freeAddr(t), peerURL: "http://" + freeAddr(t), tls: tt}
		t.Cleanup(s.kill)
		cluster = append(cluster, s.name+"="+s.peerURL)
		ss[i] = s
	}
	for _, s := range ss {
		s.cluster = strings.Join(cluster, ",")
	}
	return ss
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start starts the server (again, on the same data and ports) and waits
// until it answers.
func (s *server) start() {
	s.t.Helper()
	s.launch()
	s.waitReady()
}

// launch starts the process.
func (s *server) launch() {
	s.t.Helper()
	args := []string{
		"--name", s.name,
		"--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", s.clientURL, "--advertise-client-urls", s.clientURL,
		"--listen-peer-urls", s.peerURL, "--initial-advertise-peer-urls", s.peerURL,
		"--initial-cluster", s.cluster,
		"--logger", "zap", "--log-level", "warn",
	}
	if s.tls != nil {
		args = append(args, "--cert-file", s.tls.serverCert, "--key-file", s.tls.serverKey,
			"--client-cert-auth", "--trusted-ca-file", s.tls.ca)
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "etcd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command("etcd", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatalf("start etcd: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
}

// waitReady waits until the server says it is healthy.
func (s *server) waitReady() {
	s.t.Helper()
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	hc := &http.Client{Timeout: time.Second}
	if s.tls != nil {
		hc.Transport = &http.Transport{TLSClientConfig: s.tls.clientConfig(s.t)}
	}
	healthy := func() bool {
		resp, err := hc.Get(s.clientURL + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && bytes.Contains(body, []byte(`"health":"true"`))
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(15 * time.Second)
	for !healthy() {
		select {
		case <-tick.C:
		case <-done:
			s.t.Fatalf("etcd %s exited at start:\n%s", s.name, s.log())
		case <-deadline:
			s.t.Fatalf("etcd %s did not answer in 15s:\n%s", s.name, s.log())
		}
	}
}

// kill kills the server with SIGKILL, as a crash would, and waits for it.
func (s *server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

func (s *server) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
	return string(b)
}

// client returns a client of the server, closed when the test ends.
func (s *server) client(user, password string) *clientv3.Client {
	s.t.Helper()
	cfg := clientv3.Config{Endpoints: []string{s.clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Username: user, Password: password}
	if s.tls != nil {
		cfg.TLS = s.tls.clientConfig(s.t)
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// host is the server's host:port, for specs.
func (s *server) host() string {
	_, h, _ := strings.Cut(s.clientURL, "://")
	return h
}

// testTLS is a certificate authority and the server and client
// certificates it signed, as PEM files.
type testTLS struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newTestTLS(t testing.TB) *testTLS {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "disco test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	tt := &testTLS{ca: write("ca.pem", "CERTIFICATE", caDER)}
	tt.serverCert, tt.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	tt.clientCert, tt.clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return tt
}

func (tt *testTLS) clientConfig(t testing.TB) *tls.Config {
	c, err := (&tlsFiles{ca: tt.ca, cert: tt.clientCert, key: tt.clientKey}).config()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recorder is the sink of a test: it keeps every report, the state they
// add up to, and the source's log, and lets the test wait for a condition.
type recorder struct {
	mu      sync.Mutex
	updates []source.Update
	fails   []error
	state   map[string][]*catalog.Instance
	logs    bytes.Buffer
	changed chan struct{} // closed and replaced on every report
}

func newRecorder() *recorder {
	return &recorder{state: map[string][]*catalog.Instance{}, changed: make(chan struct{})}
}

func (r *recorder) Update(u source.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates = append(r.updates, u)
	if u.Full {
		r.state = map[string][]*catalog.Instance{}
	}
	for svc, ins := range u.Services {
		r.state[svc] = ins
		if len(ins) == 0 {
			delete(r.state, svc)
		}
	}
	r.kick()
}

func (r *recorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fails = append(r.fails, err)
	r.kick()
}

func (r *recorder) kick() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Write takes the source's log.
func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.Write(p)
}

// snapshot returns copies of the updates and failures so far.
func (r *recorder) snapshot() ([]source.Update, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]source.Update(nil), r.updates...), append([]error(nil), r.fails...)
}

// view renders the state: one "service/id address:port" line per instance,
// sorted.
func (r *recorder) view() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return render(r.state)
}

func render(services map[string][]*catalog.Instance) string {
	var lines []string
	for svc, ins := range services {
		if len(ins) == 0 {
			lines = append(lines, svc+": none")
		}
		for _, in := range ins {
			lines = append(lines, fmt.Sprintf("%s/%s %s:%d", in.Service, in.ID, in.Address, in.Port))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// log returns the source's log so far.
func (r *recorder) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.String()
}

// waitFor waits until cond holds, checking it after every report, and
// fails the test after 15s.
func (r *recorder) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			ups, fails := r.snapshot()
			t.Fatalf("waited 15s for %s; state:\n%s\n%d updates, failures: %v\nlog:\n%s", what, r.view(), len(ups), fails, r.log())
		}
	}
}

// waitView waits until the state renders as want.
func (r *recorder) waitView(t testing.TB, want string) {
	t.Helper()
	r.waitFor(t, "the state\n"+want, func() bool { return r.view() == want })
}

// waitUpdates waits for n updates in all and returns the nth.
func (r *recorder) waitUpdates(t testing.TB, n int) source.Update {
	t.Helper()
	r.waitFor(t, fmt.Sprintf("%d updates", n), func() bool {
		ups, _ := r.snapshot()
		return len(ups) >= n
	})
	ups, _ := r.snapshot()
	return ups[n-1]
}

// runSource makes the source of spec with a short timeout and quick
// reconnection, runs it into a new recorder until the test ends, and checks
// that Run returned nil then.
func runSource(t testing.TB, spec string, tweak func(*Etcd)) (*Etcd, *recorder) {
	t.Helper()
	rec := newRecorder()
	src, err := source.New(spec, source.Options{
		Logger:  slog.New(slog.NewTextHandler(rec, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := src.(*Etcd)
	e.backoff = source.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	if tweak != nil {
		tweak(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx, rec) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return 10s after its context ended")
		}
	})
	return e, rec
}
