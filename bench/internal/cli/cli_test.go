package cli

import (
	"slices"
	"testing"
)

// TestRoundTakesTurns: each round starts one element further along, and
// the slice given is left as it was.
func TestRoundTakesTurns(t *testing.T) {
	paths := []string{"a", "b", "c"}
	for round, want := range [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}} {
		if got := Round(paths, round); !slices.Equal(got, want) {
			t.Errorf("round %d: %v, want %v", round, got, want)
		}
	}
	if !slices.Equal(paths, []string{"a", "b", "c"}) {
		t.Errorf("Round changed its input: %v", paths)
	}
	if got := Round([]string(nil), 2); got != nil {
		t.Errorf("Round of nothing: %v", got)
	}
}
