package route

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/discotech/disco/catalog"
)

// TagPrefix starts every route tag.
const TagPrefix = "urlprefix-"

// The protocols a route can speak to its members.
const (
	ProtoHTTP  = "http"
	ProtoHTTPS = "https"
	ProtoTCP   = "tcp"
	ProtoGRPC  = "grpc" // HTTP/2 without TLS
)

// ErrNotRouteTag is what ParseTag returns for a tag that does not start
// with TagPrefix: an ordinary tag, not an error in the registration.
var ErrNotRouteTag = errors.New("route: not a route tag")

// Spec is what one route tag asks for.
type Spec struct {
	Key    string // the route's key: "host/prefix" or ":port"
	Host   string // lower case; "*.example.com" for a wildcard; "" for any host
	Prefix string // path prefix, starting with "/"; "" for TCP
	Port   int    // TCP routes: the router's listener port

	Proto         string
	Strip         string
	Prepend       string
	HostHeader    string
	TLSSkipVerify bool

	// Weight is the fraction of the route's traffic (0 < Weight ≤ 1) the
	// instances of the service carrying this tag share; 0 when the tag
	// gives none.
	Weight float64
}

// String is s as a tag, options in a fixed order: ParseTag(s.String())
// gives s back.
func (s Spec) String() string {
	var b strings.Builder
	b.WriteString(TagPrefix)
	b.WriteString(s.Key)
	o := s.options()
	if o.proto != ProtoHTTP || s.Port != 0 {
		b.WriteString(" proto=" + o.proto)
	}
	o.proto = ""
	if r := o.String(); r != "" {
		b.WriteString(" " + r)
	}
	if s.Weight != 0 {
		b.WriteString(" weight=" + strconv.FormatFloat(s.Weight, 'g', -1, 64))
	}
	return b.String()
}

// options are what every contribution to one route must agree on.
type options struct {
	proto, strip, prepend, hostHeader string
	tlsSkipVerify                     bool
}

func (s Spec) options() options {
	return options{s.Proto, s.Strip, s.Prepend, s.HostHeader, s.TLSSkipVerify}
}

// String is o in the tag syntax, in a fixed order, leaving out what is
// not set: how errors show options, and how conflicts are ordered.
func (o options) String() string {
	var f []string
	add := func(k, v string) {
		if v != "" {
			f = append(f, k+"="+v)
		}
	}
	add("proto", o.proto)
	add("strip", o.strip)
	add("prepend", o.prepend)
	add("host", o.hostHeader)
	if o.tlsSkipVerify {
		add("tlsskipverify", "true")
	}
	return strings.Join(f, " ")
}

// fabioOnly are Fabio's route options the router does not implement; they
// get their own message so that a migrating user knows it is not a typo.
var fabioOnly = map[string]bool{
	"allow": true, "deny": true, "auth": true, "register": true,
	"pxyproto": true, "redirect": true,
}

// ParseTag parses a route tag: TagPrefix, the route's source and its
// options, separated by spaces:
//
//	urlprefix-/css
//	urlprefix-i.com/static strip=/static prepend=/assets
//	urlprefix-*.example.com/ proto=https tlsskipverify=true host=dst
//	urlprefix-/api weight=0.1
//	urlprefix-:3306 proto=tcp
//
// A tag without TagPrefix gives ErrNotRouteTag. Any other error is a
// *TagError that says what to fix.
func ParseTag(tag string) (Spec, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(tag), TagPrefix)
	if !ok {
		return Spec{}, ErrNotRouteTag
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return Spec{}, &TagError{Tag: tag, Reason: "no route after " + TagPrefix + ": give one, e.g. " + TagPrefix + "/app"}
	}
	s, reason := parseSpec(f[0], f[1:], "")
	if reason != "" {
		return Spec{}, &TagError{Tag: tag, Reason: reason}
	}
	return s, nil
}

