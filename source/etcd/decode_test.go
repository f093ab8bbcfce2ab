package etcd

import (
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

func TestDecode(t *testing.T) {
	const prefix = "/services/"
	for _, tc := range []struct {
		name, key, value string
		want             *catalog.Instance
		service          string // the key's service when want is nil
		err              string // in the error; "" for none
	}{{
		name:  "ours, defaults",
		key:   "/services/web/w1",
		value: `{"address":"10.0.1.5","port":8080}`,
		want:  &catalog.Instance{Service: "web", ID: "w1", Address: "10.0.1.5", Port: 8080, Weight: 100, Status: catalog.Passing},
	}, {
		name:  "ours, every field",
		key:   "/services/web/w1",
		value: `{"address":"10.0.1.5","port":8080,"tags":["v1"],"meta":{"k":"v"},"weight":0,"status":"warning","ttl":"10s","other":1}`,
		want:  &catalog.Instance{Service: "web", ID: "w1", Address: "10.0.1.5", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{"k": "v"}, Weight: 0, Status: catalog.Warning},
	}, {
		name:  "ours, empty tags and meta",
		key:   "/services/web/w1",
		value: `{"address":"web-1.example.com","port":1,"tags":[],"meta":{}}`,
		want:  &catalog.Instance{Service: "web", ID: "w1", Address: "web-1.example.com", Port: 1, Weight: 100, Status: catalog.Passing},
	}, {
		name: "ours, bad JSON", key: "/services/web/w1", value: `{"address":`,
		service: "web", err: "not a JSON object",
	}, {
		name: "ours, port as a string", key: "/services/web/w1", value: `{"address":"10.0.1.5","port":"80"}`,
		service: "web", err: "not an instance",
	}, {
		name: "ours, port out of range", key: "/services/web/w1", value: `{"address":"10.0.1.5","port":70000}`,
		service: "web", err: "port: must be between 1 and 65535",
	}, {
		name: "ours, bad status", key: "/services/web/w1", value: `{"address":"10.0.1.5","port":80,"status":"up"}`,
		service: "web", err: `status "up"`,
	}, {
		name: "ours, weight too large", key: "/services/web/w1", value: `{"address":"10.0.1.5","port":80,"weight":10001}`,
		service: "web", err: "weight",
	}, {
		name: "ours, id not a label", key: "/services/web/W_1", value: `{"address":"10.0.1.5","port":80}`,
		service: "web", err: "id:",
	}, {
		name: "ours, id with a slash", key: "/services/web/a/b", value: `{"address":"10.0.1.5","port":80}`,
		service: "web", err: "id:",
	}, {
		name: "a JSON array", key: "/services/web/w1", value: `[1]`,
		service: "web", err: "not a JSON object",
	}, {
		name: "service not a label", key: "/services/Web/w1", value: `{"address":"10.0.1.5","port":80}`,
		err: "the key's service:",
	}, {
		name: "no id", key: "/services/web", value: `{"address":"10.0.1.5","port":80}`,
		err: "not /services/<service>/<id>",
	}, {
		name: "no id after the slash", key: "/services/web/", value: `{"address":"10.0.1.5","port":80}`,
		err: "not /services/<service>/<id>",
	}, {
		name:  "grpc-go, IPv4",
		key:   "/services/web/10.0.1.5:8080",
		value: `{"Op":0,"Addr":"10.0.1.5:8080","Metadata":null}`,
		want:  &catalog.Instance{Service: "web", ID: "10-0-1-5-8080", Address: "10.0.1.5", Port: 8080, Weight: 100, Status: catalog.Passing},
	}, {
		name:  "grpc-go, any key, string metadata",
		key:   "/services/web/anything/at/all",
		value: `{"Op":0,"Addr":"10.0.1.5:8080","Metadata":{"zone":"a","n":1}}`,
		want:  &catalog.Instance{Service: "web", ID: "10-0-1-5-8080", Address: "10.0.1.5", Port: 8080, Meta: map[string]string{"zone": "a"}, Weight: 100, Status: catalog.Passing},
	}, {
		name:  "grpc-go, metadata that makes no valid meta",
		key:   "/services/web/x",
		value: `{"Addr":"10.0.1.5:8080","Metadata":{"no spaces":"a"}}`,
		want:  &catalog.Instance{Service: "web", ID: "10-0-1-5-8080", Address: "10.0.1.5", Port: 8080, Weight: 100, Status: catalog.Passing},
	}, {
		name:  "grpc-go, IPv6",
		key:   "/services/web/x",
		value: `{"Addr":"[2001:db8::1]:80"}`,
		want:  &catalog.Instance{Service: "web", ID: "2001-0db8-0000-0000-0000-0000-0000-0001-80", Address: "2001:db8::1", Port: 80, Weight: 100, Status: catalog.Passing},
	}, {
		name:  "grpc-go, host name",
		key:   "/services/web/x",
		value: `{"Addr":"Web-1.Example.com:443"}`,
		want:  &catalog.Instance{Service: "web", ID: "web-1-example-com-443", Address: "Web-1.Example.com", Port: 443, Weight: 100, Status: catalog.Passing},
	}, {
		name: "grpc-go, tombstone", key: "/services/web/x", value: `{"Op":1,"Addr":"10.0.1.5:8080"}`,
		service: "web",
	}, {
		name: "grpc-go, unknown Op", key: "/services/web/x", value: `{"Op":7,"Addr":"10.0.1.5:8080"}`,
		service: "web", err: "Op is 7",
	}, {
		name: "grpc-go, no port", key: "/services/web/x", value: `{"Op":0,"Addr":"10.0.1.5"}`,
		service: "web", err: "not host:port",
	}, {
		name: "grpc-go, port out of range", key: "/services/web/x", value: `{"Op":0,"Addr":"10.0.1.5:0"}`,
		service: "web", err: "port: must be between",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := decode(prefix, tc.key, []byte(tc.value))
			if diff := cmp.Diff(tc.want, e.inst); diff != "" {
				t.Errorf("instance (-want +got):\n%s", diff)
			}
			wantSvc := tc.service
			if tc.want != nil {
				wantSvc = tc.want.Service
			}
			if e.service != wantSvc {
				t.Errorf("service %q, want %q", e.service, wantSvc)
			}
			switch {
			case tc.err == "" && e.err != nil:
				t.Errorf("error %v, want none", e.err)
			case tc.err != "" && (e.err == nil || !strings.Contains(e.err.Error(), tc.err)):
				t.Errorf("error %v, want one saying %q", e.err, tc.err)
			}
		})
	}
}

