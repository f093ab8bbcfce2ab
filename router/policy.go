package router

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/discotech/disco/balance"
)

// picker is the configured policy and, for hashing, what a request's key
// is made of.
type picker struct {
	name   string
	fixed  balance.Policy // every policy but round robin, which keeps state per route
	hashOn func(*http.Request) string
}

// Policies by config name.
var policies = map[string]balance.Policy{
	"p2c":           balance.P2C{},
	"random":        balance.Random{},
	"least-request": balance.LeastRequest{},
	"hash":          balance.Hash{},
	"first":         balance.First{},
	"round-robin":   nil,
}

func newPicker(name, hashOn string) (picker, error) {
	pol, ok := policies[name]
	if !ok {
		return picker{}, fmt.Errorf("router: policy %q: want one of p2c, round-robin, random, least-request, hash, first", name)
	}
	p := picker{name: name, fixed: pol}
	if name != "hash" {
		return p, nil
	}
	kind, arg, _ := strings.Cut(hashOn, ":")
	switch {
	case kind == "client" && arg == "":
		p.hashOn = func(r *http.Request) string {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			return host
		}
	case kind == "header" && arg != "":
		p.hashOn = func(r *http.Request) string { return r.Header.Get(arg) }
	case kind == "cookie" && arg != "":
		p.hashOn = func(r *http.Request) string {
			if c, err := r.Cookie(arg); err == nil {
				return c.Value
			}
			return ""
		}
	default:
		return picker{}, fmt.Errorf("router: hash-on %q: want client, header:NAME or cookie:NAME", hashOn)
	}
	return p, nil
}

// policy is the policy for a route.
func (p picker) policy(st *routeState) balance.Policy {
	if p.fixed == nil {
		return &st.rr
	}
	return p.fixed
}

// key is a request's hash for the hash policy; 0 for the others.
func (p picker) key(r *http.Request) uint64 {
	if p.hashOn == nil {
		return 0
	}
	return balance.HashKey(p.hashOn(r))
}
