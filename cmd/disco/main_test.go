package main

import (
	"strings"
	"testing"

	"github.com/discotech/disco/catalog"
)

func TestDefaultID(t *testing.T) {
	for _, tc := range []struct {
		service, host string
		port          int
		want          string
	}{
		{"web", "10.0.1.5", 8080, "web-10-0-1-5-8080"},
		{"web", "fd00::1", 80, "web-fd00-1-80"},
		{"web", "Host.Example.COM", 443, "web-host-example-com-443"},
	} {
		if got := defaultID(tc.service, tc.host, tc.port); got != tc.want {
			t.Errorf("defaultID(%s, %s, %d) = %q, want %q", tc.service, tc.host, tc.port, got, tc.want)
		}
	}
	long := defaultID("web", strings.Repeat("a", 80)+".example", 8080)
	if err := catalog.ValidateName("id", long); err != nil || len(long) > 63 {
		t.Errorf("long default id %q (%d): %v", long, len(long), err)
	}
	if long == defaultID("web", strings.Repeat("a", 80)+".example", 8081) {
		t.Error("two long ids differing only in the port collide")
	}
}

func TestParseCheck(t *testing.T) {
	for in, want := range map[string]catalog.Check{
		"http://10.0.0.1:80/health":           {Type: "http", Target: "http://10.0.0.1:80/health"},
		"https://10.0.0.1/health":             {Type: "http", Target: "https://10.0.0.1/health"},
		"tcp://10.0.0.1:5432":                 {Type: "tcp", Target: "10.0.0.1:5432"},
		"vitals+http://10.0.0.1:9090/metrics": {Type: "vitals", Target: "http://10.0.0.1:9090/metrics"},
	} {
		got, err := parseCheck(in)
		if err != nil || *got != want {
			t.Errorf("parseCheck(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := parseCheck("grpc://10.0.0.1:9000"); err == nil {
		t.Error("parseCheck accepted grpc://")
	}
}
