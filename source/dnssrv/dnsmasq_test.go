package dnssrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"

	"github.com/discotech/disco/internal/testpeer"
	"github.com/discotech/disco/source"
	"github.com/discotech/disco/source/sourcetest"
)

// These tests ask a real dnsmasq, started by each test on a port of its own.
// dnsmasq is authoritative for example.com (local=): names it does not know
// there are NXDOMAIN, names elsewhere are REFUSED (no upstream). Its records
// carry a TTL of 1s, so the source looks about every second.

// dnsmasq is a dnsmasq the test started.
type dnsmasq struct {
	t        *testing.T
	bin      string // the dnsmasq program
	hostport string // where it listens, UDP and TCP
	conf     string // its configuration file
	mu       sync.Mutex
	proc     *testpeer.Process // nil while stopped
}

// startDNSMasq starts dnsmasq with the given configuration lines (as in
// dnsmasq.conf: "srv-host=...") on a free port, waits until it answers, and
// stops it when the test ends.
func startDNSMasq(t *testing.T, lines ...string) *dnsmasq {
	t.Helper()
	d := &dnsmasq{t: t, bin: testpeer.Need(t, "dnsmasq"), conf: filepath.Join(t.TempDir(), "dnsmasq.conf")}
	for range 5 { // another process may take the port before dnsmasq does
		d.hostport = testpeer.FreeUDPTCPPort(t)
		if err := d.start(lines); err == nil {
			return d
		} else {
			t.Logf("dnsmasq on %s: %v", d.hostport, err)
		}
	}
	t.Fatal("could not start dnsmasq")
	return nil
}

// addr is where dnsmasq listens.
func (d *dnsmasq) addr() string { return d.hostport }

