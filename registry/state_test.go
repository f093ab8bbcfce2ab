package registry

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"

	"github.com/discotech/disco/catalog"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func inst(service, id string, port int) *catalog.Instance {
	return &catalog.Instance{Service: service, ID: id, Address: "10.0.0.1", Port: port, Weight: 100}
}

// apply runs one batch of writes against s the way the FSM does.
func apply(s *State, index uint64, f func()) {
	s.begin()
	f()
	s.commit(index)
}

func register(t *testing.T, s *State, index uint64, in *catalog.Instance) {
	t.Helper()
	apply(s, index, func() {
		if _, err := s.applyRegister(index, in, t0); err != nil {
			t.Fatal(err)
		}
	})
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestRingKeepsOrderAndFloor(t *testing.T) {
	r := newRing(4, 0)
	for i := uint64(1); i <= 6; i++ {
		r.push(Event{Index: i})
	}
	got, ok := r.since(2, nil)
	if !ok {
		t.Fatal("since(2) not replayable; floor is", r.floor)
	}
	var idx []uint64
	for _, e := range got {
		idx = append(idx, e.Index)
	}
	if diff := cmp.Diff([]uint64{3, 4, 5, 6}, idx); diff != "" {
		t.Errorf("since(2) (-want +got):\n%s", diff)
	}
	if _, ok := r.since(1, nil); ok {
		t.Error("since(1) replayable although event 2 was dropped")
	}
	// Events sharing an index are dropped as a group as far as the floor is
	// concerned: a cursor at that index already saw all of them.
	r = newRing(2, 0)
	r.push(Event{Index: 7, ID: "a"})
	r.push(Event{Index: 7, ID: "b"})
	r.push(Event{Index: 8, ID: "c"})
	if _, ok := r.since(6, nil); ok {
		t.Error("since(6) replayable although part of index 7 was dropped")
	}
	if got, ok := r.since(7, nil); !ok || len(got) != 1 || got[0].ID != "c" {
		t.Errorf("since(7) = %v, %v; want [c], true", got, ok)
	}
}

func TestWatchWakesOnlyItsService(t *testing.T) {
	s := NewState(0, 0)
	register(t, s, 10, inst("web", "w1", 80))
	register(t, s, 11, inst("db", "d1", 5432))

	webIdx, webCh := s.Watch("web")
	dbIdx, dbCh := s.Watch("db")
	allIdx, allCh := s.Watch("")
	if webIdx != 10 || dbIdx != 11 || allIdx != 11 {
		t.Fatalf("indexes web=%d db=%d all=%d; want 10, 11, 11", webIdx, dbIdx, allIdx)
	}
	register(t, s, 12, inst("db", "d2", 5432))
	if closed(webCh) {
		t.Error("a change to db woke the watcher of web")
	}
	if !closed(dbCh) || !closed(allCh) {
		t.Error("a change to db did not wake db's and the catalog's watchers")
	}
	if idx, _ := s.Watch("web"); idx != 10 {
		t.Errorf("web index moved to %d on a db change", idx)
	}
}

func TestUnknownServiceIndexAndWake(t *testing.T) {
	s := NewState(0, 0)
	register(t, s, 5, inst("db", "d1", 5432))
	idx, ch := s.Watch("web")
	if idx != 1 {
		t.Errorf("unknown service index = %d, want 1", idx)
	}
	register(t, s, 6, inst("web", "w1", 80))
	if !closed(ch) {
		t.Error("creating web did not wake its watcher")
	}
	if idx, _ := s.Watch("web"); idx != 6 {
		t.Errorf("web index = %d after creation, want 6", idx)
	}
}

func TestRegisterIdenticalIsNoop(t *testing.T) {
	s := NewState(0, 0)
	register(t, s, 3, inst("web", "w1", 80))
	_, ch := s.Watch("web")
	var idx uint64
	apply(s, 4, func() { idx, _ = s.applyRegister(4, inst("web", "w1", 80), t0) })
	if idx != 3 || closed(ch) {
		t.Errorf("re-registering the same instance returned index %d and woke watchers=%v; want 3, false", idx, closed(ch))
	}
	apply(s, 5, func() { idx, _ = s.applyRegister(5, inst("web", "w1", 81), t0) })
	if idx != 5 || !closed(ch) {
		t.Errorf("changing the port returned index %d, woke=%v; want 5, true", idx, closed(ch))
	}
}

func TestStatusAndReapConditions(t *testing.T) {
	s := NewState(0, 0)
	register(t, s, 1, inst("web", "w1", 80))
	in, _ := s.Instance("web", "w1")
	if in.Status != catalog.Passing || in.CreateIndex != 1 {
		t.Fatalf("new instance status %s create %d; want passing, 1", in.Status, in.CreateIndex)
	}
	later := t0.Add(time.Minute)
	apply(s, 2, func() {
		s.applyStatus(2, []StatusChange{{Service: "web", ID: "w1", Status: catalog.Critical, Output: "down"}}, later)
	})
	in, _ = s.Instance("web", "w1")
	if in.Status != catalog.Critical || !in.StatusSince.Equal(later) || in.ModifyIndex != 2 || in.CreateIndex != 1 {
		t.Fatalf("after status write: %+v", in)
	}
	// Same status again: no change, no index.
	var idx uint64
	apply(s, 3, func() {
		idx, _ = s.applyStatus(3, []StatusChange{{Service: "web", ID: "w1", Status: catalog.Critical}}, later)
	})
	if idx != 0 {
		t.Errorf("writing the same status returned index %d, want 0", idx)
	}
	// The reaper's guard: a removal decided for another critical period is
	// skipped.
	var err error
	apply(s, 4, func() {
		_, err = s.applyDeregister(4, []Removal{{Service: "web", ID: "w1", IfCriticalSince: t0}})
	})
	if err != ErrConflict {
		t.Errorf("stale reap: err = %v, want ErrConflict", err)
	}
	apply(s, 5, func() {
		idx, err = s.applyDeregister(5, []Removal{{Service: "web", ID: "w1", IfCriticalSince: later}})
	})
	if err != nil || idx != 5 {
		t.Errorf("reap: idx %d err %v; want 5, nil", idx, err)
	}
	if _, ok := s.Instance("web", "w1"); ok {
		t.Error("reaped instance still there")
	}
	// The empty service stays as a tombstone whose index keeps growing.
	if _, idx := s.Instances("web"); idx != 5 {
		t.Errorf("tombstone index = %d, want 5", idx)
	}
	if svcs, _ := s.Services(); len(svcs) != 0 {
		t.Errorf("empty service listed: %v", svcs)
	}
}

func TestChangesReplayAndResync(t *testing.T) {
	s := NewState(2, 4)
	for i := uint64(1); i <= 3; i++ {
		register(t, s, i, inst("web", "w1", int(8000+i)))
	}
	events, idx, _, ok := s.Changes("web", 1, nil)
	if !ok || idx != 3 || len(events) != 2 {
		t.Fatalf("Changes(web, 1) = %d events, idx %d, ok %v; want 2, 3, true", len(events), idx, ok)
	}
	register(t, s, 4, inst("web", "w1", 9000))
	if _, _, _, ok := s.Changes("web", 1, nil); ok {
		t.Error("Changes(web, 1) replayable after its history of 2 dropped index 2")
	}
	if _, _, _, ok := s.Changes("web", 99, nil); ok {
		t.Error("a cursor ahead of the registry must resync")
	}
	// The global history is larger: the all-services watcher can replay.
	if events, _, _, ok := s.Changes("", 1, nil); !ok || len(events) != 3 {
		t.Errorf("Changes(all, 1) = %d events, ok %v; want 3, true", len(events), ok)
	}
}

func TestObserverSeesEverythingInOrder(t *testing.T) {
	s := NewState(0, 0)
	register(t, s, 1, inst("web", "w1", 80))
	o := &recordingObserver{}
	s.SetObserver(o)
	register(t, s, 2, inst("web", "w2", 80))
	apply(s, 3, func() { s.applyDeregister(3, []Removal{{Service: "web", ID: "w1"}}) })
	want := []string{"reload web/w1", "put web/w2 prev=false", "delete web/w1"}
	if diff := cmp.Diff(want, o.log); diff != "" {
		t.Errorf("observer (-want +got):\n%s", diff)
	}
}

type recordingObserver struct{ log []string }

func (o *recordingObserver) Reload(all []*catalog.Instance) {
	for _, in := range all {
		o.log = append(o.log, "reload "+in.Key())
	}
}

func (o *recordingObserver) Apply(events []Event) {
	for _, e := range events {
		line := string(e.Type) + " " + e.Service + "/" + e.ID
		if e.Type == Put {
			line += " prev=" + map[bool]string{true: "true", false: "false"}[e.Prev != nil]
		}
		o.log = append(o.log, line)
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	f := &fsm{state: NewState(0, 0)}
	checked := inst("web", "w2", 81)
	checked.Check = &catalog.Check{Type: "tcp", Target: "10.0.0.1:81", Interval: catalog.Duration(time.Second), Timeout: catalog.Duration(time.Second), Failures: 3, Successes: 1}
	register(t, f.state, 1, inst("web", "w1", 80))
	register(t, f.state, 2, checked)
	register(t, f.state, 3, inst("db", "d1", 5432))
	_, oldCh := f.state.Watch("web")

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := &fsm{state: NewState(0, 0)}
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	wantSvcs, _ := f.state.Services()
	gotSvcs, _ := g.state.Services()
	// Every service moves to the restore index.
	for i := range wantSvcs {
		wantSvcs[i].Index = 3
	}
	if diff := cmp.Diff(wantSvcs, gotSvcs); diff != "" {
		t.Errorf("services after restore (-want +got):\n%s", diff)
	}
	wantWeb, _ := f.state.Instances("web")
	gotWeb, _ := g.state.Instances("web")
	if diff := cmp.Diff(wantWeb, gotWeb); diff != "" {
		t.Errorf("web after restore (-want +got):\n%s", diff)
	}
	// Restoring over a live state wakes its watchers, who must resync.
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !closed(oldCh) {
		t.Error("restore did not wake the watchers of the replaced state")
	}
	if _, _, _, ok := f.state.Changes("web", 2, nil); ok {
		t.Error("a cursor from before the restore can be replayed; want resync")
	}
	if _, _, _, ok := f.state.Changes("web", 3, nil); !ok {
		t.Error("a cursor at the restore index must be replayable")
	}
}

func TestApplyBatchSkipsCorruptEntries(t *testing.T) {
	f := &fsm{state: NewState(0, 0)}
	good := []byte(`{"op":"register","instance":{"service":"web","id":"w1","address":"10.0.0.1","port":80,"weight":100}}`)
	out := f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogConfiguration},
		{Index: 2, Type: raft.LogCommand, Data: []byte("{not json")},
		{Index: 3, Type: raft.LogCommand, Data: []byte(`{"op":"explode"}`)},
		{Index: 4, Type: raft.LogCommand, Data: good},
	})
	if r := out[1].(result); r.Err == nil {
		t.Error("corrupt entry applied without error")
	}
	if r := out[2].(result); r.Err == nil {
		t.Error("unknown op applied without error")
	}
	if r := out[3].(result); r.Err != nil || r.Index != 4 {
		t.Errorf("good entry after bad ones: %+v", r)
	}
	if f.state.Applied() != 4 {
		t.Errorf("applied = %d, want 4", f.state.Applied())
	}
}

type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }
