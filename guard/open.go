package guard

import (
	"context"
	"fmt"
	"sync"

	"github.com/discotech/disco/source"
)

// Open makes the sources named by specs, in precedence order, and a guard
// over them: the pipeline's front half, as the agent and the router run it.
func Open(specs []string, opts source.Options, cfg Config) (*Guard, []source.Source, error) {
	seen := map[string]bool{}
	var srcs []source.Source
	for _, spec := range specs {
		if seen[spec] {
			return nil, nil, fmt.Errorf("source %s is given twice", source.Redact(spec))
		}
		seen[spec] = true
		src, err := source.New(spec, opts)
		if err != nil {
			return nil, nil, err
		}
		srcs = append(srcs, src)
	}
	g, err := New(specs, cfg)
	if err != nil {
		return nil, nil, err
	}
	return g, srcs, nil
}

// Serve runs the guard and its sources (as Open made them, named by specs)
// until ctx is done. A source that stops with an error fails its sink, so
// that the guard keeps what it said last.
func (g *Guard) Serve(ctx context.Context, srcs []source.Source, specs []string) {
	var wg sync.WaitGroup
	wg.Go(func() { g.Run(ctx) })
	for i, src := range srcs {
		wg.Go(func() {
			if err := src.Run(ctx, g.Sink(i)); err != nil && ctx.Err() == nil {
				g.log.Error("source stopped", "source", source.Redact(specs[i]), "err", err)
				g.Sink(i).Fail(err)
			}
		})
	}
	wg.Wait()
}
