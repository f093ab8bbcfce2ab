// Command client calls a service through Discotech's Go SDK, with no proxy
// and no preloaded library: a client.Resolver follows the registry on one
// watch stream, and its Transport sends http://web.service.disco/ to a
// backend it picks (power of two choices over connect time and
// connections in flight), failing over when one refuses.
//
//	go run ./examples/client -n 6 http://web.service.disco/
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/discotech/disco/client"
)

func main() {
	registry := flag.String("registry", client.DefaultAddress, "the registry's address")
	n := flag.Int("n", 3, "how many requests")
	flag.Parse()
	url := "http://web.service.disco/"
	if flag.NArg() > 0 {
		url = flag.Arg(0)
	}
	c, err := client.New(*registry, nil)
	if err != nil {
		log.Fatal(err)
	}
	r := client.NewResolver(c)
	defer r.Close()
	t := r.Transport()
	t.DisableKeepAlives = true // a new connection, so a new pick, per request
	hc := &http.Client{Transport: t, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range *n {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s %s", resp.Status, body)
	}
}
