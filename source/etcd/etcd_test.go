package etcd

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source/sourcetest"
)

// put puts a key, trying again while no member takes it (one of a
// cluster's may just have gone).
func put(t testing.TB, cli *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := cli.Put(ctx, key, value)
		if err == nil {
			return
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("put %s: %v", key, err)
		}
	}
}

func del(t testing.TB, cli *clientv3.Client, key string, opts ...clientv3.OpOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, key, opts...); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

// wait bounds every wait for what the source reports.
const wait = 15 * time.Second

// TestFollowsBothLayouts lists and watches keys of both layouts, the
// grpc-go ones written by etcd's own endpoints manager, next to keys that
// make no instance.
func TestFollowsBothLayouts(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	cli := srv.client("", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	put(t, cli, "/services/web/w1", `{"address":"10.0.1.5","port":8080,"tags":["v1"],"meta":{"k":"v"}}`)
	put(t, cli, "/services/web/w2", `{"address":"10.0.1.6","port":8080,"weight":5}`)
	put(t, cli, "/services/web/bad", `{"address":"10.0.1.7",`)
	put(t, cli, "/services/Web/w1", `{"address":"10.0.1.8","port":8080}`)
	put(t, cli, "/services/orphan", `{"address":"10.0.1.9","port":8080}`)
	put(t, cli, "/elsewhere/web/w9", `{"address":"10.0.9.9","port":8080}`)
	api, err := endpoints.NewManager(cli, "/services/api")
	if err != nil {
		t.Fatal(err)
	}
	if err := api.AddEndpoint(ctx, "/services/api/10.0.2.1:9000", endpoints.Endpoint{Addr: "10.0.2.1:9000"}); err != nil {
		t.Fatal(err)
	}
	if err := api.AddEndpoint(ctx, "/services/api/10.0.2.2:9000", endpoints.Endpoint{Addr: "10.0.2.2:9000", Metadata: map[string]string{"zone": "b"}}); err != nil {
		t.Fatal(err)
	}

	// Pages of two keys: the listing takes several requests.
	e, rec := runSource(t, "etcd://"+srv.host()+"/services", func(e *Etcd) { e.pageSize = 2 })
	first := rec.WaitUpdates(t, 1, wait)
	if !first.Full {
		t.Fatalf("the first update is not Full")
	}
	want := map[string][]*catalog.Instance{
		"api": {
			{Service: "api", ID: "10-0-2-1-9000", Address: "10.0.2.1", Port: 9000, Weight: 100, Status: catalog.Passing},
			{Service: "api", ID: "10-0-2-2-9000", Address: "10.0.2.2", Port: 9000, Meta: map[string]string{"zone": "b"}, Weight: 100, Status: catalog.Passing},
		},
		"web": {
			{Service: "web", ID: "w1", Address: "10.0.1.5", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{"k": "v"}, Weight: 100, Status: catalog.Passing},
			{Service: "web", ID: "w2", Address: "10.0.1.6", Port: 8080, Weight: 5, Status: catalog.Passing},
		},
	}
	if diff := cmp.Diff(want, first.Services); diff != "" {
		t.Errorf("the listing (-want +got):\n%s", diff)
	}
	if n := e.Dropped(); n != 3 {
		t.Errorf("Dropped() = %d after the listing, want 3 (/services/web/bad, /services/Web/w1, /services/orphan)", n)
	}

	// Each change is reported as the whole new set of the services it
	// touched, and only those.
	put(t, cli, "/services/web/w3", `{"address":"10.0.1.10","port":8080,"status":"warning"}`)
	u := rec.WaitUpdates(t, 2, wait)
	if u.Full || len(u.Services) != 1 || len(u.Services["web"]) != 3 {
		t.Errorf("after a put: %+v, want the three instances of web alone", u)
	}

	// A value turned bad drops its instance, not the rest of the service.
	put(t, cli, "/services/web/w2", `{"address":"10.0.1.6","port":0}`)
	rec.WaitState(t, strings.Join([]string{
		"api/10-0-2-1-9000 10.0.2.1:9000 passing weight=100",
		"api/10-0-2-2-9000 10.0.2.2:9000 passing weight=100 meta zone=b",
		"web/w1 10.0.1.5:8080 passing weight=100 tags=v1 meta k=v",
		"web/w3 10.0.1.10:8080 warning weight=100",
	}, "\n"), wait)
	if n := e.Dropped(); n != 4 {
		t.Errorf("Dropped() = %d, want 4", n)
	}

	// Garbage that changes no instance reports nothing: the next update
	// is the next real change.
	n, _ := rec.Counts()
	put(t, cli, "/services/web/junk", `junk`)
	put(t, cli, "/services/web/10-0-2-1-9000", `{"address":"10.0.3.1","port":1}`)
	rec.WaitFor(t, "web/10-0-2-1-9000", wait, func(r *sourcetest.Recorder) bool {
		return strings.Contains(r.State(), "web/10-0-2-1-9000 10.0.3.1:1 passing weight=100")
	})
	if ups, _ := rec.Counts(); ups != n+1 {
		t.Errorf("%d updates for a bad key and a good one, want 1", ups-n)
	}
	// An id taken by a key before is left out.
	web, err := endpoints.NewManager(cli, "/services/web")
	if err != nil {
		t.Fatal(err)
	}
	if err := web.AddEndpoint(ctx, "/services/web/dup", endpoints.Endpoint{Addr: "10.0.2.1:9000"}); err != nil {
		t.Fatal(err)
	}
	if err := api.DeleteEndpoint(ctx, "/services/api/10.0.2.1:9000"); err != nil {
		t.Fatal(err)
	}
	u = rec.WaitUpdates(t, n+2, wait)
	if diff := cmp.Diff([]string{"api"}, sortedKeys(u.Services)); diff != "" {
		t.Errorf("services of the update after the deletion (-want +got):\n%s", diff)
	}
	if n := e.Dropped(); n != 6 {
		t.Errorf("Dropped() = %d, want 6", n)
	}

	// A service whose last key goes is reported with no instances.
	del(t, cli, "/services/api/", clientv3.WithPrefix())
	u = rec.WaitUpdates(t, n+3, wait)
	if ins, ok := u.Services["api"]; !ok || len(ins) != 0 || len(u.Services) != 1 {
		t.Errorf("after deleting api: %+v, want api with no instances", u.Services)
	}
	del(t, cli, "/services/web/junk")
	put(t, cli, "/services/web/w2", `{"address":"10.0.1.6","port":8080}`)
	rec.WaitState(t, strings.Join([]string{
		"api: none",
		"web/10-0-2-1-9000 10.0.3.1:1 passing weight=100",
		"web/w1 10.0.1.5:8080 passing weight=100 tags=v1 meta k=v",
		"web/w2 10.0.1.6:8080 passing weight=100",
		"web/w3 10.0.1.10:8080 warning weight=100",
	}, "\n"), wait)
	if n := e.Dropped(); n != 4 {
		t.Errorf("Dropped() = %d, want 4 (the listing's and the duplicate)", n)
	}
	if fails := rec.Failures(); len(fails) != 0 {
		t.Errorf("failures: %v", fails)
	}
	log := rec.Log()
	for key, times := range map[string]int{
		"/services/web/bad": 1, "/services/Web/w1": 1, "/services/orphan": 1,
		"/services/web/w2": 1, "/services/web/junk": 1, "/services/web/dup": 1,
	} {
		if got := rec.CountLog("key left out", "key="+key+" "); got != times {
			t.Errorf("%s logged %d times, want %d; log:\n%s", key, got, times, log)
		}
	}
}

// TestListsAgainAfterCompaction compacts the revision the watch is to start
// from: the source lists again, without reporting a failure.
func TestListsAgainAfterCompaction(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	cli := srv.client("", "")
	put(t, cli, "/services/web/w1", `{"address":"10.0.1.5","port":8080}`)
	put(t, cli, "/services/web/bad", `{"address":"10.0.1.5"}`)
	lists := 0
	_, rec := runSource(t, "etcd://"+srv.host()+"/services", func(e *Etcd) {
		e.afterList = func(rev int64) {
			lists++
			if lists > 1 {
				return
			}
			// Between the listing and the watch: a change, and the
			// history before it compacted away.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := cli.Put(ctx, "/services/web/w2", `{"address":"10.0.1.6","port":8080}`)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := cli.Put(ctx, "/unrelated", "x"); err != nil {
				t.Error(err)
				return
			}
			if _, err := cli.Compact(ctx, resp.Header.Revision+1, clientv3.WithCompactPhysical()); err != nil {
				t.Error(err)
			}
		}
	})
	second := rec.WaitUpdates(t, 2, wait)
	if !second.Full {
		t.Errorf("the update after the compaction is not Full")
	}
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100\nweb/w2 10.0.1.6:8080 passing weight=100", wait)
	put(t, cli, "/services/web/w3", `{"address":"10.0.1.7","port":8080}`)
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100\nweb/w2 10.0.1.6:8080 passing weight=100\nweb/w3 10.0.1.7:8080 passing weight=100", wait)
	if fails := rec.Failures(); len(fails) != 0 {
		t.Errorf("failures: %v", fails)
	}
	if n := rec.CountLog("key left out", "key=/services/web/bad "); n != 1 {
		t.Errorf("the bad key is logged %d times over two listings, want once:\n%s", n, rec.Log())
	}
	if !strings.Contains(rec.Log(), "compacted") {
		t.Errorf("the log does not tell of the compaction:\n%s", rec.Log())
	}
}

