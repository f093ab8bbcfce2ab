package balance

import "github.com/discotech/disco/catalog"

// Vitals turn a backend's reported figures (the contract's vitals JSON,
// polled about every second) into its weight. They decide eligibility and
// shares, never a single pick:
//
//   - ready:false takes the backend out at once (weight 0): it is draining;
//   - backoff requests, or failed responses rising since the last poll, halve
//     the weight at each poll while they last;
//   - CPU and memory move the weight slowly and within bounds: toward the
//     registered weight × (1.5 − the busier of the two as a fraction), so
//     between half and the full weight, by at most a tenth of the
//     registered weight per poll, so that one noisy reading does not swing
//     traffic;
//   - otherwise the weight recovers toward the registered weight, at the same
//     pace.
type Vitals struct {
	prev    catalog.Vitals
	seen    bool
	current float64
}

// Weight returns the backend's weight after poll v, given its registered
// weight. Call it once per poll, in order.
func (s *Vitals) Weight(registered float64, v catalog.Vitals) float64 {
	if registered <= 0 {
		s.current, s.prev, s.seen = 0, v, true
		return 0
	}
	if !s.seen {
		s.current = registered
	}
	rising := s.seen && v.FailedResponses > s.prev.FailedResponses
	s.prev, s.seen = v, true
	if !v.Ready {
		// Out now; it comes back through the slow climb below.
		s.current = 0
		return 0
	}
	if v.BackoffRequests > 0 || rising {
		s.current = max(s.current/2, registered/100)
		return s.current
	}
	busy := max(v.CPUUsage, v.MemoryUsage) / 100
	busy = min(max(busy, 0.5), 1) // up to half busy costs nothing
	target := registered * (1.5 - busy)
	step := registered / 10
	switch {
	case s.current < target:
		s.current = min(s.current+step, target)
	case s.current > target:
		s.current = max(s.current-step, target)
	}
	return s.current
}
