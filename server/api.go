package server

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/lease"
	"github.com/discotech/disco/registry"
)

// Blocking query limits, as Consul's: wait defaults to 5m and is capped at
// 10m, plus up to wait/16 of jitter so that watchers started together do not
// all come back together.
const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.measure(pattern, s.whenRestored(h))) }
	handle := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.measure(pattern, h)) }
	api("PUT /v1/services/{service}/instances/{id}", s.handleRegister)
	api("DELETE /v1/services/{service}/instances/{id}", s.handleDeregister)
	api("PUT /v1/services/{service}/instances/{id}/heartbeat", s.handleHeartbeat)
	api("PUT /v1/heartbeats", s.handleHeartbeats)
	api("GET /v1/services/{service}/instances/{id}", s.handleInstance)
	api("GET /v1/services", s.handleServices)
	api("GET /v1/services/{service}", s.handleService)
	api("GET /v1/watch", s.handleWatch)
	handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s.writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	handle("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", s.measure("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP))
	// Whatever no route takes lands here, for a JSON 404 or 405.
	mux.Handle("/", s.measure("unmatched", func(w http.ResponseWriter, r *http.Request) { s.unmatched(mux, w, r) }))
	return mux
}

// whenRestored answers 503 until the state has been restored from the log
// the server started with. Earlier, a read would show a partial catalog,
// which a watcher would take for removals, and a heartbeat or deregistration
// could find its instance missing.
func (s *Server) whenRestored(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.store.Restored():
			h(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			s.writeError(w, r, &apiError{Status: http.StatusServiceUnavailable, Reason: "restoring",
				Msg: "the registry is still restoring its state from its log; retry in a moment"})
		}
	}
}

// names reads and validates the {service} and {id} path values.
func names(r *http.Request, withID bool) (service, id string, err error) {
	service = r.PathValue("service")
	if err := catalog.ValidateName("service", service); err != nil {
		return "", "", err
	}
	if withID {
		id = r.PathValue("id")
		if err := catalog.ValidateName("id", id); err != nil {
			return "", "", err
		}
	}
	return service, id, nil
}

