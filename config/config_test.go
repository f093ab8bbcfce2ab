package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

type settings struct {
	HTTP  string        `yaml:"http"`
	Wait  time.Duration `yaml:"wait"`
	Count int           `yaml:"count"`
	Tags  []string      `yaml:"tag"`
}

func flags(s *settings) *pflag.FlagSet {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.StringVar(&s.HTTP, "http", "127.0.0.1:7700", "")
	fs.DurationVar(&s.Wait, "wait", 10*time.Second, "")
	fs.IntVar(&s.Count, "count", 1, "")
	fs.StringArrayVar(&s.Tags, "tag", nil, "")
	return fs
}

func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("http: 0.0.0.0:1\nwait: 1m\ncount: 5\ntag: [a, b]\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string
		want settings
	}{
		{"defaults", nil, nil, "", settings{HTTP: "127.0.0.1:7700", Wait: 10 * time.Second, Count: 1}},
		{"file over defaults", nil, nil, file, settings{HTTP: "0.0.0.0:1", Wait: time.Minute, Count: 5, Tags: []string{"a", "b"}}},
		{"env over file", nil, map[string]string{"DISCO_WAIT": "2m", "DISCO_TAG": "x,y"}, file,
			settings{HTTP: "0.0.0.0:1", Wait: 2 * time.Minute, Count: 5, Tags: []string{"x", "y"}}},
		{"flags over env and file", []string{"--wait=3s", "--tag=z", "--count=9"}, map[string]string{"DISCO_WAIT": "2m", "DISCO_COUNT": "7"}, file,
			settings{HTTP: "0.0.0.0:1", Wait: 3 * time.Second, Count: 9, Tags: []string{"z"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var s settings
			fs := flags(&s)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := Load(fs, tc.file, &s); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, s); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("htp: 0.0.0.0:1\n"), 0o644)
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o644)

	var s settings
	if err := Load(flags(&s), typo, &s); err == nil || !strings.Contains(err.Error(), "field htp not found") {
		t.Errorf("unknown key: %v", err)
	}
	if err := Load(flags(&s), filepath.Join(dir, "missing.yaml"), &s); err == nil {
		t.Error("missing file: no error")
	}
	if err := Load(flags(&s), empty, &s); err != nil {
		t.Errorf("empty file: %v", err)
	}
	t.Setenv("DISCO_COUNT", "many")
	if err := Load(flags(&s), "", &s); err == nil || !strings.Contains(err.Error(), "DISCO_COUNT") {
		t.Errorf("bad env value: %v", err)
	}
}
