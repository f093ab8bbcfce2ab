// Package catalog holds the types every part of Discotech agrees on: a service
// instance as it is registered and as it is stored, its health check, its health
// status and the vitals a backend reports about itself.
//
// These are the wire types of the native HTTP API (see docs/api.md): the server
// decodes a Registration and encodes Instances, and the public Go client in
// package client uses the same types, so the two cannot drift apart.
package catalog

import (
	"net"
	"strconv"
	"strings"
	"time"
)

// Status is the health of an instance.
type Status string

// The health states an instance can be in. The zero value is not a valid status.
const (
	// Passing instances receive traffic.
	Passing Status = "passing"
	// Warning instances are up but asked for less traffic (an HTTP check answered
	// 429). DNS and the balancers still use them; ?passing=1 leaves them out.
	Warning Status = "warning"
	// Critical instances receive no traffic. An instance that stays critical for
	// longer than its DeregisterAfter is removed.
	Critical Status = "critical"
)

// Valid reports whether s is one of the defined states.
func (s Status) Valid() bool { return s == Passing || s == Warning || s == Critical }

// DefaultWeight is the weight of an instance registered without one.
const DefaultWeight = 100

// MaxWeight is the largest weight an instance may carry.
const MaxWeight = 10000

// Registration is what a client sends to register (or replace) an instance:
// the body of PUT /v1/services/{service}/instances/{id}. The service name and
// instance id come from the path.
type Registration struct {
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	// Weight is the instance's share of traffic relative to its peers,
	// 0–10000; 0 drains the instance. Nil means DefaultWeight.
	Weight *int `json:"weight,omitempty"`
	// TTL, when set, makes the instance heartbeat-driven: it turns critical when
	// no heartbeat arrives for a TTL.
	TTL Duration `json:"ttl,omitempty"`
	// DeregisterAfter removes the instance once it has been critical this long,
	// whatever made it critical. Check.DeregisterAfter, when set, wins. TTL
	// instances without either get the server's default (see server.Config).
	DeregisterAfter Duration `json:"deregister_after,omitempty"`
	Check           *Check   `json:"check,omitempty"`
}

// Check is an active health check the registry runs against an instance.
type Check struct {
	// Type is "http", "tcp" or "vitals".
	Type string `json:"type"`
	// Target is a URL for http and vitals checks, host:port for tcp checks.
	Target string `json:"target"`
	// Interval between two runs; default 10s.
	Interval Duration `json:"interval,omitempty"`
	// Timeout of one run; default 5s, never longer than Interval.
	Timeout Duration `json:"timeout,omitempty"`
	// Failures is how many consecutive failed runs make the instance critical;
	// default 3.
	Failures int `json:"failures,omitempty"`
	// Successes is how many consecutive good runs make a critical instance
	// passing again; default 1.
	Successes int `json:"successes,omitempty"`
	// DeregisterAfter removes the instance once it has been critical this long.
	DeregisterAfter Duration `json:"deregister_after,omitempty"`
}

// Check defaults, applied by Registration.Instance.
const (
	DefaultCheckInterval  = 10 * time.Second
	DefaultCheckTimeout   = 5 * time.Second
	DefaultCheckFailures  = 3
	DefaultCheckSuccesses = 1
)

