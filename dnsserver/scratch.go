package dnsserver

import (
	"net"

	"github.com/miekg/dns"
)

// arenaSize is how many records of each type a query's scratch holds
// before records come from the heap.
const arenaSize = 64

// scratch is one reader's memory for answering queries: the messages and
// records of a query live here until its answer is packed, and the next
// query reuses them. Queries on the hot path allocate almost nothing, which
// keeps the garbage collector, and the latency it adds, out of the way.
// A nil *scratch allocates everything, as tests and rare paths may.
type scratch struct {
	req, resp dns.Msg
	question  [1]dns.Question
	name      [256]byte
	opt       dns.OPT
	reqOpt    dns.OPT
	reqExtra  [1]dns.RR
	answer    []dns.RR
	extra     []dns.RR
	ns        [1]dns.RR
	a         []dns.A
	aaaa      []dns.AAAA
	srv       []dns.SRV
	entries   [arenaSize]entry
}

func newScratch() *scratch {
	return &scratch{
		answer: make([]dns.RR, 0, arenaSize),
		extra:  make([]dns.RR, 0, arenaSize),
		a:      make([]dns.A, 0, arenaSize),
		aaaa:   make([]dns.AAAA, 0, arenaSize),
		srv:    make([]dns.SRV, 0, arenaSize),
	}
}

// reset forgets the last query.
func (sc *scratch) reset() {
	if sc == nil {
		return
	}
	sc.a, sc.aaaa, sc.srv = sc.a[:0], sc.aaaa[:0], sc.srv[:0]
}

// newResp returns an empty response message.
func (sc *scratch) newResp() *dns.Msg {
	if sc == nil {
		return new(dns.Msg)
	}
	sc.resp = dns.Msg{Answer: sc.answer[:0], Extra: sc.extra[:0], Ns: sc.ns[:0]}
	return &sc.resp
}

// newOPT returns an OPT record advertising size.
func (sc *scratch) newOPT(size uint16) *dns.OPT {
	o := new(dns.OPT)
	if sc != nil {
		o = &sc.opt
		*o = dns.OPT{}
	}
	o.Hdr = dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: size}
	return o
}

// newA, newAAAA and newSRV return records from the arena while it lasts.
func (sc *scratch) newA(h dns.RR_Header, ip net.IP) *dns.A {
	if sc == nil || len(sc.a) == cap(sc.a) {
		return &dns.A{Hdr: h, A: ip}
	}
	sc.a = append(sc.a, dns.A{Hdr: h, A: ip})
	return &sc.a[len(sc.a)-1]
}

func (sc *scratch) newAAAA(h dns.RR_Header, ip net.IP) *dns.AAAA {
	if sc == nil || len(sc.aaaa) == cap(sc.aaaa) {
		return &dns.AAAA{Hdr: h, AAAA: ip}
	}
	sc.aaaa = append(sc.aaaa, dns.AAAA{Hdr: h, AAAA: ip})
	return &sc.aaaa[len(sc.aaaa)-1]
}

func (sc *scratch) newSRV(r dns.SRV) *dns.SRV {
	if sc == nil || len(sc.srv) == cap(sc.srv) {
		return &r
	}
	sc.srv = append(sc.srv, r)
	return &sc.srv[len(sc.srv)-1]
}

// entryBuf is room for a service's eligible instances.
func (sc *scratch) entryBuf() []entry {
	if sc == nil {
		return nil
	}
	return sc.entries[:0]
}
