package main

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/discotech/disco/router"
)

func newRouterCmd(g *globals) *cobra.Command {
	cfg := router.DefaultConfig()
	cfg.StateDir = defaultDataDir("router")
	var file string
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Run the edge router: HTTP/1.1, HTTP/2 and TCP routes from urlprefix- tags",
		Long: `Run the router. It follows the registry (--server, and any --source), builds
routes from instances' tags in Fabio's syntax, and proxies requests on --listen
to a backend picked by power of two choices over latency, with retries, outlier
ejection and vitals-driven weights. Backends may also announce themselves on
the admin port (POST /register), which serves GET /backends, /routes, /metrics
and a page at /.

Route tags (on instances):
  urlprefix-/api                      requests to /api... on any host
  urlprefix-shop.example.com/         every request for shop.example.com
  urlprefix-/api strip=/api           ... forwarded without the /api prefix
  urlprefix-/ weight=0.1              these instances get 10% of / (a canary)
  urlprefix-:5432 proto=tcp           a TCP route on port 5432

Overrides (--routes or the config file's routes:), Fabio's route language:
  route add web /api http://10.0.0.1:8080/
  route weight web / weight 0.05 tags "v2"
  route del web /old`,
		Args: cobra.NoArgs,
		RunE: g.runHost(&file, &cfg, &cfg.Logger, func(ctx context.Context) error {
			r, err := router.New(cfg)
			if err != nil {
				return err
			}
			return r.ListenAndServe(ctx)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&file, "config", "", "YAML config file; keys are the flag names")
	f.StringVar(&cfg.Server, "server", cfg.Server, `the registry the routes come from ("" for none: announced backends only)`)
	f.StringArrayVar(&cfg.Sources, "source", cfg.Sources, "another source of truth, in disco agent's spec syntax (repeatable)")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "the traffic address (HTTP/1.1 and h2c); TCP routes listen on its host")
	f.StringVar(&cfg.Admin, "admin", cfg.Admin, "the admin address: announce protocol, /backends, /routes, metrics, page")
	f.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory for the sources' last-known-good state and the announced backends (empty: none)")
	f.StringVar(&cfg.AccessLog, "access-log", cfg.AccessLog, `access log: a file, "-" for standard output, "" for none`)
	routerFlags(f, &cfg)
	return cmd
}

// routerFlags binds the router flags disco router and disco dev share.
func routerFlags(f *pflag.FlagSet, cfg *router.Config) {
	f.StringVar(&cfg.Routes, "routes", cfg.Routes, "route overrides in Fabio's route language, one per line")
	f.StringVar(&cfg.Policy, "policy", cfg.Policy, "how a backend is picked: p2c, round-robin, random, least-request, hash, first")
	f.StringVar(&cfg.HashOn, "hash-on", cfg.HashOn, "what the hash policy hashes: client, header:NAME or cookie:NAME")
	f.DurationVar(&cfg.TryTimeout, "try-timeout", cfg.TryTimeout, "longest wait for a backend's response headers, per try")
	f.DurationVar(&cfg.ConnectTimeout, "connect-timeout", cfg.ConnectTimeout, "longest wait to connect to a backend")
	f.IntVar(&cfg.MaxRequests, "max-requests", cfg.MaxRequests, "circuit breaker: requests in flight to one backend at most")
	f.Float64Var(&cfg.RetryBudget, "retry-budget", cfg.RetryBudget, "share of a route's active requests that may be retries at once")
	f.DurationVar(&cfg.VitalsInterval, "vitals-interval", cfg.VitalsInterval, "how often each backend's vitals are read")
	f.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "certificate file: serve the traffic port over TLS (with --tls-key)")
	f.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "key file for --tls-cert")
	f.BoolVar(&cfg.Pprof, "pprof", cfg.Pprof, "serve Go's profiler at /debug/pprof/ on the admin port")
}
