package dnsserver

import (
	"encoding/binary"
	"net"
	"strings"
	"unsafe"

	"github.com/miekg/dns"
)

// The codec here is the hot path's shortcut around miekg/dns's general
// Unpack and Pack, for the messages nearly every query and answer are: one
// question in plain ASCII, at most an EDNS0 OPT; answers of A, AAAA, SRV,
// CNAME and SOA records. Whatever it does not recognise it declines, and the
// general codec handles it. TestCodecMatchesMiekg holds the two to the same
// results.

// unpackQuery decodes a plain query, or returns false for miekg to decode.
func unpackQuery(pkt []byte, sc *scratch) (*dns.Msg, int, bool) {
	if len(pkt) < 12+5 {
		return nil, 0, false
	}
	flags := binary.BigEndian.Uint16(pkt[2:])
	// Only RD, AD and CD may be set: not QR (a response), not an opcode
	// other than QUERY, not AA, TC, Z or an rcode, which a query never has.
	if flags&^(1<<8|1<<5|1<<4) != 0 ||
		binary.BigEndian.Uint16(pkt[4:]) != 1 || binary.BigEndian.Uint16(pkt[6:]) != 0 ||
		binary.BigEndian.Uint16(pkt[8:]) != 0 || binary.BigEndian.Uint16(pkt[10:]) > 1 {
		return nil, 0, false
	}
	// The name, as presentation text: letters, digits, '-' and '_' only,
	// so that nothing needs escaping.
	var text [256]byte
	t := 0
	off := 12
	for {
		if off >= len(pkt) {
			return nil, 0, false
		}
		l := int(pkt[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(pkt) || t+l+1 > len(text) {
			return nil, 0, false
		}
		for _, c := range pkt[off : off+l] {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return nil, 0, false
			}
		}
		t += copy(text[t:], pkt[off:off+l])
		text[t] = '.'
		t++
		off += l
	}
	if t == 0 || off+4 > len(pkt) {
		return nil, 0, false // the root, or a truncated question
	}
	q := dns.Question{Qtype: binary.BigEndian.Uint16(pkt[off:]), Qclass: binary.BigEndian.Uint16(pkt[off+2:])}
	off += 4
	qend := off
	hdr := dns.MsgHdr{
		Id:                binary.BigEndian.Uint16(pkt),
		RecursionDesired:  flags&(1<<8) != 0,
		CheckingDisabled:  flags&(1<<4) != 0,
		AuthenticatedData: flags&(1<<5) != 0,
	}
	var m *dns.Msg
	if sc == nil {
		q.Name = string(text[:t])
		m = &dns.Msg{MsgHdr: hdr, Question: []dns.Question{q}}
	} else {
		// The name lives in the scratch until the next query: nothing
		// that outlives this query may keep it (view keys are cloned).
		copy(sc.name[:], text[:t])
		q.Name = unsafe.String(&sc.name[0], t)
		sc.question[0] = q
		sc.req = dns.Msg{MsgHdr: hdr, Question: sc.question[:]}
		m = &sc.req
	}
	if binary.BigEndian.Uint16(pkt[10:]) == 1 {
		// OPT: root name, type 41, class = UDP size, TTL = extended
		// rcode, version, flags, and no options (a query with options,
		// such as a cookie, takes the general path, which checks them).
		if off+11 != len(pkt) || pkt[off] != 0 || binary.BigEndian.Uint16(pkt[off+1:]) != dns.TypeOPT ||
			binary.BigEndian.Uint16(pkt[off+9:]) != 0 {
			return nil, 0, false
		}
		// Version 0, no extended rcode: the TTL's top 16 bits are zero.
		ttl := binary.BigEndian.Uint32(pkt[off+5:])
		if ttl>>16 != 0 {
			return nil, 0, false
		}
		var opt *dns.OPT
		if sc == nil {
			opt = new(dns.OPT)
			m.Extra = []dns.RR{opt}
		} else {
			opt = &sc.reqOpt
			sc.reqExtra[0] = opt
			m.Extra = sc.reqExtra[:]
		}
		*opt = dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: binary.BigEndian.Uint16(pkt[off+3:]), Ttl: ttl}}
	} else if off != len(pkt) {
		return nil, 0, false
	}
	return m, qend, true
}

