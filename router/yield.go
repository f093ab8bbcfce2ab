package router

import (
	"runtime"
	"sync/atomic"
)

// The router's goroutines yield before a read that would find nothing yet
// (the backend's answer just asked for, the client's next request just
// answered), so that the other requests run meanwhile and the read, when
// this one runs again, takes what has come in without waiting in the
// poller: no read that finds nothing, no park and no wake-up, which
// together cost more than anything else the router does in user space.
// It is what an event loop does by serving every ready connection before
// it polls again.
//
// Go's scheduler polls the network only when it has nothing else to run
// (or every 10ms from its monitor). Goroutines that always find their
// data after a yield would keep it busy and leave those waiting in the
// poller unpolled, so the yields stop after maxPollYields until a
// goroutine comes back from the poller: the scheduler has polled, and a
// new round begins.
const maxPollYields = 32

// yieldGate counts the yields since a goroutine last came back from the
// poller.
type yieldGate struct{ n atomic.Int32 }

// yields is the router's: one scheduler, one round.
var yields yieldGate

// yield lets the other goroutines run first, unless this round's yields
// are spent.
func yield() { yields.yield() }

// polled notes that a goroutine came back from waiting in the poller.
func polled() { yields.polled() }

func (g *yieldGate) yield() {
	if g.n.Load() >= maxPollYields {
		return
	}
	g.n.Add(1)
	runtime.Gosched()
}

func (g *yieldGate) polled() {
	if g.n.Load() != 0 {
		g.n.Store(0)
	}
}
