package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/discotech/disco/server"
)

func newDevCmd(g *globals) *cobra.Command {
	cfg := server.DefaultConfig()
	cfg.DataDir = "" // a temporary directory unless given
	cfg.Raft = ""    // in memory: one server, no raft port
	cfg.RaftMultiplier = 1
	var file string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process, with data in a temporary directory",
		Long: `Run a registry server in one process for trying Discotech out: raft in
memory, fast timers, and the data in a temporary directory removed on exit
(unless --data-dir is given). It prints what to try next.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadConfig(cmd, &file, &cfg); err != nil {
				return err
			}
			log, err := g.logger()
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
	serverFlags(f, &cfg)
	return cmd
}

func runDev(ctx context.Context, cfg server.Config, out io.Writer) error {
	srv, err := server.New(cfg)
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
	fmt.Fprintf(out, `
Discotech dev is running.
  registry API   %[1]s   (data in %[2]s)
  metrics        %[1]s/metrics
%[3]s
Try, in another terminal:
  disco register web 127.0.0.1:8080 --tag v1 --ttl 10s   # keeps heartbeating until Ctrl-C
  disco services
  disco instances web
  disco watch web
  curl -s %[1]s/v1/services/web
%[4]s
Ctrl-C stops it.
`, api, cfg.DataDir, dnsLine(srv.DNSAddr()), digLines(srv.DNSAddr()))
	return srv.Serve(ctx, l)
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
