package health

import (
	"context"
	"net"

	"github.com/discotech/disco/catalog"
)

func init() { Register("tcp", TCP{}) }

// TCP is the "tcp" check: open a TCP connection to the target host:port and
// close it again. A completed handshake is Passing; anything else, the run's
// timeout included, is Critical with the dial error as output, e.g. "dial tcp
// 10.0.1.5:8080: connect: connection refused".
type TCP struct{}

// Check dials target.
func (TCP) Check(ctx context.Context, target string) Result {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return Result{Status: catalog.Critical, Output: clip(err.Error())}
	}
	conn.Close()
	return Result{Status: catalog.Passing, Output: clip("TCP connect " + target + ": success")}
}

var _ Checker = TCP{}
