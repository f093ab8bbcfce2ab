package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discotech/disco/catalog"
)

// pending is a request running in its own goroutine.
type pending struct {
	rec    *httptest.ResponseRecorder
	done   chan struct{}
	cancel context.CancelFunc
	at     time.Time // when it returned
}

func async(s *Server, method, path string) *pending {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pending{rec: httptest.NewRecorder(), done: make(chan struct{}), cancel: cancel}
	req := httptest.NewRequestWithContext(ctx, method, path, nil)
	go func() {
		s.Handler().ServeHTTP(p.rec, req)
		p.at = time.Now()
		close(p.done)
	}()
	return p
}

func (p *pending) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func TestBlockingQueryWakesOnlyForItsService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80}`)
		idx := call(s, "GET", "/v1/services/web", "").Header().Get("X-Disco-Index")

		q := async(s, "GET", "/v1/services/web?index="+idx+"&wait=1m")
		synctest.Wait()
		if q.finished() {
			t.Fatal("blocking query returned before any change")
		}
		mustCall(t, s, 200, "PUT", "/v1/services/db/instances/d1", `{"address":"10.0.0.2","port":5432}`)
		synctest.Wait()
		if q.finished() {
			t.Fatal("a change to db woke a blocking query on web")
		}
		time.Sleep(10 * time.Second)
		changed := time.Now()
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w2", `{"address":"10.0.0.3","port":80}`)
		synctest.Wait()
		if !q.finished() {
			t.Fatal("a change to web did not wake the blocking query on web")
		}
		// Virtual time stands still while goroutines run, so this says the
		// query answered with no timer in the way: well within 100ms.
		if d := q.at.Sub(changed); d != 0 {
			t.Errorf("blocking query returned %s after the change, want at once", d)
		}
		var got serviceResponse
		json.Unmarshal(q.rec.Body.Bytes(), &got)
		if len(got.Instances) != 2 || fmt.Sprint(got.Index) == idx {
			t.Errorf("woken query answered index %d with %d instances; want a new index, 2 instances", got.Index, len(got.Instances))
		}
	})
}

func TestBlockingQueryTimesOutWithJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80}`)
		idx := call(s, "GET", "/v1/services/web", "").Header().Get("X-Disco-Index")
		began := time.Now()
		q := async(s, "GET", "/v1/services/web?index="+idx+"&wait=16s")
		time.Sleep(16*time.Second - time.Nanosecond)
		synctest.Wait()
		if q.finished() {
			t.Fatal("returned before wait")
		}
		time.Sleep(time.Second + 2*time.Nanosecond) // jitter is at most wait/16
		synctest.Wait()
		if !q.finished() {
			t.Fatalf("still blocked after wait + wait/16")
		}
		if q.rec.Header().Get("X-Disco-Index") != idx {
			t.Errorf("timed-out query answered index %s, want the unchanged %s", q.rec.Header().Get("X-Disco-Index"), idx)
		}
		if d := q.at.Sub(began); d < 16*time.Second || d > 17*time.Second {
			t.Errorf("waited %s, want 16s plus at most 1s of jitter", d)
		}
		// wait is capped at 10m.
		q = async(s, "GET", "/v1/services/web?index="+idx+"&wait=1h")
		began = time.Now()
		time.Sleep(10*time.Minute + 10*time.Minute/16 + time.Nanosecond)
		synctest.Wait()
		if !q.finished() {
			t.Errorf("wait=1h still blocked after the 10m cap plus jitter")
		}
	})
}

