package dnsserver

import (
	"bytes"
	stdcmp "cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discotech/disco/internal/golden"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discotech/disco/catalog"
)

// fixture is a catalog: services by name.
type fixture struct {
	mu       sync.Mutex
	services map[string][]*catalog.Instance
}

func (f *fixture) Service(name string) ([]*catalog.Instance, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ins, ok := f.services[name]
	return ins, ok
}

func inst(service, id, addr string, port, weight int, status catalog.Status, tags ...string) *catalog.Instance {
	return &catalog.Instance{Service: service, ID: id, Address: addr, Port: port, Weight: weight, Status: status, Tags: tags}
}

// webFixture has one of everything a service can hold, ordered by id as the
// registry orders them.
func webFixture() *fixture {
	big := make([]*catalog.Instance, 1000)
	for i := range big {
		big[i] = inst("big", fmt.Sprintf("b%04d", i), fmt.Sprintf("10.9.%d.%d", i/250, i%250+1), 9000, 1, catalog.Passing)
	}
	return &fixture{services: map[string][]*catalog.Instance{
		"web": {
			inst("web", "w1", "10.0.1.5", 8080, 100, catalog.Passing, "v1", "urlprefix-/web"),
			inst("web", "w2", "10.0.1.6", 8080, 50, catalog.Passing, "v1"),
			inst("web", "w3", "2001:db8::7", 8081, 10, catalog.Passing, "V2"),
			inst("web", "w4", "10.0.1.9", 8080, 100, catalog.Critical, "v1"),
			inst("web", "w5", "10.0.1.10", 8080, 0, catalog.Passing, "v1"), // drained
			inst("web", "w6", "web6.Example.net", 8082, 100, catalog.Passing, "v2"),
			inst("web", "w7", "::ffff:10.0.1.11", 8080, 10000, catalog.Passing, "v3"),
		},
		"down": {inst("down", "d1", "10.0.2.1", 80, 100, catalog.Critical)},
		"gone": {}, // known, every instance deregistered
		"big":  big,
	}}
}

