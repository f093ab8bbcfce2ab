package route

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/discotech/disco/catalog"
)

// Member is one backend of a route.
type Member struct {
	Service string
	ID      string // instance ID, or the target URL of a route add line
	Addr    string // "host:port"
	// Weight is the member's share of the route's traffic, canary
	// fractions applied: the weights of a route's members add up to 1.
	// It is always > 0.
	Weight float64
	// Tags are the instance's tags other than route tags (those of a route
	// add line); route weight and route del lines select members by them.
	Tags []string
}

// Route is one entry of the table: where requests for a host and path
// prefix, or connections to a TCP port, go. A Route is never modified
// once a Table holding it has been returned, except for Value.
type Route struct {
	Key    string // "host/prefix" or ":port": the route's identity across tables
	Host   string // lower case, no port; "*.example.com" for a wildcard; "" for any host
	Prefix string // path prefix; "" for TCP
	Port   int    // TCP routes: the router's listener port; 0 for HTTP

	Proto         string // ProtoHTTP, ProtoHTTPS, ProtoTCP or ProtoGRPC
	Strip         string
	Prepend       string
	HostHeader    string // Host header to send: a name, "dst" for the member's address, "" for the request's
	TLSSkipVerify bool

	// Members are sorted by (Service, ID). A route whose instances are all
	// critical or drained (weight 0) has none: it still matches, so that
	// its requests get an error rather than another route's backends.
	Members []Member

	// Value is for the host (the router): it sets Value on every route in
	// a With result's changed list before publishing the table, and never
	// after.
	Value any
}

// Rewrite returns the path to send to a member for a request path that
// matched r: Strip removed if the path starts with it, then Prepend put in
// front. The result always starts with "/".
func (r *Route) Rewrite(path string) string {
	if r.Strip != "" {
		path = strings.TrimPrefix(path, r.Strip)
	}
	if r.Prepend != "" {
		path = r.Prepend + path
	}
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	return path
}

// Table is an immutable route table, safe for any number of concurrent
// readers. With returns a new Table sharing all it did not change. The
// zero Table is empty and has no overrides.
type Table struct {
	exact tree[tree[*Route]] // host → its routes by prefix
	wild  tree[tree[*Route]] // "example.com" → the routes of *.example.com
	any   tree[*Route]       // host-less routes by prefix
	keys  tree[*entry]       // every route, TCP ones too, by key
	svcs  tree[[]string]     // service → the keys it has parts in, sorted
	rules *rules             // from the overrides; shared by every version
}

// entry is everything one route key holds.
type entry struct {
	route *Route
	parts []*part // sorted by (service, canon)
}

// part is what one service — its instances' tags, or route add lines —
// gives one route with one set of options.
type part struct {
	service string
	static  bool // from route add lines
	opts    options
	canon   string    // opts.String()
	members []pmember // sorted by id
}

// pmember is a member before the route's weights are worked out.
type pmember struct {
	service, id, addr string
	tags              []string
	rw                float64 // registered weight; 0 if drained or critical
	group             string  // the canary group sharing frac; "" for none
	frac              float64
}

// rules are the overrides' del and weight lines, in order.
type rules struct {
	dels, weights []compiled
}

