package dnssrv

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

func TestSpec(t *testing.T) {
	type parsed struct {
		Server  string
		Names   []string // fqdn=service
		Refresh time.Duration
	}
	for _, tc := range []struct {
		spec    string
		refresh time.Duration // source.Options.Refresh
		want    parsed
	}{
		{spec: "dns-srv://127.0.0.1:53/_web._tcp.example.com",
			want: parsed{"127.0.0.1:53", []string{"_web._tcp.example.com.=web"}, DefaultRefresh}},
		{spec: "dns-srv://10.0.0.2/_Web._TCP.Example.com.", refresh: 5 * time.Second,
			want: parsed{"10.0.0.2:53", []string{"_web._tcp.example.com.=web"}, 5 * time.Second}},
		{spec: "dns-srv://[fd00::53]:5353/_web._tcp.a.example,_api._tcp.a.example/_db._udp.b.example?refresh=10s",
			want: parsed{"[fd00::53]:5353", []string{"_web._tcp.a.example.=web", "_api._tcp.a.example.=api", "_db._udp.b.example.=db"}, 10 * time.Second}},
		{spec: "dns-srv:///_web._tcp.example.com", refresh: 100 * time.Millisecond,
			want: parsed{"", []string{"_web._tcp.example.com.=web"}, MinRefresh}},
		{spec: "dns-srv://ns1.example.net:53/_web._tcp.dc1.example.com/_web._tcp.dc2.example.com?service=front",
			want: parsed{"ns1.example.net:53", []string{"_web._tcp.dc1.example.com.=front", "_web._tcp.dc2.example.com.=front"}, DefaultRefresh}},
		{spec: "dns-srv://127.0.0.1/web.srv.example.com?service=web",
			want: parsed{"127.0.0.1:53", []string{"web.srv.example.com.=web"}, DefaultRefresh}},
	} {
		src, err := source.New(tc.spec, source.Options{Refresh: tc.refresh})
		if err != nil {
			t.Errorf("New(%q): %v", tc.spec, err)
			continue
		}
		s := src.(*dnsSource)
		got := parsed{Server: s.server, Refresh: s.refresh}
		for _, n := range s.names {
			got.Names = append(got.Names, n.fqdn+"="+n.service)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("New(%q) (-want +got):\n%s", tc.spec, diff)
		}
	}
}

func TestBadSpec(t *testing.T) {
	for spec, want := range map[string]string{
		"dns-srv://127.0.0.1:53":                                          "no SRV name",
		"dns-srv://127.0.0.1:53/":                                         "no SRV name",
		"dns-srv://127.0.0.1:99999/_web._tcp.example.com":                 "port",
		"dns-srv://:53/_web._tcp.example.com":                             "has no host",
		"dns-srv://u:pw@127.0.0.1/_web._tcp.example.com":                  "no user",
		"dns-srv://127.0.0.1/web.example.com":                             "not _service._proto.domain",
		"dns-srv://127.0.0.1/_web.example.com":                            "not _service._proto.domain",
		"dns-srv://127.0.0.1/_web_api._tcp.example.com":                   `"web_api"`,
		"dns-srv://127.0.0.1/_-web._tcp.example.com":                      "give ?service=NAME",
		"dns-srv://127.0.0.1/_web._tcp.exa$mple.com":                      "not a domain name",
		"dns-srv://127.0.0.1/_web._tcp..example.com":                      "not a domain name",
		"dns-srv://127.0.0.1/_web._tcp.example.com,_web._tcp.example.com": "listed twice",
		"dns-srv://127.0.0.1/_web._tcp.example.com?service=Web":           "?service=Web",
		"dns-srv://127.0.0.1/_web._tcp.example.com?refresh=500ms":         "at least 1s",
		"dns-srv://127.0.0.1/_web._tcp.example.com?refresh=soon":          "?refresh=soon",
		"dns-srv://127.0.0.1/_web._tcp.example.com?ttl=5s":                "unknown option ?ttl",
		"dns-srv://127.0.0.1/_web._tcp.example.com?refresh=1s&refresh=2s": "2 times",
		"dns-srv://127.0.0.1/_web._tcp.example.com#frag":                  "want dns-srv://",
	} {
		_, err := source.New(spec, source.Options{})
		if err == nil || !errors.Is(err, source.ErrSpec) || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q) = %v, want ErrSpec saying %q", spec, err, want)
		}
		if err != nil && strings.Contains(err.Error(), ":pw@") {
			t.Errorf("New(%q): the error shows the password: %v", spec, err)
		}
	}
}

