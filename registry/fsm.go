package registry

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discotech/disco/catalog"
)

// op names a kind of log entry.
type op string

const (
	opRegister   op = "register"
	opDeregister op = "deregister"
	opStatus     op = "status"
)

// command is one raft log entry. Time is the leader's clock when the write
// was proposed, so every replica records the same StatusSince.
type command struct {
	Op       op                `json:"op"`
	Time     time.Time         `json:"time"`
	Instance *catalog.Instance `json:"instance,omitempty"`
	Remove   []Removal         `json:"remove,omitempty"`
	Status   []StatusChange    `json:"status,omitempty"`
}

// result is what applying one command returns through raft's ApplyFuture:
// the index the write produced (0 when it changed nothing) or why it failed.
type result struct {
	Index uint64
	Err   error
}

// fsm is the raft state machine over a State. It implements raft.BatchingFSM
// so a batch of committed entries is applied under one lock and wakes each
// watcher once.
type fsm struct {
	state *State
	// onApplied, when set, is told the last applied index after every batch.
	onApplied func(uint64)
}

var _ raft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	// Decode outside the lock: it is the slow part.
	cmds := make([]*command, len(logs))
	out := make([]any, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		var c command
		if err := json.Unmarshal(l.Data, &c); err != nil {
			// A corrupt entry cannot be fixed by retrying; skip it loudly
			// rather than wedge every replica on it.
			out[i] = result{Err: fmt.Errorf("registry: decode log entry %d: %w", l.Index, err)}
			continue
		}
		cmds[i] = &c
	}
	f.state.begin()
	for i, c := range cmds {
		if c == nil {
			if out[i] == nil {
				out[i] = result{}
			}
			continue
		}
		out[i] = f.apply(logs[i].Index, c)
	}
	last := logs[len(logs)-1].Index
	f.state.commit(last)
	if f.onApplied != nil {
		f.onApplied(last)
	}
	return out
}

func (f *fsm) apply(index uint64, c *command) result {
	var r result
	switch c.Op {
	case opRegister:
		if c.Instance == nil {
			r.Err = fmt.Errorf("registry: register entry %d has no instance", index)
			break
		}
		r.Index, r.Err = f.state.applyRegister(index, c.Instance, c.Time)
	case opDeregister:
		r.Index, r.Err = f.state.applyDeregister(index, c.Remove)
	case opStatus:
		r.Index, r.Err = f.state.applyStatus(index, c.Status, c.Time)
	default:
		r.Err = fmt.Errorf("registry: log entry %d has unknown op %q", index, c.Op)
	}
	return r
}

// snapshotHeader is the first line of a snapshot; one JSON instance per line
// follows.
type snapshotHeader struct {
	Version   int    `json:"version"`
	Index     uint64 `json:"index"`
	Instances int    `json:"instances"`
}

const snapshotVersion = 1

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s := f.state
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Instances are immutable, so the pointers are a consistent snapshot
	// that Persist can write without holding the lock.
	return &fsmSnapshot{index: s.applied, instances: s.allInstancesLocked()}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	dec := json.NewDecoder(bufio.NewReaderSize(rc, 1<<16))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		return fmt.Errorf("registry: read snapshot header: %w", err)
	}
	if h.Version != snapshotVersion {
		return fmt.Errorf("registry: snapshot version %d is not supported (want %d)", h.Version, snapshotVersion)
	}
	instances := make([]*catalog.Instance, 0, h.Instances)
	for range h.Instances {
		in := new(catalog.Instance)
		if err := dec.Decode(in); err != nil {
			return fmt.Errorf("registry: read snapshot instance %d of %d: %w", len(instances)+1, h.Instances, err)
		}
		instances = append(instances, in)
	}
	f.state.restore(h.Index, instances)
	if f.onApplied != nil {
		f.onApplied(h.Index)
	}
	return nil
}

type fsmSnapshot struct {
	index     uint64
	instances []*catalog.Instance
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 1<<16)
	enc := json.NewEncoder(w)
	err := enc.Encode(snapshotHeader{Version: snapshotVersion, Index: s.index, Instances: len(s.instances)})
	for _, in := range s.instances {
		if err != nil {
			break
		}
		v := *in
		v.Vitals = nil // leader-memory figures are not state
		err = enc.Encode(&v)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("registry: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