// New returns a table holding only the overrides' route add lines, with
// their del and weight lines in force for every With to come. Overrides
// should come from ParseOverrides, which reports what is wrong with them;
// New leaves out any it cannot use.
func New(overrides []Override) *Table {
	t := &Table{rules: &rules{}}
	type add struct {
		c    compiled
		m    pmember
		dead bool
	}
	var adds []*add
	for i, o := range overrides {
		c, bad := compile(o)
		if bad != "" {
			continue
		}
		c.Tags = slices.Clone(c.Tags) // the caller's slice may change
		switch o.Cmd {
		case CmdAdd:
			m := pmember{service: o.Service, id: o.Dst, addr: c.addr, tags: c.Tags, rw: catalog.DefaultWeight}
			if o.Weight > 0 {
				m.group, m.frac = "add "+strconv.Itoa(i), o.Weight
			}
			adds = append(adds, &add{c: c, m: m})
		case CmdDel:
			t.rules.dels = append(t.rules.dels, c)
			for _, a := range adds {
				a.dead = a.dead || c.matches(a.m.service, a.c.spec.Key, a.m.addr, a.m.tags)
			}
		case CmdWeight:
			c.group = "weight " + strconv.Itoa(i)
			t.rules.weights = append(t.rules.weights, c)
			for _, a := range adds {
				if c.matches(a.m.service, a.c.spec.Key, a.m.addr, a.m.tags) {
					weigh(&a.m, c)
				}
			}
		}
	}
	byKey := map[string][]*part{}
	for _, a := range adds {
		if a.dead {
			continue
		}
		p := partFor(byKey, a.c.spec.Key, a.m.service, true, a.c.spec.options())
		if !slices.ContainsFunc(p.members, func(m pmember) bool { return m.id == a.m.id }) {
			p.members = append(p.members, a.m)
		}
	}
	sortParts(byKey)
	for k, ps := range byKey {
		r, _ := build(k, ps)
		t.put(&entry{route: r, parts: ps}, nil)
	}
	return t
}

// weigh applies a route weight line to m.
func weigh(m *pmember, c compiled) {
	if c.Weight == 0 {
		m.group, m.frac = "", 0
		return
	}
	m.group, m.frac = c.group, c.Weight
}

func comparePart(a, b *part) int {
	return cmp.Or(strings.Compare(a.service, b.service), strings.Compare(a.canon, b.canon), boolCompare(a.static, b.static))
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// Len is the number of routes in t.
func (t *Table) Len() int { return t.keys.Len() }

// Lookup returns the route for a request's host (its Host header; any
// :port is ignored, case too) and path, or nil when none matches. Routes
// for the exact host come first, then those of wildcard hosts, the longest
// suffix first, then routes for any host; among each, the longest prefix
// of the path wins.
func (t *Table) Lookup(host, path string) *Route {
	host = hostOnly(host)
	if host != "" {
		if b, ok := t.exact.getFold(host); ok {
			if r, ok := b.longest(path); ok {
				return r
			}
		}
		if t.wild.Len() > 0 {
			for s := host; ; {
				i := strings.IndexByte(s, '.')
				if i < 0 {
					break
				}
				s = s[i+1:]
				if b, ok := t.wild.getFold(s); ok {
					if r, ok := b.longest(path); ok {
						return r
					}
				}
			}
		}
	}
	r, _ := t.any.longest(path)
	return r
}

// hostOnly strips a request host's port and final dot.
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h[i:], ']') < 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// Route returns the route with the given key ("host/prefix" or ":port"),
// or nil.
func (t *Table) Route(key string) *Route {
	e, _ := t.keys.get(key)
	if e == nil {
		return nil
	}
	return e.route
}

// TCP returns the route for connections to the router's listener port, or
// nil.
func (t *Table) TCP(port int) *Route {
	if port < 1 || port > 65535 {
		return nil
	}
	var buf [8]byte
	return t.Route(string(strconv.AppendInt(append(buf[:0], ':'), int64(port), 10)))
}

// Routes returns every route in match order: hosts in lexical order, then
// wildcard hosts, the longest first, then routes for any host — each by
// prefix, the longest first — then TCP routes by port.
func (t *Table) Routes() []*Route {
	out := make([]*Route, 0, t.Len())
	add := func(b tree[*Route]) {
		start := len(out)
		b.walk(func(_ string, r *Route) { out = append(out, r) })
		slices.SortFunc(out[start:], func(a, b *Route) int {
			return cmp.Or(len(b.Prefix)-len(a.Prefix), strings.Compare(a.Prefix, b.Prefix))
		})
	}
	t.exact.walk(func(_ string, b tree[*Route]) { add(b) })
	var wild []string
	t.wild.walk(func(d string, _ tree[*Route]) { wild = append(wild, d) })
	slices.SortFunc(wild, func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) })
	for _, d := range wild {
		b, _ := t.wild.get(d)
		add(b)
	}
	add(t.any)
	start := len(out)
	t.keys.walk(func(_ string, e *entry) {
		if e.route.Port != 0 {
			out = append(out, e.route)
		}
	})
	slices.SortFunc(out[start:], func(a, b *Route) int { return a.Port - b.Port })
	return out
}

