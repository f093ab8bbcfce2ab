package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/internal/atomicfile"
	"github.com/discotech/disco/internal/httpjson"
	"github.com/discotech/disco/source"
)

// Announcement is the body of POST /register on the admin port: a backend
// announcing itself to this router, without a registry.
//
// Only id and address are required. Without a service the backend joins
// the service "announced"; without tags it serves the router's catch-all
// route, as if tagged "urlprefix-/". With metrics_port the router polls
// its vitals at http://HOST:METRICS_PORT/metrics.
type Announcement struct {
	ID          string   `json:"id"`
	Address     string   `json:"address"` // HOST:PORT
	MetricsPort int      `json:"metrics_port,omitempty"`
	Service     string   `json:"service,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	Weight      *int     `json:"weight,omitempty"`
}

// Defaults of an announcement.
const (
	AnnouncedService = "announced"
	AnnouncedTag     = "urlprefix-/"
	maxAnnounceBody  = 64 << 10
)

// announcement is an accepted Announcement, as the routes see it.
type announcement struct {
	Announcement
	instance *catalog.Instance
	at       time.Time
}

// instance validates a and turns it into the instance it announces, with
// the registry's rules (a DNS label for the id and the service, a port in
// range, tags and weight within bounds).
func (a *Announcement) instance() (*catalog.Instance, error) {
	host, port, err := net.SplitHostPort(a.Address)
	if err != nil {
		return nil, httpjson.BadRequest("invalid", "address: %q is not HOST:PORT (e.g. \"10.0.1.5:3000\")", a.Address)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, httpjson.BadRequest("invalid", "address: port %q is not a number", port)
	}
	if a.MetricsPort < 0 || a.MetricsPort > 65535 {
		return nil, httpjson.BadRequest("invalid", "metrics_port: must be 1-65535 (or left out for no vitals), got %d", a.MetricsPort)
	}
	service := a.Service
	if service == "" {
		service = AnnouncedService
	}
	tags := a.Tags
	if len(tags) == 0 {
		tags = []string{AnnouncedTag}
	}
	reg := catalog.Registration{Address: host, Port: p, Tags: tags, Weight: a.Weight}
	if a.MetricsPort > 0 {
		reg.Meta = map[string]string{"metrics_port": strconv.Itoa(a.MetricsPort)}
	}
	in, err := reg.Instance(service, a.ID)
	if err != nil {
		return nil, httpjson.BadRequest("invalid", "%v", err)
	}
	in.Status = catalog.Passing
	return in, nil
}

// handleRegister is POST /register.
func (r *Router) handleRegister(w http.ResponseWriter, req *http.Request) {
	var a Announcement
	if err := httpjson.Decode(w, req, maxAnnounceBody, &a); err != nil {
		r.refuse(w, err)
		return
	}
	in, err := a.instance()
	if err != nil {
		r.refuse(w, err)
		return
	}
	r.mu.Lock()
	prev := r.announced[a.ID]
	if prev != nil && prev.instance.Service != in.Service {
		r.mu.Unlock()
		r.refuse(w, &httpjson.Error{Status: http.StatusConflict, Reason: "conflict",
			Msg: fmt.Sprintf("id %q is announced for service %q; DELETE /register/%s first to move it to %q", a.ID, prev.instance.Service, a.ID, in.Service)})
		return
	}
	r.announced[a.ID] = &announcement{Announcement: a, instance: in, at: time.Now()}
	r.applyAnnounced(in.Service)
	r.mu.Unlock()
	r.saveAnnounced()
	status := http.StatusCreated
	if prev != nil {
		status = http.StatusOK
	}
	r.log.Info("router: backend announced", "id", a.ID, "service", in.Service, "address", a.Address)
	writeJSON(w, status, map[string]any{"id": a.ID, "service": in.Service, "address": a.Address, "routes": r.routesOf(in.Service, a.ID)})
}

// handleDeregister is DELETE /register/{id}.
func (r *Router) handleDeregister(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	r.mu.Lock()
	a := r.announced[id]
	if a == nil {
		r.mu.Unlock()
		r.refuse(w, &httpjson.Error{Status: http.StatusNotFound, Reason: "not_found", Msg: fmt.Sprintf("no backend %q is announced here", id)})
		return
	}
	delete(r.announced, id)
	r.applyAnnounced(a.instance.Service)
	r.mu.Unlock()
	r.saveAnnounced()
	r.log.Info("router: backend withdrawn", "id", id, "service", a.instance.Service)
	w.WriteHeader(http.StatusNoContent)
}

// The announced backends are kept in the state dir, so that a restarted
// router serves them at once rather than waiting for each to announce
// itself again (as Consul's agent keeps the services registered with it).
const (
	announcedFile    = "announced.json"
	announcedVersion = 1
)

// announcedState is announcedFile's content.
type announcedState struct {
	Version  int            `json:"version"`
	Backends []Announcement `json:"backends"`
}

// saveAnnounced writes the announced backends to the state dir, if there
// is one. A failure is logged and counted; the announcements stand.
func (r *Router) saveAnnounced() {
	if r.cfg.StateDir == "" {
		return
	}
	// The latest state, written in turn: a later write never loses to an
	// earlier one.
	r.saving.Lock()
	defer r.saving.Unlock()
	r.mu.Lock()
	st := announcedState{Version: announcedVersion, Backends: make([]Announcement, 0, len(r.announced))}
	for _, a := range r.announced {
		st.Backends = append(st.Backends, a.Announcement)
	}
	r.mu.Unlock()
	slices.SortFunc(st.Backends, func(a, b Announcement) int { return strings.Compare(a.ID, b.ID) })
	b, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		err = atomicfile.Write(r.cfg.StateDir, announcedFile, b)
	}
	if err != nil {
		r.m.announceState.WithLabelValues("save").Inc()
		r.log.Error("router: cannot save the announced backends; they are served, but a restart would forget them", "dir", r.cfg.StateDir, "err", err)
	}
}

// loadAnnounced serves the backends announced before a restart, from the
// state dir. A file it cannot use is moved aside (announced.json.bad) and
// logged, and the router starts without them; an announcement that no
// longer passes the checks is skipped and logged.
func (r *Router) loadAnnounced() {
	if r.cfg.StateDir == "" {
		return
	}
	path := filepath.Join(r.cfg.StateDir, announcedFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var st announcedState
	switch {
	case err != nil:
	case json.Unmarshal(b, &st) != nil:
		err = fmt.Errorf("%s is not the JSON of announced backends", path)
	case st.Version != announcedVersion:
		err = fmt.Errorf("%s: format version %d, want %d", path, st.Version, announcedVersion)
	}
	if err != nil {
		r.m.announceState.WithLabelValues("load").Inc()
		if rerr := os.Rename(path, path+".bad"); rerr == nil {
			err = fmt.Errorf("%w (moved to %s.bad)", err, path)
		}
		r.log.Error("router: cannot load the announced backends; starting without them", "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	services := map[string]bool{}
	for _, a := range st.Backends {
		in, err := a.instance()
		if err != nil || r.announced[a.ID] != nil {
			if err == nil {
				err = errors.New("announced twice")
			}
			r.m.announceState.WithLabelValues("load").Inc()
			r.log.Warn("router: skipped a saved announcement", "id", a.ID, "err", err)
			continue
		}
		r.announced[a.ID] = &announcement{Announcement: a, instance: in, at: time.Now()}
		services[in.Service] = true
	}
	for svc := range services {
		r.applyAnnounced(svc)
	}
	if len(r.announced) > 0 {
		r.log.Info("router: backends announced before the restart restored", "backends", len(r.announced), "from", path)
	}
}

// applyAnnounced rebuilds a service's routes after its announced backends
// changed. Under r.mu.
func (r *Router) applyAnnounced(service string) {
	var ins []*catalog.Instance
	for _, a := range r.announced {
		if a.instance.Service == service {
			ins = append(ins, a.instance)
		}
	}
	source.SortInstances(ins)
	in := r.services[service]
	in.announced = ins
	r.applyService(service, in)
}

// routesOf lists the keys of the routes an instance is in.
func (r *Router) routesOf(service, id string) []string {
	keys := []string{}
	for _, ro := range r.table.Load().Routes() {
		for _, m := range ro.Members {
			if m.Service == service && m.ID == id {
				keys = append(keys, ro.Key)
				break
			}
		}
	}
	return keys
}

// refuse answers an admin request with an error, and counts it.
func (r *Router) refuse(w http.ResponseWriter, err error) {
	var he *httpjson.Error
	if !errors.As(err, &he) {
		he = &httpjson.Error{Status: http.StatusInternalServerError, Reason: "internal", Msg: err.Error()}
	}
	r.m.announceReject.WithLabelValues(he.Reason).Inc()
	r.log.Warn("router: announcement refused", "reason", he.Reason, "err", he.Msg)
	writeJSON(w, he.Status, map[string]string{"error": he.Msg})
}
