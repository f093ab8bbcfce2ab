package peer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Find returns the binary to run as name: given, when the benchmark's
// -<name> flag named one (it must exist); else name on PATH, or in
// /usr/sbin or /sbin, where Debian puts daemons that are not on a user's
// PATH. pkg is the Debian package that installs it, for the error.
func Find(given, name, pkg string) (string, error) {
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return "", fmt.Errorf("-%s: %w", name, err)
		}
		return given, nil
	}
	for _, p := range []string{name, filepath.Join("/usr/sbin", name), filepath.Join("/sbin", name)} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/sbin: install it (Debian: apt-get install %s) or pass -%s PATH", name, pkg, name)
}

// BuildDisco builds the disco binary from the working tree into bin, with
// the local toolchain (GOTOOLCHAIN=local). The benchmark must run inside
// the module.
func BuildDisco(ctx context.Context, bin string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/discotech/disco/cmd/disco")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build disco (run from the repository, or pass -disco PATH): %w", err)
	}
	return nil
}

// FirstLine runs bin with args and returns the first line of what it
// prints (stdout and stderr: nginx -v writes to stderr), trimmed, whatever
// its exit status (wrk -v exits 1); "" when it cannot run. It is for version
// strings.
func FirstLine(bin string, args ...string) string {
	b, _ := exec.Command(bin, args...).CombinedOutput()
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(first)
}

// Version runs bin with args (its version flag) and returns "name V", V
// being the word after "version" in the first line of what it prints:
// "HAProxy version 2.6.12-1+deb12u4 2026/10/17" is "haproxy
// 2.6.12-1+deb12u4"; "nginx version: nginx/1.22.1" is "nginx 1.22.1";
// "etcd Version: 3.4.23" is "etcd 3.4.23". It is "name (version unknown)"
// when there is no such word.
func Version(name, bin string, args ...string) string {
	return versionIn(name, FirstLine(bin, args...))
}

func versionIn(name, line string) string {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if strings.EqualFold(strings.TrimSuffix(f[i], ":"), "version") {
			v := f[i+1]
			if _, after, ok := strings.Cut(v, "/"); ok {
				v = after
			}
			return name + " " + v
		}
	}
	return name + " (version unknown)"
}
