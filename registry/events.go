package registry

import (
	"bytes"
	"encoding/json"
	"sort"
	"sync"

	"github.com/discotech/disco/catalog"
)

// EventType says what happened to an instance.
type EventType string

// The kinds of change the registry records.
const (
	// Put: the instance was registered, replaced or changed status.
	Put EventType = "put"
	// Delete: the instance was deregistered or reaped.
	Delete EventType = "delete"
)

// Event is one change to one instance, at one registry index. Several events
// can share an index when one log entry changed several instances.
type Event struct {
	Type    EventType
	Index   uint64
	Service string
	ID      string
	// Instance is the instance after a Put, or the one removed by a Delete.
	// It is shared and must not be modified.
	Instance *catalog.Instance
	// Prev is the instance a Put replaced; nil for a new instance.
	Prev *catalog.Instance

	// line holds the event's wire encoding, made once however many
	// watchers send it.
	line *line
}

type line struct {
	once sync.Once
	b    []byte
}

func newEvent(t EventType, index uint64, in, prev *catalog.Instance) Event {
	return Event{Type: t, Index: index, Service: in.Service, ID: in.ID, Instance: in, Prev: prev, line: new(line)}
}

// Wire is the event as the watch protocol sends it.
func (e *Event) Wire() catalog.WatchEvent {
	if e.Type == Delete {
		return catalog.WatchEvent{Type: catalog.WatchDelete, Index: e.Index, Service: e.Service, ID: e.ID}
	}
	return catalog.WatchEvent{Type: catalog.WatchPut, Index: e.Index, Service: e.Service, ID: e.ID, Instance: e.Instance}
}

// Line is Wire encoded as one line of JSON, newline included. It is encoded
// on first use and shared: a write seen by a thousand watchers is encoded
// once. The caller must not modify it.
func (e *Event) Line() []byte {
	if e.line == nil {
		return encodeLine(e.Wire())
	}
	e.line.once.Do(func() { e.line.b = encodeLine(e.Wire()) })
	return e.line.b
}

// encodeLine encodes v as the watch stream does: no HTML escaping, one line.
func encodeLine(v catalog.WatchEvent) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&v); err != nil {
		// Every field of a WatchEvent encodes; this is a programming error.
		panic("registry: encoding watch event: " + err.Error())
	}
	return b.Bytes()
}

// ring keeps the most recent events in index order, so a watcher that
// reconnects can be replayed what it missed. floor is the highest index whose
// events may have been dropped: a watcher whose cursor is at or above floor
// can be replayed exactly; one below it must resync.
type ring struct {
	buf   []Event
	start int // position of the oldest event
	n     int
	max   int
	floor uint64
}

func newRing(max int, floor uint64) *ring {
	return &ring{max: max, floor: floor}
}

func (r *ring) push(e Event) {
	if len(r.buf) < r.max && r.n == len(r.buf) {
		// Grow lazily: most services see few changes.
		grown := make([]Event, min(max(2*len(r.buf), 4), r.max))
		for i := 0; i < r.n; i++ {
			grown[i] = r.buf[(r.start+i)%len(r.buf)]
		}
		r.buf, r.start = grown, 0
	}
	if r.n == len(r.buf) {
		old := r.buf[r.start]
		r.floor = max(r.floor, old.Index)
		r.buf[r.start] = e
		r.start = (r.start + 1) % len(r.buf)
		return
	}
	r.buf[(r.start+r.n)%len(r.buf)] = e
	r.n++
}

func (r *ring) at(i int) *Event { return &r.buf[(r.start+i)%len(r.buf)] }

// since appends to dst the events with an index above from. ok is false when
// some of them were dropped.
func (r *ring) since(from uint64, dst []Event) (_ []Event, ok bool) {
	if from < r.floor {
		return dst, false
	}
	i := sort.Search(r.n, func(i int) bool { return r.at(i).Index > from })
	for ; i < r.n; i++ {
		dst = append(dst, *r.at(i))
	}
	return dst, true
}

// reset forgets every event, as after a snapshot restore at index floor.
func (r *ring) reset(floor uint64) {
	clear(r.buf)
	r.start, r.n, r.floor = 0, 0, floor
}