// start runs dnsmasq with lines on d's port and waits until it answers.
func (d *dnsmasq) start(lines []string) error {
	_, port, _ := net.SplitHostPort(d.hostport)
	conf := append([]string{
		"port=" + port,
		"listen-address=127.0.0.1",
		"bind-interfaces",
		"no-resolv",
		"no-hosts",
		"local=/example.com/",
		"local-ttl=1",
		"log-facility=-", // to stderr, shown when it fails
	}, lines...)
	if err := os.WriteFile(d.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	p := testpeer.Start(d.t, d.bin, "--keep-in-foreground", "--pid-file=", "-C", d.conf)
	q := new(dns.Msg)
	q.SetQuestion("ready.example.com.", dns.TypeA)
	c := &dns.Client{Timeout: 100 * time.Millisecond}
	if err := p.WaitReady(10*time.Second, func() bool { _, _, err := c.Exchange(q, d.addr()); return err == nil }); err != nil {
		p.Kill9()
		return err
	}
	d.mu.Lock()
	d.proc = p
	d.mu.Unlock()
	return nil
}

// stop kills dnsmasq and waits until it is gone.
func (d *dnsmasq) stop() {
	d.mu.Lock()
	p := d.proc
	d.proc = nil
	d.mu.Unlock()
	if p != nil {
		p.Kill9()
	}
}

// restart runs dnsmasq again on the same port with other lines.
func (d *dnsmasq) restart(lines ...string) {
	d.t.Helper()
	d.stop()
	// Another test's free port may hold the port for a moment.
	var err error
	for range 5 {
		if err = d.start(lines); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.t.Fatal(err)
}

// hup makes dnsmasq read its hosts files again (not its SRV records: those
// only change with a restart).
func (d *dnsmasq) hup() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.proc.Signal(syscall.SIGHUP); err != nil {
		d.t.Fatal(err)
	}
}

// readableDir returns a temporary directory that dnsmasq can read files
// from after it has dropped root's privileges (it runs as nobody).
func readableDir(t *testing.T) string {
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// run starts the source of spec, reporting to a recorder that keeps its
// log, and stops it (and checks that Run returns) when the test ends.
func run(t *testing.T, spec string, opts source.Options) *sourcetest.Recorder {
	t.Helper()
	rec := sourcetest.NewRecorder()
	opts.Logger = rec.Logger(slog.LevelInfo)
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	src, err := source.New(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	sourcetest.Run(t, src, rec)
	return rec
}

// summary is an update in a form easy to compare: per service, one line per
// instance.
func summary(u *source.Update) map[string][]string {
	if u == nil {
		return nil
	}
	out := map[string][]string{}
	for svc, ins := range u.Services {
		out[svc] = []string{}
		for _, in := range ins {
			out[svc] = append(out[svc], fmt.Sprintf("%s %s w=%d %s", in.ID, net.JoinHostPort(in.Address, strconv.Itoa(in.Port)), in.Weight, in.Status))
		}
	}
	return out
}

// waitUpdate waits until the last report is a full update whose summary is
// want, and returns it.
func waitUpdate(t *testing.T, rec *sourcetest.Recorder, timeout time.Duration, want map[string][]string) *source.Update {
	t.Helper()
	last := func(r *sourcetest.Recorder) (sourcetest.Report, bool) {
		reps := r.Reports()
		if len(reps) == 0 {
			return sourcetest.Report{}, false
		}
		return reps[len(reps)-1], true
	}
	var got *source.Update
	if rec.Wait(timeout, func(r *sourcetest.Recorder) bool {
		l, ok := last(r)
		got = l.Update
		return ok && l.Update != nil && l.Update.Full && cmp.Equal(want, summary(l.Update))
	}) {
		return got
	}
	var diff string
	if l, ok := last(rec); ok && l.Update != nil {
		diff = cmp.Diff(want, summary(l.Update))
	} else if ok {
		diff = fmt.Sprintf("the last report is a failure: %v", l.Failure)
	}
	t.Fatalf("after %s, no full update as wanted (-want +last):\n%s", timeout, diff)
	return nil
}

// noUpdateAfterFail checks that no update came after the n-th failure.
func noUpdateAfterFail(t *testing.T, rec *sourcetest.Recorder, n int) {
	t.Helper()
	for _, u := range rec.UpdatesAfterFailure(n) {
		t.Errorf("an update came after a failure, with no answer to report: %v", summary(&u))
	}
}

var webRecords = []string{
	// w1: A and AAAA from host-record, which dnsmasq puts in the
	// additional section.
	"srv-host=_web._tcp.example.com,w1.example.com,8080,1,100",
	"host-record=w1.example.com,10.0.1.5,fd00::5",
	// w2: from address=, which dnsmasq answers but leaves out of the
	// additional section: the source asks for A and AAAA (its AAAA is
	// NXDOMAIN). Weight 0 reads 1.
	"srv-host=_web._tcp.example.com,w2.example.com,8081,1,0",
	"address=/w2.example.com/10.0.1.6",
	// w3 is of a higher priority: a fallback, left out.
	"srv-host=_web._tcp.example.com,w3.example.com,8080,2,100",
	"host-record=w3.example.com,10.0.1.7",
	// w4 has no address at all: left out.
	"srv-host=_web._tcp.example.com,w4.example.com,8080,1,100",
	// api: one target, over a second name of the spec.
	"srv-host=_api._tcp.example.com,a1.example.com,9000,0,10",
	"host-record=a1.example.com,10.0.2.1",
	// dead: the "not available" target.
	"srv-host=_dead._tcp.example.com",
}

var webWant = map[string][]string{
	"web": {
		"w1-example-com-8080-10-0-1-5 10.0.1.5:8080 w=50 passing",
		"w1-example-com-8080-fd00-5 [fd00::5]:8080 w=50 passing",
		"w2-example-com-8081-10-0-1-6 10.0.1.6:8081 w=1 passing",
	},
	"api":  {"a1-example-com-9000-10-0-2-1 10.0.2.1:9000 w=10 passing"},
	"dead": {},
}

func TestReadsSRVAndAddresses(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, webRecords...)
	rec := run(t, "dns-srv://"+d.addr()+"/_web._tcp.example.com,_api._tcp.example.com/_dead._tcp.example.com", source.Options{})
	first := waitUpdate(t, rec, 10*time.Second, webWant)
	if in := first.Services["web"][0]; in.Meta["dns-srv.target"] != "w1.example.com" || in.Meta["dns-srv.priority"] != "1" {
		t.Errorf("meta of %s: %v", in.ID, in.Meta)
	}
	for _, err := range rec.Failures() {
		t.Errorf("failure: %v", err)
	}
}

func TestNXDOMAINIsNoInstancesOtherErrorsFail(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, webRecords...)
	rec := run(t, "dns-srv://"+d.addr()+"/_web._tcp.example.com,_gone._tcp.example.com", source.Options{Refresh: 2 * time.Second})
	waitUpdate(t, rec, 10*time.Second, map[string][]string{"web": webWant["web"], "gone": {}})

	// The records go: NXDOMAIN, reported as no instances.
	d.restart("host-record=w1.example.com,10.0.1.5")
	waitUpdate(t, rec, 10*time.Second, map[string][]string{"web": {}, "gone": {}})

	// A name outside example.com is REFUSED: that is no answer.
	refused := run(t, "dns-srv://"+d.addr()+"/_web._tcp.example.org", source.Options{Refresh: 2 * time.Second})
	if err := refused.WaitFailures(t, 1, 10*time.Second); !errors.Is(err, ErrRcode) || !strings.Contains(err.Error(), "REFUSED") {
		t.Errorf("failure %v, want ErrRcode REFUSED", err)
	}
	noUpdateAfterFail(t, refused, 1)
}

func TestFollowsChangesAtTheTTL(t *testing.T) {
	t.Parallel()
	hosts := filepath.Join(readableDir(t), "hosts")
	os.WriteFile(hosts, []byte("10.0.1.5 w1.example.com\n"), 0o644)
	records := []string{"addn-hosts=" + hosts, "srv-host=_web._tcp.example.com,w1.example.com,8080,0,100"}
	d := startDNSMasq(t, records...)
	// The refresh is far longer than the test's deadlines: the TTL (1s)
	// drives every look.
	rec := run(t, "dns-srv://"+d.addr()+"/_web._tcp.example.com", source.Options{Refresh: time.Minute})
	waitUpdate(t, rec, 10*time.Second, map[string][]string{"web": {"w1-example-com-8080-10-0-1-5 10.0.1.5:8080 w=100 passing"}})

	// A second address for w1: one more instance, sharing w1's weight.
	os.WriteFile(hosts, []byte("10.0.1.5 w1.example.com\n10.0.1.9 w1.example.com\n"), 0o644)
	d.hup()
	waitUpdate(t, rec, 5*time.Second, map[string][]string{"web": {
		"w1-example-com-8080-10-0-1-5 10.0.1.5:8080 w=50 passing",
		"w1-example-com-8080-10-0-1-9 10.0.1.9:8080 w=50 passing",
	}})

	// The first address goes.
	os.WriteFile(hosts, []byte("10.0.1.9 w1.example.com\n"), 0o644)
	d.hup()
	waitUpdate(t, rec, 5*time.Second, map[string][]string{"web": {"w1-example-com-8080-10-0-1-9 10.0.1.9:8080 w=100 passing"}})

	// A new SRV record (dnsmasq reads those only when it starts).
	d.restart(append(records, "srv-host=_web._tcp.example.com,w2.example.com,8080,0,300", "host-record=w2.example.com,10.0.1.6")...)
	waitUpdate(t, rec, 5*time.Second, map[string][]string{"web": {
		"w1-example-com-8080-10-0-1-9 10.0.1.9:8080 w=100 passing",
		"w2-example-com-8080-10-0-1-6 10.0.1.6:8080 w=300 passing",
	}})
}

func TestServerDownFailsAndRecovers(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, webRecords...)
	rec := run(t, "dns-srv://"+d.addr()+"/_web._tcp.example.com", source.Options{Refresh: 2 * time.Second})
	want := map[string][]string{"web": webWant["web"]}
	waitUpdate(t, rec, 10*time.Second, want)

	ups, fails := rec.Counts()
	d.stop()
	rec.WaitFailures(t, fails+2, 10*time.Second)
	noUpdateAfterFail(t, rec, fails+1)

	d.restart(webRecords...)
	waitUpdate(t, rec, 10*time.Second, want)
	for _, u := range rec.Updates()[ups:] {
		if !cmp.Equal(want, summary(&u)) {
			t.Errorf("an update other than the records while the server was down: %v", summary(&u))
		}
	}
}