// With returns a table in which service contributes exactly what its
// instances' route tags say, and nothing else: the instances are all of
// the service's instances (none removes it). Critical instances and those
// of weight 0 get no traffic, but their tags still make their routes.
//
// changed lists the routes that are new or whose members or options
// changed, as new *Route values; every other route of next is the same
// pointer as in t. removed lists the keys of routes that are gone. errs
// says which tags were skipped and why, and which of the service's routes
// have conflicting options. t is not changed.
func (t *Table) With(service string, instances []*catalog.Instance) (next *Table, changed []*Route, removed []string, errs []error) {
	parts, errs := t.contributions(service, instances)
	newKeys := make([]string, 0, len(parts))
	for k := range parts {
		newKeys = append(newKeys, k)
	}
	slices.Sort(newKeys)
	oldKeys, _ := t.svcs.get(service)

	nt := *t
	update := func(key string) {
		e, _ := t.keys.get(key)
		var old []*part
		if e != nil {
			old = e.parts
		}
		ps, same := replace(old, service, parts[key])
		if same {
			return
		}
		if len(ps) == 0 {
			nt.drop(e.route)
			removed = append(removed, key)
			return
		}
		r, cerrs := build(key, ps)
		errs = append(errs, cerrs...)
		var was *Route
		if e != nil {
			was = e.route
		}
		if was != nil && sameRoute(was, r) {
			r = was
		} else {
			changed = append(changed, r)
		}
		nt.put(&entry{route: r, parts: ps}, was)
	}
	// Both lists are sorted: walk them together, each key once.
	for i, j := 0, 0; i < len(oldKeys) || j < len(newKeys); {
		switch {
		case j == len(newKeys) || (i < len(oldKeys) && oldKeys[i] < newKeys[j]):
			update(oldKeys[i])
			i++
		case i == len(oldKeys) || newKeys[j] < oldKeys[i]:
			update(newKeys[j])
			j++
		default:
			update(newKeys[j])
			i, j = i+1, j+1
		}
	}
	switch {
	case len(newKeys) == 0:
		nt.svcs = nt.svcs.remove(service)
	case !slices.Equal(oldKeys, newKeys):
		nt.svcs = nt.svcs.insert(service, newKeys)
	}
	return &nt, changed, removed, errs
}

// contributions turns a service's instances into the parts it gives each
// route key, members sorted by id and parts by canon.
func (t *Table) contributions(service string, instances []*catalog.Instance) (map[string][]*part, []error) {
	var errs []error
	parts := map[string][]*part{}
	seen := map[string]bool{}
	for _, in := range instances {
		switch {
		case in == nil:
			continue
		case in.Service != "" && in.Service != service:
			errs = append(errs, fmt.Errorf("route: %s is not an instance of %s: left out", in.Key(), service))
			continue
		case seen[in.ID]:
			errs = append(errs, fmt.Errorf("route: %s is listed twice: the second is left out", catalog.Key(service, in.ID)))
			continue
		}
		seen[in.ID] = true
		var routeTags, tags []string
		for _, tag := range in.Tags {
			if strings.HasPrefix(strings.TrimSpace(tag), TagPrefix) {
				routeTags = append(routeTags, tag)
			} else {
				tags = append(tags, tag)
			}
		}
		if len(routeTags) == 0 {
			continue
		}
		if in.Address == "" || in.Port < 1 || in.Port > 65535 {
			errs = append(errs, fmt.Errorf("route: %s has no address and port (%q, %d): its route tags are skipped", catalog.Key(service, in.ID), in.Address, in.Port))
			continue
		}
		addr := net.JoinHostPort(in.Address, strconv.Itoa(in.Port))
		rw := float64(in.Weight)
		if in.Status == catalog.Critical || rw < 0 {
			rw = 0
		}
		done := map[string]Spec{}
		for _, tag := range routeTags {
			s, err := ParseTag(tag)
			if err != nil {
				if te, ok := err.(*TagError); ok {
					te.Service, te.ID = service, in.ID
				}
				errs = append(errs, err)
				continue
			}
			if first, dup := done[s.Key]; dup {
				if first.options() != s.options() || first.Weight != s.Weight {
					errs = append(errs, &TagError{Service: service, ID: in.ID, Tag: tag,
						Reason: fmt.Sprintf("another tag of the instance, %q, names route %s and counts: remove one", first.String(), s.Key)})
				}
				continue
			}
			done[s.Key] = s
			if t.rules.deleted(service, s.Key, addr, tags) {
				continue
			}
			m := pmember{service: service, id: in.ID, addr: addr, tags: tags, rw: rw}
			if s.Weight > 0 {
				m.group, m.frac = "tag "+service+" "+strconv.FormatFloat(s.Weight, 'g', -1, 64), s.Weight
			}
			t.rules.weigh(&m, s.Key)
			p := partFor(parts, s.Key, service, false, s.options())
			p.members = append(p.members, m)
		}
	}
	sortParts(parts)
	return parts, errs
}

