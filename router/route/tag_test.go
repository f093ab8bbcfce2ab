package route

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseTag(t *testing.T) {
	tests := []struct {
		tag  string
		want Spec
	}{
		{"urlprefix-/css", Spec{Key: "/css", Prefix: "/css", Proto: "http"}},
		{"  urlprefix-/   ", Spec{Key: "/", Prefix: "/", Proto: "http"}},
		{"urlprefix-I.com/Static", Spec{Key: "i.com/Static", Host: "i.com", Prefix: "/Static", Proto: "http"}},
		{"urlprefix-mysite.com/", Spec{Key: "mysite.com/", Host: "mysite.com", Prefix: "/", Proto: "http"}},
		{"urlprefix-*.example.com/a", Spec{Key: "*.example.com/a", Host: "*.example.com", Prefix: "/a", Proto: "http"}},
		{"urlprefix-/foo/bar strip=/foo", Spec{Key: "/foo/bar", Prefix: "/foo/bar", Proto: "http", Strip: "/foo"}},
		{"urlprefix-/foo prepend=/x", Spec{Key: "/foo", Prefix: "/foo", Proto: "http", Prepend: "/x"}},
		{"urlprefix-/foo/bar  strip=/foo\tprepend=/x proto=http weight=0.2", Spec{Key: "/foo/bar", Prefix: "/foo/bar", Proto: "http", Strip: "/foo", Prepend: "/x", Weight: 0.2}},
		{"urlprefix-/a proto=https tlsskipverify=true", Spec{Key: "/a", Prefix: "/a", Proto: "https", TLSSkipVerify: true}},
		{"urlprefix-/a tlsskipverify=false", Spec{Key: "/a", Prefix: "/a", Proto: "http"}},
		{"urlprefix-/a proto=grpc", Spec{Key: "/a", Prefix: "/a", Proto: "grpc"}},
		{"urlprefix-/a host=dst", Spec{Key: "/a", Prefix: "/a", Proto: "http", HostHeader: "dst"}},
		{"urlprefix-/a host=api.example.com:8443", Spec{Key: "/a", Prefix: "/a", Proto: "http", HostHeader: "api.example.com:8443"}},
		{"urlprefix-/a host=10.0.0.1", Spec{Key: "/a", Prefix: "/a", Proto: "http", HostHeader: "10.0.0.1"}},
		{"urlprefix-/a weight=1", Spec{Key: "/a", Prefix: "/a", Proto: "http", Weight: 1}},
		{"urlprefix-:3306 proto=tcp", Spec{Key: ":3306", Port: 3306, Proto: "tcp"}},
		{"urlprefix-:03306 proto=tcp weight=0.5", Spec{Key: ":3306", Port: 3306, Proto: "tcp", Weight: 0.5}},
		{"urlprefix-/a=b%20c", Spec{Key: "/a=b%20c", Prefix: "/a=b%20c", Proto: "http"}},
	}
	for _, tt := range tests {
		got, err := ParseTag(tt.tag)
		if err != nil {
			t.Errorf("ParseTag(%q): %v", tt.tag, err)
			continue
		}
		if d := cmp.Diff(tt.want, got); d != "" {
			t.Errorf("ParseTag(%q) (-want +got):\n%s", tt.tag, d)
		}
		again, err := ParseTag(got.String())
		if err != nil || again != got {
			t.Errorf("ParseTag(%q).String() = %q does not parse back: %v, %+v", tt.tag, got.String(), err, again)
		}
	}
}

