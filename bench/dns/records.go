package main

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// domain is Discotech's DNS domain; service S answers as S.service.disco
// (A) and _S._tcp.service.disco (SRV), instance I of S as
// I.S.instance.disco.
const domain = "disco"

// instance is one registered instance: the same data goes to Discotech
// (over its HTTP API) and to dnsmasq (as its configuration).
type instance struct {
	id     string
	addr   netip.Addr
	port   int
	weight int
}

// service is a service and its instances.
type service struct {
	name      string
	instances []instance
}

func (s service) aName() string   { return s.name + ".service." + domain + "." }
func (s service) srvName() string { return "_" + s.name + "._tcp.service." + domain + "." }
func (s service) target(i instance) string {
	return i.id + "." + s.name + ".instance." + domain + "."
}

// srvPriority is the SRV priority dnsmasq serves: Discotech gives every
// instance the same one, and the equivalence check compares them.
const srvPriority = 1

// dataset builds the services: `small` services of perService instances
// each, the first named web and the others web-02, web-03...; and, when
// large > 0, a service api of large instances. Addresses are in 127.2.0.0/16
// (loopback: they are only data, nothing ever connects to them); every
// instance listens on 8080 with weight 100.
func dataset(small, perService, large int) []service {
	var out []service
	n := 0
	add := func(name string, count int) {
		s := service{name: name}
		for i := 1; i <= count; i++ {
			n++
			s.instances = append(s.instances, instance{
				id:     fmt.Sprintf("%s-%d", name, i),
				addr:   netip.AddrFrom4([4]byte{127, 2, byte(n >> 8), byte(n)}),
				port:   8080,
				weight: 100,
			})
		}
		out = append(out, s)
	}
	for i := 1; i <= small; i++ {
		name := "web"
		if i > 1 {
			name = fmt.Sprintf("web-%02d", i)
		}
		add(name, perService)
	}
	if large > 0 {
		add("api", large)
	}
	return out
}

// query is one query of a mix, and what a full answer to it holds.
type query struct {
	name  string
	qtype uint16
	// want is the answer and additional sections a full answer has, in
	// canonical form (see canonical).
	wantAnswer, wantAdditional []string
}

func (q query) String() string { return strings.TrimSuffix(q.name, ".") + " " + typeName(q.qtype) }

// mix is a workload: the queries sent round-robin, one of each per turn.
type mix struct {
	name    string // "A" or "SRV"
	queries []query
}

// mixes builds the query mixes asked for: A (every service's name) and SRV
// (every service's _name._tcp).
func mixes(services []service, names []string) []mix {
	var out []mix
	for _, n := range names {
		m := mix{name: n}
		for _, s := range services {
			q := query{qtype: typeA, name: s.aName()}
			if n == "SRV" {
				q = query{qtype: typeSRV, name: s.srvName()}
			}
			for _, i := range s.instances {
				if q.qtype == typeA {
					q.wantAnswer = append(q.wantAnswer, canonical(record{name: q.name, typ: typeA, addr: i.addr}))
					continue
				}
				q.wantAnswer = append(q.wantAnswer, canonical(record{name: q.name, typ: typeSRV, port: uint16(i.port), target: s.target(i)}))
				q.wantAdditional = append(q.wantAdditional, canonical(record{name: s.target(i), typ: typeA, addr: i.addr}))
			}
			m.queries = append(m.queries, q)
		}
		out = append(out, m)
	}
	return out
}

// writeQueryFile writes a mix as dnsperf's input: one "name TYPE" a line.
func writeQueryFile(path string, m mix) error {
	var b strings.Builder
	for _, q := range m.queries {
		fmt.Fprintf(&b, "%s %s\n", strings.TrimSuffix(q.name, "."), typeName(q.qtype))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// dnsmasqRecords serves the services from dnsmasq, as lines of its
// configuration file: a host-record per service address (several for one
// name make one A record set) and per instance (the SRV targets'
// addresses), and a srv-host per instance.
func dnsmasqRecords(services []service) []string {
	var args []string
	for _, s := range services {
		name := strings.TrimSuffix(s.aName(), ".")
		for _, i := range s.instances {
			args = append(args, fmt.Sprintf("host-record=%s,%s", name, i.addr))
		}
		for _, i := range s.instances {
			target := strings.TrimSuffix(s.target(i), ".")
			args = append(args,
				fmt.Sprintf("host-record=%s,%s", target, i.addr),
				fmt.Sprintf("srv-host=%s,%s,%d,%d,%d", strings.TrimSuffix(s.srvName(), "."), target, i.port, srvPriority, i.weight))
		}
	}
	return args
}
