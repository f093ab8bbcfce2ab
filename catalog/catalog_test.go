package catalog

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDurationJSON(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Second:        `"10s"`,
		time.Minute:             `"1m"`,
		90 * time.Second:        `"1m30s"`,
		time.Hour:               `"1h"`,
		time.Hour + time.Minute: `"1h1m"`,
		500 * time.Millisecond:  `"500ms"`,
	} {
		b, _ := json.Marshal(Duration(d))
		if string(b) != want {
			t.Errorf("marshal %s = %s, want %s", d, b, want)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || back.D() != d {
			t.Errorf("unmarshal %s = %s, %v", b, back, err)
		}
	}
	var d Duration
	for _, bad := range []string{`10`, `"10 seconds"`, `null`, `true`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil && bad != `null` {
			t.Errorf("unmarshal %s: no error", bad)
		}
	}
}

func TestValidHostname(t *testing.T) {
	for s, want := range map[string]bool{
		"db1.internal": true, "a": true, "a-b.c": true, "example.com.": true,
		"": false, "-a": false, "a-": false, "a..b": false, "under_score": false, "sp ace": false,
		string(make([]byte, 254)): false,
	} {
		if got := ValidHostname(s); got != want {
			t.Errorf("ValidHostname(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestRegistrationDefaults(t *testing.T) {
	r := Registration{Address: "10.0.0.1", Port: 80, Tags: []string{}, Check: &Check{Type: "tcp", Target: "10.0.0.1:80", Interval: Duration(2 * time.Second), DeregisterAfter: Duration(time.Minute)}}
	in, err := r.Instance("web", "w1")
	if err != nil {
		t.Fatal(err)
	}
	want := &Instance{Service: "web", ID: "w1", Address: "10.0.0.1", Port: 80, Weight: DefaultWeight,
		DeregisterAfter: Duration(time.Minute),
		Check: &Check{Type: "tcp", Target: "10.0.0.1:80", Interval: Duration(2 * time.Second), Timeout: Duration(2 * time.Second),
			Failures: DefaultCheckFailures, Successes: DefaultCheckSuccesses, DeregisterAfter: Duration(time.Minute)}}
	if diff := cmp.Diff(want, in); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if r.Check.Timeout != 0 {
		t.Error("Instance modified the registration's check")
	}
	zero := 0
	r = Registration{Address: "::1", Port: 80, Weight: &zero}
	if in, err := r.Instance("web", "w1"); err != nil || in.Weight != 0 {
		t.Errorf("weight 0 (drain): %v, %v", in, err)
	}
}

func TestValidationErrorsAreInvalid(t *testing.T) {
	r := Registration{Address: "", Port: 0}
	_, err := r.Instance("web", "w1")
	var ve *ValidationError
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || len(ve.Problems) != 2 {
		t.Fatalf("err = %v", err)
	}
	if ve.Problems[0].Field != "address" || ve.Problems[1].Field != "port" {
		t.Errorf("problems %+v", ve.Problems)
	}
}

func TestCloneSharesNothing(t *testing.T) {
	in := &Instance{Tags: []string{"a"}, Meta: map[string]string{"k": "v"}, Check: &Check{Type: "tcp"}, Vitals: &Vitals{Ready: true}}
	c := in.Clone()
	c.Tags[0], c.Meta["k"], c.Check.Type, c.Vitals.Ready = "b", "w", "http", false
	if in.Tags[0] != "a" || in.Meta["k"] != "v" || in.Check.Type != "tcp" || !in.Vitals.Ready {
		t.Errorf("Clone shares state: %+v", in)
	}
}

func TestLabel(t *testing.T) {
	long := strings.Repeat("x", 80)
	for raw, want := range map[string]string{
		"web-10.0.1.5-8080":                    "web-10-0-1-5-8080",
		"8D3C0A1E-0000-4000-8000-00000000ABCD": "8d3c0a1e-0000-4000-8000-00000000abcd",
		"[2001:db8::1]:443":                    "2001-db8-1-443",
		"--a__b--":                             "a-b",
	} {
		if got := Label(raw); got != want {
			t.Errorf("Label(%q) = %q, want %q", raw, got, want)
		}
	}
	for _, raw := range []string{long, long + "y", "___", ""} {
		got := Label(raw)
		if err := ValidateName("id", got); err != nil {
			t.Errorf("Label(%q) = %q, not a valid name: %v", raw, got, err)
		}
	}
	if Label(long) == Label(long+"y") {
		t.Errorf("two long texts got the same label")
	}
}

func TestVitalsURL(t *testing.T) {
	for _, c := range []struct {
		in   Instance
		want string
	}{
		{Instance{Address: "10.0.1.5", Port: 80}, ""},
		{Instance{Address: "10.0.1.5", Meta: map[string]string{"metrics_port": "9090"}}, "http://10.0.1.5:9090/metrics"},
		{Instance{Address: "::1", Meta: map[string]string{"metrics_port": "9090"}}, "http://[::1]:9090/metrics"},
		{Instance{Address: "10.0.1.5", Meta: map[string]string{"metrics_port": "99999"}}, ""},
		{Instance{Address: "10.0.1.5", Meta: map[string]string{"metrics_port": "x"}}, ""},
		{Instance{Address: "10.0.1.5", Meta: map[string]string{"metrics_port": "9090"},
			Check: &Check{Type: "vitals", Target: "http://10.0.1.5:7000/v"}}, "http://10.0.1.5:7000/v"},
		{Instance{Address: "10.0.1.5", Check: &Check{Type: "http", Target: "http://10.0.1.5/health"}}, ""},
	} {
		if got := c.in.VitalsURL(); got != c.want {
			t.Errorf("VitalsURL of %+v = %q, want %q", c.in, got, c.want)
		}
	}
}
