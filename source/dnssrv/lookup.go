package dnssrv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

const (
	// ednsSize is the UDP payload size the source advertises: the DNS flag
	// day 2020 value, which avoids IP fragmentation.
	ednsSize = 1232
	// resend is how long a UDP query waits for its answer before it is sent
	// again (until the request's timeout), so that one lost datagram does
	// not fail a look.
	resend = time.Second
	// parallel bounds the address lookups of one look in flight at once.
	parallel = 16
	// maxChain bounds the CNAME chains followed in an answer.
	maxChain = 8
)

// record is one SRV record of the eligible (lowest) priority.
type record struct {
	target                 string // lower case, with the trailing dot
	port, weight, priority uint16
}

// lookup is the state of one look at every name.
type lookup struct {
	s       *dnsSource
	servers []string

	mu    sync.Mutex
	ttl   time.Duration   // the smallest TTL seen so far
	notes map[string]bool // what the look wants logged: targets left out, ...
}

// saw lowers the look's TTL to ttl seconds.
func (lk *lookup) saw(ttl uint32) {
	d := time.Duration(ttl) * time.Second
	lk.mu.Lock()
	lk.ttl = min(lk.ttl, d)
	lk.mu.Unlock()
}

// note records something to log (once, while it stays true).
func (lk *lookup) note(format string, args ...any) {
	lk.mu.Lock()
	lk.notes[fmt.Sprintf(format, args...)] = true
	lk.mu.Unlock()
}

// look asks about every name once. It returns the instances of every
// service, the wait until the records it used expire, and the notes to log.
func (s *dnsSource) look(ctx context.Context) (map[string][]*catalog.Instance, time.Duration, map[string]bool, error) {
	lk := &lookup{s: s, servers: s.servers(), ttl: s.refresh, notes: map[string]bool{}}

	// The SRV records of each name, and the addresses its additional
	// section gives.
	recs := make([][]record, len(s.names))
	addrs := make([]map[string][]netip.Addr, len(s.names))
	var missing []string // targets whose addresses must be asked for
	seen := map[string]bool{}
	for i, n := range s.names {
		r, err := lk.query(ctx, n.fqdn, dns.TypeSRV)
		if err != nil {
			return nil, 0, nil, err
		}
		recs[i], addrs[i] = lk.srv(n.fqdn, r)
		for _, rec := range recs[i] {
			if len(addrs[i][rec.target]) == 0 && !seen[rec.target] {
				seen[rec.target] = true
				missing = append(missing, rec.target)
			}
		}
	}

	resolved, err := lk.resolve(ctx, missing)
	if err != nil {
		return nil, 0, nil, err
	}

	services := map[string][]*catalog.Instance{}
	for i, n := range s.names {
		if services[n.service] == nil {
			services[n.service] = []*catalog.Instance{}
		}
		for _, rec := range recs[i] {
			as := addrs[i][rec.target]
			if len(as) == 0 {
				as = resolved[rec.target]
			}
			if len(as) == 0 {
				lk.note("%s: the target %s has no address; it is left out", n.fqdn, rec.target)
				continue
			}
			services[n.service] = append(services[n.service], instances(n.service, rec, as)...)
		}
	}
	for svc, ins := range services {
		services[svc] = lk.finish(ins)
	}
	return services, lk.ttl, lk.notes, nil
}

// servers lists the resolvers to ask, in order.
func (s *dnsSource) servers() []string {
	if s.server != "" {
		return []string{s.server}
	}
	return systemServers(s.resolvConf)
}

// systemServers lists the nameservers of a resolv.conf file as host:port,
// or the local host's port 53 when the file names none (as the C library
// does).
func systemServers(path string) []string {
	var out []string
	if cc, err := dns.ClientConfigFromFile(path); err == nil {
		for _, h := range cc.Servers {
			out = append(out, net.JoinHostPort(h, cc.Port))
		}
	}
	if len(out) == 0 {
		out = []string{"127.0.0.1:53", "[::1]:53"}
	}
	return out
}

// srv picks the usable SRV records of the answer r to the question for
// fqdn (the lowest priority, "." left out) and the addresses of their
// targets given in the additional section.
func (lk *lookup) srv(fqdn string, r *dns.Msg) ([]record, map[string][]netip.Addr) {
	if r.Rcode == dns.RcodeNameError {
		lk.negative(r)
		return nil, nil
	}
	var recs []record
	for _, rr := range lk.answers(fqdn, r) {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		lk.saw(srv.Hdr.Ttl)
		t := strings.ToLower(dns.Fqdn(srv.Target))
		if t == "." {
			continue // "decidedly not available at this domain"
		}
		recs = append(recs, record{target: t, port: srv.Port, weight: srv.Weight, priority: srv.Priority})
	}
	if len(recs) == 0 {
		lk.negative(r)
		return nil, nil
	}
	low := slices.MinFunc(recs, func(a, b record) int { return int(a.priority) - int(b.priority) }).priority
	recs = slices.DeleteFunc(recs, func(rec record) bool { return rec.priority != low })

	targets := map[string]bool{}
	for _, rec := range recs {
		targets[rec.target] = true
	}
	addrs := map[string][]netip.Addr{}
	if r.Len() > ednsSize*3/4 {
		// A server may leave additional records out of an answer that
		// nears the buffer without setting TC (RFC 2181 §9; dnsmasq does),
		// so a target's addresses here may be only some of them: ask for
		// every target's instead.
		return recs, addrs
	}
	for _, rr := range r.Extra {
		owner := strings.ToLower(rr.Header().Name)
		if !targets[owner] {
			continue
		}
		if a, ok := address(rr); ok {
			lk.saw(rr.Header().Ttl)
			addrs[owner] = append(addrs[owner], a)
		}
	}
	return recs, addrs
}

