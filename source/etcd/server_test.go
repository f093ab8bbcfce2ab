package etcd

import (
	"bytes"
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
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/discotech/disco/internal/testpeer"
	"github.com/discotech/disco/source"
	"github.com/discotech/disco/source/sourcetest"
)

// server is an etcd server a test started, on free loopback ports, with its
// data in a temporary directory. It is killed when the test ends.
type server struct {
	t         testing.TB
	bin       string // the etcd program
	name      string
	cluster   string // --initial-cluster
	dir       string
	clientURL string // http://127.0.0.1:port, https:// with TLS
	peerURL   string
	tls       *testTLS // nil: plain text

	mu   sync.Mutex
	proc *testpeer.Process // nil while killed
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
	bin := testpeer.Need(t, "etcd")
	scheme := "http://"
	if tt != nil {
		scheme = "https://"
	}
	ss := make([]*server, n)
	var cluster []string
	for i := range ss {
		s := &server{t: t, bin: bin, name: fmt.Sprintf("m%d", i), dir: t.TempDir(), clientURL: scheme + testpeer.FreePort(t), peerURL: "http://" + testpeer.FreePort(t), tls: tt}
		cluster = append(cluster, s.name+"="+s.peerURL)
		ss[i] = s
	}
	for _, s := range ss {
		s.cluster = strings.Join(cluster, ",")
	}
	return ss
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
	p := testpeer.Start(s.t, s.bin, args...)
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
}

// waitReady waits until the server says it is healthy.
func (s *server) waitReady() {
	s.t.Helper()
	s.mu.Lock()
	p := s.proc
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
	if err := p.WaitReady(15*time.Second, healthy); err != nil {
		s.t.Fatalf("etcd %s: %v", s.name, err)
	}
}

// kill kills the server with SIGKILL, as a crash would, and waits for it.
func (s *server) kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.Kill9()
	}
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

// runSource makes the source of spec with a short timeout and quick
// reconnection, and runs it into a new recorder, which keeps its log, until
// the test ends.
func runSource(t testing.TB, spec string, tweak func(*Etcd)) (*Etcd, *sourcetest.Recorder) {
	t.Helper()
	rec := sourcetest.NewRecorder()
	src, err := source.New(spec, source.Options{Logger: rec.Logger(slog.LevelDebug), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := src.(*Etcd)
	e.backoff = source.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	if tweak != nil {
		tweak(e)
	}
	sourcetest.Run(t, e, rec)
	return e, rec
}
