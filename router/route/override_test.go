package route

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/discotech/disco/catalog"
)

func TestParseOverrides(t *testing.T) {
	text := `
# comments and blank lines are skipped
// so are these
route add svc /foo http://10.0.0.1:8080/
route add svc i.com/static https://10.0.0.2 weight 0.25 tags "a, b" opts "strip=/static  tlsskipverify=true"
	route  add tcp :3306 tcp://10.0.0.3:3306
route del svc
route del svc /foo
route del svc /foo http://10.0.0.1:8080/
route del tags "canary"
route del svc tags "a,b"
route weight svc /foo weight 0.1 tags "canary"
route weight svc /foo weight 0.2
route weight /foo weight 0.05 tags "blue"
route weight svc /foo weight 0
`
	got, err := ParseOverrides(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []Override{
		{Line: 4, Cmd: "add", Service: "svc", Src: "/foo", Dst: "http://10.0.0.1:8080/"},
		{Line: 5, Cmd: "add", Service: "svc", Src: "i.com/static", Dst: "https://10.0.0.2", Weight: 0.25, Tags: []string{"a", "b"}, Opts: "strip=/static tlsskipverify=true"},
		{Line: 6, Cmd: "add", Service: "tcp", Src: ":3306", Dst: "tcp://10.0.0.3:3306"},
		{Line: 7, Cmd: "del", Service: "svc"},
		{Line: 8, Cmd: "del", Service: "svc", Src: "/foo"},
		{Line: 9, Cmd: "del", Service: "svc", Src: "/foo", Dst: "http://10.0.0.1:8080/"},
		{Line: 10, Cmd: "del", Tags: []string{"canary"}},
		{Line: 11, Cmd: "del", Service: "svc", Tags: []string{"a", "b"}},
		{Line: 12, Cmd: "weight", Service: "svc", Src: "/foo", Weight: 0.1, Tags: []string{"canary"}},
		{Line: 13, Cmd: "weight", Service: "svc", Src: "/foo", Weight: 0.2},
		{Line: 14, Cmd: "weight", Src: "/foo", Weight: 0.05, Tags: []string{"blue"}},
		{Line: 15, Cmd: "weight", Service: "svc", Src: "/foo"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
	// String gives lines that parse back to the same.
	var lines []string
	for _, o := range got {
		lines = append(lines, o.String())
	}
	again, err := ParseOverrides(strings.Join(lines, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(got, again, cmpopts.IgnoreFields(Override{}, "Line")); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

func TestParseOverridesErrors(t *testing.T) {
	tests := []struct{ text, want string }{
		{"rout add a /b http://c/", `line 1: "rout add a /b http://c/" is not a command`},
		{"\nroute move a", "line 2: route move is not a command"},
		{"route add a /b", "line 1: route add needs a service, a route and a target"},
		{"route add a /b http://c/ weight x", `line 1: weight "x" is not a number`},
		{"route add a /b http://c/ weight 1.5", "line 1: weight 1.5 is not a fraction between 0 and 1"},
		{"route add a /b http://c/ weight -1", "weight -1 is not a fraction"},
		{"route add a /b http://c/ tags a", `tags needs a quoted value, e.g. tags "a"`},
		{`route add a /b http://c/ tags ""`, `tags "" names no tag`},
		{`route add a /b http://c/ tags "x`, "a quote is not closed"},
		{`route add a /b http://c/ opts "strip=b"`, "strip=b must start with '/'"},
		{`route add a /b http://c/ opts "weight=0.1"`, "weight=...\" is for tags"},
		{`route add a /b http://c/ opts "proto=https"`, "proto=https differs from the target's scheme http://"},
		{`route add a /b http://c/ color "red"`, `unexpected "color": after the route come weight, tags, opts`},
		{`route add a /b http://c/ weight 0.1 weight 0.2`, `unexpected "weight"`},
		{`route add a /b http://c/ weight`, "weight needs a value"},
		{"route add a b http://c/", `"b" has no '/'`},
		{"route add a /b ftp://c/", "the scheme must be http, https, tcp or grpc"},
		{"route add a /b 10.0.0.1:80", "is not a URL such as"},
		{"route add a /b http://c:0/", `port "0" is not 1 to 65535`},
		{"route add a /b http://c/x", "use opts \"prepend=/path\""},
		{"route add a :3306 tcp://c", "has no port"},
		{"route add a :3306 http://c:1/", "add proto=tcp"},
		{"route add a /b http://c:1/\nroute add a /b http://d:1/ opts \"strip=/b\"", `line 2: route /b has options "proto=http strip=/b" here and "proto=http" on line 1`},
		{"route del", "route del needs a service or tags"},
		{"route del a /b http://c/ d", "route del takes at most"},
		{"route del a b", `"b" has no '/'`},
		{"route del a /b ftp://c", "the scheme must be"},
		{"route del tags", "tags needs a value"},
		{"route weight a /b", "route weight needs a route and a weight"},
		{"route weight /b weight 0.1", "route weight without a service needs tags"},
		{"route weight a /b weight 2", "weight 2 is not a fraction"},
		{"route weight a /b weight 0.1 opts \"x=y\"", `unexpected "opts"`},
		{"route weight a :80 weight 0.5 tags \"x\"\nroute weight a 80 weight 0.5", `line 2: "80" has no '/'`},
	}
	for _, tt := range tests {
		_, err := ParseOverrides(tt.text)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "route: line ") {
			t.Errorf("ParseOverrides(%q) = %v, want an error with %q", tt.text, err, tt.want)
		}
	}
	// Every bad line is reported, not only the first.
	_, err := ParseOverrides("route x\nroute add a /b http://c/\nroute y")
	if err == nil || !strings.Contains(err.Error(), "line 1:") || !strings.Contains(err.Error(), "line 3:") {
		t.Errorf("two bad lines: %v", err)
	}
}

func mustOverrides(t *testing.T, text string) []Override {
	t.Helper()
	o, err := ParseOverrides(text)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOverridesApplied(t *testing.T) {
	type member struct {
		Service, ID string
		Weight      float64
	}
	web := []*catalog.Instance{
		in("web", "w1", 1, "urlprefix-/web", "urlprefix-/shared", "blue"),
		in("web", "w2", 2, "urlprefix-/web", "urlprefix-/shared", "canary"),
		in("web", "w3", 3, "urlprefix-/web", "urlprefix-/shared"),
	}
	api := []*catalog.Instance{in("api", "a1", 4, "urlprefix-/shared", "urlprefix-/api", "canary")}
	tests := []struct {
		name, text string
		want       map[string][]member // route key → members; absent routes: nil
	}{
		{"none", "", map[string][]member{
			"/web":    {{"web", "w1", 1. / 3}, {"web", "w2", 1. / 3}, {"web", "w3", 1. / 3}},
			"/shared": {{"api", "a1", .25}, {"web", "w1", .25}, {"web", "w2", .25}, {"web", "w3", .25}},
			"/api":    {{"api", "a1", 1}},
		}},
		{"add joins the registry's members", "route add web /web http://10.9.9.9:80/ tags \"ext\"", map[string][]member{
			"/web": {{"web", "http://10.9.9.9:80/", .25}, {"web", "w1", .25}, {"web", "w2", .25}, {"web", "w3", .25}},
		}},
		{"add makes a route of its own", "route add ext i.com/ http://10.9.9.9/ weight 0.5\nroute add ext i.com/ http://10.9.9.8/", map[string][]member{
			"i.com/": {{"ext", "http://10.9.9.8/", .5}, {"ext", "http://10.9.9.9/", .5}},
		}},
		{"del a service", "route del web", map[string][]member{
			"/web": nil, "/shared": {{"api", "a1", 1}}, "/api": {{"api", "a1", 1}},
		}},
		{"del a service's route", "route del web /shared", map[string][]member{
			"/web": {{"web", "w1", 1. / 3}, {"web", "w2", 1. / 3}, {"web", "w3", 1. / 3}}, "/shared": {{"api", "a1", 1}},
		}},
		{"del a target", "route del web /web http://10.0.0.2:8080/", map[string][]member{
			"/web": {{"web", "w1", .5}, {"web", "w3", .5}},
		}},
		{"del by tags", `route del tags "canary"`, map[string][]member{
			"/web": {{"web", "w1", .5}, {"web", "w3", .5}}, "/api": nil,
			"/shared": {{"web", "w1", .5}, {"web", "w3", .5}},
		}},
		{"del a service's tagged instances", `route del web tags "canary"`, map[string][]member{
			"/api": {{"api", "a1", 1}}, "/web": {{"web", "w1", .5}, {"web", "w3", .5}},
		}},
		{"del before add spares it", "route del ext\nroute add ext /ext http://10.9.9.9/", map[string][]member{
			"/ext": {{"ext", "http://10.9.9.9/", 1}},
		}},
		{"del after add removes it", "route add ext /ext http://10.9.9.9/\nroute del ext", map[string][]member{
			"/ext": nil,
		}},
		{"weight a service's tagged instances", `route weight web /web weight 0.1 tags "canary"`, map[string][]member{
			"/web": {{"web", "w1", .45}, {"web", "w2", .1}, {"web", "w3", .45}},
		}},
		{"weight a service", "route weight api /shared weight 0.4", map[string][]member{
			"/shared": {{"api", "a1", .4}, {"web", "w1", .2}, {"web", "w2", .2}, {"web", "w3", .2}},
		}},
		{"weight tagged instances of any service", `route weight /shared weight 0.5 tags "canary"`, map[string][]member{
			"/shared": {{"api", "a1", .25}, {"web", "w1", .25}, {"web", "w2", .25}, {"web", "w3", .25}},
		}},
		{"the last weight line wins; weight 0 clears", "route weight web /web weight 0.5 tags \"canary\"\nroute weight web /web weight 0 tags \"canary\"", map[string][]member{
			"/web": {{"web", "w1", 1. / 3}, {"web", "w2", 1. / 3}, {"web", "w3", 1. / 3}},
		}},
		{"weight after an add line applies to it", "route add web /web http://10.9.9.9:80/ tags \"ext\"\nroute weight web /web weight 0.4 tags \"ext\"", map[string][]member{
			"/web": {{"web", "http://10.9.9.9:80/", .4}, {"web", "w1", .2}, {"web", "w2", .2}, {"web", "w3", .2}},
		}},
		{"weight before an add line does not", "route weight web /web weight 0.4 tags \"ext\"\nroute add web /web http://10.9.9.9:80/ tags \"ext\"", map[string][]member{
			"/web": {{"web", "http://10.9.9.9:80/", .25}, {"web", "w1", .25}, {"web", "w2", .25}, {"web", "w3", .25}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := New(mustOverrides(t, tt.text))
			tb = with(t, tb, "web", web...)
			tb = with(t, tb, "api", api...)
			for key, want := range tt.want {
				var r *Route
				for _, x := range tb.Routes() {
					if x.Key == key {
						r = x
					}
				}
				if want == nil {
					if r != nil {
						t.Errorf("route %s is there, want none", key)
					}
					continue
				}
				if r == nil {
					t.Errorf("no route %s", key)
					continue
				}
				var got []member
				for _, m := range r.Members {
					got = append(got, member{m.Service, m.ID, m.Weight})
				}
				if d := cmp.Diff(want, got, approx); d != "" {
					t.Errorf("route %s (-want +got):\n%s", key, d)
				}
			}
		})
	}
}

func TestOverridesAddProto(t *testing.T) {
	tb := New(mustOverrides(t, `route add db :5432 tcp://10.0.0.5:5432
route add g /g grpc://10.0.0.6:9000/
route add s /s https://10.0.0.7 opts "tlsskipverify=true host=dst"`))
	if r := tb.TCP(5432); r == nil || r.Proto != "tcp" || r.Members[0].Addr != "10.0.0.5:5432" {
		t.Errorf("TCP(5432) = %+v", r)
	}
	if r := tb.Lookup("", "/g"); r.Proto != "grpc" || r.Members[0].Addr != "10.0.0.6:9000" {
		t.Errorf("/g = %+v", r)
	}
	want := &Route{Key: "/s", Prefix: "/s", Proto: "https", HostHeader: "dst", TLSSkipVerify: true,
		Members: []Member{{Service: "s", ID: "https://10.0.0.7", Addr: "10.0.0.7:443", Weight: 1}}}
	if d := cmp.Diff(want, tb.Lookup("", "/s")); d != "" {
		t.Errorf("/s (-want +got):\n%s", d)
	}
	// An add line's service updated from the registry keeps the line's member.
	tb = with(t, tb, "s", in("s", "s1", 1, "urlprefix-/s proto=https tlsskipverify=true host=dst"))
	tb = with(t, tb, "s", nil...)
	if d := cmp.Diff(want, tb.Lookup("", "/s"), ignoreValue); d != "" {
		t.Errorf("/s after the registry's s came and went (-want +got):\n%s", d)
	}
}
