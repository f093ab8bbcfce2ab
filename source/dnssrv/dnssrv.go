// Package dnssrv is the dns-srv source: it polls a DNS resolver for SRV
// records and reports each SRV name as a service whose instances are the
// addresses of the records' targets.
//
//	dns-srv://127.0.0.1:53/_web._tcp.example.com
//	dns-srv://10.0.0.2/_web._tcp.example.com,_api._tcp.example.com?refresh=10s
//	dns-srv:///_web._tcp.example.com                  the resolvers of /etc/resolv.conf
//	dns-srv://[fd00::53]:5353/_web._tcp.dc1.example.com/_web._tcp.dc2.example.com?service=web
//
// The host is the resolver to ask (port 53 when left out); with no host the
// source asks the nameservers of /etc/resolv.conf in turn, read again at
// every look (its search list does not apply: names are absolute). The path
// lists the SRV names, separated by '/' or ',' (both work, and may be mixed).
// Each name must read _service._proto.domain: the service is the _service
// label without its underscore, lower-cased, and must be a DNS label. The
// query ?service=NAME names the service of every listed name instead (then
// any domain name will do). Names that come to the same service merge into
// it: their instances are pooled. ?refresh=DURATION overrides
// source.Options.Refresh.
//
// # What a look reports
//
// A look asks for the SRV records of every name (over UDP, again over TCP
// when the answer is truncated) and reports every service in one
// source.Update with Full set. For each name:
//
//   - Only the records of the lowest priority are used, as RFC 2782 tells a
//     client to: the higher priorities are fallbacks the DNS operator brings
//     in by removing the lower ones. Each instance carries its record's
//     priority in Meta["dns-srv.priority"] and its target in
//     Meta["dns-srv.target"].
//   - A target's addresses are taken from the answer's additional section
//     when the server put any there, else asked for (A and AAAA). A target
//     with no address (NXDOMAIN, no data) is left out, with a log. A target
//     of "." ("decidedly not available") contributes nothing.
//   - There is one instance per address. Its ID is the target, port and
//     address made into a DNS label ("w1-example-com-8080-10-0-1-5", cut and
//     hash-suffixed when longer than 63 characters), so it stays the same
//     from look to look as long as the record and the address do; an address
//     that changes is a new instance.
//   - The weight is the SRV weight, with 0 read as 1 (RFC 2782: weight 0
//     means a very small chance, not none; the catalog's 0 would drain the
//     instance). A target with several addresses shares its weight among
//     them (at least 1 each), and when a service's largest weight exceeds
//     catalog.MaxWeight every weight is scaled down in proportion.
//
// # Errors
//
// NXDOMAIN for an SRV name is an answer: the service has no instances, and
// the source reports it with an empty set (the guard decides whether to
// apply such a removal). Everything else that stops the source from knowing
// the truth — a timeout, a refused connection, SERVFAIL, REFUSED or any
// other error code, an answer that cannot be decoded or does not answer the
// question — fails the whole look: the source calls Sink.Fail and reports
// nothing, so what it reported before stands, and it tries again with
// backoff. The same holds for the address lookups of the targets.
//
// # Timing
//
// The next look comes when the smallest TTL among the records the look used
// runs out (for a negative answer, the TTL its SOA gives), but never more
// than the refresh (default 30s) later and never less than 1s later. After a
// failed look the source backs off from 1s up to the refresh.
package dnssrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// Scheme is the URL scheme this source registers.
const Scheme = "dns-srv"

// DefaultRefresh is the longest wait between two looks when neither the spec
// nor source.Options sets one.
const DefaultRefresh = 30 * time.Second

// MinRefresh is the shortest wait between two looks, whatever the TTLs say.
const MinRefresh = time.Second

// ErrMalformed is wrapped by the error of a look that got an answer it could
// not use: undecodable, inconsistent, or answering another question.
var ErrMalformed = errors.New("malformed answer")

// ErrRcode is wrapped by the error of a look whose server answered with an
// error code other than NXDOMAIN (SERVFAIL, REFUSED, ...).
var ErrRcode = errors.New("the server answered")

func init() { source.Register(Scheme, New) }

// name is one SRV name to look up and the service it reports.
type name struct {
	fqdn    string // lower case, with the trailing dot
	service string
}

// dnsSource is a source.Source polling SRV records.
type dnsSource struct {
	server     string // host:port; empty: the nameservers of resolvConf
	resolvConf string
	names      []name
	refresh    time.Duration
	timeout    time.Duration
	log        *slog.Logger
}

var _ source.Source = (*dnsSource)(nil)

