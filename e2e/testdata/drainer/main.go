// Command drainer is a backend that shuts down the way the contract asks
// (SIGTERM → ready:false → deregister → drain → exit), for the router's
// rolling-restart test. It registers itself with the registry, tagged
// urlprefix-/, with a vitals check on its metrics port, and keeps the
// registration alive with heartbeats.
//
//	drainer REGISTRY-URL SERVICE ID ADDR:PORT METRICS-PORT DRAIN-DELAY
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
)

func main() {
	if len(os.Args) != 7 {
		fmt.Fprintln(os.Stderr, "usage: drainer REGISTRY-URL SERVICE ID ADDR:PORT METRICS-PORT DRAIN-DELAY")
		os.Exit(2)
	}
	registry, service, id, addr, metricsPort := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	delay, err := time.ParseDuration(os.Args[6])
	if err != nil {
		log.Fatal(err)
	}
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)

	var ready atomic.Bool
	var inflight atomic.Int64
	ready.Store(true)
	traffic := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		defer inflight.Add(-1)
		// A little work, so that requests are in flight when SIGTERM comes.
		time.Sleep(2 * time.Millisecond)
		fmt.Fprintf(w, "%s\n", id)
	})}
	vitals := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(catalog.Vitals{Ready: ready.Load(), RequestsInProgress: inflight.Load()})
	})}
	tl, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	ml, err := net.Listen("tcp", net.JoinHostPort(host, metricsPort))
	if err != nil {
		log.Fatal(err)
	}
	go traffic.Serve(tl)
	go vitals.Serve(ml)

	c, err := client.New(registry, nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stopKeep := context.WithCancel(context.Background())
	kept := make(chan error, 1)
	reg := catalog.Registration{Address: host, Port: port, Tags: []string{"urlprefix-/"}, TTL: catalog.Duration(3 * time.Second),
		Meta: map[string]string{"metrics_port": metricsPort}}
	go func() { kept <- c.Keep(ctx, service, id, reg, log.Printf) }()
	fmt.Println("serving", id, addr)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	// 1. Tell whoever polls the vitals to stop sending new requests.
	ready.Store(false)
	// 2. Leave the registry (Keep deregisters when its context ends).
	stopKeep()
	if err := <-kept; err != nil {
		log.Printf("deregister: %v", err)
	}
	fmt.Println("deregistered; draining")
	// 3. Keep serving while routers learn of it, then finish what is in
	// flight and exit.
	time.Sleep(delay)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	traffic.Shutdown(sctx)
	vitals.Shutdown(sctx)
	fmt.Println("drained")
}
