package lease_test

import (
	"context"
	"fmt"
	"time"

	"github.com/discotech/disco/lease"
)

// The registry server keeps one Manager for heartbeats on the raft leader.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	heartbeats := lease.New(lease.Config{
		OnExpire: func(ids []string) {
			// Propose one raft write marking these instances critical.
			fmt.Println("critical:", ids)
		},
	})
	go heartbeats.Run(ctx)

	// On becoming leader: fresh TTLs for every instance in the catalog;
	// the ones already critical stay expired.
	heartbeats.Reset([]lease.Lease{
		{Key: "web-1", TTL: 10 * time.Second},
		{Key: "web-2", TTL: 10 * time.Second, Expired: true},
	})

	// A registration, then its heartbeats.
	heartbeats.Set("web-3", 10*time.Second)
	switch heartbeats.Renew("web-2") {
	case lease.Revived:
		// Propose a raft write marking web-2 passing again.
	case lease.Unknown:
		// Not registered (or this server is no longer leader): tell the
		// client to register.
	}

	// On losing leadership.
	heartbeats.Reset(nil)
}