func TestBlockingServicesList(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		idx := call(s, "GET", "/v1/services", "").Header().Get("X-Disco-Index")
		q := async(s, "GET", "/v1/services?index="+idx)
		synctest.Wait()
		if q.finished() {
			t.Fatal("returned before a change")
		}
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80}`)
		synctest.Wait()
		if !q.finished() {
			t.Fatal("a new service did not wake the catalog watcher")
		}
	})
}

// streamWriter is a ResponseWriter that a test can read while the handler
// still writes, line by line.
type streamWriter struct {
	mu     sync.Mutex
	header http.Header
	buf    bytes.Buffer
	read   int
}

func (w *streamWriter) Header() http.Header { return w.header }
func (w *streamWriter) WriteHeader(int)     {}
func (w *streamWriter) Flush()              {}
func (w *streamWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

// next returns the complete lines written since the last call, with their
// JSON decoded, dropping the instances' bulk for compact comparisons.
func (w *streamWriter) next(t *testing.T) []string {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	data := w.buf.Bytes()[w.read:]
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return nil
	}
	w.read += end + 1
	var out []string
	for _, line := range strings.Split(string(data[:end]), "\n") {
		var e catalog.WatchEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("stream line %q: %v", line, err)
		}
		out = append(out, summarize(e))
	}
	return out
}

func summarize(e catalog.WatchEvent) string {
	s := fmt.Sprintf("%s %d", e.Type, e.Index)
	switch e.Type {
	case catalog.WatchSnapshot:
		var ids []string
		for _, in := range e.Instances {
			ids = append(ids, in.ID)
		}
		s += fmt.Sprintf(" %s [%s]", e.Service, strings.Join(ids, " "))
	case catalog.WatchPut:
		s += fmt.Sprintf(" %s/%s %s", e.Service, e.ID, e.Instance.Status)
	case catalog.WatchDelete:
		s += fmt.Sprintf(" %s/%s", e.Service, e.ID)
	}
	return s
}

// watch opens a watch stream in its own goroutine.
func watch(s *Server, query string) (*streamWriter, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &streamWriter{header: http.Header{}}
	done := make(chan struct{})
	req := httptest.NewRequestWithContext(ctx, "GET", "/v1/watch?"+query, nil)
	go func() {
		s.Handler().ServeHTTP(w, req)
		close(done)
	}()
	return w, func() { cancel(); <-done }
}

func reg(t *testing.T, s *Server, service, id string, port int) {
	t.Helper()
	mustCall(t, s, 200, "PUT", "/v1/services/"+service+"/instances/"+id, fmt.Sprintf(`{"address":"10.0.0.1","port":%d}`, port))
}

func TestWatchSnapshotThenLiveChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		reg(t, s, "web", "w1", 80) // index 3
		reg(t, s, "db", "d1", 5432)
		w, stop := watch(s, "service=web")
		defer stop()
		synctest.Wait()
		want := []string{"snapshot 3 web [w1]", "synced 3"}
		if diff := cmp.Diff(want, w.next(t)); diff != "" {
			t.Fatalf("opening (-want +got):\n%s", diff)
		}
		reg(t, s, "db", "d2", 5432) // another service: nothing on this stream
		reg(t, s, "web", "w2", 80)
		mustCall(t, s, 200, "DELETE", "/v1/services/web/instances/w1", "")
		synctest.Wait()
		want = []string{"put 6 web/w2 passing", "delete 7 web/w1"}
		if diff := cmp.Diff(want, w.next(t)); diff != "" {
			t.Fatalf("live changes (-want +got):\n%s", diff)
		}
		// Idle streams get progress lines.
		time.Sleep(s.cfg.WatchProgress)
		synctest.Wait()
		if diff := cmp.Diff([]string{"progress 7"}, w.next(t)); diff != "" {
			t.Errorf("idle stream (-want +got):\n%s", diff)
		}
	})
}

func TestWatchAllServicesResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		reg(t, s, "web", "w1", 80) // 3
		reg(t, s, "db", "d1", 5432)
		reg(t, s, "web", "w1", 81) // 5
		mustCall(t, s, 200, "DELETE", "/v1/services/db/instances/d1", "")
		w, stop := watch(s, "from=3")
		defer stop()
		synctest.Wait()
		want := []string{"put 4 db/d1 passing", "put 5 web/w1 passing", "delete 6 db/d1", "synced 6"}
		if diff := cmp.Diff(want, w.next(t)); diff != "" {
			t.Errorf("resume from 3 (-want +got):\n%s", diff)
		}
	})
}

func TestWatchTooFarBehindResyncs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		// Overflow web's event history (128) so index 3 can no longer be
		// replayed for it.
		for i := range 130 {
			reg(t, s, "web", "w1", 1000+i)
		}
		w, stop := watch(s, "service=web&from=3")
		defer stop()
		synctest.Wait()
		got := w.next(t)
		want := []string{"resync 132", "snapshot 132 web [w1]", "synced 132"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("too far behind (-want +got):\n%s", diff)
		}
	})
}

func TestWatchAheadOfRegistryResyncs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		reg(t, s, "web", "w1", 80)
		// A client that saw index 900 of a registry whose data was since
		// wiped must not be told "nothing changed".
		w, stop := watch(s, "service=web&from=900")
		defer stop()
		synctest.Wait()
		want := []string{"resync 3", "snapshot 3 web [w1]", "synced 3"}
		if diff := cmp.Diff(want, w.next(t)); diff != "" {
			t.Errorf("ahead (-want +got):\n%s", diff)
		}
	})
}

func TestWatchUnknownServiceThenCreated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		w, stop := watch(s, "service=web")
		defer stop()
		synctest.Wait()
		if diff := cmp.Diff([]string{"snapshot 1 web []", "synced 1"}, w.next(t)); diff != "" {
			t.Errorf("opening on an unknown service (-want +got):\n%s", diff)
		}
		reg(t, s, "db", "d1", 5432)
		synctest.Wait()
		if got := w.next(t); len(got) != 0 {
			t.Errorf("another service's change reached the stream: %v", got)
		}
		reg(t, s, "web", "w1", 80)
		synctest.Wait()
		if diff := cmp.Diff([]string{"put 4 web/w1 passing"}, w.next(t)); diff != "" {
			t.Errorf("creation (-want +got):\n%s", diff)
		}
	})
}
