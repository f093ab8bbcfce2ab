package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every validation failure, so callers can tell bad
// input (a 400) from everything else with errors.Is.
var ErrInvalid = errors.New("invalid")

// FieldError says which field broke which rule.
type FieldError struct {
	Field string // JSON path, e.g. "check.interval"
	Rule  string // what the value must be, e.g. "must be between 1 and 65535"
}

func (e FieldError) Error() string { return e.Field + ": " + e.Rule }

// ValidationError lists every problem found in one input, in field order.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Error()
	}
	return strings.Join(parts, "; ")
}

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

type problems []FieldError

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, FieldError{Field: field, Rule: fmt.Sprintf(format, args...)})
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &ValidationError{Problems: p}
}

// Limits on what one registration may carry.
const (
	MaxNameLength    = 63
	MaxTags          = 64
	MaxTagLength     = 512
	MaxMetaPairs     = 64
	MaxMetaKeyLength = 128
	MaxMetaValLength = 512
	MinTTL           = time.Second
	MaxTTL           = 24 * time.Hour
	MinCheckInterval = 100 * time.Millisecond
	MaxCheckInterval = time.Hour
	MaxCheckCount    = 100
	MinDeregister    = time.Second
	MaxDeregister    = 30 * 24 * time.Hour
)

// ValidateName checks that s can be a service name or instance id: one DNS
// label of lower-case letters, digits and hyphens, 1–63 characters, not
// starting or ending with a hyphen. field names it in the error.
func ValidateName(field, s string) error {
	if rule := nameRule(s); rule != "" {
		return &ValidationError{Problems: []FieldError{{Field: field, Rule: rule}}}
	}
	return nil
}

func nameRule(s string) string {
	const want = "must be a DNS label: 1-63 lower-case letters, digits or '-', not starting or ending with '-'"
	switch {
	case s == "":
		return "is required; " + want
	case len(s) > MaxNameLength:
		return fmt.Sprintf("is %d characters long; %s", len(s), want)
	case s[0] == '-' || s[len(s)-1] == '-':
		return fmt.Sprintf("%q starts or ends with '-'; %s", s, want)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		case c >= 'A' && c <= 'Z':
			return fmt.Sprintf("%q has upper-case letters; %s (try %q)", s, want, strings.ToLower(s))
		default:
			return fmt.Sprintf("%q has the character %q; %s", s, c, want)
		}
	}
	return ""
}

