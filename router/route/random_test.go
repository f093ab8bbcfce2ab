package route

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/discotech/disco/catalog"
)

// naiveLookup is Lookup by a linear scan of every route, as the package
// doc describes matching.
func naiveLookup(routes []*Route, host, path string) *Route {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	var best *Route
	var bestRank [3]int
	for _, r := range routes {
		if r.Port != 0 || !strings.HasPrefix(path, r.Prefix) {
			continue
		}
		var rank [3]int // lower is better: class, -suffix length, -prefix length
		switch {
		case r.Host == "":
			rank = [3]int{2, 0, -len(r.Prefix)}
		case r.Host == host:
			rank = [3]int{0, 0, -len(r.Prefix)}
		case strings.HasPrefix(r.Host, "*.") && strings.HasSuffix(host, r.Host[1:]):
			rank = [3]int{1, -len(r.Host), -len(r.Prefix)}
		default:
			continue
		}
		if best == nil || slices.Compare(rank[:], bestRank[:]) < 0 {
			best, bestRank = r, rank
		}
	}
	return best
}

// TestRandomTables applies random updates of random services and checks
// after each: Lookup against naiveLookup, the table against one built
// from scratch, With's changed and removed lists against the two tables,
// and that the previous table did not change.
func TestRandomTables(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	hosts := []string{"", "a.com", "b.com", "*.a.com", "*.x.a.com", "x.a.com", "*.com"}
	paths := []string{"/", "/a", "/a/b", "/ab", "/b", "/a/b/c", "/c/"}
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	randTag := func() string {
		if rng.IntN(10) == 0 {
			return fmt.Sprintf("urlprefix-:%d proto=tcp", 1000+rng.IntN(3))
		}
		tag := TagPrefix + pick(hosts) + pick(paths)
		if rng.IntN(8) == 0 {
			tag += " strip=/a"
		}
		if rng.IntN(8) == 0 {
			tag += " weight=0.3"
		}
		if rng.IntN(20) == 0 {
			tag += " bad=option"
		}
		return tag
	}
	services := []string{"s0", "s1", "s2", "s3", "s4", "s5"}
	overrides := mustOverrides(t, `route add s9 /b http://10.9.9.9/
route add s0 a.com/a http://10.9.9.8/ weight 0.5
route del s1 /a
route del tags "gone"
route weight s2 /a weight 0.2
route weight /ab weight 0.6 tags "canary"`)

	state := map[string][]*catalog.Instance{}
	tb := New(overrides)
	for step := range 400 {
		svc := pick(services)
		var instances []*catalog.Instance
		for i := range rng.IntN(4) {
			inst := in(svc, fmt.Sprintf("i%d", i), i+1)
			inst.Weight = []int{0, 100, 200}[rng.IntN(3)]
			if rng.IntN(10) == 0 {
				inst.Status = catalog.Critical
			}
			for range rng.IntN(4) {
				inst.Tags = append(inst.Tags, randTag())
			}
			inst.Tags = append(inst.Tags, pick([]string{"canary", "gone", "x", "y"}))
			instances = append(instances, inst)
		}
		state[svc] = instances

		before := routeCopies(tb)
		next, changed, removed, _ := tb.With(svc, instances)

		// With's changed and removed lists.
		var wantChanged, wantRemoved []string
		for _, r := range next.Routes() {
			if old := findRoute(tb, r.Key); old != r {
				wantChanged = append(wantChanged, r.Key)
			}
		}
		for _, r := range tb.Routes() {
			if findRoute(next, r.Key) == nil {
				wantRemoved = append(wantRemoved, r.Key)
			}
		}
		slices.Sort(wantChanged)
		slices.Sort(wantRemoved)
		gotChanged := keys(changed)
		slices.Sort(gotChanged)
		if d := cmp.Diff(wantChanged, gotChanged); d != "" {
			t.Fatalf("step %d: changed (-want +got):\n%s", step, d)
		}
		if d := cmp.Diff(wantRemoved, removed); d != "" {
			t.Fatalf("step %d: removed (-want +got):\n%s", step, d)
		}
		if d := cmp.Diff(before, routeCopies(tb)); d != "" {
			t.Fatalf("step %d: the previous table changed (-before +after):\n%s", step, d)
		}
		tb = next

		// The same table built from scratch.
		fresh := New(overrides)
		for _, s := range services {
			fresh, _, _, _ = fresh.With(s, state[s])
		}
		if d := cmp.Diff(routeCopies(fresh), routeCopies(tb)); d != "" {
			t.Fatalf("step %d: incremental table differs from a fresh one (-fresh +incremental):\n%s", step, d)
		}
		for _, k := range append(wantChanged, wantRemoved...) {
			if got, want := tb.Route(k), findRoute(tb, k); got != want {
				t.Fatalf("step %d: Route(%q) = %v, want %v", step, k, got, want)
			}
		}
		if tb.Len() != len(tb.Routes()) {
			t.Fatalf("step %d: Len %d, %d routes", step, tb.Len(), len(tb.Routes()))
		}

		// Lookup against the linear scan.
		routes := tb.Routes()
		for range 50 {
			host := strings.TrimPrefix(pick(hosts), "*.")
			if rng.IntN(2) == 0 {
				host = pick([]string{"q.", "x.", "y.x.", "A."}) + host
			}
			if rng.IntN(3) == 0 {
				host = strings.ToUpper(host)
			}
			if rng.IntN(3) == 0 {
				host += ":8080"
			}
			path := pick(paths) + pick([]string{"", "x", "/y"})
			want, got := naiveLookup(routes, host, path), tb.Lookup(host, path)
			if want != got {
				t.Fatalf("step %d: Lookup(%q, %q) = %s, want %s", step, host, path, keyOf(got), keyOf(want))
			}
		}
		for p := 999; p <= 1003; p++ {
			if got, want := tb.TCP(p), findRoute(tb, fmt.Sprintf(":%d", p)); got != want {
				t.Fatalf("step %d: TCP(%d) = %s, want %s", step, p, keyOf(got), keyOf(want))
			}
		}
	}
}

func findRoute(tb *Table, key string) *Route {
	for _, r := range tb.Routes() {
		if r.Key == key {
			return r
		}
	}
	return nil
}
