package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// exchange sends one query over UDP and returns the parsed answer: up to
// three tries, a second each.
func exchange(ctx context.Context, addr string, q query, edns bool) (*message, error) {
	wire, err := buildQuery(q.name, q.qtype, edns)
	if err != nil {
		return nil, err
	}
	var last error
	for range 3 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := exchangeOnce(ctx, addr, wire)
		if err == nil {
			if m.question != q.name || m.qtype != q.qtype {
				return nil, fmt.Errorf("%s: answer for %s %s", q, m.question, typeName(m.qtype))
			}
			return m, nil
		}
		last = err
	}
	return nil, fmt.Errorf("%s: %w", q, last)
}

func exchangeOnce(ctx context.Context, addr string, wire []byte) (*message, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	id := uint16(rand.Uint32())
	wire = slices.Clone(wire)
	binary.BigEndian.PutUint16(wire, id)
	if _, err := c.Write(wire); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		m, err := parseMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("unreadable answer: %w", err)
		}
		if m.id == id && m.qr {
			return m, nil
		}
	}
}

// ask sends q and fails unless the answer is NOERROR and holds every record
// of q's answer section (or, when it is truncated, only records of it): a
// server is ready when it answers that.
func ask(ctx context.Context, addr string, q query, edns bool) (*message, error) {
	m, err := exchange(ctx, addr, q, edns)
	if err != nil {
		return nil, err
	}
	if m.rcode != 0 {
		return m, fmt.Errorf("%s: %s", q, rcodeName(m.rcode))
	}
	got, want := canonicals(m.answer), sorted(q.wantAnswer)
	if slices.Equal(got, want) || m.tc && len(got) > 0 && len(minus(got, want)) == 0 {
		return m, nil
	}
	return m, fmt.Errorf("%s: %d of the %d answers expected", q, len(intersect(got, want)), len(want))
}

// canonical is what the equivalence check compares of a record: type, name
// and data. The TTL, and an SRV record's priority and weight (policy, which
// the benchmark does not dictate to Discotech) are compared apart, as notes.
func canonical(r record) string {
	switch r.typ {
	case typeA, typeAAAA:
		return fmt.Sprintf("%s %s %s", typeName(r.typ), r.name, r.addr)
	case typeSRV:
		return fmt.Sprintf("SRV %s %d %s", r.name, r.port, r.target)
	}
	return fmt.Sprintf("%s %s %x", typeName(r.typ), r.name, r.raw)
}

// canonicals returns the records' canonical forms, sorted.
func canonicals(rs []record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = canonical(r)
	}
	slices.Sort(out)
	return out
}

