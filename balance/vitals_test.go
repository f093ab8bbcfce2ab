package balance

import (
	"testing"

	"github.com/discotech/disco/catalog"
)

func TestVitalsMoveWeights(t *testing.T) {
	var s Vitals
	ok := catalog.Vitals{Ready: true, CPUUsage: 20, MemoryUsage: 30}
	if w := s.Weight(100, ok); w != 100 {
		t.Fatalf("an idle backend: %v, want its full weight", w)
	}
	// Busy: the weight falls a tenth per poll toward 100 × (1.5 − 0.9) = 60.
	busy := catalog.Vitals{Ready: true, CPUUsage: 90}
	var got []float64
	for range 6 {
		got = append(got, s.Weight(100, busy))
	}
	want := []float64{90, 80, 70, 60, 60, 60}
	for i := range want {
		if got[i] < want[i]-1e-9 || got[i] > want[i]+1e-9 {
			t.Fatalf("busy polls: %v, want %v", got, want)
		}
	}
	// Failures rising: halved at each poll while they rise.
	fail := busy
	fail.FailedResponses = 10
	if w := s.Weight(100, fail); w != 30 {
		t.Errorf("rising failures: %v, want 30", w)
	}
	fail.FailedResponses = 20
	if w := s.Weight(100, fail); w != 15 {
		t.Errorf("still rising: %v, want 15", w)
	}
	// Not ready: out at once, then back slowly.
	if w := s.Weight(100, catalog.Vitals{Ready: false, FailedResponses: 20}); w != 0 {
		t.Errorf("ready:false: %v, want 0", w)
	}
	back := ok
	back.FailedResponses = 20
	if w := s.Weight(100, back); w != 10 {
		t.Errorf("ready again: %v, want a tenth (slow climb)", w)
	}
	// Backoff requests halve too.
	bo := back
	bo.BackoffRequests = 3
	if w := s.Weight(100, bo); w != 5 {
		t.Errorf("backoff: %v, want 5", w)
	}
	// Drained by the registry: 0 whatever the vitals.
	if w := s.Weight(0, ok); w != 0 {
		t.Errorf("registered weight 0: %v", w)
	}
}
