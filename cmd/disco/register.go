package main

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/config"
)

type registerFlags struct {
	id              string
	tags            []string
	meta            []string
	weight          int
	ttl             time.Duration
	check           string
	checkInterval   time.Duration
	checkTimeout    time.Duration
	deregisterAfter time.Duration
	once            bool
}

func newRegisterCmd(g *globals) *cobra.Command {
	var rf registerFlags
	cmd := &cobra.Command{
		Use:   "register SERVICE ADDR:PORT",
		Short: "Register an instance (with --ttl, keep it alive until interrupted)",
		Long: `Register an instance of SERVICE at ADDR:PORT.

With --ttl the instance must heartbeat: disco register then stays in the
foreground, heartbeating at a third of the TTL and registering again if the
server forgets it, and deregisters on Ctrl-C or SIGTERM. Use --once to
register and exit (something else then sends the heartbeats).

--check takes a URL: http://... or https://... for an HTTP check,
tcp://HOST:PORT for a TCP connect check, vitals+http://... for a vitals check
of the backend's JSON /metrics.`,
		Example: `  disco register web 10.0.1.5:8080 --tag v1 --ttl 10s
  disco register web 10.0.1.6:8080 --check http://10.0.1.6:8080/health --deregister-after 1m
  disco register api 10.0.2.1:9000 --check vitals+http://10.0.2.1:9090/metrics --meta version=2.1.0`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := config.Load(cmd.Flags(), "", &rf); err != nil {
				return err
			}
			service, addr := args[0], args[1]
			reg, err := rf.registration(addr)
			if err != nil {
				return err
			}
			id := rf.id
			if id == "" {
				id = defaultID(service, reg.Address, reg.Port)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if rf.ttl == 0 || rf.once {
				in, err := c.Register(ctx, service, id, reg)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "registered %s at %s:%d (%s)\n", in.Key(), in.Address, in.Port, in.Status)
				return nil
			}
			fmt.Fprintf(out, "registering %s/%s at %s; heartbeating every %s (Ctrl-C deregisters)\n",
				service, id, addr, (rf.ttl / 3).Round(time.Millisecond))
			logf := func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...) }
			if err := c.Keep(ctx, service, id, reg, logf); err != nil {
				return err
			}
			fmt.Fprintf(out, "deregistered %s/%s\n", service, id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&rf.id, "id", "", "instance id, a DNS label (default: from service, address and port)")
	f.StringArrayVar(&rf.tags, "tag", nil, "tag (repeatable)")
	f.StringArrayVar(&rf.meta, "meta", nil, "metadata KEY=VALUE (repeatable)")
	f.IntVar(&rf.weight, "weight", catalog.DefaultWeight, "weight 0-10000 (0 drains)")
	f.DurationVar(&rf.ttl, "ttl", 0, "heartbeat TTL (1s-24h); the instance turns critical without heartbeats")
	f.StringVar(&rf.check, "check", "", "health check URL: http(s)://..., tcp://HOST:PORT or vitals+http://...")
	f.DurationVar(&rf.checkInterval, "check-interval", 0, "health check interval (default 10s)")
	f.DurationVar(&rf.checkTimeout, "check-timeout", 0, "health check timeout (default 5s)")
	f.DurationVar(&rf.deregisterAfter, "deregister-after", 0, "remove the instance after it is critical this long")
	f.BoolVar(&rf.once, "once", false, "with --ttl: register and exit instead of heartbeating")
	return cmd
}

// registration turns the flags and ADDR:PORT into a registration. The server
// validates it again; checking the shape here gives errors in flag terms.
func (rf *registerFlags) registration(addrPort string) (catalog.Registration, error) {
	host, portStr, err := net.SplitHostPort(addrPort)
	if err != nil {
		return catalog.Registration{}, fmt.Errorf("ADDR:PORT: %q: %w", addrPort, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return catalog.Registration{}, fmt.Errorf("ADDR:PORT: port %q is not a number", portStr)
	}
	reg := catalog.Registration{
		Address:         host,
		Port:            port,
		Tags:            rf.tags,
		Weight:          &rf.weight,
		TTL:             catalog.Duration(rf.ttl),
		DeregisterAfter: catalog.Duration(rf.deregisterAfter),
	}
	if len(rf.meta) > 0 {
		reg.Meta = map[string]string{}
		for _, kv := range rf.meta {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return reg, fmt.Errorf("--meta %q: want KEY=VALUE", kv)
			}
			reg.Meta[k] = v
		}
	}
	if rf.check != "" {
		ck, err := parseCheck(rf.check)
		if err != nil {
			return reg, err
		}
		ck.Interval = catalog.Duration(rf.checkInterval)
		ck.Timeout = catalog.Duration(rf.checkTimeout)
		reg.Check = ck
	}
	return reg, nil
}

// parseCheck reads a --check URL.
func parseCheck(s string) (*catalog.Check, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--check %q: %w", s, err)
	}
	switch u.Scheme {
	case "http", "https":
		return &catalog.Check{Type: "http", Target: s}, nil
	case "tcp":
		return &catalog.Check{Type: "tcp", Target: u.Host}, nil
	case "vitals+http", "vitals+https":
		return &catalog.Check{Type: "vitals", Target: strings.TrimPrefix(s, "vitals+")}, nil
	}
	return nil, fmt.Errorf("--check %q: want http(s)://..., tcp://HOST:PORT or vitals+http://...", s)
}

// defaultID derives a stable instance id from where the instance is:
// "web-10-0-1-5-8080".
func defaultID(service, host string, port int) string {
	return catalog.Label(fmt.Sprintf("%s-%s-%d", service, host, port))
}
