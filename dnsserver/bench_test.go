package dnsserver

import (
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkHandle measures one query from packet to packed answer, as the
// UDP loop runs it, for each kind of name.
func BenchmarkHandle(b *testing.B) {
	s, err := New(webFixture(), DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"A", "web.service.disco.", dns.TypeA},
		{"SRV", "_web._tcp.service.disco.", dns.TypeSRV},
		{"NXDOMAIN", "nosuch.service.disco.", dns.TypeA},
		{"A_1000_truncated", "big.service.disco.", dns.TypeA},
	} {
		b.Run(q.name, func(b *testing.B) {
			m := new(dns.Msg)
			m.SetQuestion(q.qname, q.qtype)
			m.SetEdns0(1232, false)
			pkt, _ := m.Pack()
			out := make([]byte, maxUDPSize)
			sc := newScratch()
			b.ReportAllocs()
			for b.Loop() {
				if s.handle(pkt, out, "udp", sc) == nil {
					b.Fatal("no answer")
				}
			}
		})
	}
}