// serve starts a server on loopback answering from cat, in catalog order.
func serve(t testing.TB, cat Catalog, mod func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Domains = []string{"disco", "consul"}
	cfg.Logger = discard()
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cat, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.order = func([]entry) {}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// query is one question as a test asks it.
type query struct {
	name  string
	qtype uint16
	net   string // udp (default) or tcp
	edns  uint16 // EDNS0 buffer size; 0 sends no OPT
	class uint16
	ver   uint8
}

func (q query) String() string {
	s := fmt.Sprintf("%s %s %s", stdcmp.Or(q.net, "udp"), q.name, dns.TypeToString[q.qtype])
	if q.class != 0 {
		s += " class " + dns.ClassToString[q.class]
	}
	if q.edns != 0 {
		s += fmt.Sprintf(" +bufsize=%d", q.edns)
	}
	if q.ver != 0 {
		s += fmt.Sprintf(" +ednsversion=%d", q.ver)
	}
	return s
}

func ask(t testing.TB, addr string, q query) *dns.Msg {
	t.Helper()
	if q.net == "" {
		q.net = "udp"
	}
	m := new(dns.Msg)
	m.SetQuestion(q.name, q.qtype)
	m.Id = 4242
	if q.class != 0 {
		m.Question[0].Qclass = q.class
	}
	if q.edns != 0 {
		m.SetEdns0(q.edns, false)
		m.IsEdns0().SetVersion(q.ver)
	}
	c := &dns.Client{Net: q.net, UDPSize: max(q.edns, dns.MinMsgSize), Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return r
}

func TestGolden(t *testing.T) {
	s := serve(t, webFixture(), nil)
	udp, tcp := "udp", "tcp"
	checkGolden(t, "answers.golden", transcript(t, s.Addr(), []query{
		{name: "web.service.disco.", qtype: dns.TypeA},
		{name: "web.service.disco.", qtype: dns.TypeAAAA},
		{name: "WeB.SERVICE.Disco.", qtype: dns.TypeA},
		{name: "web.service.disco.", qtype: dns.TypeANY},
		{name: "v1.web.service.disco.", qtype: dns.TypeA},
		{name: "v2.web.service.disco.", qtype: dns.TypeAAAA},
		{name: "v9.web.service.disco.", qtype: dns.TypeA},
		{name: "_web._tcp.service.disco.", qtype: dns.TypeSRV},
		{name: "_web._v2.service.disco.", qtype: dns.TypeSRV},
		{name: "web.service.disco.", qtype: dns.TypeSRV},
		{name: "w1.web.instance.disco.", qtype: dns.TypeA},
		{name: "w3.web.instance.disco.", qtype: dns.TypeAAAA},
		{name: "w3.web.instance.disco.", qtype: dns.TypeA},
		{name: "w4.web.instance.disco.", qtype: dns.TypeA},
		{name: "w6.web.instance.disco.", qtype: dns.TypeA},
		{name: "nope.web.instance.disco.", qtype: dns.TypeA},
		{name: "nosuch.service.disco.", qtype: dns.TypeA},
		{name: "down.service.disco.", qtype: dns.TypeA},
		{name: "gone.service.disco.", qtype: dns.TypeSRV},
		{name: "web.service.disco.", qtype: dns.TypeTXT},
		{name: "disco.", qtype: dns.TypeSOA},
		{name: "disco.", qtype: dns.TypeNS},
		{name: "service.disco.", qtype: dns.TypeA},
		{name: "a.b.c.d.disco.", qtype: dns.TypeA},
		{name: "under_score.service.disco.", qtype: dns.TypeA},
		{name: "example.com.", qtype: dns.TypeA},
		{name: ".", qtype: dns.TypeNS},
		{name: "xdisco.", qtype: dns.TypeA},
		{name: "version.bind.", qtype: dns.TypeTXT, class: dns.ClassCHAOS},
		{name: "web.service.disco.", qtype: dns.TypeA, class: dns.ClassCHAOS},
		{name: "web.service.consul.", qtype: dns.TypeA},
		{name: "_web._tcp.service.consul.", qtype: dns.TypeSRV},
		{name: "web.service.disco.", qtype: dns.TypeA, edns: 1232},
		{name: "web.service.disco.", qtype: dns.TypeA, edns: 1232, ver: 1},
		{name: "web.service.disco.", qtype: dns.TypeA, net: tcp},
		{name: "big.service.disco.", qtype: dns.TypeA, net: udp},
	}))
}

// transcript asks each query in turn and writes down the answers, dig-style.
func transcript(t *testing.T, addr string, queries []query) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, q := range queries {
		fmt.Fprintf(&out, "== %s\n%s\n", q, ask(t, addr, q))
	}
	return out.Bytes()
}

// TestThousandInstances: a service with 1,000 instances answers every
// record over TCP, and over UDP as many whole records as fit with TC set, at
// 512 bytes without EDNS and at the EDNS buffer size (4,096 at most) with it.
func TestThousandInstances(t *testing.T) {
	s := serve(t, webFixture(), nil)
	for _, tc := range []struct {
		q        query
		maxSize  int
		wantAll  bool
		wantTC   bool
		minCount int
	}{
		{query{name: "big.service.disco.", qtype: dns.TypeA}, 512, false, true, 25},
		{query{name: "big.service.disco.", qtype: dns.TypeA, edns: 4096}, 4096, false, true, 200},
		{query{name: "big.service.disco.", qtype: dns.TypeA, edns: 65000}, 4096, false, true, 200},
		{query{name: "big.service.disco.", qtype: dns.TypeA, net: "tcp"}, dns.MaxMsgSize, true, false, 1000},
		{query{name: "big.service.disco.", qtype: dns.TypeA, net: "tcp", edns: 1232}, dns.MaxMsgSize, true, false, 1000},
		{query{name: "_big._tcp.service.disco.", qtype: dns.TypeSRV}, 512, false, true, 5},
		{query{name: "_big._tcp.service.disco.", qtype: dns.TypeSRV, edns: 4096}, 4096, false, true, 50},
		{query{name: "_big._tcp.service.disco.", qtype: dns.TypeSRV, net: "tcp"}, dns.MaxMsgSize, true, false, 1000},
	} {
		t.Run(tc.q.String(), func(t *testing.T) {
			r := ask(t, s.Addr(), tc.q)
			r.Compress = true
			packed, err := r.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if len(packed) > tc.maxSize {
				t.Errorf("answer is %d bytes, over the %d the client can take", len(packed), tc.maxSize)
			}
			if r.Truncated != tc.wantTC {
				t.Errorf("TC = %v, want %v", r.Truncated, tc.wantTC)
			}
			if len(r.Answer) < tc.minCount || (tc.wantAll && len(r.Answer) != 1000) {
				t.Errorf("%d answers, want at least %d (all 1000: %v)", len(r.Answer), tc.minCount, tc.wantAll)
			}
			// Every record is whole and distinct, and every additional
			// record is the address of an answered target.
			seen := map[string]bool{}
			targets := map[string]bool{}
			for _, rr := range r.Answer {
				if seen[rr.String()] {
					t.Fatalf("duplicate record %s", rr)
				}
				seen[rr.String()] = true
				if srv, ok := rr.(*dns.SRV); ok {
					targets[srv.Target] = true
				}
			}
			for _, rr := range r.Extra {
				if rr.Header().Rrtype == dns.TypeOPT {
					continue
				}
				if !targets[rr.Header().Name] {
					t.Errorf("additional record %s names no answered target", rr)
				}
			}
			if tc.q.net == "tcp" && tc.q.qtype == dns.TypeSRV && len(r.Extra) == 0 {
				t.Errorf("no target addresses in the additional section over TCP")
			}
		})
	}
}

// TestLookupWithGoResolver asks through Go's own resolver, as a Go program
// pointed at this server would.
func TestLookupWithGoResolver(t *testing.T) {
	s := serve(t, webFixture(), nil)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr())
	}}
	ctx := context.Background()
	cname, srvs, err := r.LookupSRV(ctx, "web", "tcp", "service.disco")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, srv := range srvs {
		got = append(got, fmt.Sprintf("%s:%d/%d", srv.Target, srv.Port, srv.Weight))
	}
	want := []string{"w1.web.instance.disco.:8080/100", "w2.web.instance.disco.:8080/50", "w3.web.instance.disco.:8081/10", "web6.example.net.:8082/100", "w7.web.instance.disco.:8080/10000"}
	if diff := cmp.Diff(sorted(want), sorted(got)); diff != "" || cname != "_web._tcp.service.disco." {
		t.Errorf("LookupSRV: cname %q, records (-want +got):\n%s", cname, diff)
	}
	addrs, err := r.LookupHost(ctx, "web.service.disco")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sorted([]string{"10.0.1.5", "10.0.1.6", "10.0.1.11", "2001:db8::7"}), sorted(addrs)); diff != "" {
		t.Errorf("LookupHost (-want +got):\n%s", diff)
	}
	ips, err := r.LookupNetIP(ctx, "ip4", "w2.web.instance.disco")
	if err != nil || len(ips) != 1 || ips[0] != netip.MustParseAddr("10.0.1.6") {
		t.Errorf("LookupNetIP(w2) = %v, %v", ips, err)
	}
	if _, err := r.LookupHost(ctx, "nosuch.service.disco"); !isNotFound(err) {
		t.Errorf("unknown service: got %v, want not found", err)
	}
	// 1,000 instances: the UDP answer is truncated, Go retries over TCP
	// and gets them all.
	big, err := r.LookupHost(ctx, "big.service.disco")
	if err != nil || len(big) != 1000 {
		t.Errorf("LookupHost(big) = %d addresses, %v; want 1000", len(big), err)
	}
}

