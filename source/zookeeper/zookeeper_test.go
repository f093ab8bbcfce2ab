package zookeeper

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/internal/testpeer"
	"github.com/discotech/disco/source"
	"github.com/discotech/disco/source/sourcetest"
)

func TestNew(t *testing.T) {
	type want struct {
		Servers        []string
		Base           string
		SessionTimeout time.Duration
	}
	for spec, w := range map[string]want{
		"zookeeper://127.0.0.1:2181/services":                    {[]string{"127.0.0.1:2181"}, "/services", DefaultSessionTimeout},
		"zookeeper://zk1:2181,zk2:2182/disco/services/":          {[]string{"zk1:2181", "zk2:2182"}, "/disco/services", DefaultSessionTimeout},
		"zookeeper://zk1/services?session_timeout=30s":           {[]string{"zk1:2181"}, "/services", 30 * time.Second},
		"zookeeper://zk1,zk2:2182/services?session_timeout=1m0s": {[]string{"zk1:2181", "zk2:2182"}, "/services", time.Minute},
		"zookeeper://zk1,zk2/services":                           {[]string{"zk1:2181", "zk2:2181"}, "/services", DefaultSessionTimeout},
		"zookeeper://[::1]/services":                             {[]string{"[::1]:2181"}, "/services", DefaultSessionTimeout},
		"zookeeper://[::1]:2182/services":                        {[]string{"[::1]:2182"}, "/services", DefaultSessionTimeout},
	} {
		src, err := source.New(spec, source.Options{})
		if err != nil {
			t.Errorf("New(%q): %v", spec, err)
			continue
		}
		z := src.(*ZooKeeper)
		if diff := cmp.Diff(w, want{z.servers, z.base, z.sessionTimeout}); diff != "" {
			t.Errorf("New(%q) (-want +got):\n%s", spec, diff)
		}
	}
	for spec, msg := range map[string]string{
		"zookeeper:///services":                            "no server",
		"zookeeper://127.0.0.1:2181":                       "no base path",
		"zookeeper://127.0.0.1:2181/":                      "no base path",
		"zookeeper://127.0.0.1:99999/services":             `"127.0.0.1:99999" is not HOST:PORT`,
		"zookeeper://,127.0.0.1:2181/services":             `"" is not HOST:PORT`,
		"zookeeper://127.0.0.1:2181/a//b":                  "is not a ZooKeeper path",
		"zookeeper://127.0.0.1:2181/a/../b":                "is not a ZooKeeper path",
		"zookeeper://127.0.0.1:2181/s?session_timeout=1ms": "session_timeout=1ms",
		"zookeeper://127.0.0.1:2181/s?chroot=/x":           `unknown parameter "chroot"`,
		"zookeeper://u:secret@127.0.0.1:2181/s":            "credentials in the spec are not supported",
	} {
		_, err := source.New(spec, source.Options{})
		if err == nil || !errors.Is(err, source.ErrSpec) || !strings.Contains(err.Error(), msg) {
			t.Errorf("New(%q) = %v, want ErrSpec saying %q", spec, err, msg)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q): the error shows the password: %v", spec, err)
		}
	}
}

