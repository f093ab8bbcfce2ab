package dnsserver

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

// codecQueries are queries of every shape the shortcut codec takes or
// declines.
func codecQueries() []*dns.Msg {
	var out []*dns.Msg
	add := func(name string, t uint16, mod func(*dns.Msg)) {
		m := new(dns.Msg)
		m.SetQuestion(name, t)
		m.Id = 77
		if mod != nil {
			mod(m)
		}
		out = append(out, m)
	}
	edns := func(size uint16) func(*dns.Msg) { return func(m *dns.Msg) { m.SetEdns0(size, false) } }
	for _, name := range []string{"web.service.disco.", "WEB.Service.disco.", "v1.web.service.disco.", "_web._tcp.service.disco.",
		"_web._v2.service.consul.", "w1.web.instance.disco.", "w6.web.instance.disco.", "nosuch.service.disco.",
		"down.service.disco.", "disco.", "service.disco.", "example.com.", "big.service.disco.", "_big._tcp.service.disco."} {
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeANY, dns.TypeSOA, dns.TypeTXT} {
			add(name, t, nil)
			add(name, t, edns(1232))
		}
	}
	add("web.service.disco.", dns.TypeA, func(m *dns.Msg) { m.CheckingDisabled = true; m.RecursionDesired = false })
	add("web.service.disco.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(4096, true) })
	add("web.service.disco.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(4096, false); m.IsEdns0().SetVersion(1) })
	add("web.service.disco.", dns.TypeA, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS })
	add("we\\.b.service.disco.", dns.TypeA, nil)
	add("web.service.disco.", dns.TypeA, func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
	})
	return out
}

// TestCodecMatchesMiekg: for every query the shortcut decodes, it decodes
// what miekg/dns decodes; for every answer it encodes, the bytes decode to
// the message miekg/dns would have sent.
func TestCodecMatchesMiekg(t *testing.T) {
	s, err := New(webFixture(), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	consul := newZone("consul", 5)
	consul.idx = len(s.zones)
	s.zones = append(s.zones, consul)
	s.order = func([]entry) {}
	took, packed := 0, 0
	for _, q := range codecQueries() {
		pkt, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		var general dns.Msg
		if err := general.Unpack(pkt); err != nil {
			t.Fatal(err)
		}
		fast, qend, ok := unpackQuery(pkt, nil)
		if !ok {
			continue
		}
		took++
		if diff := cmp.Diff(general.String(), fast.String()); diff != "" {
			t.Errorf("%s: decoded differently (-miekg +shortcut):\n%s", q.Question[0].String(), diff)
			continue
		}
		for _, size := range []int{dns.MinMsgSize, dns.MaxMsgSize} {
			resp, limit, _ := s.answer(fast, size, nil)
			b, ok := packAnswer(resp, pkt, qend, make([]byte, 0, 512), limit)
			if !ok {
				continue
			}
			packed++
			var got dns.Msg
			if err := got.Unpack(b); err != nil {
				t.Fatalf("%s: the shortcut's answer does not decode: %v", q.Question[0].String(), err)
			}
			want, err := resp.Pack()
			if err != nil {
				t.Fatal(err)
			}
			var wantMsg dns.Msg
			wantMsg.Unpack(want)
			if diff := cmp.Diff(wantMsg.String(), got.String()); diff != "" {
				t.Errorf("%s: encoded differently (-miekg +shortcut):\n%s", q.Question[0].String(), diff)
			}
		}
	}
	if took < 100 || packed < 150 {
		t.Errorf("the shortcut took %d queries and encoded %d answers; the test means to exercise it more", took, packed)
	}
}

// FuzzUnpackQuery: whatever the bytes, the shortcut either declines or
// agrees with miekg/dns.
func FuzzUnpackQuery(f *testing.F) {
	for _, q := range codecQueries() {
		pkt, _ := q.Pack()
		f.Add(pkt)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fast, _, ok := unpackQuery(pkt, newScratch())
		if !ok {
			return
		}
		var general dns.Msg
		if err := general.Unpack(pkt); err != nil {
			t.Fatalf("the shortcut decoded what miekg/dns rejects (%v): %x", err, pkt)
		}
		if general.String() != fast.String() {
			t.Fatalf("decoded differently:\nmiekg:\n%s\nshortcut:\n%s", general.String(), fast.String())
		}
	})
}

// FuzzHandle: no packet makes the server panic, and every answer it sends
// decodes and fits in the size the transport allows.
func FuzzHandle(f *testing.F) {
	for _, q := range codecQueries() {
		pkt, _ := q.Pack()
		f.Add(pkt, false)
	}
	s, err := New(webFixture(), DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	sc := newScratch()
	f.Fuzz(func(t *testing.T, pkt []byte, tcp bool) {
		transport, limit := "udp", maxUDPSize
		if tcp {
			transport, limit = "tcp", dns.MaxMsgSize
		}
		b := s.handle(pkt, make([]byte, limit), transport, sc)
		if b == nil {
			return
		}
		var m dns.Msg
		if err := m.Unpack(b); err != nil {
			t.Fatalf("answer does not decode: %v", err)
		}
		if len(b) > limit {
			t.Fatalf("answer is %d bytes, over %d", len(b), limit)
		}
	})
}