func isNotFound(err error) bool {
	de, ok := err.(*net.DNSError)
	return ok && de.IsNotFound
}

func TestMagicIP(t *testing.T) {
	magic := netip.MustParseAddr("127.77.0.9")
	s := serve(t, webFixture(), func(c *Config) {
		c.MagicIP = func(service string) (netip.Addr, bool) { return magic, service == "web" }
	})
	checkGolden(t, "magic.golden", transcript(t, s.Addr(), []query{
		{name: "web.service.disco.", qtype: dns.TypeA},
		{name: "v2.web.service.disco.", qtype: dns.TypeA},
		{name: "web.service.disco.", qtype: dns.TypeAAAA},
		{name: "_web._tcp.service.disco.", qtype: dns.TypeSRV},
		{name: "w1.web.instance.disco.", qtype: dns.TypeA},
		{name: "down.service.disco.", qtype: dns.TypeA},
	}))
}

func entries(ins ...*catalog.Instance) []entry {
	var out []entry
	for _, in := range ins {
		out = append(out, entry{in: in})
	}
	return out
}

func TestNotReadyIsServfail(t *testing.T) {
	var ready atomic.Bool
	s := serve(t, webFixture(), func(c *Config) { c.Ready = ready.Load })
	if r := ask(t, s.Addr(), query{name: "web.service.disco.", qtype: dns.TypeA}); r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Errorf("before ready: %s", r)
	}
	if r := ask(t, s.Addr(), query{name: "example.com.", qtype: dns.TypeA}); r.Rcode != dns.RcodeRefused {
		t.Errorf("outside the zones before ready: %s", dns.RcodeToString[r.Rcode])
	}
	ready.Store(true)
	if r := ask(t, s.Addr(), query{name: "web.service.disco.", qtype: dns.TypeA}); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 3 {
		t.Errorf("once ready: %s", r)
	}
}