func TestLargeAnswerOverTCP(t *testing.T) {
	t.Parallel()
	const n = 1000
	var lines []string
	var want []string
	for i := range n {
		target := fmt.Sprintf("b%d.example.com", i)
		ip := fmt.Sprintf("10.1.%d.%d", i/256, i%256)
		lines = append(lines,
			fmt.Sprintf("srv-host=_big._tcp.example.com,%s,9000,0,10", target),
			// address=, not host-record: dnsmasq 2.90 breaks its
			// compression pointers past 16 KiB when it fills the
			// additional section of so large an answer.
			fmt.Sprintf("address=/%s/%s", target, ip))
		want = append(want, fmt.Sprintf("b%d-example-com-9000-%s 10.1.%d.%d:9000 w=10 passing", i, strings.ReplaceAll(ip, ".", "-"), i/256, i%256))
	}
	slices.Sort(want)
	d := startDNSMasq(t, lines...)

	// The answer does not fit in UDP: the source must ask again over TCP.
	q := new(dns.Msg)
	q.SetQuestion("_big._tcp.example.com.", dns.TypeSRV)
	q.SetEdns0(ednsSize, false)
	r, _, err := (&dns.Client{}).Exchange(q, d.addr())
	if err != nil || !r.Truncated {
		t.Fatalf("dnsmasq's UDP answer: %v, truncated %v; want truncated", err, r != nil && r.Truncated)
	}

	rec := run(t, "dns-srv://"+d.addr()+"/_big._tcp.example.com", source.Options{})
	waitUpdate(t, rec, 20*time.Second, map[string][]string{"big": want})
}