// TestSurvivesRestart kills etcd under a running watch, then starts it
// again on the same data and port.
func TestSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	cli := srv.client("", "")
	put(t, cli, "/services/web/w1", `{"address":"10.0.1.5","port":8080}`)
	_, rec := runSource(t, "etcd://"+srv.host()+"/services", nil)
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100", wait)
	// A change through the watch: it is up when etcd goes.
	put(t, cli, "/services/web/w2", `{"address":"10.0.1.6","port":8080}`)
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100\nweb/w2 10.0.1.6:8080 passing weight=100", wait)

	srv.kill()
	before := rec.Updates()
	// The watch's silence, then reconnections that find no server: none
	// may list nothing.
	rec.WaitFailures(t, 2, wait)
	ups, fails := rec.Updates(), rec.Failures()
	if len(ups) != len(before) {
		t.Errorf("updates while etcd was down: %+v", ups[len(before):])
	}
	for _, err := range fails {
		if !strings.HasPrefix(err.Error(), "source/etcd: ") {
			t.Errorf("failure %q does not start with source/etcd: ", err)
		}
	}
	if got := rec.CountLog("cannot see etcd"); got != 1 {
		t.Errorf("the outage is logged %d times at warning level, want once:\n%s", got, rec.Log())
	}

	srv.start()
	relisted := len(ups) + 1
	u := rec.WaitUpdates(t, relisted, wait)
	if want := "web/w1 10.0.1.5:8080 passing weight=100\nweb/w2 10.0.1.6:8080 passing weight=100"; !u.Full || sourcetest.Render(u.Services) != want {
		t.Errorf("the update after the restart: %+v, want a Full listing of\n%s", u, want)
	}
	// The watch goes on: a change after the restart arrives.
	put(t, srv.client("", ""), "/services/web/w3", `{"address":"10.0.1.7","port":8080}`)
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100\nweb/w2 10.0.1.6:8080 passing weight=100\nweb/w3 10.0.1.7:8080 passing weight=100", wait)
	if !strings.Contains(rec.Log(), "etcd is back") {
		t.Errorf("the log does not tell of the reconnection:\n%s", rec.Log())
	}
}

