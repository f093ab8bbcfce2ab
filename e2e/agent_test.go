package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discotech/disco/agent"
	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/internal/testpeer"
)

// agentProc is a running disco agent.
type agentProc struct {
	*testpeer.Process
	http, dns string
}

func startAgent(t *testing.T, stateDir string, args ...string) *agentProc {
	t.Helper()
	a := &agentProc{http: testpeer.FreePort(t), dns: testpeer.FreeUDPTCPPort(t)}
	a.Process = run(t, append([]string{"agent", "--state-dir", stateDir, "--http", a.http, "--dns", a.dns, "--hold-window", "3s",
		"--table", filepath.Join(t.TempDir(), "disco.table"), "--dns-magic=false", "--proxy=false"}, args...)...)
	waitReady(t, a.http, a.Process)
	return a
}

func (a *agentProc) status(t *testing.T) agent.Status {
	t.Helper()
	resp, err := http.Get("http://" + a.http + "/v1/agent/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st agent.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// backends renders one service's backends: "w1 w2 w3(held)".
func (a *agentProc) backends(t *testing.T, service string) string {
	t.Helper()
	for _, s := range a.status(t).Services {
		if s.Name == service {
			var ids []string
			for _, b := range s.Backends {
				if b.State == "held" {
					ids = append(ids, b.ID+"(held)")
				} else {
					ids = append(ids, b.ID)
				}
			}
			slices.Sort(ids)
			return strings.Join(ids, " ")
		}
	}
	return "(unknown)"
}

func (a *agentProc) waitBackends(t *testing.T, service, want string) {
	t.Helper()
	testpeer.WaitUntil(t, fmt.Sprintf("the agent's %s to be %q (it is %q)", service, want, a.backends(t, service)), patience, func() bool { return a.backends(t, service) == want })
}

// lookup asks the agent's DNS for a service's addresses.
func (a *agentProc) lookup(t *testing.T, service string) []string {
	t.Helper()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, a.dns)
	}}
	addrs, err := r.LookupHost(context.Background(), service+".service.disco")
	if err != nil {
		t.Fatalf("lookup %s at the agent: %v", service, err)
	}
	slices.Sort(addrs)
	return addrs
}

func ids(n int) string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("w%d", i))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestAgentGuardsAgainstItsSource runs the faults the agent exists for
// against a real registry server: killed mid-run, suddenly listing 1 of 10
// backends, suddenly listing none, and the agent restarted while the
// registry is down, and checks what the agent serves after each.
func TestAgentGuardsAgainstItsSource(t *testing.T) {
	dataDir, stateDir := t.TempDir(), t.TempDir()
	httpAddr, raftAddr := testpeer.FreePort(t), testpeer.FreePort(t)
	srv := startServer(t, dataDir, httpAddr, raftAddr)
	c, err := client.New(httpAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		if _, err := c.Register(ctx, "web", fmt.Sprintf("w%d", i), catalog.Registration{Address: fmt.Sprintf("10.0.1.%d", i), Port: 8080}); err != nil {
			t.Fatal(err)
		}
	}
	ag := startAgent(t, stateDir, "--source", "disco+http://"+httpAddr)
	ag.waitBackends(t, "web", ids(10))
	if got := ag.lookup(t, "web"); len(got) != 10 {
		t.Fatalf("agent DNS: %v", got)
	}

	// The state is on disk within the write delay (1s) of a change.
	testpeer.WaitUntil(t, "the last-known-good state to be written", patience, func() bool {
		return metric(t, ag.http, `disco_guard_lkg_writes_total{result="ok"}`) >= 1
	})

	// The registry is killed: the agent keeps serving all ten, and says the
	// source is unhealthy.
	if !srv.Kill9() {
		t.Fatal("the registry had exited before kill -9")
	}
	testpeer.WaitUntil(t, "the agent to see its source fail", patience, func() bool { return !ag.status(t).Sources[0].Healthy })
	if got := ag.backends(t, "web"); got != ids(10) {
		t.Fatalf("after the registry died the agent serves %q", got)
	}

	// The agent restarts while the registry is still down: the state from
	// disk, answered over DNS too.
	ag.Kill9()
	ag = startAgent(t, stateDir, "--source", "disco+http://"+httpAddr)
	if got := ag.backends(t, "web"); got != ids(10) {
		t.Fatalf("restarted with the registry down, the agent serves %q", got)
	}
	if st := ag.status(t); !st.LKG.Active {
		t.Errorf("status does not say the last-known-good state is in use: %+v", st.LKG)
	}
	if got := ag.lookup(t, "web"); len(got) != 10 {
		t.Fatalf("agent DNS from the last-known-good state: %v", got)
	}

	// The registry comes back and suddenly lists 1 of 10: held, then
	// applied when the hold window has passed.
	startServer(t, dataDir, httpAddr, raftAddr)
	for i := 2; i <= 10; i++ {
		if err := c.Deregister(ctx, "web", fmt.Sprintf("w%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	testpeer.WaitUntil(t, "a hold", patience, func() bool { return len(ag.status(t).Holds) == 1 })
	if got := ag.backends(t, "web"); !strings.Contains(got, "(held)") || !strings.HasPrefix(got, "w1 ") || len(strings.Fields(got)) < 5 {
		t.Fatalf("during the hold the agent serves %q", got)
	}
	h := ag.status(t).Holds[0]
	// All at once ("would remove 9 of 10 backends"), or one by one as the
	// registry's deletions stream in ("... after 5 removed within the
	// last 3s"): either way a hold.
	if !strings.HasPrefix(h.Reason, "would remove ") || h.Deadline.Sub(h.Since) != 3*time.Second {
		t.Errorf("hold: %+v", h)
	}
	ag.waitBackends(t, "web", "w1")

	// A second service loses half its backends (applied at once), then
	// the rest (all: held), then is gone.
	for _, id := range []string{"d1", "d2"} {
		c.Register(ctx, "db", id, catalog.Registration{Address: "10.0.2.1", Port: 5432})
	}
	ag.waitBackends(t, "db", "d1 d2")
	c.Deregister(ctx, "db", "d1")
	ag.waitBackends(t, "db", "d2")
	c.Deregister(ctx, "db", "d2")
	ag.waitBackends(t, "db", "d2(held)")
	ag.waitBackends(t, "db", "(unknown)")
	if got := metric(t, ag.http, `disco_guard_changes_total{kind="confirmed"}`); got != 2 {
		t.Errorf("confirmed removals counted: %v, want 2", got)
	}
}

// TestAgentKeepsAFileSourcesLastGoodReading: a file source that turns
// malformed keeps what it said last.
func TestAgentKeepsAFileSourcesLastGoodReading(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "services.yaml")
	os.WriteFile(path, []byte("services:\n  web:\n    - {id: w1, address: 10.0.1.5, port: 8080}\n    - {id: w2, address: 10.0.1.6, port: 8080}\n"), 0o644)
	ag := startAgent(t, t.TempDir(), "--source", "file://"+path)
	ag.waitBackends(t, "web", "w1 w2")
	os.WriteFile(path, []byte("services:\n  web: [ {id: w1, addr"), 0o644)
	testpeer.WaitUntil(t, "the agent to see its source fail", patience, func() bool { return !ag.status(t).Sources[0].Healthy })
	if got := ag.backends(t, "web"); got != "w1 w2" {
		t.Fatalf("after the file turned malformed the agent serves %q", got)
	}
	if got := ag.lookup(t, "web"); !slices.Equal(got, []string{"10.0.1.5", "10.0.1.6"}) {
		t.Fatalf("agent DNS: %v", got)
	}
}
