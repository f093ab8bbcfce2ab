package etcd

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// state is what the source knows of the prefix: every key decoded, grouped
// by service, and what it last reported of each service.
type state struct {
	prefix string
	// services maps a service to its keys. Keys that name no service are
	// kept under "", which is never reported.
	services map[string]map[string]entry
	// where maps each key to the service it is under.
	where map[string]string
	// reported is the last report of each service that has instances.
	reported map[string][]*catalog.Instance
	// drops maps a service to its keys left out, and why.
	drops map[string]map[string]drop
	// fresh are the drops not logged yet.
	fresh []drop
	// logged remembers which value of a key was last logged as left out,
	// and why, so that listing again does not log it again.
	logged source.LogOnce
}

// drop is a key left out.
type drop struct {
	key string
	rev int64 // the value's ModRevision
	err error
}

func newState(prefix string) *state {
	return &state{prefix: prefix, services: map[string]map[string]entry{}, where: map[string]string{}, reported: map[string][]*catalog.Instance{}, drops: map[string]map[string]drop{}}
}

// reset replaces everything with a listing and returns every service that
// has instances.
func (s *state) reset(kvs []*mvccpb.KeyValue) map[string][]*catalog.Instance {
	s.services = map[string]map[string]entry{}
	s.where = map[string]string{}
	for _, kv := range kvs {
		s.put(kv)
	}
	s.drops = map[string]map[string]drop{}
	s.reported = map[string][]*catalog.Instance{}
	for svc := range s.services {
		ins := s.build(svc)
		if svc != "" && len(ins) > 0 {
			s.reported[svc] = ins
		}
	}
	s.forgetGood()
	out := make(map[string][]*catalog.Instance, len(s.reported))
	for svc, ins := range s.reported {
		out[svc] = ins
	}
	return out
}

// apply applies watch events, in order, and returns the services whose
// instances changed (empty for a service left with none).
func (s *state) apply(events []*clientv3.Event) map[string][]*catalog.Instance {
	touched := map[string]bool{}
	for _, ev := range events {
		key := string(ev.Kv.Key)
		if svc, ok := s.remove(key); ok {
			touched[svc] = true
		}
		if ev.Type == clientv3.EventTypePut {
			touched[s.put(ev.Kv)] = true
		}
	}
	changed := map[string][]*catalog.Instance{}
	for svc := range touched {
		ins := s.build(svc)
		if svc == "" || reflect.DeepEqual(ins, s.reported[svc]) {
			continue
		}
		if len(ins) == 0 {
			delete(s.reported, svc)
			changed[svc] = []*catalog.Instance{}
		} else {
			s.reported[svc] = ins
			changed[svc] = ins
		}
	}
	s.forgetGood()
	return changed
}

// put decodes one key and files it under its service, which it returns.
func (s *state) put(kv *mvccpb.KeyValue) string {
	e := decode(s.prefix, string(kv.Key), kv.Value)
	e.rev = kv.ModRevision
	keys := s.services[e.service]
	if keys == nil {
		keys = map[string]entry{}
		s.services[e.service] = keys
	}
	keys[string(kv.Key)] = e
	s.where[string(kv.Key)] = e.service
	return e.service
}

// remove forgets key and returns the service it was under.
func (s *state) remove(key string) (string, bool) {
	svc, ok := s.where[key]
	if !ok {
		return "", false
	}
	delete(s.where, key)
	keys := s.services[svc]
	delete(keys, key)
	if len(keys) == 0 {
		delete(s.services, svc)
	}
	return svc, true
}

// build computes the instances of svc from its keys, in id order, and
// records its keys left out. When two keys make the same id, the first key
// in order keeps it.
func (s *state) build(svc string) []*catalog.Instance {
	keys := s.services[svc]
	var ins []*catalog.Instance
	drops := map[string]drop{}
	owner := map[string]string{} // id → key
	for _, key := range sortedKeys(keys) {
		e := keys[key]
		switch {
		case e.err != nil:
			drops[key] = drop{key: key, rev: e.rev, err: e.err}
		case e.inst == nil: // a tombstone
		case owner[e.inst.ID] != "":
			drops[key] = drop{key: key, rev: e.rev, err: fmt.Errorf("instance id %q is already the one of key %s", e.inst.ID, owner[e.inst.ID])}
		default:
			owner[e.inst.ID] = key
			ins = append(ins, e.inst)
		}
	}
	source.SortInstances(ins)
	if len(drops) == 0 {
		delete(s.drops, svc)
	} else {
		s.drops[svc] = drops
	}
	for _, key := range sortedKeys(drops) {
		d := drops[key]
		if s.logged.Note(key, strconv.FormatInt(d.rev, 10)+" "+d.err.Error()) {
			s.fresh = append(s.fresh, d)
		}
	}
	return ins
}

// forgetGood forgets the logged drops of keys now gone or good, so that a
// key that turns bad again is logged again.
func (s *state) forgetGood() {
	s.logged.ForgetFunc(func(key string) bool {
		_, ok := s.drops[s.where[key]][key]
		return !ok
	})
}

// takeNewDrops returns the drops not returned before.
func (s *state) takeNewDrops() []drop {
	d := s.fresh
	s.fresh = nil
	return d
}

// dropCount returns how many keys are left out now.
func (s *state) dropCount() int {
	n := 0
	for _, d := range s.drops {
		n += len(d)
	}
	return n
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
