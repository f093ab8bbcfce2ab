// Package zookeeper is the source that follows services registered in
// ZooKeeper the way Apache Curator's service discovery (curator-x-discovery)
// lays them out: one znode per service under a base path, one child per
// instance holding Curator's ServiceInstance JSON.
//
//	/services/web/8d3c0a1e-...   {"name":"web","id":"8d3c0a1e-...","address":"10.0.1.5","port":8080,...}
//
// Spec: zookeeper://HOST:PORT[,HOST:PORT...]/BASE, such as
// zookeeper://127.0.0.1:2181/services; a host without a port uses 2181, and
// ?session_timeout=30s asks for a session timeout other than the 10s default.
//
// The source keeps watches on the base path (services come and go), on each
// service (instances come and go) and on each instance (its data changes),
// so a change is reported as soon as ZooKeeper says so: the whole instance
// set of each service that changed. Whenever it gets a session — the first
// one, the same one back after a lost connection, or a new one after the
// old one expired — it lists everything again and reports it in full.
// While it has no connection it reports a failure once and keeps quiet:
// what it said last stands.
//
// Names are mapped, not refused: a service or instance name that is not a
// DNS label is turned into one (catalog.Label: lower case, other characters
// as '-'), so Curator's UUID ids are used as they are. Two service
// directories that map to the same name are one service. An instance whose
// data cannot be used (not JSON, no address, no port) is left out with one
// log line per znode, and its siblings stay. An instance with
// "enabled": false is reported critical, so it is kept in view but gets no
// traffic; it turns passing again when re-enabled. A payload that is a JSON
// object gives the instance its meta: the string values of its "metadata"
// object if it has one (Spring Cloud's layout), else its own string values.
package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

func init() { source.Register("zookeeper", New) }

// DefaultSessionTimeout is the session timeout the source asks for when the
// spec does not say. The server clamps it to its own bounds (by default 2
// to 20 ticks, 4s to 40s). The session outlives a lost connection by this
// much, and the client gives up on a silent server after two thirds of it.
const DefaultSessionTimeout = 10 * time.Second

// DefaultPort is the port of a host given without one.
const DefaultPort = "2181"

// fetchers bounds the reads of instance data in flight at once: enough to
// hide the round trips when listing a large service, few enough not to fill
// the client's send queue (16 requests).
const fetchers = 8

// ZooKeeper follows one base path on one ZooKeeper ensemble.
type ZooKeeper struct {
	servers        []string
	base           string
	sessionTimeout time.Duration
	timeout        time.Duration
	log            *slog.Logger
}

var _ source.Source = (*ZooKeeper)(nil)

// New makes the source for spec zookeeper://HOST:PORT[,HOST:PORT...]/BASE.
func New(spec *url.URL, opts source.Options) (source.Source, error) {
	const want = "want zookeeper://HOST:PORT[,HOST:PORT...]/BASE, such as zookeeper://127.0.0.1:2181/services"
	if spec.User != nil {
		return nil, source.Specf(spec, "credentials in the spec are not supported; give ZooKeeper servers and a base path only")
	}
	if spec.Host == "" {
		return nil, source.Specf(spec, "no server; %s", want)
	}
	z := &ZooKeeper{sessionTimeout: DefaultSessionTimeout, timeout: opts.Timeout, log: opts.Logger}
	if z.timeout <= 0 {
		z.timeout = 10 * time.Second
	}
	if z.log == nil {
		z.log = slog.Default()
	}
	z.log = z.log.With("source", spec.Redacted())
	for _, hp := range strings.Split(spec.Host, ",") {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			host, port = strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), DefaultPort
		}
		if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
			return nil, source.Specf(spec, "%q is not HOST:PORT; %s", hp, want)
		}
		z.servers = append(z.servers, net.JoinHostPort(host, port))
	}
	base := strings.TrimSuffix(spec.Path, "/")
	if base == "" {
		return nil, source.Specf(spec, "no base path; %s", want)
	}
	for _, seg := range strings.Split(base[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return nil, source.Specf(spec, "%q is not a ZooKeeper path; %s", spec.Path, want)
		}
	}
	z.base = base
	for k, vs := range spec.Query() {
		switch k {
		case "session_timeout":
			d, err := time.ParseDuration(vs[len(vs)-1])
			if err != nil || d < time.Second || d > time.Hour {
				return nil, source.Specf(spec, "session_timeout=%s: want a duration between 1s and 1h, such as 30s", vs[len(vs)-1])
			}
			z.sessionTimeout = d
		default:
			return nil, source.Specf(spec, "unknown parameter %q; the only one is session_timeout", k)
		}
	}
	return z, nil
}

