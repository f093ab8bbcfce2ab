package route

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/discotech/disco/catalog"
)

// A realistic big table: 10,000 services of 2 instances, each with 10
// routes of 1–4 path segments; 9 services in 10 serve one of 1,000 hosts
// (50 of them wildcards), the rest any host. 100,000 routes in all.
const (
	benchServices = 10000
	benchHosts    = 1000
	benchRoutes   = 10 // per service
)

// benchHost is the host of service i's routes; "" for any host.
func benchHost(i int) string {
	switch h := i % benchHosts; {
	case i%10 == 9:
		return ""
	case h < 50:
		return fmt.Sprintf("*.tenant%d.example.io", h)
	default:
		return fmt.Sprintf("app%d.example.com", h)
	}
}

// benchPrefix is the path of service i's route j: 1–4 segments.
func benchPrefix(i, j int) string {
	if j == 0 {
		return fmt.Sprintf("/svc%d", i)
	}
	segs := []string{fmt.Sprintf("/svc%d/r%d", i, j), "/v1", "/items"}
	return strings.Join(segs[:1+j%3], "")
}

func benchInstances(i, weight int) []*catalog.Instance {
	svc := fmt.Sprintf("svc%d", i)
	var tags []string
	for j := range benchRoutes {
		tags = append(tags, TagPrefix+benchHost(i)+benchPrefix(i, j))
	}
	tags = append(tags, "v2")
	out := make([]*catalog.Instance, 2)
	for k := range out {
		out[k] = &catalog.Instance{Service: svc, ID: fmt.Sprintf("%s-%d", svc, k), Address: fmt.Sprintf("10.%d.%d.%d", i>>8&255, i&255, k),
			Port: 8080, Weight: weight, Status: catalog.Passing, Tags: tags}
	}
	return out
}

var bench struct {
	once  sync.Once
	table *Table
	bytes float64 // heap held by the table
}

func benchTable(b *testing.B) *Table {
	bench.once.Do(func() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tb := New(nil)
		for i := range benchServices {
			tb, _, _, _ = tb.With(fmt.Sprintf("svc%d", i), benchInstances(i, 100))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		bench.table, bench.bytes = tb, float64(after.HeapAlloc-before.HeapAlloc)
	})
	if n := bench.table.Len(); n != benchServices*benchRoutes {
		b.Fatalf("the table has %d routes", n)
	}
	return bench.table
}

// BenchmarkLookup looks up requests over 100,000 routes: 80% match a
// host's route (a tenth through a wildcard), 10% a host-less route, 10%
// nothing.
func BenchmarkLookup(b *testing.B) {
	tb := benchTable(b)
	type req struct{ host, path string }
	rng := rand.New(rand.NewPCG(1, 1))
	reqs := make([]req, 4096)
	for k := range reqs {
		i, j := rng.IntN(benchServices), rng.IntN(benchRoutes)
		host, path := benchHost(i), benchPrefix(i, j)+"/42"
		switch {
		case k%10 == 0:
			host, path = "unknown.example.net", "/nothing/here"
		case host == "":
			host = "www.example.org:443"
		case strings.HasPrefix(host, "*."):
			host = "Shop" + host[1:]
		}
		reqs[k] = req{host, path}
		if r := tb.Lookup(host, path); (r == nil) != (k%10 == 0) {
			b.Fatalf("Lookup(%q, %q) = %v", host, path, r)
		}
	}
	b.ReportAllocs()
	for n := 0; b.Loop(); n++ {
		q := &reqs[n&(len(reqs)-1)]
		tb.Lookup(q.host, q.path)
	}
	b.ReportMetric(bench.bytes/float64(tb.Len()), "bytes/route")
}

// BenchmarkWith updates one service (its 10 routes' members change) in
// a table of 100,000 routes.
func BenchmarkWith(b *testing.B) {
	tb := benchTable(b)
	i := benchServices / 2
	svc := fmt.Sprintf("svc%d", i)
	versions := [2][]*catalog.Instance{benchInstances(i, 100), benchInstances(i, 200)}
	versions[1][0].Weight = 300 // the shares change, not only the scale
	b.ReportAllocs()
	for n := 0; b.Loop(); n++ {
		next, changed, _, _ := tb.With(svc, versions[(n+1)&1])
		if len(changed) != benchRoutes {
			b.Fatalf("%d routes changed", len(changed))
		}
		tb = next
	}
}

// BenchmarkWithUnchanged repeats a service's instances: nothing changes.
func BenchmarkWithUnchanged(b *testing.B) {
	tb := benchTable(b)
	i := benchServices / 2
	instances := benchInstances(i, 100)
	svc := fmt.Sprintf("svc%d", i)
	b.ReportAllocs()
	for b.Loop() {
		tb.With(svc, instances)
	}
}