// TestStartsBeforeEtcd runs the source while etcd is down: it reports
// failures and nothing else until etcd comes.
func TestStartsBeforeEtcd(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	put(t, srv.client("", ""), "/services/web/w1", `{"address":"10.0.1.5","port":8080}`)
	srv.kill()
	_, rec := runSource(t, "etcd://"+srv.host()+"/services", nil)
	rec.WaitFailures(t, 1, wait)
	srv.start()
	u := rec.WaitUpdates(t, 1, wait)
	if !u.Full || sourcetest.Render(u.Services) != "web/w1 10.0.1.5:8080 passing weight=100" {
		t.Errorf("the first update: %+v, want a Full listing of web/w1", u)
	}
}

// TestQuietWatchStaysHealthy checks that etcd answers the probes of a
// watch that sees no change.
func TestQuietWatchStaysHealthy(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	put(t, srv.client("", ""), "/services/web/w1", `{"address":"10.0.1.5","port":8080}`)
	progress := make(chan struct{}, 100)
	_, rec := runSource(t, "etcd://"+srv.host()+"/services", func(e *Etcd) {
		e.timeout = 300 * time.Millisecond
		e.onProgress = func() { progress <- struct{}{} }
	})
	deadline := time.After(15 * time.Second)
	for range 4 {
		select {
		case <-progress:
		case <-deadline:
			t.Fatalf("no progress notifications in 15s; log:\n%s", rec.Log())
		}
	}
	ups, fails := rec.Updates(), rec.Failures()
	if len(ups) != 1 || len(fails) != 0 {
		t.Errorf("%d updates and failures %v, want the listing alone", len(ups), fails)
	}
}

