package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// The little of the DNS wire format (RFC 1035, RFC 2782 for SRV, RFC 6891
// for EDNS) the benchmark needs: building a query, and reading an answer's
// header and records, compressed names included.

// Record types the benchmark asks for or reads.
const (
	typeA    = 1
	typeNS   = 2
	typeSOA  = 6
	typeAAAA = 28
	typeSRV  = 33
	typeOPT  = 41
)

var typeNames = map[uint16]string{typeA: "A", typeNS: "NS", typeSOA: "SOA", typeAAAA: "AAAA", typeSRV: "SRV", typeOPT: "OPT"}

func typeName(t uint16) string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("TYPE%d", t)
}

var rcodeNames = []string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"}

func rcodeName(r int) string {
	if r >= 0 && r < len(rcodeNames) {
		return rcodeNames[r]
	}
	return fmt.Sprintf("RCODE%d", r)
}

// ednsSize is the UDP payload size the benchmark's queries advertise with
// EDNS: the same as dnsperf -e (its default, 4096 bytes), so that both load
// generators ask for the same thing.
const ednsSize = 4096

// buildQuery returns a query for name and qtype with id 0 and RD set, as
// dnsperf sends them; with edns, an OPT record advertising ednsSize.
func buildQuery(name string, qtype uint16, edns bool) ([]byte, error) {
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(b[4:], 1)      // QDCOUNT
	name = strings.TrimSuffix(name, ".")
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return nil, fmt.Errorf("bad name %q", name)
		}
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, qtype)
	b = binary.BigEndian.AppendUint16(b, 1) // IN
	if edns {
		binary.BigEndian.PutUint16(b[10:], 1) // ARCOUNT
		b = append(b, 0)                      // root
		b = binary.BigEndian.AppendUint16(b, typeOPT)
		b = binary.BigEndian.AppendUint16(b, ednsSize)
		b = binary.BigEndian.AppendUint32(b, 0) // extended rcode, version, flags
		b = binary.BigEndian.AppendUint16(b, 0) // no options
	}
	return b, nil
}

// header is the fixed part of a DNS message.
type header struct {
	id                uint16
	qr, aa, tc        bool
	rcode             int
	qd, an, ns, arcnt int
}

func parseHeader(b []byte) (header, bool) {
	if len(b) < 12 {
		return header{}, false
	}
	f := binary.BigEndian.Uint16(b[2:])
	return header{
		id:    binary.BigEndian.Uint16(b),
		qr:    f&0x8000 != 0,
		aa:    f&0x0400 != 0,
		tc:    f&0x0200 != 0,
		rcode: int(f & 0xf),
		qd:    int(binary.BigEndian.Uint16(b[4:])),
		an:    int(binary.BigEndian.Uint16(b[6:])),
		ns:    int(binary.BigEndian.Uint16(b[8:])),
		arcnt: int(binary.BigEndian.Uint16(b[10:])),
	}, true
}

// record is a resource record, with its data decoded for the types the
// benchmark compares.
type record struct {
	name  string // lower case, with the final dot
	typ   uint16
	class uint16 // for OPT: the advertised UDP payload size
	ttl   uint32
	addr  netip.Addr // A, AAAA
	// SRV
	priority, weight, port uint16
	target                 string
	raw                    []byte // the data as sent, for other types
}

// message is a parsed DNS answer.
type message struct {
	header
	question                      string
	qtype                         uint16
	answer, authority, additional []record // additional without the OPT record
	opt                           *record  // the OPT record, if any
	size                          int      // bytes on the wire
}

