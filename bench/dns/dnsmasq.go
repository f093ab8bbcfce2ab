package main

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// dnsmasqConfig is the configuration dnsmasq runs with, before the
// records. It is given with -C, so /etc/dnsmasq.conf and /etc/dnsmasq.d are
// not read. Every choice keeps dnsmasq answering from its own records and
// nothing else, the way Discotech answers from its catalog:
//
//   - no-resolv, and no server= line: no upstream, nothing is forwarded,
//     and /etc/resolv.conf is not read;
//   - no-hosts: /etc/hosts is not read, so the only names are the
//     benchmark's;
//   - local=/disco/: a name under disco. that dnsmasq does not know is
//     NXDOMAIN at once, as at Discotech, rather than REFUSED for want of an
//     upstream;
//   - local-ttl=5: the answers' TTL is Discotech's 5s;
//   - the cache: host-record and srv-host are configuration, which dnsmasq
//     answers from its in-memory tables on every query, as Discotech
//     answers from its catalog. There is no upstream whose answers it could
//     cache, so cache-size and neg-cache change nothing here. The queries
//     go round a spread of names (every service, one after the other), so
//     that a server keeping encoded answers does not serve one hot packet;
//   - user= and group= name the benchmark's own: dnsmasq started as root
//     otherwise becomes nobody:dip, and a change of user or group clears
//     the parent-death signal that kills it if the benchmark is killed;
//   - edns-packet-max=4096: the largest UDP answer dnsmasq sends to a
//     query that advertises that much, as Discotech does (its limit is
//     4096 too). dnsmasq's default, 1232 bytes, would make it drop the
//     last SRV targets' addresses from the answer for a 20-instance
//     service (1,263 bytes), which Discotech sends whole: different
//     records, which the equivalence check refuses.
const dnsmasqConfig = `# bench/dns: dnsmasq serving the same records as Discotech
keep-in-foreground
log-facility=-
pid-file=
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
local=/disco/
local-ttl=5
edns-packet-max=4096
`

// startDnsmasq writes the configuration and the records, starts dnsmasq on
// a free loopback port and waits until it answers the first query.
func startDnsmasq(ctx context.Context, bin, tmp string, services []service, probe query) (*server, error) {
	dir, err := os.MkdirTemp(tmp, "dnsmasq-")
	if err != nil {
		return nil, err
	}
	addr, err := sysstat.FreeAddr()
	if err != nil {
		return nil, err
	}
	conf := dnsmasqConfig + "port=" + portOf(addr) + "\n"
	if u, err := user.Current(); err == nil {
		conf += "user=" + u.Username + "\n"
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			conf += "group=" + g.Name + "\n"
		}
	}
	conf += strings.Join(dnsmasqRecords(services), "\n") + "\n"
	confPath := filepath.Join(dir, "dnsmasq.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := peer.Start("dnsmasq", dir, bin, "-C", confPath)
	if err != nil {
		return nil, err
	}
	s := &server{Process: p, dns: addr}
	if err := s.WaitReady(ctx, "answering DNS", func(ctx context.Context) error {
		_, err := ask(ctx, addr, probe, true)
		return err
	}); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}
