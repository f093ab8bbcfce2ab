package router

import "testing"

// TestYieldsStopUntilPolled: yields stop after maxPollYields in a round,
// so that goroutines whose data keeps coming cannot keep the scheduler
// from polling for the others, and start again once a goroutine comes
// back from the poller.
func TestYieldsStopUntilPolled(t *testing.T) {
	var g yieldGate
	for range 3 * maxPollYields {
		g.yield()
	}
	if n := g.n.Load(); n != maxPollYields {
		t.Fatalf("after %d yields in one round, %d counted; want the round to stop at %d", 3*maxPollYields, n, maxPollYields)
	}
	g.polled()
	if n := g.n.Load(); n != 0 {
		t.Fatalf("a goroutine back from the poller left %d yields counted; want a new round", n)
	}
	g.yield()
	if n := g.n.Load(); n != 1 {
		t.Fatalf("the new round counted %d yields after one", n)
	}
}
