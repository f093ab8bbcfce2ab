// Package registry is the source of truth of a Discotech server: the catalog
// of services and instances, replicated with hashicorp/raft over a bbolt log.
//
// Every write is a raft log entry applied to State, the in-memory catalog,
// which serves all reads. Each service has its own index (the log index of
// its last change) and its own notification channel, so a change to one
// service wakes only that service's watchers. Recent changes are kept as
// Events, per service and globally, so a watcher that reconnects is replayed
// what it missed, or told to resync when it fell too far behind.
//
// Heartbeats and health-check results are not here: they live in the
// leader's memory (packages lease and health), and only the status changes
// they cause become writes.
package registry

import "errors"

// Sentinel errors returned by Store's writes.
var (
	// ErrNotFound: the instance to change or remove is not registered.
	ErrNotFound = errors.New("registry: instance not found")
	// ErrConflict: a conditional write found the instance changed since the
	// condition was computed (it was revived before being reaped).
	ErrConflict = errors.New("registry: instance changed; write skipped")
	// ErrNotLeader: this server is not the raft leader and cannot write.
	ErrNotLeader = errors.New("registry: not the raft leader")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("registry: store closed")
)
