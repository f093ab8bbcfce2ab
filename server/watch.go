package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/registry"
)

// watchWriteTimeout drops a watcher that cannot take a batch of events in
// this long: it would otherwise hold a goroutine and fall ever further
// behind. It resumes from its last index when it reconnects.
const watchWriteTimeout = 30 * time.Second

// handleWatch streams the changes of one service (or of all when service is
// absent) as newline-delimited JSON; see catalog.WatchEvent for the protocol.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	service := q.Get("service")
	if service != "" {
		if err := catalog.ValidateName("service", service); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	var from uint64
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.writeError(w, r, badRequest("invalid", "from: want the non-negative index to resume after, got %q", v))
			return
		}
		from = n
	}
	s.metrics.watchers.WithLabelValues("stream").Inc()
	defer s.metrics.watchers.WithLabelValues("stream").Dec()

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Disco-Index", strconv.FormatUint(s.store.State().Index(), 10))
	w.WriteHeader(http.StatusOK)
	// net/http already buffers the response; encoding straight into it keeps
	// an idle stream down to what the connection itself costs.
	st := &stream{w: w, rc: http.NewResponseController(w), enc: json.NewEncoder(w)}
	st.enc.SetEscapeHTML(false)
	if err := s.stream(r, st, service, from); err != nil {
		s.log.Debug("watch stream ended", "service", service, "err", err)
	}
}

type stream struct {
	w        io.Writer
	rc       *http.ResponseController
	enc      *json.Encoder
	deadline time.Time // the write deadline last set
}

func (st *stream) send(e catalog.WatchEvent) error { return st.enc.Encode(&e) }

// sendEvent writes a change in the encoding every watcher of it shares.
func (st *stream) sendEvent(e *registry.Event) error {
	_, err := st.w.Write(e.Line())
	return err
}

// armDeadline keeps the write deadline between 20 and 30 seconds away.
// Refreshing it only when a third of it has gone spares a busy stream a
// timer reset on every wake.
func (st *stream) armDeadline(now time.Time) {
	if st.deadline.Sub(now) > watchWriteTimeout*2/3 {
		return
	}
	st.deadline = now.Add(watchWriteTimeout)
	st.rc.SetWriteDeadline(st.deadline)
}

// flush pushes what is buffered to the client.
func (st *stream) flush() error { return st.rc.Flush() }

func (s *Server) stream(r *http.Request, st *stream, service string, from uint64) error {
	state := s.store.State()
	cursor := from
	synced, resynced := false, false
	var events []registry.Event
	progress := time.NewTicker(s.cfg.WatchProgress)
	defer progress.Stop()
	if from == 0 {
		var err error
		if cursor, err = s.sendSnapshot(st, service); err != nil {
			return err
		}
		resynced = true
	}
	for {
		st.armDeadline(time.Now())
		var ch <-chan struct{}
		var ok bool
		prev := cursor
		events, cursor, ch, ok = state.Changes(service, cursor, events[:0])
		if !ok && resynced {
			// A snapshot's own index must always be replayable; if it is
			// not, resyncing again would only spin.
			s.log.Error("watch: snapshot index not replayable; closing stream", "service", service, "index", prev)
			return fmt.Errorf("server: watch cannot resume from its own snapshot at index %d", prev)
		}
		resynced = false
		if !ok {
			reason := fmt.Sprintf("index %d is older than the history this server keeps; start over from the snapshot that follows", prev)
			if prev > state.Index() {
				reason = fmt.Sprintf("index %d is ahead of this registry (index %d): its state was replaced; start over from the snapshot that follows", prev, state.Index())
			}
			if err := st.send(catalog.WatchEvent{Type: catalog.WatchResync, Index: state.Index(), Reason: reason}); err != nil {
				return err
			}
			var err error
			if cursor, err = s.sendSnapshot(st, service); err != nil {
				return err
			}
			synced, resynced = false, true
			continue
		}
		for i := range events {
			if err := st.sendEvent(&events[i]); err != nil {
				return err
			}
		}
		if !synced {
			synced = true
			if err := st.send(catalog.WatchEvent{Type: catalog.WatchSynced, Index: cursor}); err != nil {
				return err
			}
		}
		if err := st.flush(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-progress.C:
			if err := st.send(catalog.WatchEvent{Type: catalog.WatchProgress, Index: cursor}); err != nil {
				return err
			}
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
}

// sendSnapshot writes the current state of service (of every service when
// service is "") and returns the index it is at.
func (s *Server) sendSnapshot(st *stream, service string) (uint64, error) {
	snap, index, _ := s.store.State().Snapshot(service)
	for _, si := range snap {
		e := catalog.WatchEvent{Type: catalog.WatchSnapshot, Index: si.Index, Service: si.Service, Instances: si.Instances}
		if err := st.send(e); err != nil {
			return 0, err
		}
	}
	return index, nil
}