// parseSpec parses a route source ("host/path", "/path" or ":port") and
// key=value options. proto, when not "", is the protocol an override's
// target URL implies. The reason is "" when all is well, else what to fix.
func parseSpec(src string, opts []string, proto string) (Spec, string) {
	var s Spec
	seen := map[string]bool{}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		switch {
		case !ok:
			return s, fmt.Sprintf("option %q is not key=value", o)
		case seen[k]:
			return s, fmt.Sprintf("option %s= is given twice: keep one", k)
		case v == "":
			return s, fmt.Sprintf("option %s= has no value", k)
		}
		seen[k] = true
		switch k {
		case "proto":
			switch v {
			case ProtoHTTP, ProtoHTTPS, ProtoTCP, ProtoGRPC:
			default:
				return s, fmt.Sprintf("proto=%s is not a protocol: use http, https, tcp or grpc", v)
			}
			s.Proto = v
		case "strip", "prepend":
			if v[0] != '/' {
				return s, fmt.Sprintf("%s=%s must start with '/', e.g. %s=/%s", k, v, k, v)
			}
			if r := pathProblem(v); r != "" {
				return s, fmt.Sprintf("%s=%s %s", k, v, r)
			}
			if k == "strip" {
				s.Strip = v
			} else {
				s.Prepend = v
			}
		case "weight":
			w, err := strconv.ParseFloat(v, 64)
			if err != nil || !(w > 0 && w <= 1) {
				return s, fmt.Sprintf("weight=%s is not a fraction in (0, 1]: give the share of the route's traffic, e.g. weight=0.05 for 5%%", v)
			}
			s.Weight = w
		case "tlsskipverify":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return s, fmt.Sprintf("tlsskipverify=%s is not true or false", v)
			}
			s.TLSSkipVerify = b
		case "host":
			if v != "dst" && !validHostHeader(v) {
				return s, fmt.Sprintf("host=%s is not a host name (optionally with :port) or \"dst\"", v)
			}
			s.HostHeader = v
		default:
			if fabioOnly[k] {
				return s, fmt.Sprintf("option %s= is Fabio's and the router does not support it: remove it", k)
			}
			return s, fmt.Sprintf("unknown option %s=: the options are proto, strip, prepend, weight, tlsskipverify and host", k)
		}
	}
	if proto != "" {
		if s.Proto != "" && s.Proto != proto {
			return s, fmt.Sprintf("proto=%s differs from the target's scheme %s://: make them agree", s.Proto, proto)
		}
		s.Proto = proto
	}
	if s.Proto == "" {
		s.Proto = ProtoHTTP
	}

	if p, ok := strings.CutPrefix(src, ":"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || p[0] == '+' || p[0] == '-' || n < 1 || n > 65535 {
			return s, fmt.Sprintf("%q is not a port: give :1 to :65535", src)
		}
		if s.Proto != ProtoTCP {
			return s, fmt.Sprintf("%s is a TCP route: add proto=tcp (an HTTP route needs a path: host/path or /path)", src)
		}
		if s.Strip != "" || s.Prepend != "" || s.HostHeader != "" {
			return s, "strip, prepend and host do not apply to a TCP route: remove them"
		}
		s.Port = n
		s.Key = ":" + strconv.Itoa(n)
		return s, s.tlsProblem()
	}
	i := strings.IndexByte(src, '/')
	if i < 0 {
		return s, fmt.Sprintf("%q has no '/': a route is host/path, /path or :port (write %s/ for all of a host's paths)", src, src)
	}
	host, path := strings.ToLower(src[:i]), src[i:]
	if r := hostProblem(host); r != "" {
		return s, r
	}
	if r := pathProblem(path); r != "" {
		return s, fmt.Sprintf("path %q %s", path, r)
	}
	if s.Proto == ProtoTCP {
		return s, fmt.Sprintf("proto=tcp needs a :port route, not %s", src)
	}
	s.Host, s.Prefix, s.Key = host, path, host+path
	return s, s.tlsProblem()
}

func (s *Spec) tlsProblem() string {
	if s.TLSSkipVerify && s.Proto != ProtoHTTPS {
		return "tlsskipverify=true applies only to proto=https: remove it or add proto=https"
	}
	return ""
}

// hostProblem says what is wrong with a route's lower-cased host, or "".
func hostProblem(host string) string {
	if host == "" {
		return ""
	}
	name := strings.TrimPrefix(host, "*.")
	switch {
	case strings.Contains(host, ":"):
		return fmt.Sprintf("host %q has a port: the router matches the request's host without its port, so leave it out", host)
	case strings.HasSuffix(host, "."):
		return fmt.Sprintf("host %q ends with '.': leave the dot out", host)
	case strings.Contains(name, "*"):
		return fmt.Sprintf("host %q: a wildcard is only allowed as a whole first label, as in *.example.com", host)
	case !catalog.ValidHostname(name):
		return fmt.Sprintf("host %q is not a DNS name (letters, digits, '-' and '.', optionally starting with *.)", host)
	}
	return ""
}

// pathProblem says what is wrong with a path prefix, or "".
func pathProblem(p string) string {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '?' || c == '#':
			return fmt.Sprintf("has %q: a route matches the path only, without query or fragment", c)
		case c < ' ' || c == 0x7f:
			return "has a control character"
		}
	}
	return ""
}

func validHostHeader(v string) bool {
	h := v
	if hh, p, err := net.SplitHostPort(v); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
		h = hh
	}
	return net.ParseIP(h) != nil || (!strings.HasSuffix(h, ".") && catalog.ValidHostname(h))
}

// TagError is a route tag that cannot be used. The router skips the tag;
// the instance's other tags still count.
type TagError struct {
	Service, ID string // the instance carrying the tag; "" from ParseTag
	Tag         string
	Reason      string // what is wrong and what to do
}

func (e *TagError) Error() string {
	if e.Service != "" {
		return fmt.Sprintf("route: %s: tag %q: %s", catalog.Key(e.Service, e.ID), e.Tag, e.Reason)
	}
	return fmt.Sprintf("route: tag %q: %s", e.Tag, e.Reason)
}
