package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// etcd is an etcd server under test and its client. Instances are keys
// /services/<service>/<id> holding the registration's JSON, each with its
// own lease: what a TTL registration costs in etcd.
type etcd struct {
	p      *peer.Process
	url    string // client URL
	cli    *clientv3.Client
	leases []clientv3.LeaseID // [instance]
}

// etcdQuota is the backend quota: etcd's documented maximum, so the run
// never hits "database space exceeded".
const etcdQuota = 8 << 30

func startEtcd(ctx context.Context, bin string) (*etcd, error) {
	dir, err := os.MkdirTemp("", "disco-bench-etcd-")
	if err != nil {
		return nil, err
	}
	clientAddr, err := sysstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	peerAddr, err := sysstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	clientURL, peerURL := "http://"+clientAddr, "http://"+peerAddr
	p, err := peer.Start("etcd", dir, bin,
		"--name", "default",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--quota-backend-bytes", fmt.Sprint(etcdQuota),
		"--logger", "zap", "--log-level", "warn")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e := &etcd{p: p, url: clientURL}
	if err := p.WaitReady(ctx, "healthy", peer.HTTPReady(clientURL+"/health", `"health":"true"`)); err != nil {
		stopPeer(p)
		return nil, err
	}
	if e.cli, err = e.newClient(); err != nil {
		stopPeer(p)
		return nil, err
	}
	return e, nil
}

// newClient opens a client with its own connection to the server.
func (e *etcd) newClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{e.url},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

func (e *etcd) close() {
	if e.cli != nil {
		e.cli.Close()
	}
	stopPeer(e.p)
}

// memory reads the server's settled memory; the churn lists a service.
func (e *etcd) memory(ctx context.Context) (reading, error) {
	churn := func(ctx context.Context) error {
		_, err := e.cli.Get(ctx, "/services/svc-000/", clientv3.WithPrefix())
		return err
	}
	return readMemory(ctx, e.p, e.url+"/metrics", churn)
}

func benchEtcd(ctx context.Context, cfg config, bin string, res *results) error {
	e, err := startEtcd(ctx, bin)
	if err != nil {
		return err
	}
	defer e.close()
	cli.Progress("etcd: server pid %d on %s", e.p.Pid(), e.url)

	// The registrations' keys and values, built before the clock starts.
	keys := make([]string, cfg.instances)
	values := make([]string, cfg.instances)
	for i := range keys {
		service, id := instanceName(i, cfg.services)
		keys[i] = "/services/" + service + "/" + id
		b, err := json.Marshal(registration(i, cfg.ttl))
		if err != nil {
			return err
		}
		values[i] = string(b)
	}
	ttl := int64(cfg.ttl / time.Second)
	e.leases = make([]clientv3.LeaseID, cfg.instances)

	empty, err := e.memory(ctx)
	if err != nil {
		return err
	}
	cli.Progress("etcd: registering %d keys with a lease each", cfg.instances)
	reg := countLoop(ctx, cfg.workers, cfg.instances, e.p.CPUSeconds, func(ctx context.Context, _, i int) error {
		l, err := e.cli.Grant(ctx, ttl)
		if err != nil {
			return err
		}
		e.leases[i] = l.ID
		_, err = e.cli.Put(ctx, keys[i], values[i], clientv3.WithLease(l.ID))
		return err
	})
	res.reg.add("etcd", "LeaseGrant+Put", loopVals(reg), loopNote(reg))
	full, err := e.memory(ctx)
	if err != nil {
		return err
	}
	per := full.sub(empty).per(cfg.instances)
	res.instMem.add("etcd", "keys with leases", memVals(per), per.noise())

	cli.Progress("etcd: putting %d keys without lease", cfg.instances)
	plain := countLoop(ctx, cfg.workers, cfg.instances, e.p.CPUSeconds, func(ctx context.Context, _, i int) error {
		_, err := e.cli.Put(ctx, "/plain"+keys[i], values[i])
		return err
	})
	res.reg.add("etcd", "Put (no lease)", loopVals(plain), loopNote(plain))

	if err := e.heartbeats(ctx, cfg, res); err != nil {
		return err
	}
	return e.fanout(ctx, cfg, res)
}

