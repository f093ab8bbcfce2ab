// Package nginx runs nginx for the end-to-end benchmarks, as a backend or
// as a proxy: in the foreground, as a peer of the run, with a configuration
// of the benchmark's own and every file in the run's directory.
package nginx

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/discotech/disco/bench/internal/peer"
)

// Start writes dir/nginx.conf and starts nginx with it as the peer name.
// http is what the http block holds besides the settings every benchmark
// shares: its servers and upstreams. Those settings are workers worker
// processes (and the master only when there is more than one, so that one
// process is all of nginx otherwise), errors only in the error log, no
// access log, temporary files in dir rather than under /var/lib/nginx, and
// keep-alive limits raised so that no connection is closed during a run
// (nginx closes one after 1,000 requests by default).
func Start(name, bin, dir string, workers int, http string) (*peer.Process, error) {
	if err := os.MkdirAll(filepath.Join(dir, "temp"), 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	master := "off"
	if workers > 1 {
		master = "on"
	}
	var temp strings.Builder
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temp, "    %s_temp_path %s/temp/%s;\n", t, dir, t)
	}
	conf := fmt.Sprintf(`# %[1]s: written by the benchmark.
daemon off;
master_process %[2]s;
worker_processes %[3]d;
pid %[4]s/nginx.pid;
error_log %[4]s/error.log error;
events {
    worker_connections 16384;
}
http {
    access_log off;
%[5]s    keepalive_requests 100000000;
    keepalive_timeout 120s;
%[6]s}
`, name, master, workers, dir, temp.String(), http)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return peer.Start(name, dir, bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", file)
}

// Version is "nginx 1.22.1".
func Version(bin string) string { return peer.Version("nginx", bin, "-v") }
