package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/discotech/disco/shim"
	"github.com/discotech/disco/shmtable"
)

func newExecCmd(g *globals) *cobra.Command {
	table := shmtable.DefaultPath
	cmd := &cobra.Command{
		Use:   "exec -- CMD [ARGS...]",
		Short: "Run a program with libdisco.so preloaded, so service names and connect() go through the node's table",
		Long: `Run CMD with libdisco.so preloaded (LD_PRELOAD) and pointed at the local agent's
shared-memory table: web.service.disco resolves to the service's magic address
with no I/O, and connect() to it goes straight to a healthy backend, chosen by
weight, with no proxy hop. The disco binary carries the library; nothing else
needs installing. Static and pure-Go programs cannot be preloaded: they reach
services through the agent's DNS and fallback proxy instead.

  disco exec -- curl http://web.service.disco:8080/`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lib, err := shimPath()
			if err != nil {
				return err
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return fmt.Errorf("exec: %w", err)
			}
			env := os.Environ()
			env = setEnv(env, "LD_PRELOAD", joinPreload(lib, os.Getenv("LD_PRELOAD")))
			env = setEnv(env, "DISCO_TABLE", table)
			// Replace this process: signals, exit status and the terminal
			// are the program's, as if it had been run directly.
			return syscall.Exec(path, args, env)
		},
	}
	cmd.Flags().StringVar(&table, "table", table, "the agent's shared-memory table")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// shimPath returns a path to libdisco.so: the one the binary carries,
// written once to a per-user cache directory under a name that is its
// hash, or else DISCO_SHIM, or libdisco.so beside the binary.
func shimPath() (string, error) {
	if lib := shim.Library(); lib != nil {
		return cacheShim(lib)
	}
	if p := os.Getenv("DISCO_SHIM"); p != "" {
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "libdisco.so")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("exec: this disco binary does not carry libdisco.so (build it with make build), and there is none beside it; set DISCO_SHIM to one")
}

// cacheShim writes lib where the dynamic loader can map it, unless a copy
// with the same content is there already.
func cacheShim(lib []byte) (string, error) {
	sum := sha256.Sum256(lib)
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("disco-%d", os.Getuid()))
	} else {
		dir = filepath.Join(dir, "disco")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("exec: %w", err)
	}
	// A directory someone else owns could hold a library of theirs.
	if fi, err := os.Stat(dir); err != nil || !ownedByMe(fi) || fi.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("exec: %s is not a private directory of this user; remove it or set XDG_RUNTIME_DIR", dir)
	}
	path := filepath.Join(dir, "libdisco-"+hex.EncodeToString(sum[:8])+".so")
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, lib) {
		return path, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("exec: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "libdisco-*.tmp")
	if err != nil {
		return "", fmt.Errorf("exec: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(lib); err != nil {
		tmp.Close()
		return "", fmt.Errorf("exec: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", fmt.Errorf("exec: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("exec: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("exec: %w", err)
	}
	return path, nil
}

func ownedByMe(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}

// joinPreload puts lib first in an LD_PRELOAD list, once.
func joinPreload(lib, existing string) string {
	parts := []string{lib}
	for _, p := range strings.FieldsFunc(existing, func(r rune) bool { return r == ':' || r == ' ' }) {
		if p != lib {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ":")
}

// setEnv sets key=value in env, replacing any earlier value.
func setEnv(env []string, key, value string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}
