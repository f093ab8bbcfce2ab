package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/discotech/disco/config"
	"github.com/discotech/disco/dnsserver"
	"github.com/discotech/disco/server"
)

func newServerCmd(g *globals) *cobra.Command {
	cfg := server.DefaultConfig()
	cfg.DataDir = defaultDataDir("server")
	var file string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a registry server (raft-replicated catalog, HTTP API, health checks)",
		Long: `Run a registry server. A data dir with no raft state is bootstrapped as a
one-server cluster; an acknowledged write is on disk (fsynced raft log) before
the API answers.`,
		Args: cobra.NoArgs,
		RunE: g.runHost(&file, &cfg, &cfg.Logger, func(ctx context.Context) error { return runServer(ctx, cfg) }),
	}
	f := cmd.Flags()
	f.StringVar(&file, "config", "", "YAML config file; keys are the flag names")
	serverFlags(f, &cfg)
	f.StringVar(&cfg.Raft, "raft", cfg.Raft, "address raft listens on for peers")
	f.IntVar(&cfg.RaftMultiplier, "raft-multiplier", cfg.RaftMultiplier, "scale raft timers (200ms × this): 1 on one machine, 5 across a network")
	return cmd
}

// serverFlags binds the flags disco server and disco dev share.
func serverFlags(f *pflag.FlagSet, cfg *server.Config) {
	f.StringVar(&cfg.HTTP, "http", cfg.HTTP, "address of the HTTP API, UI and metrics")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the raft log, snapshots and node id")
	f.DurationVar(&cfg.TTLDeregisterAfter, "ttl-deregister-after", cfg.TTLDeregisterAfter, "remove TTL instances critical this long, unless they set deregister_after (0: never)")
	f.DurationVar(&cfg.WatchProgress, "watch-progress", cfg.WatchProgress, "progress line interval on idle watch streams")
	f.IntVar(&cfg.CheckConcurrency, "check-concurrency", cfg.CheckConcurrency, "health checks running at once, at most")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest request body accepted")
	dnsFlags(f, &cfg.DNS)
}

// dnsFlags binds the DNS flags of every host that answers DNS.
func dnsFlags(f *pflag.FlagSet, cfg *dnsserver.Config) {
	f.StringVar(&cfg.Addr, "dns", cfg.Addr, "address DNS answers on, UDP and TCP (empty: no DNS)")
	f.StringSliceVar(&cfg.Domains, "dns-domain", cfg.Domains, "service domains answered, e.g. disco,consul")
	f.DurationVar(&cfg.TTL, "dns-ttl", cfg.TTL, "TTL of DNS answers")
	f.DurationVar(&cfg.NegativeTTL, "dns-negative-ttl", cfg.NegativeTTL, "how long resolvers may cache NXDOMAIN and empty answers (the SOA minimum)")
}

// runHost is the RunE of a long-running command: it loads the config file,
// environment and flags into cfg, sets *logger, and runs.
func (g *globals) runHost(file *string, cfg any, logger **slog.Logger, run func(context.Context) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		log, err := g.hostSetup(cmd, file, cfg)
		if err != nil {
			return err
		}
		*logger = log
		return run(cmd.Context())
	}
}

// hostSetup loads a host's settings (config file, environment, flags) into
// cfg and returns the logger the global flags ask for.
func (g *globals) hostSetup(cmd *cobra.Command, file *string, cfg any) (*slog.Logger, error) {
	if err := loadConfig(cmd, file, cfg); err != nil {
		return nil, err
	}
	return g.logger()
}

// loadConfig resolves the config file (--config or DISCO_CONFIG) and loads
// file, environment and flags into cfg.
func loadConfig(cmd *cobra.Command, file *string, cfg any) error {
	if *file == "" {
		*file = os.Getenv(config.EnvName("config"))
	}
	return config.Load(cmd.Flags(), *file, cfg)
}

func runServer(ctx context.Context, cfg server.Config) error {
	srv, err := server.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.ListenAndServe(ctx)
}

// defaultDataDir is /var/lib/disco/<role> for root and
// ~/.local/share/disco/<role> for everyone else.
func defaultDataDir(role string) string {
	if os.Geteuid() == 0 {
		return filepath.Join("/var/lib/disco", role)
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "disco", role)
	}
	return fmt.Sprintf("disco-%s-data", role)
}
