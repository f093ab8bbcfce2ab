package route

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/discotech/disco/catalog"
)

// in is an instance of service svc listening on 10.0.0.<n>:8080, of
// registered weight 100.
func in(svc, id string, n int, tags ...string) *catalog.Instance {
	return &catalog.Instance{Service: svc, ID: id, Address: fmt.Sprintf("10.0.0.%d", n), Port: 8080,
		Weight: catalog.DefaultWeight, Status: catalog.Passing, Tags: tags}
}

// with applies instances of svc to tb and fails the test on any error.
func with(t testing.TB, tb *Table, svc string, instances ...*catalog.Instance) *Table {
	t.Helper()
	next, _, _, errs := tb.With(svc, instances)
	for _, err := range errs {
		t.Errorf("With(%s): %v", svc, err)
	}
	return next
}

// approx compares weights computed two ways.
var approx = cmpopts.EquateApprox(0, 1e-12)

// ignoreValue leaves Route.Value out of comparisons.
var ignoreValue = cmpopts.IgnoreFields(Route{}, "Value")

func keyOf(r *Route) string {
	if r == nil {
		return "<nil>"
	}
	return r.Key
}

func TestLookupOrder(t *testing.T) {
	tb := New(nil)
	tb = with(t, tb, "a", in("a", "a1", 1, "urlprefix-/", "urlprefix-/foo", "urlprefix-/foo/bar"))
	tb = with(t, tb, "b", in("b", "b1", 2, "urlprefix-i.com/", "urlprefix-I.COM/static"))
	tb = with(t, tb, "c", in("c", "c1", 3, "urlprefix-*.example.com/", "urlprefix-*.a.example.com/x"))
	tb = with(t, tb, "d", in("d", "d1", 4, "urlprefix-api.example.com/v1", "urlprefix-:3306 proto=tcp"))

	tests := []struct{ host, path, want string }{
		{"", "/foo/baz", "/foo"},
		{"x.com", "/foo/bar/baz", "/foo/bar"},
		{"x.com", "/foobar", "/foo"}, // a plain string prefix
		{"x.com", "/Foo", "/"},       // paths are case-sensitive
		{"", "", "<nil>"},            // "/" is not a prefix of ""
		{"I.COM:8080", "/static/x", "i.com/static"},
		{"i.com", "/other", "i.com/"}, // the host's catch-all beats host-less /foo...
		{"i.com", "/foo", "i.com/"},   // ...even when the host-less prefix is longer
		{"i.com.", "/", "i.com/"},     // a final dot
		{"api.example.com", "/v1/x", "api.example.com/v1"},
		{"api.example.com", "/v2", "*.example.com/"}, // no exact match: the wildcard
		{"b.a.example.com", "/x/y", "*.a.example.com/x"},
		{"B.A.Example.Com:443", "/y", "*.example.com/"}, // the longest suffix has no match: the next
		{"z.b.a.example.com", "/x", "*.a.example.com/x"},
		{"example.com", "/y", "/"},   // *.example.com is not example.com
		{"xexample.com", "/y", "/"},  // nor a name merely ending in it
		{"[::1]:80", "/foo", "/foo"}, // an IPv6 literal with a port
		{"10.0.0.1:80", "/foo/bar", "/foo/bar"},
	}
	for _, tt := range tests {
		if got := keyOf(tb.Lookup(tt.host, tt.path)); got != tt.want {
			t.Errorf("Lookup(%q, %q) = %s, want %s", tt.host, tt.path, got, tt.want)
		}
	}
	if r := tb.TCP(3306); keyOf(r) != ":3306" || r.Proto != "tcp" || r.Port != 3306 {
		t.Errorf("TCP(3306) = %+v", r)
	}
	for _, p := range []int{0, 3307, 70000, -1} {
		if r := tb.TCP(p); r != nil {
			t.Errorf("TCP(%d) = %s, want nil", p, r.Key)
		}
	}

	var keys []string
	for _, r := range tb.Routes() {
		keys = append(keys, r.Key)
	}
	want := []string{
		"api.example.com/v1", "i.com/static", "i.com/",
		"*.a.example.com/x", "*.example.com/",
		"/foo/bar", "/foo", "/",
		":3306",
	}
	if d := cmp.Diff(want, keys); d != "" {
		t.Errorf("Routes() in match order (-want +got):\n%s", d)
	}
	if tb.Len() != len(want) {
		t.Errorf("Len() = %d, want %d", tb.Len(), len(want))
	}
}