func TestIDFromAddr(t *testing.T) {
	long := strings.Repeat("a", 60) + ".example.com"
	for _, tc := range []struct{ host, port, want string }{
		{"10.0.1.5", "8080", "10-0-1-5-8080"},
		{"::1", "80", "0000-0000-0000-0000-0000-0000-0000-0001-80"},
		{"fe80::1%eth0", "80", "fe80-0000-0000-0000-0000-0000-0000-0001-eth0-80"},
		{"WEB.example.com.", "443", "web-example-com-443"},
	} {
		got := idFromAddr(tc.host, tc.port)
		if got != tc.want {
			t.Errorf("idFromAddr(%q, %q) = %q, want %q", tc.host, tc.port, got, tc.want)
		}
		if err := catalog.ValidateName("id", got); err != nil {
			t.Errorf("idFromAddr(%q, %q) = %q: %v", tc.host, tc.port, got, err)
		}
	}
	a, b := idFromAddr(long, "443"), idFromAddr(long+"x", "443")
	if len(a) != catalog.MaxNameLength || !strings.HasPrefix(a, strings.Repeat("a", 50)) || catalog.ValidateName("id", a) != nil {
		t.Errorf("idFromAddr of a long host name = %q, want its start cut to a label", a)
	}
	if a == b {
		t.Errorf("two long host names give the same id %q", a)
	}
}

func TestNew(t *testing.T) {
	type want struct {
		Endpoints          []string
		Prefix             string
		Username, Password string
		TLS                bool
	}
	for _, tc := range []struct {
		spec string
		want want
	}{
		{"etcd://127.0.0.1:2379/services", want{Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/services/"}},
		{"etcd://127.0.0.1:2379/services/", want{Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/services/"}},
		{"etcd://a,b:2380/disco/services", want{Endpoints: []string{"http://a:2379", "http://b:2380"}, Prefix: "/disco/services/"}},
		{"etcd://[::1]:2379/services", want{Endpoints: []string{"http://[::1]:2379"}, Prefix: "/services/"}},
		{"etcd://u:p%40ss@h:1/services", want{Endpoints: []string{"http://h:1"}, Prefix: "/services/", Username: "u", Password: "p@ss"}},
		{"etcd://h:1?prefix=services", want{Endpoints: []string{"http://h:1"}, Prefix: "services/"}},
		{"etcd://h:1/?prefix=services/", want{Endpoints: []string{"http://h:1"}, Prefix: "services/"}},
		{"etcd://h:1/services?tls=true", want{Endpoints: []string{"https://h:1"}, Prefix: "/services/", TLS: true}},
	} {
		u, err := url.Parse(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		e, err := New(u, source.Options{})
		if err != nil {
			t.Errorf("New(%q): %v", tc.spec, err)
			continue
		}
		got := want{Endpoints: e.endpoints, Prefix: e.prefix, Username: e.username, Password: e.password, TLS: e.tls != nil}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("New(%q) (-want +got):\n%s", tc.spec, diff)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for spec, want := range map[string]string{
		"etcd:///services":                      "want etcd://host:port",
		"etcd://127.0.0.1:2379":                 "want a key prefix",
		"etcd://127.0.0.1:2379/":                "want a key prefix",
		"etcd://127.0.0.1:2379//":               "want a key prefix",
		"etcd://h:99999/services":               "not host:port",
		"etcd://a,,b/services":                  "empty host",
		"etcd://u@h/services":                   "both a user and a password",
		"etcd://u:secret@h/services?what=1":     `unknown parameter "what"`,
		"etcd://h/services?prefix=x":            "not both",
		"etcd://h/services?tls=maybe":           "want true or false",
		"etcd://h/services?cert=/c.pem":         "both cert and key",
		"etcd://h/services?ca=/nonexistent.pem": "nonexistent.pem",
		"etcd://h/services?tls=1&tls=0":         "given 2 times",
	} {
		_, err := source.New(spec, source.Options{Logger: slog.New(slog.DiscardHandler)})
		if err == nil || !errors.Is(err, source.ErrSpec) || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q) = %v, want ErrSpec saying %q", spec, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q): the error shows the password: %v", spec, err)
		}
	}
}
