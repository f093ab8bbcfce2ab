package server

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/discotech/disco/internal/golden"
)

// TestAPIGolden walks through the API's successful answers. It runs in a
// synctest bubble, so timestamps and indexes are the same on every run and
// the transcript doubles as the examples in docs/api.md.
func TestAPIGolden(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &transcript{s: start(t)}
		tr.do("register an instance with everything", "PUT", "/v1/services/web/instances/w1",
			`{"address":"10.0.1.5","port":8080,"tags":["v2","urlprefix-/web"],"meta":{"version":"2.1.0"},"weight":100,"ttl":"10s"}`)
		tr.do("register a second instance, defaults filled in", "PUT", "/v1/services/web/instances/w2",
			`{"address":"10.0.1.6","port":8080}`)
		tr.do("registering the same thing again changes nothing (same index)", "PUT", "/v1/services/web/instances/w2",
			`{"address":"10.0.1.6","port":8080}`)
		tr.do("a checked instance starts critical until its first check passes", "PUT", "/v1/services/db/instances/d1",
			`{"address":"db1.internal","port":5432,"check":{"type":"tcp","target":"127.0.0.1:1","interval":"5s","timeout":"2s","deregister_after":"1m"}}`)
		tr.do("list services", "GET", "/v1/services", "")
		tr.do("get a service", "GET", "/v1/services/web", "")
		tr.do("only passing instances with tag v2", "GET", "/v1/services/web?passing=1&tag=v2", "")
		tr.do("an unknown service is empty, at index 1", "GET", "/v1/services/nothing", "")
		tr.do("get one instance", "GET", "/v1/services/web/instances/w2", "")
		tr.do("heartbeat", "PUT", "/v1/services/web/instances/w1/heartbeat", "")
		tr.do("heartbeat many instances at once", "PUT", "/v1/heartbeats", `{"instances":["web/w1","web/nope"]}`)
		time.Sleep(11 * time.Second)
		tr.do("eleven seconds without a heartbeat: critical", "GET", "/v1/services/web/instances/w1", "")
		tr.do("a heartbeat revives it", "PUT", "/v1/services/web/instances/w1/heartbeat", "")
		time.Sleep(time.Millisecond)
		tr.do("passing again", "GET", "/v1/services/web/instances/w1", "")
		tr.do("a blocking query with an index already passed returns at once", "GET", "/v1/services/web?index=3&wait=1m", "")
		tr.do("deregister", "DELETE", "/v1/services/web/instances/w2", "")
		tr.do("the service after deregistration", "GET", "/v1/services/web", "")
		tr.do("liveness", "GET", "/healthz", "")
		tr.do("readiness", "GET", "/readyz", "")
		golden.Check(t, "api.golden", tr.Bytes())
	})
}

// TestAPIErrorsGolden covers every kind of bad input: each is a 4xx with a
// message naming the field and the rule, and none changes the catalog.
func TestAPIErrorsGolden(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		tr := &transcript{s: s}
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.1.5","port":8080}`)
		before := call(s, "GET", "/v1/services/web", "").Body.String()

		reg := func(title, body string) { tr.do(title, "PUT", "/v1/services/web/instances/w1", body) }
		reg("malformed JSON", `{"address":"10.0.1.5",`)
		reg("not an object", `[1,2]`)
		reg("empty body", ``)
		reg("trailing data after the object", `{"address":"10.0.1.5","port":8080} {}`)
		reg("unknown field", `{"address":"10.0.1.5","port":8080,"portt":1}`)
		reg("wrong type", `{"address":"10.0.1.5","port":"8080"}`)
		reg("duration as a number", `{"address":"10.0.1.5","port":8080,"ttl":10}`)
		reg("duration that does not parse", `{"address":"10.0.1.5","port":8080,"ttl":"10 seconds"}`)
		reg("missing address and port", `{}`)
		reg("address with a port in it", `{"address":"10.0.1.5:8080","port":8080}`)
		reg("address that is neither IP nor hostname", `{"address":"not a host!","port":8080}`)
		reg("port out of range, weight out of range, ttl too short", `{"address":"10.0.1.5","port":70000,"weight":10001,"ttl":"500ms"}`)
		reg("ttl too long", `{"address":"10.0.1.5","port":8080,"ttl":"25h"}`)
		reg("negative weight", `{"address":"10.0.1.5","port":8080,"weight":-1}`)
		reg("bad tags and meta", `{"address":"10.0.1.5","port":8080,"tags":["ok",""],"meta":{"bad key":"x"}}`)
		reg("unknown check type", `{"address":"10.0.1.5","port":8080,"check":{"type":"grpc","target":"10.0.1.5:9000"}}`)
		reg("check without target", `{"address":"10.0.1.5","port":8080,"check":{"type":"http"}}`)
		reg("tcp check target without port", `{"address":"10.0.1.5","port":8080,"check":{"type":"tcp","target":"10.0.1.5"}}`)
		reg("check timeout longer than interval, thresholds out of range", `{"address":"10.0.1.5","port":8080,"check":{"type":"http","target":"http://10.0.1.5:8080/health","interval":"1s","timeout":"2s","failures":101,"successes":-1}}`)
		reg("deregister_after too short", `{"address":"10.0.1.5","port":8080,"deregister_after":"10ms"}`)
		reg("body over 1 MiB", `{"address":"10.0.1.5","port":8080,"tags":["`+strings.Repeat("x", 1<<20)+`"]}`)
		tr.do("service name with upper case", "PUT", "/v1/services/Web/instances/w1", `{"address":"10.0.1.5","port":8080}`)
		tr.do("instance id too long", "PUT", "/v1/services/web/instances/"+strings.Repeat("a", 64), `{"address":"10.0.1.5","port":8080}`)
		tr.do("service name with an underscore", "GET", "/v1/services/my_web", "")
		tr.do("index that is not a number", "GET", "/v1/services/web?index=abc", "")
		tr.do("wait that is not a duration", "GET", "/v1/services/web?index=1&wait=forever", "")
		tr.do("passing that is not a boolean", "GET", "/v1/services/web?passing=maybe", "")
		tr.do("watch from an index that is not a number", "GET", "/v1/watch?from=-1", "")
		tr.do("batch heartbeat without a body", "PUT", "/v1/heartbeats", "")
		tr.do("heartbeat for an unknown instance", "PUT", "/v1/services/web/instances/nope/heartbeat", "")
		tr.do("heartbeat for an instance without ttl", "PUT", "/v1/services/web/instances/w1/heartbeat", "")
		tr.do("deregister an unknown instance", "DELETE", "/v1/services/web/instances/nope", "")
		tr.do("get an unknown instance", "GET", "/v1/services/web/instances/nope", "")
		tr.do("wrong method", "POST", "/v1/services/web", "")
		tr.do("no such endpoint", "GET", "/v2/services", "")
		golden.Check(t, "api_errors.golden", tr.Bytes())

		if after := call(s, "GET", "/v1/services/web", "").Body.String(); after != before {
			t.Errorf("bad requests changed the catalog:\nbefore %s\nafter  %s", before, after)
		}
	})
}
