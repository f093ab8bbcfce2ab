package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/discotech/disco/catalog"
)

// Follower keeps up with a registry's services on one watch stream: it
// turns the stream's snapshots, puts and deletes into whole sets of
// instances per service, resumes the stream where it broke, and starts over
// from a snapshot when the registry says it must (a resync). While the
// registry cannot be reached, what it said last stands: Failed is told, and
// nothing is removed.
type Follower struct {
	Client *Client
	// Service is the service followed; "" for every service.
	Service string
	// Idle is how long the stream may stay silent (the registry sends a
	// progress line every few seconds) before it is taken for dead and
	// reconnected; default 30s.
	Idle time.Duration

	// Full receives every service after each (re)synchronisation: the
	// registry's whole state, replacing what was known.
	Full func(services map[string][]*catalog.Instance)
	// Changed receives one service's whole set after a change; an empty
	// set means the service has no instances left.
	Changed func(service string, instances []*catalog.Instance)
	// Failed is told each time the stream breaks, and Recovered when it
	// works again. Either may be nil.
	Failed    func(err error)
	Recovered func(index uint64)
}

// Run follows the registry until ctx is done.
func (f *Follower) Run(ctx context.Context) error {
	idle := f.Idle
	if idle <= 0 {
		idle = 30 * time.Second
	}
	st := &followState{f: f, services: map[string]map[string]*catalog.Instance{}}
	var cursor uint64
	backoff := time.Duration(0)
	failing := false
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		var silent atomic.Bool
		watchdog := time.AfterFunc(idle, func() { silent.Store(true); cancel() })
		next, err := f.Client.Watch(wctx, f.Service, cursor, func(e catalog.WatchEvent) error {
			watchdog.Reset(idle)
			if failing {
				failing = false
				if f.Recovered != nil {
					f.Recovered(e.Index)
				}
			}
			backoff = 0
			return st.apply(e)
		})
		watchdog.Stop()
		cancel()
		cursor = next
		if ctx.Err() != nil {
			break
		}
		if silent.Load() {
			err = fmt.Errorf("no word from the registry for %s: %w", idle, err)
		}
		failing = true
		if f.Failed != nil {
			f.Failed(err)
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
		t := time.NewTimer(backoff*4/5 + rand.N(backoff*2/5+1))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}

// followState is what the stream has said so far.
type followState struct {
	f        *Follower
	services map[string]map[string]*catalog.Instance
	snapshot map[string]map[string]*catalog.Instance // being received, until synced
}

func (st *followState) apply(e catalog.WatchEvent) error {
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
			all := map[string][]*catalog.Instance{}
			for svc := range st.services {
				all[svc] = st.list(svc)
			}
			if st.f.Full != nil {
				st.f.Full(all)
			}
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
		if st.f.Changed != nil {
			st.f.Changed(e.Service, st.list(e.Service))
		}
		if len(set) == 0 {
			delete(st.services, e.Service)
		}
	}
	return nil
}

// list is one service's instances, sorted by id.
func (st *followState) list(svc string) []*catalog.Instance {
	out := make([]*catalog.Instance, 0, len(st.services[svc]))
	for _, in := range st.services[svc] {
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b *catalog.Instance) int { return strings.Compare(a.ID, b.ID) })
	return out
}