// New makes a dns-srv source from its spec (see the package doc). It is the
// source.Factory registered for the dns-srv scheme.
func New(spec *url.URL, opts source.Options) (source.Source, error) {
	s := &dnsSource{resolvConf: "/etc/resolv.conf", refresh: opts.Refresh, timeout: opts.Timeout, log: opts.Logger}
	if spec.User != nil {
		return nil, source.Specf(spec, "a resolver takes no user or password")
	}
	if spec.Opaque != "" || spec.Fragment != "" {
		return nil, source.Specf(spec, "want dns-srv://RESOLVER:PORT/_service._proto.domain")
	}
	if spec.Host != "" {
		host, port := spec.Hostname(), spec.Port()
		if host == "" {
			return nil, source.Specf(spec, "the resolver %q has no host; give dns-srv://HOST:PORT/... or dns-srv:///... for /etc/resolv.conf", spec.Host)
		}
		if port == "" {
			port = "53"
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, source.Specf(spec, "the resolver port %q is not a number from 1 to 65535", port)
		}
		s.server = net.JoinHostPort(host, port)
	}

	q, err := url.ParseQuery(spec.RawQuery)
	if err != nil {
		return nil, source.Specf(spec, "the query: %v", err)
	}
	override := ""
	for key, vals := range q {
		if len(vals) != 1 {
			return nil, source.Specf(spec, "?%s is given %d times, want once", key, len(vals))
		}
		switch v := vals[0]; key {
		case "service":
			if err := catalog.ValidateName("service", v); err != nil {
				return nil, source.Specf(spec, "?service=%s: %v", v, err)
			}
			override = v
		case "refresh":
			d, err := time.ParseDuration(v)
			if err != nil || d < MinRefresh {
				return nil, source.Specf(spec, "?refresh=%s is not a duration of at least %s (such as 30s)", v, MinRefresh)
			}
			s.refresh = d
		default:
			return nil, source.Specf(spec, "unknown option ?%s; the options are service and refresh", key)
		}
	}

	seen := map[string]bool{}
	for _, raw := range strings.FieldsFunc(spec.Path, func(r rune) bool { return r == '/' || r == ',' }) {
		n, err := parseName(raw, override)
		if err != nil {
			return nil, source.Specf(spec, "%v", err)
		}
		if seen[n.fqdn] {
			return nil, source.Specf(spec, "%s is listed twice", raw)
		}
		seen[n.fqdn] = true
		s.names = append(s.names, n)
	}
	if len(s.names) == 0 {
		return nil, source.Specf(spec, "no SRV name; want dns-srv://RESOLVER:PORT/_service._proto.domain")
	}

	if s.refresh == 0 {
		s.refresh = DefaultRefresh
	}
	s.refresh = max(s.refresh, MinRefresh)
	if s.timeout <= 0 {
		s.timeout = 10 * time.Second
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("source", spec.Redacted())
	return s, nil
}

// parseName checks one SRV name of the spec and finds its service: override
// when set, else the first label without its underscore.
func parseName(raw, override string) (name, error) {
	fqdn := strings.ToLower(strings.TrimSuffix(raw, ".")) + "."
	if len(fqdn) > 254 {
		return name{}, fmt.Errorf("%q is longer than 253 characters", raw)
	}
	labels := strings.Split(strings.TrimSuffix(fqdn, "."), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || strings.IndexFunc(l, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) >= 0 {
			return name{}, fmt.Errorf("%q is not a domain name (labels of 1-63 letters, digits, '-' or '_')", raw)
		}
	}
	if override != "" {
		return name{fqdn: fqdn, service: override}, nil
	}
	if len(labels) < 3 || labels[0][0] != '_' || labels[1][0] != '_' {
		return name{}, fmt.Errorf("%q is not _service._proto.domain (or give ?service=NAME)", raw)
	}
	service := labels[0][1:]
	if err := catalog.ValidateName("service", service); err != nil {
		return name{}, fmt.Errorf("the service %q of %q: %v; give ?service=NAME", service, raw, err)
	}
	return name{fqdn: fqdn, service: service}, nil
}

// Run looks at the records until ctx is done: at once, then as the TTLs and
// the refresh say (see the package doc). It returns nil when ctx is done.
func (s *dnsSource) Run(ctx context.Context, sink source.Sink) error {
	backoff := source.Backoff{Min: MinRefresh, Max: s.refresh}
	failed := 0 // looks failed in a row
	var notes map[string]bool
	for {
		services, ttl, newNotes, err := s.look(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		if err != nil {
			// Say it once: errors tend to differ only in a port number.
			level := slog.LevelDebug
			if failed == 0 {
				level = slog.LevelWarn
			}
			failed++
			s.log.Log(ctx, level, "source/dnssrv: cannot read the SRV records; keeping what was reported before", "err", err)
			sink.Fail(err)
			wait = backoff.Next()
		} else {
			if failed > 0 {
				s.log.Info("source/dnssrv: reading the SRV records again", "failed_looks", failed)
				failed = 0
			}
			for _, n := range slices.Sorted(maps.Keys(newNotes)) {
				if !notes[n] {
					s.log.Warn("source/dnssrv: " + n)
				}
			}
			notes = newNotes
			backoff.Reset()
			sink.Update(source.Update{Services: services, Full: true})
			wait = ttl
		}
		if !source.Sleep(ctx, min(max(wait, MinRefresh), s.refresh)) {
			return nil
		}
	}
}