// registerResponse answers a registration: the instance as stored.
type registerResponse struct {
	Index    uint64            `json:"index"`
	Instance *catalog.Instance `json:"instance"`
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	service, id, err := names(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var reg catalog.Registration
	if err := decodeBody(w, r, s.cfg.MaxBodyBytes, &reg); err != nil {
		s.writeError(w, r, err)
		return
	}
	in, err := reg.Instance(service, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if in.TTL != 0 && in.DeregisterAfter == 0 && in.Check == nil {
		in.DeregisterAfter = catalog.Duration(s.cfg.TTLDeregisterAfter)
	}
	index, err := s.store.Register(r.Context(), in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.duties.registered(in.Key(), in.TTL != 0)
	stored, _ := s.store.State().Instance(service, id)
	s.writeJSON(w, http.StatusOK, registerResponse{Index: index, Instance: s.duties.withVitals(stored)})
}

func (s *Server) handleDeregister(w http.ResponseWriter, r *http.Request) {
	service, id, err := names(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	index, err := s.store.Deregister(r.Context(), service, id)
	if errors.Is(err, registry.ErrNotFound) {
		err = &apiError{Status: http.StatusNotFound, Reason: "not_found", Msg: "instance " + catalog.Key(service, id) + " is not registered"}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, map[string]uint64{"index": index})
}

// Heartbeat answers are fixed, so the hot path formats nothing.
var (
	heartbeatRenewed = []byte(`{"lease":"renewed"}` + "\n")
	heartbeatRevived = []byte(`{"lease":"revived"}` + "\n")
)

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	service, id := r.PathValue("service"), r.PathValue("id")
	var body []byte
	switch s.duties.heartbeat(catalog.Key(service, id)) {
	case lease.Renewed:
		body = heartbeatRenewed
	case lease.Revived:
		body = heartbeatRevived
	default:
		s.heartbeatMiss(w, r, service, id)
		return
	}
	w.Header()["Content-Type"] = jsonType
	w.Write(body)
}

// heartbeatMiss explains why a heartbeat found no lease.
func (s *Server) heartbeatMiss(w http.ResponseWriter, r *http.Request, service, id string) {
	if !s.duties.isLeader() {
		s.writeError(w, r, registry.ErrNotLeader)
		return
	}
	in, ok := s.store.State().Instance(service, id)
	switch {
	case !ok:
		s.writeError(w, r, &apiError{Status: http.StatusNotFound, Reason: "not_found",
			Msg: "instance " + catalog.Key(service, id) + " is not registered; register it again"})
	case in.TTL == 0:
		s.writeError(w, r, badRequest("no_ttl", "instance %s was registered without a ttl; register it with \"ttl\" to use heartbeats", in.Key()))
	default:
		// Registered an instant ago and the lease is not loaded yet: only
		// possible right after a leader change. Ask the client to retry.
		s.writeError(w, r, registry.ErrNotLeader)
	}
}

// heartbeatsRequest renews many leases in one request: what a node agent or
// a process hosting many instances sends instead of one request each.
type heartbeatsRequest struct {
	// Instances are "service/id" keys.
	Instances []string `json:"instances"`
}

// heartbeatsResponse counts the outcomes and lists the instances the server
// does not know (or that have no TTL): register those again.
type heartbeatsResponse struct {
	Renewed int      `json:"renewed"`
	Revived int      `json:"revived"`
	Unknown []string `json:"unknown"`
}

func (s *Server) handleHeartbeats(w http.ResponseWriter, r *http.Request) {
	var req heartbeatsRequest
	if err := decodeBody(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !s.duties.isLeader() {
		s.writeError(w, r, registry.ErrNotLeader)
		return
	}
	resp := heartbeatsResponse{Unknown: []string{}}
	for _, key := range req.Instances {
		switch s.duties.heartbeat(key) {
		case lease.Renewed:
			resp.Renewed++
		case lease.Revived:
			resp.Revived++
		default:
			resp.Unknown = append(resp.Unknown, key)
		}
	}
	s.writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleInstance(w http.ResponseWriter, r *http.Request) {
	service, id, err := names(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	in, ok := s.store.State().Instance(service, id)
	if !ok {
		s.writeError(w, r, &apiError{Status: http.StatusNotFound, Reason: "not_found", Msg: "instance " + catalog.Key(service, id) + " is not registered"})
		return
	}
	s.writeJSON(w, http.StatusOK, s.duties.withVitals(in))
}

// queryOptions are the blocking-query parameters.
type queryOptions struct {
	index uint64
	wait  time.Duration
}

func parseQuery(r *http.Request) (queryOptions, error) {
	q := r.URL.Query()
	o := queryOptions{wait: defaultWait}
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return o, badRequest("invalid", "index: want a non-negative integer, got %q", v)
		}
		o.index = n
	}
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return o, badRequest("invalid", "wait: want a duration such as \"30s\" or \"5m\", got %q", v)
		}
		o.wait = min(d, maxWait)
	}
	if o.wait > 0 {
		o.wait += rand.N(o.wait/16 + 1)
	}
	return o, nil
}

func parseBool(r *http.Request, name string) (bool, error) {
	v, ok := r.URL.Query()[name]
	if !ok {
		return false, nil
	}
	if len(v) == 0 || v[0] == "" {
		return true, nil // ?passing alone means yes, as in Consul
	}
	b, err := strconv.ParseBool(v[0])
	if err != nil {
		return false, badRequest("invalid", "%s: want 1, 0, true or false, got %q", name, v[0])
	}
	return b, nil
}

// block waits until the index of service (of the catalog when service is "")
// passes o.index, o.wait ends or the client goes away. Index 0 does not block.
func (s *Server) block(r *http.Request, service string, o queryOptions) {
	if o.index == 0 {
		return
	}
	idx, ch := s.store.State().Watch(service)
	if idx > o.index {
		return
	}
	s.metrics.watchers.WithLabelValues("blocking").Inc()
	defer s.metrics.watchers.WithLabelValues("blocking").Dec()
	timer := time.NewTimer(o.wait)
	defer timer.Stop()
	for idx <= o.index {
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-r.Context().Done():
			return
		}
		idx, ch = s.store.State().Watch(service)
	}
}

type servicesResponse struct {
	Index    uint64                   `json:"index"`
	Services []catalog.ServiceSummary `json:"services"`
}

func (s *Server) handleServices(w http.ResponseWriter, r *http.Request) {
	o, err := parseQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.block(r, "", o)
	services, index := s.store.State().Services()
	w.Header()["X-Disco-Index"] = []string{strconv.FormatUint(index, 10)}
	s.writeJSON(w, http.StatusOK, servicesResponse{Index: index, Services: services})
}

type serviceResponse struct {
	Index     uint64              `json:"index"`
	Instances []*catalog.Instance `json:"instances"`
}

func (s *Server) handleService(w http.ResponseWriter, r *http.Request) {
	service, _, err := names(r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	o, err := parseQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	passing, err := parseBool(r, "passing")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tags := r.URL.Query()["tag"]
	s.block(r, service, o)
	all, index := s.store.State().Instances(service)
	out := make([]*catalog.Instance, 0, len(all))
	for _, in := range all {
		if passing && in.Status != catalog.Passing {
			continue
		}
		if !hasTags(in, tags) {
			continue
		}
		out = append(out, s.duties.withVitals(in))
	}
	w.Header()["X-Disco-Index"] = []string{strconv.FormatUint(index, 10)}
	s.writeJSON(w, http.StatusOK, serviceResponse{Index: index, Instances: out})
}

// hasTags reports whether in carries every one of tags.
func hasTags(in *catalog.Instance, tags []string) bool {
	for _, t := range tags {
		if !in.HasTag(t) {
			return false
		}
	}
	return true
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.store.Restored():
	default:
		s.writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "restoring", "error": "server: restoring state from the raft log"})
		return
	}
	if s.store.Leader() == "" {
		s.writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "no_leader", "error": "server: raft has no leader yet"})
		return
	}
	s.writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