// garbageServer is a UDP DNS server that passes queries on to upstream, or,
// when told to, answers them with something unusable.
type garbageServer struct {
	pc       net.PacketConn
	upstream string
	mode     atomic.Value // string: "", or a key of garbage
}

// garbage makes the unusable answers to the query q.
var garbage = map[string]func(q *dns.Msg) []byte{
	// The query's ID, then noise.
	"noise": func(q *dns.Msg) []byte {
		return append([]byte{byte(q.Id >> 8), byte(q.Id), 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, 0xc0, 0xff, 0xc0, 0xff, 0xff, 0x01, 0x02)
	},
	// A header alone, counting records the message does not hold.
	"lying counts": func(q *dns.Msg) []byte {
		return []byte{byte(q.Id >> 8), byte(q.Id), 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0}
	},
	// A well-formed empty answer to another question.
	"other question": func(q *dns.Msg) []byte {
		r := new(dns.Msg)
		r.SetQuestion("_other._tcp.example.com.", dns.TypeSRV)
		r.Id, r.Response = q.Id, true
		b, _ := r.Pack()
		return b
	},
	// Too short to be a message.
	"short": func(q *dns.Msg) []byte { return []byte{byte(q.Id >> 8), byte(q.Id), 0x81} },
	// SERVFAIL.
	"servfail": func(q *dns.Msg) []byte {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeServerFailure)
		b, _ := r.Pack()
		return b
	},
}

func startGarbageServer(t *testing.T, upstream string) *garbageServer {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &garbageServer{pc: pc, upstream: upstream}
	g.mode.Store("")
	t.Cleanup(func() { pc.Close() })
	go g.serve()
	return g
}

