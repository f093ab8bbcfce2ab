package guard

import (
	"slices"
	"sort"
	"time"
)

// Status is what GET /v1/agent/status shows of the guard: every source and
// its health, every service with its backends, every hold with its reason
// and deadline, and the last-known-good state.
type Status struct {
	Sources  []SourceStatus  `json:"sources"`
	Services []ServiceStatus `json:"services"`
	Holds    []HoldStatus    `json:"holds"`
	LKG      LKGStatus       `json:"last_known_good"`
	Version  uint64          `json:"version"`
}

// SourceStatus is one source.
type SourceStatus struct {
	Spec       string    `json:"spec"`
	Healthy    bool      `json:"healthy"`
	Error      string    `json:"error,omitempty"`
	Since      time.Time `json:"since"`
	LastReport time.Time `json:"last_report,omitzero"`
	Services   int       `json:"services"`
	Updates    int       `json:"updates"`
	Failures   int       `json:"failures"`
}

// ServiceStatus is one service in the table.
type ServiceStatus struct {
	Name     string          `json:"name"`
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is one backend: active, or held (a source removed it and the
// guard keeps it until the removal is confirmed).
type BackendStatus struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	Weight  int    `json:"weight"`
	State   string `json:"state"`
}

// HoldStatus is one held removal.
type HoldStatus struct {
	Service  string        `json:"service"`
	Reason   string        `json:"reason"`
	Since    time.Time     `json:"since"`
	Deadline time.Time     `json:"deadline"`
	Removing []HeldBackend `json:"removing"`
}

// HeldBackend is one backend a hold keeps, with what the agent's probes
// found.
type HeldBackend struct {
	ID            string `json:"id"`
	ProbeFailures int    `json:"probe_failures"`
	ProbeError    string `json:"probe_error,omitempty"`
	Dead          bool   `json:"dead"`
}

// LKGStatus says whether the state from disk is standing in for sources
// that have not reported since start.
type LKGStatus struct {
	Active  bool      `json:"active"`
	SavedAt time.Time `json:"saved_at,omitzero"`
	Path    string    `json:"path,omitempty"`
}

// Status returns the guard's current state.
func (g *Guard) Status() Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := Status{Sources: []SourceStatus{}, Services: []ServiceStatus{}, Holds: []HoldStatus{}, Version: g.version}
	for _, s := range g.sources {
		st.Sources = append(st.Sources, SourceStatus{
			Spec: s.spec, Healthy: s.healthy, Error: s.err, Since: s.since, LastReport: s.last,
			Services: len(s.services), Updates: s.updates, Failures: s.failures,
		})
	}
	t := g.table.Load()
	for _, svc := range sortedKeys(t.Services) {
		ss := ServiceStatus{Name: svc, Backends: []BackendStatus{}}
		h := g.holds[svc]
		for _, in := range t.Services[svc] {
			state := "active"
			if h != nil && h.removing[in.ID] != nil {
				state = "held"
			}
			ss.Backends = append(ss.Backends, BackendStatus{ID: in.ID, Address: in.Address, Port: in.Port, Weight: in.Weight, State: state})
		}
		st.Services = append(st.Services, ss)
	}
	for _, svc := range sortedKeys(g.holds) {
		h := g.holds[svc]
		hs := HoldStatus{Service: svc, Reason: h.reason, Since: h.since, Deadline: h.deadline, Removing: []HeldBackend{}}
		for _, id := range sortedKeys(h.removing) {
			p := h.removing[id]
			hs.Removing = append(hs.Removing, HeldBackend{ID: id, ProbeFailures: p.failures, ProbeError: p.lastErr, Dead: p.dead})
		}
		st.Holds = append(st.Holds, hs)
	}
	if g.lkg != nil {
		st.LKG = LKGStatus{Active: true, SavedAt: g.lkg.SavedAt}
	}
	if g.cfg.StateDir != "" {
		st.LKG.Path = g.cfg.StateDir + "/" + lkgFile
	}
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return slices.Clip(keys)
}
