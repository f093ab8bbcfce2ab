package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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
	p := run(t, "dev", "--http", httpAddr, "--dns", testpeer.FreeUDPTCPPort(t), "--agent-http", testpeer.FreePort(t), "--table", table)
	waitReady(t, httpAddr, p)
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