func (g *garbageServer) serve() {
	buf := make([]byte, 65535)
	for {
		n, from, err := g.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := new(dns.Msg)
		if q.Unpack(buf[:n]) != nil {
			continue
		}
		if mode := g.mode.Load().(string); mode != "" {
			g.pc.WriteTo(garbage[mode](q), from)
			continue
		}
		r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(q, g.upstream)
		if err != nil {
			continue
		}
		b, _ := r.Pack()
		g.pc.WriteTo(b, from)
	}
}

func TestUnusableAnswersFailAndKeepTheState(t *testing.T) {
	t.Parallel()
	d := startDNSMasq(t, webRecords...)
	g := startGarbageServer(t, d.addr())
	rec := run(t, "dns-srv://"+g.pc.LocalAddr().String()+"/_web._tcp.example.com", source.Options{Refresh: 2 * time.Second})
	want := map[string][]string{"web": webWant["web"]}
	waitUpdate(t, rec, 10*time.Second, want)

	for _, mode := range []string{"noise", "lying counts", "other question", "short", "servfail"} {
		_, before := rec.Counts()
		g.mode.Store(mode)
		rec.WaitFailures(t, before+1, 10*time.Second)
		wantErr := ErrMalformed
		if mode == "servfail" {
			wantErr = ErrRcode
		}
		if err := rec.LastFailure(); !errors.Is(err, wantErr) {
			t.Errorf("%s: failure %v, want %v", mode, err, wantErr)
		}
		noUpdateAfterFail(t, rec, before+1)

		g.mode.Store("")
		waitUpdate(t, rec, 10*time.Second, want)
	}
}

// TestCancelEndsAWaitingQuery: a server that never answers gets the query
// again every second, and cancelling Run ends the wait at once, without a
// failure reported.
func TestCancelEndsAWaitingQuery(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var got atomic.Int32
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	src, err := source.New("dns-srv://"+pc.LocalAddr().String()+"/_web._tcp.example.com", source.Options{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rec := sourcetest.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec) }()
	testpeer.WaitUntil(t, "the query sent a second time", 5*time.Second, func() bool { return got.Load() >= 2 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return within 1s of its context being cancelled")
	}
	if reps := rec.Reports(); len(reps) != 0 {
		t.Errorf("%d reports, want none: %+v", len(reps), reps)
	}
}

// TestAdditionalSectionCutShort: dnsmasq fills the additional section only
// as far as the UDP buffer allows and leaves the rest out without TC, so a
// full-looking answer gives only some of a target's addresses. The source
// must ask for the targets' addresses itself then, and find all of them.
func TestAdditionalSectionCutShort(t *testing.T) {
	t.Parallel()
	var lines, want []string
	for i := range 10 {
		target := fmt.Sprintf("t%d.example.com", i)
		lines = append(lines, fmt.Sprintf("srv-host=_cut._tcp.example.com,%s,9000,0,10", target))
		for j := range 15 {
			ip := fmt.Sprintf("10.2.%d.%d", i, j+1)
			lines = append(lines, fmt.Sprintf("host-record=%s,%s", target, ip))
			want = append(want, fmt.Sprintf("t%d-example-com-9000-%s %s:9000 w=1 passing", i, strings.ReplaceAll(ip, ".", "-"), ip))
		}
	}
	slices.Sort(want)
	d := startDNSMasq(t, lines...)

	// The premise: dnsmasq's UDP answer is not truncated but lacks some
	// addresses.
	q := new(dns.Msg)
	q.SetQuestion("_cut._tcp.example.com.", dns.TypeSRV)
	q.SetEdns0(ednsSize, false)
	r, _, err := (&dns.Client{}).Exchange(q, d.addr())
	if err != nil || r.Truncated || len(r.Extra) >= 150 {
		t.Fatalf("dnsmasq's UDP answer: %v, truncated %v, %d additional records; the test expects a silently cut section", err, r != nil && r.Truncated, len(r.Extra))
	}
	rec := run(t, "dns-srv://"+d.addr()+"/_cut._tcp.example.com", source.Options{})
	waitUpdate(t, rec, 20*time.Second, map[string][]string{"cut": want})
}
