package balance

import (
	"context"
	"errors"
	"net"
	"time"
)

// ErrNoBackend is Dial's error when the pool has no backend left to try.
var ErrNoBackend = errors.New("no backend to connect to")

// Dial connects to a backend of p picked with pol, and when one refuses,
// to another not tried yet, up to tries backends in all. Every attempt's
// outcome goes to the pool's outlier detection; failed is told of each
// refusal (and whether it ejected the backend) when not nil.
//
// It returns the connection, its backend, the time the connection took and
// how many backends were tried. The backend counts the connection in
// flight until the caller calls EndConn(rtt) on it.
func Dial(ctx context.Context, pol Policy, p *Pool, key uint64, tries int,
	dial func(ctx context.Context, addr string) (net.Conn, error),
	failed func(b *Backend, err error, ejected bool),
) (net.Conn, *Backend, time.Duration, int, error) {
	tried := make([]*Backend, 0, tries)
	err := ErrNoBackend
	for len(tried) < tries {
		b := PickExcept(pol, p, key, tried)
		if b == nil {
			break
		}
		tried = append(tried, b)
		start := b.Begin()
		c, derr := dial(ctx, b.Addr)
		rtt := time.Since(start)
		if derr == nil {
			p.Result(b, time.Now(), true)
			return c, b, rtt, len(tried), nil
		}
		b.EndConn(rtt)
		ejected := p.Result(b, time.Now(), false)
		if failed != nil {
			failed(b, derr, ejected)
		}
		err = derr
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, 0, len(tried), err
}