// TestShuffleFollowsWeight draws many orders and checks how often each
// instance comes first against its share of the weight.
func TestShuffleFollowsWeight(t *testing.T) {
	ins := entries(&catalog.Instance{ID: "a", Weight: 100}, &catalog.Instance{ID: "b", Weight: 300}, &catalog.Instance{ID: "c", Weight: 600})
	first := map[string]int{}
	seed := uint64(1)
	rnd := func() float64 { // a fixed sequence, so the test cannot flake
		seed = seed*6364136223846793005 + 1442695040888963407
		return float64(seed>>11) / (1 << 53)
	}
	const n = 100000
	for range n {
		order := slices.Clone(ins)
		shuffle(order, rnd)
		first[order[0].in.ID]++
	}
	for id, share := range map[string]float64{"a": 0.1, "b": 0.3, "c": 0.6} {
		if got := float64(first[id]) / n; got < share-0.01 || got > share+0.01 {
			t.Errorf("%s first %.3f of the time, want %.2f±0.01", id, got, share)
		}
	}
	// Equal weights take the Fisher–Yates path: every instance at every
	// place equally often.
	ins = entries(&catalog.Instance{ID: "a", Weight: 5}, &catalog.Instance{ID: "b", Weight: 5}, &catalog.Instance{ID: "c", Weight: 5}, &catalog.Instance{ID: "d", Weight: 5})
	at := map[[2]string]int{}
	for range n {
		order := slices.Clone(ins)
		shuffle(order, rnd)
		for i, e := range order {
			at[[2]string{e.in.ID, fmt.Sprint(i)}]++
		}
	}
	for k, c := range at {
		if got := float64(c) / n; got < 0.24 || got > 0.26 {
			t.Errorf("%s at place %s %.3f of the time, want 0.25±0.01", k[0], k[1], got)
		}
	}
	if len(at) != 16 {
		t.Errorf("%d (instance, place) pairs seen, want 16", len(at))
	}
}

func TestMalformedIsDroppedAndCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := serve(t, webFixture(), func(c *Config) { c.Registerer = reg })
	c, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, pkt := range [][]byte{
		{1, 2, 3},                     // shorter than a header
		append(header(1), 0xff, 0xff), // a question that runs off the end
		func() []byte { // a response, not a query
			m := new(dns.Msg)
			m.SetQuestion("web.service.disco.", dns.TypeA)
			m.Response = true
			b, _ := m.Pack()
			return b
		}(),
	} {
		c.Write(pkt)
	}
	// The server answers a good query after them, and nothing before it.
	m := new(dns.Msg)
	m.SetQuestion("w1.web.instance.disco.", dns.TypeA)
	m.Id = 7
	b, _ := m.Pack()
	c.Write(b)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil || r.Id != 7 {
		t.Fatalf("first answer is %v (%v), want the answer to id 7", r.Id, err)
	}
	if got := testutil.ToFloat64(s.m.dropped.WithLabelValues("malformed")); got != 2 {
		t.Errorf("malformed dropped = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.m.dropped.WithLabelValues("response")); got != 1 {
		t.Errorf("responses dropped = %v, want 1", got)
	}
}

// header is a DNS header with qdcount questions and nothing after it.
func header(qdcount uint16) []byte {
	return []byte{0, 9, 1, 0, byte(qdcount >> 8), byte(qdcount), 0, 0, 0, 0, 0, 0}
}

func TestMetricsGolden(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := serve(t, webFixture(), func(c *Config) { c.Registerer = reg })
	for _, q := range []query{
		{name: "web.service.disco.", qtype: dns.TypeA},
		{name: "web.service.disco.", qtype: dns.TypeA, net: "tcp"},
		{name: "_web._tcp.service.disco.", qtype: dns.TypeSRV},
		{name: "nosuch.service.disco.", qtype: dns.TypeAAAA},
		{name: "example.com.", qtype: dns.TypeA},
		{name: "web.service.disco.", qtype: dns.TypeMX},
		{name: "big.service.disco.", qtype: dns.TypeA},
	} {
		ask(t, s.Addr(), q)
	}
	// Only the counters that moved: the zero ones are many and say little.
	var out bytes.Buffer
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.Contains(string(doc), f.GetName()) {
			t.Errorf("%s is not in docs/metrics.md", f.GetName())
		}
		for _, m := range f.GetMetric() {
			if m.GetCounter().GetValue() == 0 {
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			fmt.Fprintf(&out, "%s{%s} %v\n", f.GetName(), strings.Join(labels, ","), m.GetCounter().GetValue())
		}
	}
	if n := testutil.CollectAndCount(reg, "disco_dnsserver_query_seconds"); n != 2 {
		t.Errorf("query_seconds has %d series, want 2 (udp, tcp)", n)
	}
	checkGolden(t, "metrics.golden", out.Bytes())
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Domains = nil }, "at least one dns-domain"},
		{func(c *Config) { c.Domains = []string{"bad domain"} }, `"bad domain" is not a domain name`},
		{func(c *Config) { c.Domains = []string{"disco", "Disco."} }, "given twice"},
		{func(c *Config) { c.TTL = 1500 * time.Millisecond }, "dns-ttl must be whole seconds"},
		{func(c *Config) { c.NegativeTTL = -time.Second }, "dns-negative-ttl must be whole seconds"},
		{func(c *Config) { c.Addr = "7753" }, `dns address "7753"`},
		{func(c *Config) {}, ""},
		{func(c *Config) { c.Addr = ""; c.Domains = []string{"consul.", "disco"} }, ""},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		err := c.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// query times vary from run to run; the rest of dig-style output does not.
var volatile = regexp.MustCompile(`(?m)^;; (MSG SIZE|Query time).*\n`)

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden.Check(t, name, volatile.ReplaceAll(got, nil))
}