// details are the figures of records compared as notes: TTLs, and SRV
// priorities and weights, sorted.
func details(rs []record) []string {
	var out []string
	for _, r := range rs {
		d := fmt.Sprintf("%s ttl %d", typeName(r.typ), r.ttl)
		if r.typ == typeSRV {
			d += fmt.Sprintf(" priority %d weight %d", r.priority, r.weight)
		}
		out = append(out, d)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// intersect returns what two sorted lists have in common.
func intersect(a, b []string) []string {
	var out []string
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch strings.Compare(a[i], b[j]) {
		case 0:
			out = append(out, a[i])
			i++
			j++
		case -1:
			i++
		default:
			j++
		}
	}
	return out
}

// shape summarizes an answer for the equivalence table: "NOERROR: 3 SRV;
// additional 3 A; 232 B".
func shape(m *message) string {
	s := rcodeName(m.rcode)
	if m.tc {
		s += " TC"
	}
	s += ": " + typeCounts(m.answer)
	if len(m.additional) > 0 {
		s += "; additional " + typeCounts(m.additional)
	}
	if len(m.authority) > 0 {
		s += "; authority " + typeCounts(m.authority)
	}
	return s + fmt.Sprintf("; %d B", m.size)
}

func typeCounts(rs []record) string {
	counts := map[string]int{}
	for _, r := range rs {
		counts[typeName(r.typ)]++
	}
	var out []string
	for _, t := range slices.Sorted(maps.Keys(counts)) {
		out = append(out, fmt.Sprintf("%d %s", counts[t], t))
	}
	if len(out) == 0 {
		return "no records"
	}
	return strings.Join(out, ", ")
}

// comparison is the equivalence check's finding for one query: the answer
// of each server, what makes them different records (fatal), and what
// differs without changing the records (notes).
type comparison struct {
	q              query
	disco, dnsmasq *message
	fatal, notes   []string
}

// compare checks that two answers to q hold the same records. When both
// are truncated (TC), the records are whichever fit, a random subset at
// either server: only their number and types must agree, and the
// additional section is left to the notes.
func compare(q query, disco, dnsmasq *message) comparison {
	c := comparison{q: q, disco: disco, dnsmasq: dnsmasq}
	if disco.rcode != dnsmasq.rcode {
		c.fatal = append(c.fatal, fmt.Sprintf("rcode: Discotech %s, dnsmasq %s", rcodeName(disco.rcode), rcodeName(dnsmasq.rcode)))
	}
	if disco.tc != dnsmasq.tc {
		c.fatal = append(c.fatal, fmt.Sprintf("TC (truncated) bit: Discotech %v, dnsmasq %v", disco.tc, dnsmasq.tc))
	}
	truncated := disco.tc && dnsmasq.tc
	for _, s := range []struct {
		name string
		d, m []record
		want []string
	}{
		{"answer", disco.answer, dnsmasq.answer, q.wantAnswer},
		{"additional", disco.additional, dnsmasq.additional, q.wantAdditional},
	} {
		dc, mc := canonicals(s.d), canonicals(s.m)
		switch {
		case truncated && s.name == "answer" && typeCounts(s.d) != typeCounts(s.m):
			c.fatal = append(c.fatal, fmt.Sprintf("answer section, truncated: Discotech %s, dnsmasq %s", typeCounts(s.d), typeCounts(s.m)))
		case truncated && s.name == "additional" && typeCounts(s.d) != typeCounts(s.m):
			c.notes = append(c.notes, fmt.Sprintf("additional section, truncated: Discotech %s, dnsmasq %s", typeCounts(s.d), typeCounts(s.m)))
		case !truncated && !slices.Equal(dc, mc):
			c.fatal = append(c.fatal, fmt.Sprintf("%s section: Discotech %d records (%s), dnsmasq %d (%s); only Discotech's: %s; only dnsmasq's: %s",
				s.name, len(dc), typeCounts(s.d), len(mc), typeCounts(s.m), list(minus(dc, mc)), list(minus(mc, dc))))
		}
		if dt, mt := details(s.d), details(s.m); !slices.Equal(dt, mt) && len(dt) > 0 && len(mt) > 0 {
			c.notes = append(c.notes, fmt.Sprintf("%s section: Discotech has %s; dnsmasq %s", s.name, strings.Join(dt, ", "), strings.Join(mt, ", ")))
		}
		if truncated {
			continue // the table shows TC; what is missing is whatever did not fit
		}
		want := sorted(s.want)
		if !slices.Equal(dc, want) && !disco.tc {
			c.notes = append(c.notes, fmt.Sprintf("Discotech's %s section: %d records, the data set has %d (missing: %s; extra: %s)",
				s.name, len(dc), len(want), list(minus(want, dc)), list(minus(dc, want))))
		}
		if !slices.Equal(mc, want) && !dnsmasq.tc {
			c.notes = append(c.notes, fmt.Sprintf("dnsmasq's %s section: %d records, the data set has %d (missing: %s; extra: %s)",
				s.name, len(mc), len(want), list(minus(want, mc)), list(minus(mc, want))))
		}
	}
	if dt, mt := typeCounts(disco.authority), typeCounts(dnsmasq.authority); dt != mt {
		c.notes = append(c.notes, fmt.Sprintf("authority section: Discotech %s, dnsmasq %s", dt, mt))
	}
	if (disco.opt == nil) != (dnsmasq.opt == nil) {
		c.notes = append(c.notes, fmt.Sprintf("EDNS OPT record in the answer: Discotech %v, dnsmasq %v", disco.opt != nil, dnsmasq.opt != nil))
	}
	return c
}

// minus returns what the sorted list a has that b has not.
func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); !found {
			out = append(out, s)
		}
	}
	return out
}