// Run follows the base path until ctx is done.
func (z *ZooKeeper) Run(ctx context.Context, sink source.Sink) error {
	w := &watcher{
		z:        z,
		sink:     sink,
		q:        &queue{wake: make(chan struct{}, 1)},
		services: map[string]*service{},
		armed:    map[watchKey]bool{},
		dirtySvc: map[string]map[string]bool{},
		emitted:  map[string][]*catalog.Instance{},
		renamed:  map[string]bool{},
	}
	var bo source.Backoff
	for {
		// Connect only resolves the servers' names; it fails when none
		// resolves, and connects in the background otherwise.
		conn, _, err := zk.Connect(z.servers, z.sessionTimeout,
			zk.WithEventCallback(w.q.push),
			zk.WithLogger(zkLogger{z.log}),
			zk.WithLogInfo(false))
		if err == nil {
			w.conn = conn
			break
		}
		w.fail(fmt.Errorf("source/zookeeper: %s: %w", strings.Join(z.servers, ","), err))
		if !source.Sleep(ctx, bo.Next()) {
			return nil
		}
	}
	defer w.conn.Close()
	w.run(ctx)
	return nil
}

// kind is what a watch is on: a znode's children, its data, or its coming
// into being.
type kind uint8

const (
	childWatch kind = iota
	dataWatch
	existWatch
)

type watchKey struct {
	path string
	kind kind
}

// service is one service directory as last read.
type service struct {
	label string           // its name as reported
	nodes map[string]*node // by child name
}

// node is one instance znode as last read.
type node struct {
	data string
	in   *catalog.Instance // nil when the data cannot be used
}

// watcher is the state of one Run. Only Run's goroutine touches it, except
// q, which the client's callback fills.
type watcher struct {
	z    *ZooKeeper
	conn *zk.Conn
	sink source.Sink
	q    *queue

	services map[string]*service // by directory name
	// armed says which watches the client holds for this session, so that
	// a znode is read with a new watch only when it has none: the client
	// keeps every watch channel it hands out until the watch fires, and
	// re-arming on every full listing would pile them up on quiet znodes.
	armed map[watchKey]bool

	session   bool // a session is up
	connected bool // a session was ever up
	relist    bool // a full listing is due
	dirtyBase bool // the list of services is to be read again
	// dirtySvc: services whose children are to be read again, with the
	// children whose data is to be read again.
	dirtySvc map[string]map[string]bool
	failing  bool // the sink was told of a failure and nothing since

	emitted    map[string][]*catalog.Instance // by service name: what the sink was told
	complaints source.LogOnce                 // by znode path: the problem last logged
	renamed    map[string]bool                // directory names logged as mapped
}