func TestParse(t *testing.T) {
	web := func(id, addr string, port int) *catalog.Instance {
		return &catalog.Instance{Service: "web", ID: id, Address: addr, Port: port, Weight: catalog.DefaultWeight, Status: catalog.Passing}
	}
	withMeta := func(in *catalog.Instance, kv ...string) *catalog.Instance {
		in.Meta = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			in.Meta[kv[i]] = kv[i+1]
		}
		return in
	}
	disabled := web("w1", "10.0.1.5", 8080)
	disabled.Status, disabled.Output = catalog.Critical, disabledOutput
	for _, tc := range []struct {
		name, child, data string
		want              *catalog.Instance
		err               string
	}{
		{"curator", "8D3C0A1E-0000-4000-8000-00000000ABCD", curator("web", "8D3C0A1E-0000-4000-8000-00000000ABCD", "10.0.1.5", 8080),
			web("8d3c0a1e-0000-4000-8000-00000000abcd", "10.0.1.5", 8080), ""},
		{"before enabled existed", "w1", `{"name":"web","id":"w1","address":"10.0.1.5","port":8080,"sslPort":null,"payload":null,"registrationTimeUTC":0,"serviceType":"DYNAMIC","uriSpec":null}`,
			web("w1", "10.0.1.5", 8080), ""},
		{"disabled", "w1", strings.Replace(curator("web", "w1", "10.0.1.5", 8080), `"enabled":true`, `"enabled":false`, 1),
			disabled, ""},
		{"ssl port only", "w1", `{"name":"web","id":"w1","address":"web-1.example.com","port":null,"sslPort":8443}`,
			web("w1", "web-1.example.com", 8443), ""},
		{"both ports", "w1", `{"address":"10.0.1.5","port":8080,"sslPort":8443}`,
			web("w1", "10.0.1.5", 8080), ""},
		{"id that is no label", "host_1:8080", `{"address":"10.0.1.5","port":8080}`,
			web("host-1-8080", "10.0.1.5", 8080), ""},
		{"map payload", "w1", `{"address":"10.0.1.5","port":8080,"payload":{"@class":"java.util.LinkedHashMap","zone":"eu-1","replicas":3,"bad key":"x"}}`,
			withMeta(web("w1", "10.0.1.5", 8080), "zone", "eu-1"), ""},
		{"spring cloud payload", "w1", `{"address":"10.0.1.5","port":8080,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"web-1","name":"web","metadata":{"instance_status":"UP","version":"2"}}}`,
			withMeta(web("w1", "10.0.1.5", 8080), "instance_status", "UP", "version", "2"), ""},
		{"string payload", "w1", `{"address":"10.0.1.5","port":8080,"payload":["java.lang.String","hello"]}`,
			web("w1", "10.0.1.5", 8080), ""},
		{"no port", "w1", `{"address":"10.0.1.5","port":null,"sslPort":null}`, nil, "no port"},
		{"port out of range", "w1", curator("web", "w1", "10.0.1.5", 70000), nil, "port: must be between 1 and 65535"},
		{"port as text", "w1", `{"address":"10.0.1.5","port":"8080"}`, nil, "not Curator's ServiceInstance"},
		{"no address", "w1", `{"address":null,"port":8080}`, nil, "address: is required"},
		{"not json", "w1", `{"name":"web",`, nil, "not Curator's ServiceInstance"},
		{"empty", "w1", ``, nil, "not a JSON object"},
		{"array", "w1", `[1,2]`, nil, "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse("web", tc.child, []byte(tc.data))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parse = %v, %v; want an error saying %q", got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parse (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNoServer: with nothing to connect to, the source says so once it has
// waited a request's timeout, and reports nothing else.
func TestNoServer(t *testing.T) {
	t.Parallel()
	rec := follow(t, "zookeeper://"+testpeer.FreePort(t)+"/services", 300*time.Millisecond)
	rec.WaitFailures(t, 1, 10*time.Second)
	if err := rec.LastFailure(); !strings.Contains(err.Error(), "no session with") {
		t.Errorf("failure = %v, want one saying there is no session", err)
	}
	if u, _ := rec.Counts(); u != 0 {
		t.Errorf("updates without a server: %v", rec.Updates())
	}
}

// TestFollowsCurator follows a Curator layout through the changes a
// registry sees: instances and services coming and going, data changing,
// bad data, and a session whose ephemeral instances go with it.
func TestFollowsCurator(t *testing.T) {
	t.Parallel()
	zs := startZK(t)
	a := dial(t, zs.addr())
	b := dial(t, zs.addr())
	const base = "/disco/services"
	const uuid = "8D3C0A1E-0000-4000-8000-00000000000A"
	a.register(base, "web", uuid, true, curator("web", uuid, "10.0.1.5", 8080))
	a.register(base, "web", "w2", true, curator("web", "w2", "10.0.1.6", 8080))
	b.register(base, "Billing_API", "b1", true, `{"name":"Billing_API","id":"b1","address":"10.0.2.1","port":null,"sslPort":8443,"payload":{"@class":"java.util.LinkedHashMap","zone":"eu-1","replicas":3},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null,"enabled":true}`)
	b.mkdirs(base + "/empty")

	rec := follow(t, "zookeeper://"+zs.addr()+base, 3*time.Second)
	state := `
billing-api/b1 10.0.2.1:8443 passing weight=100 meta zone=eu-1
empty: none
web/8d3c0a1e-0000-4000-8000-00000000000a 10.0.1.5:8080 passing weight=100
web/w2 10.0.1.6:8080 passing weight=100
`
	rec.WaitState(t, state, 15*time.Second)
	if first := rec.Updates()[0]; !first.Full {
		t.Errorf("the first update is not full: %+v", first)
	}
	if n := rec.CountLog("not a DNS label", "Billing_API"); n != 1 {
		t.Errorf("the mapped service name was logged %d times, want once", n)
	}

	// An instance comes: one update, with every instance of web alone.
	n, _ := rec.Counts()
	b.register(base, "web", "w3", true, curator("web", "w3", "10.0.1.7", 8080))
	state += "web/w3 10.0.1.7:8080 passing weight=100\n"
	rec.WaitState(t, state, 15*time.Second)
	for _, u := range rec.Updates()[n:] {
		if u.Full || len(u.Services) != 1 || len(u.Services["web"]) != 3 {
			t.Errorf("update for a new instance of web: %+v, want all three of web alone", u)
		}
	}

	// Its data changes: disabled, then moved and enabled again.
	b.set(base+"/web/w3", strings.Replace(curator("web", "w3", "10.0.1.7", 8080), `"enabled":true`, `"enabled":false`, 1))
	state = strings.Replace(state, "web/w3 10.0.1.7:8080 passing weight=100", "web/w3 10.0.1.7:8080 critical weight=100", 1)
	rec.WaitState(t, state, 15*time.Second)
	b.set(base+"/web/w3", curator("web", "w3", "10.0.1.7", 9090))
	state = strings.Replace(state, "web/w3 10.0.1.7:8080 critical weight=100", "web/w3 10.0.1.7:9090 passing weight=100", 1)
	rec.WaitState(t, state, 15*time.Second)

	// A service comes.
	b.register(base, "cache", "c1", true, curator("cache", "c1", "10.0.3.1", 6379))
	state += "cache/c1 10.0.3.1:6379 passing weight=100\n"
	rec.WaitState(t, state, 15*time.Second)

	// Bad data is left out and logged once; the rest of web stays. w4,
	// written after them, says when the source has seen them.
	b.register(base, "web", "bad-json", true, `{"name":"web",`)
	b.register(base, "web", "bad-port", true, curator("web", "bad-port", "10.0.1.9", 70000))
	b.register(base, "web", "w4", true, curator("web", "w4", "10.0.1.8", 8080))
	rec.WaitState(t, state+"web/w4 10.0.1.8:8080 passing weight=100\n", 15*time.Second)
	b.delete(base + "/web/w4") // web is read again; the bad ones are not logged again
	rec.WaitState(t, state, 15*time.Second)
	for _, bad := range []string{"bad-json", "bad-port"} {
		if n := rec.CountLog("left out", base+"/web/"+bad); n != 1 {
			t.Errorf("%s was logged %d times, want once:\n%s", bad, n, rec.Log())
		}
	}
	// Mended, it comes in.
	b.set(base+"/web/bad-port", curator("web", "bad-port", "10.0.1.9", 8080))
	state += "web/bad-port 10.0.1.9:8080 passing weight=100\n"
	rec.WaitState(t, state, 15*time.Second)

	// Session a ends: its ephemeral instances go, the others stay.
	a.conn.Close()
	state = strings.Replace(state, "web/8d3c0a1e-0000-4000-8000-00000000000a 10.0.1.5:8080 passing weight=100\n", "", 1)
	state = strings.Replace(state, "web/w2 10.0.1.6:8080 passing weight=100\n", "", 1)
	rec.WaitState(t, state, 15*time.Second)

	// A service's last instance goes, then its directory.
	n, _ = rec.Counts()
	b.delete(base + "/cache/c1")
	b.delete(base + "/cache")
	state = strings.Replace(state, "cache/c1 10.0.3.1:6379 passing weight=100\n", "cache: none\n", 1)
	rec.WaitState(t, state, 15*time.Second)

	// A base path that is not there yet (Curator makes it when the first
	// instance registers) holds no services until it comes.
	other := follow(t, "zookeeper://"+zs.addr()+"/other", 3*time.Second)
	other.WaitFor(t, "a full, empty listing of /other", 15*time.Second, func(r *sourcetest.Recorder) bool { return fulls(r) == 1 })
	if u := other.Updates()[0]; len(u.Services) != 0 {
		t.Errorf("services under a missing base path: %+v", u)
	}
	b.register("/other", "api", "a1", true, curator("api", "a1", "10.0.4.1", 80))
	other.WaitState(t, "api/a1 10.0.4.1:80 passing weight=100", 15*time.Second)

	for i, u := range rec.Updates() {
		if u.Full && len(u.Services) == 0 {
			t.Errorf("update %d is full and empty", i)
		}
		if ins, ok := u.Services["web"]; ok && len(ins) == 0 {
			t.Errorf("update %d empties web", i)
		}
	}
	if _, f := rec.Counts(); f != 0 {
		t.Errorf("%d failures; the last: %v", f, rec.LastFailure())
	}
}

// TestSurvivesRestart: ZooKeeper killed outright is one failure and no
// update; back on the same data, the source lists everything again and
// its watches work.
func TestSurvivesRestart(t *testing.T) {
	t.Parallel()
	zs := startZK(t)
	r := dial(t, zs.addr())
	r.register("/services", "web", "w1", false, curator("web", "w1", "10.0.1.5", 8080))
	r.register("/services", "web", "w2", false, curator("web", "w2", "10.0.1.6", 8080))
	rec := follow(t, "zookeeper://"+zs.addr()+"/services", 3*time.Second)
	state := `
web/w1 10.0.1.5:8080 passing weight=100
web/w2 10.0.1.6:8080 passing weight=100
`
	rec.WaitState(t, state, 15*time.Second)
	n, _ := rec.Counts()
	full := fulls(rec)

	zs.kill()
	rec.WaitFailures(t, 1, 10*time.Second)
	if err := rec.LastFailure(); !strings.Contains(err.Error(), "lost the connection") {
		t.Errorf("failure = %v, want one saying the connection was lost", err)
	}
	if u, _ := rec.Counts(); u != n {
		t.Errorf("updates while ZooKeeper is down: %+v", rec.Updates()[n:])
	}

	zs.start()
	rec.WaitFor(t, "a full listing after the restart", 15*time.Second, func(r *sourcetest.Recorder) bool { return fulls(r) > full })
	rec.WaitState(t, state, 15*time.Second)

	r2 := dial(t, zs.addr())
	r2.register("/services", "web", "w3", true, curator("web", "w3", "10.0.1.7", 8080))
	state += "web/w3 10.0.1.7:8080 passing weight=100\n"
	rec.WaitState(t, state, 15*time.Second)
	r2.set("/services/web/w1", curator("web", "w1", "10.0.1.5", 9090))
	state = strings.Replace(state, "10.0.1.5:8080", "10.0.1.5:9090", 1)
	rec.WaitState(t, state, 15*time.Second)

	for i, u := range rec.Updates()[n:] {
		if len(u.Services["web"]) < 2 {
			t.Errorf("update %d after the crash lost instances of web: %+v", n+i, u)
		}
	}
	if _, f := rec.Counts(); f != 1 {
		t.Errorf("%d failures for one outage, want 1", f)
	}
}

// TestSessionExpiry: cut off for longer than its session, the source finds
// the session expired when it gets through, lists everything again on a
// new one, and follows changes again.
func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	zs := startZK(t)
	px := startProxy(t, zs.addr())
	r := dial(t, zs.addr())
	r.register("/services", "web", "w1", false, curator("web", "w1", "10.0.1.5", 8080))
	rec := follow(t, "zookeeper://"+px.addr()+"/services?session_timeout=1s", 3*time.Second)
	state := "web/w1 10.0.1.5:8080 passing weight=100\n"
	rec.WaitState(t, state, 15*time.Second)
	testpeer.WaitUntil(t, "the source's session and the registrar's", 10*time.Second, func() bool { return zs.sessions() == 2 })
	full := fulls(rec)

	px.setCut(true)
	rec.WaitFailures(t, 1, 10*time.Second)
	testpeer.WaitUntil(t, "the source's session to expire", 15*time.Second, func() bool { return zs.sessions() == 1 })
	r.register("/services", "web", "w2", false, curator("web", "w2", "10.0.1.6", 8080))
	state += "web/w2 10.0.1.6:8080 passing weight=100\n"

	px.setCut(false)
	rec.WaitFor(t, "a full listing on a new session", 15*time.Second, func(r *sourcetest.Recorder) bool { return fulls(r) > full })
	rec.WaitState(t, state, 15*time.Second)
	if n := rec.CountLog("session expired"); n != 1 {
		t.Errorf("session expiry logged %d times, want once", n)
	}

	r.register("/services", "web", "w3", false, curator("web", "w3", "10.0.1.7", 8080))
	state += "web/w3 10.0.1.7:8080 passing weight=100\n"
	rec.WaitState(t, state, 15*time.Second)
}
