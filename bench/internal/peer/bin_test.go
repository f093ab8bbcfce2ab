package peer

import "testing"

func TestVersionIn(t *testing.T) {
	for _, c := range []struct{ name, line, want string }{
		{"haproxy", "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/", "haproxy 2.6.12-1+deb12u4"},
		{"nginx", "nginx version: nginx/1.22.1", "nginx 1.22.1"},
		{"etcd", "etcd Version: 3.4.23", "etcd 3.4.23"},
		{"dnsmasq", "Dnsmasq version 2.90  Copyright (c) 2000-2024 Simon Kelley", "dnsmasq 2.90"},
		{"wrk", "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer", "wrk (version unknown)"},
		{"x", "", "x (version unknown)"},
	} {
		if got := versionIn(c.name, c.line); got != c.want {
			t.Errorf("versionIn(%q, %q) = %q, want %q", c.name, c.line, got, c.want)
		}
	}
}