func (w *watcher) run(ctx context.Context) {
	var bo source.Backoff
	var retry <-chan time.Time // set while waiting to try again after an error
	noSession := time.NewTimer(w.z.timeout)
	defer noSession.Stop()
	for {
		if w.session && retry == nil && w.pending() {
			if err := w.sync(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.fail(err)
				retry = time.After(bo.Next())
			} else {
				bo.Reset()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w.q.wake:
			for _, ev := range w.q.take() {
				if w.apply(ev) {
					retry = nil // a new session: list at once
				}
			}
		case <-retry:
			retry = nil
		case <-noSession.C:
			if !w.connected {
				w.fail(fmt.Errorf("source/zookeeper: no session with %s after %s", strings.Join(w.z.servers, ","), w.z.timeout))
			}
		}
	}
}

func (w *watcher) pending() bool {
	return w.relist || w.dirtyBase || len(w.dirtySvc) > 0
}

// fail tells the sink once per spell of trouble, and has everything listed
// again once the trouble is over: the sink hears that the source is well
// from a full report.
func (w *watcher) fail(err error) {
	w.relist = true
	if w.failing {
		w.z.log.Debug("source/zookeeper: still failing", "err", err)
		return
	}
	w.failing = true
	w.z.log.Warn("source/zookeeper: cannot follow ZooKeeper; keeping what it said last", "err", err)
	w.sink.Fail(err)
}

// apply takes in one event from the client, and reports whether it brought
// a session.
func (w *watcher) apply(ev zk.Event) (newSession bool) {
	switch ev.Type {
	case zk.EventSession:
		switch ev.State {
		case zk.StateHasSession:
			if w.session {
				return false
			}
			w.session, w.connected, w.relist = true, true, true
			w.z.log.Info("source/zookeeper: session established", "server", ev.Server)
			return true
		case zk.StateDisconnected:
			if w.session {
				w.session = false
				w.fail(fmt.Errorf("source/zookeeper: lost the connection to %s", ev.Server))
			}
		case zk.StateExpired:
			// The client starts a new session by itself; the watches died
			// with the old one.
			clear(w.armed)
			w.relist = true
			w.z.log.Warn("source/zookeeper: session expired; listing everything again on a new one", "server", ev.Server)
		case zk.StateAuthFailed:
			w.fail(fmt.Errorf("source/zookeeper: %s refused the session: authentication failed", ev.Server))
		}
		return false
	case zk.EventNotWatching:
		w.disarm(ev.Path, childWatch, dataWatch, existWatch)
		return false
	case zk.EventNodeCreated:
		w.disarm(ev.Path, existWatch)
	case zk.EventNodeDeleted:
		w.disarm(ev.Path, childWatch, dataWatch, existWatch)
	case zk.EventNodeDataChanged:
		w.disarm(ev.Path, dataWatch, existWatch)
	case zk.EventNodeChildrenChanged:
		w.disarm(ev.Path, childWatch)
	}
	svc, child, ok := w.split(ev.Path)
	switch {
	case !ok:
	case svc == "":
		w.dirtyBase = true
	default:
		set := w.dirtySvc[svc]
		if set == nil {
			set = map[string]bool{}
			w.dirtySvc[svc] = set
		}
		if child != "" {
			set[child] = true
		}
	}
	return false
}

func (w *watcher) disarm(path string, kinds ...kind) {
	for _, k := range kinds {
		delete(w.armed, watchKey{path, k})
	}
}

// split tells the base path ("", "", true), a service directory (svc, "",
// true) and an instance (svc, child, true) apart.
func (w *watcher) split(path string) (svc, child string, ok bool) {
	if path == w.z.base {
		return "", "", true
	}
	rel, ok := strings.CutPrefix(path, w.z.base+"/")
	if !ok || rel == "" {
		return "", "", false
	}
	svc, child, _ = strings.Cut(rel, "/")
	if strings.Contains(child, "/") {
		return "", "", false
	}
	return svc, child, true
}

// sync reads what the events said changed, or everything when a full
// listing is due, and reports it.
func (w *watcher) sync(ctx context.Context) error {
	if w.relist {
		return w.listAll(ctx)
	}
	changed := map[string]bool{} // service names
	if w.dirtyBase {
		names, err := w.listBase(ctx)
		if err != nil {
			return err
		}
		w.dirtyBase = false
		listed := set(names)
		for raw, s := range w.services {
			if !listed[raw] {
				delete(w.services, raw)
				delete(w.dirtySvc, raw)
				changed[s.label] = true
			}
		}
		for _, raw := range names {
			if w.services[raw] == nil {
				w.dirtySvc[raw] = nil // read it whole
			}
		}
	}
	for raw, children := range w.dirtySvc {
		prev := w.services[raw]
		s, err := w.readService(ctx, raw, prev, children)
		if err != nil {
			return err
		}
		delete(w.dirtySvc, raw)
		if prev != nil {
			changed[prev.label] = true
		}
		if s == nil {
			delete(w.services, raw)
		} else {
			w.services[raw] = s
			changed[s.label] = true
		}
	}
	u := source.Update{Services: map[string][]*catalog.Instance{}}
	for label := range changed {
		ins, ok := w.instances(label)
		prev, had := w.emitted[label]
		switch {
		case !ok && !had, ok && had && reflect.DeepEqual(ins, prev):
			continue
		case ok:
			u.Services[label] = source.CloneInstances(ins)
			w.emitted[label] = ins
		default: // every directory of that name is gone
			u.Services[label] = []*catalog.Instance{}
			delete(w.emitted, label)
		}
	}
	if len(u.Services) > 0 {
		w.sink.Update(u)
		w.failing = false
	}
	return nil
}

// listAll reads everything again and reports it in full.
func (w *watcher) listAll(ctx context.Context) error {
	names, err := w.listBase(ctx)
	if err != nil {
		return err
	}
	fresh := make(map[string]*service, len(names))
	for _, raw := range names {
		// The previous reading is passed so that unchanged data is not
		// parsed, nor complained about, again.
		s, err := w.readService(ctx, raw, w.services[raw], nil)
		if err != nil {
			return err
		}
		if s != nil {
			fresh[raw] = s
		}
	}
	w.services = fresh
	w.relist, w.dirtyBase = false, false
	clear(w.dirtySvc)
	u := source.Update{Services: map[string][]*catalog.Instance{}, Full: true}
	clear(w.emitted)
	for _, s := range fresh {
		if _, done := u.Services[s.label]; done {
			continue
		}
		ins, _ := w.instances(s.label)
		u.Services[s.label] = source.CloneInstances(ins)
		w.emitted[s.label] = ins
	}
	w.sink.Update(u)
	w.failing = false
	return nil
}

// listBase reads the service directories, watching the base path. A base
// path that does not exist (Curator makes it a container node, which
// ZooKeeper removes when it empties) holds no services; a watch on its
// existence says when it comes.
func (w *watcher) listBase(ctx context.Context) ([]string, error) {
	for range 3 { // the base path may come and go between the two reads
		names, err := w.children(ctx, w.z.base)
		if !errors.Is(err, zk.ErrNoNode) {
			if err != nil {
				return nil, fmt.Errorf("source/zookeeper: list %s: %w", w.z.base, err)
			}
			w.complaints.Forget(w.z.base)
			return names, nil
		}
		exists, err := w.exists(ctx, w.z.base)
		if err != nil {
			return nil, fmt.Errorf("source/zookeeper: look for %s: %w", w.z.base, err)
		}
		if !exists {
			w.complain(w.z.base, "the base path does not exist (yet): no services", slog.LevelInfo)
			return nil, nil
		}
	}
	return nil, fmt.Errorf("source/zookeeper: list %s: it keeps coming and going", w.z.base)
}

// readService reads the children of service directory raw and the data of
// those that are new or in refetch; nil refetch with a previous reading
// means all of them (a full listing). It returns nil for a directory that
// is gone.
func (w *watcher) readService(ctx context.Context, raw string, prev *service, refetch map[string]bool) (*service, error) {
	dir := w.z.base + "/" + raw
	children, err := w.children(ctx, dir)
	switch {
	case errors.Is(err, zk.ErrNoNode):
		w.forget(dir)
		return nil, nil
	case errors.Is(err, zk.ErrNoAuth):
		w.complain(dir, "service left out: not allowed to list it", slog.LevelWarn)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("source/zookeeper: list %s: %w", dir, err)
	}
	w.complaints.Forget(dir)
	label := catalog.Label(raw)
	if label != raw && !w.renamed[raw] {
		w.renamed[raw] = true
		w.z.log.Info("source/zookeeper: service name is not a DNS label; reporting it under another", "directory", dir, "service", label)
	}
	s := &service{label: label, nodes: make(map[string]*node, len(children))}
	full := refetch == nil
	var fetch []string
	for _, c := range children {
		if prev != nil && prev.nodes[c] != nil && !full && !refetch[c] {
			s.nodes[c] = prev.nodes[c]
			continue
		}
		fetch = append(fetch, c)
	}
	if prev != nil {
		listed := set(children)
		for c := range prev.nodes {
			if !listed[c] {
				w.forget(dir + "/" + c)
			}
		}
	}
	got := w.getAll(ctx, dir, fetch)
	for i, c := range fetch {
		path := dir + "/" + c
		g := got[i]
		switch {
		case errors.Is(g.err, zk.ErrNoNode):
			// Gone since the listing; the watch on the directory tells.
			w.forget(path)
			continue
		case errors.Is(g.err, zk.ErrNoAuth):
			w.complain(path, "instance left out: not allowed to read it", slog.LevelWarn)
			continue
		case g.err != nil:
			return nil, fmt.Errorf("source/zookeeper: read %s: %w", path, g.err)
		}
		if g.watched {
			w.armed[watchKey{path, dataWatch}] = true
		}
		if p := prev.node(c); p != nil && p.data == string(g.data) {
			s.nodes[c] = p // unchanged: neither parsed nor complained about again
			continue
		}
		n := &node{data: string(g.data)}
		in, err := parse(label, c, g.data)
		if err != nil {
			w.complain(path, "instance left out: "+err.Error(), slog.LevelWarn)
		} else {
			w.complaints.Forget(path)
			n.in = in
		}
		s.nodes[c] = n
	}
	return s, nil
}

func (s *service) node(child string) *node {
	if s == nil {
		return nil
	}
	return s.nodes[child]
}

// instances gathers the instances reported under one name, from every
// directory that maps to it, and reports whether any does.
func (w *watcher) instances(label string) ([]*catalog.Instance, bool) {
	var raws []string
	for raw, s := range w.services {
		if s.label == label {
			raws = append(raws, raw)
		}
	}
	if len(raws) == 0 {
		return nil, false
	}
	slices.Sort(raws)
	ins := []*catalog.Instance{}
	seen := map[string]bool{}
	for _, raw := range raws {
		nodes := w.services[raw].nodes
		for _, c := range slices.Sorted(maps.Keys(nodes)) {
			in := nodes[c].in
			if in == nil {
				continue
			}
			if seen[in.ID] {
				w.complain(w.z.base+"/"+raw+"/"+c, fmt.Sprintf("instance left out: another instance of %s has the id %s", label, in.ID), slog.LevelWarn)
				continue
			}
			seen[in.ID] = true
			ins = append(ins, in)
		}
	}
	source.SortInstances(ins)
	return ins, true
}

// complain logs a problem with a znode once, until it changes or goes.
func (w *watcher) complain(path, problem string, level slog.Level) {
	if !w.complaints.Note(path, problem) {
		return
	}
	w.z.log.Log(context.Background(), level, "source/zookeeper: "+problem, "znode", path)
}

// forget drops what is kept about a znode that is gone, and its children.
func (w *watcher) forget(path string) {
	w.complaints.ForgetFunc(func(p string) bool { return p == path || strings.HasPrefix(p, path+"/") })
}

func (w *watcher) children(ctx context.Context, path string) ([]string, error) {
	key := watchKey{path, childWatch}
	if w.armed[key] {
		return call(ctx, w.z.timeout, func() ([]string, error) {
			c, _, err := w.conn.Children(path)
			return c, err
		})
	}
	c, err := call(ctx, w.z.timeout, func() ([]string, error) {
		c, _, _, err := w.conn.ChildrenW(path)
		return c, err
	})
	if err == nil {
		w.armed[key] = true
	}
	return c, err
}

func (w *watcher) exists(ctx context.Context, path string) (bool, error) {
	if w.armed[watchKey{path, existWatch}] {
		return call(ctx, w.z.timeout, func() (bool, error) {
			ok, _, err := w.conn.Exists(path)
			return ok, err
		})
	}
	ok, err := call(ctx, w.z.timeout, func() (bool, error) {
		ok, _, _, err := w.conn.ExistsW(path)
		return ok, err
	})
	if err == nil {
		// The client watches the data of a znode that exists, and the
		// coming of one that does not.
		if ok {
			w.armed[watchKey{path, dataWatch}] = true
		} else {
			w.armed[watchKey{path, existWatch}] = true
		}
	}
	return ok, err
}

type got struct {
	data    []byte
	watched bool
	err     error
}

// getAll reads the data of dir's children, a few at a time, watching those
// not watched yet.
func (w *watcher) getAll(ctx context.Context, dir string, children []string) []got {
	out := make([]got, len(children))
	sem := make(chan struct{}, fetchers)
	var wg sync.WaitGroup
	for i, c := range children {
		path := dir + "/" + c
		watch := !w.armed[watchKey{path, dataWatch}]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			data, err := call(ctx, w.z.timeout, func() ([]byte, error) {
				if watch {
					d, _, _, err := w.conn.GetW(path)
					return d, err
				}
				d, _, err := w.conn.Get(path)
				return d, err
			})
			out[i] = got{data, watch, err}
		}()
	}
	wg.Wait()
	return out
}

// errTimeout is returned for a request ZooKeeper did not answer in time.
var errTimeout = errors.New("no answer in time")

// call bounds one request to the client, which takes no context: past
// timeout or ctx, the request is left to finish (the client always answers
// it, at the latest when the connection drops) and its answer dropped.
func call[T any](ctx context.Context, timeout time.Duration, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.v, r.err
	case <-t.C:
		var zero T
		return zero, fmt.Errorf("%w (%s)", errTimeout, timeout)
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// queue holds the client's events for Run's goroutine. The client calls
// push from its own goroutines and must not be held up, so the queue has
// no bound; it holds only what arrived since Run last looked.
type queue struct {
	mu   sync.Mutex
	evs  []zk.Event
	wake chan struct{} // capacity 1: something is queued
}

func (q *queue) push(ev zk.Event) {
	q.mu.Lock()
	q.evs = append(q.evs, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) take() []zk.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.evs
	q.evs = nil
	return evs
}

// zkLogger sends the client's own logs (every connection attempt, every
// dropped connection) to debug: the source logs what matters itself.
type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Debug("source/zookeeper: client: " + fmt.Sprintf(format, args...))
}