// packAnswer encodes resp, the answer to the query in pkt whose question
// ends at qend, into out, copying the question as the client sent it. It
// returns false, having written nothing useful, when resp holds something it
// does not encode or does not fit in size bytes.
func packAnswer(resp *dns.Msg, pkt []byte, qend int, out []byte, size int) ([]byte, bool) {
	b := out[:0]
	var flags uint16 = 1 << 15 // QR
	if resp.Authoritative {
		flags |= 1 << 10
	}
	if resp.Truncated {
		flags |= 1 << 9
	}
	if resp.RecursionDesired {
		flags |= 1 << 8
	}
	if resp.CheckingDisabled {
		flags |= 1 << 4
	}
	if resp.Rcode > 0xF || resp.RecursionAvailable || resp.AuthenticatedData || resp.Opcode != dns.OpcodeQuery {
		return nil, false
	}
	flags |= uint16(resp.Rcode)
	b = binary.BigEndian.AppendUint16(b, resp.Id)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(resp.Answer)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(resp.Ns)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(resp.Extra)))
	b = append(b, pkt[12:qend]...)
	qname := resp.Question[0].Name
	// Names written so far (SRV targets), for the additional records that
	// repeat them to point back to.
	var names [64]struct {
		name string
		off  int
	}
	nn := 0
	for _, sec := range [][]dns.RR{resp.Answer, resp.Ns, resp.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				opt := rr.(*dns.OPT)
				if len(opt.Option) != 0 {
					return nil, false
				}
				b = append(b, 0)
				b = binary.BigEndian.AppendUint16(b, dns.TypeOPT)
				b = binary.BigEndian.AppendUint16(b, h.Class)
				b = binary.BigEndian.AppendUint32(b, h.Ttl)
				b = binary.BigEndian.AppendUint16(b, 0)
				continue
			}
			// The owner: the question itself (a pointer to offset 12),
			// a name written before, or the name in full.
			switch {
			case h.Name == qname:
				b = append(b, 0xC0, 12)
			case len(h.Name) < len(qname) && qname[len(qname)-len(h.Name)-1] == '.' && strings.EqualFold(qname[len(qname)-len(h.Name):], h.Name):
				// A suffix of the question, such as the zone of an SOA:
				// the question's bytes spell it from this offset on.
				at := 12 + len(qname) - len(h.Name)
				b = append(b, 0xC0|byte(at>>8), byte(at))
			default:
				at := -1
				for _, w := range names[:nn] {
					if w.name == h.Name {
						at = w.off
					}
				}
				if at >= 0 && at < 0x3FFF {
					b = append(b, 0xC0|byte(at>>8), byte(at))
				} else if b = appendName(b, h.Name); b == nil {
					return nil, false
				}
			}
			b = binary.BigEndian.AppendUint16(b, h.Rrtype)
			b = binary.BigEndian.AppendUint16(b, h.Class)
			b = binary.BigEndian.AppendUint32(b, h.Ttl)
			lenAt := len(b)
			b = append(b, 0, 0)
			switch rr := rr.(type) {
			case *dns.A:
				if len(rr.A) != net.IPv4len {
					return nil, false
				}
				b = append(b, rr.A...)
			case *dns.AAAA:
				if len(rr.AAAA) != net.IPv6len {
					return nil, false
				}
				b = append(b, rr.AAAA...)
			case *dns.SRV:
				b = binary.BigEndian.AppendUint16(b, rr.Priority)
				b = binary.BigEndian.AppendUint16(b, rr.Weight)
				b = binary.BigEndian.AppendUint16(b, rr.Port)
				if nn < len(names) {
					names[nn].name, names[nn].off = rr.Target, len(b)
					nn++
				}
				b = appendName(b, rr.Target) // never compressed (RFC 2782)
			case *dns.CNAME:
				b = appendName(b, rr.Target)
			case *dns.SOA:
				if b = appendName(b, rr.Ns); b != nil {
					b = appendName(b, rr.Mbox)
				}
				if b != nil {
					for _, v := range []uint32{rr.Serial, rr.Refresh, rr.Retry, rr.Expire, rr.Minttl} {
						b = binary.BigEndian.AppendUint32(b, v)
					}
				}
			default:
				return nil, false
			}
			if b == nil {
				return nil, false
			}
			binary.BigEndian.PutUint16(b[lenAt:], uint16(len(b)-lenAt-2))
		}
	}
	if len(b) > size {
		return nil, false
	}
	return b, true
}

// appendName writes a fully qualified name of plain labels uncompressed, or
// returns nil for one it does not handle.
func appendName(b []byte, name string) []byte {
	if name == "." || !strings.HasSuffix(name, ".") || len(name) > 254 || strings.ContainsRune(name, '\\') {
		return nil
	}
	for name != "" {
		i := strings.IndexByte(name, '.')
		if i <= 0 || i > 63 {
			return nil
		}
		b = append(b, byte(i))
		b = append(b, name[:i]...)
		name = name[i+1:]
	}
	return append(b, 0)
}
