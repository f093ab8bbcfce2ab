// Package disco is the source that follows Discotech's own registry through
// its watch stream (GET /v1/watch, every service on one connection),
// resuming from the last index it saw after a break, so a reconnect costs a
// replay of what was missed rather than a full listing.
//
// Spec: disco+http://127.0.0.1:7700 (or disco+https://...). It is the
// agent's default source.
package disco

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/source"
)

func init() {
	source.Register("disco+http", New)
	source.Register("disco+https", New)
}

// Disco follows one registry server.
type Disco struct {
	c    *client.Client
	log  *slog.Logger
	idle time.Duration
}

// New makes the source for spec disco+http://HOST:PORT.
func New(spec *url.URL, opts source.Options) (source.Source, error) {
	if spec.Host == "" {
		return nil, source.Specf(spec, "want disco+http://HOST:PORT, the registry's API address")
	}
	if spec.Path != "" && spec.Path != "/" {
		return nil, source.Specf(spec, "a registry source follows every service; drop the path %q", spec.Path)
	}
	base := strings.TrimPrefix(spec.Scheme, "disco+") + "://" + spec.Host
	c, err := client.New(base, nil)
	if err != nil {
		return nil, source.Specf(spec, "%v", err)
	}
	// The server sends a progress line every 10s on an idle stream; three
	// missed in a row mean the connection is dead even if TCP has not
	// noticed.
	idle := max(3*opts.Timeout, 30*time.Second)
	return &Disco{c: c, log: opts.Logger.With("source", spec.Redacted()), idle: idle}, nil
}

// Run follows the registry until ctx is done.
func (d *Disco) Run(ctx context.Context, sink source.Sink) error {
	st := &stream{sink: sink, services: map[string]map[string]*catalog.Instance{}}
	var cursor uint64
	var bo source.Backoff
	failing := false
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		var silent atomic.Bool
		watchdog := time.AfterFunc(d.idle, func() { silent.Store(true); cancel() })
		next, err := d.c.Watch(wctx, "", cursor, func(e catalog.WatchEvent) error {
			watchdog.Reset(d.idle)
			if failing {
				failing = false
				d.log.Info("source/disco: watching again", "index", e.Index)
			}
			bo.Reset()
			return st.apply(e)
		})
		watchdog.Stop()
		cancel()
		cursor = next
		if ctx.Err() != nil {
			break
		}
		if silent.Load() {
			err = fmt.Errorf("no word from the registry for %s: %w", d.idle, err)
		}
		err = fmt.Errorf("source/disco: %w", err)
		if !failing {
			d.log.Warn("source/disco: watch broke; keeping what it said last and reconnecting", "err", err, "resume_from", cursor)
		}
		failing = true
		sink.Fail(err)
		if !source.Sleep(ctx, bo.Next()) {
			break
		}
	}
	return nil
}

// stream turns watch events into updates: whole sets per service.
type stream struct {
	sink     source.Sink
	services map[string]map[string]*catalog.Instance
	// snapshot collects a snapshot until synced ends it; nil outside one.
	snapshot map[string]map[string]*catalog.Instance
	mu       sync.Mutex
}

func (st *stream) apply(e catalog.WatchEvent) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch e.Type {
	case catalog.WatchResync:
		st.snapshot = map[string]map[string]*catalog.Instance{}
	case catalog.WatchSnapshot:
		if st.snapshot == nil {
			st.snapshot = map[string]map[string]*catalog.Instance{}
		}
		set := map[string]*catalog.Instance{}
		for _, in := range e.Instances {
			set[in.ID] = in
		}
		st.snapshot[e.Service] = set
	case catalog.WatchSynced:
		if st.snapshot != nil {
			st.services, st.snapshot = st.snapshot, nil
			u := source.Update{Services: map[string][]*catalog.Instance{}, Full: true}
			for svc := range st.services {
				u.Services[svc] = st.list(svc)
			}
			st.sink.Update(u)
		}
	case catalog.WatchPut, catalog.WatchDelete:
		if e.Service == "" || e.ID == "" || (e.Type == catalog.WatchPut && e.Instance == nil) {
			return errors.New("a watch event without its service, id or instance")
		}
		set := st.services[e.Service]
		if set == nil {
			set = map[string]*catalog.Instance{}
			st.services[e.Service] = set
		}
		if e.Type == catalog.WatchPut {
			set[e.ID] = e.Instance
		} else {
			delete(set, e.ID)
		}
		st.sink.Update(source.Update{Services: map[string][]*catalog.Instance{e.Service: st.list(e.Service)}})
		if len(set) == 0 {
			delete(st.services, e.Service)
		}
	}
	return nil
}

func (st *stream) list(svc string) []*catalog.Instance {
	out := make([]*catalog.Instance, 0, len(st.services[svc]))
	for _, in := range st.services[svc] {
		out = append(out, in)
	}
	source.SortInstances(out)
	return out
}