// heartbeats renews every lease round-robin, twice: with the client's
// KeepAliveOnce, which opens a gRPC stream per call, and over one
// long-lived LeaseKeepAlive stream per worker, which is how etcd's own
// KeepAlive renews (and the fastest way etcd offers).
func (e *etcd) heartbeats(ctx context.Context, cfg config, res *results) error {
	own := owned(cfg.instances, cfg.workers)
	cli.Progress("etcd: KeepAliveOnce for %s", cfg.duration)
	once := timedLoop(ctx, cfg.workers, cfg.duration, e.p.CPUSeconds, func(ctx context.Context, w, k int) error {
		mine := own[w]
		_, err := e.cli.KeepAliveOnce(ctx, e.leases[mine[k%len(mine)]])
		return err
	})
	res.hb.add("etcd", "KeepAliveOnce", loopVals(once), loopNote(once))

	streams := make([]pb.Lease_LeaseKeepAliveClient, cfg.workers)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lc := pb.NewLeaseClient(e.cli.ActiveConnection())
	for w := range streams {
		s, err := lc.LeaseKeepAlive(sctx)
		if err != nil {
			return fmt.Errorf("open LeaseKeepAlive stream: %w", err)
		}
		streams[w] = s
	}
	cli.Progress("etcd: keep-alive streams for %s", cfg.duration)
	stream := timedLoop(ctx, cfg.workers, cfg.duration, e.p.CPUSeconds, func(ctx context.Context, w, k int) error {
		mine := own[w]
		id := int64(e.leases[mine[k%len(mine)]])
		if err := streams[w].Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
			return err
		}
		resp, err := streams[w].Recv()
		if err != nil {
			return err
		}
		if resp.TTL <= 0 {
			return fmt.Errorf("lease %x not found (expired?)", id)
		}
		return nil
	})
	res.hb.add("etcd", "keep-alive stream", loopVals(stream), loopNote(stream))
	return nil
}

// fanout watches the service's key prefix from cfg.watchers watches spread
// over cfg.etcdConns client connections (etcd multiplexes the watches of a
// connection on one gRPC stream), then writes to it.
func (e *etcd) fanout(ctx context.Context, cfg config, res *results) error {
	const prefix = "/fanout/"
	write := func(ctx context.Context, seq int) error {
		b, err := json.Marshal(fanoutRegistration(seq))
		if err != nil {
			return err
		}
		_, err = e.cli.Put(ctx, prefix+fanoutID, string(b))
		return err
	}
	if err := write(ctx, 0); err != nil {
		return err
	}
	before, err := e.memory(ctx)
	if err != nil {
		return err
	}
	clients := make([]*clientv3.Client, cfg.etcdConns)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range clients {
		if clients[i], err = e.newClient(); err != nil {
			return err
		}
	}
	cli.Progress("etcd: opening %d watches over %d connections", cfg.watchers, cfg.etcdConns)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := newFanout(cfg.watchers, cfg.writes)
	created := make(chan error, cfg.watchers)
	var wg sync.WaitGroup
	for w := range cfg.watchers {
		wg.Go(func() {
			ch := clients[w%len(clients)].Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			first := true
			for resp := range ch {
				if first {
					first = false
					created <- resp.Err()
				}
				for _, ev := range resp.Events {
					f.saw(w, parseSeq(ev.Kv.Value))
				}
			}
			if first && wctx.Err() == nil {
				created <- fmt.Errorf("watch %d closed before it was created", w)
			}
		})
	}
	stop := func() { cancel(); wg.Wait() }
	deadline := time.After(60 * time.Second)
	for n := 0; n < cfg.watchers; n++ {
		select {
		case err := <-created:
			if err != nil {
				stop()
				return err
			}
		case <-deadline:
			stop()
			return fmt.Errorf("only %d of %d watches created after 60s", n, cfg.watchers)
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
	}
	after, err := e.memory(ctx)
	if err != nil {
		stop()
		return err
	}
	per := after.sub(before).per(cfg.watchers)
	res.watchMem.add("etcd", "watch", memVals(per),
		fmt.Sprintf("%d watches over %d connections; %s", cfg.watchers, cfg.etcdConns, per.noise()))
	cli.Progress("etcd: %d writes, %s apart", cfg.writes, cfg.spacing)
	cpu, err := runFanout(ctx, cfg, f, e.p.CPUSeconds, write)
	stop()
	if err != nil {
		return err
	}
	res.fan.add("etcd", "watch", fanVals(f.result(), cpu), fmt.Sprintf("%d watches over %d connections", cfg.watchers, cfg.etcdConns))
	return nil
}
