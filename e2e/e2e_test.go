// Package e2e tests the built disco binary from the outside, the way users
// and scripts run it: real processes, real ports, real signals.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/internal/testpeer"
)

// disco is the binary under test, built once by TestMain.
var disco string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "disco-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	disco = filepath.Join(dir, "disco")
	build := exec.Command("go", "build", "-o", disco, "github.com/discotech/disco/cmd/disco")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build disco:", err)
		os.Exit(1)
	}
	// libdisco.so beside the binary, where disco exec finds it when the
	// binary does not carry it; built by the Makefile's own rule.
	shim := exec.Command("make", "-s", "-C", "..", "shim", "BIN="+dir)
	shim.Stdout, shim.Stderr = os.Stdout, os.Stderr
	if err := shim.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build libdisco.so:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// patience bounds every wait for the processes under test.
const patience = 30 * time.Second

// run starts disco with args, stopped (SIGKILL) at the end of the test.
func run(t *testing.T, args ...string) *testpeer.Process {
	t.Helper()
	return testpeer.Start(t, disco, args...)
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, addr string, p *testpeer.Process) {
	t.Helper()
	var last error
	err := p.WaitReady(patience, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			last = err
			return false
		}
		resp.Body.Close()
		last = fmt.Errorf("status %s", resp.Status)
		return resp.StatusCode == 200
	})
	if err != nil {
		t.Fatalf("%v\n(last error %v)", err, last)
	}
}

func startServer(t *testing.T, dataDir, httpAddr, raftAddr string, args ...string) *testpeer.Process {
	if !slices.Contains(args, "--dns") {
		args = append(args, "--dns", testpeer.FreeUDPTCPPort(t))
	}
	p := run(t, append([]string{"server", "--data-dir", dataDir, "--http", httpAddr, "--raft", raftAddr, "--raft-multiplier", "1"}, args...)...)
	waitReady(t, httpAddr, p)
	return p
}

