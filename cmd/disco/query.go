package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
)

func newDeregisterCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "deregister SERVICE ID",
		Short: "Remove an instance",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.Deregister(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deregistered %s/%s\n", args[0], args[1])
			return nil
		},
	}
}

func newServicesCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List services",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			services, index, err := c.Services(cmd.Context(), client.Query{})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, map[string]any{"index": index, "services": services})
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tINSTANCES\tPASSING\tINDEX")
			for _, s := range services {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", s.Name, s.Instances, s.Passing, s.Index)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	return cmd
}

func newInstancesCmd(g *globals) *cobra.Command {
	var q client.Query
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "instances SERVICE",
		Short: "List the instances of a service",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			instances, index, err := c.Instances(cmd.Context(), args[0], q)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, map[string]any{"index": index, "instances": instances})
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tADDRESS\tSTATUS\tWEIGHT\tTAGS\tOUTPUT")
			for _, in := range instances {
				fmt.Fprintf(tw, "%s\t%s:%d\t%s\t%d\t%s\t%s\n", in.ID, in.Address, in.Port, in.Status, in.Weight,
					strings.Join(in.Tags, ","), in.Output)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.BoolVar(&q.Passing, "passing", false, "only passing instances")
	f.StringArrayVar(&q.Tags, "tag", nil, "only instances with this tag (repeatable: all of them)")
	f.BoolVar(&asJSON, "json", false, "print the API's JSON")
	return cmd
}

func newWatchCmd(g *globals) *cobra.Command {
	var from uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "watch [SERVICE]",
		Short: "Print every change to a service (or to all services) as it happens",
		Long: `Print every change to SERVICE, or to every service, as it happens. The
stream starts with the current instances; if the connection breaks, disco
watch reconnects and resumes where it stopped.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			out := cmd.OutOrStdout()
			print := func(e catalog.WatchEvent) error { return printEvent(out, e) }
			if asJSON {
				enc := json.NewEncoder(out)
				print = func(e catalog.WatchEvent) error { return enc.Encode(e) }
			}
			return follow(cmd.Context(), c, service, from, print, func(err error, wait time.Duration) {
				fmt.Fprintf(cmd.ErrOrStderr(), "disco watch: %v; reconnecting in %s\n", err, wait.Round(time.Millisecond))
			})
		},
	}
	cmd.Flags().Uint64Var(&from, "from", 0, "resume after this index instead of starting with a snapshot")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the stream's JSON lines")
	return cmd
}

// follow watches until ctx is done, reconnecting with backoff and resuming
// from the last complete index.
func follow(ctx context.Context, c *client.Client, service string, from uint64, fn func(catalog.WatchEvent) error, onErr func(error, time.Duration)) error {
	backoff := time.Duration(0)
	for {
		cursor, err := c.Watch(ctx, service, from, func(e catalog.WatchEvent) error {
			backoff = 0
			return fn(e)
		})
		from = cursor
		if ctx.Err() != nil {
			return nil
		}
		var apiErr *client.Error
		if errors.As(err, &apiErr) && apiErr.Status/100 == 4 {
			return err
		}
		backoff = min(max(2*backoff, 250*time.Millisecond), 10*time.Second)
		wait := backoff/2 + rand.N(backoff/2+1)
		onErr(err, wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func printEvent(w io.Writer, e catalog.WatchEvent) error {
	var err error
	switch e.Type {
	case catalog.WatchSnapshot:
		_, err = fmt.Fprintf(w, "%-8s %s: %d instances (index %d)\n", e.Type, e.Service, len(e.Instances), e.Index)
		for _, in := range e.Instances {
			if err == nil {
				_, err = fmt.Fprintf(w, "         %s\n", describe(in))
			}
		}
	case catalog.WatchPut:
		_, err = fmt.Fprintf(w, "%-8s %s (index %d)\n", e.Type, describe(e.Instance), e.Index)
	case catalog.WatchDelete:
		_, err = fmt.Fprintf(w, "%-8s %s/%s (index %d)\n", e.Type, e.Service, e.ID, e.Index)
	case catalog.WatchResync:
		_, err = fmt.Fprintf(w, "%-8s %s (index %d)\n", e.Type, e.Reason, e.Index)
	case catalog.WatchSynced:
		_, err = fmt.Fprintf(w, "%-8s up to date at index %d\n", e.Type, e.Index)
	}
	// progress lines are keepalives: nothing to show.
	return err
}

func describe(in *catalog.Instance) string {
	s := fmt.Sprintf("%s %s:%d %s weight=%d", in.Key(), in.Address, in.Port, in.Status, in.Weight)
	if len(in.Tags) > 0 {
		s += " tags=" + strings.Join(in.Tags, ",")
	}
	if in.Output != "" {
		s += fmt.Sprintf(" %q", in.Output)
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