// answers returns the records of r's answer section that belong to fqdn,
// directly or through a CNAME chain, and counts the chain's TTLs.
func (lk *lookup) answers(fqdn string, r *dns.Msg) []dns.RR {
	names := map[string]bool{fqdn: true}
	for range maxChain {
		grew := false
		for _, rr := range r.Answer {
			if c, ok := rr.(*dns.CNAME); ok && names[strings.ToLower(c.Hdr.Name)] {
				if t := strings.ToLower(dns.Fqdn(c.Target)); !names[t] {
					names[t] = true
					grew = true
					lk.saw(c.Hdr.Ttl)
				}
			}
		}
		if !grew {
			break
		}
	}
	var out []dns.RR
	for _, rr := range r.Answer {
		if rr.Header().Rrtype != dns.TypeCNAME && names[strings.ToLower(rr.Header().Name)] {
			out = append(out, rr)
		}
	}
	return out
}

// negative counts the negative-caching TTL of an answer without records
// (RFC 2308: the smaller of the SOA's TTL and its MINIMUM).
func (lk *lookup) negative(r *dns.Msg) {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			lk.saw(min(soa.Hdr.Ttl, soa.Minttl))
		}
	}
}

// address returns the address of an A or AAAA record.
func address(rr dns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		a, ok := netip.AddrFromSlice(rr.A)
		return a.Unmap(), ok
	case *dns.AAAA:
		return netip.AddrFromSlice(rr.AAAA)
	}
	return netip.Addr{}, false
}

// resolve asks for the A and AAAA records of every target, a few at a time.
// The first error ends it.
func (lk *lookup) resolve(ctx context.Context, targets []string) (map[string][]netip.Addr, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu  sync.Mutex
		out = make(map[string][]netip.Addr, len(targets))
		wg  sync.WaitGroup
		sem = make(chan struct{}, parallel)
	)
	for _, t := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			var as []netip.Addr
			for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
				r, err := lk.query(ctx, t, qtype)
				if err != nil {
					cancel(err)
					return
				}
				if r.Rcode == dns.RcodeNameError {
					lk.negative(r)
					continue
				}
				n := len(as)
				for _, rr := range lk.answers(t, r) {
					if a, ok := address(rr); ok && rr.Header().Rrtype == qtype {
						lk.saw(rr.Header().Ttl)
						as = append(as, a)
					}
				}
				if len(as) == n {
					lk.negative(r)
				}
			}
			mu.Lock()
			out[t] = as
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// query asks the look's servers in turn for the records of type qtype of
// name, and returns the first usable answer: one with NOERROR or NXDOMAIN.
func (lk *lookup) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype) // recursion desired
	q.SetEdns0(ednsSize, false)
	var errs []error
	for _, server := range lk.servers {
		r, err := lk.s.ask(ctx, server, q)
		if err == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		errs = append(errs, fmt.Errorf("source/dnssrv: %s %s @%s: %w", name, dns.TypeToString[qtype], server, err))
	}
	return nil, errors.Join(errs...)
}

// ask sends q to server over UDP, and over TCP when the answer is
// truncated, and checks the answer.
func (s *dnsSource) ask(ctx context.Context, server string, q *dns.Msg) (*dns.Msg, error) {
	r, err := s.exchange(ctx, "udp", server, q)
	if err == nil && r.Truncated {
		r, err = s.exchange(ctx, "tcp", server, q)
		if err == nil && r.Truncated {
			return nil, fmt.Errorf("%w: truncated over TCP", ErrMalformed)
		}
	}
	if err != nil {
		return nil, err
	}
	return r, check(q, r)
}

// check makes sure r is a usable answer to q.
func check(q, r *dns.Msg) error {
	if !r.Response || r.Opcode != dns.OpcodeQuery {
		return fmt.Errorf("%w: not a response to a query", ErrMalformed)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return fmt.Errorf("%w %s", ErrRcode, rcode(r.Rcode))
	}
	want := q.Question[0]
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, want.Name) ||
		r.Question[0].Qtype != want.Qtype || r.Question[0].Qclass != want.Qclass {
		return fmt.Errorf("%w: it does not answer the question %s %s", ErrMalformed, want.Name, dns.TypeToString[want.Qtype])
	}
	return nil
}

