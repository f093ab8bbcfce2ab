// Package config fills a host's configuration struct from its three
// sources, in order of precedence: command-line flags, DISCO_* environment
// variables, a YAML config file, and the struct's defaults.
//
// One name serves all three: the flag --data-dir is the file key data-dir
// and the environment variable DISCO_DATA_DIR. Flags are bound to the
// struct's fields (pflag's XxxVar), and the struct's yaml tags carry the same
// names, so there is exactly one struct and no second list of settings.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// EnvName is the environment variable for flag name: DISCO_ and the name
// upper-cased, with '-' as '_'.
func EnvName(flag string) string {
	return "DISCO_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Load applies file (when not empty), then the environment, then again the
// flags given on the command line, to the struct target whose fields fs's
// flags are bound to. Unknown keys in the file are an error, as are
// environment values a flag cannot parse.
func Load(fs *pflag.FlagSet, file string, target any) error {
	// Remember what the command line said, since the file and the
	// environment write to the same fields and must not win over it.
	// (Changed, not Visit: cobra parses into a merged flag set that shares
	// the *Flag values but not the set's own record of what was given.)
	given := map[string][]string{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			given[f.Name] = values(f)
		}
	})

	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(target); err != nil && !errors.Is(err, io.EOF) { // an empty file is fine
			return fmt.Errorf("config: %s: %w", file, err)
		}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil {
			return
		}
		name := EnvName(f.Name)
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if sv, isSlice := f.Value.(pflag.SliceValue); isSlice {
			err = sv.Replace(strings.Split(v, ","))
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			err = fmt.Errorf("config: %s=%q: %w", name, v, err)
		}
	})
	if err != nil {
		return err
	}
	for name, vs := range given {
		f := fs.Lookup(name)
		if sv, isSlice := f.Value.(pflag.SliceValue); isSlice {
			err = sv.Replace(vs)
		} else {
			err = f.Value.Set(vs[0])
		}
		if err != nil {
			return fmt.Errorf("config: --%s: %w", name, err)
		}
	}
	return nil
}

func values(f *pflag.Flag) []string {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		return append([]string(nil), sv.GetSlice()...)
	}
	return []string{f.Value.String()}
}
