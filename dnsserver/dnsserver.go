// Package dnsserver answers DNS queries for the services of a catalog, over
// UDP and TCP, as an authoritative server for the service domains (disco by
// default). It is the only package that speaks DNS on the wire; disco server
// answers from the registry, disco agent from its guarded table.
//
// Names, with domain disco:
//
//	web.service.disco            A/AAAA of web's passing instances, shuffled by weight
//	v2.web.service.disco         the same, only instances tagged v2
//	_web._tcp.service.disco      SRV for each passing instance (and _web._v2 for a tag),
//	                             target <id>.web.instance.disco, its A/AAAA in the additional section
//	<id>.web.instance.disco      A/AAAA of one instance
//
// An unknown name is NXDOMAIN and a known one with nothing to answer is
// NOERROR with no records (NODATA); both carry the zone's SOA, whose minimum
// is the negative-caching TTL. Names outside the domains are REFUSED: the
// server never recurses. docs/dns.md has every rule at the edges.
package dnsserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discotech/disco/catalog"
)

// Catalog is what a Server answers from.
type Catalog interface {
	// Service returns the instances of the named service, whatever their
	// status, and whether the service is known. The slice and the instances
	// are shared and must not be modified.
	Service(name string) (instances []*catalog.Instance, known bool)
}

// CatalogFunc adapts a function to Catalog.
type CatalogFunc func(name string) ([]*catalog.Instance, bool)

// Service calls f.
func (f CatalogFunc) Service(name string) ([]*catalog.Instance, bool) { return f(name) }

// Config configures a Server. The yaml names are also the flag names of the
// hosts that embed it (disco server, agent, dev).
type Config struct {
	// Addr is where the server listens, on UDP and TCP alike. Empty turns
	// DNS off.
	Addr string `yaml:"dns"`
	// Domains are the service domains answered, the first being the
	// default; each is answered the same way ("consul" as a second one
	// lets clients written for Consul resolve unchanged).
	Domains []string `yaml:"dns-domain"`
	// TTL is the TTL of every answer record.
	TTL time.Duration `yaml:"dns-ttl"`
	// NegativeTTL is how long resolvers may cache NXDOMAIN and NODATA: the
	// SOA's TTL and minimum field (RFC 2308).
	NegativeTTL time.Duration `yaml:"dns-negative-ttl"`

	// MagicIP, when set, answers A queries for a service name (not for an
	// instance name, nor SRV) with the service's one magic address instead
	// of its backends' addresses, so connect() lands on the node's
	// interception. AAAA queries for those names are then NODATA. The
	// agent sets it; ok false falls back to the backends.
	MagicIP func(service string) (addr netip.Addr, ok bool) `yaml:"-"`
	// Ready, when set, says whether the catalog can be answered from yet.
	// Until it can, queries in the domains get SERVFAIL, which resolvers
	// retry soon, rather than an NXDOMAIN they would cache.
	Ready func() bool `yaml:"-"`
	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Registerer receives the server's metrics. Default: none.
	Registerer prometheus.Registerer `yaml:"-"`
}

// DefaultConfig returns the defaults of the external contract: disco server's
// DNS address, domain disco, 5s TTLs.
func DefaultConfig() Config {
	return Config{
		Addr:        "127.0.0.1:7753",
		Domains:     []string{"disco"},
		TTL:         5 * time.Second,
		NegativeTTL: 5 * time.Second,
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	if len(c.Domains) == 0 {
		return errors.New("dnsserver: at least one dns-domain is required")
	}
	seen := map[string]bool{}
	for _, d := range c.Domains {
		name := strings.ToLower(strings.TrimSuffix(d, "."))
		for label := range strings.SplitSeq(name, ".") {
			if catalog.ValidateName("label", label) != nil {
				return fmt.Errorf("dnsserver: dns-domain %q is not a domain name: want labels of letters, digits and '-' separated by dots, like disco or consul", d)
			}
		}
		if seen[name] {
			return fmt.Errorf("dnsserver: dns-domain %q is given twice", d)
		}
		seen[name] = true
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{{"dns-ttl", c.TTL}, {"dns-negative-ttl", c.NegativeTTL}} {
		if t.d < 0 || t.d > 24*time.Hour || t.d%time.Second != 0 {
			return fmt.Errorf("dnsserver: %s must be whole seconds between 0s and 24h, got %s", t.name, t.d)
		}
	}
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return fmt.Errorf("dnsserver: dns address %q: %w", c.Addr, err)
		}
	}
	return nil
}
