package registry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(Config{DataDir: dir, RaftMultiplier: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() || !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("store did not become a ready leader")
		}
		time.Sleep(time.Millisecond)
	}
	return s
}

// TestReopenRestoresSnapshotAndLog writes, snapshots, writes more, closes
// and reopens: the state must come back from the snapshot plus the log tail,
// and the store must say it is not ready until then.
func TestReopenRestoresSnapshotAndLog(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openStore(t, dir)
	for i := range 20 {
		if _, err := s.Register(ctx, inst("web", fmt.Sprintf("w%d", i), 8000+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := s.Register(ctx, inst("db", fmt.Sprintf("d%d", i), 5432)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Deregister(ctx, "web", "w3"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetStatus(ctx, StatusChange{Service: "web", ID: "w4", Status: catalog.Critical, Output: "down"}); err != nil {
		t.Fatal(err)
	}
	wantSvcs, wantIdx := s.State().Services()
	wantW4, _ := s.State().Instance("web", "w4")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	defer s.Close()
	gotSvcs, gotIdx := s.State().Services()
	if fmt.Sprint(gotSvcs) != fmt.Sprint(wantSvcs) || gotIdx != wantIdx {
		t.Errorf("after reopen: %v at %d; want %v at %d", gotSvcs, gotIdx, wantSvcs, wantIdx)
	}
	gotW4, _ := s.State().Instance("web", "w4")
	if gotW4 == nil || gotW4.Status != catalog.Critical || !gotW4.StatusSince.Equal(wantW4.StatusSince) {
		t.Errorf("w4 after reopen: %+v; want critical since %s", gotW4, wantW4.StatusSince)
	}
	if _, ok := s.State().Instance("web", "w3"); ok {
		t.Error("deregistered w3 came back")
	}
}

func TestDataDirIsExclusive(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	_, err := Open(Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "another disco server") {
		t.Fatalf("second Open of a data dir in use: %v; want an error naming the cause", err)
	}
}

func TestNodeIDMismatch(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	s.Close()
	_, err := Open(Config{DataDir: dir, NodeID: "someone-else", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "belongs to node") {
		t.Fatalf("Open with another node id: %v; want a refusal", err)
	}
}

func TestWritesReportNotFound(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Deregister(ctx, "web", "nope"); err != ErrNotFound {
		t.Errorf("deregister unknown: %v, want ErrNotFound", err)
	}
	if _, err := s.SetStatus(ctx, StatusChange{Service: "web", ID: "nope", Status: catalog.Critical}); err != ErrNotFound {
		t.Errorf("status of unknown: %v, want ErrNotFound", err)
	}
	// Reap skips what changed or vanished without failing.
	if idx, err := s.Reap(ctx, []Removal{{Service: "web", ID: "nope", IfCriticalSince: time.Now()}}); err != nil || idx != 0 {
		t.Errorf("reap unknown: %d %v, want 0 nil", idx, err)
	}
}
