// Package file is the source that reads services from a flat YAML or JSON
// file, and reads it again whenever it changes:
//
//	services:
//	  web:
//	    - {id: w1, address: 10.0.1.5, port: 8080, tags: [v1], weight: 100}
//	    - {id: w2, address: 10.0.1.6, port: 8080}
//
// Spec: file:///etc/disco/services.yaml. A file that cannot be read or
// parsed, or has unknown keys, is reported as a failure and changes
// nothing: the last good reading stands. An instance that breaks a rule
// (a name that is not a DNS label, a port out of range) is left out, with a
// log line, and the rest of the file applies.
package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

func init() { source.Register("file", New) }

// pollInterval is how often the file's metadata is checked. A stat is
// cheap; checking often keeps a change's delay well under a second without
// depending on inotify (which misses edits through some editors' renames
// and on some network file systems).
const pollInterval = 200 * time.Millisecond

// maxFileSize bounds the file read: a services file has no reason to be
// larger, and a mistaken path to a huge file must not eat memory.
const maxFileSize = 32 << 20

// File watches one file.
type File struct {
	path string
	log  *slog.Logger
}

// New makes the source for spec file:///path.
func New(spec *url.URL, opts source.Options) (source.Source, error) {
	if spec.Host != "" && spec.Host != "localhost" {
		return nil, source.Specf(spec, "want file:///absolute/path (three slashes), not a host %q", spec.Host)
	}
	if spec.Path == "" {
		return nil, source.Specf(spec, "want file:///absolute/path to a YAML or JSON file")
	}
	return &File{path: spec.Path, log: opts.Logger.With("source", spec.Redacted())}, nil
}

// Document is the file's format.
type Document struct {
	Services map[string][]Entry `yaml:"services" json:"services"`
}

// Entry is one instance in the file.
type Entry struct {
	ID      string            `yaml:"id"`
	Address string            `yaml:"address"`
	Port    int               `yaml:"port"`
	Tags    []string          `yaml:"tags"`
	Meta    map[string]string `yaml:"meta"`
	Weight  *int              `yaml:"weight"`
}

// Run reads the file, then reads it again each time its size, time or inode
// changes, until ctx is done.
func (f *File) Run(ctx context.Context, sink source.Sink) error {
	var last stamp
	lastErr := ""
	// A failure is logged and reported once, not on every poll.
	fail := func(err error) {
		if err.Error() != lastErr {
			f.log.Warn("source/file: the file is not usable; keeping what it said last", "err", err)
			sink.Fail(err)
		}
		lastErr = err.Error()
	}
	for {
		st, err := stat(f.path)
		switch {
		case err != nil:
			fail(fmt.Errorf("source/file: %w", err))
			last = stamp{}
		case st != last:
			last = st
			if u, err := f.read(); err != nil {
				fail(err)
			} else {
				lastErr = ""
				sink.Update(u)
			}
		}
		if !source.Sleep(ctx, pollInterval) {
			return nil
		}
	}
}

// stamp is what tells that a file changed.
type stamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func stat(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = sys.Ino
	}
	return s, nil
}

func (f *File) read() (source.Update, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return source.Update{}, fmt.Errorf("source/file: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return source.Update{}, fmt.Errorf("source/file: %s: %w", f.path, err)
	}
	if len(b) > maxFileSize {
		return source.Update{}, fmt.Errorf("source/file: %s is over %d MiB; is it the right file?", f.path, maxFileSize>>20)
	}
	return Parse(f.path, b, f.log)
}

// Parse decodes a services file (YAML, or JSON, which YAML reads too) into
// a full update. Instances that break a rule are left out and logged.
func Parse(name string, b []byte, log *slog.Logger) (source.Update, error) {
	var doc Document
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return source.Update{}, fmt.Errorf("source/file: %s: %w", name, err)
	}
	u := source.Update{Services: map[string][]*catalog.Instance{}, Full: true}
	names := make([]string, 0, len(doc.Services))
	for svc := range doc.Services {
		names = append(names, svc)
	}
	sort.Strings(names)
	for _, svc := range names {
		if err := catalog.ValidateName("service", svc); err != nil {
			log.Warn("source/file: service left out", "file", name, "service", svc, "err", err)
			continue
		}
		seen := map[string]bool{}
		list := []*catalog.Instance{}
		for i, e := range doc.Services[svc] {
			in := &catalog.Instance{Service: svc, ID: e.ID, Address: e.Address, Port: e.Port, Tags: e.Tags, Meta: e.Meta, Weight: catalog.DefaultWeight}
			if e.Weight != nil {
				in.Weight = *e.Weight
			}
			if in.ID == "" {
				in.ID = catalog.Label(fmt.Sprintf("%s-%s-%d", svc, e.Address, e.Port))
			}
			if err := source.Normalize(in); err != nil {
				log.Warn("source/file: instance left out", "file", name, "service", svc, "entry", i, "err", err)
				continue
			}
			if seen[in.ID] {
				log.Warn("source/file: instance left out: its id is used twice", "file", name, "service", svc, "id", in.ID)
				continue
			}
			seen[in.ID] = true
			list = append(list, in)
		}
		source.SortInstances(list)
		u.Services[svc] = list
	}
	return u, nil
}