// partFor returns the part of parts[key] for service and o, adding it if
// there is none.
func partFor(parts map[string][]*part, key, service string, static bool, o options) *part {
	ps := parts[key]
	for _, p := range ps {
		if p.service == service && p.static == static && p.opts == o {
			return p
		}
	}
	p := &part{service: service, static: static, opts: o, canon: o.String()}
	parts[key] = append(ps, p)
	return p
}

// sortParts puts each part's members in id order and each key's parts in
// comparePart order.
func sortParts(parts map[string][]*part) {
	for _, ps := range parts {
		for _, p := range ps {
			slices.SortFunc(p.members, func(a, b pmember) int { return strings.Compare(a.id, b.id) })
		}
		slices.SortFunc(ps, comparePart)
	}
}

// deleted reports whether a route del line takes a member off a route.
func (r *rules) deleted(service, key, addr string, tags []string) bool {
	if r == nil {
		return false
	}
	for i := range r.dels {
		if r.dels[i].matches(service, key, addr, tags) {
			return true
		}
	}
	return false
}

// weigh applies the last route weight line that matches m, if any.
func (r *rules) weigh(m *pmember, key string) {
	if r == nil {
		return
	}
	for i := len(r.weights) - 1; i >= 0; i-- {
		if c := r.weights[i]; c.matches(m.service, key, m.addr, m.tags) {
			weigh(m, c)
			return
		}
	}
}

// replace returns old with service's registry parts replaced by its new
// ones, and whether that is no change at all.
func replace(old []*part, service string, parts []*part) ([]*part, bool) {
	var mine []*part
	for _, p := range old {
		if p.service == service && !p.static {
			mine = append(mine, p)
		}
	}
	if slices.EqualFunc(mine, parts, samePart) {
		return old, true
	}
	out := make([]*part, 0, len(old)-len(mine)+len(parts))
	for _, p := range old {
		if p.service != service || p.static {
			out = append(out, p)
		}
	}
	out = append(out, parts...)
	slices.SortFunc(out, comparePart)
	return out, false
}

func samePart(a, b *part) bool {
	return a.service == b.service && a.static == b.static && a.opts == b.opts &&
		slices.EqualFunc(a.members, b.members, func(x, y pmember) bool {
			return x.id == y.id && x.addr == y.addr && x.rw == y.rw && x.group == y.group &&
				x.frac == y.frac && slices.Equal(x.tags, y.tags)
		})
}

// build makes the route for key from its parts. The first part's options
// win — those of the lexically smallest service — and parts with other
// options are left out, with an error for each.
func build(key string, parts []*part) (*Route, []error) {
	win := parts[0]
	r := &Route{
		Key:           key,
		Proto:         win.opts.proto,
		Strip:         win.opts.strip,
		Prepend:       win.opts.prepend,
		HostHeader:    win.opts.hostHeader,
		TLSSkipVerify: win.opts.tlsSkipVerify,
	}
	if p, ok := strings.CutPrefix(key, ":"); ok {
		r.Port, _ = strconv.Atoi(p)
	} else {
		i := strings.IndexByte(key, '/')
		r.Host, r.Prefix = key[:i], key[i:]
	}
	var errs []error
	var ms []pmember
	for _, p := range parts {
		if p.opts != win.opts {
			errs = append(errs, fmt.Errorf("route: route %s: service %s asks for %q but service %s's %q win (the lexically smallest service's do): %s's instances get none of this route's traffic until the options agree",
				key, p.service, p.canon, win.service, win.canon, p.service))
			continue
		}
		for _, m := range p.members {
			if !slices.ContainsFunc(ms, func(x pmember) bool { return x.service == m.service && x.id == m.id }) {
				ms = append(ms, m)
			}
		}
	}
	r.Members = shares(ms)
	slices.SortFunc(r.Members, func(a, b Member) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), strings.Compare(a.ID, b.ID))
	})
	return r, errs
}

