// Package etcd is the source that finds services under an etcd key prefix,
// and watches it:
//
//	etcd://127.0.0.1:2379/services
//	etcd://user:password@10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/services
//	etcd://10.0.0.1:2379/services?ca=/etc/disco/etcd-ca.pem&cert=/etc/disco/etcd.pem&key=/etc/disco/etcd-key.pem
//	etcd://127.0.0.1:2379?prefix=services
//
// The URL path is the key prefix, leading slash included; the prefix query
// parameter gives it instead, for keys that start without a slash (as those
// of grpc-go's etcd resolver dialled as etcd:///services/web). A user and
// password turn on etcd authentication; ca, cert and key (PEM files) turn on
// TLS, with tls=true for TLS verified against the system's roots alone.
//
// Two layouts of keys are found, told apart by each value's shape, so one
// prefix may hold both:
//
//	<prefix>/<service>/<id>    {"address":"10.0.1.5","port":8080,"tags":["v1"],"meta":{"k":"v"},"weight":100,"status":"passing"}
//	<prefix>/<service>/<any>   {"Op":0,"Addr":"10.0.1.5:8080","Metadata":...}
//
// The first is Discotech's own: the fields of a catalog.Registration (weight
// optional, catalog.DefaultWeight by default) and an optional status,
// passing by default. The second is what go.etcd.io/etcd/client/v3/naming/endpoints
// writes for grpc-go's etcd resolver: the instance's id is made from Addr
// ("10.0.1.5:8080" is 10-0-1-5-8080), and Metadata, when it is an object,
// gives the instance's meta from its string values.
//
// A key that names no service, or whose value cannot be used (not JSON, a
// name that is not a DNS label, a port out of range, an id another key of
// the service already has), is left out and logged once for each value it
// takes; the rest of its service stands. Dropped tells how many keys are
// left out now.
//
// The source lists the prefix once (an Update with Full), then watches it
// from the listing's revision, reporting each change as the whole new
// instance set of the services it touched. When the watch's revision has
// been compacted away it lists again. When etcd does not answer (the watch
// is probed, since the etcd client resumes a broken watch silently), it
// reports a failure, reconnects with backoff, and lists again once it can;
// it reports nothing else meanwhile.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/discotech/disco/source"
)

func init() {
	source.Register("etcd", func(spec *url.URL, opts source.Options) (source.Source, error) {
		e, err := New(spec, opts)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return e, nil
	})
}

// DefaultPort is the port of a host given without one.
const DefaultPort = "2379"

// pageSize is how many keys one request of a listing reads: a large prefix
// is read in pages at one revision, so that no single answer is huge and
// each page fits in the request timeout.
const pageSize = 1000

// healthyReset is how long a connection must have worked for the next
// outage's reconnection to start again from the shortest wait. A server
// that answers the listing and then drops the watch at once is retried
// with a growing wait, not listed in a tight loop.
const healthyReset = time.Minute

// Etcd watches one key prefix of one etcd cluster.
type Etcd struct {
	endpoints []string
	prefix    string // with its trailing "/"
	username  string
	password  string
	tls       *tlsFiles // nil: plain text
	timeout   time.Duration
	log       *slog.Logger

	dropped atomic.Int64

	// Changed by tests only.
	backoff    source.Backoff  // the reconnection waits
	pageSize   int             // keys per listing request
	afterList  func(rev int64) // called between a listing and its watch
	onProgress func()          // called on each progress notification
}

// tlsFiles are the PEM files of a TLS connection, read again on every
// connection so that renewed certificates are picked up.
type tlsFiles struct {
	ca, cert, key string
}

