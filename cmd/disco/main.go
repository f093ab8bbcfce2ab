// Command disco is Discotech in one binary: the registry server, the node
// agent, the edge router, and the client commands that talk to them. Each
// subcommand turns flags, a config file and DISCO_* variables into a host's
// Config and runs it; the work is done in the packages it calls.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/discotech/disco/client"
	"github.com/discotech/disco/config"
)

// globals are the flags every subcommand has.
type globals struct {
	logLevel  string
	logFormat string
	server    string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "disco:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "disco",
		Short: "Service discovery and load balancing, from the registry down to connect()",
		Long: `disco runs every part of Discotech: the registry server, the node agent,
and the client commands that register instances and read the catalog.

Every flag can also be set with a DISCO_* environment variable (--data-dir is
DISCO_DATA_DIR) or, for server, agent and dev, in the YAML file given by
--config.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			// Only the globals here: a subcommand's own flags are loaded by
			// the subcommand, together with its config file.
			return config.Load(cmd.Root().PersistentFlags(), "", g)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&g.server, "server", client.DefaultAddress, "registry server address, for the client commands")
	root.AddCommand(
		newServerCmd(g),
		newAgentCmd(g),
		newRouterCmd(g),
		newDevCmd(g),
		newExecCmd(g),
		newRegisterCmd(g),
		newDeregisterCmd(g),
		newServicesCmd(g),
		newInstancesCmd(g),
		newWatchCmd(g),
	)
	return root
}

// logger builds the process's logger from the global flags.
func (g *globals) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch g.logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return nil, fmt.Errorf("--log-format: %q is not text or json", g.logFormat)
	}
	l := slog.New(h)
	slog.SetDefault(l)
	return l, nil
}

func (g *globals) client() (*client.Client, error) {
	return client.New(g.server, nil)
}
