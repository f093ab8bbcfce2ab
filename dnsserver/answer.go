package dnsserver

import (
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/discotech/disco/catalog"
)

// maxUDPSize is the largest UDP answer sent, whatever a client's EDNS buffer
// says: 4096 bytes, the size DNS Flag Day 2020 settled on below which
// fragmentation is rare.
const maxUDPSize = 4096

// form is the shape of a name under a service domain.
type form int

const (
	formUnknown  form = iota // no such name: NXDOMAIN
	formApex                 // the domain itself: SOA
	formEmpty                // service.<domain>, instance.<domain>: names with nothing of their own
	formService              // [tag.]web.service.<domain>
	formSRV                  // _web._tcp.service.<domain>, _web._tag.service.<domain>
	formInstance             // id.web.instance.<domain>
)

// name is a parsed query name.
type name struct {
	zone    *zone
	form    form
	service string
	tag     string // "" for every instance
	id      string
}

// zone is one service domain.
type zone struct {
	idx    int    // its place in Server.zones
	origin string // lower case, fully qualified: "disco."
	soa    dns.RR // the SOA of negative answers and SOA queries
	suffix string // "." + origin
}

func newZone(domain string, negTTL uint32) *zone {
	origin := dns.Fqdn(strings.ToLower(strings.TrimSuffix(domain, ".")))
	return &zone{
		origin: origin,
		suffix: "." + origin,
		soa: &dns.SOA{
			Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negTTL},
			Ns:      "ns." + origin,
			Mbox:    "hostmaster." + origin,
			Serial:  1, // no zone transfers: nothing compares serials
			Refresh: 3600,
			Retry:   600,
			Expire:  86400,
			Minttl:  negTTL,
		},
	}
}

// parse finds the zone qname is in and the form of the name below it. It
// returns false for a name in none of the zones.
func (s *Server) parse(qname string) (name, bool) {
	lower := strings.ToLower(qname) // no allocation when already lower case
	var z *zone
	var rel string
	for _, c := range s.zones {
		if lower == c.origin {
			return name{zone: c, form: formApex}, true
		}
		if strings.HasSuffix(lower, c.suffix) {
			z, rel = c, lower[:len(lower)-len(c.suffix)]
			break
		}
	}
	if z == nil {
		return name{}, false
	}
	n := name{zone: z}
	// At most three labels below the domain: split without allocating.
	var l [4]string
	k := 0
	for k < len(l) {
		i := strings.IndexByte(rel, '.')
		if i < 0 {
			l[k] = rel
			k++
			break
		}
		l[k], rel = rel[:i], rel[i+1:]
		k++
	}
	if k == len(l) && rel != "" {
		return n, true // too deep: formUnknown
	}
	labels := l[:k]
	switch {
	case k == 1 && (labels[0] == "service" || labels[0] == "instance"):
		n.form = formEmpty
	case k == 2 && labels[1] == "service":
		n.form, n.service = formService, labels[0]
	case k == 3 && labels[2] == "service" && strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_"):
		n.form, n.service, n.tag = formSRV, labels[0][1:], labels[1][1:]
		if n.tag == "tcp" { // the RFC 2782 protocol label: every instance
			n.tag = ""
		}
	case k == 3 && labels[2] == "service":
		n.form, n.tag, n.service = formService, labels[0], labels[1]
	case k == 3 && labels[2] == "instance":
		n.form, n.id, n.service = formInstance, labels[0], labels[1]
	}
	if n.form >= formService && catalog.ValidateName("service", n.service) != nil {
		n.form = formUnknown
	}
	return n, true
}

// answer builds the response to req, for a message of at most size bytes:
// dns.MinMsgSize for UDP, dns.MaxMsgSize for TCP, or, over UDP, what the
// client's EDNS0 buffer allows, which it returns. It leaves out records that
// cannot fit, and says whether it did; fit does the exact cut.
func (s *Server) answer(req *dns.Msg, size int, sc *scratch) (resp *dns.Msg, limit int, capped bool) {
	resp = sc.newResp()
	// As dns.Msg.SetReply, without allocating the question.
	resp.Id, resp.Response, resp.Opcode = req.Id, true, req.Opcode
	if resp.Opcode == dns.OpcodeQuery {
		resp.RecursionDesired, resp.CheckingDisabled = req.RecursionDesired, req.CheckingDisabled
	}
	if len(req.Question) > 0 {
		resp.Question = req.Question[:1]
	}
	if opt := req.IsEdns0(); opt != nil {
		resp.Extra = append(resp.Extra, sc.newOPT(maxUDPSize))
		if opt.Version() != 0 {
			resp.Rcode = dns.RcodeBadVers
			return resp, size, false
		}
		if size < dns.MaxMsgSize { // UDP: the client's buffer, within our bounds
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPSize)
		}
	}
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		resp.Rcode = dns.RcodeFormatError
		if req.Opcode != dns.OpcodeQuery {
			resp.Rcode = dns.RcodeNotImplemented
		}
		return resp, size, false
	}
	q := req.Question[0]
	n, ok := s.parse(q.Name)
	if !ok || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) {
		resp.Rcode = dns.RcodeRefused
		return resp, size, false
	}
	if s.cfg.Ready != nil && !s.cfg.Ready() {
		resp.Rcode = dns.RcodeServerFailure
		return resp, size, false
	}
	resp.Authoritative = true
	capped = s.resolve(resp, q, n, size, sc)
	if len(resp.Answer) == 0 {
		resp.Ns = append(resp.Ns, n.zone.soa)
	}
	if capped && size < dns.MaxMsgSize {
		resp.Truncated = true
	}
	return resp, size, capped
}