// list prints at most three items of l.
func list(l []string) string {
	switch {
	case len(l) == 0:
		return "none"
	case len(l) > 3:
		return strings.Join(l[:3], "; ") + fmt.Sprintf("; and %d more", len(l)-3)
	}
	return strings.Join(l, "; ")
}

// equivalence asks both servers every query of every mix, with and
// without EDNS, prints what they answered, and fails if, in the mode the
// benchmark measures (edns), any answer holds different records.
func equivalence(ctx context.Context, w io.Writer, disco, dnsmasq *server, ms []mix, edns bool) (notes []string, err error) {
	type row struct{ what, disco, dnsmasq, verdict string }
	var fatal []string
	for _, mode := range []bool{edns, !edns} {
		modeName := map[bool]string{true: "with EDNS (4096-byte UDP payload)", false: "without EDNS (512-byte UDP limit)"}[mode]
		measured := mode == edns
		var rows []row
		for _, m := range ms {
			for _, q := range m.queries {
				dm, err := exchange(ctx, disco.dns, q, mode)
				if err != nil {
					return nil, fmt.Errorf("discotech: %w", err)
				}
				mm, err := exchange(ctx, dnsmasq.dns, q, mode)
				if err != nil {
					return nil, fmt.Errorf("dnsmasq: %w", err)
				}
				c := compare(q, dm, mm)
				verdict := "same records"
				if len(c.fatal) > 0 {
					verdict = "DIFFERENT"
				}
				rows = append(rows, row{q.String(), shape(dm), shape(mm), verdict})
				for _, f := range c.fatal {
					line := fmt.Sprintf("%s %s: %s", q, modeName, f)
					if measured {
						fatal = append(fatal, line)
					} else {
						notes = append(notes, line+" (a mode not measured)")
					}
				}
				for _, n := range c.notes {
					notes = append(notes, fmt.Sprintf("%s %s: %s", q, modeName, n))
				}
			}
		}
		label := "measured"
		if !measured {
			label = "not measured, for information"
		}
		fmt.Fprintf(w, "\n== answers %s (%s): Discotech and dnsmasq, each query once\n", modeName, label)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "query\tDiscotech\tdnsmasq\tcheck")
		// Rows that look alike (the services of one size) print once.
		for i := 0; i < len(rows); {
			j := i + 1
			for j < len(rows) && rows[j].disco == rows[i].disco && rows[j].dnsmasq == rows[i].dnsmasq && rows[j].verdict == rows[i].verdict &&
				strings.Fields(rows[j].what)[1] == strings.Fields(rows[i].what)[1] {
				j++
			}
			what := rows[i].what
			if j-i > 1 {
				what += fmt.Sprintf(" (and %d more alike)", j-i-1)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", what, rows[i].disco, rows[i].dnsmasq, rows[i].verdict)
			i = j
		}
		tw.Flush()
	}
	if len(fatal) > 0 {
		return notes, fmt.Errorf("the servers do not serve the same records, so their figures would not compare; not measuring:\n  %s",
			strings.Join(fatal, "\n  "))
	}
	return notes, nil
}

// checkAlone checks a lone server's answers (with -only) in the measured
// mode: every query must be NOERROR; answers that lack records of the data
// set come back as notes.
func checkAlone(ctx context.Context, s *server, ms []mix, edns bool) (notes []string, err error) {
	for _, m := range ms {
		for _, q := range m.queries {
			msg, err := exchange(ctx, s.dns, q, edns)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.Name(), err)
			}
			if msg.rcode != 0 {
				return nil, fmt.Errorf("%s: %s: %s", s.Name(), q, rcodeName(msg.rcode))
			}
			if got, want := canonicals(msg.answer), sorted(q.wantAnswer); !slices.Equal(got, want) {
				notes = append(notes, fmt.Sprintf("%s: %s: answer section has %d of the data set's %d records (%s)", s.Name(), q, len(intersect(got, want)), len(want), shape(msg)))
			}
			if got, want := canonicals(msg.additional), sorted(q.wantAdditional); !slices.Equal(got, want) {
				notes = append(notes, fmt.Sprintf("%s: %s: additional section has %d of the data set's %d records (%s)", s.Name(), q, len(intersect(got, want)), len(want), shape(msg)))
			}
		}
	}
	return notes, nil
}
