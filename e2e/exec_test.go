package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/internal/testpeer"
)

// TestExecAndFallbackProxy runs disco dev as the README does, registers a
// backend, and reaches it by name the two ways a program on the node can:
// curl under disco exec (the shim rewrites its connect to the backend), and
// a plain Go dialer to the service's magic address (the agent's fallback
// proxy forwards it).
func TestExecAndFallbackProxy(t *testing.T) {
	curl := testpeer.Need(t, "curl")
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the backend, you asked for %s", r.URL.Path)
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(l)
	defer backend.Close()
	port := l.Addr().(*net.TCPAddr).Port

	httpAddr, table := testpeer.FreePort(t), filepath.Join(t.TempDir(), "disco.table")
	startDev(t, httpAddr, table)
	c, _ := client.New(httpAddr, nil)
	if _, err := c.Register(context.Background(), "web", "w1", catalog.Registration{Address: "127.0.0.1", Port: port}); err != nil {
		t.Fatal(err)
	}

	// curl under the shim: any port on the magic address goes to the backend.
	var out []byte
	testpeer.WaitUntil(t, "curl through disco exec to answer", patience, func() bool {
		out, err = exec.Command(disco, "exec", "--table", table, "--", curl, "-s", "--max-time", "5", "http://web.service.disco/shim").CombinedOutput()
		return err == nil && strings.Contains(string(out), "you asked for /shim")
	})

	// A Go program, which no preload reaches: the fallback proxy, on the
	// backend's port of the service's magic address (127.77.220.68 for web).
	testpeer.WaitUntil(t, "the fallback proxy to answer", patience, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.77.220.68:%d/proxy", port))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "you asked for /proxy")
	})
}

// TestStaticGoBinaryThroughTheFallbackProxy: a Go program built with
// CGO_ENABLED=0, which no preload reaches, resolves a service name at the
// agent's DNS (a magic address) and connects to it; the agent's fallback
// proxy takes the connection to a backend.
func TestStaticGoBinaryThroughTheFallbackProxy(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "gostatic")
	build := exec.Command("go", "build", "-o", bin, "./testdata/gostatic")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "static client reached the backend at %s", r.URL.Path)
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(l)
	defer backend.Close()
	port := l.Addr().(*net.TCPAddr).Port

	httpAddr := testpeer.FreePort(t)
	startServer(t, t.TempDir(), httpAddr, testpeer.FreePort(t))
	c, _ := client.New(httpAddr, nil)
	if _, err := c.Register(context.Background(), "static", "s1", catalog.Registration{Address: "127.0.0.1", Port: port}); err != nil {
		t.Fatal(err)
	}
	// An agent with its DNS answering magic addresses and its fallback
	// proxy on (in a range no other agent on this machine uses).
	agentHTTP, agentDNS := testpeer.FreePort(t), testpeer.FreeUDPTCPPort(t)
	ag := run(t, "agent", "--source", "disco+http://"+httpAddr, "--state-dir", t.TempDir(), "--http", agentHTTP,
		"--dns", agentDNS, "--table", "", "--report", "", "--magic-range", "127.80.0.0/16")
	waitReady(t, agentHTTP, ag)
	var out []byte
	testpeer.WaitUntil(t, "the static client to reach the backend", patience, func() bool {
		out, err = exec.Command(bin, agentDNS, fmt.Sprintf("http://static.service.disco:%d/static", port)).CombinedOutput()
		return err == nil && strings.Contains(string(out), "reached the backend at /static")
	})
	// Through the proxy, not around it: the name resolved to the magic
	// address.
	if n := metric(t, agentHTTP, `disco_agent_proxy_connections_total{result="ok",service="static"}`); n < 1 {
		t.Errorf("the fallback proxy counted %v connections for static", n)
	}
}