// New makes the source for spec; see the package documentation.
func New(spec *url.URL, opts source.Options) (*Etcd, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	e := &Etcd{
		timeout:  opts.Timeout,
		log:      opts.Logger.With("source", spec.Redacted()),
		pageSize: pageSize,
	}
	if spec.Opaque != "" || spec.Host == "" {
		return nil, source.Specf(spec, "want etcd://host:port[,host:port...]/prefix")
	}
	if spec.User != nil {
		e.username = spec.User.Username()
		e.password, _ = spec.User.Password()
		if e.username == "" || e.password == "" {
			return nil, source.Specf(spec, "etcd authentication wants both a user and a password (etcd://user:password@host:port/prefix)")
		}
	}
	q := spec.Query()
	for k, v := range q {
		switch k {
		case "prefix", "ca", "cert", "key", "tls":
			if len(v) != 1 {
				return nil, source.Specf(spec, "%s is given %d times", k, len(v))
			}
		default:
			return nil, source.Specf(spec, "unknown parameter %q; known are prefix, ca, cert, key and tls", k)
		}
	}
	useTLS := false
	if v := q.Get("tls"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, source.Specf(spec, "tls=%q: want true or false", v)
		}
		useTLS = b
	}
	files := tlsFiles{ca: q.Get("ca"), cert: q.Get("cert"), key: q.Get("key")}
	if (files.cert == "") != (files.key == "") {
		return nil, source.Specf(spec, "a client certificate wants both cert and key")
	}
	if useTLS || files != (tlsFiles{}) {
		if _, err := files.config(); err != nil {
			return nil, source.Specf(spec, "%v", err)
		}
		e.tls = &files
	}
	scheme := "http://"
	if e.tls != nil {
		scheme = "https://"
	}
	for h := range strings.SplitSeq(spec.Host, ",") {
		if h == "" {
			return nil, source.Specf(spec, "empty host in %q", spec.Host)
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = strings.Trim(h, "[]"), DefaultPort
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
			return nil, source.Specf(spec, "%q is not host:port", h)
		}
		e.endpoints = append(e.endpoints, scheme+net.JoinHostPort(host, port))
	}
	prefix := spec.Path
	if p, ok := q["prefix"]; ok {
		if strings.Trim(spec.Path, "/") != "" {
			return nil, source.Specf(spec, "give the key prefix as the path or as ?prefix=, not both")
		}
		prefix = p[0]
	}
	prefix = strings.TrimRight(prefix, "/")
	if strings.Trim(prefix, "/") == "" {
		return nil, source.Specf(spec, "want a key prefix, such as etcd://127.0.0.1:2379/services")
	}
	e.prefix = prefix + "/"
	return e, nil
}

// config makes the TLS configuration the files describe.
func (f *tlsFiles) config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca: %s holds no PEM certificate", f.ca)
		}
	}
	if f.cert != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("cert and key: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Dropped returns how many keys under the prefix are left out now: keys
// that name no service and values that make no valid instance. Each is
// logged once; the count is for status pages and metrics.
func (e *Etcd) Dropped() int { return int(e.dropped.Load()) }

// Run watches the prefix until ctx is done; see the package documentation.
// It returns nil then. One Etcd runs once at a time.
func (e *Etcd) Run(ctx context.Context, sink source.Sink) error {
	r := &run{Etcd: e, sink: sink, st: newState(e.prefix)}
	bo := e.backoff
	for ctx.Err() == nil {
		r.upSince = time.Time{}
		err := r.session(ctx)
		if ctx.Err() != nil {
			break
		}
		up := !r.upSince.IsZero()
		if up && time.Since(r.upSince) >= healthyReset {
			bo.Reset()
		}
		if up && time.Since(r.upSince) >= e.timeout {
			// A watch that worked a while ended: another member may
			// answer at once (one restarting in a rolling upgrade). Try
			// once before telling the sink.
			e.log.Info("source/etcd: the watch ended; reconnecting", "error", err)
			continue
		}
		sink.Fail(err)
		if !r.down {
			e.log.Warn("source/etcd: cannot see etcd; reconnecting", "error", err)
			r.down = true
		} else {
			e.log.Debug("source/etcd: still no etcd", "error", err)
		}
		if !source.Sleep(ctx, bo.Next()) {
			break
		}
	}
	return nil
}

// run is the state of one Run.
type run struct {
	*Etcd
	sink    source.Sink
	st      *state
	down    bool      // a failure was reported and no listing came since
	upSince time.Time // when the session's first listing came; zero before
}

// errCompacted ends a watch whose next revision is compacted away.
var errCompacted = errors.New("source/etcd: watch revision compacted")

// session connects, lists the prefix and follows it until something fails
// (it returns why) or ctx is done.
func (r *run) session(ctx context.Context) error {
	cli, err := r.dial(ctx)
	if err != nil {
		return fmt.Errorf("source/etcd: connect to %s: %w", strings.Join(r.endpoints, ","), r.explain(err))
	}
	defer cli.Close()
	for {
		rev, err := r.list(ctx, cli)
		if err != nil {
			return err
		}
		if r.upSince.IsZero() {
			r.upSince = time.Now()
		}
		if r.down {
			r.log.Info("source/etcd: etcd is back")
			r.down = false
		}
		if r.afterList != nil {
			r.afterList(rev)
		}
		err = r.watch(ctx, cli, rev)
		if !errors.Is(err, errCompacted) {
			return err
		}
		r.log.Info("source/etcd: the watch's revision was compacted; listing again", "revision", rev+1)
	}
}

// dial makes a client. It connects in the background: a client is made
// even when no endpoint answers, and its first request waits for one.
func (r *run) dial(ctx context.Context) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints: r.endpoints,
		// Bounds the authentication that New does when a user is set.
		DialTimeout: r.timeout,
		Context:     ctx,
		Username:    r.username,
		Password:    r.password,
		// The client's own logs would repeat every retry; failures reach
		// the sink and this source's log instead.
		Logger: zap.NewNop(),
	}
	if r.tls != nil {
		c, err := r.tls.config()
		if err != nil {
			return nil, err
		}
		cfg.TLS = c
	}
	return clientv3.New(cfg)
}