func TestLookupAllocs(t *testing.T) {
	tb := with(t, New(nil), "a", in("a", "a1", 1, "urlprefix-/", "urlprefix-Host.com/x", "urlprefix-*.b.com/", "urlprefix-:3306 proto=tcp"))
	allocs := testing.AllocsPerRun(100, func() {
		tb.Lookup("HOST.com:80", "/x/y")
		tb.Lookup("a.B.com", "/x/y")
		tb.Lookup("other", "/x")
		tb.TCP(3306)
	})
	if allocs != 0 {
		t.Errorf("Lookup and TCP allocate %v times, want 0", allocs)
	}
}

func TestRewrite(t *testing.T) {
	tests := []struct{ strip, prepend, path, want string }{
		{"", "", "/a/b", "/a/b"},
		{"/foo", "", "/foo/bar", "/bar"},
		{"/foo", "", "/other/bar", "/other/bar"}, // only when the path starts with it
		{"/foo", "", "/foo", "/"},                // nothing left: the root
		{"/foo", "", "/foobar", "/bar"},          // a '/' is put in front
		{"", "/x", "/bar", "/x/bar"},
		{"/foo", "/x", "/foo/bar", "/x/bar"}, // strip, then prepend
		{"/foo", "/x", "/foo", "/x"},
		{"/foo/", "/x/", "/foo/bar", "/x/bar"},
	}
	for _, tt := range tests {
		r := &Route{Strip: tt.strip, Prepend: tt.prepend}
		if got := r.Rewrite(tt.path); got != tt.want {
			t.Errorf("strip=%s prepend=%s: Rewrite(%q) = %q, want %q", tt.strip, tt.prepend, tt.path, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { (&Route{Strip: "/a"}).Rewrite("/a/b") }); n != 0 {
		t.Errorf("Rewrite with strip only allocates %v times", n)
	}
}

func weighted(svc, id string, n, weight int, tags ...string) *catalog.Instance {
	i := in(svc, id, n, tags...)
	i.Weight = weight
	return i
}

func TestWeights(t *testing.T) {
	type member struct {
		ID     string
		Weight float64
	}
	type svc struct {
		name      string
		instances []*catalog.Instance
	}
	tests := []struct {
		name     string
		services []svc
		want     []member // of route /a, by (service, id)
	}{
		{"equal by default", []svc{{"a", []*catalog.Instance{
			in("a", "1", 1, "urlprefix-/a"), in("a", "2", 2, "urlprefix-/a"),
		}}}, []member{{"1", 0.5}, {"2", 0.5}}},
		{"registered weights", []svc{{"a", []*catalog.Instance{
			weighted("a", "1", 1, 100, "urlprefix-/a"), weighted("a", "2", 2, 300, "urlprefix-/a"),
		}}}, []member{{"1", 0.25}, {"2", 0.75}}},
		{"a 0.1 canary among 3", []svc{{"a", []*catalog.Instance{
			in("a", "c", 1, "urlprefix-/a weight=0.1"),
			in("a", "s1", 2, "urlprefix-/a"), in("a", "s2", 3, "urlprefix-/a"), in("a", "s3", 4, "urlprefix-/a"),
		}}}, []member{{"c", 0.1}, {"s1", 0.3}, {"s2", 0.3}, {"s3", 0.3}}},
		{"canaries share their fraction by registered weight", []svc{{"a", []*catalog.Instance{
			weighted("a", "c1", 1, 100, "urlprefix-/a weight=0.1"), weighted("a", "c2", 2, 300, "urlprefix-/a weight=0.1"),
			in("a", "s", 3, "urlprefix-/a"),
		}}}, []member{{"c1", 0.025}, {"c2", 0.075}, {"s", 0.9}}},
		{"fractions over 1 are normalised; the rest get nothing", []svc{
			{"a", []*catalog.Instance{in("a", "a1", 1, "urlprefix-/a weight=0.8")}},
			{"b", []*catalog.Instance{in("b", "b1", 2, "urlprefix-/a weight=0.6")}},
			{"c", []*catalog.Instance{in("c", "c1", 3, "urlprefix-/a")}},
		}, []member{{"a1", 0.8 / 1.4}, {"b1", 0.6 / 1.4}}},
		{"fractions of exactly 1 leave nothing", []svc{
			{"a", []*catalog.Instance{in("a", "a1", 1, "urlprefix-/a weight=1"), in("a", "a2", 2, "urlprefix-/a")}},
		}, []member{{"a1", 1}}},
		{"fractions alone are scaled up", []svc{
			{"a", []*catalog.Instance{in("a", "a1", 1, "urlprefix-/a weight=0.2")}},
			{"b", []*catalog.Instance{in("b", "b1", 2, "urlprefix-/a weight=0.3")}},
		}, []member{{"a1", 0.4}, {"b1", 0.6}}},
		{"a drained canary gets nothing, the rest all", []svc{{"a", []*catalog.Instance{
			weighted("a", "c", 1, 0, "urlprefix-/a weight=0.1"), in("a", "s1", 2, "urlprefix-/a"), in("a", "s2", 3, "urlprefix-/a"),
		}}}, []member{{"s1", 0.5}, {"s2", 0.5}}},
		{"critical instances are left out", []svc{{"a", []*catalog.Instance{
			in("a", "1", 1, "urlprefix-/a"), func() *catalog.Instance {
				i := in("a", "2", 2, "urlprefix-/a")
				i.Status = catalog.Critical
				return i
			}(),
		}}}, []member{{"1", 1}}},
		{"all drained: the route stays, without members", []svc{{"a", []*catalog.Instance{
			weighted("a", "1", 1, 0, "urlprefix-/a"),
		}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := New(nil)
			for _, s := range tt.services {
				tb = with(t, tb, s.name, s.instances...)
			}
			r := tb.Lookup("", "/a")
			if r == nil {
				t.Fatal("no route /a")
			}
			var got []member
			sum := 0.0
			for _, m := range r.Members {
				got = append(got, member{m.ID, m.Weight})
				sum += m.Weight
			}
			if d := cmp.Diff(tt.want, got, approx); d != "" {
				t.Errorf("members (-want +got):\n%s", d)
			}
			if len(got) > 0 && (sum < 1-1e-9 || sum > 1+1e-9) {
				t.Errorf("weights add up to %v", sum)
			}
		})
	}
}

func TestWithKeepsUnchangedRoutes(t *testing.T) {
	t0 := New(nil)
	t1 := with(t, t0, "a", in("a", "a1", 1, "urlprefix-/a", "urlprefix-/shared"))
	t2 := with(t, t1, "b", in("b", "b1", 2, "urlprefix-/b", "urlprefix-/shared"))
	if t0.Len() != 0 || t1.Len() != 2 || t2.Len() != 3 {
		t.Fatalf("Len: %d %d %d", t0.Len(), t1.Len(), t2.Len())
	}
	if t2.Lookup("", "/a") != t1.Lookup("", "/a") {
		t.Error("b's update made a new /a")
	}
	for _, r := range t2.Routes() {
		r.Value = "set by the host"
	}
	want := routeCopies(t2)

	// The same instances, in another order: nothing changes.
	t3, changed, removed, errs := t2.With("b", []*catalog.Instance{in("b", "b1", 2, "urlprefix-/shared", "urlprefix-/b")})
	if len(changed)+len(removed)+len(errs) != 0 {
		t.Errorf("a repeated update: changed %v, removed %v, errs %v", keys(changed), removed, errs)
	}
	for _, r := range t2.Routes() {
		if t3.Lookup("", r.Prefix) != r {
			t.Errorf("a repeated update made a new %s", r.Key)
		}
	}

	// b goes: /b is removed, /shared changes, /a is kept.
	t4, changed, removed, errs := t3.With("b", nil)
	if len(errs) != 0 {
		t.Error(errs)
	}
	if d := cmp.Diff([]string{"/shared"}, keys(changed)); d != "" {
		t.Errorf("changed (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"/b"}, removed); d != "" {
		t.Errorf("removed (-want +got):\n%s", d)
	}
	if t4.Lookup("", "/a") != t1.Lookup("", "/a") || t4.Lookup("", "/a").Value != "set by the host" {
		t.Error("/a was not kept")
	}
	if r := t4.Lookup("", "/b"); r != nil {
		t.Errorf("Lookup(/b) = %s after b went", r.Key)
	}
	if changed[0].Value != nil {
		t.Errorf("a changed route carries the old Value %v", changed[0].Value)
	}

	// None of this touched t2.
	if d := cmp.Diff(want, routeCopies(t2)); d != "" {
		t.Errorf("t2 changed (-before +after):\n%s", d)
	}
}

// routeCopies is a deep copy of a table's routes, to compare later.
func routeCopies(tb *Table) []Route {
	var out []Route
	for _, r := range tb.Routes() {
		c := *r
		c.Members = nil
		for _, m := range r.Members {
			m.Tags = append([]string(nil), m.Tags...)
			c.Members = append(c.Members, m)
		}
		out = append(out, c)
	}
	return out
}

func keys(rs []*Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Key)
	}
	return out
}

func TestWithConflictingOptions(t *testing.T) {
	tb := with(t, New(nil), "b", in("b", "b1", 2, "urlprefix-/api"))
	tb, changed, _, errs := tb.With("a", []*catalog.Instance{in("a", "a1", 1, "urlprefix-/api strip=/api")})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `service b asks for "proto=http" but service a's "proto=http strip=/api" win`) {
		t.Errorf("errs = %v", errs)
	}
	r := tb.Lookup("", "/api/x")
	want := &Route{Key: "/api", Prefix: "/api", Proto: "http", Strip: "/api",
		Members: []Member{{Service: "a", ID: "a1", Addr: "10.0.0.1:8080", Weight: 1}}}
	if d := cmp.Diff(want, r); d != "" {
		t.Errorf("route (-want +got):\n%s", d)
	}
	if len(changed) != 1 || changed[0] != r {
		t.Errorf("changed = %v", keys(changed))
	}

	// a goes: b's options and members come back.
	tb, changed, removed, errs := tb.With("a", nil)
	want = &Route{Key: "/api", Prefix: "/api", Proto: "http",
		Members: []Member{{Service: "b", ID: "b1", Addr: "10.0.0.2:8080", Weight: 1}}}
	if d := cmp.Diff(want, tb.Lookup("", "/api")); d != "" || len(changed) != 1 || len(removed) != 0 || len(errs) != 0 {
		t.Errorf("after a went: changed %v removed %v errs %v; route (-want +got):\n%s", keys(changed), removed, errs, d)
	}
}

func TestWithErrors(t *testing.T) {
	bad := in("a", "a1", 1, "urlprefix-/ok", "urlprefix-/bad strip=x", "version-2", "urlprefix-/ok strip=/o")
	tb, _, _, errs := New(nil).With("a", []*catalog.Instance{
		bad,
		in("a", "a1", 2, "urlprefix-/dup"),
		in("other", "o1", 3, "urlprefix-/other"),
		{Service: "a", ID: "noaddr", Tags: []string{"urlprefix-/x"}},
		nil,
	})
	var got []string
	for _, err := range errs {
		got = append(got, err.Error())
	}
	want := []string{
		`route: a/a1: tag "urlprefix-/bad strip=x": strip=x must start with '/', e.g. strip=/x`,
		`route: a/a1: tag "urlprefix-/ok strip=/o": another tag of the instance, "urlprefix-/ok", names route /ok and counts: remove one`,
		`route: a/a1 is listed twice: the second is left out`,
		`route: other/o1 is not an instance of a: left out`,
		`route: a/noaddr has no address and port ("", 0): its route tags are skipped`,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("errors (-want +got):\n%s", d)
	}
	if r := tb.Lookup("", "/ok"); keyOf(r) != "/ok" || len(r.Members) != 1 || r.Members[0].Tags[0] != "version-2" {
		t.Errorf("the good tag: %+v", r)
	}
	if tb.Len() != 1 {
		t.Errorf("Len = %d, want 1", tb.Len())
	}
}

func TestMemberTags(t *testing.T) {
	i := in("a", "a1", 1, "urlprefix-/a", "canary", "urlprefix-/b", "zone-1")
	tb := with(t, New(nil), "a", i)
	i.Tags[1] = "changed by the caller"
	r := tb.Lookup("", "/a")
	if d := cmp.Diff([]string{"canary", "zone-1"}, r.Members[0].Tags); d != "" {
		t.Errorf("member tags (-want +got):\n%s", d)
	}
}

// TestConcurrentReaders reads published tables while new ones are made
// from them, as the router does; run it with -race.
func TestConcurrentReaders(t *testing.T) {
	var current atomic.Pointer[Table]
	first := with(t, New(nil), "a", in("a", "a1", 1, "urlprefix-/a", "urlprefix-h.com/b"))
	for _, r := range first.Routes() {
		r.Value = 0
	}
	current.Store(first)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				tb := current.Load()
				if r := tb.Lookup("H.com", "/a/x"); r == nil || r.Value == nil {
					t.Errorf("Lookup = %v", r)
					return
				}
				_ = tb.Routes()
			}
		})
	}
	for i := range 300 {
		next, changed, _, _ := current.Load().With("a", []*catalog.Instance{
			weighted("a", "a1", 1, 100+i%3, "urlprefix-/a", "urlprefix-h.com/b", fmt.Sprintf("urlprefix-/c%d", i%5)),
			weighted("a", "a2", 2, 100, "urlprefix-/a"),
		})
		for _, r := range changed {
			r.Value = i
		}
		current.Store(next)
	}
	close(stop)
	wg.Wait()
}
