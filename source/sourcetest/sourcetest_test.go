package sourcetest

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

func web(id, addr string) *catalog.Instance {
	return &catalog.Instance{Service: "web", ID: id, Address: addr, Port: 80, Status: catalog.Passing, Weight: catalog.DefaultWeight}
}

func TestRecorder(t *testing.T) {
	r := NewRecorder()
	w1 := web("w1", "10.0.1.5")
	w1.Tags, w1.Meta = []string{"v1", "canary"}, map[string]string{"zone": "b", "az": "1"}
	r.Update(source.Update{Services: map[string][]*catalog.Instance{"web": {w1}, "db": {}}, Full: true})
	r.Fail(errors.New("one"))
	r.Update(source.Update{Services: map[string][]*catalog.Instance{"web": {web("w2", "10.0.1.6")}}})
	r.Fail(errors.New("two"))
	r.Update(source.Update{Services: map[string][]*catalog.Instance{"api": {}}})

	// Lines in any order, blank lines left out.
	r.WaitState(t, "\nweb/w2 10.0.1.6:80 passing weight=100\napi: none\n\ndb: none\n", time.Second)
	if got, want := Render(r.Updates()[0].Services), "db: none\nweb/w1 10.0.1.5:80 passing weight=100 tags=v1,canary meta az=1,zone=b"; got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
	if u, f := r.Counts(); u != 3 || f != 2 || len(r.Reports()) != 5 || r.Reports()[1].Failure.Error() != "one" || fmt.Sprint(r.Failures()) != "[one two]" || r.LastFailure().Error() != "two" {
		t.Errorf("Counts = %d, %d; Reports = %+v", u, f, r.Reports())
	}
	for n, want := range []int{3, 2, 1, 0} {
		if got := len(r.UpdatesAfterFailure(n)); got != want {
			t.Errorf("UpdatesAfterFailure(%d): %d updates, want %d", n, got, want)
		}
	}
	if u := r.WaitUpdates(t, 2, time.Second); u.Services["web"][0].ID != "w2" {
		t.Errorf("WaitUpdates(2) = %+v", u)
	}
	if err := r.WaitFailures(t, 1, time.Second); err.Error() != "one" {
		t.Errorf("WaitFailures(1) = %v", err)
	}
	if r.Wait(50*time.Millisecond, func(r *Recorder) bool { u, _ := r.Counts(); return u > 3 }) {
		t.Error("Wait held for a fourth update that never came")
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		r.Update(source.Update{Services: map[string][]*catalog.Instance{"api": {web("a1", "10.0.2.1")}}})
	}()
	if !r.Wait(5*time.Second, func(r *Recorder) bool { u, _ := r.Counts(); return u > 3 }) {
		t.Error("Wait missed the fourth update")
	}

	log := r.Logger(slog.LevelInfo)
	log.Debug("hidden", "key", "/a")
	log.Info("key left out", "key", "/a")
	log.Warn("key left out", "key", "/b")
	if n := r.CountLog("key left out"); n != 2 {
		t.Errorf("CountLog = %d, want 2; log:\n%s", n, r.Log())
	}
	if n := r.CountLog("key left out", "key=/a"); n != 1 {
		t.Errorf("CountLog with a key = %d, want 1; log:\n%s", n, r.Log())
	}
}
