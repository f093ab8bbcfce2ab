package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

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
	// NoDemo runs no demo backends.
	NoDemo bool `yaml:"no-demo"`
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
	f.BoolVar(&cfg.NoDemo, "no-demo", cfg.NoDemo, "start no demo backends (three instances of web)")
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
	}
	var rt *router.Router
	var rls router.Listeners
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
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var demoWait func()
	if !cfg.NoDemo {
		if demoWait, err = startDemo(ctx, api, cfg.Logger); err != nil {
			return fmt.Errorf("dev: the demo: %w", err)
		}
	}
	fmt.Fprint(out, banner(bannerInfo{
		api: api, dataDir: cfg.DataDir, dns: srv.DNSAddr(), agent: al, router: rls,
		table: cfg.Table, exec: ag != nil && cfg.Table != "", demo: !cfg.NoDemo, self: selfName(),
	}))
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
	if demoWait != nil {
		demoWait()
	}
	return err
}

// bannerInfo is what disco dev's banner tells of.
type bannerInfo struct {
	api, dataDir, dns, table string
	agent                    net.Listener // nil without an agent
	router                   router.Listeners
	exec, demo               bool
	self                     string // how to run disco again: bin/disco, disco
}

// banner is what disco dev prints at start: where everything is, and
// commands to try, each runnable as printed (the e2e test runs them).
func banner(b bannerInfo) string {
	var w strings.Builder
	fmt.Fprintf(&w, "\nDiscotech dev is running.\n")
	fmt.Fprintf(&w, "  registry API   %s   (data in %s)\n", b.api, b.dataDir)
	fmt.Fprintf(&w, "  metrics        %s/metrics\n", b.api)
	if b.dns != "" {
		fmt.Fprintf(&w, "  DNS            %s   (UDP and TCP)\n", b.dns)
	}
	if b.agent != nil {
		fmt.Fprintf(&w, "  agent status   http://%s/v1/agent/status\n", b.agent.Addr())
	}
	routerURL, adminURL := "", ""
	if b.router.Traffic != nil {
		routerURL, adminURL = "http://"+b.router.Traffic.Addr().String(), "http://"+b.router.Admin.Addr().String()
		fmt.Fprintf(&w, "  router         %s/   (routes from urlprefix- tags)\n", routerURL)
		fmt.Fprintf(&w, "  router admin   %s/   (its page: routes, backends; announce)\n", adminURL)
	}
	try := func(cmd, comment string) { fmt.Fprintf(&w, "  %-58s # %s\n", cmd, comment) }
	if b.demo {
		fmt.Fprintf(&w, "\nThe demo: three backends of web, built with the Go SDK (examples/backend):\nweb-1 and web-2 tagged v1, web-3 tagged v2; each heartbeats and serves vitals.\n")
	}
	fmt.Fprintf(&w, "\nTry, in another terminal:\n")
	if !b.demo {
		try(b.self+" register web 127.0.0.1:8080 --tag urlprefix-/ --ttl 10s", "keeps heartbeating until Ctrl-C")
	}
	if routerURL != "" {
		try("curl -s "+routerURL+"/", "through the router, to a backend of web")
		if b.demo {
			try("curl -s "+routerURL+"/v2/", "only web-3 (v2): urlprefix-/v2 strip=/v2")
		}
	}
	if host, port, err := net.SplitHostPort(b.dns); err == nil {
		try(fmt.Sprintf("dig @%s -p %s +short web.service.disco", host, port), "DNS: the backends' addresses")
		try(fmt.Sprintf("dig @%s -p %s +short SRV _web._tcp.service.disco", host, port), "DNS: SRV, with ports and weights")
	}
	if b.exec {
		flag := ""
		if b.table != shmtable.DefaultPath {
			flag = " --table " + b.table
		}
		try(b.self+" exec"+flag+" -- curl -s http://web.service.disco/", "connect() goes straight to a backend")
	}
	try(b.self+" --server "+b.api+" instances web", "the registry's view")
	try("curl -s "+b.api+"/v1/services/web", "the same, as JSON")
	if adminURL != "" {
		try("curl -s "+adminURL+"/backends", "the router's view: weights, latency, vitals")
	}
	fmt.Fprintf(&w, "\nCtrl-C stops it.\n")
	return w.String()
}

// selfName is how to run this binary again from the working directory:
// as invoked when that was a path (bin/disco), else "disco".
func selfName() string {
	if strings.Contains(os.Args[0], "/") && !strings.HasPrefix(os.Args[0], "/tmp/go-build") {
		return os.Args[0]
	}
	return "disco"
}