func TestSystemServers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	os.WriteFile(conf, []byte("# local\nsearch example.com\nnameserver 10.0.0.2\nnameserver fd00::53\noptions ndots:2\n"), 0o644)
	empty := filepath.Join(dir, "empty.conf")
	os.WriteFile(empty, []byte("search example.com\n"), 0o644)
	for path, want := range map[string][]string{
		conf:                       {"10.0.0.2:53", "[fd00::53]:53"},
		empty:                      {"127.0.0.1:53", "[::1]:53"},
		filepath.Join(dir, "none"): {"127.0.0.1:53", "[::1]:53"},
	} {
		if diff := cmp.Diff(want, systemServers(path)); diff != "" {
			t.Errorf("systemServers(%s) (-want +got):\n%s", filepath.Base(path), diff)
		}
	}
}

// TestInstances covers what the source makes of SRV records once their
// addresses are known: weights, IDs, merging.
func TestInstances(t *testing.T) {
	long := strings.Repeat("a", 60) + ".example.com."
	type row struct {
		ID      string
		Address string
		Port    int
		Weight  int
	}
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		recs  []record
		addrs [][]netip.Addr
		want  []row
	}{{
		name:  "weight 0 reads 1",
		recs:  []record{{target: "w1.example.com.", port: 8080, weight: 0}, {target: "w2.example.com.", port: 8080, weight: 100}},
		addrs: [][]netip.Addr{addrs("10.0.1.5"), addrs("10.0.1.6")},
		want: []row{
			{"w1-example-com-8080-10-0-1-5", "10.0.1.5", 8080, 1},
			{"w2-example-com-8080-10-0-1-6", "10.0.1.6", 8080, 100},
		},
	}, {
		name:  "a target's addresses share its weight",
		recs:  []record{{target: "w1.example.com.", port: 80, weight: 100}},
		addrs: [][]netip.Addr{addrs("fd00::5", "10.0.1.5", "10.0.1.6", "10.0.1.5")},
		want: []row{
			{"w1-example-com-80-10-0-1-5", "10.0.1.5", 80, 33},
			{"w1-example-com-80-10-0-1-6", "10.0.1.6", 80, 33},
			{"w1-example-com-80-fd00-5", "fd00::5", 80, 33},
		},
	}, {
		name:  "weights above the catalog's range are scaled",
		recs:  []record{{target: "a.example.", port: 1, weight: 65535}, {target: "b.example.", port: 1, weight: 6553}, {target: "c.example.", port: 1, weight: 1}},
		addrs: [][]netip.Addr{addrs("10.0.0.1"), addrs("10.0.0.2"), addrs("10.0.0.3")},
		want: []row{
			{"a-example-1-10-0-0-1", "10.0.0.1", 1, 10000},
			{"b-example-1-10-0-0-2", "10.0.0.2", 1, 999},
			{"c-example-1-10-0-0-3", "10.0.0.3", 1, 1},
		},
	}, {
		name:  "the same endpoint twice is one instance, the larger weight wins",
		recs:  []record{{target: "w1.example.com.", port: 80, weight: 5}, {target: "W1.example.com.", port: 80, weight: 7}},
		addrs: [][]netip.Addr{addrs("10.0.1.5"), addrs("10.0.1.5")},
		want:  []row{{"w1-example-com-80-10-0-1-5", "10.0.1.5", 80, 7}},
	}, {
		name:  "colliding labels are hashed, long ones cut and hashed",
		recs:  []record{{target: "a-b.example.", port: 80, weight: 1}, {target: "a.b-example.", port: 80, weight: 1}, {target: long, port: 80, weight: 1}},
		addrs: [][]netip.Addr{addrs("10.0.0.1"), addrs("10.0.0.1"), addrs("10.0.0.1")},
		want: []row{
			{hashedLabel("a-b.example-80-10.0.0.1"), "10.0.0.1", 80, 1},
			{hashedLabel("a.b-example-80-10.0.0.1"), "10.0.0.1", 80, 1},
			{catalog.Label(strings.TrimSuffix(long, ".") + "-80-10.0.0.1"), "10.0.0.1", 80, 1},
		},
	}, {
		name:  "port 0 is left out",
		recs:  []record{{target: "w1.example.com.", port: 0, weight: 1}},
		addrs: [][]netip.Addr{addrs("10.0.1.5")},
		want:  []row{},
	}} {
		lk := &lookup{notes: map[string]bool{}}
		var ins []*catalog.Instance
		for i, rec := range tc.recs {
			rec.target = strings.ToLower(rec.target)
			ins = append(ins, instances("web", rec, tc.addrs[i])...)
		}
		got := []row{}
		for _, in := range lk.finish(ins) {
			if err := catalog.ValidateName("id", in.ID); err != nil || in.Status != catalog.Passing {
				t.Errorf("%s: %s: %v, status %q", tc.name, in.ID, err, in.Status)
			}
			got = append(got, row{in.ID, in.Address, in.Port, in.Weight})
		}
		slices.SortFunc(tc.want, func(a, b row) int { return strings.Compare(a.ID, b.ID) })
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}
