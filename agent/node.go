package agent

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/guard"
	"github.com/discotech/disco/magicip"
	"github.com/discotech/disco/shmtable"
)

// view is what the node serves of one guard table: the table, and the magic
// address of each of its services.
type view struct {
	table *guard.Table
	magic *magicip.Allocation
}

// node turns each guard table into what the node's programs use: magic
// addresses, the shared-memory table, and (through the agent's DNS and the
// fallback proxy) answers in terms of both.
type node struct {
	a       *Agent
	magic   netip.Prefix
	writer  *shmtable.Writer // nil when the table is off
	proxy   *fallback        // nil when the fallback proxy is off
	ejector *ejector         // nil when failure reports are off
	vitals  *vitalsWeights   // nil when vitals are not polled
	current atomic.Pointer[view]
}

// follow rebuilds the view at every change of the guard's table until ctx
// is done.
func (n *node) follow(ctx context.Context) {
	defer func() {
		if n.writer != nil {
			n.writer.Close()
		}
		if n.proxy != nil {
			n.proxy.close()
		}
	}()
	var published uint64
	var kick, vitals <-chan struct{}
	if n.ejector != nil {
		kick = n.ejector.kick
	}
	if n.vitals != nil {
		vitals = n.vitals.kick
		defer n.vitals.poller.Close()
	}
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	for {
		changed := n.a.guard.Changed()
		t := n.a.guard.Table()
		if t.Version != published {
			n.update(t)
			published = t.Version
		}
		// An ejection that ends must be published too.
		expiry.Stop()
		if n.ejector != nil {
			if d := n.ejector.nextEnd(); d > 0 {
				expiry.Reset(d)
			}
		}
		select {
		case <-changed:
		case <-kick:
			n.update(t)
		case <-vitals:
			n.update(t)
		case <-expiry.C:
			n.update(t)
		case <-ctx.Done():
			return
		}
	}
}

func (n *node) update(t *guard.Table) {
	names := make([]string, 0, len(t.Services))
	for name := range t.Services {
		names = append(names, name)
	}
	alloc, err := magicip.Allocate(n.magic, names)
	if err != nil {
		// More services than addresses: keep the last view rather than
		// give some services nothing. (65,534 in the default range.)
		n.a.log.Error("agent: magic addresses", "err", err)
		return
	}
	if n.vitals != nil {
		n.vitals.sync(t)
	}
	slices.Sort(names)
	services := make([]shmtable.Service, 0, len(names))
	for _, name := range names {
		s := shmtable.Service{Name: name}
		s.Magic, _ = alloc.Addr(name)
		var ins []*catalog.Instance
		for _, in := range t.Services[name] {
			if b, ok := backend(in); ok {
				s.Backends = append(s.Backends, b)
				ins = append(ins, in)
			}
		}
		if n.vitals != nil {
			for i, w := range n.vitals.weights(ins) {
				s.Backends[i].Weight = uint32(w)
			}
		}
		n.eject(&s)
		services = append(services, s)
	}
	v := &view{table: t, magic: alloc}
	n.current.Store(v)
	if n.proxy != nil {
		n.proxy.sync(v, services)
	}
	if n.writer == nil {
		return
	}
	if err := n.writer.Publish(services); err != nil {
		n.a.log.Error("agent: publishing the shared-memory table", "err", err)
	}
}

// eject gives weight 0 to the backends programs keep failing to connect to,
// at most half of the service's.
func (n *node) eject(s *shmtable.Service) {
	if n.ejector == nil {
		return
	}
	budget := len(s.Backends) / 2
	for i := range s.Backends {
		b := &s.Backends[i]
		if budget > 0 && b.Weight > 0 && n.ejector.ejected(s.Name, netip.AddrPortFrom(b.Addr, b.Port)) {
			b.Weight = 0
			budget--
		}
	}
}

// backend is an instance as the table holds it: only an IP address can be
// connected to without a lookup, so an instance registered with a host name
// is left out of the table (DNS SRV still names it).
func backend(in *catalog.Instance) (shmtable.Backend, bool) {
	addr, err := netip.ParseAddr(in.Address)
	if err != nil || in.Port < 1 || in.Port > 65535 {
		return shmtable.Backend{}, false
	}
	return shmtable.Backend{Addr: addr.Unmap(), Port: uint16(in.Port), Weight: uint32(in.Weight)}, true
}

// magicOf is the agent DNS's MagicIP: the service's magic address, when the
// node has one for it.
func (n *node) magicOf(service string) (netip.Addr, bool) {
	v := n.current.Load()
	if v == nil {
		return netip.Addr{}, false
	}
	return v.magic.Addr(service)
}
