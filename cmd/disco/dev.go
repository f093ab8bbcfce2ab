package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/discotech/disco/agent"
	"github.com/discotech/disco/server"
	"github.com/discotech/disco/shmtable"
)

// devConfig is disco dev's settings: the server's, and the agent's port.
type devConfig struct {
	server.Config `yaml:",inline"`
	// AgentHTTP is the agent's status and metrics address; empty runs no
	// agent.
	AgentHTTP string `yaml:"agent-http"`
	// Table is where the agent writes the shared-memory table.
	Table string `yaml:"table"`
}

func newDevCmd(g *globals) *cobra.Command {
	cfg := devConfig{Config: server.DefaultConfig(), AgentHTTP: agent.DefaultConfig().HTTP, Table: agent.DefaultConfig().Table}
	cfg.DataDir = "" // a temporary directory unless given
	cfg.Raft = ""    // in memory: one server, no raft port
	cfg.RaftMultiplier = 1
	var file string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process, with data in a temporary directory",
		Long: `Run a registry server, its DNS and a node agent following it, in one process,
for trying Discotech out: raft in memory, fast timers, and the data in a
temporary directory removed on exit (unless --data-dir is given). It prints
what to try next.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.hostSetup(cmd, &file, &cfg)
			if err != nil {
				return err
			}
			cfg.Logger = log
			if cfg.DataDir == "" {
				dir, err := os.MkdirTemp("", "disco-dev-")
				if err != nil {
					return fmt.Errorf("dev: %w", err)
				}
				defer os.RemoveAll(dir)
				cfg.DataDir = dir
			}
			return runDev(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "config", "", "YAML config file; keys are the flag names")
	serverFlags(f, &cfg.Config)
	f.StringVar(&cfg.AgentHTTP, "agent-http", cfg.AgentHTTP, "the agent's status and metrics address (empty: no agent)")
	f.StringVar(&cfg.Table, "table", cfg.Table, "the shared-memory table the agent writes for libdisco.so (empty: none)")
	return cmd
}

func runDev(ctx context.Context, cfg devConfig, out io.Writer) error {
	srv, err := server.New(cfg.Config)
	if err != nil {
		return err
	}
	defer srv.Close()
	l, err := srv.Listen()
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	select {
	case <-srv.Store().Restored():
	case <-ctx.Done():
		l.Close()
		return nil
	}
	api := "http://" + l.Addr().String()

	// The agent follows the server, as an agent on any node would; in dev
	// the server's DNS is the one DNS.
	var ag *agent.Agent
	var al net.Listener
	agentLine := ""
	if cfg.AgentHTTP != "" {
		ac := agent.DefaultConfig()
		ac.Sources = []string{"disco+" + api}
		ac.StateDir = filepath.Join(cfg.DataDir, "agent")
		ac.HTTP = cfg.AgentHTTP
		ac.DNS.Addr = ""
		ac.Table = cfg.Table
		ac.Logger = cfg.Logger
		if ag, err = agent.New(ac); err != nil {
			l.Close()
			return fmt.Errorf("dev: %w", err)
		}
		if al, err = ag.Listen(); err != nil {
			l.Close()
			return fmt.Errorf("dev: %w", err)
		}
		agentLine = fmt.Sprintf("  agent status   http://%s/v1/agent/status\n", al.Addr())
	}
	fmt.Fprintf(out, `
Discotech dev is running.
  registry API   %[1]s   (data in %[2]s)
  metrics        %[1]s/metrics
%[3]s%[5]s
Try, in another terminal:
  disco register web 127.0.0.1:8080 --tag v1 --ttl 10s   # keeps heartbeating until Ctrl-C
  disco services
  disco instances web
  disco watch web
  curl -s %[1]s/v1/services/web
%[4]s%[6]s
Ctrl-C stops it.
`, api, cfg.DataDir, dnsLine(srv.DNSAddr()), digLines(srv.DNSAddr()), agentLine, execLine(ag != nil && cfg.Table != "", cfg.Table))
	if ag == nil {
		return srv.Serve(ctx, l)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- ag.Serve(ctx, al) }()
	err = srv.Serve(ctx, l)
	stop()
	if aerr := <-errc; err == nil {
		err = aerr
	}
	return err
}

// execLine is the interception to try, when the agent writes a table.
func execLine(on bool, table string) string {
	if !on {
		return ""
	}
	flag := ""
	if table != shmtable.DefaultPath {
		flag = " --table " + table
	}
	return fmt.Sprintf("  disco exec%s -- curl -s http://web.service.disco:8080/   # connect() goes straight to a backend\n", flag)
}

func dnsLine(addr string) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf("  DNS            %s   (UDP and TCP)\n", addr)
}

// digLines are the DNS queries to try, against addr.
func digLines(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(`  dig @%[1]s -p %[2]s +short web.service.disco
  dig @%[1]s -p %[2]s +short SRV _web._tcp.service.disco
`, host, port)
}