// minRecordSize is the smallest an answer record can be once packed: a
// compressed owner name (2 bytes), type, class, TTL and length (10) and an
// IPv4 address (4). No more than size/minRecordSize answers can fit.
const minRecordSize = 16

// fit truncates resp to size at a record boundary and reports whether it
// had to. Over UDP, TC is set only when an answer or authority record had to
// go: additional records are a courtesy (RFC 2181 §9), and a client without
// them can still ask for each target. Over TCP there is nothing bigger to
// retry with, so TC stays clear and the answer is the records that fit.
func fit(resp *dns.Msg, size int) bool {
	// The uncompressed length is cheaper to work out, and almost always
	// small enough.
	resp.Compress = false
	fits := resp.Len() <= size
	resp.Compress = true
	if fits || resp.Len() <= size {
		return false
	}
	answers, ns := len(resp.Answer), len(resp.Ns)
	resp.Truncate(size)
	resp.Compress = true
	if size >= dns.MaxMsgSize || (len(resp.Answer) == answers && len(resp.Ns) == ns) {
		resp.Truncated = false
	}
	return true
}

// resolve fills resp's answer and additional sections for q, and its rcode.
// It builds no more records than can fit in size bytes, and reports whether
// it left instances out for that.
func (s *Server) resolve(resp *dns.Msg, q dns.Question, n name, size int, sc *scratch) (capped bool) {
	switch n.form {
	case formUnknown:
		resp.Rcode = dns.RcodeNameError
		return false
	case formApex:
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			resp.Answer = append(resp.Answer, n.zone.soa)
		}
		return false
	case formEmpty:
		return false
	}
	v, known := s.view(n.service)
	if !known {
		resp.Rcode = dns.RcodeNameError
		return false
	}
	if n.form == formInstance {
		for i := range v.all {
			if v.all[i].in.ID == n.id {
				s.addresses(resp, q, v.all[i:i+1], sc)
				return false
			}
		}
		resp.Rcode = dns.RcodeNameError
		return false
	}
	picked, tagged := eligible(v.all, n.tag, sc.entryBuf())
	if !tagged {
		resp.Rcode = dns.RcodeNameError // no instance carries the tag at all
		return false
	}
	if s.order != nil {
		s.order(picked)
	} else {
		weightedShuffle(picked)
	}
	if limit := size/minRecordSize + 1; len(picked) > limit {
		picked, capped = picked[:limit], true
	}
	if q.Qtype == dns.TypeSRV || (q.Qtype == dns.TypeANY && n.form == formSRV) {
		s.srv(resp, q, n, picked, sc)
		return capped
	}
	// A magic address stands for the whole service, so a tag's subset is
	// answered with its backends.
	if s.cfg.MagicIP != nil && n.form == formService && n.tag == "" && len(picked) > 0 {
		if magic, ok := s.cfg.MagicIP(n.service); ok {
			if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
				resp.Answer = append(resp.Answer, sc.newA(s.hdr(q.Name, dns.TypeA), magic.AsSlice()))
			}
			// Magic addresses are IPv4: answering backends to AAAA
			// would route IPv6 clients around the interception.
			return false
		}
	}
	s.addresses(resp, q, picked, sc)
	return capped
}

// entry is an instance as answers use it, its address parsed once.
type entry struct {
	in *catalog.Instance
	ip net.IP // 4 bytes for IPv4 (and IPv4-mapped), 16 for IPv6, nil for a host name
	// targets are its SRV target in each zone, by zone index:
	// <id>.<service>.instance.<zone>, or its host name.
	targets []string
}

// view is a service's instances with their addresses parsed, made from one
// slice of the catalog's and kept while the catalog returns that slice.
type view struct {
	src []*catalog.Instance
	all []entry
}

// view returns the service's current view, making it when the catalog's
// slice changed.
func (s *Server) view(service string) (*view, bool) {
	instances, known := s.cat.Service(service)
	if !known {
		s.views.Delete(service)
		return nil, false
	}
	if cached, ok := s.views.Load(service); ok {
		if v := cached.(*view); sameSlice(v.src, instances) {
			return v, true
		}
	}
	v := &view{src: instances, all: make([]entry, len(instances))}
	for i, in := range instances {
		e := &v.all[i]
		e.in = in
		e.targets = make([]string, len(s.zones))
		addr, err := netip.ParseAddr(in.Address)
		if err == nil {
			e.ip = addr.Unmap().AsSlice()
		}
		for zi, z := range s.zones {
			if err == nil {
				e.targets[zi] = in.ID + "." + in.Service + ".instance." + z.origin
			} else {
				e.targets[zi] = dns.Fqdn(strings.ToLower(in.Address)) // a host name resolves elsewhere
			}
		}
	}
	// The name may point into a reader's scratch memory: keep a copy.
	s.views.Store(strings.Clone(service), v)
	return v, true
}