// TestAcknowledgedWritesSurviveKill9 registers instances, kills the server
// with SIGKILL right after the last acknowledgement, and checks that a
// restarted server has every one of them.
func TestAcknowledgedWritesSurviveKill9(t *testing.T) {
	dataDir := t.TempDir()
	httpAddr, raftAddr := testpeer.FreePort(t), testpeer.FreePort(t)
	p := startServer(t, dataDir, httpAddr, raftAddr)
	c, err := client.New(httpAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 200
	want := map[string]*catalog.Instance{}
	for i := range n {
		w := i % 10
		in, err := c.Register(ctx, "web", fmt.Sprintf("w%d", i), catalog.Registration{
			Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: 8000 + i,
			Tags: []string{"v1"}, Meta: map[string]string{"n": fmt.Sprint(i)}, Weight: &w,
			TTL: catalog.Duration(time.Minute),
		})
		if err != nil {
			t.Fatal(err)
		}
		want[in.ID] = in
	}
	// Removals must survive too.
	if err := c.Deregister(ctx, "web", "w0"); err != nil {
		t.Fatal(err)
	}
	delete(want, "w0")
	if !p.Kill9() {
		t.Fatal("the server had exited before kill -9")
	}

	startServer(t, dataDir, httpAddr, raftAddr)
	got, _, err := c.Instances(ctx, "web", client.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("after kill -9 and restart: %d instances, want %d", len(got), len(want))
	}
	for _, in := range got {
		w := want[in.ID]
		if w == nil {
			t.Errorf("unexpected instance %s", in.ID)
			continue
		}
		if in.Address != w.Address || in.Port != w.Port || in.Weight != w.Weight || in.Meta["n"] != w.Meta["n"] ||
			in.ModifyIndex != w.ModifyIndex || in.Status != catalog.Passing {
			t.Errorf("instance %s changed across the restart:\n got  %+v\n want %+v", in.ID, in, w)
		}
	}
	// The restarted server keeps accepting writes, at later indexes.
	in, err := c.Register(ctx, "web", "after", catalog.Registration{Address: "10.9.9.9", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if in.CreateIndex <= want["w1"].ModifyIndex {
		t.Errorf("new write got index %d, not after the restored ones", in.CreateIndex)
	}
}

// devProc is a running disco dev.
type devProc struct {
	*testpeer.Process
	router string // its router's traffic address
}

// startDev runs disco dev without its demo, with every port free, the
// table at table and its data in the test's temporary directory (dev's own
// is removed on exit, which a test's SIGKILL skips), and returns it once
// the registry is ready. args come after, and may name another data
// directory.
func startDev(t *testing.T, httpAddr, table string, args ...string) devProc {
	t.Helper()
	d := devProc{router: testpeer.FreePort(t)}
	d.Process = run(t, append([]string{"dev", "--http", httpAddr, "--dns", testpeer.FreeUDPTCPPort(t), "--agent-http", testpeer.FreePort(t),
		"--table", table, "--router-listen", d.router, "--router-admin", testpeer.FreePort(t), "--no-demo", "--data-dir", t.TempDir()}, args...)...)
	waitReady(t, httpAddr, d.Process)
	return d
}

// TestCLIAgainstServer runs the client commands against disco dev, as the
// README shows them.
func TestCLIAgainstServer(t *testing.T) {
	httpAddr := testpeer.FreePort(t)
	startDev(t, httpAddr, filepath.Join(t.TempDir(), "disco.table"))
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(disco, append([]string{"--server", httpAddr}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("disco %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// disco watch prints changes as they happen.
	watch := run(t, "--server", httpAddr, "watch", "web")
	testpeer.WaitUntil(t, "disco watch to sync", patience, func() bool { return strings.Contains(watch.Output(), "synced") })

	out := cli("register", "web", "10.0.1.5:8080", "--tag", "v1", "--meta", "version=2.1.0")
	if !strings.Contains(out, "registered web/web-10-0-1-5-8080 at 10.0.1.5:8080 (passing)") {
		t.Errorf("register printed %q", out)
	}
	cli("register", "web", "10.0.1.6:8080", "--id", "w2", "--weight", "0", "--ttl", "30s", "--once")
	out = cli("services")
	if !strings.Contains(out, "web") || !strings.Contains(out, "2  ") {
		t.Errorf("services printed %q", out)
	}
	out = cli("instances", "web", "--tag", "v1")
	if !strings.Contains(out, "web-10-0-1-5-8080") || strings.Contains(out, "w2") {
		t.Errorf("instances --tag v1 printed %q", out)
	}
	out = cli("deregister", "web", "w2")
	if !strings.Contains(out, "deregistered web/w2") {
		t.Errorf("deregister printed %q", out)
	}
	// A bad registration is refused with the server's explanation.
	bad, err := exec.Command(disco, "--server", httpAddr, "register", "Web", "10.0.1.5:8080").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), `service: "Web" has upper-case letters`) {
		t.Errorf("bad register: err %v, output %q", err, bad)
	}

	testpeer.WaitUntil(t, "disco watch to print the deregistration", patience, func() bool { return strings.Contains(watch.Output(), "delete   web/w2") })
	for _, line := range []string{"snapshot web: 0 instances", "synced", "put      web/web-10-0-1-5-8080 10.0.1.5:8080 passing", "put      web/w2 10.0.1.6:8080 passing weight=0"} {
		if !strings.Contains(watch.Output(), line) {
			t.Errorf("disco watch output lacks %q:\n%s", line, watch.Output())
		}
	}
}

// TestRegisterKeepsHeartbeatingAndDeregistersOnSignal runs disco register
// with a TTL in the foreground, checks the instance stays passing across
// several TTLs, then interrupts it and checks it deregistered.
func TestRegisterKeepsHeartbeatingAndDeregistersOnSignal(t *testing.T) {
	httpAddr := testpeer.FreePort(t)
	startDev(t, httpAddr, filepath.Join(t.TempDir(), "disco.table"))
	reg := run(t, "--server", httpAddr, "register", "web", "10.0.1.5:8080", "--id", "w1", "--ttl", "5s")
	c, _ := client.New(httpAddr, nil)
	ctx := context.Background()
	var first *catalog.Instance
	testpeer.WaitUntil(t, "the instance to be passing", patience, func() bool {
		in, err := c.Instance(ctx, "web", "w1")
		first = in
		return err == nil && in.Status == catalog.Passing
	})
	// Heartbeats arrive (the server counts them) and the status never moves.
	testpeer.WaitUntil(t, "three heartbeats", patience, func() bool { return metric(t, httpAddr, `disco_lease_heartbeats_total{result="renewed"}`) >= 3 })
	if in, err := c.Instance(ctx, "web", "w1"); err != nil || in.Status != catalog.Passing || in.ModifyIndex != first.ModifyIndex {
		t.Fatalf("after three heartbeats: %+v %v; want passing at unchanged index %d", in, err, first.ModifyIndex)
	}
	reg.Signal(os.Interrupt)
	<-reg.Done()
	if _, err := c.Instance(ctx, "web", "w1"); err == nil {
		t.Error("instance still registered after disco register was interrupted")
	}
}

// metric reads one sample from the server's /metrics, 0 when absent.
func metric(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}