// parseMessage reads a whole DNS message.
func parseMessage(b []byte) (*message, error) {
	h, ok := parseHeader(b)
	if !ok {
		return nil, errors.New("message shorter than a header")
	}
	m := &message{header: h, size: len(b)}
	off := 12
	for i := 0; i < h.qd; i++ {
		name, n, err := readName(b, off)
		if err != nil {
			return nil, fmt.Errorf("question: %w", err)
		}
		if n+4 > len(b) {
			return nil, errors.New("question: short")
		}
		if i == 0 {
			m.question, m.qtype = name, binary.BigEndian.Uint16(b[n:])
		}
		off = n + 4
	}
	sections := []*[]record{&m.answer, &m.authority, &m.additional}
	for s, count := range []int{h.an, h.ns, h.arcnt} {
		for range count {
			r, n, err := readRecord(b, off)
			if err != nil {
				return nil, fmt.Errorf("%s section: %w", []string{"answer", "authority", "additional"}[s], err)
			}
			off = n
			if r.typ == typeOPT && s == 2 {
				m.opt = &r
				continue
			}
			*sections[s] = append(*sections[s], r)
		}
	}
	return m, nil
}

func readRecord(b []byte, off int) (record, int, error) {
	name, off, err := readName(b, off)
	if err != nil {
		return record{}, 0, err
	}
	if off+10 > len(b) {
		return record{}, 0, errors.New("record header past the end")
	}
	r := record{
		name:  name,
		typ:   binary.BigEndian.Uint16(b[off:]),
		class: binary.BigEndian.Uint16(b[off+2:]),
		ttl:   binary.BigEndian.Uint32(b[off+4:]),
	}
	rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
	off += 10
	end := off + rdlen
	if end > len(b) {
		return record{}, 0, errors.New("record data past the end")
	}
	data := b[off:end]
	switch r.typ {
	case typeA:
		if rdlen != 4 {
			return record{}, 0, fmt.Errorf("A record of %d bytes", rdlen)
		}
		r.addr = netip.AddrFrom4([4]byte(data))
	case typeAAAA:
		if rdlen != 16 {
			return record{}, 0, fmt.Errorf("AAAA record of %d bytes", rdlen)
		}
		r.addr = netip.AddrFrom16([16]byte(data))
	case typeSRV:
		if rdlen < 7 {
			return record{}, 0, fmt.Errorf("SRV record of %d bytes", rdlen)
		}
		r.priority = binary.BigEndian.Uint16(data)
		r.weight = binary.BigEndian.Uint16(data[2:])
		r.port = binary.BigEndian.Uint16(data[4:])
		target, n, err := readName(b, off+6)
		if err != nil {
			return record{}, 0, fmt.Errorf("SRV target: %w", err)
		}
		if n != end {
			return record{}, 0, errors.New("SRV target does not end with the record")
		}
		r.target = target
	default:
		r.raw = data
	}
	return r, end, nil
}

// readName reads the (possibly compressed) name at off and returns it in
// lower case with its final dot, and the offset just past it.
func readName(b []byte, off int) (string, int, error) {
	var sb strings.Builder
	end := -1 // where the name ends in the record, once a pointer was followed
	for jumps := 0; ; {
		if off >= len(b) {
			return "", 0, errors.New("name past the end")
		}
		l := int(b[off])
		switch {
		case l == 0:
			if end < 0 {
				end = off + 1
			}
			if sb.Len() == 0 {
				return ".", end, nil
			}
			return sb.String(), end, nil
		case l&0xc0 == 0xc0:
			if off+1 >= len(b) {
				return "", 0, errors.New("name pointer past the end")
			}
			if end < 0 {
				end = off + 2
			}
			if jumps++; jumps > 64 {
				return "", 0, errors.New("name pointer loop")
			}
			off = int(binary.BigEndian.Uint16(b[off:]) & 0x3fff)
		case l&0xc0 != 0:
			return "", 0, fmt.Errorf("label type %#x", l&0xc0)
		default:
			if off+1+l > len(b) {
				return "", 0, errors.New("label past the end")
			}
			sb.WriteString(strings.ToLower(string(b[off+1 : off+1+l])))
			sb.WriteByte('.')
			off += 1 + l
			if sb.Len() > 255 {
				return "", 0, errors.New("name longer than 255 bytes")
			}
		}
	}
}