// TestWatchMemberRestarts restarts the member of a three-member cluster that
// serves the source's watch: changes keep coming, with no failure reported.
func TestWatchMemberRestarts(t *testing.T) {
	t.Parallel()
	members := startCluster(t, 3)
	var hosts, urls []string
	for _, m := range members {
		hosts = append(hosts, m.host())
		urls = append(urls, m.clientURL)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: urls, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	put(t, cli, "/services/web/w1", `{"address":"10.0.1.5","port":8080}`)
	_, rec := runSource(t, "etcd://"+strings.Join(hosts, ",")+"/services", nil)
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100", wait)

	// The member with a watcher is the source's.
	var watching *server
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for watching == nil {
		for _, m := range members {
			if watchers(t, m) > 0 {
				watching = m
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no member has a watcher")
		}
	}
	// Not the leader: the point is the watch, not an election.
	st, err := cli.Status(ctx, watching.clientURL)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader == st.Header.MemberId {
		other := members[0]
		if other == watching {
			other = members[1]
		}
		ost, err := cli.Status(ctx, other.clientURL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := watching.client("", "").MoveLeader(ctx, ost.Header.MemberId); err != nil {
			t.Fatal(err)
		}
	}

	watching.kill()
	put(t, cli, "/services/web/w2", `{"address":"10.0.1.6","port":8080}`)
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100\nweb/w2 10.0.1.6:8080 passing weight=100", wait)
	watching.start()
	put(t, cli, "/services/web/w3", `{"address":"10.0.1.7","port":8080}`)
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100\nweb/w2 10.0.1.6:8080 passing weight=100\nweb/w3 10.0.1.7:8080 passing weight=100", wait)
	if fails := rec.Failures(); len(fails) != 0 {
		t.Errorf("failures: %v\nlog:\n%s", fails, rec.Log())
	}
}

// watchers reads how many watchers a member serves from its metrics.
func watchers(t testing.TB, m *server) int {
	t.Helper()
	resp, err := http.Get(m.clientURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "etcd_debugging_mvcc_watcher_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatalf("%s/metrics has no etcd_debugging_mvcc_watcher_total", m.clientURL)
	return 0
}

// TestAuthentication uses the user and password of the spec, and reports
// a wrong password as a failure without listing anything.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	cli := srv.client("", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	put(t, cli, "/services/web/w1", `{"address":"10.0.1.5","port":8080}`)
	for _, step := range []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "reader"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "reader", "/services/", clientv3.GetPrefixRangeEnd("/services/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "disco", "s3cret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "disco", "reader"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	_, good := runSource(t, "etcd://disco:s3cret@"+srv.host()+"/services", nil)
	good.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100", wait)
	put(t, srv.client("root", "rootpw"), "/services/web/w2", `{"address":"10.0.1.6","port":8080}`)
	good.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100\nweb/w2 10.0.1.6:8080 passing weight=100", wait)

	_, bad := runSource(t, "etcd://disco:wrong@"+srv.host()+"/services", nil)
	bad.WaitFailures(t, 1, wait)
	ups, fails := bad.Updates(), bad.Failures()
	if len(ups) != 0 {
		t.Errorf("updates with a wrong password: %+v", ups)
	}
	if !strings.Contains(fails[0].Error(), "authentication failed") {
		t.Errorf("failure %q does not say authentication failed", fails[0])
	}
	if strings.Contains(fails[0].Error(), "wrong") || strings.Contains(bad.Log(), "wrong") {
		t.Errorf("the password shows in the failure or the log")
	}
}

// TestTLS connects with the CA, certificate and key of the spec.
func TestTLS(t *testing.T) {
	t.Parallel()
	tt := newTestTLS(t)
	srv := startServer(t, tt)
	put(t, srv.client("", ""), "/services/web/w1", `{"address":"10.0.1.5","port":8080}`)
	_, rec := runSource(t, "etcd://"+srv.host()+"/services?ca="+tt.ca+"&cert="+tt.clientCert+"&key="+tt.clientKey, nil)
	rec.WaitState(t, "web/w1 10.0.1.5:8080 passing weight=100", wait)
}