// list reads the whole prefix at one revision, reports it as a full
// update, and returns the revision.
func (r *run) list(ctx context.Context, cli *clientv3.Client) (int64, error) {
	var (
		rev int64
		kvs []*mvccpb.KeyValue
		err error
	)
	// A compaction between the pages of a large listing makes it start
	// over; a few times in a row means something else is wrong.
	for range 3 {
		rev, kvs, err = r.read(ctx, cli)
		if !errors.Is(err, rpctypes.ErrCompacted) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("source/etcd: list %s: %w", r.prefix, r.explain(err))
	}
	services := r.st.reset(kvs)
	r.noteDrops()
	for svc, ins := range services {
		services[svc] = source.CloneInstances(ins)
	}
	r.sink.Update(source.Update{Services: services, Full: true})
	return rev, nil
}

// read reads the prefix page by page, each page bounded by the timeout and
// every page after the first at the first one's revision.
func (r *run) read(ctx context.Context, cli *clientv3.Client) (int64, []*mvccpb.KeyValue, error) {
	end := clientv3.GetPrefixRangeEnd(r.prefix)
	from := r.prefix
	var rev int64
	var kvs []*mvccpb.KeyValue
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(r.pageSize))}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := context.WithTimeout(ctx, r.timeout)
		resp, err := cli.Get(rctx, from, opts...)
		cancel()
		if err != nil {
			return 0, nil, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		kvs = append(kvs, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, kvs, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// watch follows the prefix from rev+1 until the watch fails or ctx is done.
//
// The etcd client resumes a broken watch by itself, silently, however long
// the server is away; so that an outage is noticed and reported, the watch
// is probed: every timeout it asks the server for a progress notification,
// and a timeout without any answer on the watch ends it.
func (r *run) watch(ctx context.Context, cli *clientv3.Client, rev int64) error {
	// WithRequireLeader: a member cut off from its cluster ends the watch
	// instead of serving it stale. The probe must carry the same metadata
	// to reach the same stream.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	var probes sync.WaitGroup
	defer probes.Wait()
	defer cancel()
	// Watch waits until the server takes the watch, however long: when
	// it has not in a timeout, give up on it.
	hung := time.AfterFunc(r.timeout, cancel)
	wch := cli.Watch(wctx, r.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	if !hung.Stop() && ctx.Err() == nil {
		return fmt.Errorf("source/etcd: watch %s: no answer from etcd in %s", r.prefix, r.timeout)
	}
	tick := time.NewTicker(r.timeout)
	defer tick.Stop()
	waiting := false // a probe is out and nothing came since
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("source/etcd: watch %s: closed", r.prefix)
			}
			waiting = false
			if wr.CompactRevision != 0 {
				return errCompacted
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("source/etcd: watch %s: %w", r.prefix, r.explain(err))
			}
			if len(wr.Events) > 0 {
				r.apply(wr.Events)
			} else if wr.IsProgressNotify() && r.onProgress != nil {
				r.onProgress()
			}
		case <-tick.C:
			if waiting {
				return fmt.Errorf("source/etcd: watch %s: no answer from etcd in %s", r.prefix, r.timeout)
			}
			waiting = true
			probes.Add(1)
			go func() {
				defer probes.Done()
				pctx, cancel := context.WithTimeout(wctx, r.timeout)
				defer cancel()
				// An error or a hang shows as no answer at the next tick.
				_ = cli.RequestProgress(pctx)
			}()
		}
	}
}

// apply applies the events of one watch response and reports the services
// whose instances changed.
func (r *run) apply(events []*clientv3.Event) {
	changed := r.st.apply(events)
	r.noteDrops()
	if len(changed) == 0 {
		return
	}
	for svc, ins := range changed {
		changed[svc] = source.CloneInstances(ins)
	}
	r.sink.Update(source.Update{Services: changed})
}

// noteDrops logs the keys newly left out and updates the count.
func (r *run) noteDrops() {
	for _, d := range r.st.takeNewDrops() {
		r.log.Warn("source/etcd: key left out", "key", d.key, "error", d.err)
	}
	r.dropped.Store(int64(r.st.dropCount()))
}

// explain makes a request's error say what happened in words.
func (r *run) explain(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer in %s: %w", r.timeout, err)
	}
	return err
}

var _ source.Source = (*Etcd)(nil)