// Instance is one registered instance of a service, as the registry stores and
// serves it.
type Instance struct {
	Service string            `json:"service"`
	ID      string            `json:"id"`
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	Weight  int               `json:"weight"`
	TTL     Duration          `json:"ttl,omitempty"`
	// DeregisterAfter is the effective removal delay for a critical instance;
	// zero means never.
	DeregisterAfter Duration `json:"deregister_after,omitempty"`
	Check           *Check   `json:"check,omitempty"`

	Status Status `json:"status"`
	// StatusSince is when Status last changed, by the leader's clock.
	StatusSince time.Time `json:"status_since"`
	// Output is what the last status change said: a check's result, "ttl
	// expired", "registered".
	Output string `json:"output,omitempty"`
	// CreateIndex and ModifyIndex are registry indexes of the instance's
	// creation and of its last change.
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`

	// Vitals are the figures the instance reported to its last vitals check.
	// They are kept in the leader's memory, not replicated, and do not move
	// the index: read them, never block on them.
	Vitals *Vitals `json:"vitals,omitempty"`
}

// Key is the instance's unique name in the registry: "service/id".
func (in *Instance) Key() string { return Key(in.Service, in.ID) }

// Key is the unique name of instance id of service: "service/id".
func Key(service, id string) string { return service + "/" + id }

// SplitKey is the inverse of Key.
func SplitKey(key string) (service, id string) {
	service, id, _ = strings.Cut(key, "/")
	return service, id
}

// VitalsURL is where the instance serves its vitals: its vitals check's
// target, or http://ADDRESS:PORT/metrics for meta "metrics_port"; "" when
// it serves none that is known.
func (in *Instance) VitalsURL() string {
	if in.Check != nil && in.Check.Type == "vitals" {
		return in.Check.Target
	}
	if p := in.Meta["metrics_port"]; p != "" {
		if n, err := strconv.Atoi(p); err == nil && n > 0 && n < 65536 {
			return "http://" + net.JoinHostPort(in.Address, p) + "/metrics"
		}
	}
	return ""
}

// HasTag reports whether the instance carries tag t.
func (in *Instance) HasTag(t string) bool {
	for _, x := range in.Tags {
		if x == t {
			return true
		}
	}
	return false
}

// Clone returns a deep copy of in, sharing nothing mutable with it.
func (in *Instance) Clone() *Instance {
	c := *in
	if in.Tags != nil {
		c.Tags = append([]string(nil), in.Tags...)
	}
	if in.Meta != nil {
		c.Meta = make(map[string]string, len(in.Meta))
		for k, v := range in.Meta {
			c.Meta[k] = v
		}
	}
	if in.Check != nil {
		ck := *in.Check
		c.Check = &ck
	}
	if in.Vitals != nil {
		v := *in.Vitals
		c.Vitals = &v
	}
	return &c
}

// Vitals is the JSON a backend serves on its metrics port (GET /metrics): what
// it says about its own readiness and load. Balancers use it for eligibility
// and weights; the registry's vitals check turns ready:false into critical.
type Vitals struct {
	Ready              bool    `json:"ready"`
	RequestsInProgress int64   `json:"requests_in_progress"`
	CPUUsage           float64 `json:"cpu_usage"`
	MemoryUsage        float64 `json:"memory_usage"`
	GPUUsage           float64 `json:"gpu_usage"`
	FailedResponses    uint64  `json:"failed_responses"`
	ConnectedPeers     int64   `json:"connected_peers"`
	BackoffRequests    int64   `json:"backoff_requests"`
	UptimeSeconds      float64 `json:"uptime_seconds"`
	Version            string  `json:"version,omitempty"`
}

// ServiceSummary is one line of GET /v1/services.
type ServiceSummary struct {
	Name string `json:"name"`
	// Instances counts every registered instance, Passing those passing.
	Instances int    `json:"instances"`
	Passing   int    `json:"passing"`
	Index     uint64 `json:"index"`
}

// WatchEvent is one line of the GET /v1/watch stream (newline-delimited
// JSON). A stream opens with the watcher's initial state — one "snapshot" per
// service, or a replay of the "put" and "delete" events after the index it
// resumed from — then "synced", then live changes. "progress" lines carry the
// current index when nothing changed for a while. A "resync" line means the
// watcher fell too far behind (or asked for an index this registry never
// had): drop everything known and apply the snapshot that follows.
type WatchEvent struct {
	Type      string      `json:"type"`
	Index     uint64      `json:"index"`
	Service   string      `json:"service,omitempty"`
	ID        string      `json:"id,omitempty"`
	Instance  *Instance   `json:"instance,omitempty"`
	Instances []*Instance `json:"instances,omitempty"`
	Reason    string      `json:"reason,omitempty"`
}

// The types of WatchEvent.
const (
	WatchSnapshot = "snapshot"
	WatchSynced   = "synced"
	WatchPut      = "put"
	WatchDelete   = "delete"
	WatchResync   = "resync"
	WatchProgress = "progress"
)