func sameSlice(a, b []*catalog.Instance) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// eligible appends to dst the entries answers may name: passing, not
// drained (weight 0), and carrying tag when tag is set. tagged reports
// whether any instance, eligible or not, carries the tag.
func eligible(all []entry, tag string, dst []entry) (picked []entry, tagged bool) {
	tagged = tag == ""
	for _, e := range all {
		if tag != "" {
			if !hasTag(e.in, tag) {
				continue
			}
			tagged = true
		}
		if e.in.Status == catalog.Passing && e.in.Weight > 0 {
			dst = append(dst, e)
		}
	}
	return dst, tagged
}

// hasTag matches case-insensitively, as DNS names are.
func hasTag(in *catalog.Instance, tag string) bool {
	for _, t := range in.Tags {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

// addresses answers A, AAAA or ANY with the addresses of entries, in order.
// An instance whose address is a host name is answered with a CNAME when it
// is the only one asked for (an instance name), and left out of a service's
// address set, where a CNAME cannot stand beside other records.
func (s *Server) addresses(resp *dns.Msg, q dns.Question, entries []entry, sc *scratch) {
	wantA := q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY
	wantAAAA := q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY
	for _, e := range entries {
		if e.ip == nil {
			if len(entries) == 1 && (wantA || wantAAAA) {
				resp.Answer = append(resp.Answer, &dns.CNAME{Hdr: s.hdr(q.Name, dns.TypeCNAME), Target: dns.Fqdn(strings.ToLower(e.in.Address))})
			}
			continue
		}
		if rr := s.addressRR(q.Name, e.ip, wantA, wantAAAA, sc); rr != nil {
			resp.Answer = append(resp.Answer, rr)
		}
	}
}

// addressRR is the A or AAAA record of ip named owner, or nil when its
// family is not wanted. The record shares ip.
func (s *Server) addressRR(owner string, ip net.IP, wantA, wantAAAA bool, sc *scratch) dns.RR {
	switch {
	case len(ip) == net.IPv4len && wantA:
		return sc.newA(s.hdr(owner, dns.TypeA), ip)
	case len(ip) == net.IPv6len && wantAAAA:
		return sc.newAAAA(s.hdr(owner, dns.TypeAAAA), ip)
	}
	return nil
}

// srv answers SRV records for entries, with the address of each target in
// the additional section.
func (s *Server) srv(resp *dns.Msg, q dns.Question, n name, entries []entry, sc *scratch) {
	for _, e := range entries {
		target := e.targets[n.zone.idx]
		resp.Answer = append(resp.Answer, sc.newSRV(dns.SRV{
			Hdr:      s.hdr(q.Name, dns.TypeSRV),
			Priority: 1,
			Weight:   uint16(min(e.in.Weight, math.MaxUint16)),
			Port:     uint16(e.in.Port),
			Target:   target,
		}))
		if e.ip != nil {
			resp.Extra = append(resp.Extra, s.addressRR(target, e.ip, true, true, sc))
		}
	}
}

func (s *Server) hdr(owner string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: s.ttl}
}

// shuffle orders instances as a weighted random draw without replacement:
// each place goes to an instance with probability proportional to its weight
// among those not yet placed, so clients that take the first address spread
// load by weight. (Efraimidis and Spirakis: sort by U^(1/w), here as
// log(U)/w.)
func shuffle(instances []entry, r func() float64) {
	if len(instances) < 2 {
		return
	}
	if sameWeight(instances) {
		// Fisher–Yates: the same distribution, without a sort.
		for i := len(instances) - 1; i > 0; i-- {
			j := int(r() * float64(i+1))
			instances[i], instances[j] = instances[j], instances[i]
		}
		return
	}
	type keyed struct {
		key float64
		e   entry
	}
	var stack [16]keyed
	ks := stack[:0]
	for _, e := range instances {
		u := r()
		for u == 0 {
			u = r()
		}
		ks = append(ks, keyed{math.Log(u) / float64(max(e.in.Weight, 1)), e})
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		switch {
		case a.key > b.key:
			return -1
		case a.key < b.key:
			return 1
		}
		return 0
	})
	for i := range ks {
		instances[i] = ks[i].e
	}
}

func sameWeight(instances []entry) bool {
	for _, e := range instances[1:] {
		if e.in.Weight != instances[0].in.Weight {
			return false
		}
	}
	return true
}

// weightedShuffle is the default order: shuffle with the runtime's random
// source, safe for concurrent use.
func weightedShuffle(instances []entry) { shuffle(instances, rand.Float64) }
