package main

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/discotech/disco/agent"
)

func newAgentCmd(g *globals) *cobra.Command {
	cfg := agent.DefaultConfig()
	cfg.StateDir = defaultDataDir("agent")
	var file string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: sources of truth → guard → DNS, with status and metrics",
		Long: `Run the node agent. It follows each --source (default: the local registry,
` + agent.DefaultSource + `), merges what they report, holds large removals until
they are confirmed, keeps the last-known-good state in --state-dir, answers DNS
from the result, and shows it all at GET /v1/agent/status.

Source specs:
  disco+http://127.0.0.1:7700                    the registry, watched
  file:///etc/disco/services.yaml                a flat file, reloaded on change
  dns-srv://127.0.0.1:53/_web._tcp.example.com   SRV records from that resolver
  etcd://127.0.0.1:2379/services                 an etcd key prefix
  zookeeper://127.0.0.1:2181/services            a ZooKeeper base path (Curator layout)`,
		Args: cobra.NoArgs,
		RunE: g.runHost(&file, &cfg, &cfg.Logger, func(ctx context.Context) error {
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return a.ListenAndServe(ctx)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&file, "config", "", "YAML config file; keys are the flag names")
	agentFlags(f, &cfg)
	f.StringVar(&cfg.HTTP, "http", cfg.HTTP, "address of the status and metrics endpoints")
	f.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "directory for the last-known-good state")
	dnsFlags(f, &cfg.DNS)
	return cmd
}

// agentFlags binds the agent flags disco agent and disco dev share.
func agentFlags(f *pflag.FlagSet, cfg *agent.Config) {
	f.StringArrayVar(&cfg.Sources, "source", cfg.Sources, "source of truth, repeatable, first wins for the same instance id (default "+agent.DefaultSource+")")
	f.DurationVar(&cfg.HoldWindow, "hold-window", cfg.HoldWindow, "how long a removal of more than half of a service's backends must be seen before it applies")
	f.DurationVar(&cfg.LKGMaxAge, "lkg-max-age", cfg.LKGMaxAge, "oldest last-known-good state used at start")
	f.DurationVar(&cfg.Refresh, "refresh", cfg.Refresh, "longest wait between looks of polling sources (dns-srv)")
	f.StringVar(&cfg.Table, "table", cfg.Table, "the shared-memory table libdisco.so reads (empty: none)")
	f.StringVar(&cfg.MagicRange, "magic-range", cfg.MagicRange, "IPv4 range services' magic addresses come from")
	f.BoolVar(&cfg.DNSMagic, "dns-magic", cfg.DNSMagic, "answer A queries for service names with their magic addresses")
	f.BoolVar(&cfg.Proxy, "proxy", cfg.Proxy, "run the fallback TCP proxy on the magic addresses")
	f.StringArrayVar(&cfg.ProxyPorts, "proxy-port", cfg.ProxyPorts, "an extra port the fallback proxy listens on: PORT for every service, SERVICE=PORT for one (repeatable)")
	f.StringVar(&cfg.Report, "report", cfg.Report, "UDP address libdisco.so reports connect failures to (empty: ignore them)")
	f.DurationVar(&cfg.VitalsInterval, "vitals-interval", cfg.VitalsInterval, "how often backends that serve vitals are polled for their table weights (0: never)")
	f.DurationVar(&cfg.EjectFor, "eject-for", cfg.EjectFor, "how long a backend programs keep failing to connect to gets weight 0 in the table")
}
