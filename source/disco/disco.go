// Package disco is the source that follows Discotech's own registry through
// its watch stream (GET /v1/watch, every service on one connection),
// resuming from the last index it saw after a break, so a reconnect costs a
// replay of what was missed rather than a full listing.
//
// Spec: disco+http://127.0.0.1:7700 (or disco+https://...). It is the
// agent's default source.
package disco

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/source"
)

func init() {
	source.Register("disco+http", New)
	source.Register("disco+https", New)
}

// Disco follows one registry server.
type Disco struct {
	c    *client.Client
	log  *slog.Logger
	idle time.Duration
}

// New makes the source for spec disco+http://HOST:PORT.
func New(spec *url.URL, opts source.Options) (source.Source, error) {
	if spec.Host == "" {
		return nil, source.Specf(spec, "want disco+http://HOST:PORT, the registry's API address")
	}
	if spec.Path != "" && spec.Path != "/" {
		return nil, source.Specf(spec, "a registry source follows every service; drop the path %q", spec.Path)
	}
	base := strings.TrimPrefix(spec.Scheme, "disco+") + "://" + spec.Host
	c, err := client.New(base, nil)
	if err != nil {
		return nil, source.Specf(spec, "%v", err)
	}
	// The server sends a progress line every 10s on an idle stream; three
	// missed in a row mean the connection is dead even if TCP has not
	// noticed.
	idle := max(3*opts.Timeout, 30*time.Second)
	return &Disco{c: c, log: opts.Logger.With("source", spec.Redacted()), idle: idle}, nil
}

// Run follows the registry (client.Follower) and reports to sink until ctx
// is done.
func (d *Disco) Run(ctx context.Context, sink source.Sink) error {
	failing := false
	f := &client.Follower{
		Client: d.c,
		Idle:   d.idle,
		Full: func(all map[string][]*catalog.Instance) {
			sink.Update(source.Update{Services: all, Full: true})
		},
		Changed: func(service string, ins []*catalog.Instance) {
			sink.Update(source.Update{Services: map[string][]*catalog.Instance{service: ins}})
		},
		Failed: func(err error) {
			err = fmt.Errorf("source/disco: %w", err)
			if !failing {
				d.log.Warn("source/disco: watch broke; keeping what it said last and reconnecting", "err", err)
			}
			failing = true
			sink.Fail(err)
		},
		Recovered: func(index uint64) {
			failing = false
			d.log.Info("source/disco: watching again", "index", index)
		},
	}
	return f.Run(ctx)
}
