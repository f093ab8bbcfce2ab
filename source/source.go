// Package source defines how the agent learns what services exist: each
// kind of source of truth (the disco registry, a file, DNS SRV, etcd,
// ZooKeeper) is one package under source/, behind the Source interface,
// registered by URL scheme. A source keeps watching its truth, reconnects by
// itself, and reports what it sees as whole sets of instances per service;
// it never decides what is safe to apply — the guard does.
//
//	disco+http://127.0.0.1:7700                     our registry, watched
//	file:///etc/disco/services.yaml                 a flat file, reloaded on change
//	dns-srv://127.0.0.1:53/_web._tcp.example.com    SRV records from that resolver
//	etcd://127.0.0.1:2379/services                  an etcd key prefix
//	zookeeper://127.0.0.1:2181/services             a ZooKeeper base path (Curator layout)
package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/discotech/disco/catalog"
)

// Source watches one source of truth.
type Source interface {
	// Run watches until ctx is done, telling sink what it sees. It
	// reconnects with backoff by itself and returns nil when ctx is done;
	// an error only when it can never work.
	Run(ctx context.Context, sink Sink) error
}

// Sink receives what a source sees. Its methods are safe to call from any
// goroutine; a source calls them from one goroutine at a time.
type Sink interface {
	// Update reports the complete set of instances of each service in
	// u.Services, as the source sees it now. With u.Full, u.Services holds
	// every service the source knows and any service it reported before
	// and does not list is gone. Each report also means the source is
	// healthy again.
	Update(u Update)
	// Fail reports that the source cannot see its truth right now (it is
	// unreachable, timed out, or returned something it could not use).
	// Whatever it reported before stands until it reports again.
	Fail(err error)
}

// Update is what a source saw.
type Update struct {
	// Services maps a service name to all its instances; an empty slice
	// means the service has none. Instances carry Service and ID set,
	// Status (Passing when the source knows no better) and Weight (the
	// catalog default when the source has none).
	Services map[string][]*catalog.Instance
	// Full: Services is everything the source knows.
	Full bool
}

// Options are what every source may use.
type Options struct {
	// Logger receives the source's logs.
	Logger *slog.Logger
	// Refresh bounds how long a polling source (dns-srv) waits between
	// looks, whatever the records' TTLs say. Zero: the source's default.
	Refresh time.Duration
	// Timeout bounds one request to the source of truth. Zero: 10s.
	Timeout time.Duration
}

// Factory makes a source from its spec, a URL whose scheme chose it.
type Factory func(spec *url.URL, opts Options) (Source, error)

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a kind of source available under scheme. It panics if the
// scheme is taken: two packages claiming one scheme is a programming error.
func Register(scheme string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[scheme]; dup {
		panic("source: scheme " + scheme + " registered twice")
	}
	factories[scheme] = f
}

// Schemes lists the registered schemes, sorted.
func Schemes() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(factories))
	for s := range factories {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// ErrSpec is wrapped by every error about a spec that cannot be used.
var ErrSpec = errors.New("bad source spec")

// New parses spec and makes the source its scheme names.
func New(spec string, opts Options) (Source, error) {
	u, err := url.Parse(spec)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("source: %q: %w: want scheme://..., one of %s", Redact(spec), ErrSpec, strings.Join(Schemes(), ", "))
	}
	mu.RLock()
	f := factories[u.Scheme]
	mu.RUnlock()
	if f == nil {
		return nil, fmt.Errorf("source: %q: %w: unknown scheme %q, want one of %s", u.Redacted(), ErrSpec, u.Scheme, strings.Join(Schemes(), ", "))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	return f(u, opts)
}

// Redact returns spec with any password replaced, for logs and status.
func Redact(spec string) string {
	u, err := url.Parse(spec)
	if err == nil {
		return u.Redacted()
	}
	// Unparsable: hide whatever stands between "://" and an "@".
	if i := strings.Index(spec, "://"); i >= 0 {
		if j := strings.LastIndexByte(spec[i+3:], '@'); j >= 0 {
			return spec[:i+3] + "xxxxx" + spec[i+3+j:]
		}
	}
	return spec
}

// Specf makes the error a factory returns for a spec it cannot use.
func Specf(spec *url.URL, format string, args ...any) error {
	return fmt.Errorf("source: %s: %w: %s", spec.Redacted(), ErrSpec, fmt.Sprintf(format, args...))
}

// Normalize sets Status to Passing when the source left it empty, and
// validates the instance as the registry would (names as DNS labels, address,
// port range, weight 0–10000). A source drops an instance that fails, and
// says why in a log. (Weight is the source's to set: catalog.DefaultWeight
// when it has none, since 0 means drained.)
func Normalize(in *catalog.Instance) error {
	if in.Status == "" {
		in.Status = catalog.Passing
	}
	reg := catalog.Registration{Address: in.Address, Port: in.Port, Tags: in.Tags, Meta: in.Meta, Weight: &in.Weight}
	_, err := reg.Instance(in.Service, in.ID)
	return err
}

// Backoff is the wait between reconnection attempts: exponential from Min to
// Max, with ±20% jitter so that many agents do not retry in step.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the next wait.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 10 * time.Second
	}
	d := lo << min(b.n, 30)
	if d > hi || d <= 0 {
		d = hi
	} else {
		b.n++
	}
	return jitter(d)
}

// Reset starts over from Min, after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Sleep waits d or until ctx is done, and reports whether the wait ran out.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// SortInstances orders instances by id, the order every source reports in.
func SortInstances(ins []*catalog.Instance) {
	slices.SortFunc(ins, func(a, b *catalog.Instance) int { return strings.Compare(a.ID, b.ID) })
}

// CloneInstances returns deep copies of ins, for a report the sink may keep
// while the source goes on changing its own.
func CloneInstances(ins []*catalog.Instance) []*catalog.Instance {
	out := make([]*catalog.Instance, len(ins))
	for i, in := range ins {
		out[i] = in.Clone()
	}
	return out
}

func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}
