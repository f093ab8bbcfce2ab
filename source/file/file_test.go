package file

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/discotech/disco/source"
	"github.com/discotech/disco/source/sourcetest"
)

// write replaces the file the way editors and config tools do: a new file
// renamed over the old one.
func write(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, path string) *sourcetest.Recorder {
	t.Helper()
	src, err := source.New("file://"+path, source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := sourcetest.NewRecorder()
	sourcetest.Run(t, src, rec)
	return rec
}

func TestReadsAndFollowsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "services.yaml")
	write(t, path, `
services:
  web:
    - {id: w1, address: 10.0.1.5, port: 8080, tags: [v1], weight: 100}
    - {id: w2, address: 10.0.1.6, port: 8080}
  db:
    - {address: db1.internal, port: 5432, weight: 0}
`)
	rec := start(t, path)
	rec.WaitState(t, strings.Join([]string{
		"db/db-db1-internal-5432 db1.internal:5432 passing weight=0",
		"web/w1 10.0.1.5:8080 passing weight=100 tags=v1",
		"web/w2 10.0.1.6:8080 passing weight=100",
	}, "\n"), 5*time.Second)

	// JSON works too, and a service that is gone from the file is gone.
	write(t, path, `{"services": {"web": [{"id": "w3", "address": "10.0.1.7", "port": 9090}]}}`)
	rec.WaitState(t, "web/w3 10.0.1.7:9090 passing weight=100", 5*time.Second)

	// An instance that breaks a rule is left out; the rest applies.
	write(t, path, `
services:
  web:
    - {id: w3, address: 10.0.1.7, port: 9090}
    - {id: Bad_Id, address: 10.0.1.8, port: 9090}
    - {id: w4, address: 10.0.1.9, port: 70000}
    - {id: w3, address: 10.0.1.10, port: 9090}
  Bad_Service:
    - {id: x, address: 10.0.1.11, port: 1}
`)
	rec.WaitFor(t, "the update with the bad entries", 5*time.Second, func(r *sourcetest.Recorder) bool { n, _ := r.Counts(); return n == 3 })
	if got := rec.State(); got != "web/w3 10.0.1.7:9090 passing weight=100" {
		t.Errorf("after a file with bad entries: %s", got)
	}
}

func TestBadFileKeepsTheLastGoodReading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "services.yaml")
	write(t, path, "services:\n  web:\n    - {id: w1, address: 10.0.1.5, port: 8080}\n")
	rec := start(t, path)
	want := "web/w1 10.0.1.5:8080 passing weight=100"
	rec.WaitState(t, want, 5*time.Second)
	for _, bad := range []string{
		"services:\n  web: [ {id: w1, address: 10.0.1.5",        // cut short
		"services:\n  web:\n    - {id: w1, adress: 10.0.1.5}\n", // unknown key
		"servics: {}\n", // unknown key at the top
		"\x00\x01\x02 not yaml at all {{{",
	} {
		_, before := rec.Counts()
		write(t, path, bad)
		rec.WaitFor(t, "a failure for "+bad, 5*time.Second, func(r *sourcetest.Recorder) bool { _, f := r.Counts(); return f > before })
		if got := rec.State(); got != want {
			t.Fatalf("after %q the state is %s, want the last good reading", bad, got)
		}
	}
	// The file vanishes: a failure, the last reading stands; it comes back.
	os.Remove(path)
	rec.WaitFor(t, "a failure for the missing file", 5*time.Second, func(r *sourcetest.Recorder) bool {
		err := r.LastFailure()
		return err != nil && strings.Contains(err.Error(), "no such file")
	})
	if got := rec.State(); got != want {
		t.Fatalf("after the file vanished: %s", got)
	}
	write(t, path, "services:\n  web:\n    - {id: w2, address: 10.0.1.6, port: 8080}\n")
	rec.WaitState(t, "web/w2 10.0.1.6:8080 passing weight=100", 5*time.Second)
}

func TestSpec(t *testing.T) {
	for _, spec := range []string{"file://host/etc/x.yaml", "file://"} {
		if _, err := source.New(spec, source.Options{}); err == nil {
			t.Errorf("source.New(%q) accepted it", spec)
		}
	}
}