func TestParseTagErrors(t *testing.T) {
	tests := []struct {
		tag, want string // want: a part of the error
	}{
		{"urlprefix-", "no route after urlprefix-"},
		{"urlprefix-css", `"css" has no '/'`},
		{"urlprefix-i.com", `write i.com/ for all`},
		{"urlprefix-/a strip", `option "strip" is not key=value`},
		{"urlprefix-/a strip=", "strip= has no value"},
		{"urlprefix-/a strip=/a strip=/b", "strip= is given twice"},
		{"urlprefix-/a strip=a", "strip=a must start with '/'"},
		{"urlprefix-/a prepend=x", "prepend=x must start with '/'"},
		{"urlprefix-/a prepend=/x?y", "without query or fragment"},
		{"urlprefix-/a proto=ftp", "proto=ftp is not a protocol"},
		{"urlprefix-/a proto=grpcs", "use http, https, tcp or grpc"},
		{"urlprefix-/a weight=x", "weight=x is not a fraction"},
		{"urlprefix-/a weight=0", "weight=0 is not a fraction"},
		{"urlprefix-/a weight=1.5", "weight=1.5 is not a fraction"},
		{"urlprefix-/a weight=-0.1", "weight=-0.1 is not a fraction"},
		{"urlprefix-/a weight=NaN", "weight=NaN is not a fraction"},
		{"urlprefix-/a tlsskipverify=yes", "tlsskipverify=yes is not true or false"},
		{"urlprefix-/a tlsskipverify=true", "applies only to proto=https"},
		{"urlprefix-/a host=a_b", "host=a_b is not a host name"},
		{"urlprefix-/a host=a.com:99999", "host=a.com:99999 is not a host name"},
		{"urlprefix-/a color=red", "unknown option color="},
		{"urlprefix-/a allow=ip:10.0.0.0/8", "option allow= is Fabio's"},
		{"urlprefix-/a register=fabio", "option register= is Fabio's"},
		{"urlprefix-:3306", "add proto=tcp"},
		{"urlprefix-:3306 proto=http", "add proto=tcp"},
		{"urlprefix-:0 proto=tcp", `":0" is not a port`},
		{"urlprefix-:65536 proto=tcp", `":65536" is not a port`},
		{"urlprefix-:+80 proto=tcp", `":+80" is not a port`},
		{"urlprefix-:http proto=tcp", `":http" is not a port`},
		{"urlprefix-: proto=tcp", `":" is not a port`},
		{"urlprefix-:3306 proto=tcp strip=/a", "do not apply to a TCP route"},
		{"urlprefix-/a proto=tcp", "proto=tcp needs a :port route"},
		{"urlprefix-i.com:8080/a", "has a port"},
		{"urlprefix-i.com./a", "ends with '.'"},
		{"urlprefix-a_b.com/a", `host "a_b.com" is not a DNS name`},
		{"urlprefix--a.com/a", "is not a DNS name"},
		{"urlprefix-a.*.com/", "a wildcard is only allowed as a whole first label"},
		{"urlprefix-*a.com/", "a wildcard is only allowed"},
		{"urlprefix-" + strings.Repeat("a", 64) + ".com/", "is not a DNS name"},
		{"urlprefix-/a#b", "without query or fragment"},
		{"urlprefix-/a\x01", "control character"},
	}
	for _, tt := range tests {
		_, err := ParseTag(tt.tag)
		var te *TagError
		if !errors.As(err, &te) {
			t.Errorf("ParseTag(%q) = %v, want a *TagError", tt.tag, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "route: tag ") {
			t.Errorf("ParseTag(%q) = %q, want it to contain %q", tt.tag, err, tt.want)
		}
	}
	if _, err := ParseTag("version-2"); err != ErrNotRouteTag {
		t.Errorf("ParseTag(ordinary tag) = %v, want ErrNotRouteTag", err)
	}
}

func TestTagErrorNamesInstance(t *testing.T) {
	e := &TagError{Service: "web", ID: "w1", Tag: "urlprefix-x", Reason: "bad"}
	if got, want := e.Error(), `route: web/w1: tag "urlprefix-x": bad`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func FuzzParseTag(f *testing.F) {
	for _, s := range []string{
		"urlprefix-/css", "urlprefix-i.com/static strip=/static prepend=/x proto=https tlsskipverify=true",
		"urlprefix-*.a.com/ host=dst weight=0.25", "urlprefix-:3306 proto=tcp", "urlprefix-/a weight=1e-3",
		"urlprefix-/a=b", "urlprefix- /a", "urlprefix-A.COM/x", "urlprefix-:1 proto=tcp weight=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tag string) {
		s, err := ParseTag(tag)
		if err != nil {
			if err != ErrNotRouteTag && err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		again, err := ParseTag(s.String())
		if err != nil {
			t.Fatalf("ParseTag(%q) = %+v, whose String %q fails: %v", tag, s, s.String(), err)
		}
		if again != s {
			t.Fatalf("round trip of %q: %+v, then %+v", tag, s, again)
		}
		if s.Key == "" || (s.Port == 0) == (s.Prefix == "") || s.Host != strings.ToLower(s.Host) {
			t.Fatalf("ParseTag(%q) = %+v: inconsistent", tag, s)
		}
	})
}