// rcode names a response code.
func rcode(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

// exchange sends q to server over network ("udp" or "tcp") and reads the
// answer, within the source's timeout and until ctx is done. Over UDP it
// sends q again every second without an answer, and skips answers with
// another ID (late answers, or forged ones). It rejects an answer whose
// header counts more records than it holds, which miekg/dns tolerates.
func (s *dnsSource) exchange(ctx context.Context, network, server string, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	// Deadlines do not see ctx cancelled: closing the connection ends a
	// read at once.
	defer context.AfterFunc(ctx, func() { nc.Close() })()
	deadline, _ := ctx.Deadline()
	co := &dns.Conn{Conn: nc, UDPSize: dns.MaxMsgSize}
	udp := network == "udp"
	for {
		nc.SetWriteDeadline(deadline)
		if err := co.WriteMsg(q); err != nil {
			return nil, err
		}
		readBy := deadline
		if next := time.Now().Add(resend); udp && next.Before(deadline) {
			readBy = next
		}
		nc.SetReadDeadline(readBy)
		r, err := read(co, q.Id, udp)
		var ne net.Error
		if udp && errors.As(err, &ne) && ne.Timeout() && readBy.Before(deadline) && ctx.Err() == nil {
			continue
		}
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("no answer in %s", s.timeout)
		}
		if err != nil && ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return r, err
	}
}

// read reads the answer with the given id from co.
func read(co *dns.Conn, id uint16, udp bool) (*dns.Msg, error) {
	for {
		var h dns.Header
		p, err := co.ReadMsgHeader(&h)
		if errors.Is(err, dns.ErrShortRead) {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if err != nil {
			return nil, err
		}
		if h.Id != id {
			if udp {
				continue
			}
			return nil, fmt.Errorf("%w: answer id %d, want %d", ErrMalformed, h.Id, id)
		}
		r := new(dns.Msg)
		if err := r.Unpack(p); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if !r.Truncated && (len(r.Question) != int(h.Qdcount) || len(r.Answer) != int(h.Ancount) ||
			len(r.Ns) != int(h.Nscount) || len(r.Extra) != int(h.Arcount)) {
			return nil, fmt.Errorf("%w: the header counts %d+%d+%d+%d records, the message holds %d+%d+%d+%d", ErrMalformed,
				h.Qdcount, h.Ancount, h.Nscount, h.Arcount, len(r.Question), len(r.Answer), len(r.Ns), len(r.Extra))
		}
		return r, nil
	}
}

// instances makes one instance of service per address of rec's target,
// sharing the record's weight among them. IDs are left for finish.
func instances(service string, rec record, addrs []netip.Addr) []*catalog.Instance {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	w := max(int(rec.weight), 1)
	share := max((w+len(addrs)/2)/len(addrs), 1)
	target := strings.TrimSuffix(rec.target, ".")
	out := make([]*catalog.Instance, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, &catalog.Instance{
			Service: service,
			ID:      target + "-" + strconv.Itoa(int(rec.port)) + "-" + a.String(), // raw; finish makes it a label
			Address: a.String(),
			Port:    int(rec.port),
			Weight:  share,
			Status:  catalog.Passing,
			Meta: map[string]string{
				"dns-srv.target":   target,
				"dns-srv.priority": strconv.Itoa(int(rec.priority)),
			},
		})
	}
	return out
}

// finish turns the instances of one service, with raw IDs, into what the
// source reports: one instance per target, port and address (the larger
// weight wins), weights scaled into the catalog's range, IDs made DNS labels
// (hashed where two would collide), each normalized, sorted by ID.
func (lk *lookup) finish(ins []*catalog.Instance) []*catalog.Instance {
	byRaw := map[string]*catalog.Instance{}
	top := 0
	for _, in := range ins {
		if old := byRaw[in.ID]; old == nil || in.Weight > old.Weight {
			byRaw[in.ID] = in
		}
		top = max(top, in.Weight)
	}
	byID := map[string][]string{}
	for raw := range byRaw {
		id := catalog.Label(raw)
		byID[id] = append(byID[id], raw)
	}
	out := make([]*catalog.Instance, 0, len(byRaw))
	for id, raws := range byID {
		for _, raw := range raws {
			in := byRaw[raw]
			in.ID = id
			if len(raws) > 1 {
				in.ID = hashedLabel(raw)
			}
			if top > catalog.MaxWeight {
				in.Weight = max(in.Weight*catalog.MaxWeight/top, 1)
			}
			if err := source.Normalize(in); err != nil {
				lk.note("%s: the instance %s (%s:%d) is left out: %v", in.Service, in.ID, in.Address, in.Port, err)
				continue
			}
			out = append(out, in)
		}
	}
	source.SortInstances(out)
	return out
}

// hashedLabel is catalog.Label of raw, always suffixed with a hash of raw,
// for texts whose plain labels collide.
func hashedLabel(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	base := catalog.Label(raw)
	base = strings.Trim(base[:min(len(base), catalog.MaxNameLength-9)], "-")
	if base == "" {
		return hex.EncodeToString(sum[:4])
	}
	return base + "-" + hex.EncodeToString(sum[:4])
}