// shares works out each member's share of a route's traffic. Canary groups
// get their fraction, split among their members by registered weight;
// the other members share what is left by registered weight. Fractions
// adding up to more than 1 are scaled down to 1 and leave nothing for the
// others; fractions alone (no other members) are scaled up to 1. Members
// with no share are left out.
func shares(ms []pmember) []Member {
	type group struct {
		name      string
		frac, sum float64
	}
	var groups []group
	var rest float64 // registered weight of the members outside groups
	for _, m := range ms {
		if m.group == "" {
			rest += m.rw
			continue
		}
		i := slices.IndexFunc(groups, func(g group) bool { return g.name == m.group })
		if i < 0 {
			groups = append(groups, group{name: m.group, frac: m.frac})
			i = len(groups) - 1
		}
		groups[i].sum += m.rw
	}
	var fixed float64
	for _, g := range groups {
		if g.sum > 0 { // a group with every member drained gets nothing
			fixed += g.frac
		}
	}
	scale := 1.0
	if fixed > 1 || (fixed > 0 && rest == 0) {
		scale = 1 / fixed
	}
	left := max(0, 1-fixed*scale)
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		var w float64
		if m.group == "" {
			if rest > 0 {
				w = left * m.rw / rest
			}
		} else {
			g := groups[slices.IndexFunc(groups, func(g group) bool { return g.name == m.group })]
			if g.sum > 0 {
				w = g.frac * scale * m.rw / g.sum
			}
		}
		if w > 0 {
			out = append(out, Member{Service: m.service, ID: m.id, Addr: m.addr, Weight: w, Tags: m.tags})
		}
	}
	return out
}

func sameRoute(a, b *Route) bool {
	return a.Key == b.Key && a.Proto == b.Proto && a.Strip == b.Strip && a.Prepend == b.Prepend &&
		a.HostHeader == b.HostHeader && a.TLSSkipVerify == b.TLSSkipVerify &&
		slices.EqualFunc(a.Members, b.Members, func(x, y Member) bool {
			return x.Service == y.Service && x.ID == y.ID && x.Addr == y.Addr && x.Weight == y.Weight &&
				slices.Equal(x.Tags, y.Tags)
		})
}

// put stores e in t, and its route in the lookup trees unless it is was,
// the route already there.
func (t *Table) put(e *entry, was *Route) {
	t.keys = t.keys.insert(e.route.Key, e)
	if e.route != was {
		t.place(e.route, false)
	}
}

// drop removes r from t.
func (t *Table) drop(r *Route) {
	t.keys = t.keys.remove(r.Key)
	t.place(r, true)
}

// place puts r into the lookup tree it belongs to, or takes it out.
func (t *Table) place(r *Route, out bool) {
	if r.Port != 0 {
		return // TCP routes are looked up by key
	}
	if r.Host == "" {
		if out {
			t.any = t.any.remove(r.Prefix)
		} else {
			t.any = t.any.insert(r.Prefix, r)
		}
		return
	}
	hosts, h := &t.exact, r.Host
	if d, ok := strings.CutPrefix(h, "*."); ok {
		hosts, h = &t.wild, d
	}
	b, _ := hosts.get(h)
	if out {
		if b = b.remove(r.Prefix); b.Len() == 0 {
			*hosts = hosts.remove(h)
			return
		}
	} else {
		b = b.insert(r.Prefix, r)
	}
	*hosts = hosts.insert(h, b)
}
