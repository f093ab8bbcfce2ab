// Command backend is an HTTP backend built with Discotech's Go SDK: it
// registers itself with the registry (heartbeats keep it there), serves its
// vitals on a metrics port for routers and agents to weigh it by, and on
// SIGTERM drains: ready:false, deregister, keep serving while that spreads,
// finish what is in flight, exit. disco dev runs three of these (in
// process) as its demo.
//
//	go run ./examples/backend -service web -tag v1 -tag urlprefix-/
//	curl http://127.0.0.1:7780/                 # through disco router
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
)

type tags []string

func (t *tags) String() string     { return strings.Join(*t, ",") }
func (t *tags) Set(v string) error { *t = append(*t, v); return nil }

func main() {
	registry := flag.String("registry", client.DefaultAddress, "the registry's address")
	service := flag.String("service", "web", "the service this backend is an instance of")
	id := flag.String("id", "", "the instance id (default: the service and the port)")
	listen := flag.String("listen", "127.0.0.1:0", "the traffic address")
	metrics := flag.String("metrics", "127.0.0.1:0", "the vitals address (GET /metrics, /telemetry)")
	version := flag.String("version", "1.0.0", "the version it reports")
	delay := flag.Duration("drain-delay", 2*time.Second, "how long to keep serving after ready:false and deregistering")
	var tg tags
	flag.Var(&tg, "tag", "a tag to register with, e.g. v1 or 'urlprefix-/ strip=/web' (repeatable)")
	flag.Parse()

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	ml, err := net.Listen("tcp", *metrics)
	if err != nil {
		log.Fatal(err)
	}
	if *id == "" {
		_, port, _ := net.SplitHostPort(l.Addr().String())
		*id = *service + "-" + port
	}
	c, err := client.New(*registry, nil)
	if err != nil {
		log.Fatal(err)
	}
	name := *id
	b := &client.Backend{
		Client: c, Service: *service, ID: name,
		Registration: catalog.Registration{Tags: tg},
		Listener:     l, Metrics: ml,
		Vitals: client.NewVitals(*version),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s (%s %s) %s\n", name, *service, *version, r.URL.Path)
		}),
		DrainDelay: *delay,
		Logf:       log.Printf,
	}
	fmt.Printf("serving %s on %s, vitals on %s\n", name, l.Addr(), ml.Addr())
	ctx, stop := client.SignalContext(context.Background())
	defer stop()
	if err := b.Run(ctx); err != nil {
		log.Print(err)
		os.Exit(1)
	}
	fmt.Println("drained")
}
