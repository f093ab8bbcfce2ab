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
	"github.com/discotech/disco/router"
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
	// RouterListen and RouterAdmin are the router's ports; an empty
	// RouterListen runs no router.
	RouterListen string `yaml:"router-listen"`
	RouterAdmin  string `yaml:"router-admin"`
}

func newDevCmd(g *globals) *cobra.Command {
	rc := router.DefaultConfig()
	cfg := devConfig{Config: server.DefaultConfig(), AgentHTTP: agent.DefaultConfig().HTTP, Table: agent.DefaultConfig().Table,
		RouterListen: rc.Listen, RouterAdmin: rc.Admin}
	cfg.DataDir = "" // a temporary directory unless given
	cfg.Raft = ""    // in memory: one server, no raft port
	cfg.RaftMultiplier = 1
	var file string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process, with data in a temporary directory",
		Long: `Run a registry server, its DNS, a node agent and a router following it, in one process,
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
	f.StringVar(&cfg.RouterListen, "router-listen", cfg.RouterListen, "the router's traffic address (empty: no router)")
	f.StringVar(&cfg.RouterAdmin, "router-admin", cfg.RouterAdmin, "the router's admin address")
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
	var rt *router.Router
	var rls router.Listeners
	routerLine := ""
	if cfg.RouterListen != "" {
		rcfg := router.DefaultConfig()
		rcfg.Server = api
		rcfg.Listen, rcfg.Admin = cfg.RouterListen, cfg.RouterAdmin
		rcfg.StateDir = filepath.Join(cfg.DataDir, "router")
		rcfg.Logger = cfg.Logger
		if rt, err = router.New(rcfg); err == nil {
			rls, err = rt.Listen()
		}
		if err != nil {
			l.Close()
			if al != nil {
				al.Close()
			}
			return fmt.Errorf("dev: %w", err)
		}
		routerLine = fmt.Sprintf("  router         http://%s/   (routes from urlprefix- tags)\n  router admin   http://%s/   (routes, backends, announce)\n", rls.Traffic.Addr(), rls.Admin.Addr())
	}
	fmt.Fprintf(out, `
Discotech dev is running.
  registry API   %[1]s   (data in %[2]s)
  metrics        %[1]s/metrics
%[3]s%[5]s%[7]s
Try, in another terminal:
  disco register web 127.0.0.1:8080 --tag v1 --tag urlprefix-/ --ttl 10s   # keeps heartbeating until Ctrl-C
  disco services
  disco instances web
  disco watch web
  curl -s %[1]s/v1/services/web
%[4]s%[6]s%[8]s
Ctrl-C stops it.
`, api, cfg.DataDir, dnsLine(srv.DNSAddr()), digLines(srv.DNSAddr()), agentLine, execLine(ag != nil && cfg.Table != "", cfg.Table), routerLine, curlLine(rls))
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	// The agent and the router run beside the server; the first to fail
	// stops them all.
	var hosts []func(context.Context) error
	if ag != nil {
		hosts = append(hosts, func(ctx context.Context) error { return ag.Serve(ctx, al) })
	}
	if rt != nil {
		hosts = append(hosts, func(ctx context.Context) error { return rt.Serve(ctx, rls) })
	}
	errc := make(chan error, len(hosts))
	for _, h := range hosts {
		go func() {
			err := h(ctx)
			stop()
			errc <- err
		}()
	}
	err = srv.Serve(ctx, l)
	stop()
	for range hosts {
		if herr := <-errc; err == nil {
			err = herr
		}
	}
	return err
}

// curlLine is the request to try through the router.
func curlLine(ls router.Listeners) string {
	if ls.Traffic == nil {
		return ""
	}
	return fmt.Sprintf("  curl -s http://%s/   # through the router, to a backend tagged urlprefix-/\n", ls.Traffic.Addr())
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
