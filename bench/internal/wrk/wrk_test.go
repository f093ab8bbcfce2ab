package wrk

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestQuantiles(t *testing.T) {
	h := Hist{10: 50, 20: 40, 1000: 9}
	h.Add(Hist{5000: 1})
	// 100 responses: nearest rank.
	got := h.Quantiles(0.01, 0.5, 0.51, 0.9, 0.99, 1)
	want := []float64{10e3, 10e3, 20e3, 20e3, 1000e3, 5000e3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Quantiles (-want +got):\n%s", diff)
	}
	if q := (Hist{}).Quantiles(0.5); !math.IsNaN(q[0]) {
		t.Errorf("empty Hist: %v, want NaN", q)
	}
}
