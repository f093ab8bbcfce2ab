package source

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
)

type nop struct{}

func (nop) Run(ctx context.Context, _ Sink) error { <-ctx.Done(); return nil }

// registerTestScheme registers the test's scheme once, however many times
// the test runs (go test -count).
var registerTestScheme sync.Once

func TestNewPicksTheScheme(t *testing.T) {
	registerTestScheme.Do(func() {
		Register("test-scheme", func(spec *url.URL, opts Options) (Source, error) {
			if spec.Host == "" {
				return nil, Specf(spec, "want a host")
			}
			return nop{}, nil
		})
	})
	if _, err := New("test-scheme://somewhere/x", Options{}); err != nil {
		t.Fatal(err)
	}
	for spec, want := range map[string]string{
		"test-scheme:///x":                     "want a host",
		"nosuch://x":                           `unknown scheme "nosuch"`,
		"no scheme at all":                     "want scheme://",
		"test-scheme://u:secret@somewhere\x7f": "want scheme://",
	} {
		_, err := New(spec, Options{})
		if err == nil || !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q) = %v, want ErrSpec saying %q", spec, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q): the error shows the password: %v", spec, err)
		}
	}
	if got := Redact("etcd://user:secret@127.0.0.1:2379/services"); strings.Contains(got, "secret") {
		t.Errorf("Redact kept the password: %s", got)
	}
}

func TestBackoffGrowsWithJitterAndResets(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	var last time.Duration
	for i := range 8 {
		d := b.Next()
		base := min(100*time.Millisecond<<i, time.Second)
		if d < base*8/10 || d > base*12/10 {
			t.Errorf("attempt %d: %s, want %s ±20%%", i, d, base)
		}
		last = d
	}
	if last < 800*time.Millisecond {
		t.Errorf("backoff did not reach its maximum: %s", last)
	}
	b.Reset()
	if d := b.Next(); d > 120*time.Millisecond {
		t.Errorf("after Reset: %s, want about 100ms", d)
	}
}

func TestNormalize(t *testing.T) {
	in := &catalog.Instance{Service: "web", ID: "w1", Address: "10.0.0.1", Port: 80, Weight: 100}
	if err := Normalize(in); err != nil || in.Status != catalog.Passing {
		t.Errorf("Normalize = %v, status %q", err, in.Status)
	}
	for _, bad := range []*catalog.Instance{
		{Service: "Web", ID: "w1", Address: "10.0.0.1", Port: 80, Weight: 100},
		{Service: "web", ID: "w1", Address: "10.0.0.1", Port: 0, Weight: 100},
		{Service: "web", ID: "w1", Address: "not an address", Port: 80, Weight: 100},
		{Service: "web", ID: "w1", Address: "10.0.0.1", Port: 80, Weight: 10001},
	} {
		if err := Normalize(bad); err == nil {
			t.Errorf("Normalize(%+v) accepted it", bad)
		}
	}
}

func TestLogOnce(t *testing.T) {
	var l LogOnce
	for i, step := range []struct {
		note, problem string
		forget        func(*LogOnce)
		want          bool
	}{
		{note: "/a", problem: "bad json", want: true},
		{note: "/a", problem: "bad json", want: false},   // the same again: quiet
		{note: "/a/b", problem: "bad json", want: true},  // another item
		{note: "/a", problem: "no port", want: true},     // another problem
		{note: "/a", problem: "bad json", want: true},    // and back
		{forget: func(l *LogOnce) { l.Forget("/a") }},    // good again
		{note: "/a", problem: "bad json", want: true},    // bad again: news
		{note: "/a/b", problem: "bad json", want: false}, // untouched by Forget("/a")
		{forget: func(l *LogOnce) { l.ForgetFunc(func(item string) bool { return strings.HasPrefix(item, "/a/") }) }},
		{note: "/a/b", problem: "bad json", want: true},
		{note: "/a", problem: "bad json", want: false},
	} {
		if step.forget != nil {
			step.forget(&l)
			continue
		}
		if got := l.Note(step.note, step.problem); got != step.want {
			t.Errorf("step %d: Note(%q, %q) = %v, want %v", i, step.note, step.problem, got, step.want)
		}
	}
}

func TestCloneInstancesSharesNothing(t *testing.T) {
	ins := []*catalog.Instance{{Service: "web", ID: "w1", Address: "10.0.1.5", Port: 80, Tags: []string{"v1"}, Meta: map[string]string{"k": "v"}}}
	c := CloneInstances(ins)
	if len(c) != 1 || c[0] == ins[0] || c[0].ID != "w1" || c[0].Tags[0] != "v1" || c[0].Meta["k"] != "v" {
		t.Fatalf("CloneInstances = %+v", c)
	}
	c[0].Tags[0], c[0].Meta["k"] = "v2", "x"
	if ins[0].Tags[0] != "v1" || ins[0].Meta["k"] != "v" {
		t.Errorf("the clone shares with the original: %+v", ins[0])
	}
}