// ValidHostname reports whether s is a hostname by RFC 1123: dot-separated
// labels of letters, digits and hyphens, each 1–63 characters, 253 in all.
func ValidHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Instance validates r and returns the instance it describes, with every
// default filled in. Status and indexes are left for the registry to set.
func (r *Registration) Instance(service, id string) (*Instance, error) {
	var p problems
	if rule := nameRule(service); rule != "" {
		p.add("service", "%s", rule)
	}
	if rule := nameRule(id); rule != "" {
		p.add("id", "%s", rule)
	}
	switch {
	case r.Address == "":
		p.add("address", "is required; give an IP address or a hostname")
	case strings.Contains(r.Address, ":") && !isIP(r.Address):
		p.add("address", "%q is not an IP address or hostname (put the port in \"port\", not in the address)", r.Address)
	case !isIP(r.Address) && !ValidHostname(r.Address):
		p.add("address", "%q is not an IP address or hostname", r.Address)
	}
	if r.Port < 1 || r.Port > 65535 {
		p.add("port", "must be between 1 and 65535, got %d", r.Port)
	}
	weight := DefaultWeight
	if r.Weight != nil {
		weight = *r.Weight
		if weight < 0 || weight > MaxWeight {
			p.add("weight", "must be between 0 and %d (0 drains the instance), got %d", MaxWeight, weight)
		}
	}
	validateTags(&p, r.Tags)
	validateMeta(&p, r.Meta)
	if r.TTL != 0 && (r.TTL.D() < MinTTL || r.TTL.D() > MaxTTL) {
		p.add("ttl", "must be between 1s and 24h, got %s", r.TTL)
	}
	validateDeregister(&p, "deregister_after", r.DeregisterAfter)

	in := &Instance{
		Service:         service,
		ID:              id,
		Address:         r.Address,
		Port:            r.Port,
		Tags:            r.Tags,
		Meta:            r.Meta,
		Weight:          weight,
		TTL:             r.TTL,
		DeregisterAfter: r.DeregisterAfter,
	}
	if len(in.Tags) == 0 {
		in.Tags = nil
	}
	if len(in.Meta) == 0 {
		in.Meta = nil
	}
	if r.Check != nil {
		ck := *r.Check
		validateCheck(&p, &ck)
		in.Check = &ck
		if ck.DeregisterAfter != 0 {
			in.DeregisterAfter = ck.DeregisterAfter
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return in, nil
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func validateTags(p *problems, tags []string) {
	if len(tags) > MaxTags {
		p.add("tags", "at most %d tags, got %d", MaxTags, len(tags))
		return
	}
	for i, t := range tags {
		field := fmt.Sprintf("tags[%d]", i)
		switch {
		case t == "":
			p.add(field, "must not be empty")
		case len(t) > MaxTagLength:
			p.add(field, "must be at most %d bytes, got %d", MaxTagLength, len(t))
		case strings.ContainsFunc(t, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			p.add(field, "must not contain control characters")
		}
	}
}

func validateMeta(p *problems, meta map[string]string) {
	if len(meta) > MaxMetaPairs {
		p.add("meta", "at most %d keys, got %d", MaxMetaPairs, len(meta))
		return
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		v := meta[k]
		field := "meta." + k
		switch {
		case k == "" || len(k) > MaxMetaKeyLength:
			p.add("meta", "keys must be 1-%d characters, got %q", MaxMetaKeyLength, k)
		case strings.IndexFunc(k, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
		}) >= 0:
			p.add("meta", "key %q may only hold letters, digits, '_', '-' and '.'", k)
		case len(v) > MaxMetaValLength:
			p.add(field, "must be at most %d bytes, got %d", MaxMetaValLength, len(v))
		}
	}
}

func validateDeregister(p *problems, field string, d Duration) {
	if d != 0 && (d.D() < MinDeregister || d.D() > MaxDeregister) {
		p.add(field, "must be between 1s and 720h, got %s", d)
	}
}

// validateCheck checks ck and fills in its defaults.
func validateCheck(p *problems, ck *Check) {
	switch ck.Type {
	case "http", "vitals":
		u, err := url.Parse(ck.Target)
		if ck.Target == "" {
			p.add("check.target", "is required for a %s check; give a URL such as http://10.0.1.5:8080/health", ck.Type)
		} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add("check.target", "%q is not an http:// or https:// URL", ck.Target)
		}
	case "tcp":
		host, port, err := net.SplitHostPort(ck.Target)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			p.add("check.target", "%q is not host:port (a tcp check connects to it)", ck.Target)
		}
	case "":
		p.add("check.type", "is required; one of http, tcp, vitals")
	default:
		p.add("check.type", "%q is not a check type; one of http, tcp, vitals", ck.Type)
	}
	if ck.Interval == 0 {
		ck.Interval = Duration(DefaultCheckInterval)
	} else if ck.Interval.D() < MinCheckInterval || ck.Interval.D() > MaxCheckInterval {
		p.add("check.interval", "must be between 100ms and 1h, got %s", ck.Interval)
	}
	if ck.Timeout == 0 {
		ck.Timeout = Duration(min(DefaultCheckTimeout, ck.Interval.D()))
	} else if ck.Timeout < 0 || ck.Timeout > ck.Interval {
		p.add("check.timeout", "must be positive and at most the interval (%s), got %s", ck.Interval, ck.Timeout)
	}
	if ck.Failures == 0 {
		ck.Failures = DefaultCheckFailures
	} else if ck.Failures < 1 || ck.Failures > MaxCheckCount {
		p.add("check.failures", "must be between 1 and %d, got %d", MaxCheckCount, ck.Failures)
	}
	if ck.Successes == 0 {
		ck.Successes = DefaultCheckSuccesses
	} else if ck.Successes < 1 || ck.Successes > MaxCheckCount {
		p.add("check.successes", "must be between 1 and %d, got %d", MaxCheckCount, ck.Successes)
	}
	validateDeregister(p, "check.deregister_after", ck.DeregisterAfter)
}

// Label turns any text into a valid name (a DNS label): lower case, runs of
// other characters as one '-', and, when longer than MaxNameLength, cut and
// suffixed with a hash of the whole so that different texts stay different.
// Sources use it to name instances their source of truth names otherwise
// ("10.0.1.5:8080", a UUID, a host name).
func Label(raw string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(raw) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	id := strings.Trim(b.String(), "-")
	if len(id) > MaxNameLength || id == "" {
		sum := sha256.Sum256([]byte(raw))
		id = strings.TrimRight(id[:min(len(id), MaxNameLength-9)], "-") + "-" + hex.EncodeToString(sum[:4])
		id = strings.TrimLeft(id, "-")
	}
	return id
}
