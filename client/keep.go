package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/discotech/disco/catalog"
)

// Keep registers instance id of service and keeps it registered until ctx is
// done, then deregisters it and returns nil.
//
// With a TTL it heartbeats at a third of the TTL, registers again whenever
// the server answers that it does not know the instance (a server restored
// from an old snapshot, or a reaped instance), and while the server cannot be
// reached it retries with exponential backoff and jitter (from 500ms up to
// the TTL), so a fleet of instances does not return in lockstep. Without a
// TTL it registers (retrying the same way) and waits.
//
// logf, when non-nil, is told of every failure and recovery.
func (c *Client) Keep(ctx context.Context, service, id string, reg catalog.Registration, logf func(format string, args ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	ttl := reg.TTL.D()
	maxBackoff := max(ttl, 5*time.Second)
	backoff := time.Duration(0)
	registered := false
	failing := false
	for {
		var err error
		if !registered {
			_, err = c.Register(ctx, service, id, reg)
			var apiErr *Error
			if errors.As(err, &apiErr) && apiErr.Status/100 == 4 && apiErr.Status != 404 && apiErr.Status != 429 {
				// The registration itself is wrong: retrying cannot help.
				return err
			}
			registered = err == nil
		} else if ttl > 0 {
			err = c.Heartbeat(ctx, service, id)
			if errors.Is(err, ErrNotFound) {
				logf("%s/%s: server does not know the instance; registering again", service, id)
				registered = false
				continue
			}
		}
		wait := ttl / 3
		switch {
		case ctx.Err() != nil:
			return c.leave(service, id, registered)
		case err != nil:
			failing = true
			backoff = min(max(2*backoff, 500*time.Millisecond), maxBackoff)
			wait = backoff/2 + rand.N(backoff/2+1)
			logf("%s/%s: %v; retrying in %s", service, id, err, wait.Round(time.Millisecond))
		default:
			if failing {
				logf("%s/%s: registry reachable again", service, id)
			}
			failing, backoff = false, 0
			if ttl == 0 {
				<-ctx.Done()
				return c.leave(service, id, registered)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return c.leave(service, id, registered)
		case <-t.C:
		}
	}
}

// leave deregisters on the way out, within a few seconds of its own.
func (c *Client) leave(service, id string, registered bool) error {
	if !registered {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Deregister(ctx, service, id); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}
