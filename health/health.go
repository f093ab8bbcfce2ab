// Package health runs the registry's active health checks and turns their
// results into verdicts.
//
// A check type is a Checker registered by name (see Register): "http" and
// "vitals" GET a URL, "tcp" opens a connection. Each lives in its own file and
// registers itself in init, so adding a type touches nothing else.
//
// The registry server's leader feeds every instance's catalog.Check to a
// Runner. The Runner schedules the runs, bounds how many are in flight, and
// applies the check's thresholds (Check.Failures consecutive failed runs make
// an instance critical, Check.Successes consecutive good ones make it passing
// or warning again, as Consul's FailuresBeforeCritical and
// SuccessBeforePassing do). It reports only verdict changes, because only
// those are replicated.
package health

import (
	"context"
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/discotech/disco/catalog"
)

// MaxOutput is the most bytes a Result's Output may hold. Longer outputs are
// cut (at a character boundary) by the checkers and again by the Runner, so a
// third-party Checker cannot bloat the replicated log.
const MaxOutput = 4096

// Result is what one run of a check found.
type Result struct {
	// Status is the health the run observed. Anything other than Passing or
	// Warning counts as Critical.
	Status catalog.Status
	// Output is short human text saying what was seen, at most MaxOutput
	// bytes, e.g. "HTTP GET http://10.0.1.5:8080/health: 200 OK".
	Output string
	// Vitals are the figures a vitals check parsed from the backend's body,
	// also when the backend said ready:false. Nil for other check types and
	// whenever the body did not parse.
	Vitals *catalog.Vitals
}

// Checker runs one check type.
//
// Check probes target (a URL or host:port, as catalog.Check.Target says) and
// reports what it found. ctx carries the run's timeout: Check must give up
// when ctx is done and report that as Critical. Check is called from many
// goroutines at once.
type Checker interface {
	Check(ctx context.Context, target string) Result
}

var (
	checkersMu sync.RWMutex
	checkers   = map[string]Checker{}
)

// Register makes c the Checker for check type name. It is meant to be called
// from the init function of the file that implements the type. Register
// panics if name is empty, c is nil, or name is already registered: two types
// under one name is a programming error that must not reach a leader.
func Register(name string, c Checker) {
	checkersMu.Lock()
	defer checkersMu.Unlock()
	if name == "" {
		panic("health: Register called with an empty check type name")
	}
	if c == nil {
		panic(fmt.Sprintf("health: Register of check type %q called with a nil Checker", name))
	}
	if _, dup := checkers[name]; dup {
		panic(fmt.Sprintf("health: Register called twice for check type %q", name))
	}
	checkers[name] = c
}

// Lookup returns the Checker registered for check type name.
func Lookup(name string) (Checker, bool) {
	checkersMu.RLock()
	defer checkersMu.RUnlock()
	c, ok := checkers[name]
	return c, ok
}

// clip cuts s to at most MaxOutput bytes without splitting a UTF-8 sequence.
func clip(s string) string {
	return clipTo(s, MaxOutput)
}

// clipTo cuts s to at most n bytes without splitting a UTF-8 sequence.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
